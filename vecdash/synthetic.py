"""Synthetic vectors for index benchmarks: N random or clustered vectors of dimension d, loaded into
a new collection with the COPY loader (vecdash.ingest), no embedding model involved.

"random": every coordinate drawn from a standard normal (the tutorial exercise: 10,000 x 1536).
"clustered": ``clusters`` Gaussian blobs around random centres; a vector's category is its cluster,
which is what real embeddings look like more than uniform noise does (and what ANN indexes exploit).

How a cluster is shaped is a ``ClusterProfile``. ``ISOTROPIC`` (the generate_vectors defaults):
tight blobs whose noise varies in every one of the d directions, which real text embeddings do
not resemble (table below). ``MINILM_LIKE``: calibrated against the local model's
(all-MiniLM-L6-v2) embeddings of the bundled demo corpus, 365 passages in 10 categories, by
comparing ``embedding_statistics`` of the two at the same size (365 vectors, 10 clusters;
generator averaged over seeds 0-3, cosine geometry):

    statistic                                        MiniLM demo   MINILM_LIKE   ISOTROPIC
    components for 90% of the variance (PCA)             129          136.5         21.5
    local intrinsic dimension (Levina-Bickel, k=10)      16.9         16.3          51.6
    10th-neighbour / mean distance                       0.867        0.854         0.345
    1st-neighbour / mean distance                        0.724        0.732         0.329
    mean pairwise cosine similarity                      0.053        0.054         0.087
    mean cosine to own category's (cluster's) centroid   0.482        0.502         0.946

The profile's three numbers were read off a coarse grid (spread 1.6-2.2 in steps of 0.2,
intrinsic_dim 16-64 in steps of 8, centre_similarity 0-0.2 in steps of 0.05): spread from the
cosine to the category centroid, intrinsic_dim from the local intrinsic dimension and the PCA
count, centre_similarity from the mean pairwise cosine (real topics are related and all MiniLM
vectors share a common direction). No ANN recall was looked at to choose them. Limits: 365
passages is a small sample, and the statistics of a 100,000-vector set of real text (more topics,
sub-topics) at that scale are not measured here.

Which is harder for HNSW is not what the names suggest: on 100,000 x 384 vectors in 100 clusters
(bench/index_bench.py, m=16, ef_construction=64, ef_search=40) MINILM_LIKE gave recall@10 0.80
and 0.87 in two runs, ISOTROPIC 0.92 and 0.945 in the same runs (the index built with a parallel
worker is not the same each time): diffuse, overlapping clusters whose members vary in 40
directions are a harder neighbour search than tight blobs.

A larger real sample (checked once, not part of the tests or the bench: 10,200 paragraphs of
Python docstrings from the installed packages, embedded with the same model; template-heavy text)
suggests MINILM_LIKE is harder than real text at scale. At 365 vectors its statistics resemble the
demo's (PCA90 112, LID 15.4, d10/mean 0.80), but the local intrinsic dimension at 10,000 vectors
falls to 7.9 for the docstrings (real text has structure at several scales: sub-topics, near
paraphrases) while it rises to 24.3 for MINILM_LIKE and 88.7 for ISOTROPIC (10 clusters of 1,000,
as in the bench). HNSW recall@10 at ef_search 40 on 10,000 + 200 held-out: docstrings 0.991,
MINILM_LIKE 0.992, ISOTROPIC 0.960. bench/index_bench.py now also runs 100,000 such paragraphs
(bench/realtext.py): in one run real text gave 0.981 at ef_search 40, MINILM_LIKE 0.847 and
ISOTROPIC 0.940. Calibrating the small-scale structure (a hierarchy of sub-clusters) against that
corpus is not done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import psycopg

from vecdash.collections import MAX_STORED_DIM, Collection, create_collection, drop_collection
from vecdash.errors import InvalidInput
from vecdash.ingest import IngestReport, ProgressCallback, ingest_records
from vecdash.records import Record

Kind = Literal["random", "clustered"]
KINDS: tuple[Kind, ...] = ("random", "clustered")
MAX_ROWS = 2_000_000
SYNTHETIC_EMBEDDER = "none"
SYNTHETIC_MODEL = "synthetic"


@dataclass(frozen=True)
class ClusterProfile:
    """How the members of a cluster spread around its centre (see generate_vectors)."""

    name: str
    spread: float
    intrinsic_dim: int
    centre_similarity: float

    def kwargs(self) -> dict[str, Any]:
        """The generate_vectors keyword arguments for this profile."""
        values = asdict(self)
        del values["name"]
        return values


ISOTROPIC = ClusterProfile("isotropic", spread=0.35, intrinsic_dim=0, centre_similarity=0.0)
MINILM_LIKE = ClusterProfile("minilm-like", spread=2.0, intrinsic_dim=40, centre_similarity=0.15)
PROFILES: dict[str, ClusterProfile] = {p.name: p for p in (MINILM_LIKE, ISOTROPIC)}


@dataclass(frozen=True)
class EmbeddingStatistics:
    """Shape of a set of vectors under cosine distance (all computed on L2-normalised vectors)."""

    n: int
    pca90: int  # principal components needed for 90% of the variance
    lid: float  # local intrinsic dimension, Levina-Bickel MLE over k neighbours (MacKay-Ghahramani)
    knn_to_mean: float  # mean over points of (k-th neighbour distance / mean distance to all)
    nn_to_mean: float  # the same for the nearest neighbour
    mean_cosine: float  # mean cosine similarity between two different vectors


# embedding_statistics of all-MiniLM-L6-v2 on the 365 demo passages (title + newline + content, as
# ingested), k = 10: the target MINILM_LIKE was calibrated against.
MINILM_DEMO_STATISTICS = EmbeddingStatistics(n=365, pca90=129, lid=16.9, knn_to_mean=0.867,
                                             nn_to_mean=0.724, mean_cosine=0.053)


def generate_vectors(
    n: int,
    dimension: int,
    *,
    kind: str = "clustered",
    clusters: int = 10,
    spread: float = 0.35,
    intrinsic_dim: int = 0,
    centre_similarity: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 vectors of ``dimension`` and their cluster labels (all 0 for "random").

    Clustered: centres are unit-variance normals, members are centre + spread * noise. With
    ``intrinsic_dim`` 0 the noise is isotropic (every direction varies). With ``intrinsic_dim``
    r > 0 each cluster varies mostly within its own random r-dimensional subspace (plus a little
    isotropic noise), closer to how text embeddings fill their space (they have a low intrinsic
    dimension). With ``centre_similarity`` s > 0 every
    centre also gets one shared random direction, so two centres have cosine similarity about s
    (related topics); 0 leaves the output exactly as before the option existed. Pass
    ``**MINILM_LIKE.kwargs()`` for the profile calibrated against real MiniLM embeddings.
    """
    check_shape(n, dimension, kind=kind, clusters=clusters)
    if not isinstance(intrinsic_dim, int) or not 0 <= intrinsic_dim <= dimension:
        raise InvalidInput(f"The intrinsic dimension must be between 0 (isotropic) and the "
                           f"dimension ({dimension}); got {intrinsic_dim!r}.")
    if not 0.0 <= centre_similarity < 1.0:
        raise InvalidInput(f"The centre similarity must be at least 0 and below 1; got "
                           f"{centre_similarity!r}.")
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, dimension), dtype=np.float32), np.zeros(n, dtype=np.int64)
    centres = rng.standard_normal((clusters, dimension), dtype=np.float32)
    labels = rng.integers(0, clusters, size=n)
    noise = rng.standard_normal((n, dimension), dtype=np.float32)
    if intrinsic_dim:
        latent = rng.standard_normal((n, intrinsic_dim), dtype=np.float32)
        scale = np.float32(1 / np.sqrt(intrinsic_dim))
        noise *= np.float32(0.1)
        for c in range(clusters):
            members = labels == c
            basis = rng.standard_normal((intrinsic_dim, dimension), dtype=np.float32) * scale
            noise[members] += latent[members] @ basis
    vectors = centres[labels] + np.float32(spread) * noise
    if centre_similarity:  # drawn last, so the rest of the stream is unchanged
        shared = rng.standard_normal(dimension, dtype=np.float32)
        vectors += np.float32(np.sqrt(centre_similarity / (1 - centre_similarity))) * shared
    return vectors.astype(np.float32, copy=False), labels


def embedding_statistics(vectors: np.ndarray, *, k: int = 10) -> EmbeddingStatistics:
    """Shape statistics of ``vectors`` under cosine distance (O(n^2) memory: meant for samples of a
    few thousand at most). Compare sets of the same size: the neighbour statistics depend on n."""
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if x.ndim != 2 or n <= k:
        raise InvalidInput(f"Need a 2-d array of more than k={k} vectors; got shape {x.shape}.")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    variance = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
    pca90 = int(np.searchsorted(np.cumsum(variance) / variance.sum(), 0.9) + 1)
    gram = x @ x.T
    distance = np.sqrt(np.maximum(2.0 - 2.0 * gram, 0.0))
    off_diagonal = ~np.eye(n, dtype=bool)
    mean_distance = distance.sum(axis=1) / (n - 1)
    np.fill_diagonal(distance, np.inf)
    nearest = np.maximum(np.sort(distance, axis=1)[:, :k], 1e-12)  # duplicates: no log(0)
    inverse_lid = np.log(nearest[:, k - 1:k] / nearest[:, :k - 1]).mean(axis=1)
    return EmbeddingStatistics(
        n=n,
        pca90=pca90,
        lid=float(1.0 / max(float(inverse_lid.mean()), 1e-12)),
        knn_to_mean=float(np.mean(nearest[:, k - 1] / mean_distance)),
        nn_to_mean=float(np.mean(nearest[:, 0] / mean_distance)),
        mean_cosine=float(gram[off_diagonal].mean()),
    )


def check_shape(n: int, dimension: int, *, kind: str, clusters: int) -> None:
    if kind not in KINDS:
        raise InvalidInput(f"Unknown kind {kind!r}; choose 'random' or 'clustered'.")
    if not isinstance(n, int) or n < 1 or n > MAX_ROWS:
        raise InvalidInput(f"The number of vectors must be between 1 and {MAX_ROWS:,}; got {n!r}.")
    if not isinstance(dimension, int) or dimension < 1 or dimension > MAX_STORED_DIM:
        raise InvalidInput(
            f"The dimension must be between 1 and {MAX_STORED_DIM}; got {dimension!r}."
        )
    if kind == "clustered" and (not isinstance(clusters, int) or clusters < 1 or clusters > n):
        raise InvalidInput(
            f"The number of clusters must be between 1 and the number of vectors ({n}); got "
            f"{clusters!r}."
        )


def synthetic_records(vectors: np.ndarray, labels: np.ndarray, *, kind: str) -> Iterator[Record]:
    """One Record per vector: content names the vector (and its cluster), category = cluster."""
    for i, (vec, label) in enumerate(zip(vectors, labels, strict=True)):
        if kind == "clustered":
            content = f"synthetic vector #{i}, cluster {int(label)}"
            category: str | None = f"cluster {int(label)}"
        else:
            content = f"synthetic vector #{i}"
            category = None
        yield Record(content=content, external_id=f"syn-{i}", category=category, embedding=vec)


def create_synthetic_collection(
    conn: psycopg.Connection[Any],
    name: str,
    *,
    n: int,
    dimension: int,
    kind: str = "clustered",
    clusters: int = 10,
    metric: str = "cosine",
    intrinsic_dim: int = 0,
    seed: int = 0,
    batch_size: int = 2000,
    progress: ProgressCallback | None = None,
) -> tuple[Collection, IngestReport]:
    """Create collection ``name`` (embedder "none", model "synthetic") and load N generated vectors.

    Vectors above 2,000 dimensions are stored as halfvec (create_collection decides). If the load
    fails part-way the new collection is dropped again, so nothing half-made stays behind.
    """
    check_shape(n, dimension, kind=kind, clusters=clusters)
    vectors, labels = generate_vectors(n, dimension, kind=kind, clusters=clusters,
                                       intrinsic_dim=intrinsic_dim, seed=seed)
    collection = create_collection(
        conn, name, dimension=dimension, metric=metric,
        embedder=SYNTHETIC_EMBEDDER, model=SYNTHETIC_MODEL,
    )
    try:
        report = ingest_records(
            conn, collection, synthetic_records(vectors, labels, kind=kind),
            batch_size=batch_size, progress=progress,
        )
    except BaseException:
        with contextlib.suppress(Exception):  # keep the original error if the drop fails too
            drop_collection(conn, name)
        raise
    return collection, report
