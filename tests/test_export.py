"""Exports: Parquet / JSONL round trips, the pg_dump script restored into a second database, and
the bad inputs (existing file, unwritable place, full disk, collection dropped meanwhile)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from tests.conftest import PageOpener
from vecdash import pg_dump
from vecdash.cli import main
from vecdash.collections import Collection, create_collection, drop_collection, get_collection
from vecdash.errors import InvalidInput, NotFound
from vecdash.export import export_collection, search_results_csv
from vecdash.export_metadata import read_export_metadata
from vecdash.ingest import ingest_records
from vecdash.loading import ingest_file
from vecdash.records import Record
from vecdash.search import hybrid_search


def stored_rows(conn: Any, collection: Collection) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(sql.SQL(
        "SELECT external_id, title, content, category, metadata, created_at, embedding FROM {}"
    ).format(collection.table)).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4], r[5], floats(r[6]).tobytes()) for r in rows}


def floats(vector: Any) -> np.ndarray:
    values = vector.to_numpy() if hasattr(vector, "to_numpy") else vector
    assert values is not None
    return np.asarray(values, dtype=np.float32)


def small_collection(conn: Any, name: str) -> Collection:
    """Rows with the awkward values: empty title, no category, nested metadata with a null,
    a fixed created_at, unicode."""
    collection = create_collection(conn, name, dimension=3, embedder="local", model="tiny-model",
                                   metric="l2")
    rng = np.random.default_rng(7)
    ingest_records(conn, collection, [
        Record(content=f"document {i} — ünïcode", title="" if i % 2 else f"title {i}",
               external_id=f"doc-{i}", category=None if i % 3 == 0 else f"c{i % 3}",
               metadata={"n": i, "nested": {"a": [1, None, "x"]}, "none": None} if i % 2 else {},
               created_at=datetime(2020, 1, 1 + i, 12, 30, 15, 123456, tzinfo=UTC),
               embedding=rng.normal(size=3).astype(np.float32))
        for i in range(7)
    ])
    return get_collection(conn, name)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_round_trip_recreates_rows_vectors_and_model(
        conn: Any, unique_name: str, tmp_path: Path, suffix: str) -> None:
    source = small_collection(conn, unique_name)
    copy = f"{unique_name}_copy"
    path = tmp_path / f"out.{suffix}"
    seen: list[tuple[int, int]] = []
    try:
        report = export_collection(conn, source, path, batch_size=3,
                                   progress=lambda d, t: seen.append((d, t)))
        assert report.rows == 7 and path.stat().st_size == report.bytes
        assert seen == [(3, 7), (6, 7), (7, 7)]
        meta = read_export_metadata(path)
        assert meta is not None
        assert (meta.embedder, meta.model, meta.metric, meta.dimension) == (
            "local", "tiny-model", "l2", 3)
        if suffix == "parquet":
            assert pq.ParquetFile(path).num_row_groups == 3  # a row group per batch
        # the command: ingest FILE --collection COPY --embedder none
        assert main(["ingest", str(path), "--collection", copy, "--embedder", "none"]) == 0
        restored = get_collection(conn, copy)
        assert (restored.embedder, restored.model, restored.metric, restored.dimension) == (
            "local", "tiny-model", "l2", 3)
        assert stored_rows(conn, restored) == stored_rows(conn, source)
    finally:
        for name in (unique_name, copy):
            try:
                drop_collection(conn, name)
            except NotFound:
                pass


def test_demo_round_trip_keeps_search_with_the_original_model(
        conn: Any, demo: Collection, embedder: Any, unique_name: str, tmp_path: Path) -> None:
    path = tmp_path / "demo.parquet"
    export_collection(conn, demo, path)
    try:
        restored, report = ingest_file(conn, path, collection=unique_name)
        assert report.inserted == len(stored_rows(conn, demo))
        assert (restored.embedder, restored.model) == (demo.embedder, demo.model)
        got_rows, want_rows = stored_rows(conn, restored), stored_rows(conn, demo)
        assert {k: v[:5] for k, v in got_rows.items()} == {k: v[:5] for k, v in want_rows.items()}
        # cosine loads renormalise every vector (vecdash/ingest.py): a unit vector can move by
        # one float32 step; test_cosine_round_trip_is_bit_exact waits for that fix
        for key, row in want_rows.items():
            assert np.allclose(np.frombuffer(got_rows[key][5], np.float32),
                               np.frombuffer(row[5], np.float32), rtol=0, atol=1e-7)
        query = "why does my bread not rise"
        got = hybrid_search(conn, restored, query, embedder=embedder, k=5)
        want = hybrid_search(conn, demo, query, embedder=embedder, k=5)
        assert list(got["external_id"]) == list(want["external_id"])
        # an export of another model's vectors is refused by an existing collection
        other = small_collection(conn, f"{unique_name}_o")
        small = tmp_path / "small.parquet"
        export_collection(conn, other, small)
        with pytest.raises(InvalidInput, match="dimensional"):
            ingest_file(conn, small, collection=unique_name)
    finally:
        for name in (unique_name, f"{unique_name}_o"):
            try:
                drop_collection(conn, name)
            except NotFound:
                pass


def test_cosine_round_trip_is_bit_exact(conn: Any, demo: Collection, unique_name: str,
                                        tmp_path: Path) -> None:
    path = tmp_path / "demo.parquet"
    export_collection(conn, demo, path)
    try:
        restored, _ = ingest_file(conn, path, collection=unique_name)
        assert stored_rows(conn, restored) == stored_rows(conn, demo)
    finally:
        drop_collection(conn, unique_name)


def test_existing_file_is_refused_unless_forced(conn: Any, demo: Collection, tmp_path: Path,
                                                capsys: Any) -> None:
    path = tmp_path / "demo.jsonl"
    path.write_text("keep me")
    with pytest.raises(InvalidInput, match="already exists"):
        export_collection(conn, demo, path)
    assert path.read_text() == "keep me"
    assert main(["export", "--collection", "demo", "--to", str(path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", "--collection", "demo", "--to", str(path), "--force"]) == 0
    assert path.read_text().startswith('{"vecdash_export"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.jsonl"]


def test_bad_places_give_clear_messages(conn: Any, demo: Collection, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        export_collection(conn, demo, tmp_path / "missing" / "x.parquet")
    with pytest.raises(InvalidInput, match="is a folder"):
        export_collection(conn, demo, tmp_path, fmt="parquet")
    with pytest.raises(InvalidInput, match=r"\.parquet or \.jsonl"):
        export_collection(conn, demo, tmp_path / "x.csv")


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_full_disk_leaves_no_file(conn: Any, demo: Collection, tmp_path: Path, suffix: str) -> None:
    tiny = tmp_path / "tiny"
    _mount_tmpfs(tiny, "size=64k")
    try:
        with pytest.raises(InvalidInput, match="disk is full"):
            export_collection(conn, demo, tiny / f"demo.{suffix}")
        assert list(tiny.iterdir()) == []
    finally:
        subprocess.run(["umount", str(tiny)], check=True)


def test_read_only_place_is_refused(conn: Any, demo: Collection, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    _mount_tmpfs(folder, "size=64k,ro")
    try:
        with pytest.raises(InvalidInput, match="Cannot write"):
            export_collection(conn, demo, folder / "demo.parquet")
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_collection_dropped_meanwhile(pool: Any, unique_name: str, tmp_path: Path,
                                      suffix: str) -> None:
    with pool.connection() as conn:
        collection = small_collection(conn, unique_name)

        def drop_after_first_batch(done: int, total: int) -> None:
            with pool.connection() as other:
                drop_collection(other, unique_name)

        path = tmp_path / f"gone.{suffix}"
        with pytest.raises(NotFound, match="dropped"):
            export_collection(conn, collection, path, batch_size=2,
                              progress=drop_after_first_batch)
    assert list(tmp_path.iterdir()) == []


def test_search_results_csv_has_ranks_ids_and_every_score(
        conn: Any, demo: Collection, embedder: Any) -> None:
    hits = hybrid_search(conn, demo, "sourdough starter", embedder=embedder, k=4)
    lines = search_results_csv(hits).decode().splitlines()
    assert lines[0].split(",")[:4] == ["rank", "id", "title", "category"]
    header = lines[0].split(",")
    assert {"source", "fused_score", "semantic_score", "keyword_score", "semantic_rank",
            "keyword_rank"} <= set(header)
    assert "snippet" not in header and "content" not in header
    assert len(lines) == 5 and lines[1].startswith(f"1,{hits['external_id'].iloc[0]},")


def test_pg_dump_restores_into_a_second_database(conn: Any, demo: Collection, embedder: Any,
                                                 unique_name: str, tmp_path: Path) -> None:
    path = tmp_path / "demo.sql"
    report = pg_dump.dump_collection(conn, demo, path)
    assert report.bytes == path.stat().st_size > 0
    assert not any(t in path.read_text() for t in ("CREATE TRIGGER", "vecdash_bm25_insert"))
    with pytest.raises(InvalidInput, match="already exists"):
        pg_dump.dump_collection(conn, demo, path)
    major = pg_dump.server_major(conn)
    psql = pg_dump.find_pg_tool("psql", major)
    assert psql is not None
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(unique_name)))
    try:
        params = {**conn.info.get_parameters(), "dbname": unique_name}
        target = psycopg.conninfo.make_conninfo(**params)
        subprocess.run([str(psql), "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", str(path)],
                       check=True, capture_output=True, env=pg_dump.tool_environment(conn))
        from pgvector.psycopg import register_vector

        with psycopg.connect(target, autocommit=True) as restored_conn:
            register_vector(restored_conn)
            restored = get_collection(restored_conn, demo.name)
            assert (restored.model, restored.dimension) == (demo.model, demo.dimension)
            assert stored_rows(restored_conn, restored) == stored_rows(conn, demo)
            query = "why does my bread not rise"  # BM25 statistics rebuilt on first use
            got = hybrid_search(restored_conn, restored, query, embedder=embedder, k=5)
            want = hybrid_search(conn, demo, query, embedder=embedder, k=5)
            assert list(got["external_id"]) == list(want["external_id"])
            assert np.allclose(got["keyword_score"].fillna(-1), want["keyword_score"].fillna(-1))
    finally:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(unique_name)))


def test_pg_dump_missing_prints_the_command(conn: Any, demo: Collection, tmp_path: Path,
                                            monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setattr(pg_dump, "_candidates", lambda name: [])
    path = tmp_path / "demo.sql"
    assert main(["export", "--collection", "demo", "--pg-dump", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pg_dump --format=plain" in err and """'--table="public"."demo"'""" in err
    assert f"--file={path}" in err and "password" not in err.lower()
    assert not path.exists()


def test_home_page_offers_the_export_as_a_download(open_page: PageOpener,
                                                   demo: Collection) -> None:
    at = open_page(collection="demo")
    at.selectbox(key="export_target").set_value("demo").run()
    at.button(key="export_prepare").click().run()
    assert not at.exception, [e.message for e in at.exception]
    labels = [b.proto.label for b in at.get("download_button")]
    assert any(label.startswith("Download demo.parquet") for label in labels), labels


def test_search_page_offers_the_results_as_csv(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/search.py", collection="demo")
    at.text_input(key="search_query").input("sourdough starter").run()
    assert not at.exception, [e.message for e in at.exception]
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download results (CSV)" in labels


def test_jsonl_header_is_skipped_and_metadata_decoded(conn: Any, unique_name: str,
                                                      tmp_path: Path) -> None:
    from vecdash.readers import read_rows

    collection = small_collection(conn, unique_name)
    try:
        for suffix in ("jsonl", "parquet"):
            path = tmp_path / f"x.{suffix}"
            export_collection(conn, collection, path)
            rows = list(read_rows(path))
            assert len(rows) == 7
            assert rows[1]["metadata"] == {"n": 1, "nested": {"a": [1, None, "x"]}, "none": None}
        first = json.loads((tmp_path / "x.jsonl").read_text().splitlines()[0])
        assert first["vecdash_export"]["model"] == "tiny-model"
    finally:
        drop_collection(conn, unique_name)
