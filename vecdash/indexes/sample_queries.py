"""The query vectors measurements run, and running them: the top-k query an index serves, timed
one query after another."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from vecdash.collections import EXACT_COUNT_MAX, Collection, estimated_rows
from vecdash.errors import InvalidInput
from vecdash.indexes.specs import index_target
from vecdash.search import query_vector

MAX_SAMPLE_QUERIES = 10_000  # each query is timed alone: more would keep a sweep busy for hours


@dataclass(frozen=True)
class SampleQueries:
    """Query vectors for measurements. ``self_ids`` (stored vectors used as queries) are the rows
    the queries came from: each is left out of its own results, exact and approximate alike."""

    vectors: np.ndarray
    labels: list[str]
    source: str
    self_ids: list[str] | None = None

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def key(self) -> str:
        digest = hashlib.sha1(np.ascontiguousarray(self.vectors, dtype=np.float32).tobytes())
        digest.update("\x00".join(self.self_ids or []).encode())
        return digest.hexdigest()


def queries_from_vectors(collection: Collection, vectors: np.ndarray, labels: Sequence[str],
                         *, source: str) -> SampleQueries:
    """Query vectors (e.g. embedded labeled queries), checked and normalised for the collection."""
    if len(vectors) == 0:
        raise InvalidInput("There are no sample queries to run.")
    checked = np.stack([query_vector(collection, v) for v in vectors]).astype(np.float32)
    return SampleQueries(checked, list(labels), source)


def _block_sample(conn: psycopg.Connection[Any], c: Collection, n: int,
                  large_above: int) -> sql.Composable:
    """On a large table, a repeatable block sample of about 40 rows per query to pick from (the
    pick by md5 would read every row); nothing on a small one."""
    estimate = estimated_rows(conn, c)
    if estimate < large_above:
        return sql.SQL("")
    percent = min(100.0, 100.0 * max(40 * n, 1_000) / max(estimate, 1))
    return sql.SQL(" TABLESAMPLE SYSTEM ({}) REPEATABLE (7)").format(sql.Literal(percent))


def stored_vector_queries(conn: psycopg.Connection[Any], collection: Collection, *,
                          n: int = 50, large_above: int = EXACT_COUNT_MAX) -> SampleQueries:
    """``n`` stored vectors (a fixed pseudo-random pick by id) used as queries. Each query's own
    row is excluded from its results, so recall measures finding the *other* neighbours."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise InvalidInput(f"The number of sample queries must be a whole number of at least 1 "
                           f"(got {n!r}); 50 is a good default.")
    if n > MAX_SAMPLE_QUERIES:
        raise InvalidInput(f"At most {MAX_SAMPLE_QUERIES:,} sample queries can be run (got "
                           f"{n:,}): each is timed one after another. Pick fewer.")
    c = collection
    rows = conn.execute(
        sql.SQL("SELECT {id}::text, {vec}::real[] FROM {table}{sample} WHERE {vec} IS NOT NULL "
                "ORDER BY md5({id}::text) LIMIT %s").format(
            id=sql.Identifier(c.id_column), vec=sql.Identifier(c.vector_column), table=c.table,
            sample=_block_sample(conn, c, n, large_above)),
        (n,),
    ).fetchall()
    if not rows:
        raise InvalidInput(f"{c.name!r} has no rows to use as sample queries. Load data first.")
    vectors = np.stack([query_vector(c, np.asarray(r[1], dtype=np.float32)) for r in rows])
    ids = [str(r[0]) for r in rows]
    return SampleQueries(vectors.astype(np.float32), [f"row {i}" for i in ids],
                         f"{len(rows)} stored vectors used as queries (each query's own row "
                         "excluded from its results)", ids)


def top_k_query(collection: Collection, *, halfvec_expression: bool,
                category: bool = False) -> sql.Composed:
    """The top-k query the indexes serve (parameters q, k and, with ``category``, cat), ordered by
    the same expression and operator an index on this collection is built on."""
    c = collection
    target = index_target(c, halfvec_expression=halfvec_expression)
    where = sql.SQL("WHERE {} = %(cat)s ").format(c.column(c.category_column)) if category else (
        sql.SQL(""))
    return sql.SQL("SELECT {id}::text FROM {table} {where}ORDER BY {expr} {op} %(q)s::{cast} "
                   "LIMIT %(k)s").format(
        id=sql.Identifier(c.id_column), table=c.table, where=where, expr=target.expression,
        op=c.distance_operator, cast=target.cast)


def run_queries(conn: psycopg.Connection[Any], query: sql.Composed, queries: SampleQueries,
                k: int) -> tuple[list[list[str]], np.ndarray]:
    """Run every query (k + 1 rows when the query's own row must be dropped); ids and seconds."""
    extra = 1 if queries.self_ids else 0
    results: list[list[str]] = []
    seconds = np.zeros(len(queries))
    for i, vec in enumerate(queries.vectors):
        if i == 0:  # warm the plan cache and buffers once, untimed
            conn.execute(query, {"q": vec, "k": k + extra}).fetchall()
        started = time.perf_counter()
        rows = conn.execute(query, {"q": vec, "k": k + extra}).fetchall()
        seconds[i] = time.perf_counter() - started
        ids = [r[0] for r in rows]
        if queries.self_ids:
            own = queries.self_ids[i]
            ids = [x for x in ids if x != own]
        results.append(ids[:k])
    return results, seconds
