"""Quality Lab: labeled queries against the collection — metrics per ranking, a semantic-weight
sweep with the best setting marked (and applied to the Search page), per-query wins and losses."""

from __future__ import annotations

import hashlib

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from vecdash.demo import DEMO_COLLECTION
from vecdash.labels import LabeledSet, demo_labeled_set, labeled_set, problems_frame
from vecdash.quality import (
    Config,
    best_setting,
    compare_configs,
    measure_names,
    metrics_table,
    run_labeled_queries,
    standard_configs,
    sweep,
)

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

assert labeled is not None
run_key = hashlib.sha256(repr((collection.name, collection.data_version, depth,
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
                conn, collection, labeled, embedder=embedder, candidates=depth,
                progress=lambda i, n: bar.progress(i / n, text=f"query {i} of {n}"),
            )
        bar.empty()
        st.session_state["quality_run"] = (run_key, run)
        stored = st.session_state["quality_run"]

if not stored or stored[0] != run_key:
    st.info("Press **Run labeled queries** to measure.")
    st.stop()
run = stored[1]

for note in run.notes:
    st.info(note, icon="ℹ️")
if run.problems:
    st.warning(f"{len(run.problems)} labeling problem(s): judged documents missing from the "
               "collection still count as relevant (they lower recall), and queries without "
               "judgments are not evaluated.", icon="⚠️")
    st.dataframe(problems_frame(run.problems), hide_index=True, width="stretch")

names = measure_names(k)
st.subheader("Metrics")
table = metrics_table(run, standard_configs(weight=table_weight, fusion="convex", rrf_k=rrf_k)
                      + [Config(f"hybrid BM25 (RRF, w={table_weight:.2f})", table_weight, "rrf",
                                rrf_k, "bm25")], k=k)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={m: st.column_config.NumberColumn(m, format="%.4f") for m in names})

st.subheader("Semantic-weight sweep")
measure = st.selectbox("Measure", names, key="quality_measure")
swept = sweep(run, rrf_k=rrf_k, k=k)
best = best_setting(swept, measure)
fig = go.Figure()
for fusion, label in (("convex", "convex (min-max)"), ("rrf", f"RRF (k={rrf_k})")):
    part = swept[swept["fusion"] == fusion]
    fig.add_trace(go.Scatter(x=part["weight"], y=part[measure], mode="lines+markers", name=label))
fig.add_trace(go.Scatter(x=[best["weight"]], y=[best["value"]], mode="markers+text",
                         marker={"symbol": "star", "size": 18, "color": "gold",
                                 "line": {"width": 1, "color": "black"}},
                         text=[f"best: {best['fusion']} w={best['weight']:.1f}"],
                         textposition="top center", name="best"))
fig.update_layout(xaxis_title="semantic weight (0 keyword only, 1 semantic only)",
                  yaxis_title=measure, height=380, margin={"t": 30, "b": 40})
st.plotly_chart(fig, width="stretch")
st.caption(f"Best by {measure}: **{best['fusion']}, weight {best['weight']:.1f}** → "
           f"{best['value']:.4f} (keyword arm: BM25).")
if st.button("Apply this setting to the Search page", key="quality_apply"):
    st.session_state["search_apply"] = {
        "search_mode": "hybrid", "search_weight": float(best["weight"]),
        "search_fusion": best["fusion"], "search_rrf_k": rrf_k,
        "search_keyword_ranker": "bm25", "search_candidates": depth,
    }
    st.switch_page("app_pages/search.py")
with st.expander("Sweep table"):
    st.dataframe(swept, hide_index=True, width="stretch")

st.subheader("Per query: wins and losses")
choices = {c.label: c for c in standard_configs(weight=table_weight, rrf_k=rrf_k)}
best_config = Config(f"best: {best['fusion']} w={best['weight']:.1f}", best["weight"],
                     best["fusion"], rrf_k, "bm25")
choices[best_config.label] = best_config
labels = list(choices)
pick = st.columns(3)
a_label = pick[0].selectbox("Configuration a", labels, index=0, key="quality_a")
b_label = pick[1].selectbox("Configuration b", labels, index=len(labels) - 1, key="quality_b")
cmp_measure = pick[2].selectbox("Measure", names, key="quality_cmp_measure")
per_query_table, by_type = compare_configs(run, choices[a_label], choices[b_label],
                                           measure=cmp_measure, k=k)
st.dataframe(by_type, hide_index=True, width="stretch",
             column_config={"a mean": st.column_config.NumberColumn(format="%.4f"),
                            "b mean": st.column_config.NumberColumn(format="%.4f")})
st.dataframe(pd.DataFrame(per_query_table), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.4f")
                            for c in ("a", "b", "delta (b - a)")})
