"""Semantic search: a query embedded and checked against the collection, and the k nearest rows
by the collection's metric."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, LiteralString

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash.errors import InvalidInput
from vecdash.statement_timeout import explains_timeouts
from vecdash.text_checks import check_text

if TYPE_CHECKING:
    from vecdash.collections import Collection
    from vecdash.embedders import Embedder

MAX_K = 1000
RESULT_COLUMNS = ["rank", "id", "external_id", "title", "content", "category", "distance"]


def query_vector(
    collection: Collection, vector: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Validate a query vector against the collection (dimension, finite) and normalise it for
    cosine collections."""
    if hasattr(vector, "to_numpy"):  # a pgvector Vector / HalfVector read from the database
        vector = vector.to_numpy()
    try:
        arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"The query vector must be a list of numbers ({exc}).") from None
    if arr.shape[0] != collection.dimension:
        raise InvalidInput(
            f"The query vector has {arr.shape[0]} dimensions but {collection.name!r} stores "
            f"{collection.dimension}. Embed the query with the collection's model "
            f"({collection.embedder}/{collection.model})."
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidInput("The query vector contains NaN or infinite values.")
    if collection.metric == "cosine":
        norm = float(np.linalg.norm(arr))
        if norm == 0:
            raise InvalidInput("The query vector is all zeros; cosine distance is undefined for it.")
        arr = arr / norm
    return arr


# The vector arm's index settings, for its transaction only. hnsw.ef_search at least the depth
# (an HNSW scan returns at most ef_search rows, at most 1000). ivfflat.probes at least the square
# root of the table's IVFFlat lists (pgvector's suggested start; pgvector's default, 1 list, reads
# about 1/lists of the rows, so a search found a fraction of its true neighbours). Iterative
# scans with filters, so a filtered search still returns its depth. Higher session settings stay.
_VECTOR_SCAN_SETTINGS: LiteralString = """
    SELECT set_config('hnsw.ef_search', greatest(coalesce(nullif(current_setting(
             'hnsw.ef_search', true), ''), '40')::int, least(%(cand)s, 1000))::text, true),
           set_config('ivfflat.probes', greatest(coalesce(nullif(current_setting(
             'ivfflat.probes', true), ''), '1')::int, (
             SELECT coalesce(max(ceil(sqrt(coalesce(substring(o FROM '^lists=(\\d+)$')::int,
                                                      100)))), 1)::int
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_am am ON am.oid = i.relam
             LEFT JOIN LATERAL unnest(i.reloptions) o ON true
             WHERE x.indrelid = to_regclass(%(table)s) AND am.amname = 'ivfflat'
               AND x.indisvalid))::text, true),
           set_config('hnsw.iterative_scan', %(mode)s, true),
           set_config('ivfflat.iterative_scan', %(mode)s, true)"""


def vector_scan_settings(conn: psycopg.Connection[Any], collection: Collection,
                         candidates: int, *, filtered: bool) -> tuple[LiteralString, dict[str, Any]]:
    """The statement that sets the vector arm's index settings for the current transaction (see
    above) and returns them (ef_search, probes, and the two iterative_scan modes), and its
    parameters."""
    return _VECTOR_SCAN_SETTINGS, {"cand": candidates, "table": collection.table.as_string(conn),
                                   "mode": "relaxed_order" if filtered else "off"}


def embed_query(collection: Collection, text: str, *, embedder: Embedder) -> np.ndarray:
    """Embed a query text with ``embedder`` after checking it fits the collection."""
    check_text(text, "query")
    if not text.strip():
        raise InvalidInput("The query is empty. Type a few words to search for.")
    if embedder.dimension and embedder.dimension != collection.dimension:
        raise InvalidInput(
            f"{embedder.provider}/{embedder.model} makes {embedder.dimension}-dimensional vectors "
            f"but {collection.name!r} stores {collection.dimension}. Search it with "
            f"{collection.embedder}/{collection.model}."
        )
    return query_vector(collection, embedder.embed([text.strip()])[0])


def check_k(k: int) -> int:
    if not isinstance(k, int) or k < 1 or k > MAX_K:
        raise InvalidInput(f"top-k must be between 1 and {MAX_K}; got {k!r}.")
    return k


@explains_timeouts("The search")
def semantic_search(
    conn: psycopg.Connection[Any],
    collection: Collection,
    vector: Sequence[float] | np.ndarray,
    *,
    k: int = 10,
) -> pd.DataFrame:
    """The k nearest rows to ``vector`` by the collection's metric, nearest first.

    Columns: rank, id, external_id, title, content, category, distance.
    """
    check_k(k)
    vec = query_vector(collection, vector)
    c = collection
    query = sql.SQL(
        "SELECT {id}::text, {ext}::text, {title}::text, {content}::text, {category}::text, "
        "{vec} {op} %(q)s::{cast} AS distance FROM {table} ORDER BY distance LIMIT %(k)s"
    ).format(
        id=sql.Identifier(c.id_column),
        ext=c.column(c.external_id_column or c.id_column),
        title=c.column(c.title_column),
        content=sql.Identifier(c.content_column),
        category=c.column(c.category_column),
        vec=sql.Identifier(c.vector_column),
        op=c.distance_operator,
        cast=c.vector_cast,
        table=c.table,
    )
    # One round trip: the settings and the query go together in pipeline mode.
    with conn.pipeline(), conn.transaction():
        conn.execute(*vector_scan_settings(conn, c, k, filtered=False))
        cur = conn.execute(query, {"q": vec, "k": k})
    rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS[1:])
    frame.insert(0, "rank", range(1, len(frame) + 1))
    frame["distance"] = frame["distance"].astype(float)
    return frame


def search_text(
    conn: psycopg.Connection[Any],
    collection: Collection,
    text: str,
    *,
    embedder: Embedder,
    k: int = 10,
) -> pd.DataFrame:
    """Embed ``text`` and return the semantic top-k (see semantic_search)."""
    return semantic_search(conn, collection, embed_query(collection, text, embedder=embedder), k=k)
