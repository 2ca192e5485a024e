"""Readers: files -> rows (plain dicts), streamed; rows -> ``Record`` through a column mapping
(vecdash.column_mapping, re-exported here).

Formats: CSV/TSV (UTF-8, UTF-8 with BOM, else Windows-1252/Latin-1), JSON (an array of objects),
JSONL, Parquet, plain text / Markdown (a file per document, or one document per section) and PDF
(one document per page). Rows stream: a large CSV, JSONL or Parquet file is never held in memory
whole. A row that cannot be parsed (a malformed JSONL line, a CSV row with extra fields) comes out
as a ``RowError`` and becomes a per-row failure; the others still load. A file vecdash exported
(vecdash.export) is read back as it was written: its JSON columns decoded, its header line skipped.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from vecdash.column_mapping import ColumnMapping as ColumnMapping
from vecdash.column_mapping import ReadCounter as ReadCounter
from vecdash.column_mapping import Row as Row
from vecdash.column_mapping import RowError as RowError
from vecdash.column_mapping import check_mapping as check_mapping
from vecdash.column_mapping import guess_mapping as guess_mapping
from vecdash.column_mapping import parse_vector as parse_vector
from vecdash.column_mapping import records_from_rows as records_from_rows
from vecdash.errors import InvalidInput
from vecdash.export_metadata import header_line_metadata, parquet_metadata
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
# A well-formed UTF-8 sequence of 2 to 4 bytes: Latin-1 text almost never holds one by chance.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|"
                             rb"[\xf0-\xf4][\x80-\xbf]{3}")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
# Bytes no text file holds (NUL and other C0 controls but tab, newlines, form feed, escape):
# more than this share of a file's first 8 kB and it is binary (or UTF-16), not text.
_BINARY_BYTES = bytes([*range(0, 9), *range(14, 27), *range(28, 32)])
_BINARY_SHARE = 0.05
_TEXT_FORMATS = ("csv", "tsv", "json", "jsonl", "text")


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
    Checks the whole file in 1 MB pieces, so a late non-UTF-8 byte is found without loading it.
    A UTF-8 file with a few bytes that are not UTF-8 is 'utf-8' (see text_encoding)."""
    return text_encoding(path)[0]


def text_encoding(path: Path) -> tuple[str, str]:
    """The file's encoding (detect_encoding) and the decoding errors mode: 'surrogateescape' for
    a file that is UTF-8 but for a few bytes (a Latin-1 'é' pasted into UTF-8 text): those
    bytes come out as lone surrogates, and the rows holding them fail with their line number
    instead of the whole file being read as Latin-1 mojibake ("CafÃ©")."""
    with path.open("rb") as f:
        head = f.read(3)
        if head == codecs.BOM_UTF8:
            return "utf-8-sig", "strict"
        f.seek(0)
        utf8_seen = False
        for name in ("utf-8", "cp1252"):
            decoder = codecs.getincrementaldecoder(name)()
            try:
                while piece := f.read(_CHUNK):
                    utf8_seen = utf8_seen or (name == "utf-8" and bool(_UTF8_MULTIBYTE.search(piece)))
                    decoder.decode(piece)
                decoder.decode(b"", final=True)
                return name, "strict"
            except UnicodeDecodeError:
                if name == "utf-8" and (utf8_seen or _has_utf8_multibyte(f)):
                    return "utf-8", "surrogateescape"
                f.seek(0)
    return "latin-1", "strict"


def _has_utf8_multibyte(f: Any) -> bool:
    """Whether the rest of an open binary file holds a well-formed UTF-8 multibyte sequence."""
    while piece := f.read(_CHUNK):
        if _UTF8_MULTIBYTE.search(piece):
            return True
    return False


def undecodable_bytes(text: str) -> str:
    """The bytes of ``text`` that were not UTF-8 (read with surrogateescape), as hex, or ""."""
    found = _ESCAPED_BYTE.findall(text)
    return " ".join(f"0x{ord(c) - 0xDC00:02x}" for c in found[:4])


def _not_utf8(where: str, hexes: str) -> str:
    return (f"{where} has bytes that are not UTF-8 ({hexes}) while the rest of the file is: "
            "probably Latin-1 text pasted in. Fix those characters or save the file as UTF-8, "
            "then load it again")


def _check_readable(path: Path, fmt: Format) -> None:
    """Refuse, before anything is created or embedded, a path that is missing, a directory,
    unreadable, empty, or binary data named like a text file."""
    if not path.exists():
        raise InvalidInput(f"{path} does not exist. Check the path.")
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory, not a file. Give the path of a file in it.")
    try:
        with path.open("rb") as f:
            head = f.read(8192)
    except OSError as exc:
        raise InvalidInput(f"{path} cannot be read ({exc.strerror or exc}). Check its "
                           "permissions.") from exc
    if not head.strip():
        raise InvalidInput(f"{path.name} is empty: there is nothing to load.")
    if fmt in _TEXT_FORMATS and not head.startswith(codecs.BOM_UTF8):
        share = sum(head.count(bytes([b])) for b in _BINARY_BYTES) / len(head)
        if share > _BINARY_SHARE:
            raise InvalidInput(
                f"{path.name} is not a text file: {share:.0%} of its first bytes are control "
                f"characters (binary data, or UTF-16 text), so it cannot be read as {fmt}. Pick "
                "the right file, or save it as UTF-8 text."
            )


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
    _check_readable(path, fmt)
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
    name, errors = (encoding, "strict") if encoding else text_encoding(path)
    mixed = errors == "surrogateescape"
    with path.open(encoding=name, errors=errors, newline="") as f:
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
            if mixed and (hexes := undecodable_bytes("".join(v for v in row.values()
                                                             if isinstance(v, str)))):
                yield RowError(reader.line_num, _not_utf8(f"line {reader.line_num}", hexes))
                continue
            yield row


def _read_jsonl(path: Path, encoding: str | None) -> Iterator[Row | RowError]:
    name, errors = (encoding, "strict") if encoding else text_encoding(path)
    with path.open(encoding=name, errors=errors) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if errors != "strict" and (hexes := undecodable_bytes(line)):
                yield RowError(number, _not_utf8(f"line {number}", hexes))
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RowError(number, f"line {number} is not valid JSON ({exc.msg})")
                continue
            if number == 1 and header_line_metadata(value) is not None:
                continue  # a vecdash export's header: the collection's model, not a document
            if not isinstance(value, dict):
                yield RowError(number, f"line {number} is a JSON {type(value).__name__}, "
                               "not an object")
                continue
            yield value


def _read_json(path: Path, encoding: str | None) -> Iterator[Row | RowError]:
    try:
        data = json.loads(_whole_text(path, encoding))
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
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{path.name} is not a readable Parquet file: {exc}. Export it "
                           "again, or check that the whole file was copied.") from exc
    exported = parquet_metadata(pf.schema_arrow.metadata)
    json_columns = [c for c in (exported.json_columns if exported else ())
                    if c in pf.schema_arrow.names]
    number = 0
    for batch in _parquet_batches(pf, path):
        if not json_columns:
            yield from batch.to_pylist()
            number += batch.num_rows
            continue
        for row in batch.to_pylist():  # an export's jsonb columns were written as JSON text
            number += 1
            try:
                for column in json_columns:
                    if isinstance(row[column], str):
                        row[column] = json.loads(row[column])
            except json.JSONDecodeError as exc:
                yield RowError(number, f"row {number}: {column} is not valid JSON ({exc.msg})")
                continue
            yield row


def _parquet_batches(pf: Any, path: Path) -> Iterator[Any]:
    """The file's record batches; a damaged one ends the read with a message (rows before it
    have loaded: run the load again with a repaired file to add the rest)."""
    import pyarrow as pa

    batches = pf.iter_batches(batch_size=2048)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            detail = " ".join(str(exc).split())
            raise InvalidInput(f"{path.name} is a damaged Parquet file: a part of it cannot be "
                               f"read ({detail}). Export it again, then load it (stored rows are "
                               "skipped).") from exc
        yield batch


def _first_heading(text: str) -> str | None:
    m = _HEADING.search(text)
    return m.group(2) if m else None


def _whole_text(path: Path, encoding: str | None) -> str:
    """A whole file's text; InvalidInput naming the lines when it mixes UTF-8 and other bytes."""
    name, errors = (encoding, "strict") if encoding else text_encoding(path)
    text = path.read_text(encoding=name, errors=errors)
    if errors != "strict" and undecodable_bytes(text):
        lines = [str(n) for n, line in enumerate(text.splitlines(), start=1)
                 if undecodable_bytes(line)]
        raise InvalidInput(_not_utf8(f"{path.name} (line {', '.join(lines[:5])}"
                                     f"{' …' if len(lines) > 5 else ''})",
                                     undecodable_bytes(text)) + ".")
    return text


def _read_text(path: Path, encoding: str | None, mode: TextMode) -> Iterator[Row | RowError]:
    text = _whole_text(path, encoding)
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
        import pyarrow as pa
        import pyarrow.parquet as pq

        _check_readable(path, fmt)
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"{path.name} is not a readable Parquet file: {exc}") from exc
    return sum(1 for _ in read_rows(path, fmt=fmt, text_mode=text_mode))


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
