"""The statement timeout: every interactive query is cut after VECDASH_STATEMENT_TIMEOUT with a
message that says what was slow and what to do; loads, index builds and exports are not cut."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from streamlit.testing.v1 import AppTest

from tests.openai_server import FakeOpenAI
from vecdash import db
from vecdash.collections import Collection, create_collection, drop_collection
from vecdash.config import Settings
from vecdash.discovery import attach_table
from vecdash.errors import Cancelled, InvalidInput, QueryTimeout
from vecdash.export import export_collection
from vecdash.indexes import IndexSpec, build_index
from vecdash.ingest import ingest_records
from vecdash.records import Record
from vecdash.search import fetch_candidates, semantic_search
from vecdash.statement_timeout import (
    check_statement_timeout,
    vecdash_error_for,
    without_statement_timeout,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
SLOW_ROWS = 20
ROW_SLEEP = 0.05  # seconds per row read through the slow view: 1 s for a full scan


def _timeout(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_setting('statement_timeout')").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def slow(conn: psycopg.Connection[Any], unique_name: str) -> Iterator[Collection]:
    """An attached view whose vector column sleeps ROW_SLEEP per row: any search on it scans every
    row (no index can serve a view) and takes about SLOW_ROWS * ROW_SLEEP seconds."""
    table, view = sql.Identifier(unique_name + "_t"), sql.Identifier(unique_name)
    conn.execute("CREATE OR REPLACE FUNCTION slow_vector(v vector) RETURNS vector "
                 "LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM pg_sleep(%s); RETURN v; END $$"
                 .replace("%s", str(ROW_SLEEP)))
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, content text, "
                         "embedding vector({}))").format(table, sql.Literal(DIM)))
    rng = np.random.default_rng(0)
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(table), [
            (i, f"row {i}", f"passage number {i} about vector search", rng.normal(size=DIM))
            for i in range(SLOW_ROWS)])
    conn.execute(sql.SQL("CREATE VIEW {} AS SELECT id, title, content, "
                         "slow_vector(embedding)::vector({}) AS embedding FROM {}").format(
        view, sql.Literal(DIM), table))
    collection = attach_table(conn, unique_name, schema="public", table=unique_name,
                              vector_column="embedding", content_column="content",
                              title_column="title", id_column="id", embedder="openai",
                              model="text-embedding-3-small")  # queries: the fake server's
    yield collection
    drop_collection(conn, unique_name)
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


def test_the_setting_is_checked_and_every_connection_carries_it(
        settings: Settings, conn: psycopg.Connection[Any]) -> None:
    assert settings.statement_timeout == "30s"
    assert _timeout(conn) == "30s"  # the pool's connections
    for good, as_sent in (("500ms", "500ms"), ("2 min", "2min"), ("0", "0"), ("1500", "1500")):
        assert check_statement_timeout(replace(settings, statement_timeout=good)) == as_sent
    for bad in ("soon", "30 seconds", "-1s", "1.5s", ""):
        with pytest.raises(InvalidInput, match="VECDASH_STATEMENT_TIMEOUT"):
            check_statement_timeout(replace(settings, statement_timeout=bad))
    with pytest.raises(InvalidInput, match="VECDASH_STATEMENT_TIMEOUT"):
        db.connect(replace(settings, statement_timeout="forever"))
    with db.connect(replace(settings, statement_timeout="250ms")) as other:
        assert _timeout(other) == "250ms"
        with without_statement_timeout(other):
            with db.sibling_connection(other) as sibling:  # a load's second COPY stream
                assert _timeout(sibling) == "0"
        with db.sibling_connection(other) as sibling:
            assert _timeout(sibling) == "250ms"


def test_without_statement_timeout_restores_nested_and_after_a_failed_transaction(
        conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET statement_timeout = '1234ms'")
    try:
        with without_statement_timeout(conn):
            assert _timeout(conn) == "0"
            with without_statement_timeout(conn):
                assert _timeout(conn) == "0"
            assert _timeout(conn) == "0"
            conn.execute("SELECT pg_sleep(1.5)")  # longer than the session's timeout
        assert _timeout(conn) == "1234ms"
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            with without_statement_timeout(conn):
                conn.execute("SELECT 1 / 0")
        assert _timeout(conn) == "1234ms"
        with pytest.raises(psycopg.errors.DivisionByZero), without_statement_timeout(conn):
            with conn.transaction():
                conn.execute("SELECT 1 / 0")
        assert _timeout(conn) == "1234ms"
    finally:
        conn.execute("RESET statement_timeout")
        conn.execute("SET statement_timeout = '30s'")


def test_a_slow_search_ends_in_a_message_that_says_what_to_do(
        conn: psycopg.Connection[Any], slow: Collection) -> None:
    vector = np.ones(DIM, dtype=np.float32)
    assert len(semantic_search(conn, slow, vector, k=3)) == 3  # it works given the time
    conn.execute("SET statement_timeout = '200ms'")
    try:
        with pytest.raises(QueryTimeout) as semantic:
            semantic_search(conn, slow, vector, k=3)
        message = str(semantic.value)
        assert "The search took longer than the statement timeout (200ms)" in message
        assert "vector index" in message and "filters" in message
        assert "VECDASH_STATEMENT_TIMEOUT" in message
        with pytest.raises(QueryTimeout, match="statement timeout"):
            fetch_candidates(conn, slow, "vector search", vector, candidates=5)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable after
    finally:
        conn.execute("SET statement_timeout = '30s'")


def test_a_cancelled_statement_elsewhere_becomes_a_message(
        conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET statement_timeout = '50ms'")
    try:
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            conn.execute("SELECT pg_sleep(2)")
    finally:
        conn.execute("SET statement_timeout = '30s'")
    known = vecdash_error_for(caught.value)
    assert isinstance(known, QueryTimeout) and "VECDASH_STATEMENT_TIMEOUT" in str(known)
    assert vecdash_error_for(ZeroDivisionError()) is None  # a bug stays a bug


def test_cli_search_times_out_with_exit_2_and_no_traceback(slow: Collection) -> None:
    fake = FakeOpenAI().start()  # embeds the query without loading a model in the subprocess
    env = {**os.environ, "VECDASH_STATEMENT_TIMEOUT": "300ms", "OPENAI_API_KEY": fake.api_key,
           "OPENAI_BASE_URL": fake.base_url}
    try:
        done = subprocess.run([sys.executable, "-m", "vecdash", "search", "vector search",
                               "--collection", slow.name, "-k", "3"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        fake.stop()
    assert fake.requests  # the query was embedded: the search itself was cut
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: The search took longer than the statement timeout (300ms)" in done.stderr
    assert "VECDASH_STATEMENT_TIMEOUT" in done.stderr


def test_the_dashboard_shows_the_message(settings: Settings, slow: Collection) -> None:
    def page(name: str, dim: int) -> None:
        import numpy as np

        import ui
        from vecdash.collections import get_collection
        from vecdash.search import semantic_search

        with ui.errors_shown(), ui.connection() as conn:
            conn.execute("SET statement_timeout = '200ms'")
            try:
                semantic_search(conn, get_collection(conn, name), np.ones(dim), k=3)
            finally:
                conn.execute("SET statement_timeout = '30s'")

    at = AppTest.from_function(page, args=(slow.name, DIM), default_timeout=120)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("statement timeout (200ms)" in e.value for e in at.error), at.error


def test_loads_builds_and_exports_are_not_cut(
        conn: psycopg.Connection[Any], unique_name: str, slow: Collection,
        tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    name = unique_name + "_load"
    collection = create_collection(conn, name, dimension=DIM)
    conn.execute("SET statement_timeout = '20ms'")
    try:
        first = ingest_records(conn, collection, [
            Record(content=f"seed {i}", embedding=rng.normal(size=DIM)) for i in range(1000)],
            batch_size=500)
        assert first.inserted == 1000 and not first.failed_count
        result = build_index(conn, collection, IndexSpec("hnsw"))
        assert result.seconds > 0.02  # longer than the timeout, and not cancelled
        # With the HNSW index each batch's COPY inserts into the graph: slower than 20ms.
        more = ingest_records(conn, collection, [
            Record(content=f"more {i}", embedding=rng.normal(size=DIM)) for i in range(1000)],
            batch_size=500)
        assert more.inserted == 1000 and not more.failed_count
        assert _timeout(conn) == "20ms"  # put back after each
        # An export reads every row of the slow view: about a second.
        report = export_collection(conn, slow, tmp_path / "slow.jsonl")
        assert report.rows == SLOW_ROWS
        assert _timeout(conn) == "20ms"
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(0.5)")  # an ordinary statement still is cut
    finally:
        conn.execute("SET statement_timeout = '30s'")
        drop_collection(conn, name)


def test_a_cancel_by_someone_else_says_so(settings: Settings,
                                          conn: psycopg.Connection[Any]) -> None:
    import threading

    with db.connect(settings) as victim:
        pid = victim.info.backend_pid
        timer = threading.Timer(0.5, lambda: conn.execute("SELECT pg_cancel_backend(%s)", (pid,)))
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            victim.execute("SELECT pg_sleep(5)")
        timer.join()
    known = vecdash_error_for(caught.value)
    assert isinstance(known, Cancelled) and "pg_cancel_backend" in str(known)
