from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vecdash.collections import Collection, create_collection, drop_collection
from vecdash.embedders import LocalEmbedder
from vecdash.errors import InvalidInput
from vecdash.ingest import Record, ingest_records
from vecdash.search import search_text, semantic_search

RNG = np.random.default_rng(7)
VECTORS = RNG.normal(size=(50, 8)).astype(np.float32)


def brute_force(query: np.ndarray, metric: str) -> np.ndarray:
    if metric == "l2":
        d = np.linalg.norm(VECTORS - query, axis=1)
    elif metric == "ip":
        d = -(VECTORS @ query)
    else:
        unit = VECTORS / np.linalg.norm(VECTORS, axis=1, keepdims=True)
        d = 1 - unit @ (query / np.linalg.norm(query))
    return d


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_semantic_search_matches_numpy(conn: Any, unique_name: str, metric: str) -> None:
    c = create_collection(conn, unique_name, dimension=8, metric=metric, embedder="none", model="x")
    try:
        ingest_records(conn, c, [Record(f"doc {i}", external_id=f"d{i}", embedding=v)
                                 for i, v in enumerate(VECTORS)])
        query = RNG.normal(size=8).astype(np.float32)
        hits = semantic_search(conn, c, query, k=5)
        expected = brute_force(query, metric)
        order = np.argsort(expected)[:5]
        assert list(hits["external_id"]) == [f"d{i}" for i in order]
        assert np.allclose(hits["distance"].to_numpy(), expected[order], atol=1e-4)
        assert list(hits["rank"]) == [1, 2, 3, 4, 5]
    finally:
        drop_collection(conn, unique_name)


def test_query_vector_of_wrong_dimension(conn: Any, demo: Collection) -> None:
    with pytest.raises(InvalidInput, match="3 dimensions but 'demo' stores 384"):
        semantic_search(conn, demo, [0.1, 0.2, 0.3])
    with pytest.raises(InvalidInput, match="top-k"):
        semantic_search(conn, demo, np.ones(384), k=0)


def test_empty_query_text(conn: Any, demo: Collection, embedder: LocalEmbedder) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        search_text(conn, demo, "   ", embedder=embedder)


def test_demo_paraphrase_finds_its_passage(conn: Any, demo: Collection, embedder: LocalEmbedder) -> None:
    from vecdash.demo import demo_qrels, demo_queries

    qrels = demo_qrels()
    conceptual = [q for q in demo_queries() if q.type == "conceptual"]
    found = 0
    for q in conceptual:
        hits = search_text(conn, demo, q.text, embedder=embedder, k=10)
        best = {d for d, g in qrels[q.id].items() if g == 2}
        found += bool(best & set(hits["external_id"]))
    # semantic search should find a highly relevant passage in the top 10 for most paraphrases
    assert found / len(conceptual) >= 0.6


def test_halfvec_collection_search(conn: Any, unique_name: str) -> None:
    c = create_collection(conn, unique_name, dimension=2048, embedder="none", model="x")
    try:
        vecs = RNG.normal(size=(4, 2048)).astype(np.float32)
        ingest_records(conn, c, [Record(f"h{i}", external_id=f"h{i}", embedding=v)
                                 for i, v in enumerate(vecs)])
        assert semantic_search(conn, c, vecs[2], k=1)["external_id"].iloc[0] == "h2"
    finally:
        drop_collection(conn, unique_name)


def test_arm_ranks_break_ties_as_the_sql_does(conn: Any, unique_name: str) -> None:
    """Twelve documents tie for the keyword "alpha": the SQL arm keeps ids 1-10 at depth 10
    (ORDER BY score, id), and the ranks of a deeper fetch must put the same ten first (ordered as
    text, "10" came before "2": a shallower depth cut from a deeper fetch then differed)."""
    from vecdash.search import fetch_candidates

    c = create_collection(conn, unique_name, dimension=2, metric="l2", embedder="none",
                          model="x")
    try:
        ingest_records(conn, c, [Record(f"alpha w{i}", embedding=[1.0, float(i)])
                                 for i in range(12)])
        shallow = fetch_candidates(conn, c, "alpha", None, candidates=10,
                                   keyword_rankers=("bm25",))
        deep = fetch_candidates(conn, c, "alpha", None, candidates=100, keyword_rankers=("bm25",))
        top = {k for k, r in zip(deep.columns["key"], deep.columns["bm25_rank"], strict=True)
               if r <= 10}
        assert top == set(shallow.columns["key"]) and len(top) == 10
    finally:
        drop_collection(conn, unique_name)
