"""Reading the map's rows from PostgreSQL: a deterministic, stratified sample chosen in SQL, and rows
by id (for a cached projection)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash.collections import Collection
from vecdash.errors import InvalidInput
from vecdash.projection.types import DEFAULT_SAMPLE, MAX_SAMPLE, Sample

SNIPPET_CHARS = 240


def _select_list(c: Collection) -> sql.Composed:
    return sql.SQL(
        "{id}::text, coalesce({title}::text, ''), left({content}::text, %(snip)s), "
        "{category}::text, {metadata}, {vec}"
    ).format(
        id=sql.Identifier(c.id_column),
        title=c.column(c.title_column),
        content=sql.Identifier(c.content_column),
        category=c.column(c.category_column),
        metadata=sql.SQL("{}::jsonb").format(sql.Identifier(c.metadata_column))
        if c.metadata_column
        else sql.SQL("NULL::jsonb"),
        vec=sql.Identifier(c.vector_column),
    )


def _rows_to_sample(rows: list[tuple[Any, ...]], dimension: int) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Rows (id, title, snippet, category, metadata, vector) -> frame + float32 matrix, dropping
    zero and non-finite vectors (returned as the skipped count)."""
    vectors = np.empty((len(rows), dimension), dtype=np.float32)
    if rows:
        vectors[:] = [r[5].to_numpy() if hasattr(r[5], "to_numpy") else r[5] for r in rows]
    frame = pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "snippet": [r[2] for r in rows],
            "category": [r[3] for r in rows],
            "metadata": [r[4] if isinstance(r[4], dict) else {} for r in rows],
        }
    )
    if len(rows) == 0:
        return frame, vectors, 0
    good = np.all(np.isfinite(vectors), axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    skipped = int((~good).sum())
    if skipped:
        frame = frame[good].reset_index(drop=True)
        vectors = np.ascontiguousarray(vectors[good])
    return frame, vectors, skipped


def _relkind(conn: psycopg.Connection[Any], c: Collection) -> str:
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (c.schema_name, c.table_name),
    ).fetchone()
    return str(row[0]) if row else ""


def _quotas(counts: dict[str | None, int], limit: int) -> dict[str | None, int]:
    """Proportional per-category quotas summing to ``limit`` (largest remainder), every
    non-empty category getting at least one row."""
    total = sum(counts.values())
    exact = {c: limit * n / total for c, n in counts.items()}
    quotas = {c: min(counts[c], max(1, int(q))) for c, q in exact.items()}
    by_remainder = sorted(counts, key=lambda c: (exact[c] - int(exact[c])), reverse=True)
    short = limit - sum(quotas.values())
    for c in by_remainder:
        if short <= 0:
            break
        if quotas[c] < counts[c]:
            quotas[c] += 1
            short -= 1
    return quotas


def sample_vectors(
    conn: psycopg.Connection[Any], collection: Collection, *, limit: int = DEFAULT_SAMPLE,
    seed: int = 42, exact_below: int | None = None,
) -> Sample:
    """Up to ``limit`` rows with their vectors, chosen in SQL (never the whole table in memory).

    Deterministic for a seed: rows are ordered by md5(seed || id), so adding rows keeps most of
    the previous sample. Stratified by category when the collection has one (each category gets
    its share, at least one row). On a large table (from vecdash.collections.EXACT_COUNT_MAX
    rows, or ``exact_below``, by the planner's estimate) a repeatable block sample (TABLESAMPLE
    SYSTEM) of about 5x the sample is all that is read: the categories' shares are counted in it
    and the total is the estimate, so the time follows the sample, not the table. Zero and NaN
    vectors are skipped and counted; NULL vectors are never selected.
    """
    from vecdash.collections import EXACT_COUNT_MAX, estimated_rows

    c = collection
    if not 1 <= limit <= MAX_SAMPLE:
        raise InvalidInput(f"The sample size must be between 1 and {MAX_SAMPLE:,}; got {limit}.")
    vec = sql.Identifier(c.vector_column)
    cat = c.column(c.category_column)
    params: dict[str, Any] = {"snip": SNIPPET_CHARS, "seed": f"{seed}:"}
    source: sql.Composable = c.table
    counts_sql = sql.SQL("SELECT {cat}::text, count(*) FROM {t} WHERE {vec} IS NOT NULL GROUP BY 1")
    estimate = estimated_rows(conn, c)
    large = (estimate >= (EXACT_COUNT_MAX if exact_below is None else exact_below)
             and _relkind(conn, c) in ("r", "m", "p"))
    if large:
        pct = min(100.0, 100.0 * 5 * limit / max(estimate, 1))
        source = sql.SQL("{} TABLESAMPLE SYSTEM (%(pct)s) REPEATABLE (%(rseed)s)").format(c.table)
        params.update(pct=pct, rseed=seed)
    counts_rows = conn.execute(counts_sql.format(cat=cat, t=source, vec=vec), params).fetchall()
    counts: dict[str | None, int] = {r[0]: int(r[1]) for r in counts_rows}
    if large and sum(counts.values()) < limit:  # the estimate was far off: count the table
        large, source = False, c.table
        counts_rows = conn.execute(counts_sql.format(cat=cat, t=c.table, vec=vec)).fetchall()
        counts = {r[0]: int(r[1]) for r in counts_rows}
    total = sum(counts.values())
    if large:
        total = max(estimate, total)  # the strata's shares come from the block sample
    elif total > 10 * limit and _relkind(conn, c) in ("r", "m"):
        pct = min(100.0, 100.0 * 5 * limit / total)
        source = sql.SQL("{} TABLESAMPLE SYSTEM (%(pct)s) REPEATABLE (%(rseed)s)").format(c.table)
        params.update(pct=pct, rseed=seed)
    stratified = c.category_column is not None and len(counts) > 1
    select = _select_list(c)
    if total <= limit:
        query = sql.SQL("SELECT {sel} FROM {t} WHERE {vec} IS NOT NULL").format(
            sel=select, t=c.table, vec=vec
        )
        stratified = False
    else:
        quotas: dict[str | None, int] = _quotas(counts, limit) if stratified else {None: limit}
        params.update(cats=[k for k in quotas], quota=[quotas[k] for k in quotas])
        part = cat if stratified else sql.SQL("NULL::text")
        query = sql.SQL("""
            WITH candidates AS (
                SELECT {id} AS pk, {part}::text AS stratum,
                       row_number() OVER (PARTITION BY {part}::text
                                          ORDER BY md5(%(seed)s || {id}::text)) AS rn
                FROM {source} WHERE {vec} IS NOT NULL
            ),
            quotas AS (SELECT * FROM unnest(%(cats)s::text[], %(quota)s::int[]) AS q(stratum, n))
            SELECT {sel} FROM {t}
            WHERE {id} = ANY(ARRAY(SELECT c.pk FROM candidates c JOIN quotas q
                                   ON q.stratum IS NOT DISTINCT FROM c.stratum
                                   WHERE c.rn <= q.n))
            """).format(
            id=sql.Identifier(c.id_column), part=part, source=source, vec=vec, sel=select,
            t=c.table,
        )
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(query, params).fetchall()
    rows.sort(key=lambda r: str(r[0]))  # a stable order without sorting wide rows in SQL
    frame, vectors, skipped = _rows_to_sample(rows, c.dimension)
    return Sample(frame, vectors, total, skipped, stratified)


def fetch_rows(
    conn: psycopg.Connection[Any], collection: Collection, ids: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows with these ids (text form) and their vectors, in the order of ``ids``."""
    c = collection
    # The ids are cast to the id column's type (as PostgreSQL spells it, from the catalog) so the
    # primary key index finds them.
    row = conn.execute(
        "SELECT a.atttypid::regtype::text FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = r.relnamespace "
        "WHERE n.nspname = %s AND r.relname = %s AND a.attname = %s",
        (c.schema_name, c.table_name, c.id_column),
    ).fetchone()
    id_type = sql.SQL(str(row[0])) if row else sql.SQL("text")
    query = sql.SQL("SELECT {sel} FROM {t} WHERE {id} = ANY(%(ids)s::text[]::{id_type}[])").format(
        sel=_select_list(c), t=c.table, id=sql.Identifier(c.id_column), id_type=id_type
    )
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(query, {"ids": ids, "snip": SNIPPET_CHARS}).fetchall()
    position = {pid: i for i, pid in enumerate(ids)}
    rows.sort(key=lambda r: position.get(r[0], len(ids)))  # the order asked for (no SQL sort)
    frame, vectors, _ = _rows_to_sample(rows, c.dimension)
    return frame, vectors
