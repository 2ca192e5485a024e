"""Ingest: bring your own data. Upload files (CSV/TSV, JSON/JSONL, Parquet, text/Markdown, PDF),
map columns, chunk, embed (local, OpenAI or an OpenAI-compatible server) and load with live
progress; or import a ChromaDB directory, or attach an existing PostgreSQL table."""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

import ui
from vecdash.chroma_import import import_chroma, list_chroma_collections
from vecdash.chunking import CHUNK_MODES, ChunkSpec, chunk_records
from vecdash.collections import METRIC_LABELS, get_collection, list_collections
from vecdash.discovery import attach_table, discover_tables
from vecdash.embed_precision import mixed_precisions_note
from vecdash.embedders import (
    LOCAL_DIMENSION,
    LOCAL_MODEL,
    OPENAI_MAX_TOKENS_PER_INPUT,
    OPENAI_MODELS,
    OPENAI_PRICES_PER_1M,
    Embedder,
    count_tokens,
    get_embedder,
    known_local_precision,
)
from vecdash.ingest import check_embedder
from vecdash.ingest_report import IngestReport
from vecdash.loading import ingest_file
from vecdash.readers import (
    ColumnMapping,
    ReadCounter,
    check_mapping,
    count_rows,
    detect_format,
    file_records,
    guess_mapping,
    preview_rows,
)
from vecdash.records import texts_to_embed
from vecdash.vector_precisions import vector_precisions

st.title("Ingest")
st.caption("Bring your own documents: upload, map columns, chunk, embed and load with live "
           "progress. Each batch is one transaction; running an ingestion again skips what is "
           "stored, and an embedding cache means the same texts are never embedded twice.")

if ui.read_only():
    st.info("Read-only mode: ingestion is hidden. Start vecdash without VECDASH_READ_ONLY to load "
            "data.", icon="🔒")
    st.stop()


def precision_notes() -> None:
    """How the local model runs on this machine, and whether the sidebar's collection holds
    vectors embedded in more than one precision."""
    choice = known_local_precision()  # never waits: the model calibrates in the background
    if choice is None:
        st.caption("Local model: measuring which precision is fastest on this machine (once, "
                   "in the background); a load started meanwhile waits for it.")
        return
    st.caption(f"Local model: {choice.summary()}", help=choice.describe())
    name = ui.current_collection_name()
    if name is None:
        return
    with ui.connection() as conn:
        counts = vector_precisions(conn, get_collection(conn, name))
    note = mixed_precisions_note(counts, choice)
    if note:
        st.info(f"{name}: {note}", icon="ℹ️")


with ui.errors_shown():
    precision_notes()

UPLOAD_TYPES = ["csv", "tsv", "tab", "json", "jsonl", "ndjson", "parquet", "pq", "txt", "md",
                "markdown", "pdf"]
NONE = "(none)"
CHUNK_LABELS = {"none": "none (a document is one record)", "paragraph": "by paragraph",
                "tokens": "fixed size in tokens, with overlap"}


def upload_dir() -> Path:
    if "ing_dir" not in st.session_state:
        st.session_state["ing_dir"] = tempfile.mkdtemp(prefix="vecdash-upload-")
    return Path(st.session_state["ing_dir"])


def saved_paths(files: list[Any]) -> list[Path]:
    """Uploaded files written to this session's temp dir (readers stream from disk)."""
    paths = []
    for f in files:
        data = f.getvalue()
        digest = hashlib.sha1(data).hexdigest()[:12]
        folder = upload_dir() / digest
        folder.mkdir(exist_ok=True)
        path = folder / Path(f.name).name
        if not path.exists():
            path.write_bytes(data)
        paths.append(path)
    return paths


def default_name(path: Path) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_") or "documents"
    return name[:50]


def choose_embedder(mapping: ColumnMapping) -> Embedder | None:
    """The embedder widgets; None when the file's vector column is used."""
    options = ["local", "openai", "compatible"]
    labels = {"local": f"Local model ({LOCAL_MODEL}, {LOCAL_DIMENSION} dimensions, offline)",
              "openai": "OpenAI", "compatible": "OpenAI-compatible server (base URL + model)"}
    if mapping.embedding:
        options.insert(0, "precomputed")
        labels["precomputed"] = f"None: use the vectors in column {mapping.embedding!r}"
    kind = st.radio("Embedder", options, format_func=labels.__getitem__, key="ing_embedder")
    if kind == "precomputed":
        return None
    if kind == "local":
        return ui.local_embedder()
    cols = st.columns(3)
    if kind == "openai":
        model = cols[0].selectbox("Model", list(OPENAI_MODELS), key="ing_oa_model")
        native = OPENAI_MODELS[model]
        dims = cols[1].number_input(
            "Dimensions (0 = the model's own)", min_value=0, max_value=native, value=0,
            key="ing_oa_dims", disabled=model == "text-embedding-ada-002",
            help="text-embedding-3 models can return shorter vectors; above 2,000 the collection "
                 "stores halfvec so it can be indexed.")
        base_url = ui.settings().openai_base_url
    else:
        base_url = cols[0].text_input("Base URL", key="ing_compat_url",
                                      placeholder="http://localhost:11434/v1")
        model = cols[1].text_input("Model", key="ing_compat_model",
                                   placeholder="nomic-embed-text")
        dims = cols[2].number_input("Dimensions (0 = do not send)", min_value=0, max_value=16000,
                                    value=0, key="ing_compat_dims")
        if not base_url or not model:
            st.info("Enter the server's base URL and the model name.")
            return None
    key = ui.openai_key()
    entered = st.text_input("API key" + (" (OPENAI_API_KEY is set)" if key else ""),
                            type="password", key="ing_oa_key",
                            help="Used for this session only; never stored.")
    key = entered or key or ("not-needed" if kind == "compatible" else "")
    embedder = get_embedder("openai", model, dimensions=int(dims) or None, api_key=key,
                            base_url=base_url)
    return embedder


def report_frame(report: IngestReport) -> pd.DataFrame:
    return pd.DataFrame({"id": [f.external_id for f in report.failed],
                         "reason": [f.reason for f in report.failed]})


def show_summary() -> None:
    summary = st.session_state.get("ing_summary")
    if not summary:
        return
    report: IngestReport = summary["report"]
    box = st.container(border=True)
    if summary.get("cancelled"):
        box.warning(f"Cancelled. {report.inserted:,} new documents were stored before that; run "
                    "the same ingestion again to continue (stored documents are skipped).")
    elif report.failed_count and not report.inserted and not report.skipped_duplicates:
        box.warning(f"Nothing was loaded: 0 inserted, {report.failed_count:,} failed. The "
                    "reasons are listed below; fix those rows and load the file again.")
    else:
        box.success(f"Done: {summary['collection']!r} in {summary['seconds']:.1f} s.")
    cols = box.columns(4)
    cols[0].metric("Inserted", f"{report.inserted:,}")
    cols[1].metric("Skipped as duplicates", f"{report.skipped_duplicates:,}")
    cols[2].metric("Failed", f"{report.failed_count:,}")
    cols[3].metric("Embedded / from cache", f"{report.embedded:,} / {report.cached:,}")
    for warning in report.warnings[:10]:
        box.warning(warning)
    if report.failed:
        frame = report_frame(report)
        box.dataframe(frame.head(200), hide_index=True, width="stretch")
        box.download_button("Download failures (CSV)", frame.to_csv(index=False).encode(),
                            file_name=f"{summary['collection']}_failures.csv", mime="text/csv",
                            key="ing_download")


def cancel() -> None:
    summary = st.session_state.pop("ing_running", None)
    if summary is not None:
        st.session_state["ing_summary"] = {**summary, "cancelled": True}


def run_ingestion(paths: list[Path], **kwargs: Any) -> None:
    fmt, text_mode = kwargs["fmt"], kwargs["text_mode"]
    total = sum(count_rows(p, fmt=fmt, text_mode=text_mode) for p in paths)
    counter = ReadCounter()
    started = time.monotonic()
    st.button("Cancel", on_click=cancel, key="ing_cancel",
              help="Stops after the batch in progress; committed batches stay.")
    bar = st.progress(0.0, text=f"Reading {total:,} rows…")
    live = {"collection": kwargs["collection"], "report": IngestReport(), "seconds": 0.0}
    st.session_state["ing_running"] = live

    def progress(report: IngestReport) -> None:
        done = min(counter.rows, total)
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        live.update(report=report, seconds=elapsed)
        bar.progress(done / total if total else 1.0,
                     text=f"{done:,} of {total:,} rows · {rate:.1f} docs/s · ETA {eta:.0f} s · "
                     f"{report.inserted:,} new, {report.skipped_duplicates:,} duplicates, "
                     f"{report.failed_count:,} failed")

    with ui.connection() as conn:
        collection, report = ingest_file(conn, paths, progress=progress, counter=counter, **kwargs)
        kept = any(c.name == collection.name for c in list_collections(conn))
    st.session_state.pop("ing_running", None)
    st.session_state["ing_summary"] = {"collection": collection.name, "report": report,
                                       "seconds": time.monotonic() - started}
    if kept:  # a new collection that stored nothing is not kept (the report's warning says so)
        ui.select_collection(collection.name)
    st.rerun()


# The form's per-file state: a new upload starts from the file's own guesses, not the last
# file's name, mapping and summary. The embedder choice and API key are the person's, and stay.
PER_FILE_KEYS = ("ing_text_mode", "ing_map_content", "ing_map_id", "ing_map_title",
                 "ing_map_category", "ing_map_vector", "ing_map_metadata", "ing_target",
                 "ing_existing", "ing_new_name", "ing_metric", "ing_chunk_mode", "ing_chunk_size",
                 "ing_chunk_overlap", "ing_tokens", "ing_summary")


def start_fresh_form_for_new_files(files: list[Any]) -> None:
    """Forget the per-file form state when the uploads change to another set of files (removing
    every file keeps the last summary on screen; adding a file clears it)."""
    upload_ids = tuple(getattr(f, "file_id", None) or (f.name, f.size) for f in files)
    if not upload_ids or st.session_state.get("ing_upload_ids") == upload_ids:
        return
    for key in PER_FILE_KEYS:
        st.session_state.pop(key, None)
    for key in [k for k in st.session_state if str(k).startswith("ing_vectors_from")]:
        st.session_state.pop(key, None)
    st.session_state["ing_upload_ids"] = upload_ids


def upload_tab() -> None:
    files = st.file_uploader("Files", type=UPLOAD_TYPES, accept_multiple_files=True,
                             key="ing_files",
                             help="One table (CSV/TSV, JSON/JSONL, Parquet) or several text, "
                                  "Markdown or PDF files of one kind.")
    start_fresh_form_for_new_files(list(files or []))
    show_summary()
    if not files:
        st.caption("CSV/TSV (UTF-8, UTF-8 with BOM or Latin-1), JSON (array of objects), JSONL, "
                   "Parquet, .txt/.md (a file per document, or one per section), PDF (a "
                   "document per page). A column holding vectors skips the model.")
        return
    paths = saved_paths(files)
    formats = {detect_format(p) for p in paths}
    if len(formats) > 1:
        st.error("Upload files of one kind at a time (e.g. several PDFs, or one CSV).")
        return
    fmt = formats.pop()
    text_mode = "file"
    if fmt == "text":
        text_mode = st.radio("Text files", ["file", "sections"], horizontal=True,
                             key="ing_text_mode",
                             format_func={"file": "a file per document",
                                          "sections": "one document per Markdown section (or "
                                          "paragraph)"}.__getitem__)
    frame, errors = preview_rows(paths[0], fmt=fmt, text_mode=text_mode)
    st.markdown(f"**Preview** of {paths[0].name} (first {len(frame)} rows)")
    st.dataframe(frame, hide_index=True, width="stretch")
    if errors:
        st.warning(f"{len(errors)} unreadable row(s) in the preview, e.g. {errors[0].reason}. "
                   "They will be reported as failures; the other rows load.")
    columns = list(frame.columns)
    guess = guess_mapping(columns)
    st.markdown("**Columns**")
    cols = st.columns(5)
    optional = [NONE, *columns]

    def pick(col: Any, label: str, value: str | None, key: str) -> str | None:
        chosen = col.selectbox(label, optional, index=optional.index(value or NONE), key=key)
        return None if chosen == NONE else str(chosen)

    content = cols[0].selectbox("Content (required)", columns,
                                index=columns.index(guess.content), key="ing_map_content")
    id_col = pick(cols[1], "Id", guess.id, "ing_map_id")
    title = pick(cols[2], "Title", guess.title, "ing_map_title")
    category = pick(cols[3], "Category", guess.category, "ing_map_category")
    vector = pick(cols[4], "Vector column", guess.embedding, "ing_map_vector")
    taken = {content, id_col, title, category, vector}
    metadata = st.multiselect("Metadata columns", [c for c in columns if c not in taken],
                              default=[c for c in guess.metadata if c not in taken],
                              key="ing_map_metadata")
    mapping = ColumnMapping(content=content, id=id_col, title=title, category=category,
                            metadata=tuple(metadata), embedding=vector)
    check_mapping(mapping, columns)

    st.markdown("**Target**")
    with ui.connection() as conn:
        managed = [c for c in list_collections(conn) if c.managed]
    cols = st.columns([1, 2, 2])
    target_kind = cols[0].radio("Load into", ["new", "existing"], key="ing_target",
                                format_func={"new": "a new collection",
                                             "existing": "an existing collection"}.__getitem__,
                                disabled=not managed)
    metric = "cosine"
    if target_kind == "existing" and managed:
        names = [c.name for c in managed]
        name = cols[1].selectbox("Collection", names, key="ing_existing")
        target = managed[names.index(name)]
        cols[2].caption(f"{target.embedder} / {target.model} · {target.dimension} dimensions · "
                        f"{target.metric}")
    else:
        target = None
        name = cols[1].text_input("New collection name", value=default_name(paths[0]),
                                  key="ing_new_name")
        metric = cols[2].selectbox("Distance metric", list(METRIC_LABELS),
                                   format_func=METRIC_LABELS.__getitem__, key="ing_metric")

    st.markdown("**Chunking**")
    cols = st.columns(3)
    mode = cols[0].selectbox("Chunking", CHUNK_MODES, format_func=CHUNK_LABELS.__getitem__,
                             key="ing_chunk_mode")
    size = cols[1].number_input("Chunk size (tokens)", min_value=8, max_value=8192, value=200,
                                key="ing_chunk_size", disabled=mode != "tokens",
                                help=f"Counted with {LOCAL_MODEL}'s tokenizer (it reads at most "
                                     "256 tokens; longer texts are cut by the model).")
    overlap = cols[2].number_input("Overlap (tokens)", min_value=0, max_value=4096, value=40,
                                   key="ing_chunk_overlap", disabled=mode != "tokens")
    spec = ChunkSpec(mode, int(size), int(overlap)).check()

    st.markdown("**Embedding**")
    embedder = choose_embedder(mapping)
    if embedder is None and not mapping.embedding:
        return
    if target is not None:
        check_embedder(target, embedder)  # refused here, before any work
    vectors_from = None
    if embedder is None:
        named, vectors_from = choose_vectors_model(target)
        if not named:
            return
    if embedder is not None and embedder.provider == "openai":
        openai_estimate(paths, fmt, text_mode, mapping, spec, embedder)

    if st.button("Start ingestion", type="primary", key="ing_start"):
        st.session_state.pop("ing_summary", None)
        run_ingestion(paths, collection=name, mapping=mapping, fmt=fmt, text_mode=text_mode,
                      chunking=spec, embedder=embedder, metric=metric, vectors_from=vectors_from)


# Who made a file's vectors: "none" is a model vecdash does not run (queries then need vectors
# too); naming one vecdash runs lets text queries embed with it, and is required to load into a
# collection of that model (vectors of two models are not comparable).
VECTOR_SOURCES = {"none": "a model vecdash does not run (vectors from outside)",
                  f"local/{LOCAL_MODEL}": f"the local model, local/{LOCAL_MODEL}",
                  **{f"openai/{m}": f"OpenAI, openai/{m}" for m in OPENAI_MODELS}}


def choose_vectors_model(target: Any) -> tuple[bool, str | None]:
    """(named, ``vectors_from`` for ingest_file): which model made the file's vectors. A
    collection of a model vecdash runs takes them only once the person names that model."""
    needs_name = target is not None and target.embedder in ("local", "openai")
    choice = st.selectbox(
        "The file's vectors were made by", list(VECTOR_SOURCES),
        format_func=VECTOR_SOURCES.__getitem__, index=None if needs_name else 0,
        placeholder="Name the model that made them",
        # one choice per target: "outside" picked for a new collection must not carry over
        key="ing_vectors_from" + (f":{target.name}" if target is not None else ""),
        help="Vectors of two models are not comparable: a collection's vectors all come from "
             "one model, which also embeds its text queries.")
    if choice is None:
        st.info(f"{target.name!r} holds vectors made by {target.embedder}/{target.model}. Name "
                "the model that made the file's vectors: only the same model's vectors can go "
                "in (their dimension is checked per row).")
        return False, None
    if needs_name and choice != f"{target.embedder}/{target.model}":
        st.error(f"{target.name!r} holds vectors made by {target.embedder}/{target.model}, not "
                 f"{choice}: vectors of two models are not comparable. Load the file into a new "
                 "collection instead.")
        return False, None
    return True, None if choice == "none" else choice


def openai_estimate(paths: list[Path], fmt: Any, text_mode: Any, mapping: ColumnMapping,
                    spec: ChunkSpec, embedder: Embedder) -> None:
    key = (tuple(map(str, paths)), text_mode, mapping, spec)
    cached = st.session_state.get("ing_tokens")
    if not cached or cached[0] != key:
        texts: list[str] = []
        for p in paths:
            texts.extend(texts_to_embed(chunk_records(
                file_records(p, mapping, fmt=fmt, text_mode=text_mode), spec)))
        cached = (key, count_tokens(texts))
        st.session_state["ing_tokens"] = cached
    counted = cached[1]
    price = OPENAI_PRICES_PER_1M.get(embedder.model)
    cost = counted.cost(embedder.model)
    how = "exact (cl100k_base)" if counted.exact else "estimated at 4 characters per token"
    cols = st.columns(3)
    cols[0].metric("Tokens to embed", f"{counted.tokens:,}", help=f"Counted {how}; stored "
                   "duplicates and cached texts cost nothing, so this is an upper bound.")
    cols[1].metric("Estimated cost", f"${cost:,.4f}" if cost is not None else "unknown")
    cols[2].metric("Texts", f"{counted.texts:,}")
    st.caption(f"Assumed price: ${price} per 1M tokens for {embedder.model} (set in "
               "vecdash/embedders.py OPENAI_PRICES_PER_1M)." if price is not None else
               f"No price known for {embedder.model!r}.")
    if counted.over_limit:
        st.warning(f"{counted.over_limit:,} text(s) are longer than "
                   f"{OPENAI_MAX_TOKENS_PER_INPUT:,} tokens (the longest has "
                   f"{counted.longest:,}); OpenAI would truncate them. Choose fixed-size "
                   "chunking to embed all of their text.")


def chroma_tab() -> None:
    st.caption("Move a ChromaDB prototype to pgvector: its embeddings are copied as they are (no "
               "model runs), documents become content, title/category metadata fill those "
               "columns.")
    path = st.text_input("ChromaDB directory (the path given to PersistentClient)",
                         key="ing_chroma_path")
    if not path:
        return
    infos = list_chroma_collections(path)
    if not infos:
        st.info("That directory has no collections.")
        return
    labels = [f"{i.name} · {i.count:,} items · {i.dimension or '?'} dimensions · {i.metric}"
              for i in infos]
    pick = st.selectbox("Chroma collection", range(len(infos)), format_func=labels.__getitem__,
                        key="ing_chroma_pick")
    info = infos[pick]
    name = st.text_input("New collection name", value=default_name(Path(info.name)),
                         key="ing_chroma_name")
    if st.button("Import", type="primary", key="ing_chroma_import"):
        bar = st.progress(0.0, text="Copying…")
        with ui.connection() as conn:
            collection, report = import_chroma(
                conn, path, info.name, name=name,
                progress=lambda r: bar.progress(min(1.0, r.processed / max(info.count, 1)),
                                                text=f"{r.processed:,} of {info.count:,}"))
        st.session_state["ing_summary"] = {"collection": collection.name, "report": report,
                                           "seconds": 0.0}
        ui.select_collection(collection.name)
        st.rerun()


def attach_tab() -> None:
    st.caption("A table you made yourself (e.g. documents(id, content, embedding vector(1536))) "
               "can be searched in place: nothing is copied or changed.")
    with ui.connection() as conn:
        found = discover_tables(conn)
    if not found:
        st.info("No table with a vector column is waiting to be attached.")
        return
    labels = [f"{t.schema_name}.{t.table_name}.{t.vector_column} "
              f"({t.vector_type}({t.dimension or '?'}))" for t in found]
    pick = st.selectbox("Table", range(len(found)), format_func=labels.__getitem__,
                        key="ing_attach_pick")
    t = found[pick]
    text_cols = [c for c, ty in t.columns.items() if ty in ("text", "character varying")] or \
        list(t.columns)
    content_guess = t.guess("content", "body", "text") or text_cols[0]
    with st.form("ing_attach"):
        name = st.text_input("Collection name", value=t.table_name)
        content = st.selectbox("Content column", text_cols, index=text_cols.index(content_guess))
        title = st.selectbox("Title column", [None, *text_cols],
                             index=[None, *text_cols].index(t.guess("title", "name")))
        category = st.selectbox("Category column", [None, *text_cols],
                                index=[None, *text_cols].index(t.guess("category")))
        metric = st.selectbox("Distance metric", list(METRIC_LABELS),
                              format_func=METRIC_LABELS.__getitem__)
        if st.form_submit_button("Attach"):
            with ui.connection() as conn:
                attach_table(conn, name, schema=t.schema_name, table=t.table_name,
                             vector_column=t.vector_column, content_column=content,
                             title_column=title, category_column=category, metric=metric)
            ui.select_collection(name)
            st.rerun()


upload, chroma, attach = st.tabs(["Upload files", "Import ChromaDB", "Attach a PostgreSQL table"])
with upload, ui.errors_shown():
    upload_tab()
with chroma, ui.errors_shown():
    chroma_tab()
with attach, ui.errors_shown():
    attach_tab()
