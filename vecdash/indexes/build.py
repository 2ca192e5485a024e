"""Building an index: one transaction with progress and cancel, optionally in a background thread.

Builds are a plain ``CREATE INDEX`` inside one transaction (not CONCURRENTLY): cancelling it, or the
server going away mid-build, rolls the whole transaction back, so no INVALID index is ever left
behind by vecdash. The cost is that writes to the table wait while the build runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from vecdash import db
from vecdash.collections import Collection, _free_index_name
from vecdash.config import Settings
from vecdash.db import relation_exists, require_writable
from vecdash.errors import Cancelled, ConnectionFailed, InvalidInput, VecdashError
from vecdash.indexes.catalog import BUILDS_DDL, BUILDS_TABLE, list_vector_indexes, row_count
from vecdash.indexes.specs import (
    DEFAULT_MAINTENANCE_WORK_MEM,
    IndexSpec,
    check_memory,
    check_parallel_workers,
    default_index_suffix,
    index_target,
    validate_spec,
)

_LOCK_CLASS = 0x7664  # advisory lock namespace for "an index build on this table"
# How often the server checks, during a build, that the client is still there (PostgreSQL 14+).
# Without it a build whose client was killed runs to its end, holding the table's lock.
CLIENT_CHECK_INTERVAL_MS = 1000


def _abort_when_client_gone(conn: psycopg.Connection[Any]) -> None:
    """SET LOCAL client_connection_check_interval in the build's transaction, where the server
    has it (PostgreSQL 14+ on a platform that can poll a socket for a hang-up)."""
    if conn.info.server_version < 140000:
        return
    try:
        with conn.transaction():  # a savepoint: a platform that refuses it leaves the build be
            conn.execute("SELECT set_config('client_connection_check_interval', %s, true)",
                         (f"{CLIENT_CHECK_INTERVAL_MS}ms",))
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.UndefinedObject):
        pass


class BuildOptions(TypedDict, total=False):
    """build_index's keyword arguments, passed through unchanged by IndexBuild and start_build."""

    maintenance_work_mem: str
    parallel_workers: int
    name: str | None


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


def _index_name_for(conn: psycopg.Connection[Any], collection: Collection, spec: IndexSpec,
                    asked: str | None) -> str:
    """The name the build uses: ``asked`` when it is free; else the derived name, or, when a
    relation that is not this same index holds it (a table called like it, another table's
    index), the derived name with a counter, so a build never fails on someone else's name."""
    if asked is not None:
        if relation_exists(conn, asked, schema=collection.schema_name):
            raise InvalidInput(f"A table or index named {asked} already exists in schema "
                               f"{collection.schema_name}. Pick another name.")
        return asked
    same = next((i for i in list_vector_indexes(conn, collection)
                 if i.method == spec.method and i.params == spec.params), None)
    if same is not None:
        raise InvalidInput(
            f"An index {same.name} with the same configuration ({spec.label}) already exists. "
            "Drop it first to rebuild, or change the parameters."
        )
    return _free_index_name(conn, collection.schema_name, collection.table_name,
                            default_index_suffix(collection, spec))


def build_index(
    conn: psycopg.Connection[Any],
    collection: Collection,
    spec: IndexSpec,
    *,
    maintenance_work_mem: str = DEFAULT_MAINTENANCE_WORK_MEM,
    parallel_workers: int = 0,
    name: str | None = None,
) -> BuildResult:
    """Build an HNSW or IVFFlat index for the collection's metric, in one transaction.

    ``maintenance_work_mem`` and ``max_parallel_maintenance_workers`` are SET LOCAL for the build.
    A second build on the same table at the same time is refused (advisory lock). Cancelling (see
    IndexBuild.cancel) or losing the server rolls the transaction back: no index is left behind.
    When the client goes away (killed, network gone) the server notices within
    CLIENT_CHECK_INTERVAL_MS and aborts the build instead of running it to the end.
    """
    require_writable(conn)
    memory = check_memory(maintenance_work_mem)
    check_parallel_workers(parallel_workers)
    rows = row_count(conn, collection)
    spec = validate_spec(spec, rows=rows)
    target = index_target(collection)
    name = _index_name_for(conn, collection, spec, name)
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
                         "set_config('max_parallel_maintenance_workers', %s, true), "
                         "set_config('statement_timeout', '0', true)",  # a build takes its time
                         (memory, str(parallel_workers)))
            _abort_when_client_gone(conn)
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
        **options: Unpack[BuildOptions],
    ) -> None:
        self.collection = collection
        self.spec = spec
        self.options = options
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
                self.result = build_index(conn, self.collection, self.spec, **self.options)
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


def start_build(settings: Settings, collection: Collection, spec: IndexSpec,
                **options: Unpack[BuildOptions]) -> IndexBuild:
    """Start a build in the background on a fresh connection made with ``settings``."""
    return IndexBuild(lambda: db.connect(settings), collection, spec, **options).start()
