"""Records: one document to load, and the keys and text derived from it (no database, no model).

Readers, chunking, the demo and the importers make Records; ingestion stores them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from vecdash.text_checks import strip_nul


@dataclass
class Record:
    """One document to load. ``embedding`` set means the model is skipped for it."""

    content: str
    title: str = ""
    external_id: str | None = None
    category: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    embedding: Sequence[float] | np.ndarray | None = None
    error: str | None = None  # set by a reader for a row it could not parse: it fails alone
    origin: str | None = None  # where it came from ("file.csv:12"), for warnings and failures


def clean_record(record: Record, *, metadata: bool = False) -> bool:
    """Take NUL characters and lone surrogates out of a record's texts (and its metadata, with
    ``metadata``), in place: PostgreSQL text cannot hold them. True when something was removed.
    Non-text titles, categories and ids become text."""
    changed = False

    def clean(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str):
            cleaned = strip_nul(value)
            changed = changed or cleaned != value
            return cleaned
        if isinstance(value, dict):
            return {clean(str(k)): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    if isinstance(record.content, str):
        record.content = clean(record.content)
    record.title = clean(str(record.title)) if record.title else ""
    if record.category is not None:
        record.category = clean(str(record.category))
    if record.external_id is not None:
        record.external_id = clean(str(record.external_id))
    if metadata and record.metadata:
        record.metadata = clean(dict(record.metadata))
    return changed


def content_hash(content: str) -> str:
    """The dedupe key: sha256 of the content with whitespace collapsed and ends trimmed."""
    # str.split() splits on exactly the characters the \s+ regex matches (str.isspace), faster
    return hashlib.sha256(" ".join(content.split()).encode("utf-8")).hexdigest()


def embedding_key(text: str) -> str:
    """The embedding cache key of a text: sha256 of exactly the text sent to the model."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embed_text(record: Record) -> str:
    """Exactly the text the model sees for a record (the title, a newline, then the content)."""
    return f"{record.title}\n{record.content}" if record.title else record.content


def texts_to_embed(records: Iterable[Record]) -> Iterator[str]:
    """The texts an ingestion would send to the model (before the cache and stored duplicates are
    taken off): for token counts and cost estimates before starting."""
    for rec in records:
        if rec.error or rec.embedding is not None:
            continue
        if isinstance(rec.content, str) and rec.content.strip():
            yield embed_text(rec)
