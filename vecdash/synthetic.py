"""Synthetic vectors for index benchmarks: N random or clustered vectors of dimension d, loaded into
a new collection with the COPY loader (vecdash.ingest), no embedding model involved.

"random": every coordinate drawn from a standard normal (the tutorial exercise: 10,000 x 1536).
"clustered": ``clusters`` Gaussian blobs around random centres; a vector's category is its cluster,
which is what real embeddings look like more than uniform noise does (and what ANN indexes exploit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import psycopg

from vecdash.collections import MAX_STORED_DIM, Collection, create_collection, drop_collection
from vecdash.errors import InvalidInput
from vecdash.ingest import IngestReport, ProgressCallback, Record, ingest_records

Kind = Literal["random", "clustered"]
KINDS: tuple[Kind, ...] = ("random", "clustered")
MAX_ROWS = 2_000_000
SYNTHETIC_EMBEDDER = "none"
SYNTHETIC_MODEL = "synthetic"


def generate_vectors(
    n: int,
    dimension: int,
    *,
    kind: str = "clustered",
    clusters: int = 10,
    spread: float = 0.35,
    intrinsic_dim: int = 0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 vectors of ``dimension`` and their cluster labels (all 0 for "random").

    Clustered: centres are unit-variance normals, members are centre + spread * noise. With
    ``intrinsic_dim`` 0 the noise is isotropic (every direction varies: the hardest case for ANN
    indexes). With ``intrinsic_dim`` r > 0 each cluster varies mostly within its own random
    r-dimensional subspace (plus a little isotropic noise), closer to how text embeddings fill
    their space (they have a low intrinsic dimension).
    """
    check_shape(n, dimension, kind=kind, clusters=clusters)
    if not isinstance(intrinsic_dim, int) or not 0 <= intrinsic_dim <= dimension:
        raise InvalidInput(f"The intrinsic dimension must be between 0 (isotropic) and the "
                           f"dimension ({dimension}); got {intrinsic_dim!r}.")
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
    return vectors.astype(np.float32, copy=False), labels


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
