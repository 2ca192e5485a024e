"""ChromaDB import with a real chromadb.PersistentClient (embeddings given explicitly, so no
model is downloaded): the prototype-to-pgvector move."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from vecdash.chroma_import import chroma_records, import_chroma, list_chroma_collections
from vecdash.collections import drop_collection, list_collections
from vecdash.embedders import LocalEmbedder
from vecdash.errors import InvalidInput, NotFound
from vecdash.search import search_text

chromadb = pytest.importorskip("chromadb", reason="chromadb (optional) is not installed")


def make_chroma(path: Path, embedder: LocalEmbedder, n: int = 25) -> list[str]:
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(path),
                                       settings=Settings(anonymized_telemetry=False))
    docs = [f"Chroma note {i}: " + ("how to prune apple trees in winter" if i % 5 == 0
                                    else f"shipping container log {i}") for i in range(n)]
    coll = client.create_collection("notes", metadata={"hnsw:space": "cosine"},
                                    embedding_function=None)
    coll.add(ids=[f"n{i}" for i in range(n)], documents=docs,
             embeddings=embedder.embed(docs).tolist(),
             metadatas=[{"title": f"Note {i}", "category": "garden" if i % 5 == 0 else "ship",
                         "page": i} for i in range(n)])
    client.create_collection("empty", embedding_function=None)
    return docs


def test_import_a_chroma_directory(conn: Any, unique_name: str, embedder: LocalEmbedder,
                                   tmp_path: Path) -> None:
    docs = make_chroma(tmp_path / "chroma", embedder)
    infos = {i.name: i for i in list_chroma_collections(tmp_path / "chroma")}
    assert (infos["notes"].count, infos["notes"].dimension, infos["notes"].metric) == \
        (25, 384, "cosine")
    assert infos["empty"].count == 0 and infos["empty"].dimension is None
    records = list(chroma_records(tmp_path / "chroma", "notes", page=10))
    assert len(records) == 25 and records[0].title == "Note 0"
    assert records[0].metadata == {"page": 0, "chroma_collection": "notes"}
    calls = embedder.calls
    collection, report = import_chroma(conn, tmp_path / "chroma", "notes", name=unique_name,
                                       batch_size=10)
    try:
        assert embedder.calls == calls  # vectors copied, no model call
        assert report.inserted == 25 and report.embedded == 0
        # Chroma's default model is all-MiniLM-L6-v2: the collection is searchable by text
        assert (collection.embedder, collection.model, collection.metric) == \
            ("local", "all-MiniLM-L6-v2", "cosine")
        stored = conn.execute(sql.SQL("SELECT content, category FROM {} WHERE external_id = 'n5'")
                              .format(collection.table)).fetchone()
        assert stored == (docs[5], "garden")
        hits = search_text(conn, collection, "pruning fruit trees", embedder=embedder, k=5)
        assert set(hits["category"]) == {"garden"}
        again = import_chroma  # a second import into the same name is refused, nothing changed
        with pytest.raises(InvalidInput, match="already exists"):
            again(conn, tmp_path / "chroma", "notes", name=unique_name)
    finally:
        drop_collection(conn, unique_name)


def test_bad_sources_leave_nothing(conn: Any, unique_name: str, embedder: LocalEmbedder,
                                  tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="not a ChromaDB persistent directory"):
        list_chroma_collections(tmp_path / "nowhere")
    make_chroma(tmp_path / "chroma", embedder, n=3)
    with pytest.raises(NotFound, match="no collection 'missing'"):
        import_chroma(conn, tmp_path / "chroma", "missing", name=unique_name)
    with pytest.raises(InvalidInput, match="holds no embeddings"):
        import_chroma(conn, tmp_path / "chroma", "empty", name=unique_name)
    assert unique_name not in {c.name for c in list_collections(conn)}
