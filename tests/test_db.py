from __future__ import annotations

from typing import Any

import psycopg
import pytest

from vecdash import db
from vecdash.collections import create_collection
from vecdash.config import Settings
from vecdash.errors import ConnectionFailed, ExtensionMissing, InvalidInput, ReadOnlyError


def test_embedded_server_has_pgvector(conn: Any) -> None:
    info = db.server_info(conn)
    assert info.source == "embedded"
    assert db.parse_version(info.pgvector_version) >= db.MIN_PGVECTOR
    assert info.postgres_version.startswith("18")
    assert info.database == db.EMBEDDED_DB
    assert "password" not in info.label


def test_embedded_server_is_reused(settings: Settings, conn: Any) -> None:
    # Starting again on the same data dir returns the same running server.
    assert db.start_embedded(settings) == db.start_embedded(settings)
    conn.execute("CREATE TABLE IF NOT EXISTS reuse_marker (x int)")
    with psycopg.connect(db.start_embedded(settings)) as other:
        assert other.execute("SELECT to_regclass('reuse_marker') IS NOT NULL").fetchone() == (True,)


def test_embedded_server_gets_vecdash_memory_settings(settings: Settings, conn: Any) -> None:
    # The session's server started with vecdash.conf: shared_buffers as the settings resolve it,
    # not PostgreSQL's 128MB default (on any machine with more than 512MB of memory).
    wanted = db.embedded_server_settings(settings)
    shown = conn.execute("SELECT current_setting('shared_buffers'), "
                         "current_setting('effective_cache_size')").fetchone()
    assert wanted and shown is not None
    to_mb = {"kB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}

    def mb(value: str) -> float:
        number = value.rstrip("kMGTB")
        return float(number) * to_mb[value[len(number):]]

    assert mb(shown[0]) == mb(wanted["shared_buffers"]) > 128
    assert mb(shown[1]) == mb(wanted["effective_cache_size"])


def test_embedded_memory_settings_are_bounded_and_checked() -> None:
    auto = Settings.from_env({"VECDASH_DATA_DIR": "/nonexistent"})
    gb = 2**30
    assert db.embedded_server_settings(auto, memory=24 * gb) == {
        "shared_buffers": "4096MB", "effective_cache_size": "12288MB"}
    assert db.embedded_server_settings(auto, memory=8 * gb)["shared_buffers"] == "2048MB"
    assert db.embedded_server_settings(auto, memory=gb // 4)["shared_buffers"] == "128MB"
    chosen = Settings.from_env({"VECDASH_SHARED_BUFFERS": "512MB"})
    assert db.embedded_server_settings(chosen, memory=24 * gb)["shared_buffers"] == "512MB"
    for bad in ("lots", "512", "0MB", "1GB; DROP TABLE x", "-1GB"):
        with pytest.raises(InvalidInput, match="VECDASH_SHARED_BUFFERS"):
            db.embedded_server_settings(Settings.from_env({"VECDASH_SHARED_BUFFERS": bad}))


def test_unreachable_server_says_what_to_do(tmp_path: Any) -> None:
    s = Settings.from_env({
        "VECDASH_DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/nodb",
        "VECDASH_DATA_DIR": str(tmp_path),
    })
    with pytest.raises(ConnectionFailed) as err:
        db.open_pool(s, timeout=2)
    message = str(err.value)
    assert "127.0.0.1:1/nodb" in message and "VECDASH_DATABASE_URL" in message
    assert "secret" not in message


def test_libpq_variables_are_used_when_no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db.example")
    target = db.resolve_target(Settings.from_env({"VECDASH_DATA_DIR": "/nonexistent"}))
    assert target == db.Target("", "libpq")
    url = "postgresql://u@h/d"
    assert db.resolve_target(Settings.from_env({"VECDASH_DATABASE_URL": url})).conninfo == url


def test_old_pgvector_is_refused() -> None:
    with pytest.raises(ExtensionMissing, match="0.7 or newer"):
        db.check_pgvector_version("0.6.2")
    db.check_pgvector_version("0.7.0")
    db.check_pgvector_version("0.8.5")


def test_missing_pgvector_is_reported_with_a_fix(conn: Any) -> None:
    # A database without the extension enabled: ensure_schema enables it; read-only refuses.
    conn.execute("DROP DATABASE IF EXISTS novector")
    conn.execute("CREATE DATABASE novector")
    info = conn.info
    with psycopg.connect(host=info.host, port=info.port, user=info.user, dbname="novector",
                         autocommit=True) as other:
        with pytest.raises(ReadOnlyError, match="CREATE EXTENSION vector"):
            db.ensure_schema(other, read_only=True)
        db.ensure_schema(other)
        assert other.execute("SELECT extname FROM pg_extension WHERE extname='vector'").fetchone()


def test_read_only_mode_refuses_writes(settings: Settings, unique_name: str) -> None:
    ro = Settings.from_env({"VECDASH_DATA_DIR": str(settings.data_dir), "VECDASH_READ_ONLY": "1"})
    pool = db.open_pool(ro)
    try:
        with pool.connection() as conn:
            assert db.is_read_only(conn)
            with pytest.raises(ReadOnlyError, match="read-only"):
                create_collection(conn, unique_name, dimension=3)
            # The server refuses too, even for SQL that bypasses vecdash's checks.
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("CREATE TABLE should_not_exist (x int)")
    finally:
        pool.close()


def test_a_read_only_session_serves_reads_and_refuses_writes_with_messages(
        settings: Settings, demo: Any, embedder: Any, unique_name: str) -> None:
    """What a read replica in read-only mode serves (docs/scaling.md): a session whose every
    transaction is read-only (VECDASH_READ_ONLY=1 on a URL; a hot standby forces the same)
    still searches and sets search-time parameters per transaction; writes are refused by
    vecdash first, and by the server with a message when something gets past."""
    from vecdash.indexes import IndexSpec, build_index
    from vecdash.ingest import ingest_records
    from vecdash.records import Record
    from vecdash.search import hybrid_search
    from vecdash.statement_timeout import vecdash_error_for

    with db.connect(settings) as conn:
        conn.execute("SET default_transaction_read_only = on")
        assert db.is_read_only(conn)
        hits = hybrid_search(conn, demo, "how do vector indexes work", embedder=embedder, k=5)
        assert len(hits) == 5
        with conn.transaction():  # the Index Lab's measuring sets these per transaction
            conn.execute("SELECT set_config('hnsw.ef_search', '80', true)")
        with pytest.raises(ReadOnlyError, match="read-only"):
            build_index(conn, demo, IndexSpec("hnsw"))
        with pytest.raises(ReadOnlyError, match="read-only"):
            ingest_records(conn, demo, [Record(content="x", embedding=[0.0] * demo.dimension)])
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as refused:
            conn.execute("CREATE TABLE should_not_exist (x int)")
        known = vecdash_error_for(refused.value)
        assert isinstance(known, ReadOnlyError) and "primary" in str(known)
