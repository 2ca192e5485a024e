"""Writing prepared batches: one binary COPY and the data_version bump per batch, in one
transaction, on the caller's connection or overlapped on up to WRITERS sibling connections, and
the lookups of which rows a collection stores already."""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from vecdash.collections import Collection, bump_data_version
from vecdash.db import sibling_connection
from vecdash.ingest_report import Failure, IngestReport, ProgressCallback

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


@dataclass
class PreparedBatch:
    """A batch ready to write: COPY rows (COPY_COLUMNS), and its content hashes and external
    ids; ``unchecked``: prepared without looking up which of its rows are stored already."""

    rows: list[tuple[Any, ...]]
    hashes: set[str]
    external_ids: set[str]
    unchecked: bool = False



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
        self.in_flight: deque[tuple[Future[int], PreparedBatch, psycopg.Connection[Any], int]] = deque()

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
                inserted = write_batch(self.conn, self.collection, batch.rows)
            except psycopg.errors.UniqueViolation:
                if not batch.unchecked:
                    raise
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
            (self.pool.submit(write_batch, other, self.collection, batch.rows), batch, other,
             size))

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
            inserted = future.result()  # an error leaves it in flight for __exit__ to wait on
        except psycopg.errors.UniqueViolation:
            if not batch.unchecked:
                raise
            self.in_flight.popleft()
            self.idle.append(other)
            inserted = self._write_checked(batch)
        else:
            self.in_flight.popleft()
            self.idle.append(other)
        self._done(inserted, size)

    def _write_checked(self, batch: PreparedBatch) -> int:
        """Write an unchecked batch that met a stored row again, without its stored rows. The
        batches in flight cannot hold its rows or ids (pending keys), so none of them waits."""
        self.check_stored = True
        keep = unstored(self.conn, self.collection,
                         [(row[_HASH], row[_ID]) for row in batch.rows], self.report)
        rows = [row for row, new in zip(batch.rows, keep, strict=True) if new]
        return write_batch(self.conn, self.collection, rows) if rows else 0

    def _done(self, inserted: int, processed: int) -> None:
        self.report.inserted += inserted
        self.report.processed += processed
        if self.progress is not None:
            self.progress(self.report)


def unstored(conn: psycopg.Connection[Any], collection: Collection,
             keys: list[tuple[str, str]], report: IngestReport) -> list[bool]:
    """Which rows, given as (content hash, external id), are new to the collection. A row whose
    content is stored is counted as a skipped duplicate; one whose id is stored with other
    content, as a failure."""
    stored = _stored_values(conn, collection, "content_hash", [h for h, _ in keys])
    fresh = [h not in stored for h, _ in keys]
    report.skipped_duplicates += fresh.count(False)
    taken = _stored_values(conn, collection, "external_id",
                           [ext for (_, ext), new in zip(keys, fresh, strict=True) if new])
    keep = []
    for (_, ext), new in zip(keys, fresh, strict=True):
        if new and ext in taken:
            report.failed.append(Failure(ext, ID_TAKEN))
            new = False
        keep.append(new)
    return keep


def _stored_values(conn: psycopg.Connection[Any], collection: Collection, column: str,
                   values: list[str]) -> set[str]:
    """Those of ``values`` that the collection's ``column`` holds (one index search each)."""
    if not values:
        return set()
    query = sql.SQL("SELECT {col} FROM {table} WHERE {col} = ANY(%b)").format(
        col=sql.Identifier(column), table=collection.table)
    return {r[0] for r in conn.execute(query, (values,)).fetchall()}


def write_batch(conn: psycopg.Connection[Any], collection: Collection,
                rows: list[tuple[Any, ...]]) -> int:
    """One binary COPY and the data_version bump, in one transaction; returns the rows written."""
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
    return len(rows)
