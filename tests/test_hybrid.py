"""Hybrid search: union of both arms, fusion at the weight ends, filters (with an HNSW index and
pgvector's iterative scans), snippets, and query text that must never raise."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from psycopg import sql

from vecdash.collections import Collection, create_collection, drop_collection
from vecdash.embedders import LocalEmbedder
from vecdash.errors import InvalidInput
from vecdash.ingest import Record, ingest_records
from vecdash.search import (
    HYBRID_COLUMNS,
    compare_rankings,
    fetch_candidates,
    fuse,
    hybrid_search,
    semantic_search,
)

DIM = 8
RNG = np.random.default_rng(11)


class FixedEmbedder:
    """Embeds every text as one given vector, so a test controls the semantic arm exactly."""

    provider = "test"
    model = "fixed"
    dimension = DIM

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.tile(self.vector, (len(texts), 1)).astype(np.float32)


@pytest.fixture
def small(conn: Any, unique_name: str) -> Iterator[tuple[Collection, np.ndarray]]:
    """40 filler documents near the query vector, and one document with the exact words the
    query asks for, pointing the opposite way (the last by distance)."""
    c = create_collection(conn, unique_name, dimension=DIM, embedder="none", model="x")
    q = np.ones(DIM, dtype=np.float32)
    records = [Record(f"filler passage number {i} about gardening and weather", external_id=f"f{i}",
                      category="filler", embedding=q + RNG.normal(scale=0.3, size=DIM))
               for i in range(40)]
    records.append(Record("error code E4711 on the XJ9000 dishwasher means a blocked pump",
                          title="XJ9000 E4711", external_id="exact", category="manual",
                          embedding=-q))
    ingest_records(conn, c, records)
    yield c, q
    drop_collection(conn, unique_name)


def test_keyword_only_match_reaches_rank_one(conn: Any, small: tuple[Collection, np.ndarray]) -> None:
    c, q = small
    emb = FixedEmbedder(q)
    hits = hybrid_search(conn, c, "XJ9000 E4711", embedder=emb, k=5, weight=0.1, candidates=10)
    top = hits.iloc[0]
    assert top["external_id"] == "exact"
    assert top["source"] == "keyword only"
    assert pd.isna(top["semantic_rank"]) and top["keyword_rank"] == 1
    assert "<mark>" in top["snippet"] and "E4711" in top["snippet_text"]
    # semantic only never sees it in its top 10; with RRF the same holds at a low weight
    assert "exact" not in set(hybrid_search(conn, c, "XJ9000 E4711", embedder=emb, k=10,
                                            weight=1.0, candidates=10)["external_id"])
    rrf = hybrid_search(conn, c, "XJ9000 E4711", embedder=emb, k=5, weight=0.2, fusion="rrf",
                        candidates=10)
    assert rrf.iloc[0]["external_id"] == "exact"


def test_weight_ends_are_the_single_arms(conn: Any, demo: Collection,
                                         embedder: LocalEmbedder) -> None:
    query = "sourdough starter feeding"
    sem = hybrid_search(conn, demo, query, embedder=embedder, k=10, weight=1.0)
    plain = semantic_search(conn, demo, embedder.embed([query])[0], k=10)
    assert list(sem["external_id"]) == list(plain["external_id"])
    assert np.allclose(sem["distance"], plain["distance"], atol=1e-5)
    kw = hybrid_search(conn, demo, query, embedder=embedder, k=10, weight=0.0)
    cands = fetch_candidates(conn, demo, query, None, keyword_rankers=("bm25",)).frame
    expected = list(cands.sort_values("bm25_rank")["id"][:10])
    assert list(kw["id"]) == expected
    assert set(kw["source"]) <= {"both", "keyword only"}
    mid = hybrid_search(conn, demo, query, embedder=embedder, k=10, weight=0.5)
    assert list(mid["rank"]) == list(range(1, 11))
    assert mid["fused_score"].is_monotonic_decreasing


def test_convex_fusion_by_hand() -> None:
    frame = pd.DataFrame({
        "key": [1, 2, 3, 4], "id": ["1", "2", "3", "4"],
        "semantic_score": [0.9, 0.5, 0.1, np.nan], "semantic_rank": [1, 2, 3, np.nan],
        "bm25_score": [np.nan, 2.0, 6.0, 4.0], "bm25_rank": [np.nan, 3, 1, 2],
    })
    order, fused = fuse(frame, weight=0.25, fusion="convex")
    # semantic minmax: 1, .5, 0, absent 0; keyword minmax: absent 0, 0, 1, .5
    assert fused == pytest.approx([0.25, 0.125, 0.75, 0.375])
    assert list(order) == [2, 3, 0, 1]
    order, fused = fuse(frame, weight=0.5, fusion="rrf", rrf_k=60)
    assert fused[0] == pytest.approx(0.5 / 61)
    assert fused[2] == pytest.approx(0.5 / 63 + 0.5 / 61)
    assert list(fuse(frame, weight=1.0)[0]) == [0, 1, 2]
    assert list(fuse(frame, weight=0.0)[0]) == [2, 3, 1]
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        fuse(frame, weight=1.5)
    with pytest.raises(InvalidInput, match="fusion"):
        fuse(frame, weight=0.5, fusion="max")


@pytest.fixture
def big(conn: Any, unique_name: str) -> Iterator[Collection]:
    """6,000 rows, 5% of them 'gold' (metadata) / category 'rare', with an HNSW index."""
    c = create_collection(conn, unique_name, dimension=DIM, embedder="none", model="x")
    base = datetime(2024, 1, 1, tzinfo=UTC)
    vecs = RNG.normal(size=(6000, DIM)).astype(np.float32)
    ingest_records(conn, c, [
        Record(f"row {i} text", external_id=f"r{i}", category="rare" if i % 20 == 0 else "common",
               metadata={"tier": "gold" if i % 20 == 0 else "plain", "n": i},
               created_at=base + timedelta(days=i % 365), embedding=vecs[i])
        for i in range(6000)
    ], batch_size=2000)
    conn.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops)").format(
        c.table))
    conn.execute(sql.SQL("ANALYZE {}").format(c.table))
    yield c
    drop_collection(conn, unique_name)


def test_filtered_search_with_hnsw_returns_k_rows(conn: Any, big: Collection) -> None:
    q = RNG.normal(size=DIM).astype(np.float32)
    conn.execute("SET enable_seqscan = off")  # a table this small would otherwise be scanned
    try:
        check_filtered_search(conn, big, q)
    finally:
        conn.execute("RESET enable_seqscan")


def check_filtered_search(conn: Any, big: Collection, q: np.ndarray) -> None:
    hnsw = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s "
        "AND indexdef LIKE '%%USING hnsw%%'", (big.schema_name, big.table_name)).fetchall()
    assert len(hnsw) == 1
    plan = "\n".join(r[0] for r in conn.execute(sql.SQL(
        "EXPLAIN SELECT id FROM {} WHERE metadata ->> 'tier' = 'gold' "
        "ORDER BY embedding <=> %s LIMIT 30").format(big.table), (q,)).fetchall())
    # the filtered query walks the HNSW index in distance order (not a scan and a sort)
    assert f"Index Scan using {hnsw[0][0]} on " in plan
    assert "Order By: (embedding <=> " in plan
    # Without iterative scans, HNSW hands back its ef_search (40) nearest rows and the filter
    # keeps only the few gold ones among them: this is what the search must not do.
    with conn.transaction():
        conn.execute("SET LOCAL hnsw.iterative_scan = off")
        plain = conn.execute(sql.SQL(
            "SELECT id FROM {} WHERE metadata ->> 'tier' = 'gold' "
            "ORDER BY embedding <=> %s LIMIT 30").format(big.table), (q,)).fetchall()
    assert len(plain) < 30
    emb = FixedEmbedder(q)
    hits = hybrid_search(conn, big, "row text", embedder=emb, k=30, weight=1.0, candidates=30,
                         filters={"metadata": {"tier": "gold"}})
    assert len(hits) == 30
    ids = [int(x[1:]) for x in hits["external_id"]]
    assert all(i % 20 == 0 for i in ids)
    # the semantic order is still by distance (relaxed order is re-sorted)
    assert hits["distance"].is_monotonic_increasing
    cats = hybrid_search(conn, big, "row", embedder=emb, k=25, weight=0.5, candidates=25,
                         filters={"categories": ["rare"], "created_from": date(2024, 2, 1),
                                  "created_to": date(2024, 6, 30)})
    assert len(cats) == 25 and set(cats["category"]) == {"rare"}
    rows = conn.execute(sql.SQL("SELECT external_id, created_at FROM {} WHERE external_id = "
                                "ANY(%s)").format(big.table), (list(cats["external_id"]),)
                        ).fetchall()
    for _, created in rows:
        assert datetime(2024, 2, 1, tzinfo=UTC) <= created < datetime(2024, 7, 1, tzinfo=UTC)


def test_filter_on_missing_column_is_explained(conn: Any, small: tuple[Collection, np.ndarray]
                                               ) -> None:
    c, q = small
    with pytest.raises(InvalidInput, match="Unknown filter"):
        hybrid_search(conn, c, "pump", embedder=FixedEmbedder(q), filters={"colour": "red"})


BAD_QUERIES = ["C++", "::", "'", '"unbalanced', "a & | ! <->", "((((", "))", "foo:*", "!!!",
               "the of and", "x" * 10_000, "word " * 2_000, "\\", "%s %(q)s {}", "'; DROP TABLE x;--",
               "émigré naïve café", "日本語のテキスト", "<-> <2> !(a | b) & c"]


@pytest.mark.parametrize("ranker", ["bm25", "ts_rank_cd"])
def test_tsquery_syntax_never_raises(conn: Any, demo: Collection, embedder: LocalEmbedder,
                                     ranker: str) -> None:
    for q in BAD_QUERIES:
        hits = hybrid_search(conn, demo, q, embedder=embedder, k=5, weight=0.3,
                             keyword_ranker=ranker)
        assert len(hits) == 5, q
    stop = hybrid_search(conn, demo, "the of and", embedder=embedder, k=5, weight=0.0)
    assert len(stop) == 5 and set(stop["source"]) == {"semantic only"}
    assert "only stopwords" in stop.attrs["notes"][0] and "semantic" in stop.attrs["notes"][0]
    with pytest.raises(InvalidInput, match="empty"):
        hybrid_search(conn, demo, "   ", embedder=embedder)
    # keyword only: the BM25 top 5 for the 'c' lexeme, or the semantic top 5 when no row has it
    cpp = hybrid_search(conn, demo, "C++", embedder=embedder, k=5, weight=0.0)
    assert list(cpp.columns) == HYBRID_COLUMNS and len(cpp) <= 5
    assert list(cpp["rank"]) == list(range(1, len(cpp) + 1))
    keyword = fetch_candidates(conn, demo, "C++", None, keyword_rankers=("bm25",)).frame
    if keyword.empty:
        assert set(cpp["source"]) == {"semantic only"}
        semantic = semantic_search(conn, demo, embedder.embed(["C++"])[0], k=5)
        assert list(cpp["external_id"]) == list(semantic["external_id"])
    else:
        assert cpp.attrs["lexemes"] == ["c"] and set(cpp["source"]) <= {"both", "keyword only"}
        assert list(cpp["id"]) == list(keyword.sort_values("bm25_rank")["id"][:5])


def test_compare_view(conn: Any, demo: Collection, embedder: LocalEmbedder) -> None:
    cmp = compare_rankings(conn, demo, "how long to knead dough", embedder=embedder, k=10)
    assert len(cmp.semantic) == 10 and len(cmp.hybrid) == 10
    sem, kw, hyb = (set(t["id"]) for t in (cmp.semantic, cmp.keyword, cmp.hybrid))
    assert cmp.overlap == {"semantic & keyword": len(sem & kw), "semantic & hybrid": len(sem & hyb),
                           "keyword & hybrid": len(kw & hyb), "all three": len(sem & kw & hyb)}
    moved = cmp.movement.dropna(subset=["hybrid_rank", "semantic_rank"])
    assert (moved["moved_vs_semantic"] == moved["semantic_rank"] - moved["hybrid_rank"]).all()
    assert set(cmp.hybrid["id"]) <= set(cmp.movement["id"])


@pytest.mark.parametrize("query", ["how long to knead dough", "fix a slow drain"])
def test_compare_movement_ranks_agree_with_hybrid_search(
    conn: Any, demo: Collection, embedder: LocalEmbedder, query: str
) -> None:
    """The movement table's ranks are the Results tab's: the arms' own ranks over all the
    candidates, not positions in the top-k lists (issue 17: keyword rank 15 shown as None)."""
    options = {"k": 10, "weight": 0.5, "fusion": "convex", "candidates": 100}
    cmp = compare_rankings(conn, demo, query, embedder=embedder, **options)
    hits = hybrid_search(conn, demo, query, embedder=embedder, **options)
    assert list(cmp.hybrid["id"]) == list(hits["id"])
    moved = cmp.movement.set_index("id")
    for hit in hits.itertuples():
        row = moved.loc[hit.id]
        assert row["hybrid_rank"] == hit.rank
        for arm in ("semantic_rank", "keyword_rank"):
            expected = getattr(hit, arm)
            assert (pd.isna(row[arm]) and pd.isna(expected)) or row[arm] == expected, (hit, arm)
    # Some document of the three top-10s sits below 10 in another ranking: the case that broke.
    ranks = cmp.movement[["hybrid_rank", "semantic_rank", "keyword_rank"]]
    assert (ranks > 10).any().any()
    assert cmp.movement["hybrid_rank"].notna().all()


def test_snippets_mark_left_out_text_with_ellipses(conn: Any, demo: Collection,
                                                   embedder: LocalEmbedder) -> None:
    from vecdash.search.hybrid import _with_ellipses

    doc = "Knead the dough. It rises slowly when cold and fast when warm."
    assert _with_ellipses("Knead the dough.", doc) == "Knead the dough."
    assert _with_ellipses("It rises slowly", doc) == "… It rises slowly …"
    assert _with_ellipses("when cold and fast when warm.", doc) == "… when cold and fast when warm."
    assert _with_ellipses(doc, doc) == doc
    hits = hybrid_search(conn, demo, "how long to knead dough", embedder=embedder, k=10)
    for text, content in zip(hits["snippet_text"], hits["content"], strict=True):
        body = text.removeprefix("… ").removesuffix(" …")
        whole = " ".join(content.split())
        first = body.split(" … ")[0]
        assert text.startswith("… ") or whole.startswith(" ".join(first.split()))
        last = " ".join(body.split(" … ")[-1].split())
        assert text.endswith((" …", ".", "!", "?", ":", ";", ")", '"')) or whole.endswith(last)
