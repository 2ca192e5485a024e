"""Index Lab data layer against the real database: build, progress, cancel, two builds at once,
drop, invalid indexes, recall against a brute-force numpy reference, sweeps, EXPLAIN warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from vecdash import indexes as ix
from vecdash.collections import Collection, drop_collection, get_collection
from vecdash.config import Settings
from vecdash.discovery import attach_table
from vecdash.errors import Cancelled, ConnectionFailed, InvalidInput, NotFound
from vecdash.ingest import Record, ingest_records
from vecdash.synthetic import create_synthetic_collection, generate_vectors


def _name() -> str:
    return f"ix_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def small(pool: Any) -> Iterator[Collection]:
    """800 random 16-d vectors (l2), enough for a quick index and a measurable recall."""
    name = _name()
    with pool.connection() as conn:
        collection, _ = create_synthetic_collection(conn, name, n=800, dimension=16,
                                                    kind="random", metric="l2", seed=11)
    yield collection
    with pool.connection() as conn:
        drop_collection(conn, name)


@pytest.fixture
def fresh(conn: Any) -> Iterator[Collection]:
    """A cosine collection of 3,000 clustered 32-d vectors, dropped after the test."""
    name = _name()
    collection, _ = create_synthetic_collection(conn, name, n=3000, dimension=32, clusters=10,
                                                seed=5)
    yield collection
    drop_collection(conn, name)


def _slow_build_collection(conn: Any) -> Collection:
    # Large enough that an HNSW build with little memory takes several seconds here.
    name = _name()
    collection, _ = create_synthetic_collection(conn, name, n=30000, dimension=96, clusters=20,
                                                seed=2)
    return collection


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("spec, rows, fragment", [
    (ix.IndexSpec("hnsw", m=1), 100, "m must be between 2"),
    (ix.IndexSpec("hnsw", m=16, ef_construction=20), 100, "at least 2 x m"),
    (ix.IndexSpec("hnsw", m=10_000), 100, "m must be between"),
    (ix.IndexSpec("hnsw", ef_construction=100_000), 100, "ef_construction must be between"),
    (ix.IndexSpec("ivfflat", lists=50), 0, "no rows"),
    (ix.IndexSpec("ivfflat", lists=200), 100, "larger than the number of rows"),
    (ix.IndexSpec("ivfflat", lists=0), 100, "lists must be between"),
    (ix.IndexSpec("diskann"), 100, "Unknown index type"),
])
def test_bad_index_parameters_are_refused(spec: ix.IndexSpec, rows: int, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        ix.validate_spec(spec, rows=rows)


def test_defaults_and_sweeps() -> None:
    assert ix.default_lists(800) == 1 and ix.default_lists(100_000) == 100
    assert ix.default_lists(4_000_000) == 2000
    assert ix.validate_spec(ix.IndexSpec("ivfflat"), rows=50_000).lists == 50
    assert ix.probes_sweep(1) == [1] and ix.probes_sweep(10) == [1, 2, 4, 8, 10]
    assert ix.probes_sweep(32) == [1, 2, 4, 8, 16, 32]
    assert ix.check_memory(" 256MB ") == "256MB"
    for bad in ("lots", "10TB", "12", "0MB"):
        with pytest.raises(InvalidInput, match="maintenance_work_mem"):
            ix.check_memory(bad)
    with pytest.raises(InvalidInput, match="ef_search"):
        ix.check_setting(ix.Setting(ef_search=0))
    with pytest.raises(InvalidInput, match="probes"):
        ix.check_setting(ix.Setting(probes=100_000))
    with pytest.raises(InvalidInput, match="strict_order"):
        ix.check_setting(ix.Setting(iterative_scan="strict_order"), "ivfflat")


def test_recall_at_k_by_hand() -> None:
    exact = [["a", "b", "c"], ["d", "e", "f"]]
    assert ix.recall_at_k([["a", "b", "c"], ["d", "e", "f"]], exact, 3) == 1.0
    assert ix.recall_at_k([["c", "x", "a"], ["y", "z", "w"]], exact, 3) == pytest.approx(1 / 3)
    assert ix.recall_at_k([["a"], []], [["a"], []], 3) == 1.0  # fewer than k exist: divide by that
    with pytest.raises(InvalidInput, match="one entry per query"):
        ix.recall_at_k([["a"]], [["a"], ["b"]], 3)


# ------------------------------------------------------------------------------------ building


def test_build_hnsw_and_ivfflat_records_times_and_drop(conn: Any, fresh: Collection) -> None:
    hnsw = ix.build_index(conn, fresh, ix.IndexSpec("hnsw", m=8, ef_construction=32),
                          maintenance_work_mem="128MB", parallel_workers=1)
    ivf = ix.build_index(conn, fresh, ix.IndexSpec("ivfflat"))
    assert ivf.spec.lists == 3  # rows / 1000
    found = {i.name: i for i in ix.list_vector_indexes(conn, fresh)}
    assert set(found) == {hnsw.index, ivf.index}
    h = found[hnsw.index]
    assert (h.method, h.opclass, h.params, h.valid) == ("hnsw", "vector_cosine_ops",
                                                       {"m": 8, "ef_construction": 32}, True)
    assert h.build_seconds == pytest.approx(hnsw.seconds)
    assert "maintenance_work_mem=128MB" in h.built_with and "workers=1" in h.built_with
    assert h.size_bytes > 0 and found[ivf.index].params == {"lists": 3}
    with pytest.raises(InvalidInput, match="already exists"):
        ix.build_index(conn, fresh, ix.IndexSpec("hnsw", m=8, ef_construction=32))
    ix.drop_index(conn, fresh, hnsw.index)
    assert [i.name for i in ix.list_vector_indexes(conn, fresh)] == [ivf.index]
    with pytest.raises(NotFound):
        ix.drop_index(conn, fresh, f"{fresh.table_name}_tsv_gin")  # not a vector index: refused


@pytest.mark.parametrize("metric, opclass", [("l2", "vector_l2_ops"), ("ip", "vector_ip_ops")])
def test_operator_class_follows_metric(conn: Any, metric: str, opclass: str) -> None:
    name = _name()
    collection, _ = create_synthetic_collection(conn, name, n=200, dimension=8, metric=metric)
    try:
        result = ix.build_index(conn, collection, ix.IndexSpec("hnsw"))
        assert ix.get_vector_index(conn, collection, result.index).opclass == opclass
    finally:
        drop_collection(conn, name)


def test_progress_rows_appear_second_build_refused_and_cancel_leaves_nothing(
    conn: Any, settings: Settings
) -> None:
    collection = _slow_build_collection(conn)
    try:
        build = ix.start_build(settings, collection, ix.IndexSpec("hnsw", m=16,
                                                                   ef_construction=128),
                               maintenance_work_mem="8MB")
        assert build.pid is not None
        seen: list[ix.BuildProgress] = []
        deadline = time.monotonic() + 120
        while not build.done and time.monotonic() < deadline and len(seen) < 3:
            progress = build.progress(conn)
            if progress is not None:
                seen.append(progress)
            time.sleep(0.2)
        assert seen, "no row appeared in pg_stat_progress_create_index"
        assert all(p.phase for p in seen) and any((p.fraction or 0) > 0 for p in seen)
        assert not build.done, "the build finished before it could be cancelled; make it bigger"
        with pytest.raises(InvalidInput, match="Another index build is already running"):
            ix.build_index(conn, collection, ix.IndexSpec("ivfflat"))
        assert build.cancel(conn)
        with pytest.raises(Cancelled, match="no index"):
            build.wait(timeout=60)
        assert ix.list_vector_indexes(conn, collection) == []
        # The collection is usable and the lock is free again.
        done = ix.build_index(conn, collection, ix.IndexSpec("ivfflat"))
        assert ix.get_vector_index(conn, collection, done.index).valid
    finally:
        drop_collection(conn, collection.name)


def test_losing_the_connection_mid_build_leaves_nothing(conn: Any, settings: Settings) -> None:
    collection = _slow_build_collection(conn)
    try:
        build = ix.start_build(settings, collection, ix.IndexSpec("hnsw", ef_construction=128),
                               maintenance_work_mem="8MB")
        deadline = time.monotonic() + 120
        while build.progress(conn) is None and not build.done and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not build.done
        # What a server restart does to the build's session: the backend goes away mid-build.
        conn.execute("SELECT pg_terminate_backend(%s)", (build.pid,))
        with pytest.raises(ConnectionFailed, match="nothing was left"):
            build.wait(timeout=60)
        assert ix.list_vector_indexes(conn, collection) == []
        assert ix.row_count(conn, collection) == 30000
    finally:
        drop_collection(conn, collection.name)


_BUILD_IN_A_CHILD = """
import sys
import psycopg
from pgvector.psycopg import register_vector
from vecdash import indexes as ix
from vecdash.collections import get_collection
conn = psycopg.connect(sys.argv[1], autocommit=True)
register_vector(conn)
# A build sends nothing while it runs, except pgvector's NOTICE when the graph outgrows memory:
# a failed write of that would also end it. Silence it, as for a graph that fits in memory.
conn.execute("SET client_min_messages = warning")
print(conn.info.backend_pid, flush=True)
ix.build_index(conn, get_collection(conn, sys.argv[2]),
               ix.IndexSpec("hnsw", m=16, ef_construction=128), maintenance_work_mem="8MB")
"""


def test_killed_client_aborts_its_build_on_the_server(conn: Any) -> None:
    """kill -9 of the process building an index: the server notices the client is gone
    (client_connection_check_interval) and aborts the build instead of running it to the end."""
    collection = _slow_build_collection(conn)
    root = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", _BUILD_IN_A_CHILD, conn.info.dsn,
                              collection.name], stdout=subprocess.PIPE, text=True, cwd=root,
                             env={**os.environ, "PYTHONPATH": root})
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        deadline = time.monotonic() + 120
        while ix.build_progress(conn, pid) is None and time.monotonic() < deadline:
            assert child.poll() is None, "the build process ended before it was killed"
            time.sleep(0.2)
        assert ix.build_progress(conn, pid) is not None, "the build never started"
        time.sleep(0.5)
        child.kill()  # SIGKILL: the client cannot say goodbye
        child.wait(timeout=30)
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < 15:
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone() is None:
                break
            time.sleep(0.1)
        gone_after = time.monotonic() - killed_at
        assert gone_after < ix.CLIENT_CHECK_INTERVAL_MS / 1000 + 4, "the build backend lived on"
        assert ix.list_vector_indexes(conn, collection) == []
        done = ix.build_index(conn, collection, ix.IndexSpec("ivfflat"))  # the lock is free
        assert ix.get_vector_index(conn, collection, done.index).valid
    finally:
        if child.poll() is None:
            child.kill()
        drop_collection(conn, collection.name)


def test_invalid_index_is_reported_and_can_be_dropped(conn: Any, fresh: Collection) -> None:
    built = ix.build_index(conn, fresh, ix.IndexSpec("ivfflat", lists=2))
    # Simulate what an interrupted CREATE INDEX CONCURRENTLY leaves behind.
    conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
                 (sql.Identifier(fresh.schema_name, built.index).as_string(conn),))
    assert [i.name for i in ix.invalid_indexes(conn, fresh)] == [built.index]
    queries = ix.stored_vector_queries(conn, fresh, n=5)
    with pytest.raises(InvalidInput, match="INVALID"):
        ix.measure(conn, fresh, queries, index=built.index, setting=ix.Setting())
    warnings = ix.explain_query(conn, fresh, queries.vectors[0]).warnings
    assert any("INVALID" in w for w in warnings)
    ix.drop_index(conn, fresh, built.index)
    assert ix.invalid_indexes(conn, fresh) == []


# ------------------------------------------------------------------------- recall and latency


def _numpy_truth(conn: Any, collection: Collection, queries: ix.SampleQueries,
                 k: int) -> list[list[str]]:
    rows = conn.execute(sql.SQL("SELECT id::text, embedding::real[] FROM {}").format(
        collection.table)).fetchall()
    ids = np.array([r[0] for r in rows])
    matrix = np.array([r[1] for r in rows], dtype=np.float64)
    out = []
    for qid, q in zip(queries.self_ids or [], queries.vectors, strict=True):
        dist = np.linalg.norm(matrix - q.astype(np.float64), axis=1)
        order = [i for i in np.argsort(dist, kind="stable") if ids[i] != qid]
        out.append([str(ids[i]) for i in order[:k]])
    return out


def test_exact_ground_truth_and_recall_match_numpy(conn: Any, small: Collection) -> None:
    queries = ix.stored_vector_queries(conn, small, n=40)
    assert len(queries) == 40 and "excluded" in queries.source
    truth = ix.exact_neighbours(conn, small, queries, k=10)
    reference = _numpy_truth(conn, small, queries, 10)
    agree = np.mean([set(a) == set(b) for a, b in zip(truth.ids, reference, strict=True)])
    assert agree >= 0.97  # float32 ties aside, the exact scan is exact
    assert all(q not in ids for q, ids in zip(queries.self_ids or [], truth.ids, strict=True))

    built = ix.build_index(conn, small, ix.IndexSpec("ivfflat", lists=8))
    try:
        low = ix.measure(conn, small, queries, index=built.index, setting=ix.Setting(probes=1))
        assert low.index_used and len(low.found) == 40
        assert low.recall == pytest.approx(ix.recall_at_k(low.found, reference, 10), abs=0.03)
        assert low.recall < 0.9  # one list of sixteen cannot hold every neighbour
        full = ix.measure(conn, small, queries, index=built.index, setting=ix.Setting(probes=16))
        assert full.recall > 0.97 and full.probes == 16 and full.ef_search is None
        assert full.p50_ms <= full.p95_ms <= full.p99_ms and full.qps > 0
    finally:
        ix.drop_index(conn, small, built.index)


def test_ground_truth_is_cached_until_the_collection_changes(conn: Any, fresh: Collection) -> None:
    queries = ix.stored_vector_queries(conn, fresh, n=10)
    first = ix.exact_neighbours(conn, fresh, queries, k=5)
    assert ix.exact_neighbours(conn, fresh, queries, k=5) is first
    vectors, _ = generate_vectors(3, 32, kind="random", seed=99)
    ingest_records(conn, fresh, [Record(f"extra {i}", embedding=v) for i, v in enumerate(vectors)])
    again = ix.exact_neighbours(conn, fresh, queries, k=5)
    assert again is not first and again.version != first.version


def test_ground_truth_is_stored_in_postgres_and_recomputed_when_data_changes(
        conn: Any, fresh: Collection) -> None:
    from vecdash.indexes import measurement

    queries = ix.stored_vector_queries(conn, fresh, n=6)
    first = ix.exact_neighbours(conn, fresh, queries, k=5)
    table = sql.Identifier(ix.TRUTH_TABLE)
    stored = conn.execute(sql.SQL("SELECT ids, data_version, cardinality(seconds) FROM {} "
                                  "WHERE query_key = %s AND k = 5").format(table),
                          (queries.key,)).fetchall()
    assert stored == [(first.ids, first.version, 6)]
    # Another process (no in-process cache) reads the stored answer instead of scanning: mark
    # the stored ids, and the marks come back.
    marked = [["marked"] * 5 for _ in range(6)]
    conn.execute(sql.SQL("UPDATE {} SET ids = %s WHERE query_key = %s").format(table),
                 (Jsonb(marked), queries.key))
    measurement._truth_cache.clear()
    assert ix.exact_neighbours(conn, fresh, queries, k=5).ids == marked
    # Once the rows change, the stored answer is stale: computed again and replaced.
    vectors, _ = generate_vectors(2, 32, kind="random", seed=7)
    ingest_records(conn, fresh, [Record(f"new {i}", embedding=v) for i, v in enumerate(vectors)])
    again = ix.exact_neighbours(conn, fresh, queries, k=5)
    assert again.ids != marked and again.version != first.version
    assert conn.execute(sql.SQL("SELECT data_version FROM {} WHERE query_key = %s").format(table),
                        (queries.key,)).fetchone() == (again.version,)


def test_sweep_repeats_each_setting_and_reports_the_spread(conn: Any, fresh: Collection) -> None:
    from vecdash.indexes import sweep_report

    hnsw = ix.build_index(conn, fresh, ix.IndexSpec("hnsw", m=4, ef_construction=8))
    queries = ix.stored_vector_queries(conn, fresh, n=6)
    frame = ix.sweep(conn, fresh, queries, k=5, repeats=3)
    assert (frame["repeats"] == 3).all()
    assert (frame["p50_min_ms"] <= frame["p50_ms"]).all()
    assert (frame["p50_ms"] <= frame["p50_max_ms"]).all()
    assert (frame["p95_min_ms"] <= frame["p95_max_ms"]).all()
    assert (frame["p50_max_ms"] > frame["p50_min_ms"]).any()  # three passes never time alike
    one = ix.measure(conn, fresh, queries, index=hnsw.index, setting=ix.Setting(), repeats=1)
    assert one.repeats == 1 and one.p50_min_ms == one.p50_ms == one.p50_max_ms
    for bad in (0, -1, ix.MAX_REPEATS + 1, 2.5, True):
        with pytest.raises(InvalidInput, match="repeats"):
            ix.sweep(conn, fresh, queries, k=5, repeats=bad)  # type: ignore[arg-type]

    figures = sweep_report.sweep_figures(frame, k=5)
    assert [f.layout.title.text.split("<br>")[0] for f in figures] == [
        "recall vs p50 latency (up and left is better)",
        "recall vs p95 latency (up and left is better)"]
    line = next(t for t in figures[0].data if t.name != "exact scan")
    assert list(line.text) == [f"ef_search={v}" for v in ix.EF_SEARCH_SWEEP]  # every point
    assert line.error_x.array is not None and len(line.error_x.array) == len(ix.EF_SEARCH_SWEEP)
    assert "median of 3 repeats" in figures[0].layout.title.text


def test_latency_axis_is_linear_for_a_small_range_and_labels_decades_otherwise() -> None:
    from vecdash.indexes.sweep_report import latency_axis

    assert latency_axis([0.4, 0.9, 2.5])["type"] == "linear"
    wide = latency_axis([0.2, 3.0, 40.0, 900.0])
    assert wide["type"] == "log" and wide["dtick"] == 1  # 0.1, 1, 10, 100, 1000: not "2 3 …"
    assert latency_axis([])["type"] == "linear"


def test_hnsw_memory_estimate_matches_where_pgvector_stops_fitting(conn: Any,
                                                                   fresh: Collection) -> None:
    import re

    spec = ix.IndexSpec("hnsw", m=16, ef_construction=32)
    estimate = ix.hnsw_graph_memory(fresh, rows=3000, m=16, maintenance_work_mem="1MB")
    assert not estimate.fits and "more than maintenance_work_mem" in estimate.message
    assert "at least" in estimate.message and estimate.advised.endswith("MB")
    notices: list[str] = []
    conn.add_notice_handler(lambda n: notices.append(n.message_primary or ""))
    ix.build_index(conn, fresh, spec, maintenance_work_mem="1MB")
    spilled = [int(m.group(1)) for n in notices
               if (m := re.search(r"no longer fits into maintenance_work_mem after (\d+)", n))]
    assert spilled, notices  # pgvector itself says the graph did not fit
    assert estimate.rows_that_fit == pytest.approx(spilled[0], rel=0.1)
    assert ix.hnsw_graph_memory(fresh, rows=3000, m=16,
                                maintenance_work_mem=estimate.advised).fits
    roomy = ix.hnsw_graph_memory(fresh, rows=3000, m=16, maintenance_work_mem="64MB")
    assert roomy.fits and "fits" in roomy.message


def test_stored_vector_queries_refuse_a_count_below_one(conn: Any, small: Collection) -> None:
    for bad in (0, -5, 2.5, True, "10"):
        with pytest.raises(InvalidInput, match="at least 1"):
            ix.stored_vector_queries(conn, small, n=bad)  # type: ignore[arg-type]
    assert len(ix.stored_vector_queries(conn, small, n=1)) == 1


def test_derived_index_names_never_collide_with_another_relation(conn: Any,
                                                                 fresh: Collection) -> None:
    spec = ix.IndexSpec("hnsw", m=4, ef_construction=8)
    taken = ix.default_index_name(fresh, spec)
    conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(taken)))
    try:
        built = ix.build_index(conn, fresh, spec)
        assert built.index != taken and built.index.startswith(taken[:40])
        assert [i.name for i in ix.list_vector_indexes(conn, fresh)] == [built.index]
        with pytest.raises(InvalidInput, match="already exists"):  # the same index twice
            ix.build_index(conn, fresh, spec)
        with pytest.raises(InvalidInput, match="already exists"):  # a name asked for, taken
            ix.build_index(conn, fresh, ix.IndexSpec("hnsw", m=6), name=taken)
    finally:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(taken)))


def test_sweep_has_exact_reference_and_one_line_per_index(conn: Any, fresh: Collection) -> None:
    hnsw = ix.build_index(conn, fresh, ix.IndexSpec("hnsw", m=4, ef_construction=8))
    ivf = ix.build_index(conn, fresh, ix.IndexSpec("ivfflat", lists=4))
    queries = ix.stored_vector_queries(conn, fresh, n=15)
    steps: list[int] = []
    # Isolated, as the page does on the embedded server (without: tests/test_index_isolation.py).
    frame = ix.sweep(conn, fresh, queries, k=10, progress=lambda d, t, _: steps.append(d),
                     isolate=True)
    assert frame.iloc[0]["method"] == "exact" and frame.iloc[0]["recall"] == 1.0
    h = frame[frame["index"] == hnsw.index]
    v = frame[frame["index"] == ivf.index]
    assert list(h["ef_search"]) == list(ix.EF_SEARCH_SWEEP)
    assert list(v["probes"]) == [1, 2, 4]
    assert frame["index_used"].iloc[1:].all()  # each index measured alone (the other set aside)
    assert v["recall"].iloc[-1] == pytest.approx(1.0)  # probing every list is exact
    assert h["recall"].iloc[-1] >= h["recall"].iloc[0]
    assert frame["config"].nunique() == 3 and steps[-1] == len(frame)
    # Setting the other index aside was never committed.
    assert {i.name for i in ix.list_vector_indexes(conn, fresh)} == {hnsw.index, ivf.index}


def test_halfvec_expression_index_for_wide_vector_table(conn: Any) -> None:
    table = _name()
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, body text, "
                         "embedding vector(2100))").format(sql.Identifier(table)))
    vectors, _ = generate_vectors(300, 2100, kind="clustered", clusters=5, seed=4)
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(sql.Identifier(table)),
                        [(i, f"row {i}", v) for i, v in enumerate(vectors)])
    collection = attach_table(conn, table, schema="public", table=table, vector_column="embedding",
                              content_column="body", metric="cosine")
    try:
        assert collection.vector_type == "vector" and collection.dimension == 2100
        target = ix.index_target(collection)
        assert target.halfvec_expression and "2,000" in target.reason
        built = ix.build_index(conn, collection, ix.IndexSpec("hnsw"))
        assert "2,000" in built.halfvec_reason
        index = ix.get_vector_index(conn, collection, built.index)
        assert index.opclass == "halfvec_cosine_ops" and index.halfvec_expression
        assert "halfvec(2100)" in index.definition
        queries = ix.stored_vector_queries(conn, collection, n=10)
        m = ix.measure(conn, collection, queries, index=built.index,
                       setting=ix.Setting(ef_search=100))
        assert m.index_used and m.recall > 0.8
    finally:
        drop_collection(conn, collection.name)
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


# ---------------------------------------------------------------------------------- EXPLAIN


def test_explain_warns_about_operator_class_mismatch(conn: Any, fresh: Collection) -> None:
    name = f"{fresh.table_name}_l2"
    conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_l2_ops)").format(
        sql.Identifier(name), fresh.table))
    queries = ix.stored_vector_queries(conn, fresh, n=1)
    explained = ix.explain_query(conn, fresh, queries.vectors[0], k=5)
    assert "Execution Time" in explained.plan and "Buffers" in explained.plan
    assert "values]'" in explained.plan  # the query vector is abbreviated
    assert explained.index_used is None and explained.rows == 5
    assert any("vector_l2_ops" in w and "never use" in w for w in explained.warnings)


def test_explain_warns_when_filter_and_limit_return_fewer_than_k(conn: Any) -> None:
    name = _name()
    collection, _ = create_synthetic_collection(conn, name, n=20000, dimension=16, clusters=40,
                                                seed=8)
    try:
        ix.build_index(conn, collection, ix.IndexSpec("hnsw", m=8, ef_construction=32))
        conn.execute(sql.SQL("ANALYZE {}").format(collection.table))
        conn.execute(sql.SQL("DROP INDEX {}").format(
            sql.Identifier(f"{collection.table_name}_category")))
        vectors, labels = generate_vectors(20000, 16, kind="clustered", clusters=40, seed=8)
        other = f"cluster {(int(labels[0]) + 1) % 40}"
        strict = ix.explain_query(conn, collection, vectors[0], k=20, category=other,
                                  setting=ix.Setting(ef_search=20))
        assert strict.index_used is not None and strict.rows < 20
        assert any("iterative scan" in w for w in strict.warnings)
        relaxed = ix.explain_query(conn, collection, vectors[0], k=20, category=other,
                                   setting=ix.Setting(ef_search=20, iterative_scan="relaxed_order"))
        assert relaxed.rows == 20
        assert not any("iterative scan" in w for w in relaxed.warnings)
    finally:
        drop_collection(conn, name)


def test_explain_warns_when_lists_exceed_rows(conn: Any) -> None:
    name = _name()
    collection, _ = create_synthetic_collection(conn, name, n=60, dimension=8, clusters=3)
    try:
        built = ix.build_index(conn, collection, ix.IndexSpec("ivfflat", lists=40))
        conn.execute(sql.SQL("DELETE FROM {} WHERE id > 20").format(collection.table))
        collection = get_collection(conn, name)
        explained = ix.explain_query(conn, collection, np.ones(8), k=5)
        assert any(built.index in w and "40 lists" in w and "20 rows" in w
                   for w in explained.warnings)
    finally:
        drop_collection(conn, name)


def test_index_command_builds_lists_and_sweeps(conn: Any, fresh: Collection,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from vecdash.cli import main

    assert main(["index", "--collection", fresh.name, "--build", "ivfflat", "--lists", "4",
                 "--sweep", "--sample-vectors", "5"]) == 0
    out = capsys.readouterr().out
    assert "built " in out and "ivfflat lists=4" in out and "valid" in out
    assert "exact scan" in out and "probes=4" in out
    assert main(["index", "--collection", fresh.name, "--build", "hnsw", "--m", "1"]) == 2
    assert "m must be between" in capsys.readouterr().err


def test_read_only_measures_but_never_builds(conn: Any, fresh: Collection,
                                             settings: Settings) -> None:
    from dataclasses import replace

    from vecdash import db
    from vecdash.errors import ReadOnlyError

    hnsw = ix.build_index(conn, fresh, ix.IndexSpec("hnsw", m=4, ef_construction=8))
    ix.build_index(conn, fresh, ix.IndexSpec("ivfflat", lists=2))
    with db.connect(replace(settings, read_only=True)) as ro:
        with pytest.raises(ReadOnlyError):
            ix.build_index(ro, fresh, ix.IndexSpec("hnsw"))
        with pytest.raises(ReadOnlyError):
            ix.drop_index(ro, fresh, hnsw.index)
        queries = ix.stored_vector_queries(ro, fresh, n=5)
        m = ix.measure(ro, fresh, queries, index=hnsw.index, setting=ix.Setting())
        assert m.hidden == [] and 0 < m.recall <= 1  # the other index could not be set aside


# ------------------------------------------------------------------------------ sweep exports


def _script_tags(page: str) -> list[dict[str, str | None]]:
    from html.parser import HTMLParser

    found: list[dict[str, str | None]] = []

    class Scripts(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "script":
                found.append(dict(attrs))

    Scripts().feed(page)
    return found


def test_sweep_exports_csv_html_and_png(conn: Any, fresh: Collection) -> None:
    import io

    import pandas as pd

    from vecdash.indexes import sweep_report

    ix.build_index(conn, fresh, ix.IndexSpec("hnsw", m=4, ef_construction=8))
    queries = ix.stored_vector_queries(conn, fresh, n=8)
    frame = ix.sweep(conn, fresh, queries, k=5)
    back = pd.read_csv(io.BytesIO(sweep_report.sweep_csv(frame)), keep_default_na=False)
    assert list(back.columns) == list(sweep_report.CSV_COLUMNS)
    assert len(back) == len(frame) == 1 + len(ix.EF_SEARCH_SWEEP)
    assert list(back["setting"]) == list(frame["setting"])
    assert back["recall"].tolist() == pytest.approx(frame["recall"].tolist())

    page = sweep_report.sweep_html(frame, k=5, title="Index sweep <demo>",
                                   context=["Collection x & y"])
    assert page.startswith("<!DOCTYPE html>") and "Index sweep &lt;demo&gt;" in page
    assert "Collection x &amp; y" in page and "recall vs p50" in page and "recall vs p95" in page
    assert page.count("Plotly.newPlot") == 2  # both charts, interactive
    scripts = _script_tags(page)
    assert scripts and not any("src" in attrs for attrs in scripts)  # nothing loaded: offline
    assert len(page) > 1_000_000  # plotly.js itself is in the file
    assert "ef_search=320" in page  # the table

    figures = sweep_report.sweep_figures(frame, k=5)
    if not sweep_report.png_export_available():
        with pytest.raises(InvalidInput, match="HTML report"):
            sweep_report.figure_png(figures[0])
        pytest.skip("kaleido or a Chrome / Chromium is missing here: PNG export is offered off")
    image = sweep_report.figure_png(figures[0])
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 10_000


def test_searches_probe_the_square_root_of_an_ivfflat_index_lists(conn: Any,
                                                                    fresh: Collection) -> None:
    """pgvector's default of 1 probe reads 1 list in 100 here (about 30 of 3,000 rows), so the
    semantic arm found about 30 of its 100 candidates; searches probe sqrt(lists) = 10 lists."""
    from vecdash.indexes.explain import semantic_serving
    from vecdash.search import fetch_candidates, semantic_search

    ix.build_index(conn, fresh, ix.IndexSpec("ivfflat", lists=100))
    vector = ix.stored_vector_queries(conn, fresh, n=1).vectors[0]
    got = fetch_candidates(conn, fresh, "", vector, candidates=100, keyword_rankers=())
    assert len(got.columns["semantic_rank"]) == 100
    assert semantic_serving(conn, fresh, vector, candidates=100).setting == "probes=10"
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")  # exact: no index
        exact = conn.execute(sql.SQL("SELECT id FROM {} ORDER BY {} <=> %s LIMIT 10").format(
            fresh.table, sql.Identifier(fresh.vector_column)), (vector,)).fetchall()
    found = semantic_search(conn, fresh, vector, k=10)
    assert len(set(found["id"]) & {str(r[0]) for r in exact}) >= 8
    # a session that asks for more probes keeps them
    with conn.transaction():
        conn.execute("SET LOCAL ivfflat.probes = 40")
        assert semantic_serving(conn, fresh, vector, candidates=100).setting == "probes=40"
