"""What a vecdash export says about itself: the collection's model, metric and dimension, so that
loading the file back (vecdash.loading) recreates a collection whose text queries embed with the
right model. Parquet keeps it in the file's key-value metadata; JSONL in a first header line.
A leaf: the writer (vecdash.export) and the readers both use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

EXPORT_KEY = "vecdash_export"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExportMetadata:
    """The collection an export came from. ``json_columns`` hold JSON text in Parquet (a jsonb
    column's keys differ row by row, which no Parquet struct keeps exactly)."""

    collection: str
    embedder: str
    model: str
    metric: str
    dimension: int
    vector_type: str
    rows: int
    json_columns: tuple[str, ...] = ("metadata",)
    version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "json_columns": list(self.json_columns)}

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_value(cls, value: Any) -> ExportMetadata | None:
        """The metadata in a decoded JSON value, or None when it is not a vecdash export's."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                collection=str(value["collection"]), embedder=str(value["embedder"]),
                model=str(value["model"]), metric=str(value["metric"]),
                dimension=int(value["dimension"]), vector_type=str(value["vector_type"]),
                rows=int(value.get("rows", 0)),
                json_columns=tuple(str(c) for c in value.get("json_columns", ())),
                version=int(value.get("version", FORMAT_VERSION)),
            )
        except (KeyError, TypeError, ValueError):
            return None


def jsonl_header(metadata: ExportMetadata) -> str:
    """The first line of a JSONL export."""
    return json.dumps({EXPORT_KEY: metadata.as_dict()})


def header_line_metadata(row: Any) -> ExportMetadata | None:
    """The metadata when a JSONL row is an export's header line, else None."""
    if isinstance(row, dict) and set(row) == {EXPORT_KEY}:
        return ExportMetadata.from_value(row[EXPORT_KEY])
    return None


def parquet_metadata(schema_metadata: dict[bytes, bytes] | None) -> ExportMetadata | None:
    """The metadata in a Parquet schema's key-value metadata, or None."""
    raw = (schema_metadata or {}).get(EXPORT_KEY.encode())
    if raw is None:
        return None
    try:
        return ExportMetadata.from_value(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_export_metadata(path: str | Path) -> ExportMetadata | None:
    """The export metadata of a Parquet or JSONL file vecdash wrote; None for any other file
    (or one that cannot be read: the reader reports that)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                return parquet_metadata(pq.read_schema(path).metadata)
            except pa.ArrowInvalid:
                return None
        if suffix in (".jsonl", ".ndjson"):
            with path.open(encoding="utf-8") as f:
                first = f.readline()
            return header_line_metadata(json.loads(first)) if first.strip() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return None
