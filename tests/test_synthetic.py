"""Synthetic vectors: generation, and loading into a new collection without a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vecdash.collections import drop_collection, get_collection
from vecdash.demo import demo_records
from vecdash.embedders import LocalEmbedder
from vecdash.errors import InvalidInput, NotFound
from vecdash.ingest import embed_text
from vecdash.search import semantic_search
from vecdash.synthetic import (
    ISOTROPIC,
    MINILM_DEMO_STATISTICS,
    MINILM_LIKE,
    PROFILES,
    ClusterProfile,
    EmbeddingStatistics,
    create_synthetic_collection,
    embedding_statistics,
    generate_vectors,
)


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


def unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True))


def test_centre_similarity_relates_the_clusters_and_changes_nothing_else() -> None:
    related, labels = generate_vectors(4000, 64, clusters=8, centre_similarity=0.3, seed=2)
    plain, same_labels = generate_vectors(4000, 64, clusters=8, seed=2)
    assert np.array_equal(labels, same_labels)
    offset = related - plain  # one shared vector added to every row, the rest of the stream equal
    assert np.abs(offset - offset[0]).max() < 1e-5 and np.linalg.norm(offset[0]) > 1
    assert np.array_equal(plain, generate_vectors(4000, 64, clusters=8, centre_similarity=0.0,
                                                  seed=2)[0])

    def mean_centroid_cosine(v: np.ndarray) -> float:
        c = unit(np.stack([v[labels == k].mean(axis=0) for k in range(8)]))
        return float(((c @ c.T).sum() - 8) / 56)

    assert 0.22 < mean_centroid_cosine(related) < 0.38
    assert abs(mean_centroid_cosine(plain)) < 0.08
    for bad in (-0.1, 1.0):
        with pytest.raises(InvalidInput, match="centre similarity"):
            generate_vectors(10, 8, centre_similarity=bad)


def test_profiles_are_generate_vectors_arguments() -> None:
    assert PROFILES == {"minilm-like": MINILM_LIKE, "isotropic": ISOTROPIC}
    assert ISOTROPIC.kwargs() == {"spread": 0.35, "intrinsic_dim": 0, "centre_similarity": 0.0}
    # ISOTROPIC is exactly the generator's defaults (the data generated before profiles existed).
    assert np.array_equal(generate_vectors(300, 16, clusters=3, seed=5)[0],
                          generate_vectors(300, 16, clusters=3, seed=5, **ISOTROPIC.kwargs())[0])


def test_embedding_statistics_on_known_shapes() -> None:
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((64, 64)))[0][:5]
    flat = rng.standard_normal((1000, 5)) @ basis + 5 * rng.standard_normal(64)  # a 5-d patch
    low = embedding_statistics(flat)
    assert low.n == 1000 and low.pca90 <= 5 and 4.0 < low.lid < 6.0
    assert low.nn_to_mean < low.knn_to_mean < 0.6 and low.mean_cosine > 0.9
    high = embedding_statistics(rng.standard_normal((1000, 64)))
    assert high.pca90 > 40 and high.lid > 25 and high.knn_to_mean > 0.8
    assert abs(high.mean_cosine) < 0.01
    doubled = embedding_statistics(np.concatenate([flat[:100], flat[:100]]))  # exact duplicates
    assert np.isfinite(doubled.lid) and doubled.nn_to_mean < 1e-3
    with pytest.raises(InvalidInput, match="more than k=10"):
        embedding_statistics(flat[:10])


def profile_statistics(profile: ClusterProfile) -> dict[str, float]:
    """As the bench's calibration table prints them: 365 vectors in 10 clusters, seeds 0-3."""
    runs = [embedding_statistics(generate_vectors(365, 384, clusters=10, seed=seed,
                                                  **profile.kwargs())[0]) for seed in range(4)]
    return {f: float(np.mean([getattr(r, f) for r in runs]))
            for f in ("pca90", "lid", "knn_to_mean", "nn_to_mean", "mean_cosine")}


def close_to_minilm(stats: dict[str, float]) -> bool:
    real = MINILM_DEMO_STATISTICS
    return (abs(stats["pca90"] - real.pca90) <= 15 and abs(stats["lid"] - real.lid) <= 2
            and abs(stats["knn_to_mean"] - real.knn_to_mean) <= 0.03
            and abs(stats["nn_to_mean"] - real.nn_to_mean) <= 0.03
            and abs(stats["mean_cosine"] - real.mean_cosine) <= 0.02)


def test_minilm_profile_matches_the_recorded_real_statistics_and_isotropic_does_not() -> None:
    assert close_to_minilm(profile_statistics(MINILM_LIKE))
    isotropic = profile_statistics(ISOTROPIC)
    assert not close_to_minilm(isotropic)
    assert isotropic["lid"] > 2 * MINILM_DEMO_STATISTICS.lid


def test_recorded_minilm_statistics_are_the_models(embedder: LocalEmbedder) -> None:
    vectors = embedder.embed([embed_text(r) for r in demo_records()])
    measured = embedding_statistics(vectors)
    recorded = MINILM_DEMO_STATISTICS
    assert isinstance(measured, EmbeddingStatistics) and measured.n == recorded.n == 365
    assert abs(measured.pca90 - recorded.pca90) <= 2
    assert abs(measured.lid - recorded.lid) < 0.1
    for field in ("knn_to_mean", "nn_to_mean", "mean_cosine"):
        assert abs(getattr(measured, field) - getattr(recorded, field)) < 0.002, field


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
