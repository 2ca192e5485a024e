"""How a collection's stored vectors were made: ``vecdash_vector_precisions`` counts the rows the
local model embedded in each precision (float32, bfloat16), per collection table.

Kept beside the registry, not in it (its DDL is db.py's). Keyed by the table's oid as well as the
collection's name, so a dropped and re-created collection starts again from nothing. Rows whose
vectors came from the embedding cache or from the file are not counted (no model ran for them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from vecdash.collections import Collection
from vecdash.db import relation_exists, require_writable

PRECISIONS_DDL = sql.SQL("""
CREATE TABLE IF NOT EXISTS vecdash_vector_precisions (
    collection text NOT NULL,
    table_oid  oid NOT NULL,
    precision  text NOT NULL,
    rows       bigint NOT NULL,
    PRIMARY KEY (collection, table_oid, precision)
)""")

_TABLE_OID = sql.SQL(
    "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %(schema)s AND c.relname = %(table)s)")


def ensure_vector_precisions(conn: psycopg.Connection[Any]) -> None:
    """Create the table when it is missing (idempotent, safe when racing)."""
    require_writable(conn)
    if relation_exists(conn, "vecdash_vector_precisions"):
        return
    try:
        with conn.transaction():
            conn.execute(PRECISIONS_DDL)
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
        pass  # another process created it at the same moment


def record_precisions(conn: psycopg.Connection[Any], collection: Collection,
                      rows_by_precision: Mapping[str, int]) -> None:
    """Add rows embedded per precision; call inside the batch's transaction (the table must
    exist: ensure_vector_precisions before the load)."""
    query = sql.SQL(
        "INSERT INTO vecdash_vector_precisions (collection, table_oid, precision, rows) "
        "VALUES (%(name)s, {oid}, %(precision)s, %(rows)s) "
        "ON CONFLICT (collection, table_oid, precision) "
        "DO UPDATE SET rows = vecdash_vector_precisions.rows + EXCLUDED.rows").format(
            oid=_TABLE_OID)
    for precision, rows in rows_by_precision.items():
        if rows > 0:
            conn.execute(query, {"name": collection.name, "schema": collection.schema_name,
                                 "table": collection.table_name, "precision": precision,
                                 "rows": rows})


def vector_precisions(conn: psycopg.Connection[Any], collection: Collection) -> dict[str, int]:
    """Rows of the collection embedded per precision ({} when none was recorded); reads only,
    so it works in read-only mode."""
    if not relation_exists(conn, "vecdash_vector_precisions"):
        return {}
    query = sql.SQL(
        "SELECT precision, rows FROM vecdash_vector_precisions "
        "WHERE collection = %(name)s AND table_oid = {oid} ORDER BY precision").format(
            oid=_TABLE_OID)
    rows = conn.execute(query, {"name": collection.name, "schema": collection.schema_name,
                                "table": collection.table_name}).fetchall()
    return {str(p): int(n) for p, n in rows}
