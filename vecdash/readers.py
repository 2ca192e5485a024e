"""Readers: files -> rows (plain dicts), streamed, then rows -> ``Record`` through a column mapping.

Formats: CSV/TSV (UTF-8, UTF-8 with BOM, else Windows-1252/Latin-1), JSON (an array of objects),
JSONL, Parquet, plain text / Markdown (a file per document, or one document per section) and PDF
(one document per page). Rows stream: a large CSV, JSONL or Parquet file is never held in memory
whole. A row that cannot be parsed (a malformed JSONL line, a CSV row with extra fields) comes out
as a ``RowError`` and becomes a per-row failure; the others still load.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from vecdash.errors import InvalidInput
from vecdash.records import Record

Format = Literal["csv", "tsv", "json", "jsonl", "parquet", "text", "pdf"]
FORMATS: tuple[Format, ...] = ("csv", "tsv", "json", "jsonl", "parquet", "text", "pdf")
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl",
    ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".md": "text",
    ".markdown": "text", ".pdf": "pdf",
}
TextMode = Literal["file", "sections"]
_CHUNK = 1 << 20
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
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


def detect_format(name: str | Path) -> Format:
    suffix = Path(name).suffix.lower()
    fmt = EXTENSIONS.get(suffix)
    if fmt is None:
        raise InvalidInput(
            f"Cannot read {Path(name).name!r}: unknown file type {suffix or '(none)'}. Use CSV, "
            "TSV, JSON, JSONL, Parquet, .txt/.md or PDF."
        )
    return fmt


def detect_encoding(path: Path) -> str:
    """'utf-8-sig' (BOM), 'utf-8', else 'cp1252' (Windows Latin-1), else 'latin-1' (never fails).
    Checks the whole file in 1 MB pieces, so a late non-UTF-8 byte is found without loading it."""
    with path.open("rb") as f:
        head = f.read(3)
        if head == codecs.BOM_UTF8:
            return "utf-8-sig"
        f.seek(0)
        for name in ("utf-8", "cp1252"):
            decoder = codecs.getincrementaldecoder(name)()
            try:
                while piece := f.read(_CHUNK):
                    decoder.decode(piece)
                decoder.decode(b"", final=True)
                return name
            except UnicodeDecodeError:
                f.seek(0)
    return "latin-1"


def _check_not_empty(path: Path) -> None:
    if not path.exists():
        raise InvalidInput(f"{path} does not exist. Check the path.")
    with path.open("rb") as f:
        if not f.read(4096).strip():
            raise InvalidInput(f"{path.name} is empty: there is nothing to load.")


def read_rows(
    path: str | Path,
    *,
    fmt: Format | None = None,
    encoding: str | None = None,
    text_mode: TextMode = "file",
) -> Iterator[Row | RowError]:
    """The file's rows, streamed. Raises InvalidInput for a file that cannot be read at all
    (empty, unknown type, corrupt Parquet, a PDF without text)."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    _check_not_empty(path)
    if fmt in ("csv", "tsv"):
        return _read_csv(path, "\t" if fmt == "tsv" else ",", encoding)
    if fmt == "jsonl":
        return _read_jsonl(path, encoding)
    if fmt == "json":
        return _read_json(path, encoding)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "text":
        return _read_text(path, encoding, text_mode)
    if fmt == "pdf":
        return _read_pdf(path)
    raise InvalidInput(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")


def _read_csv(path: Path, delimiter: str, encoding: str | None) -> Iterator[Row | RowError]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding=encoding or detect_encoding(path), newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            raise InvalidInput(f"{path.name} has no header row. Add one naming the columns.")
        width = len(reader.fieldnames)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RowError(reader.line_num, f"line {reader.line_num}: {exc}")
                continue
            extra = row.pop(None, None)
            if extra:
                yield RowError(reader.line_num, f"line {reader.line_num} has "
                               f"{width + len(extra)} fields but the header has {width}")
                continue
            yield row


def _read_jsonl(path: Path, encoding: str | None) -> Iterator[Row | RowError]:
    with path.open(encoding=encoding or detect_encoding(path)) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RowError(number, f"line {number} is not valid JSON ({exc.msg})")
                continue
            if not isinstance(value, dict):
                yield RowError(number, f"line {number} is a JSON {type(value).__name__}, "
                               "not an object")
                continue
            yield value


def _read_json(path: Path, encoding: str | None) -> Iterator[Row | RowError]:
    try:
        with path.open(encoding=encoding or detect_encoding(path)) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg}). For one document per "
            "line, name the file .jsonl."
        ) from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        raise InvalidInput(f"{path.name} holds a JSON {type(data).__name__}; expected an array "
                           "of objects.")
    for number, value in enumerate(data, start=1):
        if isinstance(value, dict):
            yield value
        else:
            yield RowError(number, f"item {number} is a JSON {type(value).__name__}, not an object")


def _read_parquet(path: Path) -> Iterator[Row | RowError]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"{path.name} is not a readable Parquet file: {exc}") from exc
    for batch in pf.iter_batches(batch_size=2048):
        yield from batch.to_pylist()


def _first_heading(text: str) -> str | None:
    m = _HEADING.search(text)
    return m.group(2) if m else None


def _read_text(path: Path, encoding: str | None, mode: TextMode) -> Iterator[Row | RowError]:
    text = path.read_text(encoding=encoding or detect_encoding(path))
    name = path.name
    if mode == "file":
        yield {"id": name, "title": _first_heading(text) or path.stem, "content": text,
               "source": name}
        return
    headings = list(_HEADING.finditer(text))
    if headings:
        starts = [0] + [m.start() for m in headings] if headings[0].start() > 0 else \
            [m.start() for m in headings]
        bounds = list(zip(starts, [*starts[1:], len(text)], strict=True))
    else:
        bounds, pos = [], 0
        for m in _BLANK_LINES.finditer(text):
            bounds.append((pos, m.start()))
            pos = m.end()
        bounds.append((pos, len(text)))
    section = 0
    for start, end in bounds:
        part = text[start:end].strip()
        if not part:
            continue
        section += 1
        yield {"id": f"{name}#{section}", "title": _first_heading(part) or path.stem,
               "content": part, "source": name, "section": section, "char_start": start}


def _read_pdf(path: Path) -> Iterator[Row | RowError]:
    import pypdf
    from pypdf.errors import PdfReadError

    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            raise InvalidInput(f"{path.name} is encrypted. Remove the password, then load it.")
        pages = reader.pages
        total = len(pages)
    except (PdfReadError, ValueError, OSError) as exc:
        raise InvalidInput(f"{path.name} is not a readable PDF: {exc}") from exc
    pending: list[Row] = []
    found_text = False
    for number in range(1, total + 1):
        try:
            text = pages[number - 1].extract_text() or ""
        except Exception as exc:  # pypdf raises many kinds on damaged pages
            yield RowError(number, f"page {number} could not be read: {exc}")
            continue
        row = {"id": f"{path.name}#page{number}", "title": f"{path.stem} (page {number})",
               "content": text, "source": path.name, "page": number}
        if not text.strip() and not found_text:
            pending.append(row)
            continue
        found_text = True
        yield from pending
        pending.clear()
        yield row
    if not found_text:
        raise InvalidInput(
            f"{path.name} has no extractable text on any of its {total} pages: it is probably "
            "scanned images. Run OCR on it first (e.g. ocrmypdf), then load the result."
        )


def preview_rows(path: str | Path, *, fmt: Format | None = None, n: int = 20,
                 text_mode: TextMode = "file") -> tuple[pd.DataFrame, list[RowError]]:
    """The first ``n`` good rows as a DataFrame (vectors shown as lists) and the errors met on
    the way. Raises InvalidInput when the file has no rows at all."""
    rows: list[Row] = []
    errors: list[RowError] = []
    for item in read_rows(path, fmt=fmt, text_mode=text_mode):
        if isinstance(item, RowError):
            errors.append(item)
        else:
            rows.append(item)
        if len(rows) >= n:
            break
    if not rows and not errors:
        raise InvalidInput(f"{Path(path).name} has no rows (a header only?). Nothing to load.")
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    frame = pd.DataFrame([{c: _display(r.get(c)) for c in columns} for r in rows], columns=columns)
    return frame, errors


def _display(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        shown = ", ".join(f"{float(x):.3f}" if isinstance(x, (int, float)) else str(x)
                          for x in items[:4])
        return f"[{shown}{', …' if len(items) > 4 else ''}] ({len(items)})"
    if isinstance(value, dict):
        return json.dumps(value, default=str)[:200]
    return value


def count_rows(path: str | Path, *, fmt: Format | None = None, text_mode: TextMode = "file") -> int:
    """How many rows (good or bad) the file has; Parquet reads its footer only."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    return sum(1 for _ in read_rows(path, fmt=fmt, text_mode=text_mode))


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


def file_records(
    path: str | Path,
    mapping: ColumnMapping | None = None,
    *,
    fmt: Format | None = None,
    text_mode: TextMode = "file",
    counter: ReadCounter | None = None,
) -> Iterator[Record]:
    """A file's Records: read, mapped (guessed from the first rows when not given) and checked
    before the first record comes out."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    frame, _ = preview_rows(path, fmt=fmt, text_mode=text_mode)
    if mapping is None:
        mapping = guess_mapping(list(frame.columns))
    check_mapping(mapping, list(frame.columns))
    return records_from_rows(read_rows(path, fmt=fmt, text_mode=text_mode), mapping,
                             counter=counter, source=path.name)
