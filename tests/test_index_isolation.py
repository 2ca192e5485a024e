"""Measuring indexes must not block the user's database: by default a sweep takes no lock another
session waits on, and figures name the index the planner really used; opting in to isolation
(dropping the other indexes, uncommitted) waits at most ISOLATION_LOCK_TIMEOUT_MS for the lock."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from vecdash import db
from vecdash import indexes as ix
from vecdash.collections import Collection, drop_collection
from vecdash.errors import InvalidInput
from vecdash.synthetic import create_synthetic_collection

LOCK_TIMEOUT_S = ix.ISOLATION_LOCK_TIMEOUT_MS / 1000
MARGIN_S = 0.75  # scheduling on a shared two-core machine, never vecdash's speed


@pytest.fixture(scope="module")
def busy(pool: Any) -> Iterator[Collection]:
    """20,000 clustered 32-d vectors with an HNSW and an IVFFlat index: the planner has two to
    choose from and a measurement takes long enough for another session to notice a lock."""
    name = f"iso_{uuid.uuid4().hex[:8]}"
    with pool.connection() as conn:
        collection, _ = create_synthetic_collection(conn, name, n=20000, dimension=32,
                                                    clusters=20, seed=3)
        ix.build_index(conn, collection, ix.IndexSpec("hnsw", m=8, ef_construction=32))
        ix.build_index(conn, collection, ix.IndexSpec("ivfflat", lists=20))
        conn.execute(sql.SQL("ANALYZE {}").format(collection.table))
    yield collection
    with pool.connection() as conn:
        drop_collection(conn, name)


@dataclass
class Searcher:
    """Another session searching the same table in a loop while a sampler watches whether it
    ever waits on a lock (pg_stat_activity's wait event)."""

    conn: psycopg.Connection[Any]
    watcher: psycopg.Connection[Any]
    query: Any
    vector: np.ndarray
    latencies: list[float] = field(default_factory=list)
    lock_waits: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def search(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            self.conn.execute(self.query, {"q": self.vector, "k": 10}).fetchall()
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.002)

    def sample(self) -> None:
        pid = self.conn.info.backend_pid
        while not self.stop.is_set():
            row = self.watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                       (pid,)).fetchone()
            if row is not None and row[0] == "Lock":
                self.lock_waits += 1
            time.sleep(0.003)


def _run_beside(conn: Any, collection: Collection, work: Any) -> Searcher:
    vector = ix.stored_vector_queries(conn, collection, n=1).vectors[0]
    searcher = Searcher(db.sibling_connection(conn), db.sibling_connection(conn),
                        ix.top_k_query(collection, halfvec_expression=False), vector)
    threads = [threading.Thread(target=searcher.search), threading.Thread(target=searcher.sample)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        work()
    finally:
        searcher.stop.set()
        for t in threads:
            t.join(timeout=30)
        searcher.conn.close()
        searcher.watcher.close()
    return searcher


def test_default_sweep_never_blocks_a_concurrent_search(conn: Any, busy: Collection) -> None:
    queries = ix.stored_vector_queries(conn, busy, n=40)
    frames = []
    searcher = _run_beside(conn, busy, lambda: frames.append(ix.sweep(conn, busy, queries, k=10)))
    frame = frames[0]
    assert len(searcher.latencies) >= 20, "the other session barely ran: the test shows nothing"
    assert searcher.lock_waits == 0, "the other session waited on a lock held by the sweep"
    assert max(searcher.latencies) < LOCK_TIMEOUT_S + MARGIN_S
    # Every row names an index that exists (or the exact scan), read from the plan.
    names = {i.name for i in ix.list_vector_indexes(conn, busy)} | {ix.EXACT_SCAN}
    assert set(frame["index"]) <= names
    assert (frame.loc[frame["index_used"], "index"] == frame.loc[frame["index_used"],
                                                                  "requested"]).all()


def test_opted_in_isolation_does_lock_and_the_watch_sees_it(conn: Any, busy: Collection) -> None:
    """The same watch catches the lock when isolation is asked for: the check above can fail."""
    queries = ix.stored_vector_queries(conn, busy, n=40)
    hnsw = next(i for i in ix.list_vector_indexes(conn, busy) if i.method == "hnsw")
    results: list[ix.Measurement] = []

    def work() -> None:
        for ef in (40, 80, 160, 320):
            results.append(ix.measure(conn, busy, queries, index=hnsw.name,
                                      setting=ix.Setting(ef_search=ef), isolate=True))

    searcher = _run_beside(conn, busy, work)
    assert all(m.hidden and m.index_used for m in results)
    assert searcher.lock_waits > 0


def test_opted_in_isolation_gives_up_within_the_lock_timeout(conn: Any, busy: Collection) -> None:
    """A long search holds the table: the isolating DROP waits at most the lock timeout, and a
    search queued behind that DROP is held up no longer than that either."""
    queries = ix.stored_vector_queries(conn, busy, n=5)
    hnsw = next(i for i in ix.list_vector_indexes(conn, busy) if i.method == "hnsw")
    query = ix.top_k_query(busy, halfvec_expression=False)
    holder = db.sibling_connection(conn)
    queued = db.sibling_connection(conn)
    queued_latency: list[float] = []

    def queued_search() -> None:
        time.sleep(0.3)  # after the DROP started waiting
        started = time.perf_counter()
        queued.execute(query, {"q": queries.vectors[0], "k": 10}).fetchall()
        queued_latency.append(time.perf_counter() - started)

    try:
        with holder.transaction():
            holder.execute(query, {"q": queries.vectors[0], "k": 10}).fetchall()  # holds its lock
            thread = threading.Thread(target=queued_search)
            thread.start()
            started = time.perf_counter()
            with pytest.raises(InvalidInput, match="in use"):
                ix.measure(conn, busy, queries, index=hnsw.name, setting=ix.Setting(),
                           isolate=True)
            gave_up_after = time.perf_counter() - started
            thread.join(timeout=30)
        assert gave_up_after < LOCK_TIMEOUT_S + MARGIN_S
        assert queued_latency and queued_latency[0] < LOCK_TIMEOUT_S + MARGIN_S
        # Without isolation the same measurement runs beside the long search.
        with holder.transaction():
            holder.execute(query, {"q": queries.vectors[0], "k": 10}).fetchall()
            m = ix.measure(conn, busy, queries, index=hnsw.name, setting=ix.Setting())
        assert m.index == hnsw.name and m.hidden == []
    finally:
        holder.close()
        queued.close()


def test_figures_name_the_index_the_planner_used(conn: Any) -> None:
    """Two HNSW indexes on one column: settings cannot steer the planner between them, so the
    one not chosen is reported as served by the other; isolating measures it alone."""
    name = f"iso_{uuid.uuid4().hex[:8]}"
    collection, _ = create_synthetic_collection(conn, name, n=3000, dimension=16, clusters=5,
                                                seed=4)
    try:
        small = ix.build_index(conn, collection, ix.IndexSpec("hnsw", m=4, ef_construction=16))
        large = ix.build_index(conn, collection, ix.IndexSpec("hnsw", m=16, ef_construction=64))
        queries = ix.stored_vector_queries(conn, collection, n=10)
        plain = {i: ix.measure(conn, collection, queries, index=i, setting=ix.Setting())
                 for i in (small.index, large.index)}
        losers = [m for m in plain.values() if not m.index_used]
        assert len(losers) == 1, "the planner picks one of the two for both"
        loser = losers[0]
        winner = next(m for m in plain.values() if m.index_used)
        assert loser.index == winner.index != loser.requested and loser.hidden == []
        assert loser.requested in loser.note and winner.index in loser.note
        assert "alone" in loser.note
        alone = ix.measure(conn, collection, queries, index=loser.requested,
                           setting=ix.Setting(), isolate=True)
        assert alone.index_used and alone.index == loser.requested
        assert alone.hidden == [winner.index] and alone.note == ""
        frame = ix.sweep(conn, collection, queries, k=10)
        swept = frame[frame["requested"] == loser.requested]
        assert set(swept["index"]) == {winner.index} and not swept["index_used"].any()
        assert swept["note"].str.contains("could not be measured alone").all()
    finally:
        drop_collection(conn, name)


def test_settings_steer_the_planner_between_hnsw_and_ivfflat(conn: Any, busy: Collection) -> None:
    """With one HNSW and one IVFFlat index each is measured through itself without any lock."""
    queries = ix.stored_vector_queries(conn, busy, n=10)
    for index in ix.list_vector_indexes(conn, busy):
        setting = ix.Setting(ef_search=40, probes=2)
        m = ix.measure(conn, busy, queries, index=index.name, setting=setting)
        assert m.index_used and m.index == index.name and m.hidden == [] and m.note == ""
        assert m.setting == ("ef_search=40" if index.method == "hnsw" else "probes=2")


def test_isolation_is_safe_on_the_embedded_server_only_when_writable(
        conn: Any, settings: Any) -> None:
    from dataclasses import replace

    assert ix.isolation_is_safe(conn)
    with db.connect(replace(settings, read_only=True)) as ro:
        assert not ix.isolation_is_safe(ro)
