"""The embedded server's lifecycle, each test on its OWN data directory (never the session's):
a stale pid file, dead handle PIDs, the socket directory and listeners, specific start messages."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from vecdash import embedded_server as es
from vecdash.errors import ConnectionFailed

ROOT = Path(__file__).resolve().parents[1]
CONF = {"shared_buffers": "128MB"}


@pytest.fixture
def own_dir() -> Iterator[Path]:
    # 0711: when tests run as root the server's system user must be able to pass through; vecdash
    # itself no longer changes the permissions of directories that are not its own.
    base = Path(tempfile.mkdtemp(prefix="vecdash-own-"))
    base.chmod(0o711)
    yield base / "data"
    es.stop(base / "data")
    subprocess.run(["rm", "-rf", str(base)], check=False)


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VECDASH_DATABASE_URL", "VECDASH_READ_ONLY", "PGHOST", "PGDATABASE")}
    env["VECDASH_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "vecdash", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=180, check=False)


def test_stale_pid_file_does_not_touch_an_unrelated_process(own_dir: Path) -> None:
    server = es.start(own_dir, CONF)
    pgdata = server.pgdata
    es.stop(own_dir)
    assert es.postmaster_pid(pgdata) is None
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        (pgdata / "postmaster.pid").write_text(
            f"{sleeper.pid}\n{pgdata}\n1700000000\n5432\n{pgdata}\n\n  0 0\nready\n")
        assert es.postmaster_pid(pgdata) is None  # a pid file naming a sleep is stale
        done = _cli(own_dir, "info")
        assert done.returncode == 0, done.stderr
        assert "(embedded)" in done.stdout
        assert sleeper.poll() is None, "vecdash signalled a process that is not its server"
        assert es.postmaster_pid(pgdata) is None  # the CLI stopped the server it started
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dead_handle_pids_are_pruned_so_the_server_stops(own_dir: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    server = es.start(own_dir, CONF)
    handles = server.pgdata / es.HANDLES
    handles.write_text(json.dumps([dead.pid, os.getpid()]))  # as after a kill -9
    es.stop(own_dir)
    assert es.postmaster_pid(server.pgdata) is None
    assert dead.pid not in json.loads(handles.read_text())


def _modes(path: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents]}


def test_long_data_dir_gets_a_private_socket_and_no_tcp(own_dir: Path) -> None:
    base = own_dir.parent
    long_dir = base / ("d" * (120 - len(str(base)) - 1))
    assert len(str(long_dir)) == 120
    before = _modes(base)
    server = es.start(long_dir, CONF)
    try:
        assert server.socket_dir != server.pgdata  # too long a path for a socket in pgdata
        assert stat.S_IMODE(server.socket_dir.stat().st_mode) == 0o700
        assert _modes(base) == before, "a directory outside vecdash's own was chmodded"
        with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
            rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
        assert rules and all(t == "local" and auth != "trust" for t, auth in rules), rules
        if os.geteuid() == 0:
            psql = str(es.bin_dir() / "psql")
            for host in (str(server.socket_dir), "127.0.0.1"):
                other = subprocess.run(
                    ["runuser", "-u", "nobody", "--", psql, "-h", host, "-p", str(server.port),
                     "-U", "postgres", "-d", "postgres", "-c", "SELECT 1"],
                    capture_output=True, text=True, timeout=30, check=False)
                assert other.returncode != 0, other.stdout
    finally:
        es.stop(long_dir)
    assert not server.socket_dir.exists()  # removed with the server


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as user nobody")
def test_another_user_cannot_connect_as_superuser(own_dir: Path) -> None:
    server = es.start(own_dir, CONF)
    other = subprocess.run(
        ["runuser", "-u", "nobody", "--", str(es.bin_dir() / "psql"), "-h", str(server.socket_dir),
         "-U", "postgres", "-d", "postgres", "-c", "COPY (SELECT 1) TO PROGRAM 'true'"],
        capture_output=True, text=True, timeout=30, check=False)
    assert other.returncode != 0
    assert "Permission denied" in other.stderr or "authentication failed" in other.stderr


def test_start_messages_are_specific(own_dir: Path) -> None:
    with pytest.raises(ConnectionFailed, match="shared_buffers.*VECDASH_SHARED_BUFFERS"):
        es.start(own_dir, {"shared_buffers": "1kB"})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConnectionFailed, match=f"port {port} .* in use.*VECDASH_EMBEDDED_PORT"):
            es.start(own_dir, CONF, port=port)
    blocker = own_dir.parent / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConnectionFailed, match="not writable.*VECDASH_DATA_DIR"):
        es.start(blocker / "data", CONF)
    server = es.start(own_dir, CONF)  # and it still starts after all that
    assert es.postmaster_pid(server.pgdata) == server.pid
