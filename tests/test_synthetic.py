"""Synthetic vectors: generation, and loading into a new collection without a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vecdash.collections import drop_collection, get_collection
from vecdash.errors import InvalidInput, NotFound
from vecdash.search import semantic_search
from vecdash.synthetic import create_synthetic_collection, generate_vectors


def test_generate_clustered_vectors_have_labels_and_structure() -> None:
    vectors, labels = generate_vectors(600, 16, kind="clustered", clusters=4, seed=3)
    assert vectors.shape == (600, 16) and vectors.dtype == np.float32
    assert set(labels.tolist()) == {0, 1, 2, 3}
    # Members sit nearer their own cluster's mean than the other clusters' means.
    means = np.stack([vectors[labels == c].mean(axis=0) for c in range(4)])
    nearest = np.argmin(((vectors[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.95
    again, _ = generate_vectors(600, 16, kind="clustered", clusters=4, seed=3)
    assert np.array_equal(vectors, again)


def test_intrinsic_dimension_confines_within_cluster_variation() -> None:
    vectors, labels = generate_vectors(2000, 64, kind="clustered", clusters=2, intrinsic_dim=4,
                                       seed=0)
    members = vectors[labels == 0]
    spectrum = np.linalg.svd(members - members.mean(axis=0), compute_uv=False) ** 2
    assert spectrum[:4].sum() / spectrum.sum() > 0.9  # four directions carry the variation
    iso, iso_labels = generate_vectors(2000, 64, kind="clustered", clusters=2, seed=0)
    flat = iso[iso_labels == 0]
    spread = np.linalg.svd(flat - flat.mean(axis=0), compute_uv=False) ** 2
    assert spread[:4].sum() / spread.sum() < 0.2
    with pytest.raises(InvalidInput, match="intrinsic dimension"):
        generate_vectors(10, 8, intrinsic_dim=9)


def test_generate_random_vectors() -> None:
    vectors, labels = generate_vectors(100, 1536, kind="random", seed=1)
    assert vectors.shape == (100, 1536) and not labels.any()
    assert abs(float(vectors.mean())) < 0.05 and 0.9 < float(vectors.std()) < 1.1


@pytest.mark.parametrize("kwargs, fragment", [
    ({"n": 0, "dimension": 8}, "number of vectors"),
    ({"n": 10, "dimension": 0}, "dimension"),
    ({"n": 10, "dimension": 8, "kind": "gaussian"}, "Unknown kind"),
    ({"n": 10, "dimension": 8, "clusters": 11}, "clusters"),
])
def test_bad_shapes_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        generate_vectors(**kwargs)


def test_synthetic_collection_loads_vectors_without_a_model(conn: Any, unique_name: str) -> None:
    seen: list[int] = []
    collection, report = create_synthetic_collection(
        conn, unique_name, n=1200, dimension=24, kind="clustered", clusters=6, metric="l2",
        batch_size=500, progress=lambda r: seen.append(r.processed),
    )
    try:
        assert report.inserted == 1200 and report.embedded == 0 and report.failed_count == 0
        assert seen == [500, 1000, 1200]
        assert (collection.embedder, collection.model, collection.metric) == ("none", "synthetic",
                                                                               "l2")
        vectors, labels = generate_vectors(1200, 24, kind="clustered", clusters=6)
        hits = semantic_search(conn, collection, vectors[7], k=3)
        assert hits["external_id"].iloc[0] == "syn-7"
        assert hits["category"].iloc[0] == f"cluster {labels[7]}"
        assert hits["content"].iloc[0] == f"synthetic vector #7, cluster {labels[7]}"
        assert float(hits["distance"].iloc[0]) < 1e-5
    finally:
        drop_collection(conn, unique_name)


def test_high_dimensional_synthetic_collection_is_halfvec(conn: Any, unique_name: str) -> None:
    collection, report = create_synthetic_collection(conn, unique_name, n=50, dimension=2500,
                                                     kind="random")
    try:
        assert collection.vector_type == "halfvec" and report.inserted == 50
    finally:
        drop_collection(conn, unique_name)


def test_existing_name_is_refused_and_nothing_is_left(conn: Any, unique_name: str) -> None:
    create_synthetic_collection(conn, unique_name, n=10, dimension=4, clusters=2)
    try:
        with pytest.raises(InvalidInput, match="already exists"):
            create_synthetic_collection(conn, unique_name, n=10, dimension=4, clusters=2)
        assert get_collection(conn, unique_name).dimension == 4
    finally:
        drop_collection(conn, unique_name)
    with pytest.raises(NotFound):
        get_collection(conn, unique_name)
