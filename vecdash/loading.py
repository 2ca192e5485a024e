"""Loading files end to end: read (vecdash.readers), map columns, chunk (vecdash.chunking), then
ingest (vecdash.ingest) into a collection that is created when missing."""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import psycopg

from vecdash.chunking import ChunkSpec, chunk_records
from vecdash.collections import (
    Collection,
    collection_lock,
    create_collection,
    drop_collection,
    get_collection,
    require_table,
)
from vecdash.column_mapping import ColumnMapping, ReadCounter, guess_mapping, parse_vector
from vecdash.db import require_writable
from vecdash.embedders import Embedder
from vecdash.errors import InvalidInput, NotFound
from vecdash.export_metadata import ExportMetadata, read_export_metadata
from vecdash.ingest import check_batch_size, check_embedder, ingest_records
from vecdash.ingest_report import IngestReport, ProgressCallback
from vecdash.readers import Format, TextMode, file_records, preview_rows, read_rows

Source = str | Path


def ingest_file(
    conn: psycopg.Connection[Any],
    path: Source | list[Source] | tuple[Source, ...],
    *,
    collection: str,
    mapping: ColumnMapping | None = None,
    fmt: Format | None = None,
    text_mode: TextMode = "file",
    chunking: ChunkSpec | None = None,
    embedder: Embedder | None = None,
    metric: str | None = None,
    batch_size: int = 256,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    counter: ReadCounter | None = None,
    vectors_from: str | None = None,
) -> tuple[Collection, IngestReport]:
    """Read a file (or a list of files of one kind), map its columns, chunk, embed and load it into
    ``collection`` (created when it does not exist; an existing one must match the embedder).
    Everything that can be checked is checked before any model call or write: the file is
    readable, the mapping names real columns, the chunking is valid, the embedder fits.
    Running it again resumes (stored content is skipped).

    ``mapping`` is guessed from the first file's columns when None; ``counter`` counts source
    rows as they are read, for progress. ``metric`` (for a new collection) defaults to the file's
    when it is a vecdash export, else cosine.

    A file vecdash exported (vecdash.export) loaded with precomputed vectors (no embedder) makes
    a collection that records the file's model, metric and dimension, so its text queries embed
    with the model that made the vectors; loading it into an existing collection of another
    model or dimension is refused.

    Precomputed vectors (no embedder) go into a collection whose vectors come from outside
    (embedder "none"), unless ``vectors_from`` ("provider/model") names the model that made them
    and it is the collection's own: mixing vectors of two models makes distances meaningless.
    A new collection that ends up with no row stored is dropped again (the report says so).
    """
    require_writable(conn)
    check_batch_size(batch_size)
    made_by = _vectors_from(vectors_from)
    spec = (chunking or ChunkSpec()).check()
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if not paths:
        raise InvalidInput("No file to load. Choose at least one file.")
    # file_records checks each file and its mapping now, before anything is written
    streams = [file_records(p, mapping, fmt=fmt, text_mode=text_mode, counter=counter)
               for p in paths]
    records = chain.from_iterable(streams)
    first = paths[0]
    exported = read_export_metadata(first)
    # A second load creating the same collection waits for the first, then loads into it.
    with collection_lock(conn, collection):
        try:
            target = get_collection(conn, collection)
            created = False
        except NotFound:
            target = None
        if target is None:
            if embedder is not None:
                dimension = embedder.dimension or int(embedder.embed(["dimension probe"]).shape[1])
                provider, model = embedder.provider, embedder.model
            elif exported is not None:
                dimension, provider, model = exported.dimension, exported.embedder, exported.model
            else:
                dimension = _first_vector_dimension(first, mapping, fmt, text_mode)
                provider, model = made_by or ("none", "precomputed")
            target = create_collection(
                conn, collection, dimension=dimension, embedder=provider, model=model,
                metric=metric or (exported.metric if exported is not None else "cosine"))
            created = True
    if not created:
        require_table(conn, target)
        if embedder is None and exported is not None:
            _check_export_fits(target, exported, first)
        elif embedder is None:
            _check_outside_vectors(target, made_by)
    check_embedder(target, embedder)
    try:
        report = ingest_records(conn, target, chunk_records(records, spec), embedder=embedder,
                                batch_size=batch_size, progress=progress,
                                should_cancel=should_cancel)
    except BaseException:  # Ctrl-C too
        if created:
            _drop_if_empty(conn, collection)
        raise
    if created and report.inserted == 0 and _drop_if_empty(conn, collection):
        report.warnings.append(f"Nothing was stored, so the new collection {collection!r} was not "
                               "kept. Fix the failures listed and load the file again.")
    return target, report


def _drop_if_empty(conn: psycopg.Connection[Any], name: str) -> bool:
    """Drop a collection this load created when it holds no row; True when dropped. Quietly
    does nothing when the server cannot be reached any more (the error in flight says so)."""
    try:
        if get_collection(conn, name).data_version == 0:
            drop_collection(conn, name)
            return True
    except (psycopg.Error, NotFound):
        pass
    return False


def _vectors_from(value: str | None) -> tuple[str, str] | None:
    """``"provider/model"`` split, for precomputed vectors made by a model vecdash knows."""
    if value is None:
        return None
    provider, _, model = str(value).partition("/")
    if provider not in ("local", "openai", "none") or not model.strip():
        raise InvalidInput(
            f"{value!r} does not name a model as provider/model, e.g. local/all-MiniLM-L6-v2 or "
            "openai/text-embedding-3-small. Name the model that made the file's vectors."
        )
    return provider, model.strip()


def _check_outside_vectors(target: Collection, made_by: tuple[str, str] | None) -> None:
    """Refuse a file's own vectors for a collection whose vectors a model vecdash runs made,
    unless the user says that same model made them."""
    if target.embedder not in ("local", "openai"):
        return
    if made_by == (target.embedder, target.model):
        return
    said = f" (you said {made_by[0]}/{made_by[1]})" if made_by else ""
    raise InvalidInput(
        f"{target.name!r} holds vectors made by {target.embedder}/{target.model}; the file's "
        f"vectors come from outside{said}, and vectors of two models are not comparable. Load "
        "them into a new collection, or, if that same model made them, say so with "
        f"--vectors-from {target.embedder}/{target.model} (vectors_from=...)."
    )


def _first_vector_dimension(path: Source, mapping: ColumnMapping | None, fmt: Format | None,
                            text_mode: TextMode) -> int:
    """The length of the first vector in the mapped vector column (a precomputed load's
    dimension)."""
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


def _check_export_fits(target: Collection, exported: ExportMetadata, path: Source) -> None:
    """Refuse an export's vectors for a collection of another model or dimension."""
    if exported.dimension != target.dimension:
        raise InvalidInput(
            f"{Path(path).name} holds {exported.dimension}-dimensional vectors but "
            f"{target.name!r} stores {target.dimension}. Load it into a new collection."
        )
    known = target.embedder in ("local", "openai")
    if known and (exported.embedder, exported.model) != (target.embedder, target.model):
        raise InvalidInput(
            f"{Path(path).name} holds vectors from {exported.embedder}/{exported.model}; "
            f"{target.name!r} holds vectors from {target.embedder}/{target.model}, which are not "
            "comparable with them. Load it into a new collection."
        )
