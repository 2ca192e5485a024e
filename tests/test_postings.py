"""Impact-ordered BM25 postings: the keyword arm read from them returns the exact BM25 top and
scores (the same as scoring every matching row), on the demo and on random corpora, through
inserts that move the average length, deletes, updates and truncates; the triggers keep the
postings equal to a recomputation; other k1 / b and filters take the exact path and say so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from vecdash.bm25 import postings_query
from vecdash.bm25.postings import (
    disable_postings,
    enable_postings,
    postings_relid,
    postings_status,
    postings_table,
)
from vecdash.collections import Collection, create_collection, drop_collection, get_collection
from vecdash.demo import demo_queries
from vecdash.ingest import Record, delete_documents, ingest_records
from vecdash.search import fetch_candidates

WORDS = ("bread yeast flour rise dough oven crust starter rope knot kettle water salt sugar "
         "butter milk egg loaf bake proof warm cold fresh dry wet").split()


def exact(conn: Any, c: Collection, query: str, candidates: int,
          **kwargs: Any) -> list[tuple[Any, float]]:
    got = fetch_candidates(conn, c, query, None, candidates=candidates,
                           keyword_rankers=("bm25",), prune=False, **kwargs)
    assert not got.work  # the reference never reads postings
    return _top(got.columns)


def from_postings(conn: Any, c: Collection, query: str, candidates: int,
                  **kwargs: Any) -> tuple[list[tuple[Any, float]], dict[str, Any]]:
    got = fetch_candidates(conn, c, query, None, candidates=candidates,
                           keyword_rankers=("bm25",), **kwargs)
    return _top(got.columns), got.work


def _top(columns: dict[str, np.ndarray]) -> list[tuple[Any, float]]:
    pairs = [(k, float(s)) for k, s in zip(columns["key"], columns["bm25_score"], strict=True)
             if not np.isnan(s)]
    return sorted(pairs, key=lambda kv: (-kv[1], kv[0]))


def assert_same_top(conn: Any, c: Collection, queries: list[str], candidates: int) -> int:
    """Every query: the postings top equals the exact one (ids in order, scores to 1e-6)."""
    read = 0
    for q in queries:
        want = exact(conn, c, q, candidates)
        got, work = from_postings(conn, c, q, candidates)
        assert work, "the postings path was not taken"
        assert [k for k, _ in got] == [k for k, _ in want], q
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6), q
        read += int(work["postings_read"])
    return read


def assert_postings_exact(conn: Any, c: Collection) -> None:
    """The stored postings are exactly each row's (lexeme, tf, len) as recomputed now."""
    relid = postings_relid(conn, c)
    assert relid is not None
    stored = conn.execute(sql.SQL("SELECT lexeme, doc, tf, len FROM {} ORDER BY 1, 2").format(
        postings_table(c, relid))).fetchall()
    recomputed = conn.execute(sql.SQL(
        "SELECT u.lexeme, t.id, greatest(cardinality(u.positions), 1), "
        "(SELECT sum(greatest(cardinality(v.positions), 1)) FROM unnest(t.tsv) v)::int "
        "FROM {} t, unnest(t.tsv) u ORDER BY u.lexeme COLLATE \"C\", t.id").format(c.table)).fetchall()
    assert stored == recomputed


def random_text(rng: np.random.Generator, words: int) -> str:
    # Zipf-like: a few words are in most documents, the rest rare, as in real text
    picks = np.minimum(rng.zipf(1.3, size=words) - 1, len(WORDS) - 1)
    return " ".join(WORDS[i] for i in picks)


def load(conn: Any, c: Collection, rng: np.random.Generator, n: int, *, start: int,
         words: tuple[int, int] = (3, 30)) -> None:
    records = [Record(random_text(rng, int(rng.integers(*words))) + f" w{start + i}",
                      external_id=f"r{start + i}", embedding=rng.normal(size=4))
               for i in range(n)]
    report = ingest_records(conn, c, records, batch_size=97)
    assert (report.inserted, report.failed) == (n, [])


@pytest.fixture
def corpus(conn: Any, unique_name: str) -> Iterator[Collection]:
    c = create_collection(conn, unique_name, dimension=4, embedder="none", model="x")
    load(conn, c, np.random.default_rng(0), 600, start=0)
    enable_postings(conn, c)
    yield get_collection(conn, unique_name)
    drop_collection(conn, unique_name)


QUERIES = ["bread", "bread yeast", "yeast flour rise", "rope knot kettle", "dry wet warm cold",
           "bread yeast flour rise dough oven", "egg w5", "w17 w300 butter", "zzz", "the",
           " ".join(WORDS)]


@pytest.mark.parametrize("candidates", [1, 10, 100])
def test_postings_top_equals_exact(conn: Any, corpus: Collection, candidates: int) -> None:
    assert_postings_exact(conn, corpus)
    assert assert_same_top(conn, corpus, QUERIES, candidates) > 0


def test_postings_follow_writes_and_drift(conn: Any, corpus: Collection) -> None:
    rng = np.random.default_rng(1)
    status = postings_status(conn, corpus)
    assert status is not None and status.avg_ref is not None
    # longer documents: the average length grows well past the reference
    load(conn, corpus, rng, 400, start=1000, words=(40, 90))
    status = postings_status(conn, corpus)
    assert status is not None and status.drift > 1.5
    assert_postings_exact(conn, corpus)
    assert_same_top(conn, corpus, QUERIES, 20)
    # then shorter ones after deleting the long: it shrinks below the reference
    assert delete_documents(conn, corpus, [f"r{1000 + i}" for i in range(400)]) == 400
    load(conn, corpus, rng, 300, start=2000, words=(1, 4))
    status = postings_status(conn, corpus)
    assert status is not None and status.drift < 1.0
    assert_postings_exact(conn, corpus)
    assert_same_top(conn, corpus, QUERIES, 20)
    conn.execute(sql.SQL("UPDATE {} SET content = content || ' kettle kettle rope' "
                         "WHERE id % 7 = 0").format(corpus.table))
    assert_postings_exact(conn, corpus)
    assert_same_top(conn, corpus, QUERIES, 20)
    conn.execute(sql.SQL("TRUNCATE {}").format(corpus.table))
    status = postings_status(conn, corpus)
    assert status is not None and (status.postings, status.avg_ref) == (0, None)
    assert from_postings(conn, corpus, "bread", 10)[0] == []
    load(conn, corpus, rng, 200, start=3000)  # the first rows after it set a new reference
    status = postings_status(conn, corpus)
    # (the first batch of the load: near the average of the whole load)
    assert status is not None and status.avg_ref is not None and 0.8 < status.drift < 1.25
    assert_postings_exact(conn, corpus)
    assert_same_top(conn, corpus, QUERIES, 20)


def demo_copy(conn: Any, demo: Collection, name: str, *, embedder: str = "none",
              model: str = "x") -> Collection:
    """The demo's passages and vectors in a collection of their own (plain SQL, no load)."""
    c = create_collection(conn, name, dimension=demo.dimension, embedder=embedder, model=model)
    conn.execute(sql.SQL("INSERT INTO {} (external_id, title, content, content_hash, "
                         "embedding) SELECT external_id, title, content, content_hash, "
                         "embedding FROM {}").format(c.table, demo.table))
    return c


def test_postings_on_the_demo(conn: Any, demo: Collection, unique_name: str) -> None:
    """The demo's passages in a collection of their own with postings: every labeled query's
    top 100 as the exact path gives it."""
    c = demo_copy(conn, demo, unique_name)
    try:
        enable_postings(conn, c)
        queries = [q.text for q in demo_queries()]
        assert len(queries) > 50
        assert_same_top(conn, c, queries, 100)
        assert_same_top(conn, c, queries, 10)
    finally:
        drop_collection(conn, unique_name)


def test_other_k1_b_and_filters_take_the_exact_path(conn: Any, corpus: Collection) -> None:
    for kwargs in ({"k1": 2.0}, {"b": 0.3}, {"filters": {"categories": ("x",)}}):
        got = fetch_candidates(conn, corpus, "bread yeast", None, keyword_rankers=("bm25",),
                               **kwargs)
        assert not got.work
        assert any("impact-ordered postings" in n for n in got.notes), kwargs
    plain = fetch_candidates(conn, corpus, "bread yeast", None, keyword_rankers=("bm25",))
    assert plain.work and not any("postings" in n for n in plain.notes)


def test_disable_returns_to_the_exact_path(conn: Any, corpus: Collection) -> None:
    disable_postings(conn, corpus)
    assert postings_status(conn, corpus) is None
    got = fetch_candidates(conn, corpus, "bread yeast", None, keyword_rankers=("bm25",))
    assert not got.work and not got.notes
    assert _top(got.columns) == exact(conn, corpus, "bread yeast", 100)
    table = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'vecdash_postings_%%'"
                         " AND relname LIKE %s", (f"%{corpus.table_name}%",)).fetchone()
    assert table == (0,)


def test_drop_collection_drops_its_postings(conn: Any, unique_name: str) -> None:
    c = create_collection(conn, unique_name, dimension=4, embedder="none", model="x")
    load(conn, c, np.random.default_rng(2), 20, start=0)
    enable_postings(conn, c)
    relid = postings_relid(conn, c)
    drop_collection(conn, unique_name)
    assert conn.execute("SELECT to_regclass(%s)", (f"vecdash_postings_{relid}",)).fetchone() == (
        None,)
    assert conn.execute("SELECT count(*) FROM vecdash_bm25_postings WHERE relid = %s",
                        (relid,)).fetchone() == (0,)


def test_a_broken_bound_is_caught(conn: Any, corpus: Collection,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The mutation check: without the drift factor's rounding margin and with theta pushed up
    a little, the algorithm stops too early and the comparison with the exact path fails."""
    monkeypatch.setattr(postings_query, "THETA_MARGIN", -0.5)
    with pytest.raises(AssertionError):
        assert_same_top(conn, corpus, QUERIES, 20)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), candidates=st.sampled_from([1, 3, 10, 50]),
       growth=st.sampled_from([(1, 4), (3, 30), (30, 120)]))
def test_random_corpora(conn: Any, unique_name: str, seed: int, candidates: int,
                        growth: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    name = f"{unique_name}_{seed}"
    c = create_collection(conn, name, dimension=4, embedder="none", model="x")
    try:
        load(conn, c, rng, int(rng.integers(1, 150)), start=0)
        enable_postings(conn, c)
        load(conn, c, rng, int(rng.integers(1, 150)), start=500, words=growth)
        queries = [random_text(rng, int(rng.integers(1, 6))) for _ in range(6)]
        assert_same_top(conn, c, queries, candidates)
    finally:
        drop_collection(conn, name)


def test_postings_dropped_by_another_process_fall_back(conn: Any, corpus: Collection) -> None:
    from vecdash.bm25 import postings

    assert fetch_candidates(conn, corpus, "bread", None, keyword_rankers=("bm25",)).work
    cached = dict(postings._cache)
    disable_postings(conn, corpus)
    postings._cache.update(cached)  # this process still believes they are there
    got = fetch_candidates(conn, corpus, "bread yeast", None, keyword_rankers=("bm25",))
    assert not got.work
    assert _top(got.columns) == exact(conn, corpus, "bread yeast", 100)


def test_enabled_on_an_empty_collection_the_load_writes_them(conn: Any, unique_name: str) -> None:
    c = create_collection(conn, unique_name, dimension=4, embedder="none", model="x")
    try:
        enable_postings(conn, c)
        status = postings_status(conn, c)
        assert status is not None and (status.postings, status.avg_ref) == (0, None)
        load(conn, c, np.random.default_rng(4), 300, start=0)
        assert_postings_exact(conn, c)
        assert assert_same_top(conn, c, QUERIES, 10) > 0
    finally:
        drop_collection(conn, unique_name)
