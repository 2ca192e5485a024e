"""The embedding map: sampling, the kNN graph, UMAP / PCA, the projection cache, query placement.

Speed plan (a fresh umap-learn run on 5,000 x 384 spends most of a minute compiling numba code
and computing exact pairwise distances through a Python callable):

- the kNN graph is computed here with normalised float32 matrix products in blocks and
  ``argpartition`` and handed to UMAP as ``precomputed_knn``, together with a small exact search
  index (``_ExactIndex``) so that ``UMAP.transform`` works for new points;
- umap-learn's numba functions that are not cached on disk get numba's disk cache switched on
  (``Dispatcher.enable_caching``), so the JIT compile is paid once per installation rather than
  once per process, and ``warm_up_in_background`` compiles exactly the paths a map uses (fit with
  a precomputed kNN graph, transform, the Euclidean layout optimiser) on a tiny input when the app
  starts;
- finished projections are stored in PostgreSQL (``vecdash_projections``) keyed by collection,
  parameters and ``data_version``, so a reload or another session gets them at once; after rows
  are added, the previous projection is reused and only the new rows are placed (transform), as
  long as they are a small share of the sample.

umap-learn and scikit-learn are imported lazily: loading a cached projection never imports them.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash.collections import Collection, data_version
from vecdash.db import is_read_only
from vecdash.errors import InvalidInput

log = logging.getLogger(__name__)

Method = Literal["umap", "pca"]
DEFAULT_SAMPLE = 5000
MAX_SAMPLE = 100_000
SNIPPET_CHARS = 240
KNN_BLOCK = 1024
MAX_NEW_SHARE = 0.2  # above this share of new rows, refit instead of placing them with transform
MODELS_KEPT = 4  # fitted UMAP models kept in memory per process (for transform)

PROJECTIONS_DDL = sql.SQL("""
CREATE TABLE IF NOT EXISTS vecdash_projections (
    collection   text NOT NULL,
    params       text NOT NULL,
    data_version text NOT NULL,
    method       text NOT NULL,
    note         text NOT NULL DEFAULT '',
    ids          text[] NOT NULL,
    coords       bytea NOT NULL,
    total_rows   bigint NOT NULL,
    skipped      integer NOT NULL,
    seconds      double precision NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, params, data_version)
)""")


@dataclass(frozen=True)
class ProjectionParams:
    """What a projection depends on besides the data. ``key`` is its cache key."""

    method: Method = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    sample_size: int = DEFAULT_SAMPLE
    seed: int = 42
    # None: 500 up to 2,000 rows (cheap there, and worth ~0.003 trustworthiness on the demo), 200
    # above (umap-learn's own choice above 10,000; 2.5x faster than 500 at 5,000 rows, same
    # trustworthiness within 0.001 on the benchmark's data).
    n_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ("umap", "pca"):
            raise InvalidInput(f"Unknown projection method {self.method!r}; use 'umap' or 'pca'.")
        if not 2 <= self.n_neighbors <= 200:
            raise InvalidInput(f"n_neighbors must be between 2 and 200; got {self.n_neighbors}.")
        if not 0.0 <= self.min_dist <= 1.0:
            raise InvalidInput(f"min_dist must be between 0 and 1; got {self.min_dist}.")
        if self.n_epochs is not None and not 10 <= self.n_epochs <= 2000:
            raise InvalidInput(f"n_epochs must be between 10 and 2000; got {self.n_epochs}.")
        if not 10 <= self.sample_size <= MAX_SAMPLE:
            raise InvalidInput(
                f"The sample size must be between 10 and {MAX_SAMPLE:,}; got {self.sample_size}."
            )

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Sample:
    """Rows sampled from a collection, with their vectors (float32, rows aligned with ``rows``)."""

    rows: pd.DataFrame  # id, title, snippet, category, metadata
    vectors: np.ndarray
    total_rows: int  # rows with a vector in the collection
    skipped: int  # sampled rows dropped because the vector is zero or not finite
    stratified: bool

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Projection:
    """2-D coordinates for a sample of a collection and how they were made."""

    collection: str
    params: ProjectionParams
    data_version: str
    method: str  # what ran: "umap", "pca", "umap + transform", "pca preview"
    note: str  # why a fallback was used, or how new rows were placed; '' when nothing to say
    frame: pd.DataFrame  # id, x, y, title, snippet, category, metadata
    vectors: np.ndarray
    total_rows: int
    skipped: int
    seconds: float
    from_cache: bool = False
    stratified: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def coords(self) -> np.ndarray:
        return self.frame[["x", "y"]].to_numpy(dtype=np.float32)

    @property
    def has_model(self) -> bool:
        """True when a fitted UMAP model is in this process's memory (exact transform)."""
        return _model_get(self._model_key) is not None

    @property
    def _model_key(self) -> tuple[str, str, str]:
        return (self.collection, self.params.key, self.data_version)


# ---------------------------------------------------------------------------------------------
# numba / umap-learn: lazy import, disk cache for the JIT, background warm-up
# ---------------------------------------------------------------------------------------------

_umap_lock = threading.Lock()
_umap_ready = False
_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


def _umap() -> Any:
    """Import umap-learn and switch numba's disk cache on for its functions that lack it, so a
    compiled function is reused by the next process instead of compiled again."""
    global _umap_ready
    import umap
    import umap.layouts
    import umap.umap_
    import umap.utils

    with _umap_lock:
        if not _umap_ready:
            try:
                from numba.core.caching import NullCache
                from numba.core.registry import CPUDispatcher

                for module in (umap.umap_, umap.layouts, umap.utils):
                    for obj in vars(module).values():
                        cache = getattr(obj, "_cache", None)
                        if isinstance(obj, CPUDispatcher) and isinstance(cache, NullCache):
                            obj.enable_caching()
            except Exception as exc:  # no writable cache location: compile per process
                log.info("numba disk cache not enabled for umap-learn: %s", exc)
            _umap_ready = True
    return umap


def warm_up() -> float:
    """Compile the numba code a map needs (fit with a precomputed kNN graph, transform) on a
    tiny input; returns the seconds it took (near zero once the disk cache holds it)."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    vectors = _normalise(rng.normal(size=(64, 8)).astype(np.float32))
    model, _ = _fit_umap(vectors, n_neighbors=5, min_dist=0.1, seed=0, metric="cosine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.transform(vectors[:2])
    from sklearn.decomposition import PCA

    PCA(n_components=2).fit_transform(vectors)
    return time.perf_counter() - start


def warm_up_in_background() -> threading.Thread:
    """Start ``warm_up`` in a daemon thread, once per process (later calls return that thread)."""
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None:

            def run() -> None:
                try:
                    seconds = warm_up()
                    log.info("UMAP warm-up finished in %.1f s", seconds)
                except Exception:  # never break the app over a warm-up
                    log.exception("UMAP warm-up failed")

            _warm_thread = threading.Thread(target=run, name="vecdash-umap-warm-up", daemon=True)
            _warm_thread.start()
        return _warm_thread


# ---------------------------------------------------------------------------------------------
# Maths: normalisation, exact kNN in blocks, the search index UMAP.transform uses
# ---------------------------------------------------------------------------------------------


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def _knn_metric(collection_metric: str) -> str:
    """The metric of the map: Euclidean for L2 collections, cosine otherwise (inner-product
    collections hold normalised vectors in practice, where the two rank alike)."""
    return "euclidean" if collection_metric == "l2" else "cosine"


def _prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    return _normalise(arr) if metric == "cosine" else arr


def knn_search(
    queries: np.ndarray, data: np.ndarray, k: int, *, metric: str = "cosine",
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``data`` for each query row: (indices int32, distances float32),
    nearest first. Both inputs already prepared (normalised for cosine). With ``exclude_self``
    (queries is data) each row's own index comes first with distance 0, as UMAP expects."""
    n_q = queries.shape[0]
    k = min(k, data.shape[0])
    indices = np.empty((n_q, k), dtype=np.int32)
    distances = np.empty((n_q, k), dtype=np.float32)
    sq_data = np.einsum("ij,ij->i", data, data) if metric == "euclidean" else None
    for start in range(0, n_q, KNN_BLOCK):
        block = queries[start : start + KNN_BLOCK]
        rows = np.arange(block.shape[0])
        if metric == "cosine":
            # rank by similarity in place (largest first): no distance matrix is materialised
            score = block @ data.T
        else:
            assert sq_data is not None
            score = block @ data.T
            score *= 2.0
            score -= sq_data[None, :]  # -(|d|^2 - 2 q.d): larger is nearer; |q|^2 added back
        if exclude_self:
            score[rows, rows + start] = np.inf
        if k < data.shape[0]:
            part = np.argpartition(score, data.shape[0] - k, axis=1)[:, -k:]
        else:
            part = np.tile(np.arange(data.shape[0]), (block.shape[0], 1))
        part_score = np.take_along_axis(score, part, axis=1)
        order = np.argsort(-part_score, axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
        best = np.take_along_axis(part_score, order, axis=1)
        if metric == "cosine":
            d = 1.0 - best
        else:
            sq_block = np.einsum("ij,ij->i", block, block)
            d = np.sqrt(np.maximum(sq_block[:, None] - best, 0.0))
        d = np.where(np.isinf(best), 0.0, np.maximum(d, 0.0))  # self first, at distance 0
        indices[start : start + len(block)] = idx
        distances[start : start + len(block)] = d
    return indices, distances


EXACT_KNN_MAX = 20_000  # above this many rows the kNN graph is searched within nearby partitions


def knn_graph(
    data: np.ndarray, k: int, *, metric: str = "cosine", seed: int = 42,
    exact_max: int = EXACT_KNN_MAX, probes: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph of ``data`` (prepared) including each row itself first.

    Up to ``exact_max`` rows: exact (blocked matrix products, O(n^2 d)). Above: rows are split
    into about sqrt(n) KMeans partitions (fitted on a subsample) and each partition's rows are
    searched exactly among the rows of its ``probes`` nearest partitions, which costs about
    probes / sqrt(n) of the exact search (an inverted-file search, as pgvector's IVFFlat does).
    """
    n = data.shape[0]
    if n <= exact_max:
        return knn_search(data, data, k, metric=metric, exclude_self=True)
    from sklearn.cluster import KMeans

    lists = max(2, int(np.sqrt(n)))
    rng = np.random.default_rng(seed)
    train = data[rng.choice(n, min(n, lists * 40), replace=False)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kmeans = KMeans(n_clusters=lists, init="random", n_init=1, max_iter=20,
                        random_state=seed).fit(train)
    centres = np.asarray(kmeans.cluster_centers_, dtype=np.float32)
    assign = np.asarray(kmeans.predict(data))
    nearest_lists, _ = knn_search(centres, centres, min(probes, lists), metric="euclidean")
    indices = np.empty((n, k), dtype=np.int32)
    distances = np.empty((n, k), dtype=np.float32)
    members = [np.flatnonzero(assign == c) for c in range(lists)]
    for c in range(lists):
        rows = members[c]
        if len(rows) == 0:
            continue
        pool = np.concatenate([members[other] for other in nearest_lists[c]])
        if len(pool) < k:
            pool = np.arange(n)
        idx, dist = knn_search(data[rows], data[pool], k, metric=metric)
        found = pool[idx]
        # the row itself is in its own partition (part of the pool): put it first at distance 0
        dist[:, 0] = np.where(found[:, 0] == rows, 0.0, dist[:, 0])
        for j in np.flatnonzero(found[:, 0] != rows):  # ties with duplicates of the row
            keep = found[j] != rows[j]
            found[j] = np.concatenate([[rows[j]], found[j][keep][: k - 1]])
            dist[j] = np.concatenate([[0.0], dist[j][keep][: k - 1]])
        indices[rows] = found
        distances[rows] = dist
    return indices, distances


class _ExactIndex:
    """The search index UMAP.transform queries for new points: exact kNN over the fitted sample.

    umap-learn accepts any object as ``precomputed_knn[2]`` and calls only ``query(X, k,
    epsilon=...)`` and reads ``_angular_trees`` from it in ``transform``.
    """

    def __init__(self, data: np.ndarray, metric: str) -> None:
        self.data = data
        self.metric = metric
        self._angular_trees = metric == "cosine"

    def query(self, queries: np.ndarray, k: int, epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        prepared = _prepare(np.asarray(queries), self.metric)
        return knn_search(prepared, self.data, k, metric=self.metric)


def _fit_umap(
    vectors: np.ndarray, *, n_neighbors: int, min_dist: float, seed: int, metric: str,
    n_epochs: int | None = None,
) -> tuple[Any, np.ndarray]:
    umap = _umap()
    if n_epochs is None:
        n_epochs = 500 if len(vectors) <= 2000 else 200
    data = _prepare(vectors, metric)
    indices, distances = knn_graph(data, n_neighbors, metric=metric, seed=seed)
    model = umap.UMAP(
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        precomputed_knn=(indices, distances, _ExactIndex(data, metric)),
        random_state=seed,
        transform_seed=seed,
        n_epochs=n_epochs,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # "precomputed_knn[2] is not an NNDescent object" (it is _ExactIndex, which transform
        # uses), and the n_jobs / random_state note.
        warnings.simplefilter("ignore")
        coords = model.fit_transform(data)
    return model, np.asarray(coords, dtype=np.float32)


def _pca(vectors: np.ndarray, seed: int) -> np.ndarray:
    if len(vectors) == 1:
        return np.zeros((1, 2), dtype=np.float32)
    from sklearn.decomposition import PCA

    components = min(2, vectors.shape[0], vectors.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero explained variance for identical vectors
        coords = PCA(n_components=components, random_state=seed).fit_transform(vectors)
    coords = np.nan_to_num(np.asarray(coords, dtype=np.float32))
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]), np.float32)])
    return coords


def distinct_rows(vectors: np.ndarray) -> int:
    """How many different vectors there are (exact byte equality)."""
    if len(vectors) == 0:
        return 0
    contiguous = np.ascontiguousarray(vectors)
    as_bytes = contiguous.view(np.dtype((np.void, contiguous.dtype.itemsize * contiguous.shape[1])))
    return int(len(np.unique(as_bytes)))


# ---------------------------------------------------------------------------------------------
# In-process registry of fitted models (for transform)
# ---------------------------------------------------------------------------------------------

_models_lock = threading.Lock()
_models: OrderedDict[tuple[str, str, str], Any] = OrderedDict()


def _model_get(key: tuple[str, str, str]) -> Any:
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            _models.move_to_end(key)
        return model


def _model_put(key: tuple[str, str, str], model: Any) -> None:
    with _models_lock:
        _models[key] = model
        _models.move_to_end(key)
        while len(_models) > MODELS_KEPT:
            _models.popitem(last=False)


# ---------------------------------------------------------------------------------------------
# Database: sampling and reading rows
# ---------------------------------------------------------------------------------------------


def _select_list(c: Collection) -> sql.Composed:
    return sql.SQL(
        "{id}::text, coalesce({title}::text, ''), left({content}::text, %(snip)s), "
        "{category}::text, {metadata}, {vec}"
    ).format(
        id=sql.Identifier(c.id_column),
        title=c.column(c.title_column),
        content=sql.Identifier(c.content_column),
        category=c.column(c.category_column),
        metadata=sql.SQL("{}::jsonb").format(sql.Identifier(c.metadata_column))
        if c.metadata_column
        else sql.SQL("NULL::jsonb"),
        vec=sql.Identifier(c.vector_column),
    )


def _rows_to_sample(rows: list[tuple[Any, ...]], dimension: int) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Rows (id, title, snippet, category, metadata, vector) -> frame + float32 matrix, dropping
    zero and non-finite vectors (returned as the skipped count)."""
    vectors = np.empty((len(rows), dimension), dtype=np.float32)
    if rows:
        vectors[:] = [r[5].to_numpy() if hasattr(r[5], "to_numpy") else r[5] for r in rows]
    frame = pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "snippet": [r[2] for r in rows],
            "category": [r[3] for r in rows],
            "metadata": [r[4] if isinstance(r[4], dict) else {} for r in rows],
        }
    )
    if len(rows) == 0:
        return frame, vectors, 0
    good = np.all(np.isfinite(vectors), axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    skipped = int((~good).sum())
    if skipped:
        frame = frame[good].reset_index(drop=True)
        vectors = np.ascontiguousarray(vectors[good])
    return frame, vectors, skipped


def _relkind(conn: psycopg.Connection[Any], c: Collection) -> str:
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (c.schema_name, c.table_name),
    ).fetchone()
    return str(row[0]) if row else ""


def _quotas(counts: dict[str | None, int], limit: int) -> dict[str | None, int]:
    """Proportional per-category quotas summing to ``limit`` (largest remainder), every
    non-empty category getting at least one row."""
    total = sum(counts.values())
    exact = {c: limit * n / total for c, n in counts.items()}
    quotas = {c: min(counts[c], max(1, int(q))) for c, q in exact.items()}
    by_remainder = sorted(counts, key=lambda c: (exact[c] - int(exact[c])), reverse=True)
    short = limit - sum(quotas.values())
    for c in by_remainder:
        if short <= 0:
            break
        if quotas[c] < counts[c]:
            quotas[c] += 1
            short -= 1
    return quotas


def sample_vectors(
    conn: psycopg.Connection[Any], collection: Collection, *, limit: int = DEFAULT_SAMPLE,
    seed: int = 42,
) -> Sample:
    """Up to ``limit`` rows with their vectors, chosen in SQL (never the whole table in memory).

    Deterministic for a seed: rows are ordered by md5(seed || id), so adding rows keeps most of
    the previous sample. Stratified by category when the collection has one (each category gets
    its share, at least one row). On a very large table a repeatable block sample (TABLESAMPLE
    SYSTEM) narrows the candidates to about 5x the sample first. Zero and NaN vectors are skipped
    and counted; NULL vectors are never selected.
    """
    c = collection
    if not 1 <= limit <= MAX_SAMPLE:
        raise InvalidInput(f"The sample size must be between 1 and {MAX_SAMPLE:,}; got {limit}.")
    vec = sql.Identifier(c.vector_column)
    cat = c.column(c.category_column)
    counts_rows = conn.execute(
        sql.SQL("SELECT {cat}::text, count(*) FROM {t} WHERE {vec} IS NOT NULL GROUP BY 1").format(
            cat=cat, t=c.table, vec=vec
        )
    ).fetchall()
    counts: dict[str | None, int] = {r[0]: int(r[1]) for r in counts_rows}
    total = sum(counts.values())
    stratified = c.category_column is not None and len(counts) > 1
    select = _select_list(c)
    params: dict[str, Any] = {"snip": SNIPPET_CHARS, "seed": f"{seed}:"}
    if total <= limit:
        query = sql.SQL("SELECT {sel} FROM {t} WHERE {vec} IS NOT NULL").format(
            sel=select, t=c.table, vec=vec
        )
        stratified = False
    else:
        source: sql.Composable = c.table
        if total > 10 * limit and _relkind(conn, c) in ("r", "m"):
            pct = min(100.0, 100.0 * 5 * limit / total)
            source = sql.SQL("{} TABLESAMPLE SYSTEM (%(pct)s) REPEATABLE (%(rseed)s)").format(c.table)
            params.update(pct=pct, rseed=seed)
        quotas: dict[str | None, int] = _quotas(counts, limit) if stratified else {None: limit}
        params.update(cats=[k for k in quotas], quota=[quotas[k] for k in quotas])
        part = cat if stratified else sql.SQL("NULL::text")
        query = sql.SQL("""
            WITH candidates AS (
                SELECT {id} AS pk, {part}::text AS stratum,
                       row_number() OVER (PARTITION BY {part}::text
                                          ORDER BY md5(%(seed)s || {id}::text)) AS rn
                FROM {source} WHERE {vec} IS NOT NULL
            ),
            quotas AS (SELECT * FROM unnest(%(cats)s::text[], %(quota)s::int[]) AS q(stratum, n))
            SELECT {sel} FROM {t}
            WHERE {id} IN (SELECT c.pk FROM candidates c JOIN quotas q
                           ON q.stratum IS NOT DISTINCT FROM c.stratum WHERE c.rn <= q.n)
            """).format(
            id=sql.Identifier(c.id_column), part=part, source=source, vec=vec, sel=select,
            t=c.table,
        )
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(query, params).fetchall()
    rows.sort(key=lambda r: str(r[0]))  # a stable order without sorting wide rows in SQL
    frame, vectors, skipped = _rows_to_sample(rows, c.dimension)
    return Sample(frame, vectors, total, skipped, stratified)


def fetch_rows(
    conn: psycopg.Connection[Any], collection: Collection, ids: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows with these ids (text form) and their vectors, in the order of ``ids``."""
    c = collection
    # The ids are cast to the id column's type (as PostgreSQL spells it, from the catalog) so the
    # primary key index finds them.
    row = conn.execute(
        "SELECT a.atttypid::regtype::text FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = r.relnamespace "
        "WHERE n.nspname = %s AND r.relname = %s AND a.attname = %s",
        (c.schema_name, c.table_name, c.id_column),
    ).fetchone()
    id_type = sql.SQL(str(row[0])) if row else sql.SQL("text")
    query = sql.SQL("SELECT {sel} FROM {t} WHERE {id} = ANY(%(ids)s::text[]::{id_type}[])").format(
        sel=_select_list(c), t=c.table, id=sql.Identifier(c.id_column), id_type=id_type
    )
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(query, {"ids": ids, "snip": SNIPPET_CHARS}).fetchall()
    position = {pid: i for i, pid in enumerate(ids)}
    rows.sort(key=lambda r: position.get(r[0], len(ids)))  # the order asked for (no SQL sort)
    frame, vectors, _ = _rows_to_sample(rows, c.dimension)
    return frame, vectors


# ---------------------------------------------------------------------------------------------
# The projection cache in PostgreSQL
# ---------------------------------------------------------------------------------------------


def _ensure_table(conn: psycopg.Connection[Any]) -> bool:
    """Create the cache table if it is missing; False when it cannot exist (read-only)."""
    exists = conn.execute("SELECT to_regclass('vecdash_projections') IS NOT NULL").fetchone()
    if exists and exists[0]:
        return True
    if is_read_only(conn):
        return False
    try:
        conn.execute(PROJECTIONS_DDL)
    except psycopg.errors.UniqueViolation:  # another session created it at the same moment
        pass
    return True


def _store(conn: psycopg.Connection[Any], projection: Projection) -> None:
    if is_read_only(conn) or not _ensure_table(conn):
        return
    coords = np.ascontiguousarray(projection.coords, dtype="<f4").tobytes()
    with conn.transaction():
        conn.execute(
            "DELETE FROM vecdash_projections WHERE collection = %s AND params = %s",
            (projection.collection, projection.params.key),
        )
        conn.execute(
            """INSERT INTO vecdash_projections (collection, params, data_version, method, note,
                   ids, coords, total_rows, skipped, seconds)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (collection, params, data_version) DO UPDATE SET
                   method = EXCLUDED.method, note = EXCLUDED.note, ids = EXCLUDED.ids,
                   coords = EXCLUDED.coords, total_rows = EXCLUDED.total_rows,
                   skipped = EXCLUDED.skipped, seconds = EXCLUDED.seconds,
                   created_at = now()""",  # two sessions may finish the same map at once
            (projection.collection, projection.params.key, projection.data_version,
             projection.method, projection.note, list(projection.frame["id"]), coords,
             projection.total_rows, projection.skipped, projection.seconds),
        )


def _load(
    conn: psycopg.Connection[Any], collection: Collection, params: ProjectionParams,
    version: str | None,
) -> tuple[str, str, str, list[str], np.ndarray, int, int, float] | None:
    """The stored projection for these params: for ``version`` exactly, or (None) the latest."""
    if conn.execute("SELECT to_regclass('vecdash_projections')").fetchone() in (None, (None,)):
        return None
    query = (
        "SELECT data_version, method, note, ids, coords, total_rows, skipped, seconds "
        "FROM vecdash_projections WHERE collection = %s AND params = %s"
    )
    args: tuple[Any, ...] = (collection.name, params.key)
    if version is not None:
        query += " AND data_version = %s"
        args = (*args, version)
    with conn.cursor(binary=True) as cur:
        row = cur.execute(query + " ORDER BY created_at DESC LIMIT 1", args).fetchone()
    if row is None:
        return None
    coords = np.frombuffer(bytes(row[4]), dtype="<f4").reshape(-1, 2).astype(np.float32)
    return (str(row[0]), str(row[1]), str(row[2]), list(row[3]), coords, int(row[5]),
            int(row[6]), float(row[7]))


def clear_cache(conn: psycopg.Connection[Any], collection: Collection | None = None) -> int:
    """Forget stored projections (of one collection, or all); returns how many were removed."""
    if is_read_only(conn) or conn.execute(
        "SELECT to_regclass('vecdash_projections')"
    ).fetchone() in (None, (None,)):
        return 0
    if collection is None:
        cur = conn.execute("DELETE FROM vecdash_projections")
    else:
        cur = conn.execute("DELETE FROM vecdash_projections WHERE collection = %s", (collection.name,))
    return cur.rowcount


def cached_projection(
    conn: psycopg.Connection[Any], collection: Collection, params: ProjectionParams
) -> Projection | None:
    """The stored projection for the collection's current data and these params, or None."""
    version = data_version(conn, collection)
    found = _load(conn, collection, params, version)
    if found is None:
        return None
    start = time.perf_counter()
    _, method, note, ids, coords, total, skipped, seconds = found
    frame, vectors = fetch_rows(conn, collection, ids)
    if len(frame) != len(ids):  # rows changed without a version change: recompute
        return None
    frame.insert(1, "x", coords[:, 0])
    frame.insert(2, "y", coords[:, 1])
    return Projection(collection.name, params, version, method, note, frame, vectors, total,
                      skipped, seconds, from_cache=True,
                      extra={"load_seconds": time.perf_counter() - start})


# ---------------------------------------------------------------------------------------------
# Computing projections
# ---------------------------------------------------------------------------------------------


def _projection(
    collection: Collection, params: ProjectionParams, version: str, method: str, note: str,
    sample: Sample, coords: np.ndarray, seconds: float,
) -> Projection:
    frame = sample.rows.copy()
    frame.insert(1, "x", coords[:, 0].astype(np.float32))
    frame.insert(2, "y", coords[:, 1].astype(np.float32))
    return Projection(collection.name, params, version, method, note, frame, sample.vectors,
                      sample.total_rows, sample.skipped, seconds, stratified=sample.stratified)


def pca_projection(
    collection: Collection, sample: Sample, params: ProjectionParams, *, version: str = ""
) -> Projection:
    """A PCA projection of the sample: instant, used as the preview while UMAP runs."""
    start = time.perf_counter()
    metric = _knn_metric(collection.metric)
    coords = _pca(_prepare(sample.vectors, metric), params.seed) if len(sample) else np.zeros((0, 2))
    return _projection(collection, params, version, "pca", "", sample, coords,
                       time.perf_counter() - start)


def _fallback_reason(sample: Sample, params: ProjectionParams) -> str:
    n = len(sample)
    if n <= params.n_neighbors:
        return (f"Only {n} usable rows, not more than n_neighbors ({params.n_neighbors}): UMAP "
                "needs more rows than neighbours, so this map is PCA. Lower n_neighbors or add "
                "rows to get UMAP.")
    distinct = distinct_rows(sample.vectors)
    if distinct == 1:
        return "All sampled vectors are identical, so every point sits at the same place (PCA)."
    if distinct <= params.n_neighbors:
        return (f"Only {distinct} distinct vectors among {n} rows, not more than n_neighbors "
                f"({params.n_neighbors}): this map is PCA.")
    return ""


def compute_projection(
    conn: psycopg.Connection[Any],
    collection: Collection,
    sample: Sample,
    params: ProjectionParams,
    *,
    version: str | None = None,
    store: bool = True,
) -> Projection:
    """Project ``sample`` (UMAP or PCA as asked, PCA with a note when UMAP cannot run), remember
    a fitted UMAP model in this process for transform, and store the result in PostgreSQL.

    When a stored projection for an earlier data version exists and the sample only gained a few
    rows (at most 20 %), those old coordinates are kept and the new rows are placed with the
    fitted model's transform (or, without a model in memory, at the weighted mean of their
    nearest old neighbours) instead of refitting.
    """
    version = version if version is not None else data_version(conn, collection)
    if len(sample) == 0:
        raise InvalidInput(
            f"{collection.name!r} has no usable vectors to map (empty, or only NULL / zero / NaN "
            "vectors). Load rows with embeddings first."
        )
    start = time.perf_counter()
    metric = _knn_metric(collection.metric)
    reason = _fallback_reason(sample, params) if params.method == "umap" else ""
    if params.method == "pca" or reason:
        coords = _pca(_prepare(sample.vectors, metric), params.seed)
        projection = _projection(collection, params, version, "pca", reason, sample, coords, 0.0)
    else:
        projection = _incremental(conn, collection, sample, params, version) or _full_umap(
            collection, sample, params, version
        )
    projection.seconds = time.perf_counter() - start
    if store:
        _store(conn, projection)
    return projection


def _full_umap(
    collection: Collection, sample: Sample, params: ProjectionParams, version: str
) -> Projection:
    model, coords = _fit_umap(sample.vectors, n_neighbors=params.n_neighbors,
                              min_dist=params.min_dist, seed=params.seed,
                              metric=_knn_metric(collection.metric), n_epochs=params.n_epochs)
    projection = _projection(collection, params, version, "umap", "", sample, coords, 0.0)
    _model_put(projection._model_key, model)
    return projection


def _incremental(
    conn: psycopg.Connection[Any], collection: Collection, sample: Sample,
    params: ProjectionParams, version: str,
) -> Projection | None:
    previous = _load(conn, collection, params, None)
    if previous is None or previous[0] == version:
        return None
    old_version, old_method, _, old_ids, old_coords, _, _, _ = previous
    if not old_method.startswith("umap"):
        return None
    position = {pid: i for i, pid in enumerate(old_ids)}
    ids = list(sample.rows["id"])
    kept = np.array([pid in position for pid in ids], dtype=bool)
    new_count = int((~kept).sum())
    if new_count == 0 or new_count > MAX_NEW_SHARE * len(ids) or kept.sum() <= params.n_neighbors:
        return None
    coords = np.zeros((len(ids), 2), dtype=np.float32)
    coords[kept] = old_coords[[position[pid] for pid in np.array(ids)[kept]]]
    new_vectors = sample.vectors[~kept]
    model = _model_get((collection.name, params.key, old_version))
    if model is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coords[~kept] = np.asarray(model.transform(new_vectors), dtype=np.float32)
        how = "UMAP transform of the fitted model"
    else:
        metric = _knn_metric(collection.metric)
        coords[~kept] = neighbour_mean(
            _prepare(new_vectors, metric), _prepare(sample.vectors[kept], metric),
            coords[kept], params.n_neighbors, metric=metric,
        )
        how = "the weighted mean of their nearest mapped neighbours"
    note = (f"{new_count} rows added since the map was fitted were placed with {how} "
            "(no refit). Press Recompute for a fresh fit.")
    return _projection(collection, params, version, "umap + transform", note, sample, coords, 0.0)


def neighbour_mean(
    queries: np.ndarray, data: np.ndarray, coords: np.ndarray, k: int, *, metric: str
) -> np.ndarray:
    """Place points at the weighted mean of their k nearest neighbours' coordinates, weights
    exp(-(d - d_nearest) / spread) (the shape of UMAP's membership strengths)."""
    idx, dist = knn_search(queries, data, k, metric=metric)
    spread = np.maximum(dist.mean(axis=1, keepdims=True) - dist[:, :1], 1e-6)
    weights = np.exp(-(dist - dist[:, :1]) / spread)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.asarray(np.einsum("ij,ijk->ik", weights, coords[idx]), dtype=np.float32)


def project(
    conn: psycopg.Connection[Any],
    collection: Collection,
    params: ProjectionParams | None = None,
    *,
    refresh: bool = False,
) -> Projection:
    """The map of a collection: from the cache when the data is unchanged, else computed (and
    stored). ``refresh`` forces a full recompute."""
    params = params or ProjectionParams()
    if not refresh:
        cached = cached_projection(conn, collection, params)
        if cached is not None:
            return cached
    version = data_version(conn, collection)
    sample = sample_vectors(conn, collection, limit=params.sample_size, seed=params.seed)
    if refresh:
        _forget(conn, collection, params)
    return compute_projection(conn, collection, sample, params, version=version)


def _forget(conn: psycopg.Connection[Any], collection: Collection, params: ProjectionParams) -> None:
    if is_read_only(conn) or conn.execute(
        "SELECT to_regclass('vecdash_projections')"
    ).fetchone() in (None, (None,)):
        return
    conn.execute("DELETE FROM vecdash_projections WHERE collection = %s AND params = %s",
                 (collection.name, params.key))


# ---------------------------------------------------------------------------------------------
# Using a projection: query placement, neighbours, clusters, metadata fields, pictures
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    x: float
    y: float
    how: str  # "UMAP transform" or the fallback's description


def place_vector(projection: Projection, collection: Collection, vector: np.ndarray) -> Placement:
    """Where a vector (e.g. an embedded query) lands on the map.

    With the fitted UMAP model in this process: ``UMAP.transform``. Otherwise (PCA maps, or a
    projection loaded from the cache after a restart): the weighted mean of the coordinates of
    its n_neighbors nearest sampled rows.
    """
    arr = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    if arr.shape[1] != collection.dimension:
        raise InvalidInput(
            f"The query vector has {arr.shape[1]} dimensions but {collection.name!r} stores "
            f"{collection.dimension}. Embed the query with the collection's model "
            f"({collection.embedder}/{collection.model})."
        )
    if not np.all(np.isfinite(arr)) or not np.any(arr):
        raise InvalidInput("The query vector is zero or contains NaN; it cannot be placed.")
    if len(projection.frame) == 0:
        raise InvalidInput("The map is empty; there is nothing to place the query against.")
    model = _model_get(projection._model_key) if projection.method == "umap" else None
    if model is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xy = np.asarray(model.transform(arr), dtype=np.float32)[0]
        return Placement(float(xy[0]), float(xy[1]), "UMAP transform (the fitted model)")
    metric = _knn_metric(collection.metric)
    k = min(projection.params.n_neighbors, len(projection.frame))
    xy = neighbour_mean(_prepare(arr, metric), _prepare(projection.vectors, metric),
                        projection.coords, k, metric=metric)[0]
    return Placement(
        float(xy[0]), float(xy[1]),
        f"weighted mean of its {k} nearest sampled neighbours' positions (no fitted model in "
        "memory for this map, e.g. loaded from the cache)",
    )


def cluster_labels(vectors: np.ndarray, *, n_clusters: int = 8, seed: int = 42) -> np.ndarray:
    """KMeans clusters in the embedding space (on normalised vectors), labels 0..n-1."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.int64)
    from sklearn.cluster import KMeans

    n = max(1, min(n_clusters, distinct_rows(vectors)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(_normalise(vectors))
    return np.asarray(model.labels_, dtype=np.int64)


def metadata_fields(frame: pd.DataFrame) -> list[str]:
    """Top-level metadata keys with scalar values, usable to colour the map."""
    keys: dict[str, None] = {}
    for meta in frame.get("metadata", pd.Series(dtype=object)):
        if isinstance(meta, dict):
            for key, value in meta.items():
                if isinstance(value, str | int | float | bool) or value is None:
                    keys.setdefault(str(key), None)
    return sorted(keys)


def metadata_values(frame: pd.DataFrame, key: str) -> list[str]:
    return [
        str(m.get(key)) if isinstance(m, dict) and m.get(key) is not None else "(none)"
        for m in frame["metadata"]
    ]


def coordinates_csv(projection: Projection) -> bytes:
    """The coordinates as CSV: id, x, y, title, category."""
    out = projection.frame[["id", "x", "y", "title", "category"]]
    return out.to_csv(index=False).encode("utf-8")


PALETTE = [
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6",
    "#9d755d", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
]


def render_png(
    projection: Projection,
    labels: list[str] | None = None,
    *,
    highlight: list[str] | None = None,
    query: Placement | None = None,
    title: str = "",
    width: int = 1400,
    height: int = 1000,
    legend_max: int = 16,
) -> bytes:
    """The map as a PNG, drawn server-side with Pillow (no browser or kaleido needed): points
    coloured by ``labels``, highlighted ids ringed, the query as a star, a legend."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=16)
    small = ImageFont.load_default(size=13)
    legend_w, margin, top = 260, 30, 50
    plot = (margin, top, width - legend_w - margin, height - margin)
    draw.text((margin, 14), title or f"{projection.collection} · {projection.method}", fill="black",
              font=font)
    draw.rectangle(plot, outline="#cccccc")
    coords = projection.coords
    points = coords if query is None else np.vstack([coords, [[query.x, query.y]]])
    if len(points):
        lo, hi = points.min(axis=0), points.max(axis=0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
    else:
        lo, span = np.zeros(2), np.ones(2)

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = plot[0] + 12 + (x - lo[0]) / span[0] * (plot[2] - plot[0] - 24)
        py = plot[3] - 12 - (y - lo[1]) / span[1] * (plot[3] - plot[1] - 24)
        return float(px), float(py)

    names = labels or ["points"] * len(coords)
    order = list(dict.fromkeys(names))
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(order)}
    r = 3 if len(coords) > 2000 else 4
    for (x, y), name in zip(coords, names, strict=False):
        px, py = to_px(float(x), float(y))
        draw.ellipse((px - r, py - r, px + r, py + r), fill=colour[name])
    marked = set(highlight or [])
    if marked:
        for (x, y), pid in zip(coords, projection.frame["id"], strict=False):
            if pid in marked:
                px, py = to_px(float(x), float(y))
                draw.ellipse((px - 8, py - 8, px + 8, py + 8), outline="black", width=2)
    if query is not None:
        px, py = to_px(query.x, query.y)
        star = []
        for i in range(10):
            angle = np.pi / 2 + i * np.pi / 5
            rad = 14 if i % 2 == 0 else 6
            star.append((px + rad * float(np.cos(angle)), py - rad * float(np.sin(angle))))
        draw.polygon(star, fill="#d62728", outline="black")
    lx, ly = width - legend_w, top
    for name in order[:legend_max]:
        draw.ellipse((lx, ly + 4, lx + 10, ly + 14), fill=colour[name])
        draw.text((lx + 18, ly), str(name)[:30], fill="black", font=small)
        ly += 20
    if len(order) > legend_max:
        draw.text((lx, ly), f"… {len(order) - legend_max} more", fill="black", font=small)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


