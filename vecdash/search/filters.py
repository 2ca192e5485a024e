"""Search filters (categories, metadata pairs, a created_at range), the SQL conditions they
become on both arms, and the categories a collection offers to filter on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from vecdash.errors import InvalidInput
from vecdash.text_checks import check_text

if TYPE_CHECKING:
    from vecdash.collections import Collection


@dataclass(frozen=True)
class SearchFilters:
    """Filters applied in SQL to both arms: categories (any of), metadata key = value pairs
    (compared as text, all must match) and a created_at range (from inclusive, to exclusive; a
    date as ``created_to`` includes that whole day)."""

    categories: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    created_from: datetime | date | None = None
    created_to: datetime | date | None = None

    @property
    def active(self) -> bool:
        return bool(self.categories or self.metadata or self.created_from or self.created_to)

    @classmethod
    def of(cls, value: SearchFilters | Mapping[str, Any] | None) -> SearchFilters:
        if value is None:
            return cls()
        if isinstance(value, SearchFilters):
            return value
        unknown = set(value) - {"categories", "metadata", "created_from", "created_to"}
        if unknown:
            raise InvalidInput(
                f"Unknown filter {sorted(unknown)[0]!r}; use categories, metadata, created_from "
                "or created_to."
            )
        meta = value.get("metadata") or {}
        pairs = tuple((str(k), str(v)) for k, v in (meta.items() if isinstance(meta, Mapping)
                                                     else meta))
        return cls(
            categories=tuple(str(c) for c in value.get("categories") or ()),
            metadata=pairs,
            created_from=value.get("created_from"),
            created_to=value.get("created_to"),
        )


def _as_datetime(value: datetime | date, *, end: bool) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    day = datetime(value.year, value.month, value.day, tzinfo=UTC)
    return day + timedelta(days=1) if end else day


def filter_sql(
    collection: Collection, filters: SearchFilters, params: dict[str, Any]
) -> sql.Composable:
    """``AND ...`` conditions on alias t for the filters (or nothing), adding their parameters."""
    c = collection
    parts: list[sql.Composable] = []

    def need(column: str | None, what: str) -> sql.Identifier:
        if not column:
            raise InvalidInput(
                f"{c.name!r} has no {what} column, so it cannot be filtered on {what}. Remove "
                "that filter."
            )
        return sql.Identifier("t", column)

    if filters.categories:
        params["f_categories"] = [check_text(v, "category filter") for v in filters.categories]
        parts.append(sql.SQL("{}::text = ANY(%(f_categories)s)").format(
            need(c.category_column, "category")))
    for i, (key, value) in enumerate(filters.metadata):
        if not key:
            raise InvalidInput("A metadata filter has an empty key. Type the key to match.")
        params[f"f_mkey{i}"] = check_text(key, "metadata filter's key")
        params[f"f_mval{i}"] = check_text(value, "metadata filter's value")
        parts.append(sql.SQL("{} ->> {} = {}").format(
            need(c.metadata_column, "metadata"), sql.Placeholder(f"f_mkey{i}"),
            sql.Placeholder(f"f_mval{i}")))
    if filters.created_from is not None:
        params["f_from"] = _as_datetime(filters.created_from, end=False)
        parts.append(sql.SQL("{} >= %(f_from)s").format(need(c.created_at_column, "created_at")))
    if filters.created_to is not None:
        params["f_to"] = _as_datetime(filters.created_to, end=True)
        parts.append(sql.SQL("{} < %(f_to)s").format(need(c.created_at_column, "created_at")))
    if not parts:
        return sql.SQL("")
    return sql.SQL(" AND ") + sql.SQL(" AND ").join(parts)


# Rows read to rank the categories of a large table without an index on them.
CATEGORY_SAMPLE_ROWS = 20_000


def _category_index(conn: psycopg.Connection[Any], collection: Collection) -> bool:
    """Whether a btree index (no predicate) leads with the category column."""
    row = conn.execute(
        "SELECT 1 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_am am ON am.oid = i.relam JOIN pg_attribute a ON a.attrelid = x.indrelid "
        "AND a.attnum = x.indkey[0] "
        "WHERE x.indrelid = %s::regclass AND a.attname = %s AND am.amname = 'btree' "
        "AND x.indpred IS NULL AND x.indisvalid LIMIT 1",
        (collection.table.as_string(conn), collection.category_column),
    ).fetchone()
    return row is not None


def categories_query(conn: psycopg.Connection[Any], collection: Collection, *, limit: int,
                     exact_below: int | None = None) -> tuple[sql.Composed, dict[str, Any]]:
    """The statement ``list_categories`` runs and its parameters (a test EXPLAINs it)."""
    from vecdash.collections import EXACT_COUNT_MAX, estimated_rows

    col = sql.Identifier(collection.category_column or "")
    t = collection.table
    estimate = estimated_rows(conn, collection)
    if estimate < (EXACT_COUNT_MAX if exact_below is None else exact_below):
        return sql.SQL("SELECT {c}::text, count(*) FROM {t} WHERE {c} IS NOT NULL GROUP BY 1 "
                       "ORDER BY 2 DESC, 1 LIMIT %(limit)s").format(c=col, t=t), {"limit": limit}
    if _category_index(conn, collection):
        # A loose index scan: one index probe per distinct value, so the cost follows the number
        # of categories returned, not the table.
        return sql.SQL("""
            WITH RECURSIVE cats(v) AS (
                (SELECT {c} FROM {t} WHERE {c} IS NOT NULL ORDER BY {c} LIMIT 1)
                UNION ALL
                SELECT (SELECT {c} FROM {t} WHERE {c} > cats.v ORDER BY {c} LIMIT 1)
                FROM cats WHERE cats.v IS NOT NULL
            )
            SELECT v::text FROM cats WHERE v IS NOT NULL LIMIT %(limit)s""").format(c=col, t=t), {
            "limit": limit}
    pct = min(100.0, 100.0 * CATEGORY_SAMPLE_ROWS / max(estimate, 1))
    return sql.SQL("SELECT {c}::text, count(*) FROM {t} TABLESAMPLE SYSTEM (%(pct)s) "
                   "WHERE {c} IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %(limit)s").format(
        c=col, t=t), {"limit": limit, "pct": pct}


def list_categories(
    conn: psycopg.Connection[Any], collection: Collection, *, limit: int = 500,
    exact_below: int | None = None,
) -> list[str]:
    """The distinct categories of a collection (for the filter), at most ``limit``.

    Under vecdash.collections.EXACT_COUNT_MAX rows (or ``exact_below``): all of them, most common
    first. On a larger table nothing reads the whole table: with an index on the category column
    (managed collections have one) every category up to ``limit``, in name order, one index probe
    each; without one, those of a block sample of about 20,000 rows, most common first (a very
    rare category may be missing from the list).
    """
    if not collection.category_column:
        return []
    query, params = categories_query(conn, collection, limit=limit, exact_below=exact_below)
    return [str(r[0]) for r in conn.execute(query, params).fetchall()]
