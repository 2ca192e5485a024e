"""The embedding cache: ``vecdash_embedding_cache`` keyed by (provider, model, dimension, sha256 of
the exact text embedded), so loading the same texts into another collection calls no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from vecdash.collections import Collection
from vecdash.db import relation_exists, require_writable
from vecdash.embedders import Embedder
from vecdash.errors import InvalidInput
from vecdash.records import embedding_key

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
    if relation_exists(conn, "vecdash_embedding_cache"):
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


@dataclass
class CacheEntries:
    """Vectors the model just made, to store in the cache (``write_cache_entries``)."""

    provider: str
    model: str
    dimension: int
    vectors: dict[str, np.ndarray]  # text hash -> vector


@dataclass
class EmbeddedTexts:
    """Vectors for some texts (one row each, in order) and where they came from."""

    vectors: np.ndarray
    cached: int = 0  # texts whose vector came from the cache
    embedded: int = 0  # texts sent to the model
    warnings: list[str] = field(default_factory=list)  # the embedder's (truncated inputs)
    to_cache: CacheEntries | None = None  # new vectors not yet stored (``write_later``)


def write_cache_entries(conn: psycopg.Connection[Any], entries: CacheEntries | None) -> None:
    """Store new vectors in the cache, in their own transaction (another load may have stored
    some of them meanwhile: those are kept as they are). Sorted by key, so that two loads of
    the same texts take the keys' locks in one order and never deadlock."""
    if entries is None or not entries.vectors:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO vecdash_embedding_cache (provider, model, dimension, text_hash, "
            "embedding) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(entries.provider, entries.model, entries.dimension, k, v)
             for k, v in sorted(entries.vectors.items())],
        )


def embed_with_cache(
    conn: psycopg.Connection[Any],
    collection: Collection,
    embedder: Embedder,
    texts: list[str],
    *,
    use_cache: bool,
    write_later: bool = False,
) -> EmbeddedTexts:
    """Vectors for ``texts``: from the cache where stored, from the model for the rest (which are
    then cached, in their own transaction, so they survive a failure of the batch). With
    ``write_later`` the new vectors are returned in ``to_cache`` instead, for the caller to
    store (ingestion stores them from its writer thread, while the model embeds the next batch)."""
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
    cached = sum(1 for k in keys if k in found)
    warnings: list[str] = []
    to_cache: CacheEntries | None = None
    if missing:
        vectors = embedder.embed(list(missing.values()))
        drain = getattr(embedder, "drain_warnings", None)
        if callable(drain):
            warnings.extend(drain())
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise InvalidInput(
                f"The embedder returned {vectors.shape[-1]}-dimensional vectors but "
                f"{collection.name!r} stores {dim}. Use the collection's model "
                f"({collection.embedder}/{collection.model})."
            )
        fresh = dict(zip(missing, vectors, strict=True))
        if use_cache:
            to_cache = CacheEntries(provider, embedder.model, dim, fresh)
            if not write_later:
                write_cache_entries(conn, to_cache)
                to_cache = None
        found.update(fresh)
    return EmbeddedTexts(
        vectors=np.vstack([found[k] for k in keys]).astype(np.float32, copy=False),
        cached=cached, embedded=len(missing), warnings=warnings, to_cache=to_cache,
    )
