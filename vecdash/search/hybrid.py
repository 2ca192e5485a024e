"""Hybrid search (the semantic and a keyword arm fused, with highlighted snippets) and the
side-by-side comparison of the semantic, keyword and hybrid top-k."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash.bm25.statistics import DEFAULT_B, DEFAULT_K1
from vecdash.search.arms import KeywordRanker, check_keyword_ranker
from vecdash.search.candidates import Candidates, fetch_candidates
from vecdash.search.filters import SearchFilters
from vecdash.search.fusion import fuse
from vecdash.search.semantic import check_k, embed_query

if TYPE_CHECKING:
    from vecdash.collections import Collection
    from vecdash.embedders import Embedder

HYBRID_COLUMNS = [
    "rank", "id", "external_id", "title", "category", "fused_score", "semantic_score",
    "semantic_rank", "keyword_score", "keyword_rank", "source", "snippet", "snippet_text",
    "distance", "content",
]
# ts_headline marks matched terms with these (private-use characters, never in real text); the
# snippet column turns them into <mark> after HTML-escaping the text.
_MARK_START = "\ue000"
_MARK_STOP = "\ue001"
_HEADLINE_OPTIONS = (
    f"StartSel={_MARK_START}, StopSel={_MARK_STOP}, MaxWords=35, MinWords=15, "
    "MaxFragments=2, FragmentDelimiter=\" … \""
)


def _query_candidates(
    conn: psycopg.Connection[Any],
    collection: Collection,
    query: str,
    *,
    embedder: Embedder,
    k: int,
    keyword_ranker: str,
    candidates: int,
    filters: SearchFilters | Mapping[str, Any] | None,
    k1: float,
    b: float,
    vector: Sequence[float] | np.ndarray | None = None,
) -> tuple[KeywordRanker, Candidates]:
    """What hybrid search and the comparison start with: the options checked, the query
    embedded (unless ``vector`` is given) and its candidates from the semantic and that keyword
    arm."""
    check_k(k)
    ranker = check_keyword_ranker(keyword_ranker)
    vec = embed_query(collection, query, embedder=embedder) if vector is None else vector
    return ranker, fetch_candidates(conn, collection, query, vec, candidates=candidates,
                                    keyword_rankers=(ranker,), filters=filters, k1=k1, b=b)


def hybrid_search(
    conn: psycopg.Connection[Any],
    collection: Collection,
    query: str,
    *,
    embedder: Embedder,
    k: int = 10,
    weight: float = 0.5,
    fusion: str = "convex",
    rrf_k: int = 60,
    candidates: int = 100,
    keyword_ranker: str = "bm25",
    filters: SearchFilters | Mapping[str, Any] | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    vector: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Hybrid search: the union (full outer join) of the semantic top ``candidates`` and the
    keyword top ``candidates`` (BM25 or ts_rank_cd), fused (see ``fuse``), top ``k``.

    weight 1.0 is semantic only, 0.0 keyword only. When the query has no searchable words the
    keyword arm is empty and the result falls back to semantic ranking (``frame.attrs["notes"]``
    says so). Columns: rank, id, external_id, title, category, fused_score, semantic_score,
    semantic_rank, keyword_score, keyword_rank, source ("both" | "semantic only" | "keyword
    only"), snippet (HTML-escaped ts_headline with matched terms in <mark>), snippet_text
    (plain), distance, content. ``vector`` skips embedding the query (already embedded).
    ``attrs["keyword_path"]`` names the postings that answered BM25 ("packed postings",
    "impact-ordered postings"), None when the exact path scored the matching rows.
    """
    ranker, cands = _query_candidates(
        conn, collection, query, embedder=embedder, k=k, keyword_ranker=keyword_ranker,
        candidates=candidates, filters=filters, k1=k1, b=b, vector=vector)
    col = cands.columns
    order, fused = fuse(cands, weight=weight, fusion=fusion, rrf_k=rrf_k,
                        keyword_ranker=ranker, fallback_to_semantic=True)
    notes = list(cands.notes)
    if not cands.lexemes and weight < 1.0:
        notes[0] += " Showing the semantic ranking."
    top = order[:k]
    keys = col["key"][top]
    details = _details(conn, collection, list(keys), query)
    rows = [details[key] for key in keys]
    sem_rank = col["semantic_rank"][top]
    kw_rank = col[f"{ranker}_rank"][top]
    in_sem, in_kw = ~np.isnan(sem_rank), ~np.isnan(kw_rank)
    snippets = [r[4] for r in rows]
    out = pd.DataFrame({
        "rank": np.arange(1, len(top) + 1),
        "id": col["id"][top],
        "external_id": [r[0] for r in rows],
        "title": [r[1] for r in rows],
        "category": [r[3] for r in rows],
        "fused_score": fused[top],
        "semantic_score": col["semantic_score"][top],
        "semantic_rank": pd.array(sem_rank, dtype="Int64"),
        "keyword_score": col[f"{ranker}_score"][top],
        "keyword_rank": pd.array(kw_rank, dtype="Int64"),
        "source": np.where(in_sem & in_kw, "both",
                           np.where(in_sem, "semantic only", "keyword only")),
        "snippet": [_snippet_html(x) for x in snippets],
        "snippet_text": [x.replace(_MARK_START, "").replace(_MARK_STOP, "") for x in snippets],
        "distance": col["distance"][top],
        "content": [r[2] for r in rows],
    }, columns=HYBRID_COLUMNS)
    out.attrs["notes"] = notes
    out.attrs["lexemes"] = cands.lexemes
    out.attrs["candidates"] = len(col["key"])
    out.attrs["keyword_path"] = cands.work.get("path")
    return out


def _details(
    conn: psycopg.Connection[Any], collection: Collection, keys: list[Any], query: str
) -> dict[Any, tuple[str, str, str, str | None, str]]:
    """external id, title, content, category and highlighted snippet per id, for the top k."""
    if not keys:
        return {}
    c = collection
    statement = sql.SQL(
        "WITH tq AS (SELECT (SELECT string_agg(array_to_tsvector(ARRAY[u.lexeme])::text, ' | ')"
        "::tsquery FROM (SELECT DISTINCT lexeme FROM unnest(to_tsvector(%(cfg)s::regconfig, "
        "%(q)s))) u) AS q) "
        "SELECT {id}, {ext}::text, coalesce({title}::text, ''), {content}::text, {cat}::text, "
        "coalesce(ts_headline(%(cfg)s::regconfig, {content}::text, (SELECT q FROM tq), %(opts)s),"
        " left({content}::text, 240)) "
        "FROM {table} t WHERE {id} = ANY(%(keys)s)").format(
        id=sql.Identifier("t", c.id_column),
        ext=c.column(c.external_id_column or c.id_column),
        title=c.column(c.title_column),
        content=sql.Identifier("t", c.content_column),
        cat=c.column(c.category_column),
        table=c.table,
    )
    rows = conn.execute(statement, {"cfg": c.text_config, "q": query, "keys": keys,
                                    "opts": _HEADLINE_OPTIONS}).fetchall()
    return {r[0]: (r[1], r[2], r[3] or "", r[4], _with_ellipses(r[5] or "", r[3] or ""))
            for r in rows}


_FRAGMENT_DELIMITER = " … "
_SENTENCE_END = (".", "!", "?", "…", ":", ";", ")", '"')


def _with_ellipses(snippet: str, content: str) -> str:
    """The snippet with "…" where it leaves the document's text out: before it when it does
    not start the document, after it when it stops before the end mid-sentence (ts_headline
    marks the gaps between fragments, not the ends)."""
    plain = snippet.replace(_MARK_START, "").replace(_MARK_STOP, "")
    fragments = [" ".join(f.split()) for f in plain.split(_FRAGMENT_DELIMITER.strip())]
    text = " ".join(content.split())
    if not fragments or not fragments[0] or not text:
        return snippet
    out = snippet.strip()
    if not text.startswith(fragments[0]):
        out = "… " + out
    if not text.endswith(fragments[-1]) and not fragments[-1].endswith(_SENTENCE_END):
        out += " …"
    return out


def _snippet_html(text: str) -> str:
    return html.escape(text).replace(_MARK_START, "<mark>").replace(_MARK_STOP, "</mark>")


@dataclass
class Comparison:
    """Semantic, keyword and hybrid top-k for one query, from one candidate fetch."""

    semantic: pd.DataFrame
    keyword: pd.DataFrame
    hybrid: pd.DataFrame
    movement: pd.DataFrame  # per document in any list: its rank in each, and how far it moved
    overlap: dict[str, int]
    notes: list[str]


def compare_rankings(
    conn: psycopg.Connection[Any],
    collection: Collection,
    query: str,
    *,
    embedder: Embedder,
    k: int = 10,
    weight: float = 0.5,
    fusion: str = "convex",
    rrf_k: int = 60,
    candidates: int = 100,
    keyword_ranker: str = "bm25",
    filters: SearchFilters | Mapping[str, Any] | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
) -> Comparison:
    """Side by side: the semantic, keyword and hybrid top-k, their pairwise overlap and, per
    document in any top-k, its rank in each ranking and how far hybrid moved it from each arm.

    The ranks are over all the candidates, as ``hybrid_search`` reports them (an arm's own rank
    in its top ``candidates``; the hybrid rank in the whole fused order), so a document at
    keyword rank 15 shows 15, not a gap; a rank is missing only where the document is not in
    that arm's candidates."""
    ranker, cands = _query_candidates(
        conn, collection, query, embedder=embedder, k=k, keyword_ranker=keyword_ranker,
        candidates=candidates, filters=filters, k1=k1, b=b)
    frame = cands.frame
    lists: dict[str, np.ndarray] = {}
    hybrid_order = np.array([], dtype=np.int64)
    for name, w in (("semantic", 1.0), ("keyword", 0.0), ("hybrid", weight)):
        order, _ = fuse(frame, weight=w, fusion=fusion, rrf_k=rrf_k, keyword_ranker=ranker,
                        fallback_to_semantic=name == "hybrid")
        lists[name] = order[:k]
        if name == "hybrid":
            hybrid_order = order
    keys = list(dict.fromkeys(frame["key"].iloc[np.concatenate(list(lists.values()))]))
    details = _details(conn, collection, keys, query)

    def table(order: np.ndarray) -> pd.DataFrame:
        rows = frame.iloc[order]
        return pd.DataFrame({
            "rank": np.arange(1, len(rows) + 1),
            "id": rows["id"].to_numpy(),
            "title": [details[key][1] or details[key][0] for key in rows["key"]],
        })

    pos = {name: {int(i): r for r, i in enumerate(order, start=1)} for name, order in lists.items()}
    everyone = list(dict.fromkeys(int(i) for o in lists.values() for i in o))
    hybrid_rank = {int(i): r for r, i in enumerate(hybrid_order, start=1)}

    def arm_rank(column: str) -> pd.arrays.IntegerArray:
        values = frame[column].to_numpy(dtype=np.float64)[everyone]
        return pd.array([None if np.isnan(v) else int(v) for v in values], dtype="Int64")

    movement = pd.DataFrame({
        "id": [frame["id"].iloc[i] for i in everyone],
        "title": [details[frame["key"].iloc[i]][1] or details[frame["key"].iloc[i]][0]
                  for i in everyone],
        "hybrid_rank": pd.array([hybrid_rank.get(i) for i in everyone], dtype="Int64"),
        "semantic_rank": arm_rank("semantic_rank"),
        "keyword_rank": arm_rank(f"{ranker}_rank"),
    })
    movement["moved_vs_semantic"] = movement["semantic_rank"] - movement["hybrid_rank"]
    movement["moved_vs_keyword"] = movement["keyword_rank"] - movement["hybrid_rank"]
    movement = movement.sort_values(["hybrid_rank", "semantic_rank", "keyword_rank"],
                                    na_position="last").reset_index(drop=True)
    sets = {n: set(pos[n]) for n in pos}
    overlap = {
        "semantic & keyword": len(sets["semantic"] & sets["keyword"]),
        "semantic & hybrid": len(sets["semantic"] & sets["hybrid"]),
        "keyword & hybrid": len(sets["keyword"] & sets["hybrid"]),
        "all three": len(sets["semantic"] & sets["keyword"] & sets["hybrid"]),
    }
    return Comparison(table(lists["semantic"]), table(lists["keyword"]), table(lists["hybrid"]),
                      movement, overlap, cands.notes)
