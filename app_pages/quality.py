"""Quality Lab: labeled queries against the collection — metrics per ranking, a semantic-weight
sweep with the best setting marked (and applied to the Search page), a cross-validated tune
(applied or saved for the collection), per-query wins and losses with a paired significance test,
and the whole as a downloadable HTML report."""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

import ui
from vecdash.demo import DEMO_COLLECTION
from vecdash.labels import LabeledSet, demo_labeled_set, labeled_set, problems_frame
from vecdash.quality import (
    Config,
    EvalRun,
    best_setting,
    disagreements,
    measure_names,
    metrics_table,
    run_labeled_queries,
    standard_configs,
    sweep,
)
from vecdash.report import compare, index_summary, quality_report, sweep_figure
from vecdash.search_setting import save_search_setting
from vecdash.tuning import TuneGrid, TuneResult, tune

st.title("Quality Lab")
collection = ui.page_collection()

st.caption(
    "Run labeled queries (queries + graded relevance judgments) and measure nDCG@10, Recall@k, "
    "MRR@10 and P@k for semantic, keyword (BM25 and ts_rank_cd) and hybrid ranking. Each query's "
    "candidates are fetched once; every weight of the sweep is fused in memory."
)

sources = ["Upload queries + qrels"]
if collection.name == DEMO_COLLECTION:
    sources.insert(0, "Bundled demo labels")
source = st.radio("Labeled queries", sources, horizontal=True, key="quality_source")

labeled: LabeledSet | None = None
if source == "Bundled demo labels":
    labeled = demo_labeled_set()
    st.caption(f"{len(labeled.queries)} queries with graded judgments (1 partial, 2 high), typed "
               "'exact' (keyword should win) or 'conceptual' (meaning should win).")
else:
    up = st.columns(2)
    qfile = up[0].file_uploader("Queries (BEIR JSONL, or id<TAB>text[<TAB>type])",
                                type=["jsonl", "json", "tsv", "txt"], key="quality_queries")
    rfile = up[1].file_uploader("Qrels (BEIR TSV or TREC qrels)",
                                type=["tsv", "txt", "qrels", "csv"], key="quality_qrels")
    if qfile is None or rfile is None:
        st.info("Upload both files. Queries: one JSON object per line with `_id`, `text` and "
                "optionally `metadata.type`. Qrels: `query-id<TAB>corpus-id<TAB>score` (header "
                "optional) or TREC `qid 0 docid rel`. Document ids are the collection's external "
                "ids.")
        st.stop()
    try:
        qtext = qfile.getvalue().decode("utf-8")
        rtext = rfile.getvalue().decode("utf-8")
    except UnicodeDecodeError:
        st.error("The files must be UTF-8 text.", icon="⚠️")
        st.stop()
    labeled = labeled_set(qtext, rtext, queries_name=qfile.name, qrels_name=rfile.name)
    if labeled.problems:
        st.error(f"{len(labeled.problems)} problem(s) in the uploaded files. Fix these rows and "
                 "upload again:", icon="⚠️")
        st.dataframe(problems_frame(labeled.problems), hide_index=True, width="stretch")
        st.stop()
    st.caption(f"{len(labeled.queries)} queries, {sum(len(v) for v in labeled.qrels.values())} "
               "judgments.")

opts = st.columns(4)
k = int(opts[0].number_input("k for Recall@k and P@k", 1, 100, 10, key="quality_k"))
depth = int(opts[1].number_input("Candidates per arm", 10, 1000, 100, step=10,
                                 key="quality_candidates"))
rrf_k = int(opts[2].number_input("RRF k", 1, 1000, 60, key="quality_rrf_k"))
table_weight = float(opts[3].slider("Hybrid weight in the table", 0.0, 1.0, 0.5, 0.1,
                                    key="quality_weight"))
exact = st.toggle(
    "Exact semantic search for the evaluation", value=False, key="quality_exact",
    help="Runs the semantic arm as an exact scan (index scans switched off inside each query's "
         "own transaction; nothing is locked or changed), so the figures measure the model and "
         "the fusion, not an approximate index. Off: the arm runs as Search does, through the "
         "collection's vector index if it has one.")

assert labeled is not None
run_key = hashlib.sha256(repr((collection.name, collection.data_version, depth, exact,
                               [(q.id, q.text) for q in labeled.queries],
                               sorted((q, sorted(d.items())) for q, d in labeled.qrels.items()))
                              ).encode()).hexdigest()
stored = st.session_state.get("quality_run")
clicked = st.button("Run labeled queries", type="primary", key="quality_go")
# The bundled demo labels run by themselves (a second or two); uploaded ones on the button.
if clicked or (source == "Bundled demo labels" and (not stored or stored[0] != run_key)):
    with ui.errors_shown():
        embedder = ui.embedder_for(collection)
        bar = st.progress(0.0, text="Embedding the queries…")
        with ui.connection() as conn:
            run = run_labeled_queries(
                conn, collection, labeled, embedder=embedder, candidates=depth, exact=exact,
                progress=lambda i, n: bar.progress(i / n, text=f"query {i} of {n}"),
            )
        bar.empty()
        st.session_state["quality_run"] = (run_key, run)
        stored = st.session_state["quality_run"]

if not stored or stored[0] != run_key:
    st.info("Press **Run labeled queries** to measure.")
    st.stop()
run = stored[1]

if run.serving is not None:  # the figures below are this index's (or the exact scan's)
    st.caption(run.serving.sentence + ("" if run.serving.index is None else
                                       " Switch on exact semantic search above to compare."))
for note in run.notes:
    st.info(note, icon="ℹ️")
if run.problems:
    st.warning(f"{len(run.problems)} labeling problem(s): judged documents missing from the "
               "collection still count as relevant (they lower recall), and queries without "
               "judgments are not evaluated.", icon="⚠️")
    st.dataframe(problems_frame(run.problems), hide_index=True, width="stretch")

names = measure_names(k)


def mean_name(measure: str) -> str:
    """A measure as the page names its mean over the queries (the mean RR@10 is MRR@10)."""
    return "MRR@10" if measure == "RR@10" else measure


st.subheader("Metrics")
table_configs = standard_configs(weight=table_weight, fusion="convex", rrf_k=rrf_k) + [
    Config(f"hybrid BM25 (RRF, w={table_weight:.2f})", table_weight, "rrf", rrf_k, "bm25")]
table = metrics_table(run, table_configs, k=k)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={m: st.column_config.NumberColumn(mean_name(m), format="%.4f")
                            for m in names})
st.caption("Means over the queries; MRR@10 is the mean reciprocal rank of the first relevant "
           "document in the top 10.")

st.subheader("Semantic-weight sweep")
measure = st.selectbox("Measure", names, key="quality_measure", format_func=mean_name)
swept = sweep(run, rrf_k=rrf_k, k=k)
best = best_setting(swept, measure)
st.plotly_chart(sweep_figure(swept, best, measure=measure, rrf_k=rrf_k), width="stretch")
st.caption(f"Best by {mean_name(measure)}: **{best['fusion']}, weight {best['weight']:.1f}** → "
           f"{best['value']:.4f} (keyword arm: BM25). Chosen and scored on the same queries, "
           "so optimistic: **Tune** below says what holds on new queries.")
if st.button("Apply this setting to the Search page", key="quality_apply"):
    st.session_state["search_apply"] = {
        "search_mode": "hybrid", "search_weight": float(best["weight"]),
        "search_fusion": best["fusion"], "search_rrf_k": rrf_k,
        "search_keyword_ranker": "bm25", "search_candidates": depth,
    }
    st.switch_page("app_pages/search.py")
with st.expander("Sweep table"):
    st.dataframe(swept, hide_index=True, width="stretch")

st.subheader("Tune, cross-validated")
st.caption("Tries every setting of the grid and scores the choice by k-fold cross-validation: "
           "each fold's setting is chosen on the other folds and scored on it, so the "
           "cross-validated score is what to expect on the next query. Each (k1, b) pair's "
           "candidates are fetched once per query; every weight, fusion and depth is fused in "
           "memory.")
topts = st.columns(3)
folds = int(topts[0].number_input("Folds", 2, 20, 5, key="quality_folds"))
seed = int(topts[1].number_input("Seed of the folds", 0, 10_000, 0, key="quality_seed"))
grid_name = topts[2].radio("Grid", ("full", "weight sweep only"), horizontal=True,
                           key="quality_grid",
                           help="full: weight 0..1, convex / RRF (k 20, 60), BM25 and "
                                "ts_rank_cd, k1 in {0.6 … 2.0}, b in {0.3 … 0.9}, depth 50 and "
                                "100. Weight sweep only: weight and fusion at this depth.")
grid = TuneGrid() if grid_name == "full" else TuneGrid.weight_sweep(candidates=depth,
                                                                     rrf_k=rrf_k)
tune_key = (run_key, folds, seed, grid_name, depth, rrf_k, k, measure, exact)
tuned_state = st.session_state.get("quality_tune")
tuned: TuneResult | None = tuned_state[1] if tuned_state and tuned_state[0] == tune_key else None
if st.button("Tune", key="quality_tune_go"):
    with ui.errors_shown():
        embedder = ui.embedder_for(collection)
        tune_bar = st.progress(0.0, text="Fetching candidates…")
        # Any click (this one included) stops the run: the result is stored only when complete.
        cancel_slot = st.empty()
        cancel_slot.button("Cancel the tune", key="quality_tune_cancel")
        with ui.connection() as conn:
            result = tune(conn, collection, labeled, embedder=embedder, grid=grid, folds=folds,
                          seed=seed, measure=measure, k=k, exact=exact,
                          progress=lambda i, n: tune_bar.progress(i / n, text=f"step {i} of {n}"))
        tune_bar.empty()
        cancel_slot.empty()
        st.session_state["quality_tune"] = (tune_key, result)
        tuned = result
if tuned is not None:
    cv = tuned.cv
    st.markdown(f"**Cross-validated {mean_name(tuned.measure)}: {cv.cv_score:.4f}** (in-sample best "
                f"{cv.in_sample_best:.4f}, {len(tuned.settings)} settings, {cv.folds} folds). "
                f"Chosen on all queries: `{tuned.chosen.label}`.")
    st.dataframe(tuned.summary(), hide_index=True, width="stretch",
                 column_config={tuned.measure: st.column_config.NumberColumn(
                     mean_name(tuned.measure), format="%.4f")})
    with st.expander("Per fold"):
        st.dataframe(tuned.folds_table(), hide_index=True, width="stretch")
    act = st.columns(2)
    if act[0].button("Apply the tuned setting to Search", key="quality_tune_apply"):
        st.session_state["search_apply"] = tuned.chosen.search_state()
        st.switch_page("app_pages/search.py")
    if not ui.read_only() and act[1].button("Save it as this collection's search default",
                                            key="quality_tune_save",
                                            help="The Search page opens with it."):
        with ui.errors_shown(), ui.connection() as conn:
            save_search_setting(conn, collection, tuned.chosen, note=(
                f"{cv.folds}-fold CV {tuned.measure} {cv.cv_score:.4f}"))
            st.success(f"Saved `{tuned.chosen.label}` for {collection.name}: the Search page "
                       "opens with it.")

st.subheader("Per query: wins and losses")
# Every configuration of the metrics table can be compared, then the best and the tuned.
choices: dict[str, tuple[EvalRun, Config]] = {c.label: (run, c) for c in table_configs}
best_config = Config(f"best: {best['fusion']} w={best['weight']:.1f}", best["weight"],
                     best["fusion"], rrf_k, "bm25")
choices[best_config.label] = (run, best_config)
if tuned is not None:
    choices[f"tuned: {tuned.chosen.label}"] = (tuned.runs.run_for(tuned.chosen),
                                                tuned.chosen.config())
labels = list(choices)
pick = st.columns(3)
a_label = pick[0].selectbox("Configuration a", labels, index=0, key="quality_a")
b_label = pick[1].selectbox("Configuration b", labels, index=len(labels) - 1, key="quality_b")
cmp_measure = pick[2].selectbox("Measure", names, key="quality_cmp_measure",
                                format_func=mean_name)
(run_a, config_a), (run_b, config_b) = choices[a_label], choices[b_label]
comparison = compare(run_a, config_a, config_b, measure=cmp_measure, k=k, run_b=run_b)
verdict = comparison.test.sentence(a_label, b_label)
(st.success if comparison.test.distinguishable else st.info)(verdict)
st.caption(f"{comparison.test.method}. Smallest difference this query set detects (80% of the "
           f"time at 5%): {comparison.test.detectable:.4f}."
           + (" The tuned and best settings were chosen on these queries: their test flatters "
              "them." if a_label.startswith(("tuned", "best")) or b_label.startswith(("tuned",
                                                                                     "best"))
              else ""))
number = {c: st.column_config.NumberColumn(format="%.4f") for c in ("a", "b", "delta (b - a)")}
st.dataframe(comparison.by_type, hide_index=True, width="stretch",
             column_config={"a mean": st.column_config.NumberColumn(format="%.4f"),
                            "b mean": st.column_config.NumberColumn(format="%.4f")})
st.markdown("**Where they disagree most**")
st.dataframe(disagreements(comparison.table), hide_index=True, width="stretch",
             column_config=number)
with st.expander("Every query"):
    st.dataframe(pd.DataFrame(comparison.table), hide_index=True, width="stretch",
                 column_config=number)

with ui.errors_shown(), ui.connection() as conn:
    indexes = index_summary(conn, collection)
labels_source = labeled.source
st.download_button(
    "Download report", key="quality_report",
    data=lambda: quality_report(run, collection=collection, indexes=indexes, k=k, rrf_k=rrf_k,
                                weight=table_weight, candidates=depth, measure=measure,
                                comparison=comparison, tuned=tuned, labels=labels_source),
    file_name=f"vecdash-quality-{collection.name}.html", mime="text/html",
    help="One HTML file (charts included, opens without a network): the collection, model, "
         "indexes and settings, the metrics, the sweep, the tune and this comparison.")
