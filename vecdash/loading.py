"""Loading files end to end: read (vecdash.readers), map columns, chunk (vecdash.chunking), then
ingest (vecdash.ingest) into a collection that is created when missing."""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import psycopg

from vecdash.chunking import ChunkSpec, chunk_records
from vecdash.collections import Collection, create_collection, drop_collection, get_collection
from vecdash.db import require_writable
from vecdash.embedders import Embedder
from vecdash.errors import InvalidInput, NotFound
from vecdash.ingest import check_embedder, ingest_records
from vecdash.ingest_report import IngestReport, ProgressCallback
from vecdash.readers import (
    ColumnMapping,
    Format,
    ReadCounter,
    TextMode,
    file_records,
    guess_mapping,
    parse_vector,
    preview_rows,
    read_rows,
)

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
    metric: str = "cosine",
    batch_size: int = 256,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    counter: ReadCounter | None = None,
) -> tuple[Collection, IngestReport]:
    """Read a file (or a list of files of one kind), map its columns, chunk, embed and load it into
    ``collection`` (created when it does not exist; an existing one must match the embedder).
    Everything that can be checked is checked before any model call or write: the file is
    readable, the mapping names real columns, the chunking is valid, the embedder fits.
    Running it again resumes (stored content is skipped).

    ``mapping`` is guessed from the first file's columns when None; ``counter`` counts source
    rows as they are read, for progress.
    """
    require_writable(conn)
    spec = (chunking or ChunkSpec()).check()
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    if not paths:
        raise InvalidInput("No file to load. Choose at least one file.")
    # file_records checks each file and its mapping now, before anything is written
    streams = [file_records(p, mapping, fmt=fmt, text_mode=text_mode, counter=counter)
               for p in paths]
    records = chain.from_iterable(streams)
    first = paths[0]
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
            dimension = _first_vector_dimension(first, mapping, fmt, text_mode)
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
