"""The bundled demo collection: passages, labeled queries and graded relevance judgments."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from vecdash.collections import Collection, create_collection, drop_collection, get_collection
from vecdash.embedders import Embedder
from vecdash.errors import NotFound
from vecdash.ingest import ingest_records
from vecdash.ingest_report import IngestReport, ProgressCallback
from vecdash.records import Record

DEMO_COLLECTION = "demo"


def _data_text(name: str) -> str:
    return resources.files("vecdash.data").joinpath(name).read_text(encoding="utf-8")


def demo_documents() -> list[dict[str, Any]]:
    """The demo passages as dicts (id, title, content, category, metadata, created_at)."""
    return [json.loads(line) for line in _data_text("demo_docs.jsonl").splitlines() if line.strip()]


@dataclass(frozen=True)
class LabeledQuery:
    id: str
    text: str
    type: str  # "exact" (keyword should win) or "conceptual" (semantic should win)


def demo_queries() -> list[LabeledQuery]:
    rows = [json.loads(line) for line in _data_text("demo_queries.jsonl").splitlines() if line.strip()]
    return [LabeledQuery(r["id"], r["text"], r["type"]) for r in rows]


def demo_qrels() -> dict[str, dict[str, int]]:
    """Graded judgments: query id -> {document external id: grade (1 partial, 2 high)}."""
    qrels: dict[str, dict[str, int]] = {}
    reader = csv.DictReader(_data_text("demo_qrels.tsv").splitlines(), delimiter="\t")
    for row in reader:
        qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return qrels


def demo_records() -> list[Record]:
    return [
        Record(
            external_id=d["id"],
            title=d["title"],
            content=d["content"],
            category=d.get("category"),
            metadata=d.get("metadata") or {},
            created_at=datetime.fromisoformat(d["created_at"]) if d.get("created_at") else None,
        )
        for d in demo_documents()
    ]


def demo_exists(conn: psycopg.Connection[Any]) -> bool:
    try:
        get_collection(conn, DEMO_COLLECTION)
    except NotFound:
        return False
    return True


def demo_is_incomplete(conn: psycopg.Connection[Any]) -> bool:
    """True when the demo collection exists with fewer rows than the bundled passages: a load
    that was stopped half-way (load_demo resumes it: stored passages are skipped)."""
    try:
        collection = get_collection(conn, DEMO_COLLECTION)
    except NotFound:
        return False
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(collection.table)).fetchone()
    return row is not None and int(row[0]) < len(demo_documents())


def load_demo(
    conn: psycopg.Connection[Any],
    *,
    embedder: Embedder,
    reload: bool = False,
    progress: ProgressCallback | None = None,
    batch_size: int = 64,
) -> tuple[Collection, IngestReport]:
    """Create the demo collection (if missing) and load the passages; ``reload`` drops it first.

    Loading again without reload is a no-op apart from counting duplicates.
    """
    if reload and demo_exists(conn):
        drop_collection(conn, DEMO_COLLECTION)
    if demo_exists(conn):
        collection = get_collection(conn, DEMO_COLLECTION)
    else:
        collection = create_collection(
            conn,
            DEMO_COLLECTION,
            dimension=embedder.dimension,
            metric="cosine",
            embedder=embedder.provider,
            model=embedder.model,
        )
    report = ingest_records(
        conn, collection, demo_records(), embedder=embedder, batch_size=batch_size, progress=progress
    )
    return get_collection(conn, DEMO_COLLECTION), report
