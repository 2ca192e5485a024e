"""Writing prepared batches: one binary COPY and the data_version bump per batch, in one
transaction, on the caller's connection or overlapped on up to WRITERS sibling connections, and
the lookups of which rows a collection stores already."""

from __future__ import annotations

import contextlib
import random
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from vecdash.collections import Collection, bump_data_version
from vecdash.db import sibling_connection
from vecdash.embedding_cache import CacheEntries, write_cache_entries
from vecdash.ingest_report import Failure, IngestReport, ProgressCallback
from vecdash.vector_precisions import record_precisions

# Batches written at once by background connections (see ingest_records): two keep both cores
# of a small machine busy; the server's row locks order what they share (statistics, registry).
WRITERS = 2
# The columns a batch's COPY rows carry, in order, and the types their values are sent as: jsonb
# and the vector travel as bytes already in their binary input formats (bytea's dumper passes
# them through; binary COPY fields carry no type of their own).
COPY_COLUMNS = ("external_id", "title", "content", "category", "metadata", "content_hash",
                "created_at", "embedding")
COPY_TYPES = ("text", "text", "text", "text", "bytea", "text", "timestamptz", "bytea")
_ID, _HASH = COPY_COLUMNS.index("external_id"), COPY_COLUMNS.index("content_hash")
ID_TAKEN = "another document with this id is already stored (different content)"
# A row PostgreSQL refuses on its own (a tsvector over 1 MB, bad text): the batch is written
# again in halves, so that row alone fails and the others load.
ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.ProgramLimitExceeded)
# Another load writing the same rows at once: this batch met a row it stores (a unique key), or
# PostgreSQL broke a deadlock between the two (each waiting on a row the other had written) by
# rolling this batch back. Either way the batch is whole undone; it is checked and written again.
# (psycopg's classes for SQLSTATE class 40 do not derive from TransactionRollback: named each.)
ROLLED_BACK_FOR_ANOTHER = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
                           psycopg.errors.TransactionRollback)
RACE_ERRORS = (psycopg.errors.UniqueViolation, *ROLLED_BACK_FOR_ANOTHER)
# How many times a batch is checked and written again before the load gives up.
RACE_RETRIES = 8


@dataclass
class PreparedBatch:
    """A batch ready to write: COPY rows (COPY_COLUMNS), and its content hashes and external
    ids; ``unchecked``: prepared without looking up which of its rows are stored already;
    ``precisions``: its rows the local model embedded, per precision (vector_precisions)."""

    rows: list[tuple[Any, ...]]
    hashes: set[str]
    external_ids: set[str]
    unchecked: bool = False
    precisions: dict[str, int] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # external id -> "file.csv:12"
    to_cache: CacheEntries | None = None  # new vectors for the embedding cache, written first



class BatchWriter:
    """Writes prepared batches: on ``conn`` itself (a load of one batch, or no ``overlap``), or
    on up to WRITERS other connections, each from a background thread, so the server indexes
    batches while this thread prepares the next one. ``pending_keys`` are the hashes and external
    ids of the batches in flight. Batches are collected (counted, progress reported) in order.

    An unchecked batch (see vecdash.ingest._prepare_batch) that meets a stored row fails on a unique key and
    rolls back whole; it is then written again on ``conn`` without its stored rows, which are
    counted (skipped duplicates, ids taken), and from then on batches are prepared checked
    (``check_stored``): this collection holds rows of this load."""

    def __init__(self, conn: psycopg.Connection[Any], collection: Collection,
                 report: IngestReport, progress: ProgressCallback | None, *, overlap: bool):
        self.conn = conn
        self.collection = collection
        self.report = report
        self.progress = progress
        self.overlap = overlap
        self.submitted = 0
        self.check_stored = False
        self.idle: list[psycopg.Connection[Any]] = []
        self.opened: list[psycopg.Connection[Any]] = []
        self.pool: ThreadPoolExecutor | None = None
        self.in_flight: deque[tuple[Future[tuple[int, list[Failure]]], PreparedBatch,
                                    psycopg.Connection[Any], int]] = deque()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            # An error on this side: let the batches being written commit (or fail) first.
            while self.in_flight:
                with contextlib.suppress(Exception):
                    self.in_flight.popleft()[0].result()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
            for other in self.opened:
                other.close()

    def pending_keys(self) -> tuple[set[str], set[str]]:
        hashes: set[str] = set()
        ids: set[str] = set()
        for _, batch, _, _ in self.in_flight:
            hashes |= batch.hashes
            ids |= batch.external_ids
        return hashes, ids

    def submit(self, batch: PreparedBatch | None, size: int, *, alone: bool = False) -> None:
        """Write ``batch`` (prepared from ``size`` records; None: nothing in them to write);
        ``alone``: the only batch of the load, written on ``conn`` (no other connection)."""
        if batch is None:
            self.finish()
            self._done(0, size)
            return
        self.submitted += 1
        if not self.overlap or alone:
            self.finish()
            try:
                inserted = self._counted(write_new(self.conn, self.collection, batch))
            except RACE_ERRORS:
                # unchecked, or another load stored some of these rows meanwhile
                inserted = self._write_checked(batch)
            self._done(inserted, size)
            return
        if len(self.in_flight) >= WRITERS:
            self._collect_one()
        if self.idle:
            other = self.idle.pop()
        else:
            other = sibling_connection(self.conn)
            self.opened.append(other)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="vecdash-copy")
        self.in_flight.append(
            (self.pool.submit(write_new, other, self.collection, batch),
             batch, other, size))

    def finish(self) -> None:
        while self.in_flight:
            self._collect_one()

    def poll(self) -> None:
        """Count the batches that have committed (in order), without waiting."""
        while self.in_flight and self.in_flight[0][0].done():
            self._collect_one()

    def _collect_one(self) -> None:
        future, batch, other, size = self.in_flight[0]
        try:
            inserted = self._counted(future.result())  # an error leaves it in flight for __exit__
        except RACE_ERRORS:
            self.in_flight.popleft()
            self.idle.append(other)
            inserted = self._write_checked(batch)
        else:
            self.in_flight.popleft()
            self.idle.append(other)
        self._done(inserted, size)

    def _write_checked(self, batch: PreparedBatch) -> int:
        """Write a batch that met a stored row (or another load's deadlock) again, without its
        stored rows. The batches in flight cannot hold its rows or ids (pending keys), so none of
        them waits; another load's can, and a retry waits a little longer each time for it."""
        self.check_stored = True
        rows = batch.rows
        for attempt in range(RACE_RETRIES):
            keep = unstored(self.conn, self.collection,
                            [(row[_HASH], row[_ID]) for row in rows], self.report)
            rows = [row for row, new in zip(rows, keep, strict=True) if new]
            if not rows:
                return 0
            try:
                return self._counted(write_isolating(self.conn, self.collection, rows,
                                                     batch.precisions, batch.origins))
            except RACE_ERRORS:
                if attempt == RACE_RETRIES - 1:
                    raise
                # let the other load's transaction commit before this one looks again
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        return 0

    def _counted(self, written: tuple[int, list[Failure]]) -> int:
        inserted, failures = written
        self.report.failed.extend(failures)
        return inserted

    def _done(self, inserted: int, processed: int) -> None:
        self.report.inserted += inserted
        self.report.processed += processed
        if self.progress is not None:
            self.progress(self.report)


def unstored(conn: psycopg.Connection[Any], collection: Collection,
             keys: list[tuple[str, str]], report: IngestReport) -> list[bool]:
    """Which rows, given as (content hash, external id), are new to the collection. A row whose
    content is stored is counted as a skipped duplicate; one whose id is stored with other
    content, as a failure. Both are read in one statement (one snapshot): another load that
    commits between two lookups would make its rows look like ids taken by other content."""
    if not keys:
        return []
    found = _stored_keys(conn, collection, keys)
    stored_hashes = {h for h, _ in found}
    taken_ids = {ext for _, ext in found}
    keep = []
    for content_hash, ext in keys:
        if content_hash in stored_hashes:
            report.skipped_duplicates += 1
            keep.append(False)
        elif ext in taken_ids:
            report.failed.append(Failure(ext, ID_TAKEN))
            keep.append(False)
        else:
            keep.append(True)
    return keep


def _stored_keys(conn: psycopg.Connection[Any], collection: Collection,
                 keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (content hash, external id) of the stored rows that share either key with ``keys``
    (one statement; an index search per key)."""
    query = sql.SQL("SELECT content_hash, external_id FROM {table} "
                    "WHERE content_hash = ANY(%(hashes)s) OR external_id = ANY(%(ids)s)").format(
        table=collection.table)
    rows = conn.execute(query, {"hashes": [h for h, _ in keys],
                                "ids": [ext for _, ext in keys]}).fetchall()
    return [(str(h), str(ext)) for h, ext in rows]


def write_new(conn: psycopg.Connection[Any], collection: Collection,
              batch: PreparedBatch) -> tuple[int, list[Failure]]:
    """A batch's first write: its new vectors into the embedding cache (their own transaction,
    so they outlive a failure of the batch), then the batch (write_isolating)."""
    write_cache_entries(conn, batch.to_cache)
    return write_isolating(conn, collection, batch.rows, batch.precisions, batch.origins)


def write_isolating(conn: psycopg.Connection[Any], collection: Collection,
                    rows: list[tuple[Any, ...]], precisions: dict[str, int] | None = None,
                    origins: dict[str, str] | None = None) -> tuple[int, list[Failure]]:
    """write_batch, and when PostgreSQL refuses a row of it (ROW_ERRORS) the batch written again
    in halves, down to that row, which fails alone: the rows written and the rows refused."""
    try:
        return write_batch(conn, collection, rows, precisions), []
    except ROW_ERRORS as exc:
        if len(rows) == 1:
            ext = str(rows[0][_ID])
            where = (origins or {}).get(ext)
            return 0, [Failure(ext, row_error_reason(exc) + (f" ({where})" if where else ""))]
    half = len(rows) // 2
    first, failed_first = write_isolating(conn, collection, rows[:half], precisions, origins)
    second, failed_second = write_isolating(conn, collection, rows[half:],
                                            None if first else precisions, origins)
    return first + second, failed_first + failed_second


def row_error_reason(exc: psycopg.Error) -> str:
    """Why PostgreSQL refused one row, and what to do about it."""
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded) and "tsvector" in first_line:
        return ("the text is too long for PostgreSQL's full-text index (its tsvector would be "
                "over 1 MB); split it into smaller documents (chunking) and load it again")
    return f"PostgreSQL refused this row ({first_line}); fix it and load the file again"


def write_batch(conn: psycopg.Connection[Any], collection: Collection,
                rows: list[tuple[Any, ...]], precisions: dict[str, int] | None = None) -> int:
    """One binary COPY, the data_version bump and the rows embedded per precision, in one
    transaction; returns the rows written."""
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        collection.table, sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS)))
    with conn.transaction():
        # The BM25 triggers read the batch back from a transition table: with the default 4MB of
        # work_mem a batch of wide rows (vectors) spills to a temporary file and is read back.
        conn.execute("SET LOCAL work_mem = '64MB'")
        # The queued writer sends data from a thread, so the server parses and indexes rows
        # while Python formats the next ones.
        with conn.cursor() as cur, cur.copy(copy_sql, writer=QueuedLibpqWriter(cur)) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        bump_data_version(conn, collection.name)
        if precisions:
            record_precisions(conn, collection, precisions)
    return len(rows)
