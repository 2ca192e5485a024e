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


def list_categories(
    conn: psycopg.Connection[Any], collection: Collection, *, limit: int = 500
) -> list[str]:
    """The distinct categories of a collection (for the filter), most common first."""
    if not collection.category_column:
        return []
    col = sql.Identifier(collection.category_column)
    rows = conn.execute(
        sql.SQL("SELECT {}::text, count(*) FROM {} WHERE {} IS NOT NULL GROUP BY 1 "
                "ORDER BY 2 DESC, 1 LIMIT %s").format(col, collection.table, col),
        (limit,),
    ).fetchall()
    return [str(r[0]) for r in rows]
