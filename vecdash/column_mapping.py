"""The column mapping: which column of a file's rows plays which part (content, id, title, category,
metadata, a precomputed vector, created_at), guessed from common names, checked against the file's
columns, and rows -> ``Record``. Readers (vecdash.readers) make the rows; this knows nothing of
files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from vecdash.errors import InvalidInput
from vecdash.records import Record

Row = dict[str, Any]


@dataclass(frozen=True)
class RowError:
    """A row that could not be read: where (1-based line or row number) and why."""

    line: int
    reason: str


@dataclass
class ReadCounter:
    """Counts source rows as they are consumed (progress and ETA for chunked ingestion)."""

    rows: int = 0


@dataclass(frozen=True)
class ColumnMapping:
    """Which column plays which part. Only ``content`` is required; ``metadata`` columns are kept
    in the document's metadata; ``embedding`` holds precomputed vectors (the model is skipped)."""

    content: str
    id: str | None = None
    title: str | None = None
    category: str | None = None
    metadata: tuple[str, ...] = field(default_factory=tuple)
    embedding: str | None = None
    created_at: str | None = None

    def used(self) -> list[str]:
        named = [self.content, self.id, self.title, self.category, self.embedding, self.created_at]
        return [c for c in [*named, *self.metadata] if c]


_GUESSES: dict[str, tuple[str, ...]] = {
    "content": ("content", "text", "body", "document", "passage", "page_content", "description"),
    "id": ("id", "_id", "doc_id", "document_id", "external_id", "uuid", "key"),
    "title": ("title", "name", "heading", "subject"),
    "category": ("category", "label", "class", "topic", "type"),
    "embedding": ("embedding", "embeddings", "vector", "emb"),
    "created_at": ("created_at", "date", "timestamp", "published", "created"),
}


def guess_mapping(columns: Sequence[str]) -> ColumnMapping:
    """A mapping from common column names; the remaining columns go to metadata."""
    lower = {c.lower(): c for c in columns}
    picked: dict[str, str | None] = {}
    for role, names in _GUESSES.items():
        picked[role] = next((lower[n] for n in names if n in lower), None)
    content = picked["content"] or (columns[0] if columns else "")
    taken = {content, *(v for v in picked.values() if v)}
    return ColumnMapping(
        content=content, id=picked["id"], title=picked["title"], category=picked["category"],
        embedding=picked["embedding"], created_at=picked["created_at"],
        metadata=tuple(c for c in columns if c not in taken),
    )


def check_mapping(mapping: ColumnMapping, columns: Sequence[str]) -> None:
    """Refuse a mapping that names a column the file does not have (before any work)."""
    if not mapping.content:
        raise InvalidInput("Choose the column that holds the text (content).")
    missing = [c for c in mapping.used() if c not in columns]
    if missing:
        raise InvalidInput(
            f"The file has no column {', '.join(map(repr, missing))}. Its columns are: "
            f"{', '.join(columns) or '(none)'}. Fix the column mapping."
        )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: Any) -> str:
    return "" if _is_missing(value) else str(value)


def _json_safe(value: Any) -> Any:
    if _is_missing(value):
        return None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


def parse_vector(value: Any) -> tuple[Any, str]:
    """A vector cell as a list/array (CSV cells hold JSON text like "[0.1, 0.2]"), or a reason."""
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None, "the vector column is empty"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, "the vector column is not a list of numbers"
    if isinstance(value, (list, tuple, np.ndarray)):
        return value, ""
    return None, "the vector column is not a list of numbers"


def records_from_rows(
    rows: Iterable[Row | RowError],
    mapping: ColumnMapping,
    *,
    counter: ReadCounter | None = None,
    source: str = "",
) -> Iterator[Record]:
    """Rows -> Records through the mapping. A bad row becomes a Record carrying ``error`` (it
    fails alone, with its reason, in the ingestion report)."""
    for number, row in enumerate(rows, start=1):
        if counter is not None:
            counter.rows += 1
        where = f"{source}:{number}" if source else f"row {number}"
        if isinstance(row, RowError):
            yield Record(content="", external_id=f"{source}:{row.line}" if source else
                         f"line {row.line}", error=row.reason)
            continue
        ext = _text(row.get(mapping.id)).strip() if mapping.id else ""
        metadata: dict[str, Any] = {}
        for col in mapping.metadata:
            value = row.get(col)
            if isinstance(value, dict):
                metadata.update({str(k): _json_safe(v) for k, v in value.items()})
            elif not _is_missing(value):
                metadata[col] = _json_safe(value)
        rec = Record(
            content=_text(row.get(mapping.content)),
            title=_text(row.get(mapping.title)) if mapping.title else "",
            external_id=ext or None,
            category=(_text(row.get(mapping.category)) or None) if mapping.category else None,
            metadata=metadata,
            origin=where,
        )
        if mapping.embedding:
            vec, problem = parse_vector(row.get(mapping.embedding))
            if vec is None:
                rec.error = problem
                rec.external_id = rec.external_id or where
            rec.embedding = vec
        if mapping.created_at and not _is_missing(row.get(mapping.created_at)):
            raw = row.get(mapping.created_at)
            if isinstance(raw, datetime):
                rec.created_at = raw
            else:
                try:
                    rec.created_at = datetime.fromisoformat(str(raw))
                except ValueError:
                    rec.error = f"{mapping.created_at} {str(raw)!r} is not an ISO date"
                    rec.external_id = rec.external_id or where
        if rec.created_at is not None and rec.created_at.tzinfo is None:
            rec.created_at = rec.created_at.replace(tzinfo=UTC)
        yield rec
