"""EXPLAIN of one top-k query as the planner really runs it, and the common traps in plain words:
an operator class that does not match the metric, INVALID indexes, a filter applied after the
index's candidates, ef_search below k, more lists than rows."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from vecdash.collections import Collection
from vecdash.errors import InvalidInput
from vecdash.indexes.catalog import list_vector_indexes, row_count
from vecdash.indexes.sample_queries import top_k_query
from vecdash.indexes.specs import (
    ITERATIVE_MODES,
    Setting,
    apply_setting,
    check_setting,
    default_lists,
    index_target,
)
from vecdash.search import check_k, query_vector
from vecdash.search.semantic import vector_scan_settings

_VECTOR_LITERAL = re.compile(r"'\[([^\]]{80,})\]'")


def plan_text(conn: psycopg.Connection[Any], query: sql.Composed, params: dict[str, Any],
              *, analyze: bool) -> str:
    """The plan of ``query`` (run, with buffers, when ``analyze``), query vectors abbreviated."""
    prefix = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") if analyze else sql.SQL("EXPLAIN ")
    rows = conn.execute(prefix + query, params).fetchall()
    return "\n".join(_shorten_vectors(str(r[0])) for r in rows)


def indexes_in_plan(conn: psycopg.Connection[Any], query: sql.Composed,
                    params: dict[str, Any]) -> list[str]:
    """The names of the indexes the planner would scan for ``query`` (EXPLAIN in JSON, not run),
    in plan order: the one way a measurement learns which index really served it."""
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params).fetchone()
    document = row[0] if row else []
    if isinstance(document, str):
        document = json.loads(document)
    names: list[str] = []
    pending = [entry["Plan"] for entry in document]
    while pending:
        node = pending.pop(0)
        name = node.get("Index Name")
        if isinstance(name, str) and name not in names:
            names.append(name)
        pending.extend(node.get("Plans", []))
    return names


def _shorten_vectors(line: str) -> str:
    """Plans print the query vector in full; keep its first values and its length."""

    def short(match: re.Match[str]) -> str:
        values = match.group(1).split(",")
        return "'[" + ",".join(values[:3]) + f",… {len(values)} values]'"

    return _VECTOR_LITERAL.sub(short, line)


@dataclass(frozen=True)
class Explained:
    plan: str
    index_used: str | None
    rows: int
    warnings: list[str]


def explain_query(
    conn: psycopg.Connection[Any],
    collection: Collection,
    vector: Sequence[float] | np.ndarray,
    *,
    k: int = 10,
    setting: Setting | None = None,
    category: str | None = None,
) -> Explained:
    """EXPLAIN (ANALYZE, BUFFERS) of one top-k query as the planner really runs it (no index is
    forced or hidden), with plain-language warnings for the common traps."""
    check_k(k)
    setting = setting or Setting()
    check_setting(setting)
    vec = query_vector(collection, vector)
    indexes = list_vector_indexes(conn, collection)
    valid = [i for i in indexes if i.valid]
    rows_total = row_count(conn, collection)
    if category is not None and not collection.category_column:
        raise InvalidInput(f"{collection.name!r} has no category column to filter on.")
    uses_expr = any(i.halfvec_expression for i in valid) and not any(
        not i.halfvec_expression for i in valid)
    query = top_k_query(collection, halfvec_expression=uses_expr, category=category is not None)
    params: dict[str, Any] = {"q": vec, "k": k, "cat": category}
    with conn.transaction():
        for method in ("hnsw", "ivfflat"):
            apply_setting(conn, replace(setting, iterative_scan=(
                setting.iterative_scan if setting.iterative_scan in ITERATIVE_MODES[method]
                else "off")), method)
        plan = plan_text(conn, query, params, analyze=True)
        returned = len(conn.execute(query, params).fetchall())
    used = next((i.name for i in indexes if i.name in plan), None)
    used_index = next((i for i in indexes if i.name == used), None)
    warnings: list[str] = []
    matching = [i for i in valid if i.metric == collection.metric]
    for i in valid:
        if i.metric != collection.metric:
            warnings.append(
                f"{i.name} is built with {i.opclass}, which serves the "
                f"{i.metric} operator, but {collection.name!r} is searched by {collection.metric} "
                f"distance ({collection.distance_operator.as_string()}). The planner can never use "
                f"this index for these queries: rebuild it with "
                f"{index_target(collection).opclass}."
            )
    for i in indexes:
        if not i.valid:
            warnings.append(f"{i.name} is INVALID (an interrupted concurrent build left it): it "
                            "slows every write and is never used. Drop it.")
    if used is None and matching:
        warnings.append(
            f"The planner did not use the vector index {matching[0].name} for this query (see the "
            f"plan: it read the table's {rows_total} rows another way and sorted them by "
            "distance). On a small table, or with a selective filter, that is cheaper and exact; "
            "on a large table check that the query orders by the indexed expression with the "
            "index's operator and has a LIMIT."
        )
    if used is None and not valid:
        warnings.append("There is no usable vector index, so every query scans the whole table "
                        "(exact, but slower as the table grows). Build one below.")
    if category is not None and returned < k:
        if used_index is not None and setting.iterative_scan == "off":
            limit = (f"hnsw.ef_search = {setting.ef_search}" if used_index.method == "hnsw"
                     else f"ivfflat.probes = {setting.probes}")
            warnings.append(
                f"The filter returned {returned} of the {k} rows asked for. The index hands back "
                f"only its candidates ({limit}) and the filter is applied after, dropping those "
                "outside the category. Turn on iterative scan (relaxed_order), raise "
                "ef_search / probes, or add a partial index for the category."
            )
        else:
            warnings.append(f"The filter returned {returned} of the {k} rows asked for: the "
                            "category has fewer matching rows.")
    if used_index is not None and used_index.method == "hnsw" and setting.ef_search < k:
        warnings.append(f"hnsw.ef_search ({setting.ef_search}) is below k ({k}): an HNSW scan "
                        f"returns at most ef_search rows, so you get at most {setting.ef_search}.")
    for i in valid:
        if i.method == "ivfflat" and i.params["lists"] > rows_total:
            warnings.append(
                f"{i.name} has {i.params['lists']} lists but the table has {rows_total} rows: "
                "most lists are empty and recall suffers. Rebuild with about "
                f"{default_lists(rows_total)} lists (rows / 1000)."
            )
        if (used_index is not None and used_index.name == i.name and i.method == "ivfflat"
                and setting.probes > i.params["lists"]):
            warnings.append(f"ivfflat.probes ({setting.probes}) is above the index's lists "
                            f"({i.params['lists']}): every list is searched, as slow as exact.")
    return Explained(plan, used, returned, warnings)


@dataclass(frozen=True)
class SemanticServing:
    """What answers a search's semantic arm: a vector index at its search setting, or an exact
    scan (no index, or index scans switched off on purpose). Figures computed through an
    approximate index can differ from exact ones: a page says which produced them."""

    index: str | None  # the vector index the plan uses; None: an exact scan
    method: str  # hnsw, ivfflat or exact
    setting: str  # "ef_search=100", "probes=1" or ""
    exact_forced: bool = False
    passed_over: tuple[str, ...] = ()  # valid vector indexes the plan did not use

    @property
    def sentence(self) -> str:
        if self.index is None:
            if self.exact_forced:
                return "Semantic arm: exact scan (index scans switched off for this evaluation)."
            if self.passed_over:
                # An index exists, but the planner finds reading every row cheaper (a small
                # table): the figures are exact, and the page must not suggest otherwise.
                return (f"Semantic arm: exact scan. The query plan does not use "
                        f"{', '.join(self.passed_over)}: PostgreSQL finds a scan of every row "
                        "cheaper here (as on a small table), so these figures are exact.")
            return ("Semantic arm: exact scan (the collection has no vector index the query "
                    "can use).")
        return (f"Semantic arm: {self.index} ({self.method}) at {self.setting}, the index the "
                "query plan uses: approximate, so its figures can differ from an exact scan's.")


def semantic_serving(conn: psycopg.Connection[Any], collection: Collection, vector: Any, *,
                     candidates: int, exact: bool = False) -> SemanticServing:
    """Which index serves a semantic top-``candidates`` query right now, read from its plan
    (EXPLAIN, not run), at the ef_search and probes the search arms set
    (vecdash.search.semantic.vector_scan_settings); ``exact``: the evaluation switches index scans off."""
    if exact:
        return SemanticServing(None, "exact", "", exact_forced=True)
    indexes = {i.name: i for i in list_vector_indexes(conn, collection) if i.valid}
    if not indexes:
        return SemanticServing(None, "exact", "")
    # The search arms order by the column itself, so an index on a halfvec expression never
    # serves them.
    query = top_k_query(collection, halfvec_expression=False)
    with conn.transaction(force_rollback=True):
        row = conn.execute(*vector_scan_settings(conn, collection, candidates,
                                                 filtered=False)).fetchone()
        in_plan = indexes_in_plan(conn, query, {"q": query_vector(collection, vector),
                                                "k": candidates})
    served = next((indexes[n] for n in in_plan if n in indexes), None)
    if served is None:
        return SemanticServing(None, "exact", "",
                               passed_over=tuple(i.label for i in indexes.values()
                                                 if not i.halfvec_expression))
    ef_search, probes = (row[0], row[1]) if row else ("40", "1")
    setting = f"ef_search={ef_search}" if served.method == "hnsw" else f"probes={probes}"
    return SemanticServing(served.label, served.method, setting)
