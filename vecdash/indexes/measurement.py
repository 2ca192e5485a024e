"""Measuring an index: recall@k against the exact top-k and latency, at one setting or swept.

Measurements run the sample queries one by one at a given setting (hnsw.ef_search, ivfflat.probes,
iterative scan, all SET LOCAL inside the measuring transaction) and compare each result with the
exact top-k, computed with index scans switched off and cached until the collection changes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash import db
from vecdash.collections import Collection, data_version
from vecdash.errors import InvalidInput, NotFound
from vecdash.indexes.catalog import VectorIndex, list_vector_indexes
from vecdash.indexes.explain import plan_text
from vecdash.indexes.sample_queries import SampleQueries, run_queries, top_k_query
from vecdash.indexes.specs import (
    EF_SEARCH_SWEEP,
    ITERATIVE_MODES,
    Setting,
    apply_setting,
    check_setting,
    probes_sweep,
)
from vecdash.search import check_k


@dataclass(frozen=True)
class GroundTruth:
    ids: list[list[str]]
    seconds: np.ndarray
    version: str


_truth_cache: OrderedDict[tuple[str, ...], GroundTruth] = OrderedDict()
_truth_lock = threading.Lock()
_TRUTH_CACHE_SIZE = 32


def exact_neighbours(conn: psycopg.Connection[Any], collection: Collection, queries: SampleQueries,
                     *, k: int = 10) -> GroundTruth:
    """The exact top-k ids per query (index scans off, SET LOCAL in its own transaction), with the
    exact scan's per-query latency. Cached until the collection's data_version changes."""
    check_k(k)
    version = data_version(conn, collection)
    key = (str(conn.info.host), str(conn.info.port), conn.info.dbname, collection.schema_name,
           collection.table_name, collection.vector_column, collection.metric, str(k),
           queries.key, version)
    with _truth_lock:
        hit = _truth_cache.get(key)
        if hit is not None:
            _truth_cache.move_to_end(key)
            return hit
    query = top_k_query(collection, halfvec_expression=False)
    with conn.transaction():
        conn.execute("SELECT set_config('enable_indexscan', 'off', true), "
                     "set_config('enable_bitmapscan', 'off', true), "
                     "set_config('enable_indexonlyscan', 'off', true)")
        ids, seconds = run_queries(conn, query, queries, k)
    truth = GroundTruth(ids, seconds, version)
    with _truth_lock:
        _truth_cache[key] = truth
        while len(_truth_cache) > _TRUTH_CACHE_SIZE:
            _truth_cache.popitem(last=False)
    return truth


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


@dataclass(frozen=True)
class Measurement:
    index: str  # index name, or "exact scan"
    method: str  # hnsw, ivfflat or exact
    setting: str  # e.g. "ef_search=40" (hover text)
    ef_search: int | None
    probes: int | None
    iterative_scan: str
    k: int
    queries: int
    recall: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float
    index_used: bool
    hidden: list[str] = field(default_factory=list)  # other vector indexes hidden while measuring
    found: list[list[str]] = field(default_factory=list, repr=False)  # ids returned per query


def _latency(index: str, method: str, setting: str, s: Setting | None, k: int,
             seconds: np.ndarray, recall: float, used: bool, hidden: list[str],
             found: list[list[str]]) -> Measurement:
    ms = seconds * 1000.0
    return Measurement(
        index=index, method=method, setting=setting,
        ef_search=s.ef_search if s and method == "hnsw" else None,
        probes=s.probes if s and method == "ivfflat" else None,
        iterative_scan=s.iterative_scan if s else "off", k=k, queries=len(seconds),
        recall=recall, p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        qps=float(len(seconds) / seconds.sum()) if seconds.sum() > 0 else float("inf"),
        index_used=used, hidden=hidden, found=found,
    )


def exact_measurement(conn: psycopg.Connection[Any], collection: Collection,
                      queries: SampleQueries, *, k: int = 10) -> Measurement:
    """The exact scan as a reference point: recall 1 by definition, its latency as measured."""
    truth = exact_neighbours(conn, collection, queries, k=k)
    return _latency("exact scan", "exact", "no index (sequential scan)", None, k, truth.seconds,
                    1.0, False, [], truth.ids)


def _hide_others(conn: psycopg.Connection[Any], collection: Collection, keep: VectorIndex,
                 all_indexes: list[VectorIndex]) -> list[str]:
    """Inside the caller's (rolled-back) transaction, drop the other vector indexes so the planner
    can only use ``keep``. The drop is never committed; it locks the table while measuring."""
    hidden: list[str] = []
    others = [i for i in all_indexes if i.name != keep.name and i.valid
              and i.halfvec_expression == keep.halfvec_expression]
    if not others or db.is_read_only(conn):  # read-only: measure with the planner's choice
        return hidden
    conn.execute("SELECT set_config('lock_timeout', '5s', true)")
    for other in others:
        try:
            conn.execute(sql.SQL("DROP INDEX {}").format(
                sql.Identifier(collection.schema_name, other.name)))
        except psycopg.errors.LockNotAvailable as exc:
            raise InvalidInput(
                f"{collection.name!r} is busy (an index build is running on it?), so the other "
                "indexes cannot be set aside to measure one alone. Try again when it has finished."
            ) from exc
        hidden.append(other.name)
    return hidden


def measure(conn: psycopg.Connection[Any], collection: Collection, queries: SampleQueries, *,
            index: str, setting: Setting, k: int = 10) -> Measurement:
    """Run the sample queries through ``index`` at ``setting``: recall@k against the exact scan,
    p50 / p95 / p99 latency and QPS (one client, queries one after another).

    In the measuring transaction (rolled back at the end) the settings are SET LOCAL,
    enable_seqscan is off so the planner takes the index even on a small table, and any other
    vector index on the same expression is dropped (uncommitted) so this index is the one measured.
    """
    check_k(k)
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
    with conn.transaction(force_rollback=True):  # the other indexes come back, whatever happens
        hidden = _hide_others(conn, collection, chosen, indexes)
        conn.execute("SELECT set_config('enable_seqscan', 'off', true)")
        apply_setting(conn, setting, chosen.method)
        plan = plan_text(conn, query, {"q": queries.vectors[0], "k": k}, analyze=False)
        found, seconds = run_queries(conn, query, queries, k)
    label = (f"ef_search={setting.ef_search}" if chosen.method == "hnsw"
             else f"probes={setting.probes}")
    if setting.iterative_scan != "off":
        label += f", iterative_scan={setting.iterative_scan}"
    return _latency(chosen.name, chosen.method, label, setting, k, seconds,
                    recall_at_k(found, truth.ids, k), chosen.name in plan, hidden, found)


def sweep(
    conn: psycopg.Connection[Any],
    collection: Collection,
    queries: SampleQueries,
    *,
    k: int = 10,
    indexes: Sequence[str] | None = None,
    iterative_scan: str = "off",
    progress: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """ef_search over EF_SEARCH_SWEEP for HNSW, probes over 1, 2, 4, ... lists for IVFFlat, for
    each valid vector index (or those named), plus the exact scan as a reference row.

    Columns: index, method, setting, ef_search, probes, iterative_scan, recall, p50_ms, p95_ms,
    p99_ms, qps, index_used, config (index label, one chart line each).
    """
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
    rows = [exact_measurement(conn, collection, queries, k=k)]
    configs = ["exact scan"]
    for step, (ix, s) in enumerate(plan, start=1):
        if progress:
            progress(step, total, f"{ix.name}: {s}")
        rows.append(measure(conn, collection, queries, index=ix.name, setting=s, k=k))
        configs.append(ix.label)
    if progress:
        progress(total, total, "done")
    frame = pd.DataFrame([{
        "index": m.index, "method": m.method, "setting": m.setting, "ef_search": m.ef_search,
        "probes": m.probes, "iterative_scan": m.iterative_scan, "recall": m.recall,
        "p50_ms": m.p50_ms, "p95_ms": m.p95_ms, "p99_ms": m.p99_ms, "qps": m.qps,
        "index_used": m.index_used,
    } for m in rows])
    frame["config"] = configs
    return frame
