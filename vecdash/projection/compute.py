"""Computing projections: PCA, UMAP (PCA with a note when UMAP cannot run), and, after a few rows
were added, the previous map reused with only the new rows placed; ``project`` is the cached entry
point."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import psycopg

from vecdash.collections import Collection, data_version
from vecdash.errors import InvalidInput
from vecdash.projection.fitted_models import _model_get, _model_put
from vecdash.projection.fitting import _fit_umap, _pca, distinct_rows
from vecdash.projection.knn import _knn_metric, _prepare, neighbour_mean
from vecdash.projection.sampling import sample_vectors
from vecdash.projection.store import _forget, _load, _store, cached_projection
from vecdash.projection.types import Projection, ProjectionParams, Sample

MAX_NEW_SHARE = 0.2  # above this share of new rows, refit instead of placing them with transform


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
