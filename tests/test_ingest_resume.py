"""Nothing lost: a killed `python -m vecdash ingest` leaves whole batches and the next run completes
it; the embedding cache makes re-ingesting the same texts cost no model calls; files go in with
per-row failures while good rows load; mismatches are refused before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from vecdash.collections import create_collection, drop_collection, get_collection, list_collections
from vecdash.embedders import LocalEmbedder
from vecdash.errors import InvalidInput, NotFound
from vecdash.ingest import ingest_records
from vecdash.loading import ingest_file
from vecdash.readers import ColumnMapping
from vecdash.records import Record

ROOT = Path(__file__).resolve().parents[1]


def count(conn: Any, name: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
    return int(row[0])


def table_exists(conn: Any, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (sql.Identifier(name).as_string(conn),)).fetchone()[0]


def write_csv(path: Path, n: int, tag: str) -> None:
    with path.open("w") as f:
        f.write("id,title,content\n")
        for i in range(n):
            f.write(f"{tag}-{i},Note {i},Field note {i} from {tag}: the heron waited by reed "
                    f"bed {i % 17} while the tide turned.\n")


def run_cli(args: list[str], conn: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "VECDASH_DATABASE_URL": conn.info.dsn, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "vecdash", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_ingest_resumes_without_duplicates(conn: Any, unique_name: str,
                                                  tmp_path: Path) -> None:
    total, batch = 2000, 50
    path = tmp_path / "notes.csv"
    write_csv(path, total, unique_name)
    args = ["ingest", str(path), "--collection", unique_name, "--batch-size", str(batch)]
    proc = run_cli(args, conn)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if table_exists(conn, unique_name) and count(conn, unique_name) >= 2 * batch:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()  # still running: we kill it mid-way
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        after_kill = count(conn, unique_name)
        assert 2 * batch <= after_kill < total
        assert after_kill % batch == 0  # whole batches only: each batch is one transaction
        assert get_collection(conn, unique_name).data_version == after_kill // batch

        again = run_cli(args, conn)
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0, err
        assert f"inserted {total - after_kill}, skipped {after_kill} duplicates, failed 0" in out
        assert "rows/s" in err and "ETA" in err  # the progress bar on stderr
        assert count(conn, unique_name) == total
        row = conn.execute(sql.SQL("SELECT count(DISTINCT external_id), count(DISTINCT "
                                   "content_hash) FROM {}").format(sql.Identifier(unique_name)))
        assert row.fetchone() == (total, total)
    finally:
        if proc.poll() is None:
            proc.kill()
        if unique_name in {c.name for c in list_collections(conn)}:
            drop_collection(conn, unique_name)


def test_embedding_cache_means_no_model_calls_for_another_collection(
    conn: Any, unique_name: str, embedder: LocalEmbedder
) -> None:
    records = [Record(f"{unique_name} cached passage {i} about lighthouses", title=f"L{i}")
               for i in range(12)]
    first = create_collection(conn, unique_name + "a", dimension=384)
    second = create_collection(conn, unique_name + "b", dimension=384)
    try:
        calls = embedder.calls
        r1 = ingest_records(conn, first, records, embedder=embedder, batch_size=5)
        assert (r1.embedded, r1.cached, embedder.calls - calls) == (12, 0, 12)
        calls = embedder.calls
        r2 = ingest_records(conn, second, records, embedder=embedder, batch_size=5)
        assert (r2.inserted, r2.embedded, r2.cached) == (12, 0, 12)
        assert embedder.calls == calls  # no model call at all
        v1 = conn.execute(sql.SQL("SELECT embedding FROM {} ORDER BY external_id").format(
            first.table)).fetchall()
        v2 = conn.execute(sql.SQL("SELECT embedding FROM {} ORDER BY external_id").format(
            second.table)).fetchall()
        assert len(v1) == 12
        assert all(np.array_equal(a[0].to_numpy(), b[0].to_numpy())
                   for a, b in zip(v1, v2, strict=True))
        # the key is the exact text embedded: the same content under another title is embedded
        third = ingest_records(conn, second, [Record(records[0].content + " again",
                                                     title="other")], embedder=embedder)
        assert third.embedded == 1
        # and it can be bypassed
        calls = embedder.calls
        r4 = ingest_records(conn, first, [Record(f"{unique_name} fresh", title="x")],
                            embedder=embedder, use_cache=False)
        assert r4.embedded == 1 and embedder.calls == calls + 1
    finally:
        drop_collection(conn, unique_name + "a")
        drop_collection(conn, unique_name + "b")


def test_ingest_file_bad_rows_fail_alone(conn: Any, unique_name: str, embedder: LocalEmbedder,
                                         tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"id": "1", "text": "Kelp forests shelter sea otters.", "topic": "ocean"}\n'
        '{"id": "2", "text": \n'
        '{"id": "3", "text": "   ", "topic": "ocean"}\n'
        '{"id": "4", "text": "Coral bleaching follows marine heatwaves.", "topic": "ocean"}\n'
    )
    mapping = ColumnMapping(content="text", id="id", category="topic")
    collection, report = ingest_file(conn, path, collection=unique_name, mapping=mapping,
                                     embedder=embedder)
    try:
        assert collection.embedder == "local" and collection.dimension == 384
        assert report.inserted == 2
        reasons = {f.external_id: f.reason for f in report.failed}
        assert "not valid JSON" in reasons["mixed.jsonl:2"] and reasons["3"] == "empty content"
        assert count(conn, unique_name) == 2
        again = ingest_file(conn, path, collection=unique_name, mapping=mapping,
                            embedder=embedder)[1]
        assert (again.inserted, again.skipped_duplicates) == (0, 2)
    finally:
        drop_collection(conn, unique_name)


def test_mismatches_are_refused_before_any_work(conn: Any, unique_name: str,
                                                embedder: LocalEmbedder, tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    write_csv(path, 5, unique_name)
    # a missing content column: refused, and no collection is left behind
    with pytest.raises(InvalidInput, match="no column 'body'"):
        ingest_file(conn, path, collection=unique_name, mapping=ColumnMapping(content="body"),
                    embedder=embedder)
    with pytest.raises(NotFound):
        get_collection(conn, unique_name)
    # an existing collection made by another model of the same dimension
    create_collection(conn, unique_name, dimension=384, embedder="openai", model="custom-384")
    try:
        calls = embedder.calls
        with pytest.raises(InvalidInput, match="would not be comparable"):
            ingest_file(conn, path, collection=unique_name, embedder=embedder)
        assert embedder.calls == calls and count(conn, unique_name) == 0
    finally:
        drop_collection(conn, unique_name)


def test_precomputed_vectors_from_a_file(conn: Any, unique_name: str, tmp_path: Path) -> None:
    path = tmp_path / "vectors.csv"
    path.write_text('id,content,embedding\na,alpha,"[1, 0, 0]"\nb,beta,"[0, 1]"\n'
                    'c,gamma,"[0, NaN, 1]"\nd,delta,"[0, 0, 1]"\n')
    collection, report = ingest_file(conn, path, collection=unique_name, metric="l2")
    try:
        assert (collection.dimension, collection.embedder) == (3, "none")
        assert report.inserted == 2 and report.embedded == 0
        reasons = {f.external_id: f.reason for f in report.failed}
        assert "2 dimensions" in reasons["b"] and "NaN" in reasons["c"]
    finally:
        drop_collection(conn, unique_name)
