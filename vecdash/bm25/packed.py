"""Packed BM25 postings: a snapshot of a managed collection's keyword index that one statement
reads (vecdash.bm25.packed_search) and one compiled pass scores (vecdash.bm25.packed_scoring),
exactly as the SQL arms score (same top and scores, ties by id).

Per lexeme and segment one row holds the documents that have it, as two byte strings
(document ids, term frequencies: five bytes a posting); one more row holds every document's
length. A keyword search reads the rows of its query's lexemes (tens of kilobytes for a typical
query on 100,000 rows) and adds up each lexeme's BM25 part per document, in time with the
postings read: no row of the collection is read, and any k1 / b is exact, since frequencies and
lengths are stored rather than impacts.

The snapshot is built on request or after a load (collections of PACKED_MIN_ROWS rows and more),
in one REPEATABLE READ transaction that locks nothing. It is valid while the table is not
written: triggers count every write to the table (vecdash's or anyone else's, see
vecdash.bm25.write_log), the snapshot stores the count it was built at, and a search uses it only
while the two agree; otherwise the exact path answers. After a load that only added rows (ids
above the snapshot's highest) the snapshot takes them in as one more segment, at the cost of the
new rows rather than of the table; past MAX_SEGMENTS the segments are merged from their bytes.
After a delete it records the ids deleted (searches skip their postings and take df, document
count and total length from the statistics, which the delete updated), up to MAX_DELETED_SHARE
of the documents it holds; after any other write (an update, an insert below its highest id, a
TRUNCATE) it is built again from all rows.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

import numpy as np
import psycopg
from psycopg import sql

from vecdash.bm25.packed_search import read_snapshot
from vecdash.bm25.statistics import TSV_LENGTH, ensure_bm25, supports_stored_stats, table_relid
from vecdash.bm25.write_log import (
    drop_write_log,
    forget_writes_up_to,
    install_write_log,
    writes_since,
)
from vecdash.db import outside_transaction, relation_exists, require_writable
from vecdash.errors import InvalidInput, QueryTimeout
from vecdash.statement_timeout import without_statement_timeout

if TYPE_CHECKING:
    from vecdash.collections import Collection

log = logging.getLogger(__name__)

# Below this many rows the exact path takes a few milliseconds: a snapshot is not worth a build.
PACKED_MIN_ROWS = 20_000
# Scores are summed in an array indexed by id: ids much sparser than the rows are refused.
MAX_ID_PER_ROW = 4
MAX_ID_SLACK = 1_000_000
MAX_ID = 2**31 - 1  # ids are stored as int4

# Tables of earlier packed postings (one snapshot without segments; 8-byte ids and 2-byte
# frequencies; no deleted ids) are dropped and rebuilt.
_DDL: LiteralString = """
    DO $$ BEGIN
        IF to_regclass('vecdash_bm25_packed') IS NOT NULL AND NOT (EXISTS (
                SELECT FROM pg_attribute WHERE attname = 'tfs_less_one'
                AND attrelid = to_regclass('vecdash_bm25_packed')) AND EXISTS (
                SELECT FROM pg_attribute WHERE attname = 'deleted'
                AND attrelid = to_regclass('vecdash_bm25_packed_state'))) THEN
            DROP TABLE vecdash_bm25_packed, vecdash_bm25_packed_state;
        END IF;
    END $$;
    CREATE TABLE IF NOT EXISTS vecdash_bm25_packed (
        relid oid NOT NULL, lexeme text COLLATE "C" NOT NULL, segment integer NOT NULL,
        df integer NOT NULL, ids bytea NOT NULL, tfs_less_one bytea NOT NULL,
        PRIMARY KEY (relid, lexeme, segment));
    ALTER TABLE vecdash_bm25_packed ALTER ids SET STORAGE EXTERNAL,
        ALTER tfs_less_one SET STORAGE EXTERNAL, ALTER ids SET STATISTICS 0,
        ALTER tfs_less_one SET STATISTICS 0;
    CREATE TABLE IF NOT EXISTS vecdash_bm25_packed_state (
        relid oid PRIMARY KEY, writes bigint NOT NULL, docs bigint NOT NULL,
        total_length float8 NOT NULL, max_id bigint NOT NULL, segments integer NOT NULL,
        next_segment integer NOT NULL, ids bytea NOT NULL, lengths bytea NOT NULL,
        deleted bytea NOT NULL DEFAULT '', token text NOT NULL);
    ALTER TABLE vecdash_bm25_packed_state ALTER ids SET STORAGE EXTERNAL,
        ALTER lengths SET STORAGE EXTERNAL, ALTER deleted SET STORAGE EXTERNAL,
        ALTER ids SET STATISTICS 0, ALTER lengths SET STATISTICS 0,
        ALTER deleted SET STATISTICS 0;
"""
# (The byte strings are stored uncompressed, so a search reads them without decompressing, and
# without statistics, so an ANALYZE, autovacuum's too, does not read megabytes of them.)
# Ids as int4 (MAX_ID bounds them), frequencies less one as one byte (a tsvector keeps 1 to 256
# positions per lexeme), in id order: five bytes a posting, read by a search. Lengths as in the
# statistics (token positions, a lexeme without positions counting 1); the document count and
# total length are the statistics' own, so idf and the average length are the exact path's to
# the bit. A segment holds the rows with ids above %(after)s.
_PACK: LiteralString = """
    INSERT INTO vecdash_bm25_packed (relid, lexeme, segment, df, ids, tfs_less_one)
    SELECT %(relid)s, x.lexeme, %(segment)s, count(*),
           string_agg(int4send(t.id::int4), ''::bytea ORDER BY t.id),
           string_agg(substring(int2send((coalesce(array_length(x.positions, 1), 1) - 1)::int2)
                                FROM 2), ''::bytea ORDER BY t.id)
    FROM {table} t, unnest(t.tsv) x WHERE t.id > %(after)s GROUP BY x.lexeme"""
# The ids and lengths of those rows, appended to the state's (ids ascending throughout).
_STATE: LiteralString = """
    INSERT INTO vecdash_bm25_packed_state AS p (relid, writes, docs, total_length, max_id,
        segments, next_segment, ids, lengths, token)
    SELECT %(relid)s, %(writes)s, s.docs, s.total_length, coalesce(max(d.id), %(after)s),
           (count(d.id) > 0)::int, (count(d.id) > 0)::int,
           coalesce(string_agg(int8send(d.id::bigint), ''::bytea ORDER BY d.id), ''::bytea),
           coalesce(string_agg(int4send(d.len::int), ''::bytea ORDER BY d.id), ''::bytea),
           %(token)s
    FROM vecdash_bm25_totals s
    LEFT JOIN (SELECT t.id, {length} AS len FROM {table} t WHERE t.id > %(after)s) d ON true
    WHERE s.relid = %(relid)s GROUP BY s.docs, s.total_length
    ON CONFLICT (relid) DO UPDATE SET
        writes = excluded.writes, docs = excluded.docs, total_length = excluded.total_length,
        max_id = greatest(p.max_id, excluded.max_id), segments = p.segments + excluded.segments,
        next_segment = p.next_segment + excluded.next_segment, ids = p.ids || excluded.ids,
        lengths = p.lengths || excluded.lengths, token = excluded.token
    RETURNING p.segments, p.docs, p.max_id"""
# Every segment's rows of a lexeme in one (segments hold ascending id ranges, numbered in that
# order, so their byte strings concatenate in id order), numbered after them.
_MERGE: LiteralString = """
    INSERT INTO vecdash_bm25_packed (relid, lexeme, segment, df, ids, tfs_less_one)
    SELECT relid, lexeme, %(segment)s, sum(df), string_agg(ids, ''::bytea ORDER BY segment),
           string_agg(tfs_less_one, ''::bytea ORDER BY segment)
    FROM vecdash_bm25_packed WHERE relid = %(relid)s AND segment < %(segment)s
    GROUP BY relid, lexeme"""
# A load that only added rows adds a segment of them; past this many, they are merged into one
# (from the packed bytes: no row of the table is read).
MAX_SEGMENTS = 8
# Deleted documents stay in the postings, skipped by id, up to this share of those held; past
# it the next update builds the snapshot whole.
MAX_DELETED_SHARE = 0.1
def build_packed(conn: psycopg.Connection[Any], collection: Collection) -> bool:
    """Build (or rebuild) the collection's snapshot from all its rows; False when its ids are too
    sparse for it. Locks nothing: writes meanwhile leave it stale, and the exact path answers
    until the next build."""
    return _pack(conn, collection, extend=False)


def update_packed(conn: psycopg.Connection[Any], collection: Collection) -> bool:
    """Bring the snapshot up to date at the cost of what was written since: when every write
    since it only added rows (ids above the highest it holds), those rows become one more
    segment (merged with the others past MAX_SEGMENTS); after any other write, or with no
    snapshot, a whole build. False when the ids are too sparse for a snapshot."""
    return _pack(conn, collection, extend=True)


def _pack(conn: psycopg.Connection[Any], collection: Collection, *, extend: bool) -> bool:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise InvalidInput("Packed postings are built in transactions of their own: build them "
                           "on a connection with no transaction open.")
    if not supports_stored_stats(collection):
        raise InvalidInput(f"{collection.name!r} is not a managed collection with a stored tsv "
                           "column; its keyword search scores rows on the fly.")
    autocommit = conn.autocommit
    conn.autocommit = True  # the build's transactions are its own (and VACUUM needs none)
    try:
        return _pack_in_autocommit(conn, collection, extend=extend)
    finally:
        if not conn.broken:
            conn.autocommit = autocommit


def _pack_in_autocommit(conn: psycopg.Connection[Any], collection: Collection, *,
                        extend: bool) -> bool:
    require_writable(conn)
    relid = ensure_bm25(conn, collection)
    if relid is None:
        raise InvalidInput(f"{collection.name!r} has no BM25 statistics yet (read-only mode?).")
    with without_statement_timeout(conn):
        # One builder per table at a time, and no drop_packed meanwhile: the write log's
        # triggers, installed under this lock, are there when the snapshot is taken. (A session
        # lock: taken inside the snapshot's transaction, the snapshot would predate the other
        # builder's commit.)
        conn.execute("SELECT pg_advisory_lock(%s)", (_BUILD_LOCK + relid,))
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('vecdash_bm25'))")
                if not _tables_ready(conn):
                    # (Only then: the ALTERs lock the tables, and a search or another table's
                    # build reading them would wait, or deadlock with this transaction.)
                    conn.execute(_DDL)
                install_write_log(conn, collection, relid)
            with conn.transaction():
                # One snapshot for the write count, the postings and the lengths.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                conn.execute("SET LOCAL work_mem = '256MB'")
                built = _pack_in_snapshot(conn, collection, relid, extend=extend)
            if built is not None:
                state = conn.execute("SELECT writes FROM vecdash_bm25_packed_state WHERE "
                                     "relid = %s", (relid,)).fetchone()
                forget_writes_up_to(conn, relid, None if state is None else int(state[0]))
        finally:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_BUILD_LOCK + relid,))
        if built is not None:
            # The replaced rows are dead now: vacuum them at once (and set the visibility map),
            # rather than leave autovacuum to do it while searches run.
            conn.execute("VACUUM (ANALYZE) vecdash_bm25_packed, vecdash_bm25_packed_state, "
                         "vecdash_bm25_write_log")
    return built is not False


def _tables_ready(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT FROM pg_attribute WHERE attname = 'tfs_less_one' "
                       "AND attrelid = to_regclass('vecdash_bm25_packed')) AND EXISTS (SELECT "
                       "FROM pg_attribute WHERE attname = 'deleted' "
                       "AND attrelid = to_regclass('vecdash_bm25_packed_state'))").fetchone()
    return bool(row and row[0])


_BUILD_LOCK = 0x7664_6270 << 32  # "vdbp", then the table's oid
_NO_ID = -(2**63)  # below every id: a segment "above" it holds every row


def _pack_in_snapshot(conn: psycopg.Connection[Any], collection: Collection, relid: int, *,
                      extend: bool) -> bool | None:
    """True when built or extended, None when nothing was written since, False when the ids
    are too sparse (the snapshot is dropped)."""
    state = conn.execute("SELECT writes, max_id, next_segment FROM "
                         "vecdash_bm25_packed_state WHERE relid = %s", (relid,)).fetchone()
    table = collection.table
    if extend and state is not None:
        since = writes_since(conn, relid, int(state[0]), int(state[1]))
        top_id = conn.execute(sql.SQL("SELECT max(id) FROM {}").format(table)).fetchone()
        if not since.rewrote_held and (top_id is None or (top_id[0] or 0) <= MAX_ID) and (
                since.lowest_deleted is None or _mark_deleted(
                    conn, table, relid, since.lowest_deleted, int(state[1]))):
            if since.writes == int(state[0]):
                return None
            return _extend(conn, table, relid, since.writes, after=int(state[1]),
                           segment=int(state[2]))
    row = conn.execute(sql.SQL("SELECT (SELECT writes FROM vecdash_bm25_writes WHERE "
                               "relid = %s), count(*), coalesce(max(id), 0) FROM {}")
                       .format(table), (relid,)).fetchone()
    assert row is not None
    writes, rows, max_id = int(row[0]), int(row[1]), int(row[2])
    _delete_snapshot(conn, relid)
    if _too_sparse(max_id, rows):
        return False
    return _extend(conn, table, relid, writes, after=_NO_ID, segment=0)


def _mark_deleted(conn: psycopg.Connection[Any], table: sql.Composable, relid: int, lowest: int,
                  max_id: int) -> bool:
    """Add the ids the snapshot holds, from ``lowest`` up, that are no longer in the table to
    its deleted ids (searches skip their postings); False, leaving them, when the deleted ids
    would pass MAX_DELETED_SHARE of those it holds (a whole build is due)."""
    row = conn.execute(sql.SQL(
        "SELECT s.ids, s.deleted, (SELECT coalesce(string_agg(int8send(t.id), ''::bytea "
        "ORDER BY t.id), ''::bytea) FROM {} t WHERE t.id BETWEEN %(low)s AND %(high)s) "
        "FROM vecdash_bm25_packed_state s WHERE s.relid = %(relid)s").format(table),
        {"low": lowest, "high": max_id, "relid": relid}, binary=True).fetchone()
    assert row is not None
    held = np.frombuffer(row[0], dtype=">i8")
    held = held[np.searchsorted(held, lowest):]
    gone = np.setdiff1d(held, np.frombuffer(row[2], dtype=">i8"), assume_unique=True)
    deleted = np.union1d(np.frombuffer(row[1], dtype=">i8"), gone)
    if len(deleted) > MAX_DELETED_SHARE * (len(row[0]) // 8):
        return False
    conn.execute("UPDATE vecdash_bm25_packed_state SET deleted = %s WHERE relid = %s",
                 (deleted.astype(">i8").tobytes(), relid))
    return True


def _delete_snapshot(conn: psycopg.Connection[Any], relid: int) -> None:
    conn.execute("DELETE FROM vecdash_bm25_packed WHERE relid = %s", (relid,))
    conn.execute("DELETE FROM vecdash_bm25_packed_state WHERE relid = %s", (relid,))


def _too_sparse(max_id: int, rows: int) -> bool:
    return max_id > min(MAX_ID_PER_ROW * rows + MAX_ID_SLACK, MAX_ID)


def _extend(conn: psycopg.Connection[Any], table: sql.Composable, relid: int, writes: int, *,
            after: int, segment: int) -> bool:
    """Pack the rows with ids above ``after`` as segment ``segment`` and add them to the state
    (made when there is none); past MAX_SEGMENTS, merge the segments."""
    params = {"relid": relid, "writes": writes, "token": uuid.uuid4().hex, "after": after,
              "segment": segment}
    conn.execute(sql.SQL(_PACK).format(table=table), params)
    got = conn.execute(sql.SQL(_STATE).format(
        table=table, length=sql.SQL(TSV_LENGTH).format(sql.SQL("t.tsv"))), params).fetchone()
    assert got is not None
    segments, docs, max_id = (int(v) for v in got)
    if _too_sparse(max_id, docs):
        _delete_snapshot(conn, relid)
        return False
    if segments > MAX_SEGMENTS:
        merged = segment + 1
        conn.execute(_MERGE, {"relid": relid, "segment": merged})
        conn.execute("DELETE FROM vecdash_bm25_packed WHERE relid = %s AND segment < %s",
                     (relid, merged))
        conn.execute("UPDATE vecdash_bm25_packed_state SET segments = 1, next_segment = %s "
                     "WHERE relid = %s", (merged + 1, relid))
    return True


@dataclass(frozen=True)
class PackedStatus:
    """A collection's snapshot: whether no write has made it stale, its lexemes, the bytes
    its postings and lengths take, the segments its loads added (merged past MAX_SEGMENTS) and
    the deleted documents its postings still hold (skipped)."""

    current: bool
    lexemes: int
    size_bytes: int
    segments: int
    deleted: int = 0


def packed_status(conn: psycopg.Connection[Any], collection: Collection) -> PackedStatus | None:
    """The collection's snapshot, None when it has none."""
    rows = read_snapshot(conn, """
        SELECT w.writes = s.writes, s.segments,
               (SELECT count(DISTINCT p.lexeme) FROM vecdash_bm25_packed p
                WHERE p.relid = s.relid),
               (SELECT coalesce(sum(octet_length(p.ids) + octet_length(p.tfs_less_one)), 0)
                FROM vecdash_bm25_packed p WHERE p.relid = s.relid)
               + octet_length(s.ids) + octet_length(s.lengths), octet_length(s.deleted) / 8
        FROM vecdash_bm25_packed_state s LEFT JOIN vecdash_bm25_writes w ON w.relid = s.relid
        WHERE s.relid = to_regclass(%s)""", (collection.table.as_string(conn),))
    if not rows:
        return None
    current, segments, lexemes, size, deleted = rows[0]
    return PackedStatus(bool(current), int(lexemes), int(size), int(segments), int(deleted))


def packed_is_current(conn: psycopg.Connection[Any], collection: Collection) -> bool:
    """Whether the collection has a snapshot that no write has made stale."""
    status = packed_status(conn, collection)
    return status is not None and status.current


def describe_packed(name: str, status: PackedStatus | None) -> str:
    """One line on a collection's snapshot, for the command line."""
    if status is None:
        return (f"{name}: no packed BM25 postings (built after a load from {PACKED_MIN_ROWS:,} "
                "rows, or with --pack): keyword search scores matching rows")
    state = ("current: keyword search at the default settings reads them" if status.current
             else "stale (the table was written since): keyword search takes the exact path "
                  "until the next load or --pack")
    parts = "" if status.segments <= 1 else f" in {status.segments} segments"
    if status.deleted:
        parts += f" (holding {status.deleted:,} deleted documents, skipped)"
    return (f"{name}: packed BM25 postings of {status.lexemes:,} lexemes{parts}, "
            f"{status.size_bytes / 1e6:.1f} MB, {state}")


def drop_packed(conn: psycopg.Connection[Any], collection: Collection) -> None:
    """Drop the collection's snapshot and the write log's triggers, so writes to the table cost
    nothing of vecdash's (its keyword search takes the exact path until the next load of a
    large collection or build_packed, which install them again). Waits for a build of the same
    table to finish; raises QueryTimeout, leaving everything as it was, when another session's
    write keeps the table locked for LOCK_WAIT."""
    require_writable(conn)
    relid = table_relid(conn, collection)
    if relid is None:
        return
    conn.execute("SELECT pg_advisory_lock(%s)", (_BUILD_LOCK + relid,))
    try:
        with conn.transaction():
            # (set_config local: inside a caller's transaction, its own setting comes back)
            prior = conn.execute("SELECT current_setting('lock_timeout'), "
                                 "set_config('lock_timeout', %s, true)", (LOCK_WAIT,)).fetchone()
            drop_write_log(conn, collection, relid)  # (first: the table's lock, then no writer)
            forget_packed(conn, collection)
            conn.execute("SELECT set_config('lock_timeout', %s, true)",
                         (prior[0] if prior else "0",))
    except psycopg.errors.LockNotAvailable:
        raise QueryTimeout(
            f"{collection.name!r} is being written by another session, which holds its table "
            f"for longer than {LOCK_WAIT}; its packed postings were left as they were. Try "
            "again when that write has finished.") from None
    finally:
        if not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_BUILD_LOCK + relid,))


LOCK_WAIT = "5s"  # how long drop_packed waits for a writer's lock on the table


def pack_after_load(conn: psycopg.Connection[Any], collection: Collection, rows: int) -> bool:
    """Update the snapshot after a load that left about ``rows`` rows, from PACKED_MIN_ROWS up,
    on a connection in autocommit (the build needs transactions of its own); whether it did. A
    failed build costs only speed: the load stands and the exact path answers."""
    if rows < PACKED_MIN_ROWS or not supports_stored_stats(collection) or (
            not outside_transaction(conn)):
        return False
    try:
        return update_packed(conn, collection)
    except psycopg.Error as exc:
        log.warning("the packed BM25 postings of %s were not rebuilt after the load (%s); its "
                    "keyword search takes the exact path", collection.name, type(exc).__name__)
        return False


def forget_packed(conn: psycopg.Connection[Any], collection: Collection) -> None:
    """For drop_collection: the snapshot and write count of a table about to go."""
    for side in ("vecdash_bm25_packed", "vecdash_bm25_packed_state", "vecdash_bm25_writes",
                 "vecdash_bm25_write_log"):
        if relation_exists(conn, side):
            conn.execute(sql.SQL("DELETE FROM {} WHERE relid = to_regclass(%s)").format(
                sql.Identifier(side)), (collection.table.as_string(conn),))
