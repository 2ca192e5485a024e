"""Search: semantic, keyword (BM25 or ts_rank_cd) and hybrid ranking with a semantic-weight slider,
filters, highlighted snippets, and a side-by-side comparison of the three rankings."""

from __future__ import annotations

import html
from datetime import date
from typing import Any

import pandas as pd
import streamlit as st

import ui
from vecdash.bm25 import DEFAULT_B, DEFAULT_K1
from vecdash.search import (
    FUSIONS,
    KEYWORD_RANKERS,
    SearchFilters,
    compare_rankings,
    hybrid_search,
    list_categories,
)

MODES = ("hybrid", "semantic", "keyword")
FUSION_LABELS = {"convex": "convex combination of min-max scores", "rrf": "reciprocal rank fusion"}
RANKER_LABELS = {"bm25": "BM25", "ts_rank_cd": "ts_rank_cd (PostgreSQL)"}

# Settings handed over by the Quality Lab ("apply this setting"): copied into the widgets' keys
# before the widgets are drawn.
applied = st.session_state.pop("search_apply", None)
if isinstance(applied, dict):
    for key, value in applied.items():
        st.session_state[key] = value
    st.toast("Applied the Quality Lab setting.")

# /search?q=... opens the page with that query typed in.
if "q" in st.query_params and "search_query" not in st.session_state:
    st.session_state["search_query"] = st.query_params["q"]

st.title("Search")
collection = ui.page_collection()

with ui.errors_shown():
    with ui.connection() as conn:
        categories = list_categories(conn, collection)

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

query = st.text_input("Query", placeholder="e.g. why does my bread not rise?", key="search_query")
top = st.columns([2, 3, 2, 1, 1])
mode = top[0].radio("Mode", MODES, key="search_mode", horizontal=True)
weight_disabled = mode != "hybrid"
weight = top[1].slider(
    "Semantic weight", 0.0, 1.0, 0.5, 0.05, key="search_weight", disabled=weight_disabled,
    help="0 ranks by keywords only, 1 by meaning only.",
)
fusion = top[2].selectbox("Fusion", FUSIONS, key="search_fusion",
                          format_func=FUSION_LABELS.__getitem__, disabled=weight_disabled)
k = top[3].number_input("top-k", 1, 100, 10, key="search_k")
depth = top[4].number_input("Candidates per arm", 10, 1000, 100, step=10, key="search_candidates",
                            help="How deep each arm looks before fusing (the union of both).")

with st.expander("Keyword ranker, RRF and filters"):
    cols = st.columns(4)
    ranker = cols[0].selectbox("Keyword ranker", KEYWORD_RANKERS, key="search_keyword_ranker",
                               format_func=RANKER_LABELS.__getitem__)
    rrf_k = cols[1].number_input("RRF k", 1, 1000, 60, key="search_rrf_k",
                                 disabled=fusion != "rrf")
    k1 = cols[2].number_input("BM25 k1", 0.1, 10.0, DEFAULT_K1, 0.1, key="search_k1",
                              disabled=ranker != "bm25")
    b = cols[3].number_input("BM25 b", 0.0, 1.0, DEFAULT_B, 0.05, key="search_b",
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
        f"{len(hits)} results from {hits.attrs.get('candidates', 0)} candidates (union of both "
        f"arms) · {mode}" + (f", weight {effective_weight:.2f}, {fusion}" if mode == "hybrid"
                             else "")
        + (f" · query lexemes: {', '.join(lexemes)}" if lexemes else "")
    )
    if hits.empty:
        st.warning("Nothing matched. Loosen the filters or try other words.")
    else:
        table = hits[["rank", "title", "category", "source", "fused_score", "semantic_score",
                      "semantic_rank", "keyword_score", "keyword_rank"]].copy()
        table["title"] = [t or e for t, e in zip(hits["title"], hits["external_id"], strict=True)]
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "fused_score": st.column_config.NumberColumn("fused", format="%.4f"),
            "semantic_score": st.column_config.NumberColumn("semantic score", format="%.4f"),
            "keyword_score": st.column_config.NumberColumn(
                f"{RANKER_LABELS[str(ranker)]} score", format="%.4f"),
            "semantic_rank": st.column_config.NumberColumn("semantic rank"),
            "keyword_rank": st.column_config.NumberColumn("keyword rank"),
        })
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
    st.dataframe(pd.DataFrame(cmp.movement), hide_index=True, width="stretch")
