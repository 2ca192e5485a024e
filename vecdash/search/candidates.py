"""Both arms' candidates for one query with their raw scores, read in one snapshot: the
statistics, the pruning, the arms' statement (and BM25's second pass), then the columns."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg

from vecdash.bm25.packed_search import STALE, PackedArm, packed_bm25
from vecdash.bm25.postings import (
    DRIFT_REBUILD,
    forget_all_cached,
    postings_relid,
    postings_table,
)
from vecdash.bm25.pruning import (
    TermStats,
    match_query,
    prune_threshold,
    second_pass_query,
    term_stats,
)
from vecdash.bm25.statistics import DEFAULT_B, DEFAULT_K1, check_parameters, ensure_bm25
from vecdash.db import outside_transaction
from vecdash.errors import InvalidInput
from vecdash.search.arms import ArmQuery, KeywordRanker, arm_rows, check_keyword_ranker
from vecdash.search.filters import SearchFilters
from vecdash.search.fusion import id_ranks, ranks
from vecdash.statement_timeout import explains_timeouts
from vecdash.text_checks import check_text

if TYPE_CHECKING:
    from vecdash.collections import Collection

MAX_CANDIDATES = 1000
MAX_QUERY_LEXEMES = 32  # keyword arms of a longer query: its rarest lexemes (see fetch_candidates)


@dataclass
class Candidates:
    """Both arms' candidates for one query with their raw scores: one row per document in the
    union (full outer join) of the arms. ``columns`` (numpy arrays, also as the DataFrame
    ``frame``): key (the id as stored), id (text), distance, semantic_score, semantic_rank, and
    per keyword ranker <name>_score, <name>_rank (NaN where the document is not in that arm).
    Ranks start at 1."""

    columns: dict[str, np.ndarray]
    lexemes: list[str]
    keyword_rankers: tuple[KeywordRanker, ...]
    stats_on_the_fly: bool
    notes: list[str] = field(default_factory=list)
    # BM25 read from postings: which ("path") and what it did (postings read...); else empty.
    work: dict[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The columns as a DataFrame (built on first use: the search path reads the arrays)."""
        return pd.DataFrame(self.columns)


@dataclass(frozen=True)
class _LexemeCap:
    """A long query's keyword arms rank by ``keep``, ``of`` its lexemes."""

    keep: list[str]
    of: int


@explains_timeouts("The search")
def fetch_candidates(
    conn: psycopg.Connection[Any],
    collection: Collection,
    query: str,
    vector: Sequence[float] | np.ndarray | None,
    *,
    candidates: int = 100,
    keyword_rankers: Sequence[KeywordRanker] = ("bm25",),
    filters: SearchFilters | Mapping[str, Any] | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    prune: bool = True,
    max_lexemes: int | None = MAX_QUERY_LEXEMES,
) -> Candidates:
    """One SQL statement (one round trip, in one transaction) for both arms: the semantic top
    ``candidates`` (skipped when ``vector`` is None) and, per keyword ranker, the keyword top
    ``candidates`` among rows matching any of the query's lexemes (GIN index), full-outer-joined.

    With filters, pgvector's iterative index scans are switched on for the transaction (SET
    LOCAL hnsw/ivfflat.iterative_scan = relaxed_order) so a filtered search still returns
    ``candidates`` rows when that many match; hnsw.ef_search is raised to the depth when lower.

    BM25 with stored statistics prunes exactly when the query's lexemes match many rows, with a
    second pass when the first may have missed rows (see vecdash.bm25.pruning): the top
    ``candidates`` and their scores are the same as without pruning (``prune=False``).

    A collection that keeps BM25 postings (vecdash.bm25.postings), searched with BM25 alone at
    the default k1 / b without filters (and ``prune``), is answered by one statement that reads
    the statistics and the postings itself (vecdash.bm25.postings_query): the same top and
    scores, no snapshot or second pass needed; ``Candidates.work`` says what it read. Otherwise
    the path above, with a note when postings exist but could not serve the search.

    A query with more than ``max_lexemes`` distinct lexemes (a pasted paragraph) is ranked by the
    keyword arms over ``max_lexemes`` of them: the rarest in the collection (largest idf, as
    Lucene's MoreLikeThis picks a long text's most distinctive terms) when it keeps statistics,
    else the first in the query. Scoring costs time in proportion to the query's lexemes (with
    ts_rank_cd, more than that), and nearly every row matches a long text's common words. The
    notes say so. None: no limit.
    """
    _check_options(candidates, keyword_rankers)
    check_text(query, "query")
    check_parameters(k1, b)
    flt = SearchFilters.of(filters)
    c = collection
    rankers: tuple[KeywordRanker, ...] = tuple(dict.fromkeys(keyword_rankers))
    relid = ensure_bm25(conn, c) if rankers else None
    on_the_fly = "bm25" in rankers and relid is None
    stale_note = None
    if relid is not None and rankers == ("bm25",) and prune and not flt.active:
        packed = _from_packed(conn, c, query, vector, relid, flt, candidates=candidates, k1=k1,
                              b=b, max_lexemes=max_lexemes)
        if isinstance(packed, Candidates):
            return packed
        if packed == STALE:
            stale_note = (f"BM25 scored the matching rows (exact, slower): {c.name!r} was written "
                          "since its packed postings were built. The next load brings them up to date, "
                          f"or `python -m vecdash postings --pack --collection {c.name}`.")
    kept = relid is not None and "bm25" in rankers and postings_relid(conn, c) == relid
    if kept and prune and rankers == ("bm25",) and not flt.active and (k1, b) == (
            DEFAULT_K1, DEFAULT_B):
        assert relid is not None
        got = _from_postings(conn, ArmQuery(
            c, query, vector, rankers, flt, None, False, keep=None, match=None,
            candidates=candidates, k1=k1, b=b, postings=postings_table(c, relid), relid=relid,
            max_lexemes=max_lexemes))
        if got is not None:
            return got
    # One snapshot for the statistics and every pass: scores, pruning bounds and the rows
    # they cover agree even while another connection loads or deletes documents.
    with _one_snapshot(conn):
        terms = term_stats(conn, c, relid, query) if relid is not None else None
        terms, cap = _capped(conn, c, query, terms, max_lexemes=max_lexemes,
                             from_query=bool(rankers) and relid is None)
        pruning = (_pruning(terms, candidates=candidates, k1=k1, b=b)
                   if terms is not None and prune and "bm25" in rankers else None)
        first = ArmQuery(c, query, vector, rankers, flt, terms, on_the_fly,
                         keep=cap.keep if cap else None,
                         match=pruning[1] if pruning else None,
                         candidates=candidates, k1=k1, b=b)
        arms, rows = arm_rows(conn, first)
        lexemes, scores = _scores_by_arm(arms, rows)
        if pruning is not None:
            scores["bm25"] = _exact_bm25_top(conn, first, scores["bm25"], theta=pruning[0])
    columns = _columns(c.metric, arms, scores)
    notes = _notes(c, lexemes, cap, stored=terms is not None, on_the_fly=on_the_fly,
                   rankers=rankers) + ([stale_note] if stale_note else [])
    if kept and prune:
        why = ("filters" if flt.active else
               f"k1={k1:g}, b={b:g}" if (k1, b) != (DEFAULT_K1, DEFAULT_B) else
               "ts_rank_cd" if "ts_rank_cd" in rankers else None)
        if why is not None:
            notes.append(f"BM25 scored every matching row (exact) rather than reading "
                         f"{c.name!r}'s impact-ordered postings, which serve the default k1="
                         f"{DEFAULT_K1:g}, b={DEFAULT_B:g} without filters ({why} here).")
    return Candidates(columns, lexemes, rankers, on_the_fly, notes)


def _from_packed(conn: psycopg.Connection[Any], c: Collection, query: str,
                 vector: Sequence[float] | np.ndarray | None, relid: int, flt: SearchFilters, *,
                 candidates: int, k1: float, b: float,
                 max_lexemes: int | None) -> Candidates | str | None:
    """BM25 from the collection's packed postings (vecdash.bm25.packed) and the semantic arm in
    its own statement; STALE or None when there is no current snapshot (the exact path then)."""
    packed = packed_bm25(conn, c, relid, query, candidates=candidates, k1=k1, b=b,
                         max_lexemes=max_lexemes)
    if not isinstance(packed, PackedArm):
        return packed
    arms, scores = ["bm25"], {"bm25": dict(packed.scores)}
    if vector is not None:
        sem_arms, rows = arm_rows(conn, ArmQuery(
            c, query, vector, (), flt, None, False, keep=None, match=None,
            candidates=candidates, k1=k1, b=b))
        scores["sem"] = _scores_by_arm(sem_arms, rows)[1]["sem"]
        arms = ["sem", "bm25"]
    notes = _notes(c, packed.lexemes, None, stored=True, on_the_fly=False, rankers=("bm25",))
    out = Candidates(_columns(c.metric, arms, scores), packed.lexemes, ("bm25",), False, notes)
    out.work = {"path": "packed postings", "postings read": packed.postings_read,
                "documents scored": packed.documents_scored}
    return out


def _from_postings(conn: psycopg.Connection[Any], q: ArmQuery) -> Candidates | None:
    """Both arms in one statement, BM25's from the collection's postings (see
    vecdash.bm25.postings_query); None when the postings went meanwhile (the exact path then)."""
    try:
        arms, rows = arm_rows(conn, q)
    except psycopg.errors.UndefinedTable:
        forget_all_cached()
        return None
    lexemes, scores = _scores_by_arm(arms, rows)
    info = next(r[-1] for r in rows if r[0] is None) or {}
    cap = None
    occurring, kept = int(info.get("occurring") or 0), list(info.get("kept") or [])
    if q.max_lexemes is not None and occurring > q.max_lexemes:
        lexemes, cap = kept, _LexemeCap(kept, occurring)
    c = q.collection
    notes = _notes(c, lexemes, cap, stored=True, on_the_fly=False, rankers=q.rankers)
    drift = float(info.get("drift") or 1.0)
    if drift > DRIFT_REBUILD:
        notes.append(f"{c.name!r}'s average document is {drift:.1f}x as long as when its BM25 "
                     "postings were built: results stay exact but read more postings; "
                     f"`python -m vecdash postings --rebuild --collection {c.name}` fixes it.")
    out = Candidates(_columns(c.metric, arms, scores), lexemes, q.rankers, False, notes)
    out.work = {**info, "path": "impact-ordered postings"}
    return out


def _check_options(candidates: int, keyword_rankers: Sequence[str]) -> None:
    if not isinstance(candidates, int) or candidates < 1 or candidates > MAX_CANDIDATES:
        raise InvalidInput(
            f"The candidate depth must be between 1 and {MAX_CANDIDATES}; got {candidates!r}.")
    for r in keyword_rankers:
        check_keyword_ranker(r)


@contextlib.contextmanager
def _one_snapshot(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run the enclosed reads in one REPEATABLE READ, read-only transaction, unless ``conn`` is
    not in autocommit mode or is in a transaction already (the caller's then applies)."""
    if not outside_transaction(conn):
        yield
        return
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _capped(conn: psycopg.Connection[Any], c: Collection, query: str, terms: TermStats | None,
            *, max_lexemes: int | None,
            from_query: bool) -> tuple[TermStats | None, _LexemeCap | None]:
    """A long query's lexemes for the keyword arms (see fetch_candidates): its rarest ``terms``,
    or without statistics (``from_query``) its first lexemes; no cap when it is not long."""
    if max_lexemes is not None and terms is not None and len(terms.lexemes) > max_lexemes:
        rarest = terms.rarest(max_lexemes)
        return rarest, _LexemeCap(rarest.lexemes, len(terms.lexemes))
    if max_lexemes is not None and from_query:
        return terms, _first_lexemes(conn, c, query, max_lexemes)
    return terms, None


def _first_lexemes(conn: psycopg.Connection[Any], c: Collection, query: str,
                   n: int) -> _LexemeCap | None:
    """The first ``n`` distinct lexemes of ``query`` (by position) and how many it has; None
    when it has no more than ``n``."""
    row = conn.execute(
        "SELECT array_agg(u.lexeme ORDER BY u.positions[1], u.lexeme) "
        "FROM unnest(to_tsvector(%s::regconfig, %s)) u", (c.text_config, query)).fetchone()
    lexemes = list(row[0] or []) if row else []
    return _LexemeCap(lexemes[:n], len(lexemes)) if len(lexemes) > n else None


def _pruning(terms: TermStats, *, candidates: int, k1: float,
             b: float) -> tuple[float, str] | None:
    """The first pass's threshold and the tsquery of the rows that can reach it; None when BM25
    scores every matching row (pruning cannot pay, or every row can reach the threshold)."""
    theta = prune_threshold(terms, candidates=candidates, k1=k1, b=b)
    if theta is None:
        return None
    match = match_query(terms, theta, k1=k1, b=b)
    return None if match is None else (theta, match)


def _scores_by_arm(
    arms: list[str], rows: list[tuple[Any, ...]]
) -> tuple[list[str], dict[str, dict[Any, float]]]:
    """The query's lexemes and, per arm, the raw score of each of its rows."""
    # The one row with a NULL id carries the query's lexemes even when no arm found anything.
    lexemes = list(next(r[-2] for r in rows if r[0] is None) or [])
    found = [r for r in rows if r[0] is not None]
    scores = {arm: {r[0]: r[i] for r in found if r[i] is not None}
              for i, arm in enumerate(arms, start=1)}
    return lexemes, scores


def _exact_bm25_top(conn: psycopg.Connection[Any], first: ArmQuery, found: dict[Any, float], *,
                    theta: float) -> dict[Any, float]:
    """The pruned first pass's BM25 top ``found``, merged with a second pass's when the first
    may have missed rows of the exact top (see vecdash.bm25.pruning)."""
    assert first.terms is not None and first.match is not None
    wider = second_pass_query(first.terms, theta, first.match, list(found.values()),
                              candidates=first.candidates, k1=first.k1, b=first.b)
    if wider is None:
        return found
    _, again = arm_rows(conn, dataclasses.replace(first, vector=None, rankers=("bm25",),
                                                  match=wider))
    merged = found | {r[0]: r[1] for r in again if r[0] is not None and r[1] is not None}
    return dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:first.candidates])


def _similarity(metric: str, distance: np.ndarray) -> np.ndarray:
    """Bigger is closer: cosine similarity, inner product, or negative L2 distance."""
    if metric == "cosine":
        return 1.0 - distance
    return -distance


def _columns(metric: str, arms: list[str],
             scores: dict[str, dict[Any, float]]) -> dict[str, np.ndarray]:
    """``Candidates.columns`` from each arm's scores (keys in order of first appearance)."""
    keys = list(dict.fromkeys(key for arm in arms for key in scores[arm]))
    ids = np.array([str(key) for key in keys], dtype=object)
    key_array = np.empty(len(keys), dtype=object)
    key_array[:] = keys
    # Ties within an arm in the order its SQL breaks them (ORDER BY score, id: 9 before 10), so
    # the top n of a deeper fetch is the top n fetched at depth n.
    id_rank = id_ranks(key_array)
    columns: dict[str, np.ndarray] = {"key": key_array, "id": ids}
    nan = np.full(len(keys), np.nan)
    columns.update(distance=nan, semantic_score=nan, semantic_rank=nan)
    for arm in arms:
        got = scores[arm]
        raw = np.array([got.get(key, np.nan) for key in keys], dtype=np.float64)
        if arm == "sem":
            columns["distance"] = raw
            columns["semantic_score"] = _similarity(metric, raw)
            columns["semantic_rank"] = ranks(columns["semantic_score"], id_rank)
        else:
            columns[f"{arm}_score"] = raw
            columns[f"{arm}_rank"] = ranks(raw, id_rank)
    return columns


def _notes(c: Collection, lexemes: list[str], cap: _LexemeCap | None, *, stored: bool,
           on_the_fly: bool, rankers: tuple[KeywordRanker, ...]) -> list[str]:
    notes = []
    if not lexemes:
        notes.append("The query has no searchable words (only stopwords or punctuation), so the "
                     "keyword arm is empty.")
    if cap is not None:
        counted, used = (
            (f" that occur in {c.name!r}", f"the {len(cap.keep)} rarest of them, the most "
             "distinctive (as Lucene's MoreLikeThis does with a long text)") if stored
            else ("", f"the first {len(cap.keep)} of them"))
        notes.append(f"The query has {cap.of} distinct words{counted}; the keyword arm ranks by "
                     f"{used}, since scoring time grows with a query's words.")
    if on_the_fly or (rankers and not c.tsv_column):
        notes.append(f"{c.name!r} has no stored tsvector with BM25 statistics, so the keyword "
                     "arm runs to_tsvector and the statistics on the fly (a full table scan per "
                     "query).")
    return notes
