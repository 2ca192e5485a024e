"""Discovery: tables with a vector column that no collection uses yet, and attaching one as a
collection in place (registered, never copied or altered)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from vecdash.collections import Collection, get_collection, validate_metric, validate_name
from vecdash.db import require_writable
from vecdash.errors import InvalidInput, NotFound


@dataclass(frozen=True)
class DiscoveredTable:
    """A table with a vector column that is not registered yet, with its other columns."""

    schema_name: str
    table_name: str
    vector_column: str
    vector_type: str
    dimension: int | None
    columns: dict[str, str]  # name -> type, in table order
    primary_key: str | None

    def guess(self, *names: str, types: tuple[str, ...] = ("text", "character varying")) -> str | None:
        for n in names:
            if self.columns.get(n) in types:
                return n
        return None


def discover_tables(conn: psycopg.Connection[Any]) -> list[DiscoveredTable]:
    """Tables (and views) with a vector or halfvec column that no collection uses yet (vecdash's
    own vecdash_* tables excluded). A partitioned table is listed once, as its parent: its
    partitions are not tables of their own to vecdash."""
    rows = conn.execute(
        """SELECT n.nspname, c.relname, a.attname, t.typname, a.atttypmod
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_type t ON t.oid = a.atttypid
           WHERE t.typname IN ('vector', 'halfvec') AND c.relkind IN ('r', 'p', 'v', 'm')
             AND a.attnum > 0 AND NOT a.attisdropped
             AND NOT c.relispartition  -- a partitioned table is attached whole, by its parent
             AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND left(c.relname, 8) <> 'vecdash_'  -- vecdash's own tables (caches)
             AND NOT EXISTS (SELECT 1 FROM vecdash_collections r
                             WHERE r.schema_name = n.nspname AND r.table_name = c.relname
                               AND r.vector_column = a.attname)
           ORDER BY n.nspname, c.relname, a.attnum"""
    ).fetchall()
    found = []
    for schema, table, column, typname, typmod in rows:
        cols = conn.execute(
            """SELECT a.attname, format_type(a.atttypid, NULL)
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum""",
            (schema, table),
        ).fetchall()
        pk = conn.execute(
            """SELECT a.attname FROM pg_index ix
               JOIN pg_class c ON c.oid = ix.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(ix.indkey)
               WHERE n.nspname = %s AND c.relname = %s AND ix.indisprimary
                 AND array_length(ix.indkey, 1) = 1""",
            (schema, table),
        ).fetchone()
        found.append(
            DiscoveredTable(
                schema_name=schema,
                table_name=table,
                vector_column=column,
                vector_type=typname,
                dimension=int(typmod) if typmod and typmod > 0 else None,
                columns={str(k): str(v) for k, v in cols},
                primary_key=str(pk[0]) if pk else None,
            )
        )
    return found


def guess_embedder(dimension: int) -> tuple[str, str]:
    """The embedder and model that most likely produced vectors of this dimension."""
    return {
        384: ("local", "all-MiniLM-L6-v2"),
        1536: ("openai", "text-embedding-3-small"),
        3072: ("openai", "text-embedding-3-large"),
    }.get(dimension, ("unknown", "unknown"))


def attach_table(
    conn: psycopg.Connection[Any],
    name: str,
    *,
    schema: str,
    table: str,
    vector_column: str,
    content_column: str,
    id_column: str | None = None,
    title_column: str | None = None,
    category_column: str | None = None,
    metadata_column: str | None = None,
    created_at_column: str | None = None,
    metric: str = "cosine",
    embedder: str | None = None,
    model: str | None = None,
    text_config: str = "english",
) -> Collection:
    """Register an existing table as a collection, in place: nothing is copied or altered."""
    require_writable(conn)
    validate_name(name)
    metric = validate_metric(metric)
    candidates = [
        t for t in discover_tables(conn)
        if (t.schema_name, t.table_name, t.vector_column) == (schema, table, vector_column)
    ]
    if not candidates:
        raise NotFound(
            f"No unregistered table {schema}.{table} with a vector column {vector_column!r} was "
            "found. Check the names (discover_tables lists what can be attached)."
        )
    found = candidates[0]
    id_column = id_column or found.primary_key
    if not id_column:
        raise InvalidInput(
            f"{schema}.{table} has no single-column primary key; name the id column to use."
        )
    for role, col in (("id", id_column), ("content", content_column), ("title", title_column),
                      ("category", category_column), ("metadata", metadata_column),
                      ("created_at", created_at_column)):
        if col is not None and col not in found.columns:
            raise InvalidInput(
                f"{schema}.{table} has no column {col!r} (given as the {role} column). Columns: "
                f"{', '.join(found.columns)}."
            )
    dimension = found.dimension
    if dimension is None:
        row = conn.execute(
            sql.SQL("SELECT vector_dims({}) FROM {} WHERE {} IS NOT NULL LIMIT 1").format(
                sql.Identifier(vector_column), sql.Identifier(schema, table),
                sql.Identifier(vector_column),
            )
        ).fetchone()
        if row is None:
            raise InvalidInput(
                f"{schema}.{table}.{vector_column} has no declared dimension and no rows to read "
                "it from. Declare it (ALTER COLUMN ... TYPE vector(N)) or load rows first."
            )
        dimension = int(row[0])
    guessed = guess_embedder(dimension)
    conn.execute(
        """INSERT INTO vecdash_collections
           (name, schema_name, table_name, id_column, content_column, title_column,
            category_column, metadata_column, created_at_column, vector_column, vector_type,
            dimension, metric, embedder, model, text_config, managed)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false)
           ON CONFLICT (name) DO NOTHING""",
        (name, schema, table, id_column, content_column, title_column, category_column,
         metadata_column, created_at_column, vector_column, found.vector_type, dimension, metric,
         embedder or guessed[0], model or guessed[1], text_config),
    )
    attached = get_collection(conn, name)
    if (attached.schema_name, attached.table_name) != (schema, table):
        raise InvalidInput(f"A collection named {name!r} already exists. Pick another name.")
    return attached
