"""What an index is and how it is spelled: the index types, their build parameters and limits,
the column or expression an index covers, and the search-time settings each type reads.

The one module to change to add an index type.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import psycopg
from psycopg import sql

from vecdash.collections import (
    MAX_HALFVEC_DIM,
    MAX_VECTOR_DIM,
    OPCLASS_SUFFIX,
    Collection,
    index_name,
)
from vecdash.errors import InvalidInput

Method = Literal["hnsw", "ivfflat"]
METHODS: tuple[Method, ...] = ("hnsw", "ivfflat")
ITERATIVE_MODES: dict[str, tuple[str, ...]] = {
    "hnsw": ("off", "relaxed_order", "strict_order"),
    "ivfflat": ("off", "relaxed_order"),
}
EF_SEARCH_SWEEP = (10, 20, 40, 80, 160, 320)
HNSW_DEFAULTS = {"m": 16, "ef_construction": 64}
IVFFLAT_DEFAULT_LISTS = 100  # pgvector's default when an index has no lists option
M_RANGE = (2, 100)
EF_CONSTRUCTION_RANGE = (4, 1000)
LISTS_RANGE = (1, 32768)
EF_SEARCH_RANGE = (1, 1000)
PROBES_RANGE = (1, 32768)
MAX_PARALLEL_WORKERS = 64
DEFAULT_MAINTENANCE_WORK_MEM = "512MB"  # SET LOCAL for a build unless another is asked for

_MEM = re.compile(r"^\s*(\d+)\s*(kB|MB|GB)\s*$")


@dataclass(frozen=True)
class IndexSpec:
    """An index configuration: HNSW (m, ef_construction) or IVFFlat (lists)."""

    method: str
    m: int = HNSW_DEFAULTS["m"]
    ef_construction: int = HNSW_DEFAULTS["ef_construction"]
    lists: int | None = None  # None: default_lists(rows)

    @property
    def params(self) -> dict[str, int]:
        if self.method == "hnsw":
            return {"m": self.m, "ef_construction": self.ef_construction}
        return {"lists": int(self.lists or 1)}

    @property
    def label(self) -> str:
        return f"{self.method} " + ", ".join(f"{k}={v}" for k, v in self.params.items())


def default_lists(rows: int) -> int:
    """pgvector's advice: rows / 1000 up to 1M rows, sqrt(rows) above; at least 1."""
    if rows > 1_000_000:
        return max(1, int(math.sqrt(rows)))
    return max(1, rows // 1000)


def probes_sweep(lists: int) -> list[int]:
    """1, 2, 4, 8, ... up to ``lists`` (lists itself included: probing every list is exact)."""
    values = [1]
    while values[-1] * 2 < lists:
        values.append(values[-1] * 2)
    if lists > 1:
        values.append(lists)
    return values


def _check_bounds(value: object, bounds: tuple[int, int], what: str, *, note: str = "") -> None:
    lo, hi = bounds
    if not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{what} must be between {lo} and {hi}{note}; got {value!r}.")


def validate_spec(spec: IndexSpec, *, rows: int) -> IndexSpec:
    """Check an index configuration against pgvector's limits and the table; fill in lists."""
    if spec.method not in METHODS:
        raise InvalidInput(f"Unknown index type {spec.method!r}; choose hnsw or ivfflat.")
    if spec.method == "hnsw":
        _check_bounds(spec.m, M_RANGE, "HNSW m", note=f" ({HNSW_DEFAULTS['m']} is the default)")
        _check_bounds(spec.ef_construction, EF_CONSTRUCTION_RANGE, "HNSW ef_construction",
                      note=f" ({HNSW_DEFAULTS['ef_construction']} is the default)")
        if spec.ef_construction < 2 * spec.m:
            raise InvalidInput(
                f"HNSW ef_construction ({spec.ef_construction}) must be at least 2 x m "
                f"({2 * spec.m}): each node keeps 2m neighbours on the bottom layer, chosen from "
                "ef_construction candidates. Raise ef_construction or lower m."
            )
        return spec
    if rows == 0:
        raise InvalidInput(
            "The collection has no rows. IVFFlat learns its lists (k-means centres) from the data "
            "present at build time, so build it after loading the data."
        )
    lists = spec.lists if spec.lists is not None else default_lists(rows)
    _check_bounds(lists, LISTS_RANGE, "IVFFlat lists")
    if lists > rows:
        raise InvalidInput(
            f"IVFFlat lists ({lists}) is larger than the number of rows ({rows}): some lists would "
            f"be empty and recall poor. Use at most {rows} (about {default_lists(rows)} is "
            "advised: rows / 1000, sqrt(rows) above a million)."
        )
    return replace(spec, lists=lists)


def check_memory(value: str) -> str:
    """A maintenance_work_mem value like '512MB' or '2GB' (1MB to 64GB)."""
    match = _MEM.match(value or "")
    if not match:
        raise InvalidInput(
            f"maintenance_work_mem {value!r} is not a memory size; write e.g. '256MB' or '2GB'."
        )
    amount, unit = int(match.group(1)), match.group(2)
    kb = amount * {"kB": 1, "MB": 1024, "GB": 1024 * 1024}[unit]
    if not 1024 <= kb <= 64 * 1024 * 1024:
        raise InvalidInput(f"maintenance_work_mem must be between 1MB and 64GB; got {value!r}.")
    return f"{amount}{unit}"


def check_parallel_workers(workers: int) -> int:
    """Extra parallel maintenance workers for a build (0 to MAX_PARALLEL_WORKERS)."""
    _check_bounds(workers, (0, MAX_PARALLEL_WORKERS), "Parallel maintenance workers")
    return workers


@dataclass(frozen=True)
class IndexTarget:
    """What an index on this collection indexes: the column or a halfvec expression, the operator
    class, the type query vectors are cast to, and why an expression is used (if it is)."""

    expression: sql.Composable
    opclass: str
    cast: sql.Composable
    halfvec_expression: bool
    reason: str


def index_target(collection: Collection, *, halfvec_expression: bool | None = None) -> IndexTarget:
    """The column (or expression) and operator class an index for this collection uses.

    pgvector indexes ``vector`` up to 2,000 dimensions and ``halfvec`` up to 4,000. vecdash stores
    halfvec itself above 2,000, but an attached table may hold vector(d > 2000): then the index is
    built on the expression ``(embedding::halfvec(d))`` and queries must use the same cast.
    """
    c = collection
    column = sql.Identifier(c.vector_column)
    suffix = OPCLASS_SUFFIX[c.metric]
    if halfvec_expression is None:
        halfvec_expression = c.vector_type == "vector" and c.dimension > MAX_VECTOR_DIM
    if c.dimension > MAX_HALFVEC_DIM:
        raise InvalidInput(
            f"{c.name!r} has {c.dimension} dimensions; pgvector indexes at most {MAX_HALFVEC_DIM} "
            "(as halfvec). Search it exactly, or reduce the dimension (e.g. text-embedding-3 "
            "with dimensions=1536)."
        )
    if halfvec_expression:
        half = sql.SQL("halfvec({})").format(sql.Literal(c.dimension))
        return IndexTarget(
            expression=sql.SQL("({}::{})").format(column, half),
            opclass=f"halfvec_{suffix}",
            cast=half,
            halfvec_expression=True,
            reason=(
                f"{c.dimension} dimensions is above pgvector's 2,000-dimension limit for indexing "
                f"vector, so the index is built on embedding::halfvec({c.dimension}) (16-bit "
                "floats, indexable up to 4,000 dimensions) and queries use the same cast."
            ),
        )
    return IndexTarget(
        expression=column,
        opclass=f"{c.vector_type}_{suffix}",
        cast=c.vector_cast,
        halfvec_expression=False,
        reason="",
    )


def default_index_suffix(collection: Collection, spec: IndexSpec) -> str:
    """What follows the table name in a derived index name: column, method, parameters."""
    params = "_".join(f"{k}{v}" for k, v in spec.params.items()).replace("ef_construction", "efc")
    return f"{collection.vector_column}_{spec.method}_{params}"


def default_index_name(collection: Collection, spec: IndexSpec) -> str:
    return index_name(collection.table_name, default_index_suffix(collection, spec))


# Search time


@dataclass(frozen=True)
class Setting:
    """Search-time settings for one measurement."""

    ef_search: int = 40
    probes: int = 10
    iterative_scan: str = "off"


def check_setting(setting: Setting, method: str | None = None) -> Setting:
    _check_bounds(setting.ef_search, EF_SEARCH_RANGE, "hnsw.ef_search")
    _check_bounds(setting.probes, PROBES_RANGE, "ivfflat.probes")
    modes = ITERATIVE_MODES.get(method or "hnsw", ITERATIVE_MODES["hnsw"])
    if setting.iterative_scan not in modes:
        raise InvalidInput(f"Iterative scan mode {setting.iterative_scan!r} is not available for "
                           f"{method or 'hnsw'}; choose one of {', '.join(modes)}.")
    return setting


def apply_setting(conn: psycopg.Connection[Any], setting: Setting, method: str | None) -> None:
    """SET LOCAL the setting (and ``method``'s iterative scan) in the caller's transaction."""
    conn.execute("SELECT set_config('hnsw.ef_search', %s, true), "
                 "set_config('ivfflat.probes', %s, true)",
                 (str(setting.ef_search), str(setting.probes)))
    if setting.iterative_scan != "off" and method in ITERATIVE_MODES:
        try:
            conn.execute("SELECT set_config(%s, %s, true)",
                         (f"{method}.iterative_scan", setting.iterative_scan))
        except psycopg.errors.UndefinedObject as exc:
            raise InvalidInput("Iterative index scans need pgvector 0.8 or newer; set it to off "
                               "or upgrade pgvector.") from exc
