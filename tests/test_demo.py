from __future__ import annotations

from collections import Counter
from typing import Any

from vecdash.collections import Collection, describe_collections
from vecdash.demo import demo_documents, demo_qrels, demo_queries, load_demo
from vecdash.embedders import LocalEmbedder


def test_demo_data_is_complete_and_consistent() -> None:
    docs = demo_documents()
    ids = [d["id"] for d in docs]
    assert len(docs) >= 300 and len(set(ids)) == len(ids)
    categories = Counter(d["category"] for d in docs)
    assert len(categories) >= 8
    queries = demo_queries()
    assert len(queries) >= 40
    types = Counter(q.type for q in queries)
    assert set(types) == {"exact", "conceptual"} and min(types.values()) >= 15
    qrels = demo_qrels()
    assert {q.id for q in queries} == set(qrels)
    known = set(ids)
    for qid, judged in qrels.items():
        assert set(judged) <= known, qid
        assert 2 in judged.values(), qid
        assert set(judged.values()) <= {1, 2}


def test_exact_queries_name_tokens_present_in_relevant_docs() -> None:
    docs = {d["id"]: (d["title"] + " " + d["content"]).lower() for d in demo_documents()}
    qrels = demo_qrels()
    for q in demo_queries():
        if q.type != "exact":
            continue
        relevant = " ".join(docs[d] for d in qrels[q.id])
        tokens = [t.strip("?.,\"'") for t in q.text.lower().split()]
        # at least one of the query's words occurs verbatim in its relevant passages
        assert any(t and t in relevant for t in tokens), q.text


def test_demo_loads_once(conn: Any, demo: Collection, embedder: LocalEmbedder) -> None:
    summary = next(s for s in describe_collections(conn) if s.name == "demo")
    assert summary.rows == len(demo_documents())
    calls = embedder.calls
    _, report = load_demo(conn, embedder=embedder)  # again, without reload: nothing changes
    assert report.inserted == 0 and report.skipped_duplicates == len(demo_documents())
    assert embedder.calls == calls
