"""Read-only mode enforced by privileges on the embedded server, advisory on a role that can write;
secrets never printed by any error path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import psycopg
import pytest
from psycopg import sql

from vecdash import db
from vecdash.cli import read_only_line
from vecdash.collections import Collection
from vecdash.config import Settings
from vecdash.redaction import redact

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3cretPW"


@pytest.fixture
def reader(settings: Settings, demo: Collection) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(replace(settings, read_only=True)) as conn:
        yield conn


def _table(c: Collection) -> sql.Composable:
    return sql.Identifier(c.schema_name, c.table_name)


def test_embedded_read_only_connects_as_a_role_that_may_only_read(
        reader: psycopg.Connection[Any], demo: Collection) -> None:
    info = db.server_info(reader)
    assert info.user == db.READER_ROLE and info.read_only_enforced
    assert db.is_read_only(reader)
    assert read_only_line(info).startswith("yes, enforced")
    assert reader.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                          ).fetchone() == (False,)
    # What reading and the Index Lab's measuring need still works.
    rows = reader.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(demo))).fetchone()
    assert rows is not None and rows[0] > 0
    reader.execute("SET hnsw.ef_search = 100")
    reader.execute("SET ivfflat.probes = 3")
    reader.execute(sql.SQL("EXPLAIN SELECT id FROM {} ORDER BY {} <=> {} LIMIT 5").format(
        _table(demo), sql.Identifier(demo.vector_column),
        sql.Literal("[" + ",".join(["0.1"] * demo.dimension) + "]")))


def _refused(conn: psycopg.Connection[Any], *statements: sql.Composable | str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)


def test_read_only_role_refuses_writes_by_privileges(
        reader: psycopg.Connection[Any], demo: Collection) -> None:
    table = _table(demo)
    index = reader.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = to_regclass(%s) "
        "LIMIT 1", (table.as_string(reader),)).fetchone()
    assert index is not None
    # The session's read-only default is switched off first each time: privileges still refuse.
    off = "SET LOCAL transaction_read_only = off"
    _refused(reader, off, sql.SQL("INSERT INTO {} (content) VALUES ('x')").format(table))
    _refused(reader, off, sql.SQL("DELETE FROM {}").format(table))
    _refused(reader, off, sql.SQL("CREATE INDEX ON {} (id)").format(table))
    _refused(reader, off, sql.SQL("DROP INDEX {}").format(sql.SQL(index[0])))
    _refused(reader, off, sql.SQL("COPY {} (content) FROM PROGRAM 'true'").format(table))
    _refused(reader, off, "CREATE TABLE should_not_exist (x int)")
    _refused(reader, off, "CREATE TEMP TABLE should_not_exist (x int)")
    _refused(reader, off, "UPDATE vecdash_collections SET data_version = data_version + 1")
    _refused(reader, off, "SELECT lo_create(0)")  # large objects need no table privilege
    _refused(reader, off, "SELECT lo_creat(-1)")
    _refused(reader, off, "SELECT lo_from_bytea(0, 'x')")
    reader.execute("SET default_transaction_read_only = off")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute("ALTER SYSTEM SET work_mem = '1GB'")
    reader.execute("BEGIN READ WRITE")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute(sql.SQL("DELETE FROM {}").format(table))
    finally:
        reader.execute("ROLLBACK")


def test_read_only_role_cannot_reach_the_other_databases(
        reader: psycopg.Connection[Any]) -> None:
    """In postgres or template1 PUBLIC's defaults would let it make temporary tables and large
    objects; it may connect to the vecdash database only."""
    for other in ("postgres", "template1"):
        conninfo = psycopg.conninfo.make_conninfo(reader.info.dsn, dbname=other)
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(conninfo, connect_timeout=10).close()


def test_read_only_on_a_role_that_can_write_says_it_is_advisory(settings: Settings) -> None:
    with db.connect(replace(settings, read_only=False)) as conn:
        conn.execute("SET default_transaction_read_only = on")  # VECDASH_READ_ONLY on a URL
        info = db.server_info(conn)
    assert info.read_only and info.role_can_write and not info.read_only_enforced
    assert "advisory" in read_only_line(info) and info.user in read_only_line(info)


def test_sidebar_says_read_only_is_advisory_for_a_superuser_url(
        open_page: Any, settings: Settings, demo: Collection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECDASH_DATABASE_URL", db.start_embedded(settings))
    monkeypatch.setenv("VECDASH_READ_ONLY", "1")
    at = open_page(timeout=180)
    assert any("advisory" in w.value for w in at.sidebar.warning)


BAD_URLS = [
    f"postgresql://u:{SECRET}%ZZ@127.0.0.1/db",  # bad percent escape
    f"postgres://u:{SECRET}@[::1:5432/db",  # unbalanced bracket
    f"postgresql://u:{SECRET}%@127.0.0.1/db",  # trailing %
    f"postgresql://u:{SECRET}@127.0.0.1:notaport/db",
    f"postgresql://u:{SECRET}@127.0.0.1/db?sslmode=bogus",
    f"postgresql://u:{SECRET}@127.0.0.1/db?nosuchoption=1",
    f"host=127.0.0.1 password='{SECRET} port=1",  # unterminated quote
    f"postgresql://u:{SECRET}@127.0.0.1:1/db",  # nothing listens
    f"postgresql://u:{SECRET}@[::1]:1/db",
    f"postgresql://u:{SECRET}@host.invalid:5432/db",  # does not resolve
    f"postgresql://u:{SECRET}@%2Fnonexistent%2Fsocketdir/db",
    f"host=127.0.0.1 port=1 user=u password={SECRET} dbname=db",
    "postgresql://u:S3cret%40PW@127.0.0.1:1/db",  # decoded: S3cret@PW
]


def _run_cli(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VECDASH_DATABASE_URL", "PGHOST", "PGDATABASE", "OPENAI_API_KEY")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "vecdash", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120, check=False)


def test_bad_database_urls_never_print_the_password() -> None:
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda url: _run_cli({"VECDASH_DATABASE_URL": url}, "info"),
                             BAD_URLS))
    for url, done in zip(BAD_URLS, runs, strict=True):
        output = done.stdout + done.stderr
        for secret in (SECRET, "S3cret@PW", "S3cret%40PW"):
            assert secret not in output, (url, output)
        assert done.returncode == 2, (url, output)
        assert "Traceback" not in output, (url, output)
        assert output.startswith("error: ") and "VECDASH_DATABASE_URL" in output, (url, output)
    malformed = runs[0].stderr
    assert "not a valid PostgreSQL URL" in malformed and "percent-encoded" in malformed


def test_dashboard_does_not_show_a_bad_urls_password(
        open_page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECDASH_DATABASE_URL", BAD_URLS[1])
    at = open_page(timeout=180)
    shown = " ".join(e.value for e in at.error)
    assert "not a valid PostgreSQL URL" in shown and SECRET not in shown


class _EchoingServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible server at its worst: the error echoes the Authorization header."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"error": {"message": f"bad request from {self.headers['Authorization']}",
                                     "type": "invalid_request_error"}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_openai_key_never_printed_by_a_failing_call(
        settings: Settings, tmp_path: Path, unique_name: str) -> None:
    key = "sk-proj-" + "Zq7" * 12
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingServer)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        docs = tmp_path / "docs.csv"
        docs.write_text("id,content\n1,bread does not rise\n2,sourdough starter\n")
        done = _run_cli({"VECDASH_DATA_DIR": str(settings.data_dir), "OPENAI_API_KEY": key,
                         "OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}/v1"},
                        "ingest", str(docs), "--collection", unique_name, "--embedder", "openai")
    finally:
        server.shutdown()
        server.server_close()
    output = done.stdout + done.stderr
    assert key not in output and key[8:] not in output, output
    assert done.returncode == 2, output
    assert "refused" in output or "failed" in output, output


def test_redact_takes_out_every_form_of_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECDASH_DATABASE_URL", "postgresql://u:p%40ss%ZZ@h/db")
    monkeypatch.setenv("OPENAI_API_KEY", "my-own-key-123")
    text = ("postgresql://u:p%40ss%ZZ@h/db p@ss%ZZ host=h password='a b' sk-abcdefgh1234 "
            "my-own-key-123 mysql://x:y@z")
    out = redact(text)
    for secret in ("p%40ss", "p@ss", "'a b'", "abcdefgh1234", "my-own-key-123", ":y@"):
        assert secret not in out, out
    assert "postgresql://u:***@h/db" in out


def test_streamlit_and_root_log_handlers_print_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamlit's loggers have console handlers of their own (not the root's); records that
    reach them, or the root's, are redacted once ui is imported: messages and tracebacks."""
    import io
    import logging

    from streamlit.logger import get_logger

    import ui  # noqa: F401  (installs the redaction, as app.py's import does)

    monkeypatch.setenv("PGPASSWORD", SECRET)
    streamlit_log = get_logger("streamlit.vecdash_redaction_test")
    captured = io.StringIO()
    streamlit_log.streamlit_console_handler.setStream(captured)  # type: ignore[attr-defined]
    root_captured = io.StringIO()
    root_handler = logging.StreamHandler(root_captured)
    logging.getLogger().addHandler(root_handler)
    try:
        streamlit_log.warning("could not connect with password=%s", SECRET)
        try:
            raise RuntimeError(f"postgresql://u:{SECRET}@db.example/x refused")
        except RuntimeError:
            streamlit_log.exception("Uncaught app exception")
        logging.getLogger("some.library").warning("key sk-abcdef123456 and %s", SECRET)
    finally:
        logging.getLogger().removeHandler(root_handler)
    printed, root_printed = captured.getvalue(), root_captured.getvalue()
    assert "Uncaught app exception" in printed and "RuntimeError" in printed
    assert "password=***" in printed and "u:***@db.example" in printed
    assert "sk-***" in root_printed
    assert SECRET not in printed + root_printed and "sk-abcdef" not in root_printed
