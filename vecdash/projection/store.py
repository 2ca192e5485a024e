"""The projection cache in PostgreSQL (``vecdash_projections``), keyed by collection, parameters and
``data_version``, so a reload or another session gets a finished map at once."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from vecdash.collections import Collection, data_version
from vecdash.db import is_read_only, relation_exists
from vecdash.projection.sampling import fetch_rows
from vecdash.projection.types import Projection, ProjectionParams

PROJECTIONS_DDL = sql.SQL("""
CREATE TABLE IF NOT EXISTS vecdash_projections (
    collection   text NOT NULL,
    params       text NOT NULL,
    data_version text NOT NULL,
    method       text NOT NULL,
    note         text NOT NULL DEFAULT '',
    ids          text[] NOT NULL,
    coords       bytea NOT NULL,
    total_rows   bigint NOT NULL,
    skipped      integer NOT NULL,
    seconds      double precision NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, params, data_version)
)""")


def _ensure_table(conn: psycopg.Connection[Any]) -> bool:
    """Create the cache table if it is missing; False when it cannot exist (read-only)."""
    if relation_exists(conn, "vecdash_projections"):
        return True
    if is_read_only(conn):
        return False
    try:
        conn.execute(PROJECTIONS_DDL)
    except psycopg.errors.UniqueViolation:  # another session created it at the same moment
        pass
    return True


def _store(conn: psycopg.Connection[Any], projection: Projection) -> None:
    if is_read_only(conn) or not _ensure_table(conn):
        return
    coords = np.ascontiguousarray(projection.coords, dtype="<f4").tobytes()
    with conn.transaction():
        conn.execute(
            "DELETE FROM vecdash_projections WHERE collection = %s AND params = %s",
            (projection.collection, projection.params.key),
        )
        conn.execute(
            """INSERT INTO vecdash_projections (collection, params, data_version, method, note,
                   ids, coords, total_rows, skipped, seconds)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (collection, params, data_version) DO UPDATE SET
                   method = EXCLUDED.method, note = EXCLUDED.note, ids = EXCLUDED.ids,
                   coords = EXCLUDED.coords, total_rows = EXCLUDED.total_rows,
                   skipped = EXCLUDED.skipped, seconds = EXCLUDED.seconds,
                   created_at = now()""",  # two sessions may finish the same map at once
            (projection.collection, projection.params.key, projection.data_version,
             projection.method, projection.note, list(projection.frame["id"]), coords,
             projection.total_rows, projection.skipped, projection.seconds),
        )


def _load(
    conn: psycopg.Connection[Any], collection: Collection, params: ProjectionParams,
    version: str | None,
) -> tuple[str, str, str, list[str], np.ndarray, int, int, float] | None:
    """The stored projection for these params: for ``version`` exactly, or (None) the latest."""
    if not relation_exists(conn, "vecdash_projections"):
        return None
    query = (
        "SELECT data_version, method, note, ids, coords, total_rows, skipped, seconds "
        "FROM vecdash_projections WHERE collection = %s AND params = %s"
    )
    args: tuple[Any, ...] = (collection.name, params.key)
    if version is not None:
        query += " AND data_version = %s"
        args = (*args, version)
    with conn.cursor(binary=True) as cur:
        row = cur.execute(query + " ORDER BY created_at DESC LIMIT 1", args).fetchone()
    if row is None:
        return None
    coords = np.frombuffer(bytes(row[4]), dtype="<f4").reshape(-1, 2).astype(np.float32)
    return (str(row[0]), str(row[1]), str(row[2]), list(row[3]), coords, int(row[5]),
            int(row[6]), float(row[7]))


def clear_cache(conn: psycopg.Connection[Any], collection: Collection | None = None) -> int:
    """Forget stored projections (of one collection, or all); returns how many were removed."""
    if is_read_only(conn) or not relation_exists(conn, "vecdash_projections"):
        return 0
    if collection is None:
        cur = conn.execute("DELETE FROM vecdash_projections")
    else:
        cur = conn.execute("DELETE FROM vecdash_projections WHERE collection = %s", (collection.name,))
    return cur.rowcount


def cached_projection(
    conn: psycopg.Connection[Any], collection: Collection, params: ProjectionParams
) -> Projection | None:
    """The stored projection for the collection's current data and these params, or None."""
    version = data_version(conn, collection)
    found = _load(conn, collection, params, version)
    if found is None:
        return None
    start = time.perf_counter()
    _, method, note, ids, coords, total, skipped, seconds = found
    frame, vectors = fetch_rows(conn, collection, ids)
    if len(frame) != len(ids):  # rows changed without a version change: recompute
        return None
    frame.insert(1, "x", coords[:, 0])
    frame.insert(2, "y", coords[:, 1])
    return Projection(collection.name, params, version, method, note, frame, vectors, total,
                      skipped, seconds, from_cache=True,
                      extra={"load_seconds": time.perf_counter() - start})


def _forget(conn: psycopg.Connection[Any], collection: Collection, params: ProjectionParams) -> None:
    if is_read_only(conn) or not relation_exists(conn, "vecdash_projections"):
        return
    conn.execute("DELETE FROM vecdash_projections WHERE collection = %s AND params = %s",
                 (collection.name, params.key))
