"""Ingestion core: records -> validate -> dedupe by content hash -> embed in batches -> COPY BINARY.

Each batch is one transaction (rows and the collection's data_version bump commit together), so an
interrupted load leaves whole batches only, and running it again skips what is stored (by hash).

Texts are embedded through the embedding cache (vecdash.embedding_cache); reading, mapping and
chunking files is vecdash.loading's.
"""

from __future__ import annotations

import gc
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from vecdash.batch_vectors import given_vectors, pack_vectors
from vecdash.bm25.packed import pack_after_load
from vecdash.collections import (
    Collection,
    bump_data_version,
    estimated_rows,
    refresh_statistics_after_load,
    require_table,
)
from vecdash.copy_writer import (
    ID_TAKEN,
    ROLLED_BACK_FOR_ANOTHER,
    BatchWriter,
    PreparedBatch,
    unstored,
)
from vecdash.db import require_writable
from vecdash.embedders import Embedder
from vecdash.embedding_cache import CacheEntries, embed_with_cache, ensure_embedding_cache
from vecdash.errors import Cancelled, ConnectionFailed, InvalidInput
from vecdash.ingest_report import Failure, IngestReport, ProgressCallback
from vecdash.records import Record, clean_record, content_hash, embed_text
from vecdash.statement_timeout import without_statement_timeout
from vecdash.vector_precisions import ensure_vector_precisions

# Record and the report types are defined lower down (records, ingest_report); they are named
# here too so that `from vecdash.ingest import Record, IngestReport` keeps working.
__all__ = [
    "Failure", "IngestReport", "ProgressCallback", "Record", "check_batch_size", "check_embedder",
    "content_hash", "delete_documents", "embed_text", "ingest_records",
]

# One encoder for every row (json.dumps with arguments builds a new one per call).
_JSON = json.JSONEncoder(default=str)
# A batch is one transaction and one COPY held in memory: beyond this, a load gains nothing.
MAX_BATCH_SIZE = 100_000
# What a metadata JSON text (ASCII, escaped) holds when it has a character PostgreSQL refuses.
_BAD_JSON_ESCAPE = re.compile(r"\\u(?:0000|d[89a-f])", re.IGNORECASE)


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


def check_batch_size(batch_size: Any) -> int:
    """Refuse a batch size that is not a whole number from 1 to MAX_BATCH_SIZE, before any work."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or \
            not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidInput(f"The batch size must be a whole number from 1 to {MAX_BATCH_SIZE:,}; "
                           f"got {batch_size!r}. The default, 256, suits most loads.")
    return batch_size


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


class _GcPause:
    """Python's cyclic garbage collector paused while loads run (re-entrant across threads: the
    first load to start pauses it, the last to finish restores it as it was).

    A load makes and drops tens of thousands of tuples per batch, and the collector walks the
    process's whole heap now and then while it runs (a dashboard process, with torch and
    Streamlit imported, tracks hundreds of thousands of objects). It holds the GIL meanwhile,
    so the writer threads cannot feed COPY either. Reference counting still frees what a load
    drops; garbage in reference cycles waits for the collector until the load ends."""

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
    written by up to copy_writer.WRITERS other connections from background threads while this one prepares
    the next batch (validation, dedupe lookups, embedding, packing), so the server indexes
    batches while Python works on the next. Each batch is still one transaction; progress and the
    report are updated on the calling thread as batches commit, in order. Python's cyclic
    garbage collector is paused meanwhile (see _GcPause).
    """
    require_writable(conn)
    check_batch_size(batch_size)
    if not collection.managed:
        raise InvalidInput(
            f"{collection.name!r} is an attached table; vecdash only loads into collections it "
            "created. Create a new collection for these documents."
        )
    require_table(conn, collection)
    check_embedder(collection, embedder)
    if embedder is not None and use_cache:
        ensure_embedding_cache(conn)
    if getattr(embedder, "calls_by_precision", None) is not None:
        ensure_vector_precisions(conn)  # the local model: its precision is kept with the rows
    report = IngestReport()
    try:
        _load(conn, collection, records, report, embedder=embedder, batch_size=batch_size,
              progress=progress, should_cancel=should_cancel, use_cache=use_cache,
              parallel=parallel)
    except ROLLED_BACK_FOR_ANOTHER as exc:  # still meeting another load, retries spent
        raise ConnectionFailed(
            f"Another load kept writing the same rows at the same time, and PostgreSQL undid "
            f"this load's batch to let it go on ({type(exc).__name__}); {report.inserted:,} new "
            "rows are stored. Run the same command again once the other load has finished: "
            "stored rows are skipped."
        ) from exc
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(
            f"The server stopped during the load ({type(exc).__name__}); {report.inserted:,} new "
            "rows are stored. Start the server again and run the same command again to resume: "
            "stored rows are skipped."
        ) from exc
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"stopped; {report.inserted:,} new rows are stored. Run the same command again to "
            "resume: stored rows are skipped."
        ) from None
    refresh_statistics_after_load(conn, collection, report.inserted)
    if report.inserted:  # the load made the packed postings stale: rebuilt on a large collection
        pack_after_load(conn, collection, estimated_rows(conn, collection))
    return report


def _load(conn: psycopg.Connection[Any], collection: Collection, records: Iterable[Record],
          report: IngestReport, *, embedder: Embedder | None, batch_size: int,
          progress: ProgressCallback | None, should_cancel: Callable[[], bool] | None,
          use_cache: bool, parallel: bool) -> None:
    """ingest_records' batches, into ``report``."""
    can_overlap = parallel and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # A load runs as long as it needs (the statement timeout is for interactive queries); the
    # writers' sibling connections start without one too.
    with _GC_PAUSE, without_statement_timeout(conn), \
            BatchWriter(conn, collection, report, progress, overlap=can_overlap) as writer:
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


def _with_last(batches: Iterator[list[Record]]) -> Iterator[tuple[list[Record], bool]]:
    """Each batch and whether it is the last (one batch read ahead)."""
    current = next(batches, None)
    while current is not None:
        following = next(batches, None)
        yield current, following is None
        current = following


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
) -> PreparedBatch | None:
    """Validate, dedupe (against stored rows and the hashes and external ids of the ``pending``
    batches, still being written), embed and pack one batch; None when nothing in it is new.
    The report's failures and skipped duplicates are counted here; rows processed and inserted
    when the batch commits.

    Without ``check_stored``, a batch whose records all bring their vectors is not looked up
    against the stored rows (two index searches per row): a load of new rows, the usual case,
    goes straight to COPY, and a stored row makes the COPY fail on a unique key, after which the
    BatchWriter writes the batch again, checked. Rows to embed are always looked up first, so no
    stored row is embedded again."""
    pending_hashes, pending_ids = pending
    precisions: dict[str, int] = {}  # texts the model embedded, per precision
    to_cache: CacheEntries | None = None  # vectors the model made, for the embedding cache
    ready: list[tuple[Record, str, str]] = []  # record, hash, external id
    seen: set[str] = set()
    cleaned: list[str] = []
    for rec in batch:
        if rec.error:
            report.failed.append(Failure(str(rec.external_id or "(no id)"), rec.error))
            continue
        if clean_record(rec):
            cleaned.append(rec.origin or str(rec.external_id or "(no id)"))
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
    if cleaned:
        report.warnings.append(
            f"NUL characters (or invalid UTF-16 surrogates) removed from {len(cleaned)} row(s): "
            f"{', '.join(cleaned[:10])}{' …' if len(cleaned) > 10 else ''}. Check those rows' "
            "text.")
    if not ready:
        return None
    unchecked = not check_stored and all(rec.embedding is not None for rec, _, _ in ready)
    if not unchecked:
        keep = unstored(conn, collection, [(h, ext) for _, h, ext in ready], report)
        ready = [item for item, new in zip(ready, keep, strict=True) if new]
    kept: list[tuple[Record, str, str]] = []
    ids_in_batch: set[str] = set()
    for rec, h, ext in ready:
        if ext in pending_ids or ext in ids_in_batch:
            report.failed.append(Failure(ext, ID_TAKEN))
            continue
        ids_in_batch.add(ext)
        kept.append((rec, h, ext))
    vectors, problems = given_vectors([rec.embedding for rec, _, _ in kept], collection.dimension)
    if collection.metric == "cosine":
        for zero in np.flatnonzero(~vectors.any(axis=1)).tolist():
            if not problems[zero] and kept[zero][0].embedding is not None:
                problems[zero] = ("the vector is all zeros: it has no direction, so its cosine "
                               "distance to anything is undefined")
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
        texts = [embed_text(rows[i][0]) for i in need]
        before = dict(getattr(embedder, "calls_by_precision", {}))
        # The new vectors are cached by the batch's writer (before its COPY, in their own
        # transaction), so this thread goes on to the next batch's embedding meanwhile.
        embedded = embed_with_cache(conn, collection, embedder, texts, use_cache=use_cache,
                                    write_later=True)
        to_cache = embedded.to_cache
        precisions = {p: n - before.get(p, 0)
                      for p, n in getattr(embedder, "calls_by_precision", {}).items()}
        report.cached += embedded.cached
        report.warnings.extend(embedded.warnings)
        report.embedded += embedded.embedded
        matrix[need] = embedded.vectors
    if collection.metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        # Vectors already of unit length (an export loaded back) are kept to the bit: dividing
        # by a norm a rounding step away from 1 would move some of them.
        off = (np.abs(norms - 1.0) > 1e-6) & (norms > 0)
        matrix /= np.where(off, norms, 1.0)  # in place: the matrix is this batch's own
    packed = pack_vectors(matrix, collection.vector_type)
    now = datetime.now(UTC)
    # jsonb travels in its binary input format: a version byte (1) and the JSON text.
    return PreparedBatch(
        rows=[(ext, rec.title or "", rec.content, rec.category,
               b"\x01" + _metadata_json(rec, report) if rec.metadata
               else b"\x01{}", h, rec.created_at or now, vec_bytes)
              for (rec, h, ext), vec_bytes in zip(rows, packed, strict=True)],
        hashes={h for _, h, _ in rows},
        external_ids={ext for _, _, ext in rows},
        unchecked=unchecked,
        precisions=precisions,
        origins={ext: rec.origin for rec, _, ext in rows if rec.origin},
        to_cache=to_cache,
    )


def _metadata_json(rec: Record, report: IngestReport) -> bytes:
    """A record's metadata as JSON text, without the characters jsonb refuses (with a warning)."""
    text = _JSON.encode(rec.metadata)
    if _BAD_JSON_ESCAPE.search(text) and clean_record(rec, metadata=True):
        report.warnings.append(f"NUL characters removed from the metadata of "
                               f"{rec.origin or rec.external_id or '(no id)'}.")
        text = _JSON.encode(rec.metadata)
    return text.encode()


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
    if cur.rowcount:
        pack_after_load(conn, collection, estimated_rows(conn, collection))
    return cur.rowcount
