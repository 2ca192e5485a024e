"""Collections out: every row of a collection (id, title, content, category, metadata, created_at
and the vector) to Parquet or JSONL, with the collection's model, metric and dimension in the file
(vecdash.export_metadata), so ``vecdash ingest FILE --embedder none`` recreates it.

Rows are read in batches by keyset pagination on the id column, one short statement per batch:
no batch holds a snapshot or a lock for the length of the export (a long snapshot would hold
back VACUUM on a busy table), and no more than one batch is in memory. Parquet gets a row group
per batch. The file is written under a temporary name and renamed at the end (vecdash.atomic_file).
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash.atomic_file import atomic_output
from vecdash.collections import Collection
from vecdash.errors import ConnectionFailed, InvalidInput, NotFound
from vecdash.export_metadata import ExportMetadata, jsonl_header
from vecdash.statement_timeout import without_statement_timeout

ExportFormat = Literal["parquet", "jsonl"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("parquet", "jsonl")
_EXTENSIONS: dict[str, ExportFormat] = {".parquet": "parquet", ".pq": "parquet",
                                        ".jsonl": "jsonl", ".ndjson": "jsonl"}
COLUMNS = ("id", "title", "content", "category", "metadata", "created_at", "embedding")
DOWNLOAD_MAX_ROWS = 50_000  # larger collections are exported from the command line
DEFAULT_BATCH_ROWS = 1000
# A search's results as CSV: these columns first, then every other score or rank column.
RESULT_COLUMNS = ("rank", "external_id", "title", "category", "source", "fused_score",
                  "semantic_score", "semantic_rank", "keyword_score", "keyword_rank", "distance")
ExportProgress = Callable[[int, int], None]  # (rows written, rows in the collection)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: ExportFormat
    rows: int
    bytes: int


def export_format(path: str | Path) -> ExportFormat:
    """The export format a file name asks for (.parquet or .jsonl)."""
    fmt = _EXTENSIONS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InvalidInput(f"Cannot export to {Path(path).name!r}: name the file .parquet or "
                           ".jsonl (or use --pg-dump for a PostgreSQL dump).")
    return fmt


def export_command(collection: str, fmt: ExportFormat = "parquet") -> str:
    """The command line that exports ``collection`` (shown where a download would be too big)."""
    file_name = f"{collection}.{fmt}"
    return (f".venv/bin/python -m vecdash export --collection {shlex.quote(collection)} "
            f"--to {shlex.quote(file_name)}")


def export_metadata(collection: Collection, rows: int) -> ExportMetadata:
    return ExportMetadata(collection=collection.name, embedder=collection.embedder,
                          model=collection.model, metric=collection.metric,
                          dimension=collection.dimension, vector_type=collection.vector_type,
                          rows=rows)


def _dropped(collection: Collection, target: str | Path) -> NotFound:
    return NotFound(f"The collection {collection.name!r} (table {collection.schema_name}."
                    f"{collection.table_name}) was dropped or changed while it was being "
                    f"exported; nothing was written to {target}. Check the collection on the "
                    "Home page and export it again.")


def _select(collection: Collection, *, after: bool) -> sql.Composed:
    """One batch of rows in id order, after the last id of the previous batch."""
    c = collection

    def text_or_null(column: str | None) -> sql.Composable:
        return sql.SQL("{}::text").format(sql.Identifier(column)) if column else sql.SQL("NULL")

    fields = [
        sql.Identifier(c.id_column),
        text_or_null(c.external_id_column or c.id_column),
        sql.SQL("coalesce({}::text, '')").format(sql.Identifier(c.title_column))
        if c.title_column else sql.SQL("''"),
        text_or_null(c.content_column),
        text_or_null(c.category_column),
        sql.SQL("coalesce(to_jsonb({})::text, '{{}}')").format(sql.Identifier(c.metadata_column))
        if c.metadata_column else sql.SQL("'{}'"),
        sql.SQL("{}::timestamptz").format(sql.Identifier(c.created_at_column))
        if c.created_at_column else sql.SQL("NULL::timestamptz"),
        sql.SQL("{}::vector").format(sql.Identifier(c.vector_column)),
    ]
    where = sql.SQL("WHERE {} > %s").format(sql.Identifier(c.id_column)) if after else sql.SQL("")
    # ORDER BY 1, the id: by name it is ambiguous when the id is also the external id (id::text).
    return sql.SQL("SELECT {} FROM {} {} ORDER BY 1 LIMIT %s").format(
        sql.SQL(", ").join(fields), c.table, where)


def count_rows(conn: psycopg.Connection[Any], collection: Collection) -> int:
    """How many rows an export of the collection writes."""
    try:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(collection.table)).fetchone()
    except psycopg.errors.UndefinedTable as exc:
        raise NotFound(f"The table of {collection.name!r} ({collection.schema_name}."
                       f"{collection.table_name}) does not exist any more. Drop the collection "
                       "on the Home page, or load it again.") from exc
    assert row is not None
    return int(row[0])


def iter_batches(conn: psycopg.Connection[Any], collection: Collection, *,
                 batch_size: int = DEFAULT_BATCH_ROWS) -> Iterator[list[tuple[Any, ...]]]:
    """The collection's rows in id order, ``batch_size`` at a time: (id key, id, title, content,
    category, metadata JSON text, created_at, vector as a float32 array or None)."""
    if batch_size < 1:
        raise InvalidInput(f"The batch size must be at least 1, not {batch_size}.")
    first, rest = _select(collection, after=False), _select(collection, after=True)
    last: Any = None
    with conn.cursor(binary=True) as cur:
        while True:
            if last is None:
                rows = cur.execute(first, (batch_size,)).fetchall()
            else:
                rows = cur.execute(rest, (last, batch_size)).fetchall()
            if not rows:
                return
            yield rows
            if len(rows) < batch_size:
                return
            last = rows[-1][0]


def export_collection(
    conn: psycopg.Connection[Any],
    collection: Collection,
    path: str | Path,
    *,
    fmt: ExportFormat | None = None,
    force: bool = False,
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: ExportProgress | None = None,
) -> ExportReport:
    """Write every row of ``collection`` to ``path`` (.parquet or .jsonl), streamed in batches.

    An existing file is refused unless ``force``; the file appears under its name only when
    whole. A collection dropped meanwhile raises NotFound, a full disk or an unwritable place
    InvalidInput; either way nothing is left under ``path``.
    """
    fmt = fmt or export_format(path)
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"Unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}.")
    # An export streams the whole table: no statement timeout (it is for interactive queries).
    with atomic_output(path, force=force) as temporary, without_statement_timeout(conn):
        total = count_rows(conn, collection)
        meta = export_metadata(collection, total)
        write = _write_parquet if fmt == "parquet" else _write_jsonl
        try:
            written = write(temporary, meta, iter_batches(conn, collection, batch_size=batch_size),
                            total, progress)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            raise _dropped(collection, path) from exc
        except psycopg.Error as exc:
            raise ConnectionFailed(
                f"PostgreSQL stopped the export of {collection.name!r}: "
                f"{exc.diag.message_primary or exc}. Nothing was written to {path}; try again."
            ) from exc
        size = temporary.stat().st_size
    return ExportReport(path=Path(path).expanduser(), format=fmt, rows=written, bytes=size)


def export_bytes(conn: psycopg.Connection[Any], collection: Collection, *,
                 fmt: ExportFormat = "parquet", progress: ExportProgress | None = None) -> bytes:
    """The export as bytes (the Home page's download), for collections up to DOWNLOAD_MAX_ROWS."""
    rows = count_rows(conn, collection)
    if rows > DOWNLOAD_MAX_ROWS:
        raise InvalidInput(
            f"{collection.name!r} has {rows:,} rows, more than the {DOWNLOAD_MAX_ROWS:,} a download "
            f"holds. Export it from the command line: {export_command(collection.name, fmt)}"
        )
    with tempfile.TemporaryDirectory(prefix="vecdash-export-") as folder:
        target = Path(folder) / f"export.{fmt}"
        export_collection(conn, collection, target, fmt=fmt, progress=progress)
        return target.read_bytes()


def _floats(vector: Any) -> np.ndarray:
    """A fetched vector (pgvector's Vector from a binary cursor, or an array) as float32."""
    values = vector.to_numpy() if hasattr(vector, "to_numpy") else vector
    return np.asarray(values, dtype=np.float32)


def _vector_array(vectors: Sequence[Any]) -> Any:
    import pyarrow as pa

    item = pa.list_(pa.float32())
    if any(v is None for v in vectors):
        return pa.array([None if v is None else _floats(v).tolist() for v in vectors], type=item)
    arrays = [_floats(v) for v in vectors]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float32()))


def _parquet_schema(meta: ExportMetadata) -> Any:
    import pyarrow as pa

    return pa.schema(
        [pa.field("id", pa.string()), pa.field("title", pa.string()),
         pa.field("content", pa.string()), pa.field("category", pa.string()),
         pa.field("metadata", pa.string()),  # JSON text (see ExportMetadata.json_columns)
         pa.field("created_at", pa.timestamp("us", tz="UTC")),
         pa.field("embedding", pa.list_(pa.float32()))],
        metadata={"vecdash_export": meta.to_json()},
    )


def _write_parquet(path: Path, meta: ExportMetadata, batches: Iterator[list[tuple[Any, ...]]],
                   total: int, progress: ExportProgress | None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema(meta)
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for rows in batches:
            columns = list(zip(*rows, strict=True))
            arrays = [pa.array(columns[i], type=schema.field(i - 1).type) for i in range(1, 7)]
            arrays.append(_vector_array(columns[7]))
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            written += len(rows)
            if progress is not None:
                progress(written, total)
    return written


def _write_jsonl(path: Path, meta: ExportMetadata, batches: Iterator[list[tuple[Any, ...]]],
                 total: int, progress: ExportProgress | None) -> int:
    written = 0
    with path.open("w", encoding="utf-8") as f:
        f.write(jsonl_header(meta) + "\n")
        for rows in batches:
            _write_jsonl_rows(f, rows)
            written += len(rows)
            if progress is not None:
                progress(written, total)
    return written


def _write_jsonl_rows(f: IO[str], rows: list[tuple[Any, ...]]) -> None:
    lines = []
    for _, ident, title, content, category, metadata, created_at, vector in rows:
        lines.append(json.dumps({
            "id": ident, "title": title, "content": content, "category": category,
            "metadata": json.loads(metadata),
            "created_at": created_at.isoformat() if created_at is not None else None,
            # float32 -> the double of the same value: reads back to the identical float32
            "embedding": None if vector is None else _floats(vector).tolist(),
        }, ensure_ascii=False))
    f.write("\n".join(lines) + "\n")


def search_results_csv(hits: pd.DataFrame) -> bytes:
    """A search's results as UTF-8 CSV: rank, id, title, every score and rank, and which arm
    found each row (``source``); no snippets (HTML) or document text."""
    scores = [c for c in hits.columns if c.endswith(("_score", "_rank")) and c not in RESULT_COLUMNS]
    columns = [c for c in (*RESULT_COLUMNS, *scores) if c in hits.columns]
    table = hits[columns].rename(columns={"external_id": "id"})
    return table.to_csv(index=False).encode("utf-8")
