"""The background warm-up: compile the numba code a map uses (fit with a precomputed kNN graph,
transform, the Euclidean layout optimiser) on a tiny input when the app starts."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import numpy as np

from vecdash.projection.fitting import _fit_umap
from vecdash.projection.knn import _normalise

log = logging.getLogger(__name__)

_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None


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
