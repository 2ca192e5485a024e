from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from psycopg import sql

from vecdash.collections import (
    create_collection,
    data_version,
    describe_collections,
    drop_collection,
    get_collection,
    index_name,
    list_collections,
    list_indexes,
)
from vecdash.discovery import attach_table, discover_tables
from vecdash.errors import InvalidInput, NotFound
from vecdash.ingest import ingest_records
from vecdash.records import Record
from vecdash.search import semantic_search


def test_create_describe_drop(conn: Any, unique_name: str) -> None:
    c = create_collection(conn, unique_name, dimension=3, metric="l2", embedder="none", model="x")
    assert c.managed and c.dimension == 3 and c.vector_type == "vector" and c.metric == "l2"
    assert unique_name in [x.name for x in list_collections(conn)]
    summary = next(s for s in describe_collections(conn) if s.name == unique_name)
    assert summary.rows == 0 and summary.indexes == "none (exact scan)" and summary.size_bytes > 0
    methods = {i.method for i in list_indexes(conn, c)}
    assert {"gin", "btree"} <= methods
    drop_collection(conn, unique_name)
    with pytest.raises(NotFound):
        get_collection(conn, unique_name)
    assert conn.execute("SELECT to_regclass(%s)", (f"public.{unique_name}",)).fetchone() == (None,)


def test_vectors_stay_in_the_row(conn: Any, unique_name: str) -> None:
    """A 384-d vector with a page of text is not moved to the TOAST table (the default 2 kB
    threshold would move it); with far more text the text goes there, the vector stays."""
    c = create_collection(conn, unique_name, dimension=384, embedder="none", model="x")
    try:
        rng = np.random.default_rng(0)
        words = [f"w{rng.integers(10**9)}" for _ in range(6000)]
        ingest_records(conn, c, [
            Record(" ".join(words[:200]), external_id="page", embedding=rng.normal(size=384)),
            Record(" ".join(words), external_id="long", embedding=rng.normal(size=384)),
        ])
        rows = dict((r[0], r[1:]) for r in conn.execute(sql.SQL(
            "SELECT external_id, pg_column_toast_chunk_id(embedding) IS NULL, "
            "pg_column_toast_chunk_id(tsv) IS NULL, pg_column_toast_chunk_id(content) IS NULL "
            "FROM {}").format(c.table)).fetchall())
        assert rows["page"] == (True, True, True)
        assert rows["long"][0] is True and rows["long"][2] is False
    finally:
        drop_collection(conn, unique_name)


@pytest.mark.parametrize(
    "name",
    ['it\'s "quoted"', "with spaces", "x; DROP TABLE vecdash_collections; --", "Ümlaut-名"],
)
def test_hostile_names_are_safe(conn: Any, name: str) -> None:
    c = create_collection(conn, name, dimension=2, metric="l2", embedder="none", model="x")
    try:
        report = ingest_records(conn, c, [Record("hello", embedding=[1.0, 0.0])])
        assert report.inserted == 1
        assert len(semantic_search(conn, c, [1.0, 0.0], k=1)) == 1
        assert conn.execute("SELECT to_regclass('vecdash_collections')").fetchone() != (None,)
    finally:
        drop_collection(conn, name)


def test_bad_names_and_values_get_clear_messages(conn: Any, unique_name: str) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        create_collection(conn, "  ", dimension=3)
    with pytest.raises(InvalidInput, match="63"):
        create_collection(conn, "x" * 64, dimension=3)
    with pytest.raises(InvalidInput, match="Dimension"):
        create_collection(conn, unique_name, dimension=0)
    with pytest.raises(InvalidInput, match="metric"):
        create_collection(conn, unique_name, dimension=3, metric="manhattan")
    create_collection(conn, unique_name, dimension=3)
    try:
        with pytest.raises(InvalidInput, match="already exists"):
            create_collection(conn, unique_name, dimension=3)
    finally:
        drop_collection(conn, unique_name)


def test_high_dimensions_use_halfvec(conn: Any, unique_name: str) -> None:
    c = create_collection(conn, unique_name, dimension=3072, embedder="none", model="x")
    try:
        assert c.vector_type == "halfvec"
        vec = np.random.default_rng(0).normal(size=3072).astype(np.float32)
        assert ingest_records(conn, c, [Record("big", embedding=vec)]).inserted == 1
        hits = semantic_search(conn, c, vec, k=1)
        assert hits["distance"].iloc[0] == pytest.approx(0.0, abs=1e-3)
    finally:
        drop_collection(conn, unique_name)


def test_index_names_fit_postgres_limit() -> None:
    long = "n" * 63
    assert len(index_name(long, "tsv_gin").encode()) <= 63
    assert index_name(long, "tsv_gin") != index_name("n" * 62 + "m", "tsv_gin")
    assert index_name("short", "tsv_gin") == "short_tsv_gin"


def test_tutorial_table_is_discovered_and_attached_in_place(conn: Any, unique_name: str) -> None:
    table = f"documents_{unique_name}"
    conn.execute(
        f'CREATE TABLE "{table}" (id bigserial PRIMARY KEY, title text, content text, '
        "category text, embedding vector(1536))"
    )
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(5, 1536)).astype(np.float32)
    with conn.cursor() as cur:
        for i, v in enumerate(vectors):
            cur.execute(
                f'INSERT INTO "{table}" (title, content, category, embedding) VALUES (%s,%s,%s,%s)',
                (f"t{i}", f"content {i}", "cat", v),
            )
    try:
        found = [t for t in discover_tables(conn) if t.table_name == table]
        assert len(found) == 1
        t = found[0]
        assert (t.vector_column, t.dimension, t.primary_key) == ("embedding", 1536, "id")
        assert t.guess("content") == "content" and t.guess("title") == "title"
        c = attach_table(conn, unique_name, schema="public", table=table,
                         vector_column="embedding", content_column="content",
                         title_column="title", category_column="category")
        assert not c.managed and c.dimension == 1536
        assert (c.embedder, c.model) == ("openai", "text-embedding-3-small")
        assert not [t for t in discover_tables(conn) if t.table_name == table]
        hits = semantic_search(conn, c, vectors[3], k=2)
        assert hits["title"].iloc[0] == "t3"
        before = data_version(conn, c)
        drop_collection(conn, unique_name)  # unregisters only
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        assert count == (5,)
        assert before.endswith(":5")
    finally:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def test_attach_rejects_unknown_columns(conn: Any, unique_name: str) -> None:
    table = f"docs_{unique_name}"
    conn.execute(f'CREATE TABLE "{table}" (id int PRIMARY KEY, body text, embedding vector(3))')
    try:
        with pytest.raises(InvalidInput, match="no column 'content'"):
            attach_table(conn, unique_name, schema="public", table=table,
                         vector_column="embedding", content_column="content")
        with pytest.raises(NotFound):
            attach_table(conn, unique_name, schema="public", table=table,
                         vector_column="nope", content_column="body")
    finally:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
