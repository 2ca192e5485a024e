"""Ingestion core: records -> validate -> dedupe by content hash -> embed in batches -> COPY BINARY.

Each batch is one transaction (rows and the collection's data_version bump commit together), so an
interrupted load leaves whole batches only, and running it again skips what is stored (by hash).

Embeddings are cached in ``vecdash_embedding_cache`` keyed by (provider, model, dimension, sha256 of
the exact text embedded), so loading the same texts into another collection calls no model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from vecdash.collections import Collection, bump_data_version
from vecdash.db import require_writable
from vecdash.embedders import Embedder
from vecdash.errors import Cancelled, InvalidInput

_WS = re.compile(r"\s+")


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
    return hashlib.sha256(_WS.sub(" ", content).strip().encode("utf-8")).hexdigest()


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
    if isinstance(vec, np.ndarray) and vec.shape == (dimension,) and vec.dtype == np.float32:
        # the common case (precomputed float32 rows): finite check only
        return (vec, "") if np.isfinite(vec.sum()) else (None, "the vector contains NaN or infinite values")
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
) -> IngestReport:
    """Load records into a managed collection and report what happened.

    Per batch: rows with empty content or a bad precomputed vector fail (with a reason) and the
    rest go on; content already stored, or repeated in the batch, is skipped and counted; the
    remaining texts are embedded (unless they carry a vector) and written with one binary COPY in
    one transaction. ``should_cancel`` is checked between batches: committed batches stay.
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
    for batch in _batches(records, batch_size):
        if should_cancel is not None and should_cancel():
            raise Cancelled(
                f"Ingestion cancelled after {report.inserted} new rows; they are stored. Run it "
                "again to continue: stored documents are skipped."
            )
        _ingest_batch(conn, collection, batch, embedder, report, use_cache)
        report.batches += 1
        if progress is not None:
            progress(report)
    return report


def _ingest_batch(
    conn: psycopg.Connection[Any],
    collection: Collection,
    batch: list[Record],
    embedder: Embedder | None,
    report: IngestReport,
    use_cache: bool = True,
) -> None:
    report.processed += len(batch)
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
        if h in seen:
            report.skipped_duplicates += 1
            continue
        seen.add(h)
        ready.append((rec, h, ext))
    if not ready:
        return
    table = collection.table
    hashes = [h for _, h, _ in ready]
    stored = {
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT content_hash FROM {} WHERE content_hash = ANY(%s)").format(table),
            (hashes,),
        ).fetchall()
    }
    fresh = [(rec, h, ext) for rec, h, ext in ready if h not in stored]
    report.skipped_duplicates += len(ready) - len(fresh)
    taken = {
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT external_id FROM {} WHERE external_id = ANY(%s)").format(table),
            ([ext for _, _, ext in fresh],),
        ).fetchall()
    }
    rows: list[tuple[Record, str, str, np.ndarray | None]] = []
    ids_in_batch: set[str] = set()
    for rec, h, ext in fresh:
        if ext in taken or ext in ids_in_batch:
            report.failed.append(
                Failure(ext, "another document with this id is already stored (different content)")
            )
            continue
        ids_in_batch.add(ext)
        vec: np.ndarray | None = None
        if rec.embedding is not None:
            vec, problem = _check_vector(rec.embedding, collection.dimension)
            if vec is None:
                report.failed.append(Failure(ext, problem))
                continue
        rows.append((rec, h, ext, vec))
    need = [i for i, row in enumerate(rows) if row[3] is None]
    if need:
        if embedder is None:
            raise InvalidInput(
                "Some records have no vector and no embedder was given. Choose an embedder or "
                "provide a vector column."
            )
        texts = [_embed_text(rows[i][0]) for i in need]
        vectors = _embed_with_cache(conn, collection, embedder, texts, report, use_cache)
        for i, vec in zip(need, vectors, strict=True):
            rec, h, ext, _ = rows[i]
            rows[i] = (rec, h, ext, vec)
    if not rows:
        return
    matrix = np.vstack([v for _, _, _, v in rows if v is not None]).astype(np.float32, copy=False)
    if collection.metric == "cosine":
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
    packed = pack_vectors(matrix, collection.vector_type)
    now = datetime.now(UTC)
    copy_sql = sql.SQL(
        "COPY {} (external_id, title, content, category, metadata, content_hash, created_at, "
        "embedding) FROM STDIN (FORMAT BINARY)"
    ).format(table)
    with conn.transaction():
        # The queued writer sends data from a thread, so the server parses and indexes rows
        # while Python formats the next ones.
        with conn.cursor() as cur, cur.copy(copy_sql, writer=QueuedLibpqWriter(cur)) as copy:
            # The vector column travels as bytes already in pgvector's binary input format
            # (bytea's dumper passes them through; binary COPY fields carry no type of their own).
            # jsonb likewise: its binary input is a version byte (1) and the JSON text.
            copy.set_types(["text", "text", "text", "text", "bytea", "text", "timestamptz", "bytea"])
            for (rec, h, ext, _), vec_bytes in zip(rows, packed, strict=True):
                copy.write_row((
                    ext,
                    rec.title or "",
                    rec.content,
                    rec.category,
                    b"\x01" + json.dumps(rec.metadata or {}, default=str).encode(),
                    h,
                    rec.created_at or now,
                    vec_bytes,
                ))
        bump_data_version(conn, collection.name)
    report.inserted += len(rows)


def pack_vectors(matrix: np.ndarray, vector_type: str) -> list[bytes]:
    """Rows of ``matrix`` in pgvector's binary input format, packed for a whole batch at once:
    int16 dimension, int16 zero, then big-endian float32 (vector) or float16 (halfvec) values."""
    body = matrix.astype(">f4" if vector_type == "vector" else ">f2")
    header = struct.pack(">HH", matrix.shape[1], 0)
    return [header + row.tobytes() for row in body]


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
