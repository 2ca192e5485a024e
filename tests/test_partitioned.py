"""A partitioned table with a vector column, as data outgrowing one table is often kept
(docs/scaling.md): discovered once (the parent, not each partition), attached in place, counted,
indexed per partition through one CREATE INDEX, and searched across partitions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from vecdash.collections import Collection, describe_collections, drop_collection, row_count
from vecdash.discovery import attach_table, discover_tables
from vecdash.indexes import IndexSpec, build_index, list_vector_indexes
from vecdash.search import hybrid_search, semantic_search
from vecdash.search.semantic import embed_query

DIM = 384
ROWS_PER_PART = 40
REGIONS = ("north", "south", "west")


@pytest.fixture
def partitioned(conn: psycopg.Connection[Any], unique_name: str,
                embedder: Any) -> Iterator[str]:
    """A table partitioned by region, three partitions, real embeddings of distinct passages."""
    table = sql.Identifier(unique_name)
    conn.execute(sql.SQL(
        "CREATE TABLE {} (id bigint NOT NULL, region text NOT NULL, title text, body text, "
        "embedding vector({}), PRIMARY KEY (id, region)) PARTITION BY LIST (region)").format(
        table, sql.Literal(DIM)))
    for region in REGIONS:
        conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})").format(
            sql.Identifier(f"{unique_name}_{region}"), table, sql.Literal(region)))
    texts = [f"Report {i} from the {region} harbour: {topic}"
             for region in REGIONS for i, topic in enumerate(
                 ["ships unloading grain", "a storm closing the port", "new cranes installed",
                  "fishing boats returning at dawn"] * (ROWS_PER_PART // 4))]
    vectors = embedder.embed(texts)
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s)").format(table), [
            (n, text.split(" from the ")[1].split(" ")[0], text.split(":")[0], text, vectors[n])
            for n, text in enumerate(texts)])
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    yield unique_name
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(table))


def _attach(conn: psycopg.Connection[Any], name: str) -> Collection:
    return attach_table(conn, name, schema="public", table=name, vector_column="embedding",
                        content_column="body", title_column="title", category_column="region",
                        id_column="id")


def test_discovery_lists_the_parent_not_each_partition(conn: psycopg.Connection[Any],
                                                       partitioned: str) -> None:
    found = [t for t in discover_tables(conn) if t.table_name.startswith(partitioned)]
    assert [t.table_name for t in found] == [partitioned]
    parent = found[0]
    assert parent.dimension == DIM and parent.vector_type == "vector"
    assert parent.primary_key is None  # (id, region): the id column has to be named
    assert list(parent.columns) == ["id", "region", "title", "body", "embedding"]


def test_attach_count_index_and_search_across_partitions(
        conn: psycopg.Connection[Any], partitioned: str, embedder: Any) -> None:
    collection = _attach(conn, partitioned)
    try:
        total = ROWS_PER_PART * len(REGIONS)
        assert row_count(conn, collection) == (total, False)
        summary = next(s for s in describe_collections(conn) if s.name == partitioned)
        assert summary.rows == total

        query = embed_query(collection, "a storm closed the harbour", embedder=embedder)
        exact = semantic_search(conn, collection, query, k=10)
        assert len(exact) == 10 and set(exact["category"]) == set(REGIONS)
        assert all("storm" in content for content in exact["content"][:3])

        # One CREATE INDEX on the parent: pgvector builds one HNSW graph per partition.
        result = build_index(conn, collection, IndexSpec("hnsw"))
        partitions = conn.execute(
            "SELECT count(*) FROM pg_partition_tree(%s::regclass) t JOIN pg_class c "
            "ON c.oid = t.relid WHERE t.isleaf AND c.relkind = 'i'", (result.index,)).fetchone()
        assert partitions == (len(REGIONS),)
        listed = [i for i in list_vector_indexes(conn, collection) if i.name == result.index]
        assert listed and listed[0].method == "hnsw" and listed[0].valid
        assert listed[0].size_bytes > 0  # the partitions' graphs (the parent index has none)

        # Through the indexes (each partition's graph, merged): the same top 10 at this size.
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.execute(sql.SQL(
                "EXPLAIN SELECT id FROM {} ORDER BY embedding <=> %s LIMIT 10").format(
                sql.Identifier(partitioned)), (query,)).fetchall())
            indexed = semantic_search(conn, collection, query, k=10)
        assert "Merge Append" in plan or "Append" in plan
        assert plan.count("Index Scan") == len(REGIONS), plan
        assert list(indexed["id"]) == list(exact["id"])

        hits = hybrid_search(conn, collection, "storm harbour", embedder=embedder, k=5,
                             filters={"categories": ["south"]})
        assert len(hits) == 5 and set(hits["category"]) == {"south"}
    finally:
        drop_collection(conn, partitioned)
