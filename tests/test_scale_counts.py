"""What a page reads from a large collection on load: row counts and data versions from the
catalog, the category list capped and through the index, the map's sample from a block sample.

"Large" is set per call (``exact_below``) so a few thousand rows stand in for a million; each test
reads the table's own scan counters for its transaction (pg_stat_xact_user_tables, exact and
immediate) to check what was read, never the clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from vecdash import db
from vecdash.collections import (
    Collection,
    create_collection,
    data_version,
    describe_collections,
    drop_collection,
    estimated_rows,
)
from vecdash.config import Settings
from vecdash.ingest import ingest_records
from vecdash.projection import sample_vectors
from vecdash.records import Record
from vecdash.search import filters
from vecdash.search.filters import categories_query, list_categories

CATEGORIES = [f"cat{i:02d}" for i in range(30)]


def _load(conn: Any, name: str, rows: int, dim: int = 4) -> Collection:
    c = create_collection(conn, name, dimension=dim, embedder="none", model="x")
    rng = np.random.default_rng(0)
    # cat29 holds one row only: a rare category a sample would miss
    cats = [CATEGORIES[i % 29] for i in range(rows - 1)] + [CATEGORIES[29]]
    ingest_records(conn, c, [Record(f"doc {i} words here", external_id=f"e{i}", category=cat,
                                    embedding=rng.normal(size=dim) + 0.1)
                             for i, cat in enumerate(cats)], batch_size=2000)
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(c.table))
    return c


@pytest.fixture(scope="module")
def big(pool: Any) -> Iterator[Collection]:
    with pool.connection() as conn:
        name = f"t_scale_{time.monotonic_ns() % 10**9}"
        c = _load(conn, name, 4000)
        yield c
        drop_collection(conn, name)


def _counters(conn: Any, c: Collection) -> tuple[int, ...]:
    # the entries read from its indexes count too: an index-only scan of the category index
    # reads as many entries as the table has rows
    row = conn.execute(
        "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0), coalesce(seq_tup_read, 0) + "
        "(SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(i.indexrelid)), 0) "
        " FROM pg_index i WHERE i.indrelid = t.relid) "
        "FROM pg_stat_xact_user_tables t WHERE relid = %s::regclass",
        (c.table.as_string(conn),)).fetchone()
    return tuple(int(v) for v in row) if row else (0, 0, 0)


@contextmanager
def reads(conn: Any, c: Collection) -> Iterator[dict[str, int]]:
    """The block's sequential scans, index scans and rows read (heap rows by sequential / sample
    scans, and index entries) of the collection's table. The backend's pending counters may
    still hold earlier transactions' (they are flushed about once a second, never inside a
    transaction): the difference across the block, inside one transaction, is the block's own."""
    got: dict[str, int] = {}
    with conn.transaction():
        before = _counters(conn, c)
        yield got
        after = _counters(conn, c)
    got.update(zip(("seq_scan", "idx_scan", "rows_read"),
                   (a - b for a, b in zip(after, before, strict=True)), strict=True))


def test_row_counts_are_estimates_above_the_threshold(conn: Any, big: Collection) -> None:
    with reads(conn, big) as large:
        summary = next(s for s in describe_collections(conn, exact_below=1000)
                       if s.name == big.name)
    assert summary.rows_estimated and summary.rows == 4000  # analyzed: reltuples is exact
    assert large == {"seq_scan": 0, "idx_scan": 0, "rows_read": 0}
    with reads(conn, big) as small:
        summary = next(s for s in describe_collections(conn) if s.name == big.name)
    assert not summary.rows_estimated and summary.rows == 4000
    assert small["seq_scan"] + small["idx_scan"] >= 1  # counted: what a large table must not do


def test_estimate_without_analyze_follows_the_table_size(conn: Any, unique_name: str) -> None:
    """Never analyzed (a load autovacuum has not reached yet): the planner's guess from the
    table's pages, not zero or -1."""
    c = create_collection(conn, unique_name, dimension=4, embedder="none", model="x")
    try:
        conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(c.table))
        ingest_records(conn, c, [Record(f"doc {i} words here", embedding=[1.0, 0.0, 0.0, i + 1.0])
                                 for i in range(3000)])
        assert 1000 < estimated_rows(conn, c) < 9000
    finally:
        drop_collection(conn, unique_name)


def test_data_version_of_a_large_table_sees_outside_writes_without_counting(
        conn: Any, big: Collection, settings: Settings) -> None:
    with reads(conn, big) as got:
        before = data_version(conn, big, exact_below=1000)
    assert got == {"seq_scan": 0, "idx_scan": 0, "rows_read": 0}
    assert before.split(":")[1].startswith("~")
    with db.connect(settings) as outside:  # a write vecdash does not know about
        outside.autocommit = True
        outside.execute(sql.SQL("UPDATE {} SET title = 'changed' WHERE external_id = 'e1'")
                        .format(big.table))
        outside.execute("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 15
    while data_version(conn, big, exact_below=1000) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert data_version(conn, big, exact_below=1000) != before


def test_category_list_of_a_large_table_comes_from_the_index(conn: Any, big: Collection) -> None:
    with reads(conn, big) as got:
        found = list_categories(conn, big, exact_below=1000)
    assert found == CATEGORIES  # every one, the single-row cat29 too, in name order
    assert got["seq_scan"] == 0 and got["rows_read"] < 4000 / 10  # about one entry per category
    assert list_categories(conn, big, exact_below=1000, limit=5) == CATEGORIES[:5]
    query, params = categories_query(conn, big, limit=500, exact_below=1000)
    plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + query, params).fetchall())
    assert "Seq Scan" not in plan and "Index Only Scan" in plan
    # small: exact, most common first (cat00..cat28 tie at 138 rows, cat29 has one)
    assert list_categories(conn, big)[-1] == "cat29"


class _Rollback(Exception):
    pass


def test_category_list_without_an_index_reads_a_block_sample(
        conn: Any, big: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filters, "CATEGORY_SAMPLE_ROWS", 400)  # a tenth of the table
    schema, index = conn.execute(
        "SELECT n.nspname, x.relname FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = x.relnamespace JOIN pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = %s::regclass AND a.attname = 'category'",
        (big.table.as_string(conn),)).fetchone()
    with pytest.raises(_Rollback), conn.transaction():  # the index is back after the block
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, index)))
        with reads(conn, big) as got:
            found = list_categories(conn, big, exact_below=1000)
        assert found and set(found) <= set(CATEGORIES)
        assert got["seq_scan"] == 0 and 0 < got["rows_read"] < 2000
        query, params = categories_query(conn, big, limit=500, exact_below=1000)
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + query,
                                                    params).fetchall())
        assert "Sample Scan" in plan
        raise _Rollback


def test_map_sample_of_a_large_table_reads_about_the_sample(conn: Any, big: Collection) -> None:
    with reads(conn, big) as got:
        sample = sample_vectors(conn, big, limit=50, seed=7, exact_below=1000)
    assert len(sample) == 50 and sample.stratified and sample.total_rows == 4000
    assert got["seq_scan"] == 0, got  # no full scan: the block sample and the primary key only
    assert 0 < got["rows_read"] <= 20 * 50  # the blocks of the sample (~5x), not 4,000 rows
    again = sample_vectors(conn, big, limit=50, seed=7, exact_below=1000)
    assert list(again.rows["id"]) == list(sample.rows["id"])  # repeatable
    with reads(conn, big) as small:
        sample_vectors(conn, big, limit=50, seed=7)
    assert small["rows_read"] >= 4000  # below the threshold the strata are counted exactly


def test_index_lab_sample_queries_of_a_large_table_read_a_block_sample(
        conn: Any, big: Collection) -> None:
    """The Index Lab's stored-vector queries: picked from a block sample on a large table (the
    pick by md5 reads every row), the same pick each time; the whole table on a small one."""
    from vecdash.indexes.sample_queries import stored_vector_queries

    with reads(conn, big) as large:
        first = stored_vector_queries(conn, big, n=5, large_above=1000)
    assert len(first.self_ids or []) == 5 and large["rows_read"] < 4000 // 2, large
    assert stored_vector_queries(conn, big, n=5, large_above=1000).self_ids == first.self_ids
    with reads(conn, big) as small:
        stored_vector_queries(conn, big, n=5)
    assert small["rows_read"] >= 4000
