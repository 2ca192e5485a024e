"""Index Lab: build HNSW / IVFFlat indexes with progress, and see recall against latency live."""

from __future__ import annotations

import functools
import time
from typing import Any

import pandas as pd
import streamlit as st

import ui
from vecdash import indexes as ix
from vecdash.collections import METRIC_LABELS, Collection, data_version
from vecdash.collections import row_count as collection_rows
from vecdash.demo import DEMO_COLLECTION, demo_queries
from vecdash.errors import Cancelled, VecdashError
from vecdash.indexes import sweep_report
from vecdash.synthetic import KINDS, create_synthetic_collection

st.title("Index Lab")
st.caption(
    "Which index, with which settings, gives the recall you need at the latency you can afford, "
    "on your data? Build HNSW or IVFFlat indexes, then watch recall@k against p50 / p95 / p99 "
    "latency as you turn ef_search and probes."
)
read_only = ui.read_only()
MEMORY_CHOICES = ["64MB", "128MB", "256MB", "512MB", "1GB", "2GB", "4GB"]


def synthetic_section() -> None:
    with st.expander("Generate synthetic vectors into a new collection (no model needed)"):
        st.caption("The benchmark people ask for first: 10,000 random 1536-dimensional vectors, "
                   "no index vs IVFFlat vs HNSW. Clustered data looks more like real embeddings.")
        with st.form("ix_synthetic"):
            cols = st.columns(3)
            name = cols[0].text_input("Collection name", value="synthetic_10k_1536",
                                      key="ix_syn_name")
            n = cols[1].number_input("Vectors", min_value=1, max_value=2_000_000, value=10_000,
                                     step=1000, key="ix_syn_n")
            dim = cols[2].number_input("Dimension", min_value=1, max_value=16000, value=1536,
                                       key="ix_syn_dim")
            cols = st.columns(4)
            kind = cols[0].radio("Kind", KINDS, horizontal=True, key="ix_syn_kind")
            clusters = cols[1].number_input("Clusters (clustered only)", min_value=1,
                                            max_value=10_000, value=20, key="ix_syn_clusters")
            intrinsic = cols[2].number_input(
                "Intrinsic dimension (clustered)", min_value=0, max_value=16000, value=0,
                key="ix_syn_intrinsic",
                help="0: each cluster is a tight blob that varies a little in every direction. "
                     "r: each cluster varies mostly within its own r-dimensional subspace "
                     "(bench/index_bench.py uses 40 with wide, overlapping clusters, calibrated "
                     "against all-MiniLM-L6-v2 embeddings; that is the harder neighbour search).")
            metric = cols[3].selectbox("Distance metric", list(METRIC_LABELS),
                                       format_func=METRIC_LABELS.__getitem__, key="ix_syn_metric")
            submitted = st.form_submit_button("Generate and load")
        if submitted:
            with ui.errors_shown():
                bar = st.progress(0.0, text="Generating vectors…")
                with ui.connection() as conn:
                    _, report = create_synthetic_collection(
                        conn, name, n=int(n), dimension=int(dim), kind=kind,
                        clusters=int(clusters), metric=metric, intrinsic_dim=int(intrinsic),
                        progress=lambda r: bar.progress(min(1.0, r.processed / int(n)),
                                                        text=f"{r.processed:,} of {int(n):,} "
                                                        "vectors loaded (COPY)"),
                    )
                st.success(f"Loaded {report.inserted:,} vectors into {name!r}.")
                ui.select_collection(name)
                st.rerun()


def sample_queries(collection: Collection) -> ix.SampleQueries:
    """The demo's labeled queries (embedded with its model), else 50 stored vectors; cached per
    collection version in the session."""
    with ui.connection() as conn:
        version = data_version(conn, collection)
        key = (collection.name, version)
        cache: dict[Any, ix.SampleQueries] = st.session_state.setdefault("ix_queries", {})
        if key in cache:
            return cache[key]
        labeled: list[Any] = []
        if collection.name == DEMO_COLLECTION and collection.embedder == "local":
            try:
                labeled = demo_queries()
            except (FileNotFoundError, KeyError, ValueError):
                labeled = []
        if labeled:
            embedder = ui.embedder_for(collection)
            queries = ix.queries_from_vectors(
                collection, embedder.embed([q.text for q in labeled]), [q.text for q in labeled],
                source=f"{len(labeled)} labeled demo queries, embedded with "
                       f"{collection.embedder}/{collection.model}")
        else:
            queries = ix.stored_vector_queries(conn, collection, n=50)
    cache.clear()
    cache[key] = queries
    return queries


def index_table(indexes: list[ix.VectorIndex]) -> None:
    if not indexes:
        st.info("No vector index yet: every query is an exact scan of the whole table. Build one "
                "below.")
        return
    st.dataframe(pd.DataFrame({
        "index": [i.name for i in indexes],
        "type": [i.method for i in indexes],
        "operator class": [i.opclass for i in indexes],
        "parameters": [", ".join(f"{k}={v}" for k, v in i.params.items()) for i in indexes],
        "size on disk": [ui.human_bytes(i.size_bytes) for i in indexes],
        "valid": ["yes" if i.valid else "INVALID" for i in indexes],
        "build time": [f"{i.build_seconds:.2f} s" if i.build_seconds is not None
                       else "not built by vecdash" for i in indexes],
    }), hide_index=True, width="stretch")
    # The build settings are long ("maintenance_work_mem=..., workers=..."): as a column they
    # pushed the table past the page's width at 1440 px, so they are a line under it.
    for i in indexes:
        if i.built_with:
            st.caption(f"{i.name} was built with {i.built_with}.")


def invalid_section(collection: Collection, indexes: list[ix.VectorIndex]) -> None:
    for bad in (i for i in indexes if not i.valid):
        st.warning(f"{bad.name} is INVALID: an interrupted CREATE INDEX CONCURRENTLY (or a "
                   "crash) left it. PostgreSQL keeps updating it on every write but never uses it "
                   "for queries.", icon="⚠️")
        if not read_only and st.button(f"Drop invalid index {bad.name}", key=f"ix_dropbad_{bad.name}"):
            with ui.connection() as conn:
                ix.drop_index(conn, collection, bad.name)
            st.rerun()


def drop_section(collection: Collection, indexes: list[ix.VectorIndex]) -> None:
    with st.popover("Drop an index", disabled=not indexes):
        target = st.selectbox("Index to drop", [i.name for i in indexes], key="ix_drop_target")
        # Dropping cannot be undone (a rebuild can take minutes): a second, explicit step.
        sure = st.checkbox(f"Yes, drop {target}", key="ix_drop_confirm",
                           help="A dropped index is gone; building it again takes as long as the "
                                "first build.")
        if st.button("Drop index", type="primary", key="ix_drop", disabled=not sure):
            with ui.connection() as conn:
                ix.drop_index(conn, collection, target)
            st.rerun()


def build_section(collection: Collection, rows: int) -> None:
    st.subheader("Build an index")
    target = ix.index_target(collection)
    if target.halfvec_expression:
        st.info(target.reason, icon="ℹ️")
    cols = st.columns(5)
    method = cols[0].radio("Index type", ix.METHODS, horizontal=True, key="ix_method",
                           format_func={"hnsw": "HNSW", "ivfflat": "IVFFlat"}.__getitem__)
    if method == "hnsw":
        m = cols[1].number_input("m (links per node)", min_value=1, max_value=200,
                                 value=ix.HNSW_DEFAULTS["m"], key="ix_m")
        efc = cols[2].number_input("ef_construction", min_value=1, max_value=2000,
                                   value=ix.HNSW_DEFAULTS["ef_construction"], key="ix_efc",
                                   help="Candidates kept while linking; at least 2 x m.")
        spec = ix.IndexSpec("hnsw", m=int(m), ef_construction=int(efc))
    else:
        lists = cols[1].number_input(
            "lists", min_value=1, max_value=ix.LISTS_RANGE[1], value=ix.default_lists(rows),
            key="ix_lists", help="Advised: rows / 1000 (sqrt(rows) above a million rows).")
        spec = ix.IndexSpec("ivfflat", lists=int(lists))
        advised = ix.default_lists(rows)
        cols[2].caption(f"{rows:,} rows: about {advised} list{'' if advised == 1 else 's'} "
                        "advised. IVFFlat "
                        "learns its lists from the rows present now; rebuild after big loads.")
    memory = cols[3].selectbox("maintenance_work_mem", MEMORY_CHOICES, index=3, key="ix_mem",
                               help="Memory for the build. HNSW builds much faster when the "
                                    "graph fits in it.")
    workers = cols[4].number_input(
        "parallel maintenance workers", min_value=0, max_value=16, value=0, key="ix_workers",
        help="Extra processes helping the build (max_parallel_maintenance_workers).")
    if method == "hnsw":
        graph = ix.hnsw_graph_memory(collection, rows=rows, m=spec.m,
                                     maintenance_work_mem=memory)
        if graph.fits:
            st.caption(graph.message)
        else:
            st.warning(graph.message, icon="⚠️")
    st.caption(f"Operator class {target.opclass} (the collection's metric is {collection.metric}). "
               "The build is one plain CREATE INDEX transaction: writes to the table wait while it "
               "runs, and cancelling it (or a server restart) leaves no index behind.")
    if st.button("Build index", type="primary", key="ix_build_start",
                 disabled="ix_build" in st.session_state):
        st.session_state["ix_build"] = ix.start_build(
            ui.settings(), collection, spec, maintenance_work_mem=memory,
            parallel_workers=int(workers))


def monitor_build() -> None:
    build: ix.IndexBuild | None = st.session_state.get("ix_build")
    if build is None:
        return
    if not build.done:
        if st.button("Cancel build", key="ix_cancel"):
            with ui.connection() as conn:
                build.cancel(conn)
        bar = st.progress(0.0, text=f"Building {build.spec.label}…")
        while not build.done:
            with ui.connection() as conn:
                progress = build.progress(conn)
            if progress is not None:
                counts = (f"{progress.tuples_done:,} / {progress.tuples_total:,} tuples"
                          if progress.tuples_total else f"{progress.tuples_done:,} tuples, "
                          f"{progress.blocks_done:,} / {progress.blocks_total:,} blocks")
                bar.progress(progress.fraction or 0.0,
                             text=f"{progress.phase} · {counts} · {build.elapsed:.1f} s")
            time.sleep(0.3)
    del st.session_state["ix_build"]
    try:
        result = build.wait()
    except Cancelled as exc:
        st.session_state["ix_build_message"] = ("warning", str(exc))
    except VecdashError as exc:
        st.session_state["ix_build_message"] = ("error", str(exc))
    else:
        st.session_state["ix_build_message"] = (
            "success", f"Built {result.index} ({result.spec.label}) in {result.seconds:.2f} s "
                       f"with maintenance_work_mem={result.maintenance_work_mem} and "
                       f"{result.parallel_workers} extra workers.")
    st.rerun()


def show_build_message() -> None:
    message = st.session_state.pop("ix_build_message", None)
    if message:
        kind, text = message
        {"success": st.success, "warning": st.warning}.get(kind, st.error)(text)


def measurement_metrics(m: ix.Measurement, exact: ix.Measurement) -> None:
    cols = st.columns(6)
    cols[0].metric(f"recall@{m.k}", f"{m.recall:.3f}")
    cols[1].metric("p50", f"{m.p50_ms:.2f} ms")
    cols[2].metric("p95", f"{m.p95_ms:.2f} ms")
    cols[3].metric("p99", f"{m.p99_ms:.2f} ms")
    cols[4].metric("QPS", f"{m.qps:,.0f}")
    speedup = exact.p50_ms / m.p50_ms if m.p50_ms > 0 else float("inf")
    cols[5].metric("speed-up (p50)", f"{speedup:.1f}x",  # short: a sixth of the page wide
                   help=f"p50 against the exact scan's p50 of {exact.p50_ms:.2f} ms (above 1: "
                        "faster than exact)")


def isolation_choice(indexes: list[ix.VectorIndex]) -> bool:
    """Whether to drop the other indexes (uncommitted) to measure each alone: always on the
    embedded server, else only when the user ticks the box that says it locks the table."""
    with ui.connection() as conn:
        safe = ix.isolation_is_safe(conn)
    if safe:
        st.checkbox("Measure each index alone", value=True, disabled=True, key="ix_isolate_on",
                    help="On the embedded server the other vector indexes are dropped inside the "
                         "measuring transaction and rolled back: its tables are vecdash's own, "
                         "so the brief lock holds up no one else.")
        return True
    if read_only or sum(i.valid for i in indexes) < 2:
        return False
    isolate = st.checkbox(
        "Measure each index alone (locks the table while measuring)", value=False,
        key="ix_isolate",
        help="Drops the other vector indexes inside the measuring transaction, then rolls back. "
             "DROP INDEX takes an ACCESS EXCLUSIVE lock: every other session's queries on this "
             "table wait until each measurement ends. Off: nothing is locked, the planner is "
             "steered toward the index picked and the figures name the index it really used.")
    if isolate:
        st.warning("Measuring now locks this table against every other session (searches and "
                   "writes wait) for each measurement, a fraction of a second to seconds. Do not "
                   f"use it on a busy production table. It waits at most "
                   f"{ix.ISOLATION_LOCK_TIMEOUT_MS} ms for the lock and gives up if the table is "
                   "busy.", icon="⚠️")
    return isolate


def ground_truth_allowed(collection: Collection, queries: ix.SampleQueries, k: int) -> bool:
    """Whether the exact top-k behind recall may be read or computed now. On a large table its
    exact scans take minutes: they wait for the user's click instead of every first visit."""
    with ui.connection() as conn:
        cost = ix.ground_truth_waiting_cost(conn, collection, queries, k=k)
    if cost is None:
        return True
    st.info(f"Recall and the speed-up need the exact top-{k} of the {len(queries)} sample "
            f"queries: {len(queries)} sequential scans of about {cost.rows:,} rows, roughly "
            f"{cost.seconds:,.0f} s on a 2-core machine (index scans off, nothing locked). "
            "vecdash does not start that on a page visit; once computed it is stored until the "
            "data changes.", icon="ℹ️")
    if not st.button("Compute the exact ground truth", key="ix_truth_go", type="primary"):
        return False
    with st.spinner(f"{len(queries)} exact scans of {cost.rows:,} rows…"), \
            ui.connection() as conn:
        ix.exact_neighbours(conn, collection, queries, k=k)
    return True


def live_section(collection: Collection, indexes: list[ix.VectorIndex], isolate: bool) -> tuple[
        ix.SampleQueries, ix.Setting, int, ix.VectorIndex | None]:
    st.subheader("Live readouts")
    queries = sample_queries(collection)
    st.caption(f"Sample queries: {queries.source}. Exact ground truth comes from a sequential "
               "scan with index scans switched off, cached until the collection changes.")
    valid = [i for i in indexes if i.valid]
    chosen = None
    if valid:  # a row of its own: whole names and parameters, never cut off
        pick = st.selectbox("Index", range(len(valid)), key="ix_index",
                            format_func=lambda i: valid[i].label)
        chosen = valid[min(int(pick), len(valid) - 1)]
    cols = st.columns([1, 2, 2, 2])
    k = int(cols[0].number_input("k", min_value=1, max_value=100, value=10, key="ix_k"))
    ef_search = int(cols[1].slider("hnsw.ef_search", 1, 400, 40, key="ix_ef",
                                   disabled=chosen is not None and chosen.method != "hnsw"))
    max_probes = max([i.params["lists"] for i in valid if i.method == "ivfflat"] or [1])
    probes = int(cols[2].slider("ivfflat.probes", 1, max(2, max_probes), min(10, max_probes),
                                key="ix_probes",
                                disabled=chosen is not None and chosen.method != "ivfflat"))
    modes = ix.ITERATIVE_MODES[chosen.method if chosen else "hnsw"]
    mode = cols[3].selectbox("iterative scan", modes, key="ix_iter",
                             help="pgvector 0.8: keep scanning the index until k rows pass a "
                                  "filter. relaxed_order may return rows slightly out of order.")
    setting = ix.Setting(ef_search=ef_search, probes=probes, iterative_scan=mode)
    if not ground_truth_allowed(collection, queries, k):
        return queries, setting, k, None
    with ui.connection() as conn:
        exact = ix.exact_measurement(conn, collection, queries, k=k)
        if chosen is None:
            st.info(f"Exact scan only (no valid index): p50 {exact.p50_ms:.2f} ms, p95 "
                    f"{exact.p95_ms:.2f} ms, {exact.qps:,.0f} QPS over {exact.queries} queries.")
            return queries, setting, k, None
        m = ix.measure(conn, collection, queries, index=chosen.name, setting=setting, k=k,
                       isolate=isolate)
    if m.note:
        st.warning(m.note, icon="⚠️")
    measurement_metrics(m, exact)
    notes = [f"{m.queries} queries, one after another; served by {m.index} at {m.setting} "
             "(the index the query plan used)."]
    if m.hidden:
        notes.append(f"The other vector index(es) ({', '.join(m.hidden)}) were set aside in the "
                     "measuring transaction (dropped, then rolled back) so this one is measured "
                     "alone.")
    if not m.index_used:
        notes.append("The planner did not use the index even with sequential scans "
                     "discouraged: see EXPLAIN below.")
    st.caption(" ".join(notes))
    return queries, setting, k, chosen


def sweep_downloads(collection: Collection, queries: ix.SampleQueries, k: int,
                    frame: pd.DataFrame, figures: list[Any]) -> None:
    """The sweep as CSV, as one self-contained HTML file, and each chart as PNG where kaleido
    finds a Chrome / Chromium (drawn only when clicked: a few seconds each)."""
    stem = f"{collection.name}_index_sweep"
    context = [f"Collection {collection.name}: {collection.dimension} dimensions "
               f"({collection.vector_type}), {METRIC_LABELS[collection.metric]}, "
               f"{collection.embedder}/{collection.model}.",
               f"Sample queries: {queries.source}; recall@{k} against the exact scan."]
    cols = st.columns(4)
    cols[0].download_button("Download table (CSV)", sweep_report.sweep_csv(frame),
                            file_name=f"{stem}.csv", mime="text/csv", key="ix_sweep_csv")
    cols[1].download_button(
        "Download report (HTML)",
        lambda: sweep_report.sweep_html(frame, k=k, title=f"Index sweep: {collection.name}",
                                        context=context),
        file_name=f"{stem}.html", mime="text/html", key="ix_sweep_html",
        help="The charts (interactive, plotly.js embedded: opens offline) and the table.")
    if sweep_report.png_export_available():
        for col, fig, name in zip(cols[2:], figures, ("p50", "p95"), strict=True):
            col.download_button(f"Chart recall vs {name} (PNG)",
                                functools.partial(sweep_report.figure_png, fig),
                                file_name=f"{stem}_recall_vs_{name}.png", mime="image/png",
                                key=f"ix_sweep_png_{name}")
    else:
        cols[2].caption("PNG charts need kaleido and a Chrome or Chromium browser on this "
                        "machine; the HTML report holds the same charts.")


def index_signature(indexes: list[ix.VectorIndex]) -> tuple[tuple[str, str, bool], ...]:
    """What a sweep's figures depend on: each index's name, parameters and validity."""
    return tuple(sorted((i.name, repr(sorted(i.params.items())), i.valid) for i in indexes))


def sweep_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The sweep's rows for reading: the setting, recall, p50 and p95 with their spread over
    the repeats, in words."""
    def spread(column: str) -> list[str]:
        return [f"{mid:.2f} ({low:.2f}–{high:.2f})" for mid, low, high in
                zip(frame[f"{column}_ms"], frame[f"{column}_min_ms"], frame[f"{column}_max_ms"],
                    strict=True)]

    # One column says what served each row, only where it was not the index swept: the full
    # label in every row made the table scroll sideways at 1440 px.
    return pd.DataFrame({
        "index": frame["requested"], "setting": frame["setting"],
        "recall": frame["recall"].round(3),
        "p50 ms (range)": spread("p50"), "p95 ms (range)": spread("p95"),
        "p99 (ms)": frame["p99_ms"].round(2), "QPS": frame["qps"].round(0),
        "repeats": frame["repeats"],
        "served by": ["as requested" if used else served
                      for used, served in zip(frame["index_used"], frame["config"], strict=True)],
    })


def sweep_section(collection: Collection, indexes: list[ix.VectorIndex],
                  queries: ix.SampleQueries, k: int, iterative: str, isolate: bool) -> None:
    st.subheader("Sweep: recall against speed")
    st.caption(f"ef_search over {list(ix.EF_SEARCH_SWEEP)} for each HNSW index, probes over 1, 2, "
               "4, … lists for each IVFFlat index, and the exact scan (timed again) as the "
               "reference point. Each setting runs the sample queries several times: a point is "
               "the median of the repeats' p50 (or p95), its bar the fastest to the slowest "
               "repeat, so two points whose bars overlap are not told apart.")
    cols = st.columns([1, 1, 4], vertical_alignment="bottom")
    repeats = int(cols[0].number_input("Repeats per setting", min_value=1,
                                       max_value=ix.MAX_REPEATS, value=ix.DEFAULT_REPEATS,
                                       key="ix_repeats"))
    if cols[1].button("Run sweep", key="ix_sweep_run"):
        bar = st.progress(0.0, text="Sweeping…")
        with ui.connection() as conn:
            frame = ix.sweep(conn, collection, queries, k=k, iterative_scan=iterative,
                             progress=lambda d, t, what: bar.progress(d / t, text=what),
                             isolate=isolate, repeats=repeats)
        st.session_state["ix_sweep"] = (collection.name, index_signature(indexes), k, frame)
    stored = st.session_state.get("ix_sweep")
    if not stored or stored[0] != collection.name:
        return
    if stored[1] != index_signature(indexes):  # built or dropped since: the charts are stale
        st.session_state.pop("ix_sweep", None)
        st.info("The indexes changed since the last sweep; run it again to see current figures.")
        return
    _, _, k_used, frame = stored
    for note in dict.fromkeys(n for n in frame["note"] if n):
        st.warning(note + " Those rows are in the table, not in the charts.", icon="⚠️")
    figures = sweep_report.sweep_figures(frame, k=k_used)
    for fig in figures:
        st.plotly_chart(fig, width="stretch")
    st.caption("index: the index being swept; served by: what served its queries, read from the "
               "query plan (\"as requested\", or the index or scan the plan chose instead); "
               "range: the fastest and the slowest repeat.")
    st.dataframe(sweep_table(frame), hide_index=True, width="stretch")
    sweep_downloads(collection, queries, k_used, frame, figures)


def explain_section(collection: Collection, queries: ix.SampleQueries, setting: ix.Setting,
                    k: int) -> None:
    st.subheader("EXPLAIN the current query")
    with ui.connection() as conn:
        cats = ix.categories(conn, collection)
    cols = st.columns([3, 2])
    pick = cols[0].selectbox("Query", range(len(queries)), key="ix_explain_query",
                             format_func=lambda i: queries.labels[i])
    category = cols[1].selectbox("Filter by category (WHERE category = …)", [None, *cats],
                                 key="ix_explain_cat",
                                 format_func=lambda c: "no filter" if c is None else c)
    with ui.connection() as conn:
        explained = ix.explain_query(conn, collection, queries.vectors[int(pick)], k=k,
                                     setting=setting, category=category)
    st.caption(f"Returned {explained.rows} of {k} rows; "
               + (f"index used: {explained.index_used}." if explained.index_used
                  else "no vector index used.")
               + f" Settings: ef_search={setting.ef_search}, probes={setting.probes}, "
                 f"iterative scan {setting.iterative_scan}.")
    for warning in explained.warnings:
        st.warning(warning, icon="⚠️")
    st.code(explained.plan, language="text", wrap_lines=True)  # long plan lines wrap, not cut


# Below this many rows an exact scan costs about as much as an index lookup (and the timer's
# noise): the page says so instead of letting a person read meaning into the figures.
SMALL_COLLECTION_ROWS = 10_000

if not read_only:
    synthetic_section()
collection = ui.page_collection()
rows = 0
with ui.errors_shown():
    with ui.connection() as conn:
        rows, estimated = collection_rows(conn, collection)
        indexes = ix.list_vector_indexes(conn, collection)
    st.markdown(f"**{collection.name}** · {'about ' if estimated else ''}{rows:,} rows · "
                f"{collection.dimension} dimensions "
                f"({collection.vector_type}) · {METRIC_LABELS[collection.metric]} · "
                f"{collection.embedder}/{collection.model}")
    st.subheader("Indexes")
    show_build_message()
    index_table(indexes)
    invalid_section(collection, indexes)
    if not read_only:
        drop_section(collection, indexes)
        build_section(collection, rows)
        monitor_build()
with ui.errors_shown():
    if rows == 0:
        st.info("The collection is empty: load data (or generate synthetic vectors) first.")
    else:
        if rows < SMALL_COLLECTION_ROWS:
            st.info(f"{rows:,} rows is too few for index figures to mean much: an exact scan of "
                    "so few rows takes about a millisecond, so latencies are mostly noise and "
                    "recall is near 1 whatever the setting. For figures that tell indexes apart, "
                    "generate a synthetic collection (the expander at the top of this page, "
                    "e.g. 100,000 vectors) and pick it in the sidebar.", icon="ℹ️")
        isolate = isolation_choice(indexes)
        queries, setting, k, chosen = live_section(collection, indexes, isolate)
        with ui.errors_shown():
            sweep_section(collection, indexes, queries, k, setting.iterative_scan, isolate)
        with ui.errors_shown():
            explain_section(collection, queries, setting, k)
