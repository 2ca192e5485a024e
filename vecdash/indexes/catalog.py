"""The vector indexes that exist on a collection's table: list, look up, find the INVALID ones,
drop; and the table where vecdash records how each of its builds went."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from vecdash import collections
from vecdash.collections import OPCLASS_SUFFIX, Collection
from vecdash.db import relation_exists, require_writable
from vecdash.errors import InvalidInput, NotFound
from vecdash.indexes.specs import HNSW_DEFAULTS, IVFFLAT_DEFAULT_LISTS
from vecdash.search import list_categories

BUILDS_TABLE = "vecdash_index_builds"  # how long each vecdash build took, and with what
BUILDS_DDL = sql.SQL("""
CREATE TABLE IF NOT EXISTS {} (
    schema_name          text NOT NULL,
    index_name           text NOT NULL,
    table_name           text NOT NULL,
    method               text NOT NULL,
    params               jsonb NOT NULL,
    build_seconds        double precision NOT NULL,
    maintenance_work_mem text NOT NULL,
    parallel_workers     integer NOT NULL,
    built_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, index_name)
)""").format(sql.Identifier(BUILDS_TABLE))


@dataclass(frozen=True)
class VectorIndex:
    name: str
    method: str
    opclass: str
    params: dict[str, int]
    size_bytes: int
    valid: bool
    definition: str
    halfvec_expression: bool
    build_seconds: float | None = None
    built_with: str = ""  # "maintenance_work_mem=..., workers=..." when vecdash built it

    @property
    def metric(self) -> str | None:
        for metric, suffix in OPCLASS_SUFFIX.items():
            if self.opclass.endswith(suffix):
                return metric
        return None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.method} " + ", ".join(
            f"{k}={v}" for k, v in self.params.items()) + ")"


def _reloptions(method: str, options: Sequence[str] | None) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in options or []:
        key, _, value = item.partition("=")
        if value.isdigit():
            found[key] = int(value)
    defaults = dict(HNSW_DEFAULTS) if method == "hnsw" else {"lists": IVFFLAT_DEFAULT_LISTS}
    return {k: found.get(k, v) for k, v in defaults.items()}


def _has_builds_table(conn: psycopg.Connection[Any]) -> bool:
    return relation_exists(conn, BUILDS_TABLE)


def list_vector_indexes(conn: psycopg.Connection[Any], collection: Collection) -> list[VectorIndex]:
    """The HNSW and IVFFlat indexes on the collection's table, valid or not, with parameters, size
    on disk and, when vecdash built them, how long the build took."""
    rows = conn.execute(
        """SELECT i.relname, am.amname, opc.opcname, i.reloptions,
                  coalesce((SELECT sum(pg_relation_size(p.relid))  -- a partitioned table's
                            FROM pg_partition_tree(i.oid) p), pg_relation_size(i.oid)),
                  ix.indisvalid, pg_get_indexdef(ix.indexrelid), ix.indexprs IS NOT NULL
           FROM pg_index ix
           JOIN pg_class i ON i.oid = ix.indexrelid
           JOIN pg_class t ON t.oid = ix.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
           JOIN pg_am am ON am.oid = i.relam
           JOIN pg_opclass opc ON opc.oid = ix.indclass[0]
           WHERE n.nspname = %s AND t.relname = %s AND am.amname IN ('hnsw', 'ivfflat')
           ORDER BY i.relname""",
        (collection.schema_name, collection.table_name),
    ).fetchall()
    builds: dict[str, tuple[float, str]] = {}
    if _has_builds_table(conn):
        for name, seconds, mem, workers in conn.execute(
            sql.SQL("SELECT index_name, build_seconds, maintenance_work_mem, parallel_workers "
                    "FROM {} WHERE schema_name = %s AND table_name = %s").format(
                sql.Identifier(BUILDS_TABLE)),
            (collection.schema_name, collection.table_name),
        ).fetchall():
            builds[name] = (float(seconds), f"maintenance_work_mem={mem}, workers={workers}")
    out = []
    for name, method, opclass, options, size, valid, definition, is_expr in rows:
        built = builds.get(name)
        out.append(VectorIndex(
            name=name, method=method, opclass=opclass, params=_reloptions(method, options),
            size_bytes=int(size), valid=bool(valid), definition=definition,
            halfvec_expression=bool(is_expr) and opclass.startswith("halfvec"),
            build_seconds=built[0] if built else None, built_with=built[1] if built else "",
        ))
    return out


def get_vector_index(conn: psycopg.Connection[Any], collection: Collection, name: str) -> VectorIndex:
    for index in list_vector_indexes(conn, collection):
        if index.name == name:
            return index
    raise NotFound(f"{collection.name!r} has no vector index named {name!r}. Pick one from the list "
                   "of its indexes.")


def invalid_indexes(conn: psycopg.Connection[Any], collection: Collection) -> list[VectorIndex]:
    """Vector indexes PostgreSQL marks INVALID (e.g. a cancelled CREATE INDEX CONCURRENTLY): they
    are maintained on every write but never used for queries. Drop them."""
    return [i for i in list_vector_indexes(conn, collection) if not i.valid]


def drop_index(conn: psycopg.Connection[Any], collection: Collection, name: str) -> None:
    """Drop one vector index of the collection (and vecdash's build record for it)."""
    require_writable(conn)
    get_vector_index(conn, collection, name)  # NotFound for anything else (never another table's)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = '10s'"))
        try:
            conn.execute(sql.SQL("DROP INDEX {}").format(
                sql.Identifier(collection.schema_name, name)))
        except psycopg.errors.LockNotAvailable as exc:
            raise InvalidInput(
                f"{name} is in use (an index build or a long query holds the table); try again "
                "when it has finished."
            ) from exc
        if _has_builds_table(conn):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE schema_name = %s AND index_name = %s").format(
                    sql.Identifier(BUILDS_TABLE)),
                (collection.schema_name, name),
            )


def categories(conn: psycopg.Connection[Any], collection: Collection, *,
               limit: int = 200) -> list[str]:
    """The collection's distinct categories (for the filter + LIMIT trap), most common first."""
    return list_categories(conn, collection, limit=limit)


def row_count(conn: psycopg.Connection[Any], collection: Collection) -> int:
    """The table's rows: counted on a small table, the planner's estimate on a large one (a
    count would read every row on each Index Lab load)."""
    return collections.row_count(conn, collection)[0]
