"""Home: the collections in this database, the demo collection, and a quick semantic search."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from vecdash.collections import describe_collections, drop_collection, get_collection
from vecdash.demo import DEMO_COLLECTION
from vecdash.discovery import discover_tables
from vecdash.export import DOWNLOAD_MAX_ROWS, EXPORT_FORMATS, export_bytes, export_command
from vecdash.search import search_text

st.title("vecdash")
st.caption("Explore vector search in PostgreSQL with pgvector: load, search, measure, tune, map.")

read_only = ui.read_only()

st.subheader("Collections")
with ui.errors_shown():
    with ui.connection() as conn:
        summaries = describe_collections(conn)
    if summaries:
        table = pd.DataFrame(
            {
                "collection": [s.name for s in summaries],
                "table": [s.table for s in summaries],
                "rows": [s.rows for s in summaries],
                "dimension": [f"{s.dimension} ({s.vector_type})" for s in summaries],
                "embedder / model": [f"{s.embedder} / {s.model}" for s in summaries],
                "metric": [s.metric for s in summaries],
                "vector indexes": [s.indexes for s in summaries],
                "size on disk": [ui.human_bytes(s.size_bytes) for s in summaries],
                "kind": ["created by vecdash" if s.managed else "attached" for s in summaries],
            }
        )
        st.dataframe(table, hide_index=True, width="stretch")
        if estimated := [s.name for s in summaries if s.rows_estimated]:
            st.caption(f"Rows of {', '.join(estimated)}: PostgreSQL's estimate (from its last "
                       "ANALYZE, scaled to the table's size), not a count: counting a large "
                       "table reads all of it.")
    else:
        st.info("No collections yet: load the demo below, or ingest your own data.")

if summaries:
    with st.expander("Export a collection (Parquet or JSONL)"), ui.errors_shown():
        cols = st.columns([3, 2, 2], vertical_alignment="bottom")
        export_name = cols[0].selectbox("Collection to export", [s.name for s in summaries],
                                        key="export_target")
        export_fmt = cols[1].radio("Format", EXPORT_FORMATS, horizontal=True, key="export_format")
        chosen = next(s for s in summaries if s.name == export_name)
        file_name = f"{export_name}.{export_fmt}"
        if chosen.rows > DOWNLOAD_MAX_ROWS:
            st.info(f"{chosen.rows:,} rows is more than a download holds "
                    f"({DOWNLOAD_MAX_ROWS:,}). Export it from the command line:")
            st.code(export_command(export_name, export_fmt), language="bash")
        elif cols[2].button("Prepare download", key="export_prepare"):
            bar = st.progress(0.0, text=f"Exporting {export_name}…")

            def show_progress(done: int, total: int) -> None:
                bar.progress(done / total if total else 1.0, text=f"{done:,} / {total:,} rows")

            with ui.connection() as conn:
                data = export_bytes(conn, get_collection(conn, export_name), fmt=export_fmt,
                                    progress=show_progress)
            bar.empty()
            st.session_state["export_file"] = (export_name, export_fmt, chosen.rows, data)
        prepared = st.session_state.get("export_file")
        if prepared and prepared[:3] == (export_name, export_fmt, chosen.rows):
            st.download_button(f"Download {file_name} ({ui.human_bytes(len(prepared[3]))})",
                               prepared[3], file_name=file_name, key="export_download",
                               mime="application/octet-stream", on_click="ignore")
        st.caption(
            "Every row with its vector, and the collection's model, metric and dimension in the "
            f"file. Load it back with `python -m vecdash ingest {file_name} --collection COPY "
            "--embedder none` (the copy keeps the model). A pg_dump of the table: "
            f"`python -m vecdash export --collection {export_name} --pg-dump {export_name}.sql`."
        )

if not read_only:
    left, right = st.columns(2)
    with left, ui.errors_shown():
        st.markdown("**Demo collection**: passages in 10 categories with labeled queries.")
        has_demo = any(s.name == DEMO_COLLECTION for s in summaries)
        verb = "Reload" if has_demo else "Load"
        if st.button(f"{verb} demo collection",
                     help="Drops the demo collection (if there) and loads it again."):
            ui.load_demo_with_progress(f"{verb}ing the demo collection…", reload=True)
            ui.select_collection(DEMO_COLLECTION)
            st.rerun()
    with right, ui.errors_shown():
        names = [s.name for s in summaries] if summaries else []
        with st.popover("Drop a collection", disabled=not names):
            target = st.selectbox("Collection to drop", names, key="drop_target")
            st.caption("A collection vecdash created loses its table; an attached table is only "
                       "unregistered, never dropped.")
            confirm = st.text_input("Type the name to confirm", key="drop_confirm")
            if st.button("Drop", type="primary", disabled=confirm != target):
                with ui.connection() as conn:
                    drop_collection(conn, target)
                st.session_state.pop("collection", None)
                st.rerun()

    with ui.errors_shown():
        with ui.connection() as conn:
            found = discover_tables(conn)
        if found:
            st.subheader("Tables with vectors, not attached yet")
            st.markdown(", ".join(f"`{t.schema_name}.{t.table_name}.{t.vector_column}` "
                                  f"({t.vector_type}({t.dimension or '?'}))" for t in found))
            st.page_link("app_pages/ingest.py", icon=":material/link:",
                         label="Attach one in place (nothing is copied): Ingest page, "
                               "'Attach a PostgreSQL table'")

st.subheader("Quick semantic search")
name = ui.current_collection_name()
if name is None:
    st.info("Pick or create a collection first.")
else:
    with ui.errors_shown():
        collection = ui.current_collection()
        assert collection is not None
        with st.form("quick_search"):
            cols = st.columns([5, 1])
            query = cols[0].text_input(
                f"Search {collection.name!r} by meaning",
                placeholder="e.g. why does my bread not rise?",
                key="quick_query",
            )
            k = cols[1].number_input("top-k", min_value=1, max_value=100, value=5, key="quick_k")
            submitted = st.form_submit_button("Search")
        if submitted:
            embedder = ui.embedder_for(collection)
            with ui.connection() as conn:
                hits = search_text(conn, collection, query, embedder=embedder, k=int(k))
            if hits.empty:
                st.info("The collection is empty.")
            st.caption(f"Ranked by {collection.metric} distance (smaller is closer).")
            for hit in hits.itertuples():
                with st.container(border=True):
                    st.markdown(f"**{hit.rank}. {hit.title or hit.external_id}**  ·  "
                                f"`{hit.category or '-'}`  ·  distance {hit.distance:.4f}")
                    st.write(hit.content[:400] + ("…" if len(hit.content) > 400 else ""))

