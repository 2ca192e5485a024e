"""Measuring an index: recall@k against the exact top-k and latency, at one setting or swept.

Measurements run the sample queries one by one at a given setting (hnsw.ef_search, ivfflat.probes,
iterative scan, all SET LOCAL inside the measuring transaction), ``repeats`` times over, and
compare each result with the exact top-k, computed with index scans switched off, stored in
PostgreSQL (ground_truth.py) and kept until the collection changes. Latency figures are the
median over the repeats of each repeat's p50 / p95, with the lowest and highest repeat beside
them: one pass over 50 queries on a shared machine varies by more than an index's gain.

Measuring never locks the table against other sessions unless asked: the planner is steered
toward the picked index with settings only (the other type's ef_search / probes at their most
expensive), and the figures are attributed to the index the plan shows. Setting the other
indexes aside by dropping them (uncommitted) takes an ACCESS EXCLUSIVE lock on the table for the
whole measurement: that is done only when the caller opts in (``isolate=True``; the pages do it on
the embedded server, whose tables are vecdash's own), and then with a short lock_timeout.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash import db
from vecdash.collections import Collection, data_version, estimated_rows
from vecdash.errors import InvalidInput, NotFound
from vecdash.indexes.catalog import VectorIndex, list_vector_indexes
from vecdash.indexes.explain import indexes_in_plan
from vecdash.indexes.ground_truth import store_truth, stored_truth
from vecdash.indexes.sample_queries import SampleQueries, run_queries, top_k_query
from vecdash.indexes.specs import (
    EF_SEARCH_RANGE,
    EF_SEARCH_SWEEP,
    ITERATIVE_MODES,
    PROBES_RANGE,
    Setting,
    apply_setting,
    check_setting,
    probes_sweep,
)
from vecdash.search import check_k

# How long an opted-in isolation waits for the table's lock. While DROP INDEX waits, every other
# session's query on the table queues behind it, so this bounds how long anyone is held up
# before the measurement gives up (the lock, once granted, lasts the whole measurement).
ISOLATION_LOCK_TIMEOUT_MS = 1000
DEFAULT_REPEATS = 3  # passes over the sample queries per setting: enough to show the spread
MAX_REPEATS = 20


@dataclass(frozen=True)
class GroundTruth:
    ids: list[list[str]]
    seconds: np.ndarray
    version: str


_truth_cache: OrderedDict[tuple[str, ...], GroundTruth] = OrderedDict()
_truth_lock = threading.Lock()
_TRUTH_CACHE_SIZE = 32


# Above this many vector elements (rows x dimensions) the exact scans behind recall are too slow
# to start unasked on a page load: 50 queries over 100,000 x 384 took 5.2 s on the 2-core
# benchmark machine, over 1,000,000 x 384 86 s (bench/scale_bench.py).
AUTO_GROUND_TRUTH_MAX_ELEMENTS = 200_000 * 384
EXACT_SCAN_ELEMENTS_PER_SECOND = 3.5e8  # that machine's rate, for a rough estimate in words


def _truth_key(conn: psycopg.Connection[Any], collection: Collection, k: int,
               queries: SampleQueries, version: str) -> tuple[str, ...]:
    return (str(conn.info.host), str(conn.info.port), conn.info.dbname, collection.schema_name,
            collection.table_name, collection.vector_column, collection.metric, str(k),
            queries.key, version)


def ground_truth_is_ready(conn: psycopg.Connection[Any], collection: Collection,
                          queries: SampleQueries, *, k: int = 10) -> bool:
    """Whether the exact top-k of ``queries`` is known for the collection's current data (kept
    in this process or stored), so recall costs no exact scan now."""
    check_k(k)
    version = data_version(conn, collection)
    with _truth_lock:
        if _truth_key(conn, collection, k, queries, version) in _truth_cache:
            return True
    stored = stored_truth(conn, collection, k=k, query_key=queries.key, version=version)
    return stored is not None and len(stored[0]) == len(queries)


@dataclass(frozen=True)
class ExactScanCost:
    """The exact scans the ground truth still needs: one per query over about ``rows`` rows,
    roughly ``seconds`` on the benchmark machine."""

    rows: int
    seconds: float


def ground_truth_waiting_cost(conn: psycopg.Connection[Any], collection: Collection,
                              queries: SampleQueries, *, k: int = 10) -> ExactScanCost | None:
    """None when the ground truth of ``queries`` may be had now (already known, or the table is
    small enough to scan unasked); else what computing it costs, for the user to agree to."""
    rows = estimated_rows(conn, collection)
    if (rows * collection.dimension <= AUTO_GROUND_TRUTH_MAX_ELEMENTS
            or ground_truth_is_ready(conn, collection, queries, k=k)):
        return None
    return ExactScanCost(rows, len(queries) * rows * collection.dimension
                         / EXACT_SCAN_ELEMENTS_PER_SECOND)


def exact_neighbours(conn: psycopg.Connection[Any], collection: Collection, queries: SampleQueries,
                     *, k: int = 10) -> GroundTruth:
    """The exact top-k ids per query (index scans off, SET LOCAL in its own transaction), with the
    exact scan's per-query latency. Computed once per data_version: kept in this process and
    stored in PostgreSQL, so other sessions and later starts read it instead of scanning."""
    check_k(k)
    version = data_version(conn, collection)
    key = _truth_key(conn, collection, k, queries, version)
    with _truth_lock:
        hit = _truth_cache.get(key)
        if hit is not None:
            _truth_cache.move_to_end(key)
            return hit
    stored = stored_truth(conn, collection, k=k, query_key=queries.key, version=version)
    if stored is not None and len(stored[0]) == len(queries):
        ids, seconds = stored
    else:
        ids, seconds = _exact_scan(conn, collection, queries, k)
        store_truth(conn, collection, k=k, query_key=queries.key, version=version, ids=ids,
                    seconds=seconds)
    truth = GroundTruth(ids, seconds, version)
    with _truth_lock:
        _truth_cache[key] = truth
        while len(_truth_cache) > _TRUTH_CACHE_SIZE:
            _truth_cache.popitem(last=False)
    return truth


def _exact_scan(conn: psycopg.Connection[Any], collection: Collection, queries: SampleQueries,
                k: int, repeats: int = 1) -> tuple[list[list[str]], np.ndarray]:
    """Run the queries with index scans off (SET LOCAL in its own transaction): ids and seconds
    (one row per repeat when ``repeats`` > 1)."""
    query = top_k_query(collection, halfvec_expression=False)
    with conn.transaction():
        conn.execute("SELECT set_config('enable_indexscan', 'off', true), "
                     "set_config('enable_bitmapscan', 'off', true), "
                     "set_config('enable_indexonlyscan', 'off', true)")
        found, seconds = _repeated(conn, query, queries, k, repeats)
    return found, seconds if repeats > 1 else seconds[0]


def check_repeats(repeats: Any) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not (
            1 <= repeats <= MAX_REPEATS):
        raise InvalidInput(f"repeats must be a whole number from 1 to {MAX_REPEATS} (got "
                           f"{repeats!r}): how many times the sample queries are run per setting.")
    return repeats


def _repeated(conn: psycopg.Connection[Any], query: sql.Composed, queries: SampleQueries, k: int,
              repeats: int) -> tuple[list[list[str]], np.ndarray]:
    """The queries run ``repeats`` times: the first pass's ids, seconds as (repeats, queries)."""
    found, first = run_queries(conn, query, queries, k)
    passes = [first] + [run_queries(conn, query, queries, k)[1] for _ in range(repeats - 1)]
    return found, np.vstack(passes)


def recall_at_k(found: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int) -> float:
    """Mean over queries of |found[:k] ∩ exact[:k]| / min(k, len(exact)) (1.0 when exact is empty)."""
    if len(found) != len(exact):
        raise InvalidInput("found and exact must have one entry per query.")
    if not exact:
        return float("nan")
    scores = []
    for f, e in zip(found, exact, strict=True):
        truth = set(list(e)[:k])
        scores.append(1.0 if not truth else len(set(list(f)[:k]) & truth) / len(truth))
    return float(np.mean(scores))


EXACT_SCAN = "exact scan"


@dataclass(frozen=True)
class Measurement:
    index: str  # the index that served the queries (read from the plan), or "exact scan"
    method: str  # hnsw, ivfflat or exact (of the index that served them)
    setting: str  # e.g. "ef_search=40" (each chart point's label), as the serving index ran
    ef_search: int | None
    probes: int | None
    iterative_scan: str
    k: int
    queries: int
    recall: float
    p50_ms: float  # median over the repeats of each repeat's p50
    p95_ms: float  # the same for p95
    p99_ms: float  # over every timing of every repeat (one pass has too few queries for it)
    qps: float
    index_used: bool  # the index asked for is the one that served the queries
    hidden: list[str] = field(default_factory=list)  # other vector indexes hidden while measuring
    found: list[list[str]] = field(default_factory=list, repr=False)  # ids returned per query
    requested: str = ""  # the index the caller asked to measure
    note: str = ""  # when it could not be isolated: which index the planner chose, what to do
    repeats: int = 1  # passes over the sample queries
    p50_min_ms: float = float("nan")  # the fastest and slowest repeat's p50 (the spread)
    p50_max_ms: float = float("nan")
    p95_min_ms: float = float("nan")
    p95_max_ms: float = float("nan")


def _latency(index: str, method: str, setting: str, s: Setting | None, k: int,
             seconds: np.ndarray, recall: float, used: bool, hidden: list[str],
             found: list[list[str]], requested: str = "", note: str = "") -> Measurement:
    ms = np.atleast_2d(seconds) * 1000.0  # (repeats, queries)
    p50 = np.percentile(ms, 50, axis=1)
    p95 = np.percentile(ms, 95, axis=1)
    total = float(ms.sum()) / 1000.0
    return Measurement(
        index=index, method=method, setting=setting,
        ef_search=s.ef_search if s and method == "hnsw" else None,
        probes=s.probes if s and method == "ivfflat" else None,
        iterative_scan=s.iterative_scan if s else "off", k=k, queries=int(ms.shape[1]),
        recall=recall, p50_ms=float(np.median(p50)), p95_ms=float(np.median(p95)),
        p99_ms=float(np.percentile(ms, 99)),
        qps=float(ms.size / total) if total > 0 else float("inf"),
        index_used=used, hidden=hidden, found=found, requested=requested or index, note=note,
        repeats=int(ms.shape[0]), p50_min_ms=float(p50.min()), p50_max_ms=float(p50.max()),
        p95_min_ms=float(p95.min()), p95_max_ms=float(p95.max()),
    )


def exact_measurement(conn: psycopg.Connection[Any], collection: Collection,
                      queries: SampleQueries, *, k: int = 10, remeasure: bool = False,
                      repeats: int = 1) -> Measurement:
    """The exact scan as a reference point: recall 1 by definition, its latency as measured when
    the ground truth was computed, or (``remeasure``) timed again now, ``repeats`` times: a
    sweep compares its index rows with an exact scan run under the same conditions, not one
    from minutes ago (the ids themselves are never recomputed while the data is unchanged)."""
    check_repeats(repeats)
    truth = exact_neighbours(conn, collection, queries, k=k)
    seconds = (_exact_scan(conn, collection, queries, k, repeats)[1] if remeasure
               else truth.seconds)
    return _latency(EXACT_SCAN, "exact", "no index (sequential scan)", None, k, seconds,
                    1.0, False, [], truth.ids)


def isolation_is_safe(conn: psycopg.Connection[Any]) -> bool:
    """True on the embedded server vecdash started (its tables are vecdash's own, so briefly
    locking one to measure an index alone holds up no one else's work) when it may write."""
    return db.server_info(conn).source == "embedded" and not db.is_read_only(conn)


def _competitors(keep: VectorIndex, all_indexes: list[VectorIndex]) -> list[VectorIndex]:
    """The other valid vector indexes the planner could pick for ``keep``'s query."""
    return [i for i in all_indexes if i.name != keep.name and i.valid
            and i.halfvec_expression == keep.halfvec_expression]


def _hide_others(conn: psycopg.Connection[Any], collection: Collection,
                 others: list[VectorIndex]) -> list[str]:
    """Inside the caller's (rolled-back) transaction, drop ``others`` so the planner can only use
    the index being measured. Never committed, but it locks the table until the rollback; it
    waits at most ISOLATION_LOCK_TIMEOUT_MS for the lock, so no one queues behind it for long."""
    hidden: list[str] = []
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{ISOLATION_LOCK_TIMEOUT_MS}ms",))
    for other in others:
        try:
            conn.execute(sql.SQL("DROP INDEX {}").format(
                sql.Identifier(collection.schema_name, other.name)))
        except psycopg.errors.LockNotAvailable as exc:
            raise InvalidInput(
                f"{collection.name!r} is in use (a search, a load or an index build holds it), so "
                f"the other indexes could not be set aside within {ISOLATION_LOCK_TIMEOUT_MS} ms "
                "to measure one alone. Try again when it is quiet, or measure without isolating "
                "(the figures then name the index the planner chose)."
            ) from exc
        hidden.append(other.name)
    conn.execute("SELECT set_config('lock_timeout', '0', true)")
    return hidden


def _steered(setting: Setting, method: str) -> Setting:
    """``setting`` with the *other* index type's search setting at its most expensive: pgvector's
    cost estimates grow with it, so the planner prefers ``method``'s index, while the index
    measured runs exactly at ``setting`` (it never reads the other type's setting)."""
    if method == "hnsw":
        return replace(setting, probes=PROBES_RANGE[1])
    return replace(setting, ef_search=EF_SEARCH_RANGE[1])


def _setting_label(method: str, s: Setting) -> str:
    if method == "hnsw":
        return f"ef_search={s.ef_search}"
    if method == "ivfflat":
        return f"probes={s.probes}"
    return "no index (sequential scan)"


def _not_isolated_note(chosen: VectorIndex, served: str, read_only: bool) -> str:
    what = (f"the planner chose {served} instead" if served != EXACT_SCAN
            else "the planner read the table without any vector index")
    how = ("Read-only mode cannot set the other indexes aside." if read_only else
           "Tick \"Measure each index alone\" (it drops the other indexes in a rolled-back "
           "transaction, which locks the table while measuring) or drop the other index.")
    return f"{chosen.name} could not be measured alone: {what}, so these figures are " \
           f"{served}'s. {how}"


def measure(conn: psycopg.Connection[Any], collection: Collection, queries: SampleQueries, *,
            index: str, setting: Setting, k: int = 10, isolate: bool = False,
            repeats: int = 1) -> Measurement:
    """Run the sample queries through ``index`` at ``setting``, ``repeats`` times: recall@k
    against the exact scan, p50 / p95 (median over the repeats, with the lowest and highest
    repeat), p99 and QPS (one client, queries one after another).

    In the measuring transaction (rolled back at the end) the settings are SET LOCAL and
    enable_seqscan is off so the planner takes an index even on a small table. The planner is
    steered toward ``index`` without locking anything; the result names the index the plan
    actually used (``index``; ``index_used`` False and ``note`` set when that is another one).
    With ``isolate`` the other vector indexes on the same expression are dropped (uncommitted)
    first, which locks the table against every other session while measuring: opt in only where
    that is acceptable (see isolation_is_safe). Read-only connections never drop.
    """
    check_k(k)
    check_repeats(repeats)
    indexes = list_vector_indexes(conn, collection)
    chosen = next((i for i in indexes if i.name == index), None)
    if chosen is None:
        raise NotFound(f"{collection.name!r} has no vector index named {index!r}.")
    if not chosen.valid:
        raise InvalidInput(f"{index} is INVALID (an interrupted build left it); PostgreSQL never "
                           "uses it. Drop it and build again.")
    check_setting(setting, chosen.method)
    truth = exact_neighbours(conn, collection, queries, k=k)
    query = top_k_query(collection, halfvec_expression=chosen.halfvec_expression)
    others = _competitors(chosen, indexes)
    read_only = db.is_read_only(conn)
    effective = _steered(setting, chosen.method)
    with conn.transaction(force_rollback=True):  # dropped indexes come back, whatever happens
        hidden = _hide_others(conn, collection, others) if isolate and others and not read_only \
            else []
        conn.execute("SELECT set_config('enable_seqscan', 'off', true)")
        apply_setting(conn, effective, chosen.method)
        in_plan = indexes_in_plan(conn, query, {"q": queries.vectors[0], "k": k})
        found, seconds = _repeated(conn, query, queries, k, repeats)
    by_name = {i.name: i for i in indexes}
    served = next((by_name[n] for n in in_plan if n in by_name), None)
    served_name = served.name if served else EXACT_SCAN
    served_method = served.method if served else "exact"
    label = _setting_label(served_method, effective)
    if setting.iterative_scan != "off" and served_method == chosen.method:
        label += f", iterative_scan={setting.iterative_scan}"
    used = served_name == chosen.name
    note = "" if used else _not_isolated_note(chosen, served_name, read_only)
    return _latency(served_name, served_method, label, effective if served else None, k, seconds,
                    recall_at_k(found, truth.ids, k), used, hidden, found, chosen.name, note)


def sweep(
    conn: psycopg.Connection[Any],
    collection: Collection,
    queries: SampleQueries,
    *,
    k: int = 10,
    indexes: Sequence[str] | None = None,
    iterative_scan: str = "off",
    progress: Callable[[int, int, str], None] | None = None,
    isolate: bool = False,
    repeats: int = DEFAULT_REPEATS,
) -> pd.DataFrame:
    """ef_search over EF_SEARCH_SWEEP for HNSW, probes over 1, 2, 4, ... lists for IVFFlat, for
    each valid vector index (or those named), plus the exact scan as a reference row.
    ``isolate`` as in measure (locks the table while measuring; off by default); every setting
    (and the exact scan) runs the queries ``repeats`` times.

    Columns: index (the index that served the row's queries), requested (the index swept),
    method, setting, ef_search, probes, iterative_scan, recall, p50_ms, p50_min_ms, p50_max_ms,
    p95_ms, p95_min_ms, p95_max_ms, p99_ms, qps, repeats, index_used (requested served them),
    note (why not), config (label of the index that served them: one chart line each).
    """
    check_repeats(repeats)
    available = [i for i in list_vector_indexes(conn, collection) if i.valid]
    chosen = [i for i in available if indexes is None or i.name in indexes]
    plan: list[tuple[VectorIndex, Setting]] = []
    for ix in chosen:
        mode = iterative_scan if iterative_scan in ITERATIVE_MODES[ix.method] else "off"
        if ix.method == "hnsw":
            plan += [(ix, Setting(ef_search=v, iterative_scan=mode)) for v in EF_SEARCH_SWEEP]
        else:
            plan += [(ix, Setting(probes=v, iterative_scan=mode))
                     for v in probes_sweep(ix.params["lists"])]
    total = len(plan) + 1
    if progress:
        progress(0, total, "exact scan (ground truth)")
    rows = [exact_measurement(conn, collection, queries, k=k, remeasure=True, repeats=repeats)]
    configs = [EXACT_SCAN]
    labels = {i.name: i.label for i in available}
    for step, (ix, s) in enumerate(plan, start=1):
        if progress:
            progress(step, total, f"{ix.name}: {s}")
        m = measure(conn, collection, queries, index=ix.name, setting=s, k=k, isolate=isolate,
                    repeats=repeats)
        rows.append(m)
        configs.append(labels.get(m.index, m.index))
    if progress:
        progress(total, total, "done")
    frame = pd.DataFrame([{
        "index": m.index, "requested": m.requested, "method": m.method, "setting": m.setting,
        "ef_search": m.ef_search, "probes": m.probes, "iterative_scan": m.iterative_scan,
        "recall": m.recall, "p50_ms": m.p50_ms, "p50_min_ms": m.p50_min_ms,
        "p50_max_ms": m.p50_max_ms, "p95_ms": m.p95_ms, "p95_min_ms": m.p95_min_ms,
        "p95_max_ms": m.p95_max_ms, "p99_ms": m.p99_ms, "qps": m.qps, "repeats": m.repeats,
        "index_used": m.index_used, "note": m.note,
    } for m in rows])
    frame["config"] = configs
    return frame
