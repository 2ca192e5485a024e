"""The exact top-k of a set of sample queries, stored in PostgreSQL (``vecdash_index_ground_truth``)
so it is computed once per collection state: at a million rows 50 exact scans take minutes, and
every sweep, every readout and every session would otherwise redo them.

A stored answer is keyed by the collection's table (its oid, so a table dropped and made again
never reads an old answer), the vector column, the metric, k and the query set's digest, and it
holds the ``data_version`` it was computed at: when the rows change the next lookup misses and
the answer is computed again and replaced. Read-only connections read stored answers and never
write; a write that fails (privileges, a concurrent creator) only means the answer is not kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from vecdash.collections import Collection
from vecdash.db import is_read_only, relation_exists

TRUTH_TABLE = "vecdash_index_ground_truth"
TRUTH_DDL = sql.SQL("""
CREATE TABLE IF NOT EXISTS {} (
    table_oid      oid NOT NULL,
    vector_column  text NOT NULL,
    metric         text NOT NULL,
    k              integer NOT NULL,
    query_key      text NOT NULL,
    data_version   text NOT NULL,
    ids            jsonb NOT NULL,
    seconds        double precision[] NOT NULL,
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_oid, vector_column, metric, k, query_key)
)""").format(sql.Identifier(TRUTH_TABLE))


def _table_oid(conn: psycopg.Connection[Any], collection: Collection) -> int:
    row = conn.execute("SELECT %s::regclass::oid", (_qualified(collection),)).fetchone()
    assert row is not None
    return int(row[0])


def _qualified(collection: Collection) -> str:
    """The table's name as regclass reads it (each part quoted)."""
    return ".".join('"' + part.replace('"', '""') + '"'
                    for part in (collection.schema_name, collection.table_name))


def stored_truth(conn: psycopg.Connection[Any], collection: Collection, *, k: int,
                 query_key: str, version: str) -> tuple[list[list[str]], np.ndarray] | None:
    """The stored exact top-k ids and the exact scan's seconds per query, when they were
    computed at ``version`` of the collection; else None."""
    if not relation_exists(conn, TRUTH_TABLE):
        return None
    row = conn.execute(
        sql.SQL("SELECT ids, seconds FROM {} WHERE table_oid = %s AND vector_column = %s "
                "AND metric = %s AND k = %s AND query_key = %s AND data_version = %s").format(
            sql.Identifier(TRUTH_TABLE)),
        (_table_oid(conn, collection), collection.vector_column, collection.metric, k, query_key,
         version),
    ).fetchone()
    if row is None:
        return None
    return [[str(i) for i in ids] for ids in row[0]], np.asarray(row[1], dtype=float)


def store_truth(conn: psycopg.Connection[Any], collection: Collection, *, k: int, query_key: str,
                version: str, ids: list[list[str]], seconds: np.ndarray) -> bool:
    """Keep an exact answer (replacing one computed at another version). False when it could
    not be kept (read-only, no privilege): the caller still has it, nothing else changes."""
    if is_read_only(conn):
        return False
    try:
        with conn.transaction():
            conn.execute(TRUTH_DDL)
            conn.execute(
                sql.SQL("""INSERT INTO {} (table_oid, vector_column, metric, k, query_key,
                                           data_version, ids, seconds)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                           ON CONFLICT (table_oid, vector_column, metric, k, query_key) DO UPDATE
                           SET data_version = EXCLUDED.data_version, ids = EXCLUDED.ids,
                               seconds = EXCLUDED.seconds, computed_at = now()""").format(
                    sql.Identifier(TRUTH_TABLE)),
                (_table_oid(conn, collection), collection.vector_column, collection.metric, k,
                 query_key, version, Jsonb(ids), [float(s) for s in seconds]),
            )
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction,
            psycopg.errors.UniqueViolation):
        return False  # not kept: computed again next time, which is only slower
    return True
