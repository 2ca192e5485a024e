"""The statement timeout: no interactive query may run for ever.

Every connection vecdash opens (the dashboard's pool, ``connect`` for the CLI and scripts) sets
``statement_timeout`` to VECDASH_STATEMENT_TIMEOUT, so a search on a large table without an
index, or a filter that matches nothing near the query, ends with a message instead of a page
that hangs. Work the user asked to run long (loads, index builds, exports) runs inside
``without_statement_timeout``. A cancelled statement becomes a VecdashError that says what was
slow and what to do: ``explains_timeouts`` for a data-layer function, ``vecdash_error_for`` in
the dashboard's and the CLI's last-resort handlers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import psycopg

from vecdash.config import Settings
from vecdash.errors import Cancelled, InvalidInput, QueryTimeout, ReadOnlyError, VecdashError

# PostgreSQL's time units for statement_timeout; a bare number is milliseconds.
_DURATION = re.compile(r"^(\d+)\s*(us|ms|s|min|h|d)?$")

SEARCH_ADVICE = (
    "A search over a large table is fast with a vector index: build one (Index Lab, or "
    "python -m vecdash index build), narrow the filters (fewer categories, a shorter date range) "
    "or shorten the query"
)
GENERIC_ADVICE = (
    "If it was a search, build a vector index (Index Lab, or python -m vecdash index build) or "
    "narrow the filters"
)

P = ParamSpec("P")
R = TypeVar("R")


def check_statement_timeout(settings: Settings) -> str:
    """VECDASH_STATEMENT_TIMEOUT as PostgreSQL reads it ("30s", "500ms", "0"), or InvalidInput."""
    value = settings.statement_timeout.strip().replace(" ", "")
    match = _DURATION.match(value)
    if not match:
        raise InvalidInput(
            f"VECDASH_STATEMENT_TIMEOUT must be a duration such as 500ms, 30s or 2min (a bare "
            f"number is milliseconds; 0 turns it off); got {settings.statement_timeout!r}.")
    return value


@contextmanager
def without_statement_timeout(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run a block with no statement timeout on ``conn`` (a load, an index build, an export:
    work the user asked for, which may rightly take longer), then put the previous one back.

    Nested blocks restore in order. Inside a transaction that fails, the setting is left to the
    rollback, which undoes a SET made in it; sibling connections opened inside the block
    (``db.sibling_connection``) start without a timeout too.
    """
    row = conn.execute("SELECT current_setting('statement_timeout'), "
                       "set_config('statement_timeout', '0', false)").fetchone()
    assert row is not None
    try:
        yield
    finally:
        status = conn.info.transaction_status
        if not (conn.closed or conn.broken) and status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(row[0]),))


def current_statement_timeout(conn: psycopg.Connection[Any] | None) -> str:
    """The timeout in force on ``conn`` when it can still be asked, else the configured one."""
    if conn is not None and not conn.closed and (
            conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE):
        try:
            row = conn.execute("SELECT current_setting('statement_timeout')").fetchone()
            if row is not None:
                return str(row[0])
        except psycopg.Error:
            pass
    return Settings.from_env().statement_timeout


def query_cancelled_error(exc: psycopg.errors.QueryCanceled, *, what: str = "A query",
                          advice: str = GENERIC_ADVICE,
                          conn: psycopg.Connection[Any] | None = None) -> VecdashError:
    """The message for a statement the server cancelled: by the statement timeout (what was
    slow, what to do) or by someone's pg_cancel_backend."""
    primary = exc.diag.message_primary or str(exc)
    if "user request" in primary:  # pg_cancel_backend from another session
        return Cancelled(
            f"{what} was cancelled on the server by another session or an administrator "
            "(pg_cancel_backend), not by vecdash. Run it again; if it keeps happening, ask who "
            "cancels it.")
    limit = current_statement_timeout(conn)
    return QueryTimeout(
        f"{what} took longer than the statement timeout ({limit}) and PostgreSQL cancelled it, "
        f"so nothing hangs. {advice}; or raise VECDASH_STATEMENT_TIMEOUT (for example 2min; 0 "
        "turns it off).")


def explains_timeouts(what: str, advice: str = SEARCH_ADVICE
                      ) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a data-layer function (its first argument the connection) so a statement the
    server cancels raises the VecdashError of ``query_cancelled_error`` instead of psycopg's."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def explained(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except psycopg.errors.QueryCanceled as exc:
                conn = args[0] if args and isinstance(args[0], psycopg.Connection) else None
                raise query_cancelled_error(exc, what=what, advice=advice, conn=conn) from exc

        return explained

    return decorate


def vecdash_error_for(exc: BaseException) -> VecdashError | None:
    """The VecdashError a database error that escaped the data layer stands for (a cancelled
    statement, a write refused by a read-only server), or None (a bug: report it as one)."""
    if isinstance(exc, VecdashError):
        return exc
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return query_cancelled_error(exc)
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return ReadOnlyError(
            "The database refused a write: this server or session is read-only (a read replica, "
            "or default_transaction_read_only). Search and measuring work; to load, index or "
            "delete, point VECDASH_DATABASE_URL at the primary.")
    return None
