"""Import a ChromaDB persistent directory into a new collection: the usual prototype-to-pgvector
move. Chroma's stored embeddings are copied as they are (no model runs); documents become content,
``title`` / ``category`` metadata keys fill those columns and the rest stays in metadata.

chromadb is an optional dependency: everything here imports it lazily and says how to install it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from vecdash.collections import Collection, create_collection, drop_collection
from vecdash.db import require_writable
from vecdash.discovery import guess_embedder
from vecdash.errors import InvalidInput, NotFound
from vecdash.ingest import ingest_records
from vecdash.ingest_report import IngestReport, ProgressCallback
from vecdash.records import Record

_SPACES = {"cosine": "cosine", "l2": "l2", "ip": "ip"}


@dataclass(frozen=True)
class ChromaCollectionInfo:
    name: str
    count: int
    dimension: int | None
    metric: str


def _client(path: str | Path) -> Any:
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
    except ImportError as exc:
        raise InvalidInput(
            "Importing from ChromaDB needs the optional chromadb package: pip install chromadb "
            "(it is in requirements.txt)."
        ) from exc
    directory = Path(path).expanduser()
    if not (directory / "chroma.sqlite3").exists():
        raise NotFound(
            f"{directory} is not a ChromaDB persistent directory (no chroma.sqlite3 in it). Give "
            "the path you passed to chromadb.PersistentClient(path=...)."
        )
    return chromadb.PersistentClient(path=str(directory),
                                     settings=ChromaSettings(anonymized_telemetry=False))


def _metric(collection: Any) -> str:
    space = None
    config = getattr(collection, "configuration", None) or {}
    if isinstance(config, dict):
        space = (config.get("hnsw") or {}).get("space")
    space = space or (collection.metadata or {}).get("hnsw:space") or "l2"
    return _SPACES.get(str(space), "l2")


def list_chroma_collections(path: str | Path) -> list[ChromaCollectionInfo]:
    """The collections in a ChromaDB directory with their size, dimension and distance."""
    client = _client(path)
    out = []
    for item in client.list_collections():
        coll = client.get_collection(item if isinstance(item, str) else item.name)
        first = coll.get(limit=1, include=["embeddings"])
        embeddings = first.get("embeddings")
        dim = len(embeddings[0]) if embeddings is not None and len(embeddings) else None
        out.append(ChromaCollectionInfo(coll.name, int(coll.count()), dim, _metric(coll)))
    return out


def chroma_records(path: str | Path, name: str, *, page: int = 1000) -> Iterator[Record]:
    """The records of one Chroma collection, read ``page`` at a time, with their embeddings."""
    client = _client(path)
    try:
        coll = client.get_collection(name)
    except Exception as exc:  # chromadb raises its own NotFoundError / ValueError by version
        raise NotFound(f"The ChromaDB directory has no collection {name!r}: {exc}") from exc
    offset = 0
    while True:
        got = coll.get(limit=page, offset=offset,
                       include=["embeddings", "documents", "metadatas"])
        ids = got.get("ids") or []
        if not ids:
            return
        docs = got.get("documents") or [None] * len(ids)
        metas = got.get("metadatas") or [None] * len(ids)
        embs = got.get("embeddings")
        for i, ext in enumerate(ids):
            meta = dict(metas[i] or {})
            title = meta.pop("title", "") or ""
            category = meta.pop("category", None)
            vec = np.asarray(embs[i], dtype=np.float32) if embs is not None else None
            yield Record(
                content=docs[i] or "",
                title=str(title),
                external_id=str(ext),
                category=str(category) if category is not None else None,
                metadata={**meta, "chroma_collection": name},
                embedding=vec,
                error=None if vec is not None else "no embedding stored in Chroma",
            )
        offset += len(ids)


def import_chroma(
    conn: psycopg.Connection[Any],
    path: str | Path,
    chroma_collection: str,
    *,
    name: str,
    embedder: str | None = None,
    model: str | None = None,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[Collection, IngestReport]:
    """Copy a Chroma collection into a new vecdash collection (same metric, its vectors as they
    are). ``embedder``/``model`` record what made the vectors (guessed from the dimension when not
    given: Chroma's default is all-MiniLM-L6-v2, the local model). An empty or unreadable source
    leaves no collection behind."""
    require_writable(conn)
    infos = {i.name: i for i in list_chroma_collections(path)}
    info = infos.get(chroma_collection)
    if info is None:
        raise NotFound(f"The ChromaDB directory has no collection {chroma_collection!r}; it has "
                       f"{', '.join(infos) or 'none'}.")
    if not info.dimension:
        raise InvalidInput(f"The Chroma collection {chroma_collection!r} holds no embeddings; "
                           "there is nothing to import.")
    guessed = guess_embedder(info.dimension)
    collection = create_collection(conn, name, dimension=info.dimension, metric=info.metric,
                                   embedder=embedder or guessed[0], model=model or guessed[1])
    try:
        report = ingest_records(conn, collection, chroma_records(path, chroma_collection),
                                batch_size=batch_size, progress=progress,
                                should_cancel=should_cancel)
    except Exception:
        with conn.transaction():
            empty = conn.execute("SELECT count(*) = 0 FROM vecdash_collections WHERE name = %s "
                                 "AND data_version = 0", (name,)).fetchone()
        if empty == (True,):
            drop_collection(conn, name)
        raise
    return collection, report
