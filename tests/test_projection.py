"""The embedding map's data layer against the real database: sampling, kNN, UMAP / PCA, the
projection cache (hit when unchanged, miss after an insert), query placement, bad input.

Small inputs only: umap-learn's numba code is compiled at most once per test session (and is
cached on disk by vecdash.projection after that)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from psycopg import sql

from vecdash import projection as pj
from vecdash.collections import Collection, create_collection, drop_collection
from vecdash.errors import InvalidInput
from vecdash.ingest import Record, ingest_records
from vecdash.projection.fitted_models import _models
from vecdash.projection.knn import _prepare

DIM = 16


def clustered(n: int, *, clusters: int = 4, seed: int = 0, dim: int = DIM) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3
    labels = rng.integers(0, clusters, n)
    vectors = centres[labels] + rng.normal(size=(n, dim))
    return vectors.astype(np.float32), [f"c{label}" for label in labels]


def load(conn: Any, collection: Collection, vectors: np.ndarray, cats: list[str], start: int = 0) -> None:
    records = [
        Record(content=f"document {start + i}", title=f"doc {start + i}", external_id=f"d{start + i}",
               category=cat, metadata={"source": "a" if i % 2 else "b", "n": i},
               embedding=vec)
        for i, (vec, cat) in enumerate(zip(vectors, cats, strict=True))
    ]
    report = ingest_records(conn, collection, records)
    assert report.failed_count == 0, report.failed


@pytest.fixture
def synthetic(pool: Any, unique_name: str) -> Iterator[Collection]:
    """A collection of 200 clustered 16-d vectors in 4 categories (no model needed)."""
    with pool.connection() as conn:
        collection = create_collection(conn, unique_name, dimension=DIM, embedder="synthetic",
                                       model="clusters")
        vectors, cats = clustered(200)
        load(conn, collection, vectors, cats)
    yield collection
    with pool.connection() as conn:
        pj.clear_cache(conn, collection)
        drop_collection(conn, unique_name)


def test_knn_search_matches_brute_force() -> None:
    vectors, _ = clustered(300, seed=3)
    for metric in ("cosine", "euclidean"):
        data = _prepare(vectors, metric)
        idx, dist = pj.knn_search(data, data, 7, metric=metric, exclude_self=True)
        assert idx.shape == (300, 7) and idx.dtype == np.int32 and dist.dtype == np.float32
        assert (idx[:, 0] == np.arange(300)).all() and np.allclose(dist[:, 0], 0)
        if metric == "cosine":
            full = 1 - data @ data.T
        else:
            full = np.linalg.norm(data[:, None, :] - data[None, :, :], axis=2)
        np.fill_diagonal(full, -1)
        expected = np.sort(full, axis=1)[:, 1:7]
        assert np.allclose(dist[:, 1:], expected, atol=1e-4)
        assert (np.diff(dist, axis=1) >= -1e-6).all()


def test_partitioned_knn_graph_for_large_samples_is_close_to_exact() -> None:
    vectors, _ = clustered(1500, clusters=12, seed=4)
    data = _prepare(vectors, "cosine")
    exact_idx, _ = pj.knn_graph(data, 10, metric="cosine")
    idx, dist = pj.knn_graph(data, 10, metric="cosine", exact_max=100)  # force partitions
    assert idx.shape == (1500, 10) and (idx[:, 0] == np.arange(1500)).all()
    assert np.allclose(dist[:, 0], 0) and (np.diff(dist, axis=1) >= -1e-6).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact_idx, strict=True)])
    assert recall > 0.9


def test_sample_is_deterministic_and_stratified(conn: Any, synthetic: Collection) -> None:
    whole = pj.sample_vectors(conn, synthetic, limit=1000)
    assert len(whole) == 200 and whole.vectors.shape == (200, DIM) and whole.total_rows == 200
    assert not whole.stratified and whole.skipped == 0
    first = pj.sample_vectors(conn, synthetic, limit=40, seed=7)
    again = pj.sample_vectors(conn, synthetic, limit=40, seed=7)
    other = pj.sample_vectors(conn, synthetic, limit=40, seed=8)
    assert list(first.rows["id"]) == list(again.rows["id"])
    assert list(first.rows["id"]) != list(other.rows["id"])
    assert np.array_equal(first.vectors, again.vectors)
    assert first.stratified and 36 <= len(first) <= 40
    share = whole.rows["category"].value_counts(normalize=True)
    got = first.rows["category"].value_counts(normalize=True)
    for cat in share.index:  # every category keeps about its share
        assert abs(got[cat] - share[cat]) < 0.1


def test_large_table_sample_uses_block_sample_and_stays_within_limit(
    conn: Any, synthetic: Collection
) -> None:
    # 200 rows > 10 x 15: the TABLESAMPLE SYSTEM prefilter runs, then the stratified hash order.
    sample = pj.sample_vectors(conn, synthetic, limit=15, seed=1)
    assert 1 <= len(sample) <= 15 and sample.total_rows == 200
    assert list(sample.rows["id"]) == list(pj.sample_vectors(conn, synthetic, limit=15, seed=1).rows["id"])


def test_project_umap_shape_cache_hit_and_determinism(conn: Any, synthetic: Collection) -> None:
    params = pj.ProjectionParams(n_neighbors=10, sample_size=1000, seed=5)
    first = pj.project(conn, synthetic, params)
    assert first.method == "umap" and not first.from_cache and first.note == ""
    assert first.coords.shape == (200, 2) and np.isfinite(first.coords).all()
    assert first.has_model
    hit = pj.project(conn, synthetic, params)
    assert hit.from_cache and hit.method == "umap"
    assert list(hit.frame["id"]) == list(first.frame["id"])
    assert np.array_equal(hit.coords, first.coords)
    assert np.array_equal(hit.vectors, first.vectors)
    again = pj.project(conn, synthetic, params, refresh=True)
    assert not again.from_cache
    assert np.allclose(again.coords, first.coords)
    # clusters separate: each point's nearest map neighbour mostly shares its category
    cats = first.frame["category"].to_numpy()
    xy = first.coords
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert (cats[d.argmin(axis=1)] == cats).mean() > 0.9


def test_cache_miss_after_insert_places_new_rows_without_refit(
    conn: Any, synthetic: Collection
) -> None:
    params = pj.ProjectionParams(n_neighbors=10, sample_size=1000, seed=5)
    before = pj.project(conn, synthetic, params)
    vectors, cats = clustered(20, seed=9)
    load(conn, synthetic, vectors, cats, start=1000)
    after = pj.project(conn, synthetic, params)
    assert not after.from_cache and after.data_version != before.data_version
    assert after.method == "umap + transform" and "20 rows added" in after.note
    assert "UMAP transform" in after.note
    assert len(after.frame) == 220 and np.isfinite(after.coords).all()
    old = after.frame.set_index("id").loc[list(before.frame["id"]), ["x", "y"]].to_numpy()
    assert np.array_equal(old, before.coords)  # existing points did not move
    assert pj.project(conn, synthetic, params).from_cache  # and that result is stored


def test_place_vector_transform_fallback_and_wrong_dimension(conn: Any, synthetic: Collection) -> None:
    params = pj.ProjectionParams(n_neighbors=10, sample_size=1000, seed=5)
    projection = pj.project(conn, synthetic, params, refresh=True)
    target = projection.vectors[3]
    placed = pj.place_vector(projection, synthetic, target)
    assert placed.how.startswith("UMAP transform")
    spread = np.ptp(projection.coords, axis=0).max()
    assert np.linalg.norm(np.array([placed.x, placed.y]) - projection.coords[3]) < 0.2 * spread
    _models.clear()  # as after a restart: the map comes from the cache, no model in memory
    cached = pj.project(conn, synthetic, params)
    assert cached.from_cache and not cached.has_model
    fallback = pj.place_vector(cached, synthetic, target)
    assert fallback.how.startswith("weighted mean")
    assert np.linalg.norm(np.array([fallback.x, fallback.y]) - cached.coords[3]) < 0.2 * spread
    with pytest.raises(InvalidInput, match="384 dimensions but .* stores 16"):
        pj.place_vector(cached, synthetic, np.ones(384, dtype=np.float32))


def test_few_rows_identical_and_zero_vectors(pool: Any, unique_name: str) -> None:
    with pool.connection() as conn:
        collection = create_collection(conn, unique_name, dimension=DIM, embedder="synthetic",
                                       model="x")
        try:
            vectors, cats = clustered(8)
            load(conn, collection, vectors, cats)
            few = pj.project(conn, collection, pj.ProjectionParams(n_neighbors=15))
            assert few.method == "pca" and "Only 8 usable rows" in few.note
            assert few.coords.shape == (8, 2)
            # The loader refuses all-zero vectors in a cosine collection; a table written by
            # another tool can still hold them, and the map must skip them.
            for i in range(3):
                conn.execute(sql.SQL(
                    "INSERT INTO {} (external_id, title, content, category, content_hash, "
                    "embedding) VALUES (%s, %s, %s, 'z', md5(%s), %s)").format(collection.table),
                    (f"d{100 + i}", f"doc {100 + i}", f"document {100 + i}", f"zero {i}",
                     np.zeros(DIM, dtype=np.float32)))
            same = np.tile(np.ones(DIM, dtype=np.float32), (30, 1))
            load(conn, collection, same, ["z"] * 30, start=103)
            sample = pj.sample_vectors(conn, collection, limit=1000)
            assert sample.skipped == 3 and len(sample) == 38
            mixed = pj.project(conn, collection, pj.ProjectionParams(n_neighbors=5))
            assert mixed.skipped == 3 and mixed.coords.shape == (38, 2)
            assert np.isfinite(mixed.coords).all()
        finally:
            pj.clear_cache(conn, collection)
            drop_collection(conn, unique_name)


def test_all_identical_vectors(pool: Any, unique_name: str) -> None:
    with pool.connection() as conn:
        collection = create_collection(conn, unique_name, dimension=DIM, embedder="synthetic",
                                       model="x")
        try:
            load(conn, collection, np.tile(np.arange(DIM, dtype=np.float32), (40, 1)), ["a"] * 40)
            result = pj.project(conn, collection, pj.ProjectionParams(n_neighbors=5))
            assert result.method == "pca" and "identical" in result.note
            assert np.isfinite(result.coords).all() and result.coords.shape == (40, 2)
        finally:
            pj.clear_cache(conn, collection)
            drop_collection(conn, unique_name)


def test_empty_collection_and_bad_params(pool: Any, unique_name: str) -> None:
    with pytest.raises(InvalidInput, match="n_neighbors"):
        pj.ProjectionParams(n_neighbors=1)
    with pytest.raises(InvalidInput, match="sample size"):
        pj.ProjectionParams(sample_size=200_000)
    with pool.connection() as conn:
        collection = create_collection(conn, unique_name, dimension=DIM, embedder="synthetic",
                                       model="x")
        try:
            with pytest.raises(InvalidInput, match="no usable vectors"):
                pj.project(conn, collection)
        finally:
            drop_collection(conn, unique_name)


def test_colours_and_csv(conn: Any, synthetic: Collection) -> None:
    projection = pj.project(conn, synthetic, pj.ProjectionParams(method="pca", sample_size=1000))
    assert projection.method == "pca"
    labels = pj.cluster_labels(projection.vectors, n_clusters=4)
    assert labels.shape == (200,) and len(set(labels.tolist())) == 4
    assert pj.metadata_fields(projection.frame) == ["n", "source"]
    assert set(pj.metadata_values(projection.frame, "source")) == {"a", "b"}
    csv = pj.coordinates_csv(projection).decode()
    assert csv.splitlines()[0] == "id,x,y,title,category" and len(csv.splitlines()) == 201


def test_warm_up_is_idempotent_per_process() -> None:
    first = pj.warm_up_in_background()
    assert pj.warm_up_in_background() is first
    first.join(timeout=600)
    assert not first.is_alive()
