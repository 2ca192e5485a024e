"""The background warm-up: compile the numba code a map uses (fit with a precomputed kNN graph,
transform, the Euclidean layout optimiser) on a tiny input when the app starts."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np

from vecdash.background import warm_up_once
from vecdash.projection.fitting import _fit_umap
from vecdash.projection.knn import _normalise


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
    return warm_up_once("UMAP", warm_up)
