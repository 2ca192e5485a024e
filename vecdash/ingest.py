"""Ingestion core: records -> validate -> dedupe by content hash -> embed in batches -> COPY BINARY.

Each batch is one transaction (rows and the collection's data_version bump commit together), so an
interrupted load leaves whole batches only, and running it again skips what is stored (by hash).

Embeddings are cached in ``vecdash_embedding_cache`` keyed by (provider, model, dimension, sha256 of
the exact text embedded), so loading the same texts into another collection calls no model.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from vecdash.collections import Collection, bump_data_version
from vecdash.db import require_writable, sibling_connection
from vecdash.embedders import Embedder
from vecdash.errors import Cancelled, InvalidInput

# One encoder for every row (json.dumps with arguments builds a new one per call).
_JSON = json.JSONEncoder(default=str)
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
_ID_TAKEN = "another document with this id is already stored (different content)"


@dataclass
class Record:
    """One document to load. ``embedding`` set means the model is skipped for it."""

    content: str
    title: str = ""
    external_id: str | None = None
    category: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    embedding: Sequence[float] | np.ndarray | None = None
    error: str | None = None  # set by a reader for a row it could not parse: it fails alone


@dataclass(frozen=True)
class Failure:
    external_id: str
    reason: str


@dataclass
class IngestReport:
    inserted: int = 0
    skipped_duplicates: int = 0
    failed: list[Failure] = field(default_factory=list)
    processed: int = 0
    batches: int = 0
    embedded: int = 0  # texts sent to the model
    cached: int = 0  # texts whose vector came from the embedding cache
    warnings: list[str] = field(default_factory=list)

    @property
    def failed_count(self) -> int:
        return len(self.failed)


ProgressCallback = Callable[[IngestReport], None]


def content_hash(content: str) -> str:
    """The dedupe key: sha256 of the content with whitespace collapsed and ends trimmed."""
    # str.split() splits on exactly the characters the \s+ regex matches (str.isspace), faster
    return hashlib.sha256(" ".join(content.split()).encode("utf-8")).hexdigest()


def embedding_key(text: str) -> str:
    """The embedding cache key of a text: sha256 of exactly the text sent to the model."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


CACHE_DDL = sql.SQL("""
CREATE TABLE IF NOT EXISTS vecdash_embedding_cache (
    provider   text NOT NULL,
    model      text NOT NULL,
    dimension  integer NOT NULL,
    text_hash  text NOT NULL,
    embedding  vector NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model, dimension, text_hash)
)""")


def ensure_embedding_cache(conn: psycopg.Connection[Any]) -> None:
    """Create the embedding cache table when it is missing (idempotent, safe when racing)."""
    require_writable(conn)
    if conn.execute("SELECT to_regclass('vecdash_embedding_cache') IS NOT NULL").fetchone() == (True,):
        return
    try:
        with conn.transaction():
            conn.execute(CACHE_DDL)
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
        pass  # another process created it at the same moment


def cache_provider(embedder: Embedder) -> str:
    """The provider part of the cache key: an OpenAI-compatible server's base URL is part of it."""
    base_url = getattr(embedder, "base_url", "") or ""
    return f"{embedder.provider}@{base_url}" if base_url else embedder.provider


def clear_embedding_cache(conn: psycopg.Connection[Any]) -> int:
    """Empty the embedding cache; return how many vectors were removed."""
    require_writable(conn)
    ensure_embedding_cache(conn)
    return conn.execute("DELETE FROM vecdash_embedding_cache").rowcount


def check_embedder(collection: Collection, embedder: Embedder | None) -> None:
    """Refuse an embedder whose vectors do not fit the collection (dimension, then model): called
    before any work so a mismatch never costs model calls or writes."""
    if embedder is None:
        return
    if embedder.dimension and embedder.dimension != collection.dimension:
        raise InvalidInput(
            f"The embedder {embedder.provider}/{embedder.model} makes {embedder.dimension}-"
            f"dimensional vectors but {collection.name!r} stores {collection.dimension}. Use the "
            f"collection's model ({collection.embedder}/{collection.model}) or a new collection."
        )
    known = collection.embedder in ("local", "openai")
    if known and (embedder.provider, embedder.model) != (collection.embedder, collection.model):
        raise InvalidInput(
            f"{collection.name!r} holds vectors from {collection.embedder}/{collection.model}; "
            f"vectors from {embedder.provider}/{embedder.model} would not be comparable with them. "
            "Use the same model, or load into a new collection."
        )


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


def _check_vector(vec: Sequence[float] | np.ndarray, dimension: int) -> tuple[np.ndarray | None, str]:
    """One record's vector as float32, or None and why not (see _given_vectors for batches)."""
    try:
        arr = np.asarray(vec, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        return None, "the vector is not a list of numbers"
    if arr.shape[0] != dimension:
        return None, (
            f"the vector has {arr.shape[0]} dimensions but the collection stores {dimension}"
        )
    if not np.all(np.isfinite(arr)):
        return None, "the vector contains NaN or infinite values"
    return arr, ""


class _GcPause:
    """Python's cyclic garbage collector paused while loads run (re-entrant across threads: the
    first load to start pauses it, the last to finish restores it as it was).

    A load makes and drops tens of thousands of tuples per batch, and the collector walks the
    process's whole heap now and then while it runs (a dashboard process, with torch and
    Streamlit imported, tracks about 500,000 objects). It holds the GIL meanwhile, so the
    writer threads cannot feed COPY either: a 100,000-row load ran 12.6k rows/s with it and
    16.2k without (bench/ingest_bench.py's rows in such a process). Reference counting still
    frees what a load drops; garbage in reference cycles waits for the collector until the
    load ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loads = 0
        self.was_enabled = False

    def __enter__(self) -> None:
        with self.lock:
            if self.loads == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.loads += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.loads -= 1
            if self.loads == 0 and self.was_enabled:
                gc.enable()


_GC_PAUSE = _GcPause()


def ingest_records(
    conn: psycopg.Connection[Any],
    collection: Collection,
    records: Iterable[Record],
    *,
    embedder: Embedder | None = None,
    batch_size: int = 256,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    use_cache: bool = True,
    parallel: bool = True,
) -> IngestReport:
    """Load records into a managed collection and report what happened.

    Per batch: rows with empty content or a bad precomputed vector fail (with a reason) and the
    rest go on; content already stored, or repeated in the batch or in a batch still being
    written, is skipped and counted; the remaining texts are embedded (unless they carry a vector)
    and written with one binary COPY in one transaction. ``should_cancel`` is checked between
    batches: committed batches stay.

    With ``parallel`` (and more than one batch, ``conn`` not inside a transaction) batches are
    written by up to WRITERS other connections from background threads while this one prepares
    the next batch (validation, dedupe lookups, embedding, packing), so the server indexes
    batches while Python works on the next. Each batch is still one transaction; progress and the
    report are updated on the calling thread as batches commit, in order. Python's cyclic
    garbage collector is paused meanwhile (see _GcPause).
    """
    require_writable(conn)
    if not collection.managed:
        raise InvalidInput(
            f"{collection.name!r} is an attached table; vecdash only loads into collections it "
            "created. Create a new collection for these documents."
        )
    check_embedder(collection, embedder)
    if embedder is not None and use_cache:
        ensure_embedding_cache(conn)
    report = IngestReport()
    can_overlap = parallel and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with _GC_PAUSE, _Writer(conn, collection, report, progress, overlap=can_overlap) as writer:
        for batch, last in _with_last(_batches(records, batch_size)):
            writer.poll()
            if should_cancel is not None and should_cancel():
                writer.finish()
                raise Cancelled(
                    f"Ingestion cancelled after {report.inserted} new rows; they are stored. Run "
                    "it again to continue: stored documents are skipped."
                )
            prepared = _prepare_batch(conn, collection, batch, embedder, report, use_cache,
                                      writer.pending_keys(), check_stored=writer.check_stored)
            report.batches += 1
            writer.submit(prepared, len(batch), alone=last and writer.submitted == 0)
        writer.finish()
    return report


@dataclass
class _Batch:
    """A batch ready to write: COPY rows (COPY_COLUMNS), and its content hashes and external
    ids; ``unchecked``: prepared without looking up which of its rows are stored already."""

    rows: list[tuple[Any, ...]]
    hashes: set[str]
    external_ids: set[str]
    unchecked: bool = False


def _with_last(batches: Iterator[list[Record]]) -> Iterator[tuple[list[Record], bool]]:
    """Each batch and whether it is the last (one batch read ahead)."""
    current = next(batches, None)
    while current is not None:
        following = next(batches, None)
        yield current, following is None
        current = following


class _Writer:
    """Writes prepared batches: on ``conn`` itself (a load of one batch, or no ``overlap``), or
    on up to WRITERS other connections, each from a background thread, so the server indexes
    batches while this thread prepares the next one. ``pending_keys`` are the hashes and external
    ids of the batches in flight. Batches are collected (counted, progress reported) in order.

    An unchecked batch (see _prepare_batch) that meets a stored row fails on a unique key and
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
        self.in_flight: deque[tuple[Future[int], _Batch, psycopg.Connection[Any], int]] = deque()

    def __enter__(self) -> _Writer:
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

    def submit(self, batch: _Batch | None, size: int, *, alone: bool = False) -> None:
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
                inserted = _write_batch(self.conn, self.collection, batch.rows)
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
            (self.pool.submit(_write_batch, other, self.collection, batch.rows), batch, other,
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

    def _write_checked(self, batch: _Batch) -> int:
        """Write an unchecked batch that met a stored row again, without its stored rows. The
        batches in flight cannot hold its rows or ids (pending keys), so none of them waits."""
        self.check_stored = True
        keep = _unstored(self.conn, self.collection,
                         [(row[_HASH], row[_ID]) for row in batch.rows], self.report)
        rows = [row for row, new in zip(batch.rows, keep, strict=True) if new]
        return _write_batch(self.conn, self.collection, rows) if rows else 0

    def _done(self, inserted: int, processed: int) -> None:
        self.report.inserted += inserted
        self.report.processed += processed
        if self.progress is not None:
            self.progress(self.report)


def _prepare_batch(
    conn: psycopg.Connection[Any],
    collection: Collection,
    batch: list[Record],
    embedder: Embedder | None,
    report: IngestReport,
    use_cache: bool,
    pending: tuple[set[str], set[str]],
    *,
    check_stored: bool = True,
) -> _Batch | None:
    """Validate, dedupe (against stored rows and the hashes and external ids of the ``pending``
    batches, still being written), embed and pack one batch; None when nothing in it is new.
    The report's failures and skipped duplicates are counted here; rows processed and inserted
    when the batch commits.

    Without ``check_stored``, a batch whose records all bring their vectors is not looked up
    against the stored rows (two index searches per row): a load of new rows, the usual case,
    goes straight to COPY, and a stored row makes the COPY fail on a unique key, after which the
    _Writer writes the batch again, checked. Rows to embed are always looked up first, so no
    stored row is embedded again."""
    pending_hashes, pending_ids = pending
    ready: list[tuple[Record, str, str]] = []  # record, hash, external id
    seen: set[str] = set()
    for rec in batch:
        if rec.error:
            report.failed.append(Failure(str(rec.external_id or "(no id)"), rec.error))
            continue
        text = rec.content if isinstance(rec.content, str) else ""
        if isinstance(rec.content, float) and math.isnan(rec.content):
            text = ""
        h = content_hash(text) if text.strip() else ""
        ext = str(rec.external_id) if rec.external_id not in (None, "") else h[:16]
        if not text.strip():
            report.failed.append(Failure(ext or "(no id)", "empty content"))
            continue
        if h in seen or h in pending_hashes:
            report.skipped_duplicates += 1
            continue
        seen.add(h)
        ready.append((rec, h, ext))
    if not ready:
        return None
    unchecked = not check_stored and all(rec.embedding is not None for rec, _, _ in ready)
    if not unchecked:
        keep = _unstored(conn, collection, [(h, ext) for _, h, ext in ready], report)
        ready = [item for item, new in zip(ready, keep, strict=True) if new]
    kept: list[tuple[Record, str, str]] = []
    ids_in_batch: set[str] = set()
    for rec, h, ext in ready:
        if ext in pending_ids or ext in ids_in_batch:
            report.failed.append(Failure(ext, _ID_TAKEN))
            continue
        ids_in_batch.add(ext)
        kept.append((rec, h, ext))
    vectors, problems = _given_vectors([rec.embedding for rec, _, _ in kept], collection.dimension)
    rows: list[tuple[Record, str, str]] = []
    need: list[int] = []
    for i, (rec, h, ext) in enumerate(kept):
        if problems[i]:
            report.failed.append(Failure(ext, problems[i]))
            continue
        if rec.embedding is None:
            need.append(len(rows))
        rows.append((rec, h, ext))
    if not rows:
        return None
    if not need and len(rows) == len(vectors):
        matrix = vectors  # every record brought a good vector: the usual precomputed load
    else:
        matrix = np.zeros((len(rows), collection.dimension), dtype=np.float32)
        given = [i for i, (rec, _, _) in enumerate(kept)
                 if not problems[i] and rec.embedding is not None]
        if given:
            positions = np.setdiff1d(np.arange(len(rows)), np.asarray(need, dtype=np.int64))
            matrix[positions] = vectors[given]
    if need:
        if embedder is None:
            raise InvalidInput(
                "Some records have no vector and no embedder was given. Choose an embedder or "
                "provide a vector column."
            )
        texts = [_embed_text(rows[i][0]) for i in need]
        matrix[need] = _embed_with_cache(conn, collection, embedder, texts, report, use_cache)
    if collection.metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix /= np.where(norms > 0, norms, 1.0)  # in place: the matrix is this batch's own
    packed = pack_vectors(matrix, collection.vector_type)
    now = datetime.now(UTC)
    # jsonb travels in its binary input format: a version byte (1) and the JSON text.
    return _Batch(
        rows=[(ext, rec.title or "", rec.content, rec.category,
               b"\x01" + _JSON.encode(rec.metadata).encode() if rec.metadata
               else b"\x01{}", h, rec.created_at or now, vec_bytes)
              for (rec, h, ext), vec_bytes in zip(rows, packed, strict=True)],
        hashes={h for _, h, _ in rows},
        external_ids={ext for _, _, ext in rows},
        unchecked=unchecked,
    )


def _unstored(conn: psycopg.Connection[Any], collection: Collection,
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
            report.failed.append(Failure(ext, _ID_TAKEN))
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


def _given_vectors(vectors: list[Any], dimension: int) -> tuple[np.ndarray, list[str]]:
    """The records' own vectors as a new float32 matrix (zeros where missing or bad) and a
    problem per record ("" when fine or missing), checked for the whole batch at once when they
    are all float32 arrays of the right shape (the common case for precomputed vectors)."""
    n = len(vectors)
    if n and all(isinstance(v, np.ndarray) and v.shape == (dimension,) and v.dtype == np.float32
                 for v in vectors):
        matrix = np.stack(vectors)
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            matrix[~finite] = 0
        return matrix, ["" if ok else "the vector contains NaN or infinite values" for ok in finite]
    matrix = np.zeros((n, dimension), dtype=np.float32)
    problems = [""] * n
    for i, vec in enumerate(vectors):
        if vec is None:
            continue
        arr, problem = _check_vector(vec, dimension)
        if arr is None:
            problems[i] = problem
        else:
            matrix[i] = arr
    return matrix, problems


def _write_batch(conn: psycopg.Connection[Any], collection: Collection,
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


def pack_vectors(matrix: np.ndarray, vector_type: str) -> list[bytes]:
    """Rows of ``matrix`` in pgvector's binary input format, packed for a whole batch at once:
    int16 dimension, int16 zero, then big-endian float32 (vector) or float16 (halfvec) values."""
    n, dim = matrix.shape
    value = np.dtype(">f4" if vector_type == "vector" else ">f2")
    packed = np.empty((n, 4 + dim * value.itemsize), dtype=np.uint8)
    packed[:, :4] = np.frombuffer(struct.pack(">HH", dim, 0), dtype=np.uint8)
    packed[:, 4:].view(value)[:] = matrix  # converted to big-endian in place, no copy between
    blob, width = packed.tobytes(), packed.shape[1]
    return [blob[i * width:(i + 1) * width] for i in range(n)]


def _embed_with_cache(
    conn: psycopg.Connection[Any],
    collection: Collection,
    embedder: Embedder,
    texts: list[str],
    report: IngestReport,
    use_cache: bool,
) -> np.ndarray:
    """Vectors for ``texts``: from the cache where stored, from the model for the rest (which are
    then cached, in their own transaction, so they survive a failure of the batch)."""
    dim = collection.dimension
    keys = [embedding_key(t) for t in texts]
    found: dict[str, np.ndarray] = {}
    provider = cache_provider(embedder)
    if use_cache:
        for key, vec in conn.execute(
            "SELECT text_hash, embedding FROM vecdash_embedding_cache WHERE provider = %s "
            "AND model = %s AND dimension = %s AND text_hash = ANY(%s)",
            (provider, embedder.model, dim, keys),
        ).fetchall():
            found[key] = np.asarray(vec.to_numpy() if hasattr(vec, "to_numpy") else vec,
                                    dtype=np.float32)
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in found:
            missing.setdefault(key, text)
    report.cached += sum(1 for k in keys if k in found)
    if missing:
        vectors = embedder.embed(list(missing.values()))
        drain = getattr(embedder, "drain_warnings", None)
        if callable(drain):
            report.warnings.extend(drain())
        report.embedded += len(missing)
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise InvalidInput(
                f"The embedder returned {vectors.shape[-1]}-dimensional vectors but "
                f"{collection.name!r} stores {dim}. Use the collection's model "
                f"({collection.embedder}/{collection.model})."
            )
        fresh = dict(zip(missing, vectors, strict=True))
        if use_cache:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO vecdash_embedding_cache (provider, model, dimension, text_hash, "
                    "embedding) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(provider, embedder.model, dim, k, v) for k, v in fresh.items()],
                )
        found.update(fresh)
    return np.vstack([found[k] for k in keys]).astype(np.float32, copy=False)


def _embed_text(rec: Record) -> str:
    return f"{rec.title}\n{rec.content}" if rec.title else rec.content


def delete_documents(
    conn: psycopg.Connection[Any], collection: Collection, external_ids: Sequence[str]
) -> int:
    """Delete documents by external id in one transaction; return how many were removed."""
    require_writable(conn)
    if not collection.managed or not collection.external_id_column:
        raise InvalidInput(f"{collection.name!r} is an attached table; delete rows in it directly.")
    with conn.transaction():
        cur = conn.execute(
            sql.SQL("DELETE FROM {} WHERE external_id = ANY(%s)").format(collection.table),
            (list(external_ids),),
        )
        bump_data_version(conn, collection.name)
    return cur.rowcount


def ingest_file(
    conn: psycopg.Connection[Any],
    path: Any,
    *,
    collection: str,
    mapping: Any = None,
    fmt: Any = None,
    text_mode: Any = "file",
    chunking: Any = None,
    embedder: Embedder | None = None,
    metric: str = "cosine",
    batch_size: int = 256,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    counter: Any = None,
) -> tuple[Collection, IngestReport]:
    """Read a file (or a list of files of one kind), map its columns, chunk, embed and load it into
    ``collection`` (created when it does not exist; an existing one must match the embedder).
    Everything that can be checked is checked before any model call or write: the file is
    readable, the mapping names real columns, the chunking is valid, the embedder fits.
    Running it again resumes (stored content is skipped).

    ``mapping`` is a readers.ColumnMapping (guessed when None), ``chunking`` a chunking.ChunkSpec,
    ``counter`` a readers.ReadCounter that counts source rows for progress.
    """
    from vecdash.chunking import ChunkSpec, chunk_records
    from vecdash.collections import create_collection, drop_collection, get_collection
    from vecdash.errors import NotFound
    from vecdash.readers import file_records

    require_writable(conn)
    spec = (chunking or ChunkSpec()).check()
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if not paths:
        raise InvalidInput("No file to load. Choose at least one file.")
    # file_records checks each file and its mapping now, before anything is written
    streams = [file_records(p, mapping, fmt=fmt, text_mode=text_mode, counter=counter)
               for p in paths]
    records = chain.from_iterable(streams)
    path = paths[0]
    try:
        target = get_collection(conn, collection)
        created = False
    except NotFound:
        target = None
    if target is None:
        if embedder is not None:
            dimension = embedder.dimension or int(embedder.embed(["dimension probe"]).shape[1])
            provider, model = embedder.provider, embedder.model
        else:
            dimension = _first_vector_dimension(path, mapping, fmt, text_mode)
            provider, model = "none", "precomputed"
        target = create_collection(conn, collection, dimension=dimension, metric=metric,
                                   embedder=provider, model=model)
        created = True
    check_embedder(target, embedder)
    try:
        report = ingest_records(conn, target, chunk_records(records, spec), embedder=embedder,
                                batch_size=batch_size, progress=progress,
                                should_cancel=should_cancel)
    except Exception:
        if created and get_collection(conn, collection).data_version == 0:
            drop_collection(conn, collection)  # nothing was stored: leave no empty collection
        raise
    return target, report


def _first_vector_dimension(path: Any, mapping: Any, fmt: Any, text_mode: Any) -> int:
    from vecdash.readers import guess_mapping, parse_vector, preview_rows, read_rows

    if mapping is None:
        frame, _ = preview_rows(path, fmt=fmt, text_mode=text_mode)
        mapping = guess_mapping(list(frame.columns))
    if not mapping.embedding:
        raise InvalidInput(
            "Choose an embedder, or map the column that holds precomputed vectors."
        )
    for row in read_rows(path, fmt=fmt, text_mode=text_mode):
        if isinstance(row, dict):
            vec, _ = parse_vector(row.get(mapping.embedding))
            if vec is not None and len(vec):
                return len(vec)
    raise InvalidInput(f"No row has a vector in the column {mapping.embedding!r}.")


def embed_text(record: Record) -> str:
    """Exactly the text the model sees for a record (the title, a newline, then the content)."""
    return _embed_text(record)


def texts_to_embed(records: Iterable[Record]) -> Iterator[str]:
    """The texts an ingestion would send to the model (before the cache and stored duplicates are
    taken off): for token counts and cost estimates before starting."""
    for rec in records:
        if rec.error or rec.embedding is not None:
            continue
        if isinstance(rec.content, str) and rec.content.strip():
            yield _embed_text(rec)
