"""Exact nearest neighbours for the map: normalisation, kNN search in blocks of float32 matrix
products, the kNN graph handed to UMAP as ``precomputed_knn``, the search index ``UMAP.transform``
queries, and placing points at the weighted mean of their neighbours."""

from __future__ import annotations

import warnings

import numpy as np

KNN_BLOCK = 1024


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
