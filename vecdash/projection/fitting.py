"""Fitting a 2-D layout: UMAP over the precomputed kNN graph, PCA, and counting distinct vectors
(which decides whether UMAP can run at all)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from vecdash.projection.knn import _ExactIndex, _prepare, knn_graph
from vecdash.projection.umap_runtime import _umap


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
