"""Packed BM25 postings: the keyword arm scored from them in numpy gives the exact path's top and
scores (ids in order, ties by id) at any k1 / b, on the demo and on random corpora; any write to
the table, through vecdash or not, makes the snapshot stale and the exact path answers; a load
of a large collection rebuilds it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from tests.test_postings import QUERIES, WORDS, demo_copy, exact, from_postings, load
from vecdash.bm25 import packed
from vecdash.bm25.packed import build_packed, packed_is_current
from vecdash.collections import Collection, create_collection, drop_collection, get_collection
from vecdash.demo import demo_queries
from vecdash.ingest import delete_documents
from vecdash.search import fetch_candidates


def from_packed(conn: Any, c: Collection, query: str, candidates: int,
                **kwargs: Any) -> list[tuple[Any, float]]:
    got, work = from_postings(conn, c, query, candidates, **kwargs)
    assert work.get("path") == "packed postings", (query, work)
    return got


def assert_same_top(conn: Any, c: Collection, queries: list[str], candidates: int,
                    **kwargs: Any) -> None:
    for q in queries:
        want = exact(conn, c, q, candidates, **kwargs)
        got = from_packed(conn, c, q, candidates, **kwargs)
        assert [k for k, _ in got] == [k for k, _ in want], q
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-9), q


@pytest.fixture
def corpus(conn: Any, unique_name: str) -> Iterator[Collection]:
    c = create_collection(conn, unique_name, dimension=4, embedder="none", model="x")
    load(conn, c, np.random.default_rng(0), 600, start=0)
    assert build_packed(conn, c)
    yield get_collection(conn, unique_name)
    drop_collection(conn, unique_name)


@pytest.mark.parametrize("candidates", [1, 10, 100])
@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (0.6, 0.3), (2.0, 0.9)])
def test_packed_top_equals_exact(conn: Any, corpus: Collection, candidates: int, k1: float,
                                 b: float) -> None:
    # the random texts hold many ties (same words, same length): broken by id, as in SQL
    assert_same_top(conn, corpus, QUERIES, candidates, k1=k1, b=b)


def test_packed_on_the_demo(conn: Any, demo: Collection, unique_name: str) -> None:
    c = demo_copy(conn, demo, unique_name)
    try:
        assert build_packed(conn, c)
        queries = [q.text for q in demo_queries()]
        assert_same_top(conn, c, queries, 100)
        # the hybrid's candidates: the semantic arm beside it is the exact path's too
        vector = conn.execute(sql.SQL("SELECT embedding FROM {} LIMIT 1").format(c.table)
                              ).fetchone()[0]
        for q in queries[:10]:
            fast = fetch_candidates(conn, c, q, vector, candidates=50)
            slow = fetch_candidates(conn, c, q, vector, candidates=50, prune=False)
            assert fast.work.get("path") == "packed postings" and not slow.work
            order = np.argsort(fast.columns["id"].astype(str))
            other = np.argsort(slow.columns["id"].astype(str))
            for column in ("id", "semantic_rank", "bm25_rank"):
                np.testing.assert_array_equal(fast.columns[column][order],
                                              slow.columns[column][other])
            np.testing.assert_allclose(fast.columns["bm25_score"][order],
                                       slow.columns["bm25_score"][other], atol=1e-9)
    finally:
        drop_collection(conn, unique_name)


@pytest.mark.parametrize("write", [
    "INSERT INTO {t} (external_id, content, content_hash, embedding) "
    "VALUES ('outside', 'bread bread yeast', 'h-outside', '[1,0,0,0]')",
    "UPDATE {t} SET content = 'kettle rope' WHERE id = (SELECT min(id) FROM {t})",
    "DELETE FROM {t} WHERE id = (SELECT max(id) FROM {t})",
    "DELETE FROM {t} WHERE id % 5 = 0",  # a fifth of the rows: past MAX_DELETED_SHARE
])
def test_any_write_makes_it_stale(conn: Any, corpus: Collection, write: str) -> None:
    """A write outside vecdash (plain SQL) is seen too: the exact path answers, then a rebuild
    serves again."""
    assert packed_is_current(conn, corpus)
    conn.execute(sql.SQL(write).format(t=corpus.table))
    assert not packed_is_current(conn, corpus)
    got = fetch_candidates(conn, corpus, "bread yeast", None, keyword_rankers=("bm25",))
    assert not got.work and any("--pack" in n for n in got.notes)
    assert build_packed(conn, corpus)
    assert_same_top(conn, corpus, QUERIES[:4], 20)


def test_a_load_or_a_delete_rebuilds_it_on_a_large_collection(
        conn: Any, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed, "PACKED_MIN_ROWS", 300)
    c = create_collection(conn, unique_name, dimension=4, embedder="none", model="x")
    try:
        rng = np.random.default_rng(3)
        load(conn, c, rng, 200, start=0)
        assert not packed_is_current(conn, c)  # 200 rows: below the size, no snapshot
        load(conn, c, rng, 200, start=200)
        assert packed_is_current(conn, c)
        assert_same_top(conn, c, QUERIES, 30)
        assert delete_documents(conn, c, [f"r{i}" for i in range(0, 400, 3)]) > 0
        assert packed_is_current(conn, c)
        assert_same_top(conn, c, QUERIES, 30)
    finally:
        drop_collection(conn, unique_name)


def current(conn: Any, c: Collection) -> packed.PackedStatus:
    status = packed.packed_status(conn, c)
    assert status is not None and status.current
    return status


def segments(conn: Any, c: Collection) -> int:
    return current(conn, c).segments


def test_loads_that_only_add_rows_extend_it_segment_by_segment(
        conn: Any, corpus: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load adds a segment of its rows (not a build over the table), exact as before;
    past MAX_SEGMENTS the segments are merged into one."""
    monkeypatch.setattr(packed, "PACKED_MIN_ROWS", 300)
    monkeypatch.setattr(packed, "MAX_SEGMENTS", 3)
    rng = np.random.default_rng(5)
    assert segments(conn, corpus) == 1
    for n, want in [(50, 2), (1, 3), (80, 1), (40, 2)]:
        start = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(corpus.table)
                                 ).fetchone()[0])
        load(conn, corpus, rng, n, start=start)
        assert segments(conn, corpus) == want, n
        assert_same_top(conn, corpus, QUERIES, 40)
    assert_same_top(conn, corpus, QUERIES[:3], 40, k1=0.7, b=0.2)
    # nothing written since: an update does nothing
    token = conn.execute("SELECT token FROM vecdash_bm25_packed_state WHERE relid = %s::regclass",
                         (corpus.table.as_string(conn),)).fetchone()
    assert packed.update_packed(conn, corpus)
    assert conn.execute("SELECT token FROM vecdash_bm25_packed_state WHERE relid = "
                        "%s::regclass", (corpus.table.as_string(conn),)).fetchone() == token


@pytest.mark.parametrize("write", [
    "UPDATE {t} SET content = 'bread bread bread' WHERE id = (SELECT min(id) FROM {t})",
    "DELETE FROM {t} WHERE id % 5 = 0",  # a fifth of the rows: past MAX_DELETED_SHARE
    # an id below the snapshot's highest, in a gap: an insert, but not above what it holds
    "INSERT INTO {t} (id, external_id, content, content_hash, embedding) OVERRIDING SYSTEM VALUE "
    "VALUES "
    "((SELECT max(id) - 1 FROM {t}), 'gap', 'bread yeast yeast', 'h-gap', '[1,0,0,0]')",
])
def test_after_any_other_write_the_next_load_builds_it_whole(
        conn: Any, corpus: Collection, monkeypatch: pytest.MonkeyPatch, write: str) -> None:
    monkeypatch.setattr(packed, "PACKED_MIN_ROWS", 300)
    # make a gap below the highest id for the insert to fill
    conn.execute(sql.SQL("DELETE FROM {t} WHERE id = (SELECT max(id) - 1 FROM {t})").format(
        t=corpus.table))
    assert build_packed(conn, corpus)
    conn.execute(sql.SQL(write).format(t=corpus.table))
    load(conn, corpus, np.random.default_rng(6), 30, start=600)
    assert (segments(conn, corpus), deleted(conn, corpus)) == (1, 0)
    assert_same_top(conn, corpus, QUERIES, 40)


def deleted(conn: Any, c: Collection) -> int:
    return current(conn, c).deleted


def test_deletes_are_skipped_by_id_until_they_pass_a_share(
        conn: Any, corpus: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete (vecdash's or plain SQL) leaves the postings and records the deleted ids, whose
    postings searches skip, with the statistics' df and average length: exact as before, at any
    k1 / b, with segments added after; past MAX_DELETED_SHARE the next update builds it whole."""
    monkeypatch.setattr(packed, "PACKED_MIN_ROWS", 300)
    queries = [*QUERIES, "w3 w6", "w3", "w601 bread"]  # w3, w6: words of deleted rows only
    assert delete_documents(conn, corpus, [f"r{i}" for i in range(0, 21, 3)]) == 7
    assert (deleted(conn, corpus), segments(conn, corpus)) == (7, 1)
    assert exact(conn, corpus, "w3", 10) == []
    assert_same_top(conn, corpus, queries, 40)
    assert_same_top(conn, corpus, queries[-4:], 40, k1=0.7, b=0.2)
    load(conn, corpus, np.random.default_rng(8), 30, start=600)  # a segment beside them
    assert (deleted(conn, corpus), segments(conn, corpus)) == (7, 2)
    # plain SQL: a row added (not packed yet), then it and a held row deleted in one statement
    conn.execute(sql.SQL("INSERT INTO {} (external_id, content, content_hash, embedding) "
                         "VALUES ('fresh', 'bread', 'h-fresh', '[1,0,0,0]')").format(corpus.table))
    conn.execute(sql.SQL("DELETE FROM {} WHERE external_id IN ('fresh', 'r40')").format(
        corpus.table))
    assert packed.update_packed(conn, corpus)
    assert deleted(conn, corpus) == 8
    assert_same_top(conn, corpus, queries, 40)
    # 7 + 1 + 60 of 630 held: past 10%, a whole build (no deleted ids held)
    assert delete_documents(conn, corpus, [f"r{i}" for i in range(100, 400, 5)]) == 60
    assert (deleted(conn, corpus), segments(conn, corpus)) == (0, 1)
    assert_same_top(conn, corpus, queries, 40)


def test_a_write_log_without_kinds_is_upgraded_and_its_writes_build_whole(
        conn: Any, corpus: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """The log of an earlier vecdash had no kind of write (nor folding): its writes of held rows
    count as updates (a whole build), and the log and its functions are upgraded at the next
    build."""
    monkeypatch.setattr(packed, "PACKED_MIN_ROWS", 300)
    conn.execute("ALTER TABLE vecdash_bm25_write_log DROP COLUMN kind")
    conn.execute("""CREATE OR REPLACE FUNCTION vecdash_bm25_write_delete() RETURNS trigger
        LANGUAGE plpgsql AS $$ DECLARE n bigint; BEGIN
        INSERT INTO vecdash_bm25_writes AS w (relid, writes) VALUES (TG_RELID, 1)
        ON CONFLICT (relid) DO UPDATE SET writes = w.writes + 1 RETURNING w.writes INTO n;
        INSERT INTO vecdash_bm25_write_log (relid, write, low_id)
        SELECT TG_RELID, n, min(id) FROM vecdash_old; RETURN NULL; END $$""")
    conn.execute(sql.SQL("DELETE FROM {} WHERE external_id = 'r2'").format(corpus.table))
    token = conn.execute("SELECT token FROM vecdash_bm25_packed_state WHERE relid = "
                         "%s::regclass", (corpus.table.as_string(conn),)).fetchone()
    assert packed.update_packed(conn, corpus)
    assert (segments(conn, corpus), deleted(conn, corpus)) == (1, 0)  # built whole
    assert conn.execute("SELECT token FROM vecdash_bm25_packed_state WHERE relid = "
                        "%s::regclass", (corpus.table.as_string(conn),)).fetchone() != token
    assert_same_top(conn, corpus, QUERIES, 30)
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'vecdash_bm25_write_%' "
                        "AND prosrc LIKE '%only_deletes%'").fetchone()[0] == 4  # (folding too)
    assert delete_documents(conn, corpus, ["r1"]) == 1  # the upgraded log: a delete, skipped
    assert deleted(conn, corpus) == 1
    assert_same_top(conn, corpus, QUERIES, 30)


def log_rows(conn: Any, c: Collection) -> int:
    return int(conn.execute("SELECT count(*) FROM vecdash_bm25_write_log WHERE relid = "
                            "%s::regclass", (c.table.as_string(conn),)).fetchone()[0])


@pytest.mark.parametrize("write", ["insert", "update", "delete"])
def test_a_table_written_statement_by_statement_keeps_a_short_log(
        conn: Any, corpus: Collection, write: str) -> None:
    """An application's own writes, one statement each: the log is folded every
    COMPACT_EVERY writes, and the next update still does what the writes call for: appends
    become a segment, a rewrite among them a whole build, deletes are recorded."""
    from vecdash.bm25.write_log import COMPACT_EVERY

    statements = COMPACT_EVERY + 150
    gone = []
    for i in range(statements):
        if write == "update" and i == 7:
            conn.execute(sql.SQL("UPDATE {} SET content = 'kettle rope bread' WHERE id = "
                                 "(SELECT min(id) FROM {})").format(corpus.table, corpus.table))
        elif write == "delete" and i % 50 == 0:
            gone.append(conn.execute(sql.SQL("DELETE FROM {} WHERE id = (SELECT max(id) FROM {})"
                                             " RETURNING id").format(corpus.table, corpus.table)
                                     ).fetchone()[0])
        elif write == "delete":
            conn.execute(sql.SQL("DELETE FROM {} WHERE false").format(corpus.table))  # (no row)
        else:
            conn.execute(sql.SQL(INSERT_OUTSIDE).format(t=corpus.table), (f"s{i}", f"h-s{i}"))
    assert log_rows(conn, corpus) <= statements - COMPACT_EVERY + 1
    assert packed.update_packed(conn, corpus)
    want = {"insert": (2, 0), "update": (1, 0), "delete": (1, len(gone))}[write]
    assert (segments(conn, corpus), deleted(conn, corpus)) == want
    assert_same_top(conn, corpus, QUERIES, 30)


def test_a_writers_open_fold_neither_stalls_nor_fails_a_build(
        conn: Any, corpus: Collection, pool: Any) -> None:
    """A writer whose statement folded the log holds the folded rows until it commits; a build
    meanwhile neither waits for it nor fails, and the fold, once committed, is taken in."""
    from vecdash.bm25.write_log import COMPACT_EVERY

    for i in range(5):  # committed writes since the snapshot: the build extends it
        conn.execute(sql.SQL(INSERT_OUTSIDE).format(t=corpus.table), (f"c{i}", f"h-c{i}"))
    relid = conn.execute("SELECT %s::regclass::oid", (corpus.table.as_string(conn),)).fetchone()[0]
    with pool.connection() as writer:
        with writer.transaction():
            writes = writer.execute("SELECT writes FROM vecdash_bm25_writes WHERE relid = %s",
                                    (relid,)).fetchone()[0]
            for i in range(COMPACT_EVERY - writes % COMPACT_EVERY):  # the last one folds
                writer.execute(sql.SQL(INSERT_OUTSIDE).format(t=corpus.table),
                               (f"w{i}", f"h-w{i}"))
            conn.execute("SET lock_timeout = '2s'")  # (a wait for the writer fails the build)
            try:
                assert packed.update_packed(conn, corpus)
            finally:
                conn.execute("RESET lock_timeout")
            assert packed_is_current(conn, corpus)
            assert_same_top(conn, corpus, QUERIES[:4], 20)
    assert not packed_is_current(conn, corpus)
    assert packed.update_packed(conn, corpus)
    assert log_rows(conn, corpus) == 0
    assert_same_top(conn, corpus, QUERIES, 30)


def test_rows_written_after_a_later_load_was_packed_are_not_missed(
        conn: Any, corpus: Collection) -> None:
    """Ids come from the sequence as a statement runs, not as it commits: a long COPY holds ids
    below those of a short load that commits (and is packed) first. Its rows then lie below the
    snapshot's highest id: taken for an append they would be missed; the next update builds
    it whole."""
    sequence = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')",
                            (corpus.table.as_string(conn),)).fetchone()[0]
    held = [conn.execute("SELECT nextval(%s)", (sequence,)).fetchone()[0] for _ in range(5)]
    columns = sql.SQL("INSERT INTO {} (external_id, content, content_hash, embedding, id) "
                      ).format(corpus.table)
    late = conn.execute(columns + sql.SQL("VALUES ('late', 'quokka bread', 'h-late', "
                                          "'[1,0,0,0]', DEFAULT) RETURNING id")).fetchone()[0]
    assert packed.update_packed(conn, corpus) and segments(conn, corpus) == 2
    for i, id_ in enumerate(held):
        conn.execute(columns + sql.SQL("OVERRIDING SYSTEM VALUE VALUES (%s, 'quokka "
                                       "bread', %s, '[1,0,0,0]', %s)"),
                     (f"early{i}", f"h-early{i}", id_))
    assert not packed_is_current(conn, corpus)
    assert packed.update_packed(conn, corpus) and segments(conn, corpus) == 1
    assert_same_top(conn, corpus, QUERIES[:3], 40)
    got = {k for k, _ in from_packed(conn, corpus, "quokka", 10)}
    assert got == {*held, late}


def test_two_builders_at_once_leave_one_exact_snapshot(conn: Any, corpus: Collection,
                                                       pool: Any) -> None:
    """Two loads ending together update it one after the other (a lock per table), on
    connections in autocommit or not."""
    from concurrent.futures import ThreadPoolExecutor

    load(conn, corpus, np.random.default_rng(8), 60, start=600)  # below PACKED_MIN_ROWS

    def update(autocommit: bool) -> bool:
        with pool.connection() as other:
            other.autocommit = autocommit
            try:
                return packed.update_packed(other, corpus)
            finally:
                other.autocommit = True  # as the pool hands it out

    with ThreadPoolExecutor(2) as workers:
        assert all(workers.map(update, [True, False]))
    assert segments(conn, corpus) == 2
    assert_same_top(conn, corpus, QUERIES, 40)


def test_filters_and_long_queries_take_the_exact_path(conn: Any, corpus: Collection) -> None:
    got = fetch_candidates(conn, corpus, "bread yeast", None, keyword_rankers=("bm25",),
                           filters={"categories": ("x",)})
    assert not got.work
    long_query = " ".join(WORDS) + " " + " ".join(f"w{i}" for i in range(40))
    got = fetch_candidates(conn, corpus, long_query, None, keyword_rankers=("bm25",))
    assert not got.work and any("rarest" in n for n in got.notes)
    both = fetch_candidates(conn, corpus, "bread", None, keyword_rankers=("bm25", "ts_rank_cd"))
    assert not both.work


def test_drop_collection_forgets_it(conn: Any, corpus: Collection) -> None:
    relid = conn.execute("SELECT %s::regclass::oid", (corpus.table.as_string(conn),)
                         ).fetchone()[0]
    drop_collection(conn, corpus.name)
    for side in ("vecdash_bm25_packed", "vecdash_bm25_packed_state", "vecdash_bm25_writes"):
        assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE relid = %s").format(
            sql.Identifier(side)), (relid,)).fetchone() == (0,)
    create_collection(conn, corpus.name, dimension=4, embedder="none", model="x")  # for teardown


def test_the_postings_command_packs_reports_and_unpacks(
        conn: Any, corpus: Collection, capsys: pytest.CaptureFixture[str]) -> None:
    from vecdash.cli import main

    assert main(["postings", "--collection", corpus.name]) == 0
    assert "packed BM25 postings of" in capsys.readouterr().out
    conn.execute(sql.SQL("DELETE FROM {} WHERE id = (SELECT max(id) FROM {})").format(
        corpus.table, corpus.table))
    assert main(["postings", "--collection", corpus.name]) == 0
    assert "stale" in capsys.readouterr().out
    assert main(["postings", "--collection", corpus.name, "--pack"]) == 0
    assert ", current" in capsys.readouterr().out
    assert main(["postings", "--collection", corpus.name, "--unpack"]) == 0
    assert "no packed BM25 postings" in capsys.readouterr().out
    assert not packed_is_current(conn, corpus)


def write_log_of(conn: Any, c: Collection) -> tuple[set[str], int]:
    """The write log's triggers on the table and its rows of the table's writes."""
    from vecdash.bm25.write_log import TRIGGERS

    relid = conn.execute("SELECT %s::regclass::oid", (c.table.as_string(conn),)).fetchone()[0]
    names = {r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s",
                                        (relid,)).fetchall()} & set(TRIGGERS)
    rows = conn.execute("SELECT (SELECT count(*) FROM vecdash_bm25_write_log WHERE relid = %(r)s)"
                        " + (SELECT count(*) FROM vecdash_bm25_writes WHERE relid = %(r)s)",
                        {"r": relid}).fetchone()[0]
    return names, int(rows)


INSERT_OUTSIDE = ("INSERT INTO {t} (external_id, content, content_hash, embedding) "
                  "VALUES (%s, 'bread yeast', %s, '[1,0,0,0]')")


def test_unpacking_stops_counting_the_tables_writes(conn: Any, corpus: Collection) -> None:
    """Without packed postings nothing needs the table's writes counted: the triggers go, and
    writes leave no trace; the next build counts them again."""
    assert write_log_of(conn, corpus)[0]
    packed.drop_packed(conn, corpus)
    conn.execute(sql.SQL(INSERT_OUTSIDE).format(t=corpus.table), ("o1", "h-o1"))
    assert write_log_of(conn, corpus) == (set(), 0)
    got = fetch_candidates(conn, corpus, "bread yeast", None, keyword_rankers=("bm25",))
    assert not got.work  # the exact path
    assert build_packed(conn, corpus) and packed_is_current(conn, corpus)
    assert_same_top(conn, corpus, QUERIES[:4], 20)
    conn.execute(sql.SQL(INSERT_OUTSIDE).format(t=corpus.table), ("o2", "h-o2"))
    assert not packed_is_current(conn, corpus)  # counted again


def test_unpacking_waits_a_while_for_a_writer_then_leaves_everything(
        conn: Any, corpus: Collection, pool: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from vecdash.errors import QueryTimeout

    monkeypatch.setattr(packed, "LOCK_WAIT", "200ms")
    with pool.connection() as writer:
        with writer.transaction():  # a write in progress holds the table
            writer.execute(sql.SQL(INSERT_OUTSIDE).format(t=corpus.table), ("o3", "h-o3"))
            with pytest.raises(QueryTimeout, match="being written by another session"):
                packed.drop_packed(conn, corpus)
            assert write_log_of(conn, corpus)[0]
            assert packed.packed_status(conn, corpus) is not None
    assert not packed_is_current(conn, corpus)  # (the write was counted)
    packed.drop_packed(conn, corpus)
    assert packed.packed_status(conn, corpus) is None


def test_a_read_only_demo_reads_the_snapshot(conn: Any, corpus: Collection,
                                             settings: Any) -> None:
    """Read-only mode connects as a role that may only read: the snapshot serves it too."""
    from dataclasses import replace

    from vecdash import db

    with db.connect(replace(settings, read_only=True)) as reader:
        assert db.is_read_only(reader)
        assert from_packed(reader, get_collection(reader, corpus.name), "bread yeast", 10) == \
            exact(conn, corpus, "bread yeast", 10)


def test_frequencies_up_to_a_tsvectors_cap_are_exact(conn: Any, unique_name: str) -> None:
    """A frequency is stored as one byte, less one (a tsvector keeps at most 256 positions of a
    lexeme, 255 in this PostgreSQL: more repeats count 255), each scored as the exact path
    scores it."""
    from vecdash.ingest import ingest_records
    from vecdash.records import Record

    c = create_collection(conn, unique_name, dimension=4, embedder="none", model="x")
    try:
        repeats = [1, 2, 3, 127, 128, 255, 256, 257, 400, 1000]
        texts = [" ".join(["bread"] * n + ["rope"] * (n % 7) + [f"w{i}"]) for i, n in
                 enumerate(repeats)] + [f"kettle rope w{i}" for i in range(20)]
        report = ingest_records(conn, c, [Record(t, external_id=f"r{i}", embedding=[1, 0, 0, 0])
                                          for i, t in enumerate(texts)])
        assert report.inserted == len(texts)
        assert build_packed(conn, c)
        assert_same_top(conn, c, ["bread", "bread rope", "rope kettle"], 30)
    finally:
        drop_collection(conn, unique_name)


def test_ids_beyond_four_bytes_leave_the_exact_path_to_answer(conn: Any, corpus: Collection,
                                                                ) -> None:
    """Ids are stored in four bytes: a load of rows with larger ids (an identity restarted far
    up) drops the snapshot instead of failing, and the exact path answers."""
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN id RESTART WITH 2147483700").format(
        corpus.table))
    load(conn, corpus, np.random.default_rng(5), 3, start=900)
    assert packed.update_packed(conn, corpus) is False
    assert packed.packed_status(conn, corpus) is None
    got, work = from_postings(conn, corpus, "bread w901", 10)
    assert not work and got == exact(conn, corpus, "bread w901", 10)
    assert got[0][0] > 2**31  # (the new row, found)


@pytest.mark.parametrize("earlier", [
    # the eight-byte layout (docs, tfs)
    "DROP TABLE vecdash_bm25_packed; CREATE TABLE vecdash_bm25_packed (relid oid NOT NULL, "
    "lexeme text NOT NULL, segment integer NOT NULL, df integer NOT NULL, docs bytea NOT NULL, "
    "tfs bytea NOT NULL, PRIMARY KEY (relid, lexeme, segment))",
    # a state without deleted ids (its postings otherwise as now)
    "ALTER TABLE vecdash_bm25_packed_state DROP COLUMN deleted",
])
def test_an_earlier_layout_is_replaced_by_the_next_build(conn: Any, corpus: Collection,
                                                         earlier: str) -> None:
    """Tables of an earlier layout are not read (the exact path answers) and are replaced by
    the next build."""
    conn.execute(earlier)
    got, work = from_postings(conn, corpus, "bread yeast", 10)
    assert not work and got == exact(conn, corpus, "bread yeast", 10)
    assert not packed_is_current(conn, corpus)
    assert build_packed(conn, corpus)
    assert_same_top(conn, corpus, QUERIES, 20)
