"""The database: embedded server lifecycle, connections and the pool, schema bootstrap, server info.

Connections handed out by vecdash are in autocommit mode with pgvector's types registered and
``statement_timeout`` set (VECDASH_STATEMENT_TIMEOUT, see ``vecdash.statement_timeout``); every
data-layer function opens its own ``conn.transaction()`` where it needs one. In read-only mode each
connection sets ``default_transaction_read_only = on``; on the embedded server it also connects
as ``vecdash_reader``, a role that may only read, so privileges refuse writes whatever the session
sets. The server's lifecycle is in ``vecdash.embedded_server``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from vecdash import embedded_server
from vecdash.config import Settings
from vecdash.errors import ConnectionFailed, ExtensionMissing, InvalidInput, ReadOnlyError
from vecdash.redaction import redact
from vecdash.statement_timeout import check_statement_timeout

log = logging.getLogger(__name__)

MIN_PGVECTOR = (0, 7)
EMBEDDED_DB = "vecdash"
Source = Literal["embedded", "url", "libpq"]

READER_ROLE = "vecdash_reader"  # the embedded server's read-only role

REGISTRY_DDL = sql.SQL("""
CREATE TABLE IF NOT EXISTS vecdash_collections (
    name               text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    schema_name        text NOT NULL,
    table_name         text NOT NULL,
    id_column          text NOT NULL,
    content_column     text NOT NULL,
    title_column       text,
    category_column    text,
    metadata_column    text,
    created_at_column  text,
    external_id_column text,
    hash_column        text,
    tsv_column         text,
    vector_column      text NOT NULL,
    vector_type        text NOT NULL CHECK (vector_type IN ('vector', 'halfvec')),
    dimension          integer NOT NULL CHECK (dimension > 0),
    metric             text NOT NULL CHECK (metric IN ('cosine', 'l2', 'ip')),
    embedder           text NOT NULL,
    model              text NOT NULL,
    text_config        text NOT NULL DEFAULT 'english',
    managed            boolean NOT NULL,
    data_version       bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schema_name, table_name, vector_column)
)""")


@dataclass(frozen=True)
class Target:
    """Where the database is: a libpq connection string and how it was chosen."""

    conninfo: str
    source: Source


@dataclass(frozen=True)
class ServerInfo:
    source: Source
    host: str
    port: str
    database: str
    user: str
    postgres_version: str
    pgvector_version: str
    read_only: bool
    role_can_write: bool = False  # the role itself may write: read-only mode is only advisory

    @property
    def read_only_enforced(self) -> bool:
        """Read-only by the role's privileges, not only by the session's default."""
        return self.read_only and not self.role_can_write

    @property
    def label(self) -> str:
        """Host and database for display; never the password."""
        where = "embedded" if self.source == "embedded" else f"{self.host}:{self.port}"
        return f"{where} / {self.database}"


_MEMORY = re.compile(r"^\s*(\d+)\s*(kB|MB|GB|TB)\s*$")


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def embedded_server_settings(settings: Settings, *, memory: int | None = None) -> dict[str, str]:
    """postgresql.conf settings for the embedded server.

    PostgreSQL's default buffer cache (128MB) is sized for a small shared machine. A 100,000-row
    collection of 384-d vectors is about 250MB of table and 250MB of indexes, so with the default
    every keyword search re-reads its rows' pages from the operating system (about 20,000 page
    reads for a common word) and HNSW searches fall out of cache too. ``auto`` takes a quarter of
    the machine's memory, 128MB to 4GB (the usual advice for a dedicated server; Linux commits
    the memory only as pages are cached), and tells the planner half the memory is cache.
    """
    total = _physical_memory() if memory is None else memory
    value = settings.shared_buffers or "auto"
    out: dict[str, str] = {}
    if value.lower() == "auto":
        if total is None:
            return out
        mb = total // 2**20
        out["shared_buffers"] = f"{max(128, min(mb // 4, 4096))}MB"
    else:
        match = _MEMORY.match(value)
        if not match or int(match.group(1)) == 0:
            raise InvalidInput(
                f"VECDASH_SHARED_BUFFERS must be auto or an amount like 512MB or 2GB; got "
                f"{value!r}.")
        out["shared_buffers"] = f"{match.group(1)}{match.group(2)}"
    if total is not None:
        out["effective_cache_size"] = f"{max(512, total // 2**20 // 2)}MB"
    return out


def _embedded_port(settings: Settings) -> int | None:
    value = settings.embedded_port
    if not value:
        return None
    if not value.isdigit() or not 1024 <= int(value) <= 65535:
        raise InvalidInput(f"VECDASH_EMBEDDED_PORT must be empty (no TCP listener) or a port "
                           f"from 1024 to 65535; got {value!r}.")
    return int(value)


READER_SETUP = [
    sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"),
    sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on"),
    sql.SQL("REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC"),
    # Elsewhere PUBLIC could still make temporary tables and large objects: the reader (the
    # server's only other role) connects to the vecdash database alone.
    sql.SQL("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC"),
    sql.SQL("GRANT CONNECT ON DATABASE {db} TO {}"),
    # Large objects need no privilege on a table, so revoke the functions that create them
    # (granted to PUBLIC: the superuser, who bypasses privileges, keeps them).
    sql.SQL("REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), "
            "lo_from_bytea(oid, bytea), lo_import(text), lo_import(text, oid) FROM PUBLIC"),
    sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {su} GRANT SELECT ON TABLES TO {}"),
    sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {su} GRANT USAGE ON SCHEMAS TO {}"),
]


def _grant_reader(conn: psycopg.Connection[Any]) -> None:
    """Create (or re-check) the read-only role: CONNECT, USAGE and SELECT, nothing else; tables
    and schemas created later are readable through default privileges."""
    role = sql.Identifier(READER_ROLE)
    with conn.transaction():
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                            (READER_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        for statement in READER_SETUP:
            conn.execute(statement.format(role, db=sql.Identifier(EMBEDDED_DB),
                                          su=sql.Identifier(embedded_server.SUPERUSER)))
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', "
            "'information_schema') AND nspname NOT LIKE 'pg\\_%'").fetchall()
        for (schema,) in schemas:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), role))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                sql.Identifier(schema), role))


def start_embedded(settings: Settings, *, role: str = embedded_server.SUPERUSER) -> str:
    """Start (or reuse) the embedded PostgreSQL + pgvector in ``settings.data_dir``; return the
    conninfo of its vecdash database for ``role`` (the superuser, or READER_ROLE)."""
    conf = embedded_server_settings(settings)  # a bad setting is reported before starting
    server = embedded_server.start(settings.data_dir, conf, port=_embedded_port(settings))
    with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DB,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DB)))
    if role != embedded_server.SUPERUSER:
        with psycopg.connect(server.conninfo(EMBEDDED_DB), autocommit=True) as conn:
            ensure_schema(conn)  # the reader cannot create the extension or the registry
            _grant_reader(conn)
    return server.conninfo(EMBEDDED_DB, user=role)


def stop_embedded(settings: Settings) -> None:
    """This process stops using the embedded server of ``settings.data_dir``; the last process
    using it stops it."""
    embedded_server.stop(settings.data_dir)


def resolve_target(settings: Settings) -> Target:
    """Pick the database: VECDASH_DATABASE_URL, else libpq PG* variables, else the embedded one."""
    if settings.database_url:
        return Target(settings.database_url, "url")
    if settings.uses_libpq_env():
        return Target("", "libpq")
    role = READER_ROLE if settings.read_only else embedded_server.SUPERUSER
    return Target(start_embedded(settings, role=role), "embedded")


def check_conninfo(conninfo: str) -> None:
    """Raise ConnectionFailed (secrets redacted) when the URL or conninfo string cannot be parsed."""
    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        problem = redact(str(exc).strip(), [conninfo]).splitlines()[0]
        raise ConnectionFailed(
            f"VECDASH_DATABASE_URL is not a valid PostgreSQL URL ({problem}). Write it as "
            "postgresql://user:password@host:5432/dbname, with special characters in the "
            "password percent-encoded (% as %25, @ as %40, / as %2F), and IPv6 hosts in "
            "brackets ([::1])."
        ) from exc


def _describe_conninfo(conninfo: str) -> str:
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the configured server"
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def _configure(read_only: bool, statement_timeout: str) -> Any:
    def configure(conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        # One round trip per new connection: the session's timeout and read-only default (left
        # as the role's own when not read-only: a role set read-only by its owner stays so).
        conn.execute("SELECT set_config('statement_timeout', %s, false), "
                     "set_config('default_transaction_read_only', CASE WHEN %s THEN 'on' ELSE "
                     "current_setting('default_transaction_read_only') END, false)",
                     (statement_timeout, read_only))

    return configure


def ensure_schema(conn: psycopg.Connection[Any], *, read_only: bool = False) -> None:
    """Check pgvector (>= 0.7) and create the extension and the registry table when missing."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        available = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            raise ExtensionMissing(
                "pgvector is not installed on this PostgreSQL server. Install it "
                "(https://github.com/pgvector/pgvector#installation), use the pgvector/pgvector "
                "Docker image (docker compose up -d), or unset VECDASH_DATABASE_URL to use the "
                "embedded server."
            )
        if read_only:
            raise ReadOnlyError(
                "The pgvector extension is not enabled in this database and vecdash runs "
                "read-only. Run once without VECDASH_READ_ONLY, or CREATE EXTENSION vector."
            )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ExtensionMissing(
                "pgvector is available but not enabled, and this user may not enable it. Ask an "
                "administrator to run CREATE EXTENSION vector in this database."
            ) from exc
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert row is not None
    check_pgvector_version(str(row[0]))
    if not relation_exists(conn, "vecdash_collections"):
        if read_only:
            raise ReadOnlyError(
                "This database has no vecdash registry yet and vecdash runs read-only. Start it "
                "once without VECDASH_READ_ONLY to set it up."
            )
        conn.execute(REGISTRY_DDL)


def check_pgvector_version(version: str) -> None:
    """Refuse pgvector older than 0.7 (halfvec, iterative scans and binary COPY need it)."""
    if parse_version(version) < MIN_PGVECTOR:
        raise ExtensionMissing(
            f"pgvector {version} is too old; vecdash needs 0.7 or newer. Upgrade the package and "
            "run ALTER EXTENSION vector UPDATE."
        )


def parse_version(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _where(target: Target) -> str:
    return "the embedded server" if target.source == "embedded" else _describe_conninfo(
        target.conninfo)


def _first_connection(target: Target) -> psycopg.Connection[Any]:
    """Connect once, turning a malformed URL or an unreachable server into ConnectionFailed
    (secrets redacted)."""
    check_conninfo(target.conninfo)
    try:
        return psycopg.connect(target.conninfo, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"Cannot reach PostgreSQL at {_where(target)}: {redact(str(exc).strip(), [target.conninfo])}"
            ". Check that the server is running and VECDASH_DATABASE_URL is right, or unset it "
            "to use the embedded server."
        ) from exc


def open_pool(settings: Settings, *, timeout: float = 15.0) -> ConnectionPool[Any]:
    """Open the connection pool (and prepare the schema); raise ConnectionFailed if unreachable.
    Its connections cancel a statement after VECDASH_STATEMENT_TIMEOUT."""
    statement_timeout = check_statement_timeout(settings)
    target = resolve_target(settings)
    where = _where(target)
    with _first_connection(target) as conn:
        ensure_schema(conn, read_only=settings.read_only)
    pool: ConnectionPool[Any] = ConnectionPool(
        target.conninfo,
        min_size=1,
        max_size=settings.pool_size,
        kwargs={"autocommit": True},
        configure=_configure(settings.read_only, statement_timeout),
        name=f"vecdash-{target.source}",
        open=False,
    )
    pool.open()
    try:
        pool.wait(timeout=timeout)
    except PoolTimeout as exc:
        pool.close()
        raise ConnectionFailed(
            f"Connected to {where} once but the pool could not open connections within "
            f"{timeout:.0f}s. Check max_connections and the server log."
        ) from exc
    return pool


def connect(settings: Settings) -> psycopg.Connection[Any]:
    """One connection (autocommit, pgvector registered, schema ready, VECDASH_STATEMENT_TIMEOUT
    set) for the CLI and scripts."""
    timeout = check_statement_timeout(settings)
    conn = _first_connection(resolve_target(settings))
    ensure_schema(conn, read_only=settings.read_only)
    _configure(settings.read_only, timeout)(conn)
    return conn


def sibling_connection(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Another autocommit connection to the same server, database and user as ``conn`` (for work
    beside it, such as a second COPY stream), read-only when ``conn`` is and with its current
    statement timeout (none inside ``without_statement_timeout``)."""
    row = conn.execute("SELECT current_setting('default_transaction_read_only') = 'on' "
                       "OR current_user = %s OR pg_is_in_recovery(), "
                       "current_setting('statement_timeout')",
                       (READER_ROLE,)).fetchone()
    assert row is not None
    other = psycopg.connect(conn.info.dsn, password=conn.info.password or None, autocommit=True,
                            connect_timeout=10)
    _configure(bool(row[0]), str(row[1]))(other)
    return other


def outside_transaction(conn: psycopg.Connection[Any]) -> bool:
    """Whether each statement on ``conn`` commits on its own: autocommit, no transaction open
    (so a transaction begun here is its own, with its own isolation level, and a failed
    statement aborts nothing of the caller's)."""
    return conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def relation_exists(conn: psycopg.Connection[Any], name: str, schema: str | None = None) -> bool:
    """True when a table (or view, index...) of that name exists: in ``schema``, or where the
    search path finds it. The one way vecdash asks, so quoting and schemas behave the same."""
    qualified = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                       (qualified.as_string(conn),)).fetchone()
    return bool(row and row[0])


def is_read_only(conn: psycopg.Connection[Any]) -> bool:
    """True in read-only mode: the session's default, the embedded server's read-only role, or a
    server in recovery (a hot standby: a read replica refuses every write)."""
    row = conn.execute("SELECT current_setting('default_transaction_read_only') = 'on' "
                       "OR current_user = %s OR pg_is_in_recovery()", (READER_ROLE,)).fetchone()
    return bool(row and row[0])


def role_can_write(conn: psycopg.Connection[Any]) -> bool:
    """True when the connected role could write whatever the session sets: a superuser, or a role
    that may create in the database or change the registry or a collection's table."""
    row = conn.execute("SELECT rolsuper OR has_database_privilege(current_database(), 'CREATE') "
                       "FROM pg_roles WHERE rolname = current_user").fetchone()
    if row is None or row[0]:
        return True
    if not relation_exists(conn, "vecdash_collections"):
        return False
    row = conn.execute(
        "SELECT has_table_privilege('vecdash_collections', 'INSERT, UPDATE, DELETE, TRUNCATE') "
        "OR EXISTS (SELECT 1 FROM vecdash_collections WHERE COALESCE(has_table_privilege("
        "to_regclass(format('%I.%I', schema_name, table_name)), "
        "'INSERT, UPDATE, DELETE, TRUNCATE'), false))").fetchone()
    return bool(row and row[0])


def require_writable(conn: psycopg.Connection[Any]) -> None:
    """Raise ReadOnlyError before any write when the connection is read-only."""
    if is_read_only(conn):
        raise ReadOnlyError(
            "vecdash runs in read-only mode (VECDASH_READ_ONLY=1), so nothing can be changed. "
            "Restart without it to load, index or delete data."
        )


def server_info(conn: psycopg.Connection[Any]) -> ServerInfo:
    """Which server this is: host, database, user, PostgreSQL and pgvector versions."""
    row = conn.execute(
        "SELECT current_setting('server_version'), "
        "(SELECT extversion FROM pg_extension WHERE extname = 'vector'), current_user"
    ).fetchone()
    assert row is not None
    info = conn.info
    host = info.host or "localhost"
    source: Source = "url"
    if any(str(s.socket_dir) == host for s in embedded_server.running_servers().values()):
        source = "embedded"
    return ServerInfo(
        source=source,
        host=host,
        port=str(info.port),
        database=info.dbname,
        user=str(row[2]),
        postgres_version=str(row[0]).split(" ")[0],
        pgvector_version=str(row[1] or "missing"),
        read_only=is_read_only(conn),
        role_can_write=role_can_write(conn),
    )
