"""Search: semantic, keyword (BM25 or ts_rank_cd) and hybrid ranking with a semantic-weight slider,
filters, highlighted snippets, and a side-by-side comparison of the three rankings."""

from __future__ import annotations

import html
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import streamlit as st

import ui
from vecdash.collections import list_collections
from vecdash.export import search_results_csv
from vecdash.search import (
    FUSIONS,
    KEYWORD_RANKERS,
    SearchFilters,
    compare_rankings,
    hybrid_search,
    list_categories,
)
from vecdash.search.view_params import (
    DEPTH_RANGE,
    K1_RANGE,
    K_RANGE,
    MODES,
    RRF_K_RANGE,
    WEIGHT_STEP,
    SearchView,
    view_from_params,
)
from vecdash.search_setting import saved_search_setting

# Short enough to show whole in the select at 1440 px; the select's help spells them out.
FUSION_LABELS = {"convex": "convex (min-max)", "rrf": "RRF (by rank)"}
RANKER_LABELS = {"bm25": "BM25", "ts_rank_cd": "ts_rank_cd (PostgreSQL)"}
# Every widget of the view, kept per collection in "search_views" for the whole session:
# Streamlit forgets a widget's value when its page is left.
VIEW_KEYS = (*SearchView().to_state(), "search_meta_key", "search_meta_value",
             "search_use_dates", "search_dates")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def url_params() -> dict[str, list[str]]:
    return {name: st.query_params.get_all(name) for name in st.query_params}


def page_base_url() -> str:
    """This page's address as the browser reaches it (no parameters)."""
    parts = urlsplit(st.context.url or "http://localhost:8501")
    base_path = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return f"{parts.scheme}://{parts.netloc}/" + (f"{base_path}/" if base_path else "") + "search"


st.title("Search")

# A link is a URL this session did not write (a reload, a pasted or shared link). One naming
# another collection picks it in the sidebar first (app.py reads the key).
incoming = url_params()
from_link = bool(incoming) and incoming != st.session_state.get("search_url_written")
linked = st.query_params.get("collection")
if (from_link and linked and linked != ui.current_collection_name()
        and st.session_state.get("search_link_collection_tried") != incoming):
    st.session_state["search_link_collection_tried"] = incoming  # once per link
    with ui.errors_shown(), ui.connection() as conn:
        if linked in {c.name for c in list_collections(conn)}:
            ui.select_collection(linked)
            st.rerun()
        st.warning(f"The link names the collection {linked!r}, which does not exist here; "
                   "showing the current one. Pick another in the sidebar.", icon="⚠️")

collection = ui.page_collection()
with ui.errors_shown():
    with ui.connection() as conn:
        categories = list_categories(conn, collection)

# Where the widgets' values come from, first match wins: a setting applied from the Quality Lab,
# a link (the URL's parameters, when this session did not write them), the session's view of
# this collection, the collection's saved default (Quality Lab: save), the defaults.
views: dict[str, dict[str, Any]] = st.session_state.setdefault("search_views", {})
applied = st.session_state.pop("search_apply", None)
fresh = ("search_query" not in st.session_state
         or st.session_state.get("search_view_for") != collection.name)
loaded: dict[str, Any] | None = None
if isinstance(applied, dict):
    loaded = {**views.get(collection.name, SearchView().to_state()), **applied}
    st.toast("Applied the Quality Lab setting.")
elif from_link:
    base = SearchView()
    with ui.errors_shown(), ui.connection() as conn:
        saved = saved_search_setting(conn, collection)
        if saved is not None:
            base = SearchView.from_state({**base.to_state(), **saved.setting.search_state()})
    view, notes = view_from_params(incoming, base=base, categories=categories)
    loaded = view.to_state()
    st.session_state["search_url_notes"] = (notes, view)
elif fresh and collection.name in views:
    loaded = views[collection.name]
elif fresh:
    loaded = SearchView().to_state()
    with ui.errors_shown(), ui.connection() as conn:
        saved = saved_search_setting(conn, collection)
        if saved is not None:
            loaded.update(saved.setting.search_state())
            st.toast(f"Opened with {collection.name}'s saved setting: {saved.setting.label}.")
if loaded is not None:
    for key in VIEW_KEYS:
        st.session_state.pop(key, None)
    state = {**loaded, "search_categories": [c for c in loaded.get("search_categories") or ()
                                             if c in categories]}
    state = {**state, **SearchView.from_state(state).to_state()}  # bounds and types checked
    st.session_state.update({key: state[key] for key in VIEW_KEYS if key in state})
st.session_state["search_view_for"] = collection.name

st.caption(
    f"Collection **{collection.name}** · {collection.metric} distance · "
    f"{collection.embedder}/{collection.model} · text search configuration "
    f"`{collection.text_config}`"
)
if not collection.tsv_column:
    st.info(
        "This is an attached table without a stored tsvector: the keyword arm computes "
        "`to_tsvector` and the BM25 statistics on the fly, scanning the whole table for every "
        "query. Fine for small tables; for large ones load the data into a vecdash collection.",
        icon="ℹ️",
    )

# The widgets take their values from the session state set above (no defaults passed, so
# Streamlit never sees two sources).
query = st.text_input("Query", placeholder="e.g. why does my bread not rise?", key="search_query")
top = st.columns([3, 3, 2, 1, 2])
mode = top[0].radio("Mode", MODES, key="search_mode", horizontal=True)
weight_disabled = mode != "hybrid"
weight = top[1].slider(
    "Semantic weight", 0.0, 1.0, step=WEIGHT_STEP, key="search_weight", disabled=weight_disabled,
    help="0 ranks by keywords only, 1 by meaning only.",
)
fusion = top[2].selectbox("Fusion", FUSIONS, key="search_fusion",
                          format_func=FUSION_LABELS.__getitem__, disabled=weight_disabled,
                          help="convex: the weighted sum of both arms' scores scaled to 0..1. "
                               "RRF: the sum of 1 / (k + rank) over both arms.")
k = top[3].number_input("top-k", *K_RANGE, key="search_k")
depth = top[4].number_input("Candidates per arm", *DEPTH_RANGE, step=10,
                            key="search_candidates",
                            help="How deep each arm looks before fusing (the union of both).")

with st.expander("Keyword ranker, RRF and filters"):
    cols = st.columns(4)
    ranker = cols[0].selectbox("Keyword ranker", KEYWORD_RANKERS, key="search_keyword_ranker",
                               format_func=RANKER_LABELS.__getitem__)
    rrf_k = cols[1].number_input("RRF k", *RRF_K_RANGE, key="search_rrf_k",
                                 disabled=fusion != "rrf")
    k1 = cols[2].number_input("BM25 k1", *K1_RANGE, step=0.1, key="search_k1",
                              disabled=ranker != "bm25")
    b = cols[3].number_input("BM25 b", 0.0, 1.0, step=0.05, key="search_b",
                             disabled=ranker != "bm25")
    fcols = st.columns(4)
    picked = fcols[0].multiselect("Categories", categories, key="search_categories",
                                  disabled=not collection.category_column)
    meta_key = fcols[1].text_input("Metadata key", key="search_meta_key",
                                   disabled=not collection.metadata_column)
    meta_value = fcols[2].text_input("equals (as text)", key="search_meta_value",
                                     disabled=not collection.metadata_column)
    use_dates = fcols[3].checkbox("Filter on created_at", key="search_use_dates",
                                  disabled=not collection.created_at_column)
    dates: Any = ()
    if use_dates:
        dates = fcols[3].date_input("Created between", (date(2000, 1, 1), date.today()),
                                    key="search_dates")
    st.caption("Filters run in SQL in both arms. With an HNSW or IVFFlat index, pgvector's "
               "iterative index scans keep a filtered search returning top-k rows when that "
               "many match.")

# The view outlives the page (per collection, for the session) and is the page's URL, so a
# reload or a copied link opens it again.
views[collection.name] = {key: st.session_state[key] for key in VIEW_KEYS
                          if key in st.session_state}
view = SearchView.from_state(st.session_state)
st.query_params.from_dict({**view.to_params(), "collection": collection.name})
st.session_state["search_url_written"] = url_params()
url_notes, url_view = st.session_state.get("search_url_notes", ([], None))
if url_notes and url_view == view:
    st.info(" ".join(url_notes), icon="ℹ️")
with st.popover("Copy link to this view", icon=":material/link:"):
    st.caption("This page with this query, ranking and category filter (metadata and date "
               "filters are not in the link). Copy it with the button at the right.")
    st.code(view.url(page_base_url(), collection=collection.name), language=None,
            wrap_lines=True)

effective_weight = {"semantic": 1.0, "keyword": 0.0}.get(mode, float(weight))
filters = SearchFilters(
    categories=tuple(picked),
    metadata=((meta_key.strip(), meta_value),) if meta_key.strip() else (),
    created_from=dates[0] if len(dates) >= 1 else None,
    created_to=dates[1] if len(dates) == 2 else None,
)

if not query.strip():
    st.info("Type a query to search. Try an exact phrase (an error code, a product name) and a "
            "paraphrase, and move the semantic weight to see the ranking change.")
    st.stop()

results_tab, compare_tab = st.tabs(["Results", "Compare semantic / keyword / hybrid"])

with results_tab, ui.errors_shown():
    embedder = ui.embedder_for(collection)
    with ui.connection() as conn:
        hits = hybrid_search(
            conn, collection, query, embedder=embedder, k=int(k), weight=effective_weight,
            fusion=str(fusion), rrf_k=int(rrf_k), candidates=int(depth),
            keyword_ranker=str(ranker), filters=filters, k1=float(k1), b=float(b),
        )
    for note in hits.attrs.get("notes", []):
        st.info(note, icon="ℹ️")
    lexemes = hits.attrs.get("lexemes", [])
    st.caption(
        f"{plural(len(hits), 'result')} from "
        f"{plural(int(hits.attrs.get('candidates', 0)), 'candidate')} (union of both arms) · "
        f"{mode}" + (f", weight {effective_weight:.2f}, {fusion}" if mode == "hybrid"
                             else "")
        + (f" · query lexemes: {', '.join(lexemes)}" if lexemes else "")
        + (f" · BM25 from the {path}" if (path := hits.attrs.get("keyword_path")) else "")
    )
    if hits.empty:
        st.warning("Nothing matched. Loosen the filters or try other words.")
    else:
        table = hits[["rank", "title", "category", "source", "fused_score", "semantic_score",
                      "semantic_rank", "keyword_score", "keyword_rank"]].copy()
        table["title"] = [t or e for t, e in zip(hits["title"], hits["external_id"], strict=True)]
        # Narrow number columns so every column fits a 1440-px window without sideways scroll.
        number = st.column_config.NumberColumn
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "rank": number("rank", width=45),
            "title": st.column_config.TextColumn("title", width=220),
            "category": st.column_config.TextColumn("category", width=95),
            "source": st.column_config.TextColumn("found by", width=105),
            "fused_score": number("fused", format="%.4f", width=70),
            "semantic_score": number("semantic score", format="%.4f", width=110),
            "semantic_rank": number("semantic rank", width=100),
            "keyword_score": number(f"{ranker} score", format="%.4f", width=120),
            "keyword_rank": number("keyword rank", width=100),
        })
        st.download_button("Download results (CSV)", search_results_csv(hits),
                           file_name=f"{collection.name}-search.csv", mime="text/csv",
                           key="search_results_csv", on_click="ignore")
        badge = {"both": "🟣 both arms", "semantic only": "🔵 semantic only",
                 "keyword only": "🟠 keyword only"}
        for hit in hits.itertuples():
            with st.container(border=True):
                title = html.escape(str(hit.title or hit.external_id))
                st.markdown(
                    f"**{hit.rank}. {title}** · `{html.escape(str(hit.category or '-'))}` · "
                    f"{badge[str(hit.source)]} · fused {hit.fused_score:.4f}",
                )
                st.markdown(str(hit.snippet), unsafe_allow_html=True)

with compare_tab, ui.errors_shown():
    embedder = ui.embedder_for(collection)
    with ui.connection() as conn:
        cmp = compare_rankings(
            conn, collection, query, embedder=embedder, k=int(k),
            weight=effective_weight if mode == "hybrid" else 0.5, fusion=str(fusion),
            rrf_k=int(rrf_k), candidates=int(depth), keyword_ranker=str(ranker), filters=filters,
            k1=float(k1), b=float(b),
        )
    st.caption(f"Top-{int(k)} of each ranking from the same candidates. Hybrid uses weight "
               f"{effective_weight if mode == 'hybrid' else 0.5:.2f} ({fusion}).")
    metric_cols = st.columns(len(cmp.overlap))
    for col, (label, value) in zip(metric_cols, cmp.overlap.items(), strict=True):
        col.metric(f"overlap: {label}", f"{value} / {int(k)}")
    lists = st.columns(3)
    for col, (label, frame) in zip(
        lists, (("Semantic", cmp.semantic), (f"Keyword ({RANKER_LABELS[str(ranker)]})",
                                             cmp.keyword), ("Hybrid", cmp.hybrid)), strict=True
    ):
        col.markdown(f"**{label}**")
        col.dataframe(frame[["rank", "title"]], hide_index=True, width="stretch")
    st.markdown("**How far each document moved** (positive: hybrid ranks it higher than the arm)")
    st.caption("Ranks over all the candidates, as the Results tab shows them; blank where the "
               "document is not among that arm's candidates.")
    keyword_label = RANKER_LABELS[str(ranker)]
    st.dataframe(cmp.movement.rename(columns={
        "hybrid_rank": "hybrid rank", "semantic_rank": "semantic rank",
        "keyword_rank": f"keyword rank ({keyword_label})",
        "moved_vs_semantic": "moved vs semantic",
        "moved_vs_keyword": f"moved vs keyword ({keyword_label})",
    }), hide_index=True, width="stretch")
