"""Vector indexes: build (with progress and cancel), drop, inspect, and measure recall vs latency.

Builds are a plain ``CREATE INDEX`` inside one transaction (not CONCURRENTLY): cancelling it, or the
server going away mid-build, rolls the whole transaction back, so no INVALID index is ever left
behind by vecdash. The cost is that writes to the table wait while the build runs. Indexes left
INVALID by anything else (a cancelled CREATE INDEX CONCURRENTLY, say) are listed and can be dropped.

Measurements run the sample queries one by one at a given setting (hnsw.ef_search, ivfflat.probes,
iterative scan, all SET LOCAL inside the measuring transaction) and compare each result with the
exact top-k, computed with index scans switched off and cached until the collection changes.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from vecdash import db
from vecdash.collections import (
    MAX_HALFVEC_DIM,
    MAX_VECTOR_DIM,
    OPCLASS_SUFFIX,
    Collection,
    data_version,
    index_name,
)
from vecdash.config import Settings
from vecdash.db import require_writable
from vecdash.errors import Cancelled, ConnectionFailed, InvalidInput, NotFound, VecdashError
from vecdash.search import check_k, query_vector

Method = Literal["hnsw", "ivfflat"]
METHODS: tuple[Method, ...] = ("hnsw", "ivfflat")
ITERATIVE_MODES: dict[str, tuple[str, ...]] = {
    "hnsw": ("off", "relaxed_order", "strict_order"),
    "ivfflat": ("off", "relaxed_order"),
}
EF_SEARCH_SWEEP = (10, 20, 40, 80, 160, 320)
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64}
IVFFLAT_DEFAULT_LISTS = 100  # pgvector's default when an index has no lists option
M_RANGE = (2, 100)
EF_CONSTRUCTION_RANGE = (4, 1000)
LISTS_RANGE = (1, 32768)
EF_SEARCH_RANGE = (1, 1000)
PROBES_RANGE = (1, 32768)
MAX_PARALLEL_WORKERS = 64
BUILDS_TABLE = "vecdash_index_builds"
_LOCK_CLASS = 0x7664  # advisory lock namespace for "an index build on this table"
_MEM = re.compile(r"^\s*(\d+)\s*(kB|MB|GB)\s*$")
_VECTOR_LITERAL = re.compile(r"'\[([^\]]{80,})\]'")

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


# --------------------------------------------------------------------------------------------
# What to build and how it is spelled


@dataclass(frozen=True)
class IndexSpec:
    """An index configuration: HNSW (m, ef_construction) or IVFFlat (lists)."""

    method: str
    m: int = HNSW_DEFAULTS["m"]
    ef_construction: int = HNSW_DEFAULTS["ef_construction"]
    lists: int | None = None  # None: default_lists(rows)

    @property
    def params(self) -> dict[str, int]:
        if self.method == "hnsw":
            return {"m": self.m, "ef_construction": self.ef_construction}
        return {"lists": int(self.lists or 1)}

    @property
    def label(self) -> str:
        return f"{self.method} " + ", ".join(f"{k}={v}" for k, v in self.params.items())


def default_lists(rows: int) -> int:
    """pgvector's advice: rows / 1000 up to 1M rows, sqrt(rows) above; at least 1."""
    if rows > 1_000_000:
        return max(1, int(math.sqrt(rows)))
    return max(1, rows // 1000)


def probes_sweep(lists: int) -> list[int]:
    """1, 2, 4, 8, ... up to ``lists`` (lists itself included: probing every list is exact)."""
    values = [1]
    while values[-1] * 2 < lists:
        values.append(values[-1] * 2)
    if lists > 1:
        values.append(lists)
    return values


def validate_spec(spec: IndexSpec, *, rows: int) -> IndexSpec:
    """Check an index configuration against pgvector's limits and the table; fill in lists."""
    if spec.method not in METHODS:
        raise InvalidInput(f"Unknown index type {spec.method!r}; choose hnsw or ivfflat.")
    if spec.method == "hnsw":
        lo, hi = M_RANGE
        if not isinstance(spec.m, int) or not lo <= spec.m <= hi:
            raise InvalidInput(f"HNSW m must be between {lo} and {hi} (16 is the default); got "
                               f"{spec.m!r}.")
        lo, hi = EF_CONSTRUCTION_RANGE
        if not isinstance(spec.ef_construction, int) or not lo <= spec.ef_construction <= hi:
            raise InvalidInput(f"HNSW ef_construction must be between {lo} and {hi} (64 is the "
                               f"default); got {spec.ef_construction!r}.")
        if spec.ef_construction < 2 * spec.m:
            raise InvalidInput(
                f"HNSW ef_construction ({spec.ef_construction}) must be at least 2 x m "
                f"({2 * spec.m}): each node keeps 2m neighbours on the bottom layer, chosen from "
                "ef_construction candidates. Raise ef_construction or lower m."
            )
        return spec
    if rows == 0:
        raise InvalidInput(
            "The collection has no rows. IVFFlat learns its lists (k-means centres) from the data "
            "present at build time, so build it after loading the data."
        )
    lists = spec.lists if spec.lists is not None else default_lists(rows)
    lo, hi = LISTS_RANGE
    if not isinstance(lists, int) or not lo <= lists <= hi:
        raise InvalidInput(f"IVFFlat lists must be between {lo} and {hi}; got {lists!r}.")
    if lists > rows:
        raise InvalidInput(
            f"IVFFlat lists ({lists}) is larger than the number of rows ({rows}): some lists would "
            f"be empty and recall poor. Use at most {rows} (about {default_lists(rows)} is "
            "advised: rows / 1000, sqrt(rows) above a million)."
        )
    return replace(spec, lists=lists)


def check_memory(value: str) -> str:
    """A maintenance_work_mem value like '512MB' or '2GB' (64kB to 64GB)."""
    match = _MEM.match(value or "")
    if not match:
        raise InvalidInput(
            f"maintenance_work_mem {value!r} is not a memory size; write e.g. '256MB' or '2GB'."
        )
    amount, unit = int(match.group(1)), match.group(2)
    kb = amount * {"kB": 1, "MB": 1024, "GB": 1024 * 1024}[unit]
    if not 1024 <= kb <= 64 * 1024 * 1024:
        raise InvalidInput(f"maintenance_work_mem must be between 1MB and 64GB; got {value!r}.")
    return f"{amount}{unit}"


@dataclass(frozen=True)
class IndexTarget:
    """What an index on this collection indexes: the column or a halfvec expression, the operator
    class, the type query vectors are cast to, and why an expression is used (if it is)."""

    expression: sql.Composable
    opclass: str
    cast: sql.Composable
    halfvec_expression: bool
    reason: str


def index_target(collection: Collection, *, halfvec_expression: bool | None = None) -> IndexTarget:
    """The column (or expression) and operator class an index for this collection uses.

    pgvector indexes ``vector`` up to 2,000 dimensions and ``halfvec`` up to 4,000. vecdash stores
    halfvec itself above 2,000, but an attached table may hold vector(d > 2000): then the index is
    built on the expression ``(embedding::halfvec(d))`` and queries must use the same cast.
    """
    c = collection
    column = sql.Identifier(c.vector_column)
    suffix = OPCLASS_SUFFIX[c.metric]
    if halfvec_expression is None:
        halfvec_expression = c.vector_type == "vector" and c.dimension > MAX_VECTOR_DIM
    if c.dimension > MAX_HALFVEC_DIM:
        raise InvalidInput(
            f"{c.name!r} has {c.dimension} dimensions; pgvector indexes at most {MAX_HALFVEC_DIM} "
            "(as halfvec). Search it exactly, or reduce the dimension (e.g. text-embedding-3 "
            "with dimensions=1536)."
        )
    if halfvec_expression:
        half = sql.SQL("halfvec({})").format(sql.Literal(c.dimension))
        return IndexTarget(
            expression=sql.SQL("({}::{})").format(column, half),
            opclass=f"halfvec_{suffix}",
            cast=half,
            halfvec_expression=True,
            reason=(
                f"{c.dimension} dimensions is above pgvector's 2,000-dimension limit for indexing "
                f"vector, so the index is built on embedding::halfvec({c.dimension}) (16-bit "
                "floats, indexable up to 4,000 dimensions) and queries use the same cast."
            ),
        )
    return IndexTarget(
        expression=column,
        opclass=f"{c.vector_type}_{suffix}",
        cast=c.vector_cast,
        halfvec_expression=False,
        reason="",
    )


def default_index_name(collection: Collection, spec: IndexSpec) -> str:
    params = "_".join(f"{k}{v}" for k, v in spec.params.items()).replace("ef_construction", "efc")
    return index_name(collection.table_name, f"{collection.vector_column}_{spec.method}_{params}")


# --------------------------------------------------------------------------------------------
# Inspecting and dropping


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
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (BUILDS_TABLE,)).fetchone()
    return bool(row and row[0])


def list_vector_indexes(conn: psycopg.Connection[Any], collection: Collection) -> list[VectorIndex]:
    """The HNSW and IVFFlat indexes on the collection's table, valid or not, with parameters, size
    on disk and, when vecdash built them, how long the build took."""
    rows = conn.execute(
        """SELECT i.relname, am.amname, opc.opcname, i.reloptions, pg_relation_size(i.oid),
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
    if not collection.category_column:
        return []
    col = sql.Identifier(collection.category_column)
    rows = conn.execute(
        sql.SQL("SELECT {col}::text FROM {table} WHERE {col} IS NOT NULL GROUP BY 1 "
                "ORDER BY count(*) DESC, 1 LIMIT %s").format(col=col, table=collection.table),
        (limit,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def row_count(conn: psycopg.Connection[Any], collection: Collection) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(collection.table)).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------------
# Building


@dataclass(frozen=True)
class BuildResult:
    index: str
    spec: IndexSpec
    seconds: float
    maintenance_work_mem: str
    parallel_workers: int
    halfvec_reason: str


@dataclass(frozen=True)
class BuildProgress:
    """One row of pg_stat_progress_create_index for the build."""

    phase: str
    blocks_done: int
    blocks_total: int
    tuples_done: int
    tuples_total: int

    @property
    def fraction(self) -> float | None:
        if self.tuples_total > 0:
            return min(1.0, self.tuples_done / self.tuples_total)
        if self.blocks_total > 0:
            return min(1.0, self.blocks_done / self.blocks_total)
        return None


def build_index(
    conn: psycopg.Connection[Any],
    collection: Collection,
    spec: IndexSpec,
    *,
    maintenance_work_mem: str = "512MB",
    parallel_workers: int = 0,
    name: str | None = None,
) -> BuildResult:
    """Build an HNSW or IVFFlat index for the collection's metric, in one transaction.

    ``maintenance_work_mem`` and ``max_parallel_maintenance_workers`` are SET LOCAL for the build.
    A second build on the same table at the same time is refused (advisory lock). Cancelling (see
    IndexBuild.cancel) or losing the server rolls the transaction back: no index is left behind.
    """
    require_writable(conn)
    memory = check_memory(maintenance_work_mem)
    if not isinstance(parallel_workers, int) or not 0 <= parallel_workers <= MAX_PARALLEL_WORKERS:
        raise InvalidInput(f"Parallel maintenance workers must be between 0 and "
                           f"{MAX_PARALLEL_WORKERS}; got {parallel_workers!r}.")
    rows = row_count(conn, collection)
    spec = validate_spec(spec, rows=rows)
    target = index_target(collection)
    name = name or default_index_name(collection, spec)
    existing = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (collection.schema_name, name),
    ).fetchone()
    if existing is not None:
        raise InvalidInput(
            f"An index named {name} already exists (the same configuration was built before). "
            "Drop it first to rebuild, or change the parameters."
        )
    conn.execute(BUILDS_DDL)
    ddl = sql.SQL(
        "CREATE INDEX {name} ON {table} USING {method} ({expr} {opclass}) WITH ({opts})"
    ).format(
        name=sql.Identifier(name),
        table=collection.table,
        method=sql.SQL({"hnsw": "hnsw", "ivfflat": "ivfflat"}[spec.method]),
        expr=target.expression,
        opclass=sql.Identifier(target.opclass),
        opts=sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v))
            for k, v in spec.params.items()
        ),
    )
    lock_key = f"{collection.schema_name}.{collection.table_name}"
    try:
        with conn.transaction():
            got = conn.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                               (_LOCK_CLASS, lock_key)).fetchone()
            if not got or not got[0]:
                raise InvalidInput(
                    f"Another index build is already running on {collection.name!r}. Wait for it "
                    "to finish (or cancel it) before starting the next one."
                )
            conn.execute("SELECT set_config('maintenance_work_mem', %s, true), "
                         "set_config('max_parallel_maintenance_workers', %s, true)",
                         (memory, str(parallel_workers)))
            started = time.perf_counter()
            conn.execute(ddl)
            seconds = time.perf_counter() - started
            conn.execute(
                sql.SQL("""INSERT INTO {} (schema_name, index_name, table_name, method, params,
                                           build_seconds, maintenance_work_mem, parallel_workers)
                           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                           ON CONFLICT (schema_name, index_name) DO UPDATE SET
                             table_name = EXCLUDED.table_name, method = EXCLUDED.method,
                             params = EXCLUDED.params, build_seconds = EXCLUDED.build_seconds,
                             maintenance_work_mem = EXCLUDED.maintenance_work_mem,
                             parallel_workers = EXCLUDED.parallel_workers, built_at = now()
                        """).format(sql.Identifier(BUILDS_TABLE)),
                (collection.schema_name, name, collection.table_name, spec.method,
                 Jsonb(spec.params), seconds, memory, parallel_workers),
            )
    except psycopg.errors.QueryCanceled as exc:
        raise Cancelled(
            f"The {spec.label} build was cancelled. It ran in one transaction, which was rolled "
            "back: no index (valid or invalid) was left behind and the collection is unchanged."
        ) from exc
    except psycopg.errors.DuplicateTable as exc:
        raise InvalidInput(f"An index named {name} already exists; drop it first to rebuild.") from exc
    except (psycopg.errors.ProgramLimitExceeded, psycopg.errors.OutOfMemory) as exc:
        raise InvalidInput(
            f"PostgreSQL could not build the index: {str(exc).strip()}. Try a larger "
            "maintenance_work_mem, smaller m, or fewer lists."
        ) from exc
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"The connection to PostgreSQL was lost during the build ({str(exc).strip()}); the "
            "server may have restarted. The build ran in one transaction, so nothing was left "
            "behind: check the index list (invalid indexes can be dropped) and build again."
        ) from exc
    return BuildResult(name, spec, seconds, memory, parallel_workers, target.reason)


def build_progress(conn: psycopg.Connection[Any], pid: int) -> BuildProgress | None:
    """The progress row pg_stat_progress_create_index shows for backend ``pid``, if any."""
    row = conn.execute(
        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total "
        "FROM pg_stat_progress_create_index WHERE pid = %s",
        (pid,),
    ).fetchone()
    if row is None:
        return None
    return BuildProgress(str(row[0]), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0),
                         int(row[4] or 0))


def cancel_backend(conn: psycopg.Connection[Any], pid: int) -> bool:
    """Ask PostgreSQL to cancel what backend ``pid`` is running (pg_cancel_backend)."""
    row = conn.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()
    return bool(row and row[0])


class IndexBuild:
    """An index build running in a background thread on its own connection.

    Poll ``progress(conn)`` from another connection; ``cancel(conn)`` cancels it; ``done``,
    ``result`` and ``error`` tell how it ended; ``wait()`` blocks and returns or raises.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        collection: Collection,
        spec: IndexSpec,
        *,
        maintenance_work_mem: str = "512MB",
        parallel_workers: int = 0,
        name: str | None = None,
    ) -> None:
        self.collection = collection
        self.spec = spec
        self.maintenance_work_mem = maintenance_work_mem
        self.parallel_workers = parallel_workers
        self.name = name
        self.pid: int | None = None
        self.result: BuildResult | None = None
        self.error: VecdashError | None = None
        self.started_at = time.monotonic()
        self.cancel_requested = False
        self._connect = connect
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vecdash-index-build", daemon=True)

    def start(self) -> IndexBuild:
        self._thread.start()
        self._ready.wait(timeout=30)
        return self

    def _run(self) -> None:
        try:
            with self._connect() as conn:
                self.pid = int(conn.info.backend_pid)
                self._ready.set()
                self.result = build_index(
                    conn, self.collection, self.spec,
                    maintenance_work_mem=self.maintenance_work_mem,
                    parallel_workers=self.parallel_workers, name=self.name,
                )
        except VecdashError as exc:
            self.error = exc
        except psycopg.Error as exc:
            self.error = ConnectionFailed(f"The index build failed: {str(exc).strip()}.")
        finally:
            self._ready.set()

    @property
    def done(self) -> bool:
        return self._ready.is_set() and not self._thread.is_alive()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def progress(self, conn: psycopg.Connection[Any]) -> BuildProgress | None:
        return build_progress(conn, self.pid) if self.pid is not None and not self.done else None

    def cancel(self, conn: psycopg.Connection[Any]) -> bool:
        self.cancel_requested = True
        if self.pid is None or self.done:
            return False
        return cancel_backend(conn, self.pid)

    def wait(self, timeout: float | None = None) -> BuildResult:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise VecdashError("The index build is still running.")
        return self.result


def start_build(
    settings: Settings,
    collection: Collection,
    spec: IndexSpec,
    *,
    maintenance_work_mem: str = "512MB",
    parallel_workers: int = 0,
    name: str | None = None,
) -> IndexBuild:
    """Start a build in the background on a fresh connection made with ``settings``."""
    return IndexBuild(
        lambda: db.connect(settings), collection, spec,
        maintenance_work_mem=maintenance_work_mem, parallel_workers=parallel_workers, name=name,
    ).start()


# --------------------------------------------------------------------------------------------
# Sample queries, exact ground truth, measurements


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


def stored_vector_queries(conn: psycopg.Connection[Any], collection: Collection, *,
                          n: int = 50) -> SampleQueries:
    """``n`` stored vectors (a fixed pseudo-random pick by id) used as queries. Each query's own
    row is excluded from its results, so recall measures finding the *other* neighbours."""
    c = collection
    rows = conn.execute(
        sql.SQL("SELECT {id}::text, {vec}::real[] FROM {table} WHERE {vec} IS NOT NULL "
                "ORDER BY md5({id}::text) LIMIT %s").format(
            id=sql.Identifier(c.id_column), vec=sql.Identifier(c.vector_column), table=c.table),
        (n,),
    ).fetchall()
    if not rows:
        raise InvalidInput(f"{c.name!r} has no rows to use as sample queries. Load data first.")
    vectors = np.stack([query_vector(c, np.asarray(r[1], dtype=np.float32)) for r in rows])
    ids = [str(r[0]) for r in rows]
    return SampleQueries(vectors.astype(np.float32), [f"row {i}" for i in ids],
                         f"{len(rows)} stored vectors used as queries (each query's own row "
                         "excluded from its results)", ids)


@dataclass(frozen=True)
class Setting:
    """Search-time settings for one measurement."""

    ef_search: int = 40
    probes: int = 10
    iterative_scan: str = "off"


def check_setting(setting: Setting, method: str | None = None) -> Setting:
    lo, hi = EF_SEARCH_RANGE
    if not isinstance(setting.ef_search, int) or not lo <= setting.ef_search <= hi:
        raise InvalidInput(f"hnsw.ef_search must be between {lo} and {hi}; got "
                           f"{setting.ef_search!r}.")
    lo, hi = PROBES_RANGE
    if not isinstance(setting.probes, int) or not lo <= setting.probes <= hi:
        raise InvalidInput(f"ivfflat.probes must be between {lo} and {hi}; got {setting.probes!r}.")
    modes = ITERATIVE_MODES.get(method or "hnsw", ITERATIVE_MODES["hnsw"])
    if setting.iterative_scan not in modes:
        raise InvalidInput(f"Iterative scan mode {setting.iterative_scan!r} is not available for "
                           f"{method or 'hnsw'}; choose one of {', '.join(modes)}.")
    return setting


def _apply_setting(conn: psycopg.Connection[Any], setting: Setting, method: str | None) -> None:
    conn.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                 "set_config('ivfflat.probes', %s, true)",
                 (str(setting.ef_search), str(setting.probes)))
    if setting.iterative_scan != "off" and method in ITERATIVE_MODES:
        try:
            conn.execute("SELECT set_config(%s, %s, true)",
                         (f"{method}.iterative_scan", setting.iterative_scan))
        except psycopg.errors.UndefinedObject as exc:
            raise InvalidInput("Iterative index scans need pgvector 0.8 or newer; set it to off "
                               "or upgrade pgvector.") from exc


def _search_sql(collection: Collection, *, halfvec_expression: bool,
                category: bool = False) -> sql.Composed:
    c = collection
    target = index_target(c, halfvec_expression=halfvec_expression)
    where = sql.SQL("WHERE {} = %(cat)s ").format(c.column(c.category_column)) if category else (
        sql.SQL(""))
    return sql.SQL("SELECT {id}::text FROM {table} {where}ORDER BY {expr} {op} %(q)s::{cast} "
                   "LIMIT %(k)s").format(
        id=sql.Identifier(c.id_column), table=c.table, where=where, expr=target.expression,
        op=c.distance_operator, cast=target.cast)


def _run_queries(conn: psycopg.Connection[Any], query: sql.Composed, queries: SampleQueries,
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
    query = _search_sql(collection, halfvec_expression=False)
    with conn.transaction():
        conn.execute("SELECT set_config('enable_indexscan', 'off', true), "
                     "set_config('enable_bitmapscan', 'off', true), "
                     "set_config('enable_indexonlyscan', 'off', true)")
        ids, seconds = _run_queries(conn, query, queries, k)
    truth = GroundTruth(ids, seconds, version)
    with _truth_lock:
        _truth_cache[key] = truth
        while len(_truth_cache) > _TRUTH_CACHE_SIZE:
            _truth_cache.popitem(last=False)
    return truth


def recall_at_k(found: Sequence[Sequence[str]], exact: Sequence[Sequence[str]], k: int) -> float:
    """Mean over queries of |found[:k] ∩ exact[:k]| / min(k, len(exact)) (1.0 when exact is empty)."""
    if len(found) != len(exact):
        raise ValueError("found and exact must have one entry per query")
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


def _plan_text(conn: psycopg.Connection[Any], query: sql.Composed, params: dict[str, Any],
               *, analyze: bool) -> str:
    prefix = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") if analyze else sql.SQL("EXPLAIN ")
    rows = conn.execute(prefix + query, params).fetchall()
    return "\n".join(_shorten_vectors(str(r[0])) for r in rows)


def _shorten_vectors(line: str) -> str:
    """Plans print the query vector in full; keep its first values and its length."""

    def short(match: re.Match[str]) -> str:
        values = match.group(1).split(",")
        return "'[" + ",".join(values[:3]) + f",… {len(values)} values]'"

    return _VECTOR_LITERAL.sub(short, line)


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


class _Rollback(Exception):
    pass


def measure(
    conn: psycopg.Connection[Any],
    collection: Collection,
    queries: SampleQueries,
    *,
    index: str,
    setting: Setting,
    k: int = 10,
) -> Measurement:
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
    query = _search_sql(collection, halfvec_expression=chosen.halfvec_expression)
    found: list[list[str]] = []
    seconds = np.zeros(0)
    hidden: list[str] = []
    plan = ""
    try:
        with conn.transaction():
            hidden = _hide_others(conn, collection, chosen, indexes)
            conn.execute("SELECT set_config('enable_seqscan', 'off', true)")
            _apply_setting(conn, setting, chosen.method)
            plan = _plan_text(conn, query, {"q": queries.vectors[0], "k": k}, analyze=False)
            found, seconds = _run_queries(conn, query, queries, k)
            raise _Rollback
    except _Rollback:
        pass
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


# --------------------------------------------------------------------------------------------
# EXPLAIN and the common traps


@dataclass(frozen=True)
class Explained:
    plan: str
    index_used: str | None
    rows: int
    warnings: list[str]


def explain_query(
    conn: psycopg.Connection[Any],
    collection: Collection,
    vector: Sequence[float] | np.ndarray,
    *,
    k: int = 10,
    setting: Setting | None = None,
    category: str | None = None,
) -> Explained:
    """EXPLAIN (ANALYZE, BUFFERS) of one top-k query as the planner really runs it (no index is
    forced or hidden), with plain-language warnings for the common traps."""
    check_k(k)
    setting = setting or Setting()
    check_setting(setting)
    vec = query_vector(collection, vector)
    indexes = list_vector_indexes(conn, collection)
    valid = [i for i in indexes if i.valid]
    rows_total = row_count(conn, collection)
    if category is not None and not collection.category_column:
        raise InvalidInput(f"{collection.name!r} has no category column to filter on.")
    uses_expr = any(i.halfvec_expression for i in valid) and not any(
        not i.halfvec_expression for i in valid)
    query = _search_sql(collection, halfvec_expression=uses_expr, category=category is not None)
    params: dict[str, Any] = {"q": vec, "k": k, "cat": category}
    with conn.transaction():
        for method in ("hnsw", "ivfflat"):
            _apply_setting(conn, replace(setting, iterative_scan=(
                setting.iterative_scan if setting.iterative_scan in ITERATIVE_MODES[method]
                else "off")), method)
        plan = _plan_text(conn, query, params, analyze=True)
        returned = len(conn.execute(query, params).fetchall())
    used = next((i.name for i in indexes if i.name in plan), None)
    used_index = next((i for i in indexes if i.name == used), None)
    warnings: list[str] = []
    matching = [i for i in valid if i.metric == collection.metric]
    for i in valid:
        if i.metric != collection.metric:
            warnings.append(
                f"{i.name} is built with {i.opclass}, which serves the "
                f"{i.metric} operator, but {collection.name!r} is searched by {collection.metric} "
                f"distance ({collection.distance_operator.as_string()}). The planner can never use "
                f"this index for these queries: rebuild it with "
                f"{index_target(collection).opclass}."
            )
    for i in indexes:
        if not i.valid:
            warnings.append(f"{i.name} is INVALID (an interrupted concurrent build left it): it "
                            "slows every write and is never used. Drop it.")
    if used is None and matching:
        warnings.append(
            f"The planner did not use the vector index {matching[0].name} for this query (see the "
            f"plan: it read the table's {rows_total} rows another way and sorted them by "
            "distance). On a small table, or with a selective filter, that is cheaper and exact; "
            "on a large table check that the query orders by the indexed expression with the "
            "index's operator and has a LIMIT."
        )
    if used is None and not valid:
        warnings.append("There is no usable vector index, so every query scans the whole table "
                        "(exact, but slower as the table grows). Build one below.")
    if category is not None and returned < k:
        if used_index is not None and setting.iterative_scan == "off":
            limit = (f"hnsw.ef_search = {setting.ef_search}" if used_index.method == "hnsw"
                     else f"ivfflat.probes = {setting.probes}")
            warnings.append(
                f"The filter returned {returned} of the {k} rows asked for. The index hands back "
                f"only its candidates ({limit}) and the filter is applied after, dropping those "
                "outside the category. Turn on iterative scan (relaxed_order), raise "
                "ef_search / probes, or add a partial index for the category."
            )
        else:
            warnings.append(f"The filter returned {returned} of the {k} rows asked for: the "
                            "category has fewer matching rows.")
    if used_index is not None and used_index.method == "hnsw" and setting.ef_search < k:
        warnings.append(f"hnsw.ef_search ({setting.ef_search}) is below k ({k}): an HNSW scan "
                        f"returns at most ef_search rows, so you get at most {setting.ef_search}.")
    for i in valid:
        if i.method == "ivfflat" and i.params["lists"] > rows_total:
            warnings.append(
                f"{i.name} has {i.params['lists']} lists but the table has {rows_total} rows: "
                "most lists are empty and recall suffers. Rebuild with about "
                f"{default_lists(rows_total)} lists (rows / 1000)."
            )
        if (used_index is not None and used_index.name == i.name and i.method == "ivfflat"
                and setting.probes > i.params["lists"]):
            warnings.append(f"ivfflat.probes ({setting.probes}) is above the index's lists "
                            f"({i.params['lists']}): every list is searched, as slow as exact.")
    return Explained(plan, used, returned, warnings)
