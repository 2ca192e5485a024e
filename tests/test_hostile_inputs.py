"""Hostile files, parameters and concurrent writers (issue 16): the catalogue of cases a new user
meets, each ending in a message that says what went wrong and what to do, with stored data
untouched and every good row loaded.

Each data-layer case asserts a VecdashError (or per-row failures) and each CLI case exit status 2
with no "Traceback"; both check the row count and the BM25 statistics of a collection that was
there before (``keep``: two good rows), and that no new collection was left behind.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from vecdash import db
from vecdash import embedded_server as es
from vecdash.cli import main
from vecdash.collections import (
    Collection,
    collection_lock,
    create_collection,
    drop_collection,
    get_collection,
    list_collections,
)
from vecdash.config import Settings
from vecdash.errors import ConnectionFailed, InvalidInput, NotFound, VecdashError
from vecdash.ingest import ingest_records
from vecdash.loading import ingest_file
from vecdash.records import Record
from vecdash.search import fetch_candidates, hybrid_search

ROOT = Path(__file__).resolve().parents[1]
GOOD = [("g1", "Kelp forests shelter sea otters.", [1.0, 0.0, 0.0]),
        ("g2", "Coral bleaching follows marine heatwaves.", [0.0, 1.0, 0.0])]


def state(conn: Any, name: str) -> tuple[int, int, int, int] | None:
    """A collection's rows and BM25 statistics (documents, total length, lexemes); None when
    there is no such collection."""
    if not any(c.name == name for c in list_collections(conn)):
        return None
    c = get_collection(conn, name)
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(c.table)).fetchone()[0]
    oid = conn.execute("SELECT %s::regclass::oid", (c.table.as_string(conn),)).fetchone()[0]
    totals = conn.execute("SELECT docs, total_length FROM vecdash_bm25_totals WHERE relid = %s",
                          (oid,)).fetchone() or (0, 0)
    terms = conn.execute("SELECT count(*) FROM vecdash_bm25_terms WHERE relid = %s",
                         (oid,)).fetchone()[0]
    return int(rows), int(totals[0]), int(totals[1]), int(terms)


def write_csv(path: Path, rows: list[tuple[str, str, Any]], *, vectors: bool = True) -> Path:
    lines = ["id,content,embedding" if vectors else "id,content"]
    for ext, text, vec in rows:
        cell = text.replace('"', '""')
        lines.append(f'{ext},"{cell}","{json.dumps(vec)}"' if vectors else f'{ext},"{cell}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Case:
    """What one case sees: the connection, a scratch directory, the name of a collection holding
    the two GOOD rows (``keep``), a fresh name that must not be left behind (``fresh``)."""

    conn: Any
    tmp: Path
    keep: str
    fresh: str
    embedder: Any
    demo: Collection

    def cli(self, capsys: Any, *args: str) -> tuple[int, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out + out.err


@pytest.fixture
def case(conn: Any, tmp_path: Path, unique_name: str, embedder: Any,
         demo: Collection) -> Iterator[Case]:
    keep = unique_name + "_keep"
    c = create_collection(conn, keep, dimension=3, embedder="none", model="x")
    ingest_records(conn, c, [Record(t, external_id=e, embedding=v) for e, t, v in GOOD])
    yield Case(conn, tmp_path, keep, unique_name, embedder, demo)
    for name in (keep, unique_name):
        if any(x.name == name for x in list_collections(conn)):
            drop_collection(conn, name)


def refused(fn: Callable[[], Any], *words: str, kind: type[Exception] = VecdashError) -> str:
    with pytest.raises(kind) as info:
        fn()
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


# --- the cases: each returns nothing and asserts its own outcome --------------------------------


def binary_file(suffix: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        path = c.tmp / f"garbage{suffix}"
        path.write_bytes(random.Random(7).randbytes(20_000))
        calls = c.embedder.calls
        refused(lambda: ingest_file(c.conn, path, collection=c.fresh, embedder=c.embedder),
                "not a text file", "pick the right file", kind=InvalidInput)
        assert c.embedder.calls == calls  # refused before any embedding
    return run


def binary_cli(c: Case, capsys: Any) -> None:
    path = c.tmp / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 40)
    code, out = c.cli(capsys, "ingest", str(path), "--collection", c.fresh, "--embedder", "none")
    assert code == 2 and "Traceback" not in out and "not a text file" in out


def nul_in_row(fmt: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        if fmt == "csv":
            path = c.tmp / "nul.csv"
            path.write_bytes(b'id,content,embedding\nn1,"first good","[1,1,0]"\n'
                             b'n2,"bad\x00text","[0,1,1]"\nn3,"third good","[1,0,1]"\n')
        else:
            path = c.tmp / "nul.jsonl"
            path.write_text("\n".join(json.dumps(r) for r in [
                {"id": "n1", "content": "first good", "embedding": [1, 1, 0]},
                {"id": "n2", "content": "bad\u0000text", "embedding": [0, 1, 1],
                 "tag": "x\u0000y"},
                {"id": "n3", "content": "third good", "embedding": [1, 0, 1]}]) + "\n")
        before = state(c.conn, c.keep)
        assert before is not None
        _, report = ingest_file(c.conn, path, collection=c.keep)
        assert report.inserted == 3 and not report.failed
        assert any("NUL" in w and ":2" in w for w in report.warnings), report.warnings
        after = state(c.conn, c.keep)
        assert after is not None and after[0] == before[0] + 3 and after[1] == before[1] + 3
        got = c.conn.execute(sql.SQL("SELECT content FROM {} WHERE external_id = 'n2'").format(
            get_collection(c.conn, c.keep).table)).fetchone()[0]
        assert got == "badtext"
    return run


def nul_in_row_cli(c: Case, capsys: Any) -> None:
    path = c.tmp / "nul.csv"
    path.write_bytes(b'id,content,embedding\nn1,"a\x00b","[1,1,0]"\n')
    code, out = c.cli(capsys, "ingest", str(path), "--collection", c.keep, "--embedder", "none")
    assert code == 0 and "Traceback" not in out and "NUL" in out and "inserted 1" in out


def huge_tsvector(c: Case, capsys: Any) -> None:
    rng = random.Random(3)
    words = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(9))
                     for _ in range(200_000))  # ~2 MB of distinct words: a tsvector over 1 MB
    path = write_csv(c.tmp / "big.csv", [("h1", "small good one", [1, 1, 1]),
                                         ("h2", words, [1, 2, 3]),
                                         ("h3", "another good one", [3, 2, 1])])
    before = state(c.conn, c.keep)
    assert before is not None
    _, report = ingest_file(c.conn, path, collection=c.keep)
    assert report.inserted == 2
    [failure] = report.failed
    assert failure.external_id == "h2" and "too long" in failure.reason
    assert "chunking" in failure.reason and "big.csv:2" in failure.reason
    after = state(c.conn, c.keep)
    assert after is not None and after[0] == before[0] + 2 and after[1] == before[1] + 2


def mixed_encoding(c: Case, capsys: Any) -> None:
    path = c.tmp / "mixed.csv"
    path.write_bytes('id,content,embedding\nm1,"Café au lait","[1,0,1]"\n'.encode()
                     + b'm2,"Caf\xe9 noir","[0,1,1]"\n')
    _, report = ingest_file(c.conn, path, collection=c.keep)
    assert report.inserted == 1
    [failure] = report.failed
    assert "line 3" in failure.reason and "0xe9" in failure.reason and "UTF-8" in failure.reason
    got = c.conn.execute(sql.SQL("SELECT content FROM {} WHERE external_id = 'm1'").format(
        get_collection(c.conn, c.keep).table)).fetchone()[0]
    assert got == "Café au lait"  # never mojibake


def mixed_encoding_text(c: Case, capsys: Any) -> None:
    path = c.tmp / "notes.txt"
    path.write_bytes("Café\n".encode() + b"Caf\xe9\n")
    refused(lambda: ingest_file(c.conn, path, collection=c.fresh, embedder=c.embedder),
            "line 2", "not UTF-8", "save the file as UTF-8", kind=InvalidInput)


def parquet_file(damage: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        path = c.tmp / "docs.parquet"
        pq.write_table(pa.table({"id": [f"p{i}" for i in range(500)],
                                 "content": [f"text {i}" for i in range(500)],
                                 "embedding": [[1.0, 0.0, float(i)] for i in range(500)]}), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PAR1" + data[40:])
        refused(lambda: ingest_file(c.conn, path, collection=c.fresh), "parquet",
                kind=InvalidInput)
        code, out = c.cli(capsys, "ingest", str(path), "--collection", c.fresh,
                          "--embedder", "none")
        assert code == 2 and "Traceback" not in out and "Parquet" in out
    return run


def directory(c: Case, capsys: Any) -> None:
    folder = c.tmp / "folder.csv"
    folder.mkdir()
    refused(lambda: ingest_file(c.conn, folder, collection=c.fresh), "is a directory",
            "path of a file", kind=InvalidInput)
    code, out = c.cli(capsys, "ingest", str(folder), "--collection", c.fresh, "--embedder", "none")
    assert code == 2 and "Traceback" not in out and "directory" in out


def batch_size_cli(size: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        path = write_csv(c.tmp / "docs.csv", [("b1", "some text", [1, 2, 3])])
        code, out = c.cli(capsys, "ingest", str(path), "--collection", c.fresh, "--embedder",
                          "none", "--batch-size", size)
        assert code == 2 and "Traceback" not in out
        assert "batch size" in out and "256" in out
    return run


def batch_size_data_layer(c: Case, capsys: Any) -> None:
    path = write_csv(c.tmp / "docs.csv", [("b1", "some text", [1, 2, 3])])
    for bad in (0, -1, 2.5, True):
        refused(lambda bad=bad: ingest_file(c.conn, path, collection=c.fresh, batch_size=bad),
                "batch size", kind=InvalidInput)
    refused(lambda: ingest_records(c.conn, get_collection(c.conn, c.keep), [], batch_size=0),
            "batch size", kind=InvalidInput)


def outside_vectors(c: Case, capsys: Any) -> None:
    local = c.fresh + "_local"
    create_collection(c.conn, local, dimension=3, embedder="local", model="all-MiniLM-L6-v2")
    try:
        path = write_csv(c.tmp / "random.csv", [("r1", "random vector", [0.3, 0.1, 0.9])])
        refused(lambda: ingest_file(c.conn, path, collection=local), "not comparable",
                "new collection", "--vectors-from local/all-MiniLM-L6-v2", kind=InvalidInput)
        assert state(c.conn, local) == (0, 0, 0, 0)
        # saying which model made them lets them in
        _, report = ingest_file(c.conn, path, collection=local,
                                vectors_from="local/all-MiniLM-L6-v2")
        assert report.inserted == 1
        code, out = c.cli(capsys, "ingest", str(path), "--collection", local, "--embedder",
                          "none", "--vectors-from", "nonsense")
        assert code == 2 and "Traceback" not in out and "provider/model" in out
    finally:
        drop_collection(c.conn, local)


def bad_vector(cell: Any, words: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        path = c.tmp / "vectors.jsonl"
        path.write_text(json.dumps({"id": "bad", "content": "bad vector", "embedding": cell})
                        + "\n" + json.dumps({"id": "ok", "content": "good vector",
                                             "embedding": [0.5, 0.5, 0.5]}) + "\n")
        before = state(c.conn, c.keep)
        assert before is not None
        _, report = ingest_file(c.conn, path, collection=c.keep)
        assert report.inserted == 1
        [failure] = report.failed
        assert failure.external_id == "bad" and words in failure.reason, failure.reason
        after = state(c.conn, c.keep)
        assert after is not None and after[0] == before[0] + 1
    return run


def index_name_taken(c: Case, capsys: Any) -> None:
    c.conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(c.fresh + "_tsv_gin")))
    try:
        made = create_collection(c.conn, c.fresh, dimension=3, embedder="none", model="x")
        ingest_records(c.conn, made, [Record("alpha", external_id="a", embedding=[1, 0, 0])])
        assert state(c.conn, c.fresh) == (1, 1, 1, 1)
    finally:
        c.conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(c.fresh + "_tsv_gin")))


def table_gone(c: Case, capsys: Any) -> None:
    gone = c.fresh + "_gone"
    made = create_collection(c.conn, gone, dimension=3, embedder="none", model="x")
    c.conn.execute(sql.SQL("DROP TABLE {}").format(made.table))
    path = write_csv(c.tmp / "docs.csv", [("t1", "some text", [1, 2, 3])])
    refused(lambda: ingest_file(c.conn, path, collection=gone), "is gone", "vecdash drop",
            kind=NotFound)
    for args in (["ingest", str(path), "--collection", gone, "--embedder", "none"],
                 ["index", "--collection", gone], ["search", "otters", "--collection", gone]):
        code, out = c.cli(capsys, *args)
        assert code == 2 and "Traceback" not in out and "is gone" in out, (args, out)
    code, out = c.cli(capsys, "drop", gone)
    assert code == 0 and state(c.conn, gone) is None


def query_refused(query: Any, words: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        refused(lambda: hybrid_search(c.conn, c.demo, query, embedder=c.embedder), words,
                kind=InvalidInput)
        refused(lambda: fetch_candidates(c.conn, c.demo, query, None), words, kind=InvalidInput)
    return run


def filter_refused(filters: dict[str, Any], words: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        refused(lambda: hybrid_search(c.conn, c.demo, "otters", embedder=c.embedder,
                                      filters=filters), words, kind=InvalidInput)
    return run


def labels_file(which: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        queries = c.tmp / "queries.tsv"
        qrels = c.tmp / "qrels.tsv"
        queries.write_text("q1\tsea otters\nq2\tcoral\x00reef\n" if which == "queries"
                           else "q1\tsea otters\n")
        qrels.write_text("q1\tdoc-1\t1\nq1\tdoc\x00-2\t1\n" if which == "qrels"
                         else "q1\tdoc-1\t1\n")
        code, out = c.cli(capsys, "eval", "--collection", c.demo.name, "--queries", str(queries),
                          "--qrels", str(qrels))
        assert code == 2 and "Traceback" not in out and "NUL" in out and "line 2" in out
    return run


def eval_option(*args: str, words: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        code, out = c.cli(capsys, "eval", "--collection", c.demo.name, *args)
        assert code == 2 and "Traceback" not in out and words in out, out
    return run


def index_option(*args: str, words: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        code, out = c.cli(capsys, "index", "--collection", c.keep, *args)
        assert code == 2 and "Traceback" not in out and words in out, out
    return run


def search_option(*args: str, words: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        code, out = c.cli(capsys, "search", *args)
        assert code == 2 and "Traceback" not in out and words in out, out
    return run


def bad_name(name: str, words: str) -> Callable[[Case, Any], None]:
    def run(c: Case, capsys: Any) -> None:
        refused(lambda: create_collection(c.conn, name, dimension=3), words, kind=InvalidInput)
        refused(lambda: get_collection(c.conn, name), words, kind=InvalidInput)
    return run


def nothing_stored(c: Case, capsys: Any) -> None:
    path = c.tmp / "bad.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"x{i}", "content": " ", "embedding": [1, 2]})
                              for i in range(3)) + "\n")
    _, report = ingest_file(c.conn, path, collection=c.fresh, metric="l2")
    assert (report.inserted, report.failed_count) == (0, 3)
    assert any("not kept" in w for w in report.warnings)
    # (the fixture checks that no collection was left behind)


CASES: dict[str, Callable[[Case, Any], None]] = {
    "binary-csv": binary_file(".csv"),
    "binary-txt": binary_file(".txt"),
    "binary-jsonl": binary_file(".jsonl"),
    "binary-json": binary_file(".json"),
    "binary-cli": binary_cli,
    "nul-csv-row": nul_in_row("csv"),
    "nul-jsonl-row-and-metadata": nul_in_row("jsonl"),
    "nul-cli": nul_in_row_cli,
    "tsvector-over-1mb": huge_tsvector,
    "utf8-with-latin1-bytes-csv": mixed_encoding,
    "utf8-with-latin1-bytes-text": mixed_encoding_text,
    "parquet-truncated": parquet_file("truncated"),
    "parquet-corrupt": parquet_file("corrupt"),
    "directory-as-file": directory,
    "batch-size-0-cli": batch_size_cli("0"),
    "batch-size-negative-cli": batch_size_cli("-1"),
    "batch-size-data-layer": batch_size_data_layer,
    "outside-vectors-into-model-collection": outside_vectors,
    "vector-nested": bad_vector([[1, 2, 3]], "flat list"),
    "vector-booleans": bad_vector([True, False, True], "not a number"),
    "vector-strings": bad_vector(["1", "2", "3"], "not a number"),
    "vector-zero-cosine": bad_vector([0, 0, 0], "no direction"),
    "vector-object": bad_vector({"a": 1}, "not a list of numbers"),
    "vector-wrong-dimension": bad_vector([1, 2], "2 dimensions"),
    "nothing-stored-no-empty-collection": nothing_stored,
    "derived-index-name-taken": index_name_taken,
    "table-dropped-outside": table_gone,
    "query-nul": query_refused("sea\x00otters", "NUL"),
    "query-lone-surrogate": query_refused("sea \ud800 otters", "surrogate"),
    "query-not-text": query_refused(42, "not text"),
    "query-none": query_refused(None, "not text"),
    "filter-category-nul": filter_refused({"categories": ["ocean\x00"]}, "NUL"),
    "filter-metadata-value-nul": filter_refused({"metadata": {"source": "a\x00"}}, "NUL"),
    "filter-metadata-key-surrogate": filter_refused({"metadata": {"\udc80": "a"}}, "surrogate"),
    "queries-file-nul": labels_file("queries"),
    "qrels-file-nul": labels_file("qrels"),
    "eval-k-0": eval_option("-k", "0", words="cutoff k"),
    "eval-k-negative": eval_option("-k", "-1", words="cutoff k"),
    "eval-weight-2": eval_option("--weight", "2", words="from 0 (keyword only) to 1"),
    "eval-weight-nan": eval_option("--weight", "nan", words="from 0 (keyword only) to 1"),
    "eval-candidates-0": eval_option("--candidates", "0", words="--candidates"),
    "eval-cv-1": eval_option("--cv", "1", words="--cv"),
    "index-sample-vectors-negative": index_option("--sweep", "--sample-vectors", "-5",
                                                  words="--sample-vectors"),
    "index-sample-vectors-0": index_option("--sweep", "--sample-vectors", "0",
                                           words="--sample-vectors"),
    "index-k-0": index_option("--sweep", "-k", "0", words="-k"),
    "search-k-0": search_option("otters", "-k", "0", words="top-k"),
    "search-nul-query": search_option("sea\x00otters", words="NUL"),
    "name-nul": bad_name("bad\x00name", "NUL"),
    "name-surrogate": bad_name("bad\udc80name", "surrogate"),
    "name-too-long": bad_name("n" * 64, "63"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_catalogue(name: str, case: Case, capsys: Any) -> None:
    before = state(case.conn, case.keep)
    CASES[name](case, capsys)
    # the fresh name was never left behind as an (empty) collection or table
    assert state(case.conn, case.fresh) is None or name == "derived-index-name-taken"
    # the kept collection lost nothing: its two good rows are there with their statistics
    after = state(case.conn, case.keep)
    assert before is not None and after is not None and after[0] >= before[0] == 2
    for ext, text, _ in GOOD:
        row = case.conn.execute(sql.SQL("SELECT content FROM {} WHERE external_id = %s").format(
            get_collection(case.conn, case.keep).table), (ext,)).fetchone()
        assert row is not None and row[0] == text


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 40


# --- concurrency ---------------------------------------------------------------------------------


def _rows(prefix: str, n: int, start: int = 0) -> list[Record]:
    return [Record(f"{prefix} document number {i}", external_id=f"{prefix}{i}",
                   embedding=[1.0, float(i), 2.0]) for i in range(start, start + n)]


def test_two_loads_creating_one_collection(pool: Any, tmp_path: Path, unique_name: str) -> None:
    paths = []
    for k in range(2):
        path = tmp_path / f"part{k}.jsonl"
        path.write_text("".join(json.dumps({"id": f"c{k}-{i}", "content": f"part {k} row {i}",
                                            "embedding": [1, i, k + 1]}) + "\n"
                                for i in range(300)))
        paths.append(path)
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2, timeout=120)

    def load(k: int) -> None:
        with pool.connection() as conn:
            barrier.wait()
            try:
                results[k] = ingest_file(conn, paths[k], collection=unique_name,
                                         batch_size=64)[1]
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                results[k] = exc

    threads = [threading.Thread(target=load, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    with pool.connection() as conn:
        try:
            assert all(not isinstance(r, Exception) for r in results), results
            assert sum(r.inserted for r in results) == 600
            assert state(conn, unique_name) is not None
            assert state(conn, unique_name)[:2] == (600, 600)  # type: ignore[index]
        finally:
            drop_collection(conn, unique_name)


def test_a_load_waits_for_the_one_creating_its_collection(pool: Any, tmp_path: Path,
                                                         unique_name: str) -> None:
    """The race made certain: the test holds the collection's lock as a first load would while
    creating it, so the second load must wait, then load into the collection the first made
    (with that collection's model, not one of its own)."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": f"w{i}", "content": f"waiting row {i}",
                                        "embedding": [1, i, 2]}) + "\n" for i in range(50)))
    outcome: list[Any] = []
    with pool.connection() as first, pool.connection() as second:
        def load() -> None:
            try:
                outcome.append(ingest_file(second, path, collection=unique_name)[1])
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                outcome.append(exc)

        try:
            with collection_lock(first, unique_name):
                waiting = threading.Thread(target=load)
                waiting.start()
                waiting.join(timeout=1.5)
                assert waiting.is_alive() and state(first, unique_name) is None  # it waits
                create_collection(first, unique_name, dimension=3, embedder="none",
                                  model="first-model")
            waiting.join(timeout=120)
            assert not isinstance(outcome[0], Exception), outcome
            assert outcome[0].inserted == 50
            assert get_collection(first, unique_name).model == "first-model"
            assert state(first, unique_name)[:2] == (50, 50)  # type: ignore[index]
        finally:
            drop_collection(first, unique_name)


def test_two_loads_of_overlapping_rows(pool: Any, unique_name: str) -> None:
    with pool.connection() as conn:
        target = create_collection(conn, unique_name, dimension=3, embedder="none", model="x")
    # The same 2,000 rows, each batch of 50 in opposite orders in the two loads: both meet rows
    # the other has just written, and two batches written at once wait on each other (PostgreSQL
    # breaks that deadlock by undoing one of them).
    rows_a = _rows("o", 2000)
    rows_b = [row for start in range(0, 2000, 50) for row in reversed(rows_a[start:start + 50])]
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2, timeout=120)

    def load(k: int, records: list[Record]) -> None:
        with pool.connection() as conn:
            barrier.wait()
            try:
                results[k] = ingest_records(conn, target, records, batch_size=50)
            except Exception as exc:  # noqa: BLE001
                results[k] = exc

    threads = [threading.Thread(target=load, args=(k, r)) for k, r in enumerate([rows_a, rows_b])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    with pool.connection() as conn:
        try:
            assert all(not isinstance(r, Exception) for r in results), results
            assert sum(r.inserted for r in results) == 2000  # each row stored once
            assert all(r.inserted + r.skipped_duplicates == 2000 for r in results)
            assert all(not r.failed for r in results)
            assert state(conn, unique_name)[:2] == (2000, 2000)  # type: ignore[index]
        finally:
            drop_collection(conn, unique_name)


# --- faults ----------------------------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[Settings]:
    """A server of this test's own, in its own data directory (never the session's)."""
    base = Path(tempfile.mkdtemp(prefix="vecdash-kill-"))
    base.chmod(0o711)
    settings = Settings.from_env({"VECDASH_DATA_DIR": str(base / "data")})
    yield settings
    es.stop(settings.data_dir)
    subprocess.run(["rm", "-rf", str(base)], check=False)


def test_server_stopped_during_a_load(own_server: Settings, unique_name: str) -> None:
    conn = db.connect(own_server)
    target = create_collection(conn, unique_name, dimension=3, embedder="none", model="x")

    def stop_after_two_batches(report: Any) -> None:
        if report.batches == 2:
            es.stop(own_server.data_dir)

    with pytest.raises(ConnectionFailed) as info:
        ingest_records(conn, target, _rows("k", 5000), batch_size=100,
                       progress=stop_after_two_batches, parallel=False)
    message = str(info.value)
    assert "server stopped" in message and "run the same command again" in message
    stored = int(message.split(";")[1].split()[0].replace(",", ""))
    assert stored > 0
    conn.close()
    with db.connect(own_server) as again:  # started again: the stored rows are there, whole
        assert state(again, unique_name)[:2] == (stored, stored)  # type: ignore[index]
        report = ingest_records(again, get_collection(again, unique_name), _rows("k", 5000),
                                batch_size=500)
        assert report.inserted == 5000 - stored and report.skipped_duplicates == stored


def test_ctrl_c_during_a_cli_load(settings: Settings, tmp_path: Path, unique_name: str,
                                  pool: Any) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"id": f"i{i}", "content": f"row number {i} of many",
                                        "embedding": [1, i % 97, 3]}) + "\n"
                            for i in range(400_000)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("VECDASH_DATABASE_URL", "VECDASH_READ_ONLY")}
    # The progress line ends in \r, not \n: unbuffered, it arrives as each batch commits, so the
    # interrupt lands mid-load even on a busy machine.
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vecdash", "ingest", str(path), "--collection", unique_name,
         "--embedder", "none", "--batch-size", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
        # as from a terminal: a child inherits an ignored SIGINT (some earlier test's harness
        # may leave pytest so), and Python then never turns Ctrl-C into KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 120
        while not re.search(rb"\s[1-9][0-9]* new", seen):  # a batch has committed
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if ready:
                seen += os.read(proc.stderr.fileno(), 4096)
            assert time.monotonic() < deadline and proc.poll() is None, seen[-500:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (seen + err).decode(errors="replace")
    assert proc.returncode == 130, text[-2000:]
    assert "Traceback" not in text and "stopped" in text
    assert "run the same command again" in text.lower()
    with pool.connection() as conn:
        try:
            rows = state(conn, unique_name)
            assert rows is not None and 0 < rows[0] < 400_000 and rows[0] == rows[1]
        finally:
            drop_collection(conn, unique_name)


# --- errors that are not VecdashErrors ---------------------------------------------------------


def test_errors_shown_turns_a_vecdash_bug_into_a_message() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import streamlit as st

        import ui
        from vecdash.records import content_hash

        with ui.errors_shown():
            content_hash(None)  # type: ignore[arg-type]  # an AttributeError inside vecdash
        st.write("after")
        with ui.errors_shown():
            raise RuntimeError("the page's own bug")

    at = AppTest.from_function(page, default_timeout=60)
    at.run()
    assert at.error and "inside vecdash" in at.error[0].value
    assert "AttributeError" in at.error[0].value and at.markdown[0].value == "after"
    assert at.exception and "the page's own bug" in at.exception[0].message


def test_the_cli_never_shows_a_traceback(capsys: Any, tmp_path: Path, demo: Collection) -> None:
    bad = tmp_path / "q.tsv"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    code = main(["eval", "--collection", "demo", "--queries", str(bad), "--qrels", str(bad)])
    out = capsys.readouterr()
    assert code == 2 and "Traceback" not in out.err and "Could not read" in out.err


def test_drop_forgets_what_vecdash_kept_about_a_collection(conn: Any, unique_name: str) -> None:
    from vecdash.search_setting import parse_setting, save_search_setting, saved_search_setting
    from vecdash.vector_precisions import (
        ensure_vector_precisions,
        record_precisions,
        vector_precisions,
    )

    made = create_collection(conn, unique_name, dimension=3, embedder="none", model="x")
    ingest_records(conn, made, [Record("alpha beta", external_id="a", embedding=[1, 0, 0])])
    oid = conn.execute("SELECT %s::regclass::oid", (made.table.as_string(conn),)).fetchone()[0]
    save_search_setting(conn, made, parse_setting("hybrid w=0.7"))
    ensure_vector_precisions(conn)
    with conn.transaction():
        record_precisions(conn, made, {"fp32": 1})
    drop_collection(conn, unique_name)
    again = create_collection(conn, unique_name, dimension=3, embedder="none", model="x")
    try:
        assert saved_search_setting(conn, again) is None  # the old default does not come back
        assert vector_precisions(conn, again) == {}
        assert conn.execute("SELECT count(*) FROM vecdash_vector_precisions WHERE collection = %s",
                            (unique_name,)).fetchone()[0] == 0
        for side in ("vecdash_bm25_terms", "vecdash_bm25_totals"):
            assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE relid = %s").format(
                sql.Identifier(side)), (oid,)).fetchone()[0] == 0
    finally:
        drop_collection(conn, unique_name)


def test_ingest_page_nothing_loaded_is_a_warning(open_page: Any, conn: Any,
                                                 unique_name: str) -> None:
    at = open_page("app_pages/ingest.py")
    data = b"id,content\nz1,\nz2,   \nz3,\n"
    at.file_uploader(key="ing_files").set_value(("empty.csv", data, "text/csv"))
    at.run()
    at.text_input(key="ing_new_name").set_value(unique_name)
    at.run()
    at.button(key="ing_start").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.success
    assert any("0 inserted, 3 failed" in w.value for w in at.warning), [w.value for w in at.warning]
    assert any("not kept" in w.value for w in at.warning)
    assert state(conn, unique_name) is None  # no empty collection left behind
    assert at.session_state["collection"] != unique_name if "collection" in at.session_state \
        else True
