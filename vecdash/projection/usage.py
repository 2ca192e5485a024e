"""Using a finished projection: where a query vector lands, colours (clusters, metadata fields),
the coordinates as CSV."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vecdash.collections import Collection
from vecdash.errors import InvalidInput
from vecdash.projection.fitted_models import _model_get
from vecdash.projection.fitting import distinct_rows
from vecdash.projection.knn import _knn_metric, _normalise, _prepare, neighbour_mean
from vecdash.projection.types import Projection


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
