"""Search: semantic top-k over a collection's vector column, and hybrid search (semantic + a
BM25 or ts_rank_cd keyword arm, fused by convex combination or reciprocal rank fusion)."""

from __future__ import annotations

import contextlib
import functools
import html
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from vecdash.collections import Collection
from vecdash.embedders import Embedder
from vecdash.errors import InvalidInput

MAX_K = 1000
RESULT_COLUMNS = ["rank", "id", "external_id", "title", "content", "category", "distance"]


def query_vector(
    collection: Collection, vector: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Validate a query vector against the collection (dimension, finite) and normalise it for
    cosine collections."""
    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    if arr.shape[0] != collection.dimension:
        raise InvalidInput(
            f"The query vector has {arr.shape[0]} dimensions but {collection.name!r} stores "
            f"{collection.dimension}. Embed the query with the collection's model "
            f"({collection.embedder}/{collection.model})."
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidInput("The query vector contains NaN or infinite values.")
    if collection.metric == "cosine":
        norm = float(np.linalg.norm(arr))
        if norm == 0:
            raise InvalidInput("The query vector is all zeros; cosine distance is undefined for it.")
        arr = arr / norm
    return arr


def embed_query(collection: Collection, text: str, *, embedder: Embedder) -> np.ndarray:
    """Embed a query text with ``embedder`` after checking it fits the collection."""
    if not text or not text.strip():
        raise InvalidInput("The query is empty. Type a few words to search for.")
    if embedder.dimension and embedder.dimension != collection.dimension:
        raise InvalidInput(
            f"{embedder.provider}/{embedder.model} makes {embedder.dimension}-dimensional vectors "
            f"but {collection.name!r} stores {collection.dimension}. Search it with "
            f"{collection.embedder}/{collection.model}."
        )
    return query_vector(collection, embedder.embed([text.strip()])[0])


def check_k(k: int) -> int:
    if not isinstance(k, int) or k < 1 or k > MAX_K:
        raise InvalidInput(f"top-k must be between 1 and {MAX_K}; got {k!r}.")
    return k


def semantic_search(
    conn: psycopg.Connection[Any],
    collection: Collection,
    vector: Sequence[float] | np.ndarray,
    *,
    k: int = 10,
) -> pd.DataFrame:
    """The k nearest rows to ``vector`` by the collection's metric, nearest first.

    Columns: rank, id, external_id, title, content, category, distance.
    """
    check_k(k)
    vec = query_vector(collection, vector)
    c = collection
    query = sql.SQL(
        "SELECT {id}::text, {ext}::text, {title}::text, {content}::text, {category}::text, "
        "{vec} {op} %(q)s::{cast} AS distance FROM {table} ORDER BY distance LIMIT %(k)s"
    ).format(
        id=sql.Identifier(c.id_column),
        ext=c.column(c.external_id_column or c.id_column),
        title=c.column(c.title_column),
        content=sql.Identifier(c.content_column),
        category=c.column(c.category_column),
        vec=sql.Identifier(c.vector_column),
        op=c.distance_operator,
        cast=c.vector_cast,
        table=c.table,
    )
    rows = conn.execute(query, {"q": vec, "k": k}).fetchall()
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS[1:])
    frame.insert(0, "rank", range(1, len(frame) + 1))
    frame["distance"] = frame["distance"].astype(float)
    return frame


def search_text(
    conn: psycopg.Connection[Any],
    collection: Collection,
    text: str,
    *,
    embedder: Embedder,
    k: int = 10,
) -> pd.DataFrame:
    """Embed ``text`` and return the semantic top-k (see semantic_search)."""
    return semantic_search(conn, collection, embed_query(collection, text, embedder=embedder), k=k)


# --------------------------------------------------------------------------------------------
# Hybrid search: a semantic arm and a keyword arm (BM25 or ts_rank_cd), fused in numpy.
# --------------------------------------------------------------------------------------------

KeywordRanker = Literal["bm25", "ts_rank_cd"]
Fusion = Literal["convex", "rrf"]
KEYWORD_RANKERS: tuple[KeywordRanker, ...] = ("bm25", "ts_rank_cd")
FUSIONS: tuple[Fusion, ...] = ("convex", "rrf")
MAX_CANDIDATES = 1000
MAX_QUERY_LEXEMES = 32  # keyword arms of a longer query: its rarest lexemes (see fetch_candidates)
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


def _filter_sql(
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
        params["f_categories"] = list(filters.categories)
        parts.append(sql.SQL("{}::text = ANY(%(f_categories)s)").format(
            need(c.category_column, "category")))
    for i, (key, value) in enumerate(filters.metadata):
        if not key:
            raise InvalidInput("A metadata filter has an empty key. Type the key to match.")
        params[f"f_mkey{i}"] = key
        params[f"f_mval{i}"] = value
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


def _doc_tsv(collection: Collection, alias: str) -> sql.Composable:
    """The tsvector of a row: the stored column, or to_tsvector on the fly for attached tables."""
    c = collection
    if c.tsv_column:
        return sql.Identifier(alias, c.tsv_column)
    text: sql.Composable = sql.SQL("coalesce({}::text, '')").format(
        sql.Identifier(alias, c.content_column))
    if c.title_column:
        text = sql.SQL("coalesce({}::text, '') || ' ' || ").format(
            sql.Identifier(alias, c.title_column)) + text
    return sql.SQL("to_tsvector(%(cfg)s::regconfig, {})").format(text)


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

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The columns as a DataFrame (built on first use: the search path reads the arrays)."""
        return pd.DataFrame(self.columns)


def _similarity(metric: str, distance: np.ndarray) -> np.ndarray:
    """Bigger is closer: cosine similarity, inner product, or negative L2 distance."""
    if metric == "cosine":
        return 1.0 - distance
    return -distance


def _check_options(candidates: int, keyword_rankers: Sequence[str]) -> None:
    if not isinstance(candidates, int) or candidates < 1 or candidates > MAX_CANDIDATES:
        raise InvalidInput(
            f"The candidate depth must be between 1 and {MAX_CANDIDATES}; got {candidates!r}.")
    for r in keyword_rankers:
        if r not in KEYWORD_RANKERS:
            raise InvalidInput(
                f"Unknown keyword ranker {r!r}; choose one of {', '.join(KEYWORD_RANKERS)}.")


def fetch_candidates(
    conn: psycopg.Connection[Any],
    collection: Collection,
    query: str,
    vector: Sequence[float] | np.ndarray | None,
    *,
    candidates: int = 100,
    keyword_rankers: Sequence[KeywordRanker] = ("bm25",),
    filters: SearchFilters | Mapping[str, Any] | None = None,
    k1: float = 1.2,
    b: float = 0.75,
    prune: bool = True,
    max_lexemes: int | None = MAX_QUERY_LEXEMES,
) -> Candidates:
    """One SQL statement (one round trip, in one transaction) for both arms: the semantic top
    ``candidates`` (skipped when ``vector`` is None) and, per keyword ranker, the keyword top
    ``candidates`` among rows matching any of the query's lexemes (GIN index), full-outer-joined.

    With filters, pgvector's iterative index scans are switched on for the transaction (SET
    LOCAL hnsw/ivfflat.iterative_scan = relaxed_order) so a filtered search still returns
    ``candidates`` rows when that many match; hnsw.ef_search is raised to the depth when lower.

    BM25 with stored statistics prunes exactly when the query's lexemes match many rows (see
    ``_prune_threshold``): a row whose lexemes' score bounds (from each lexeme's idf, largest
    term frequency and shortest document) sum to less than a threshold cannot reach the top, so
    the GIN scan asks only for the combinations of lexemes that can (a tsquery of ANDs). If fewer
    than ``candidates`` scored rows reach the threshold, the keyword arm runs once more, with the
    threshold lowered to the score of its ``candidates``-th row (or over every matching row) but
    only over the rows the first pass did not match, and the two tops merge, which is then
    exact. The top ``candidates`` and their scores are the same as without pruning
    (``prune=False``).

    A query with more than ``max_lexemes`` distinct lexemes (a pasted paragraph) is ranked by the
    keyword arms over ``max_lexemes`` of them: the rarest in the collection (largest idf, as
    Lucene's MoreLikeThis picks a long text's most distinctive terms) when it keeps statistics,
    else the first in the query. Scoring costs time in proportion to the query's lexemes (with
    ts_rank_cd, more than that), and nearly every row matches a long text's common words. The
    notes say so. None: no limit.
    """
    from vecdash.bm25 import ensure_bm25

    _check_options(candidates, keyword_rankers)
    if not isinstance(query, str):
        raise InvalidInput("The query must be text.")
    if not (0 < k1 <= 10) or not (0 <= b <= 1):
        raise InvalidInput(f"BM25 needs 0 < k1 <= 10 and 0 <= b <= 1; got k1={k1}, b={b}.")
    flt = SearchFilters.of(filters)
    c = collection
    rankers: tuple[KeywordRanker, ...] = tuple(dict.fromkeys(keyword_rankers))
    relid = ensure_bm25(conn, c) if rankers else None
    on_the_fly = "bm25" in rankers and relid is None
    # One snapshot for the statistics and every pass: scores, pruning bounds and the rows
    # they cover agree even while another connection loads or deletes documents.
    with _one_snapshot(conn):
        terms = _term_stats(conn, c, relid, query) if relid is not None else None
        # A long query: the lexemes the keyword arms rank by, of how many.
        keep: list[str] | None = None
        of = 0
        if max_lexemes is not None and terms is not None and len(terms.lexemes) > max_lexemes:
            of, terms = len(terms.lexemes), terms.rarest(max_lexemes)
            keep = terms.lexemes
        elif max_lexemes is not None and rankers and relid is None:
            keep, of = _first_lexemes(conn, c, query, max_lexemes)
        theta = (_prune_threshold(terms, candidates=candidates, k1=k1, b=b)
                 if terms is not None and prune and "bm25" in rankers else None)
        match = _match_query(terms, theta, k1=k1, b=b) if terms and theta is not None else None
        arms, rows = _arm_rows(conn, c, query, vector, rankers, flt, terms, on_the_fly, keep=keep,
                               match=match, candidates=candidates, k1=k1, b=b)
        # The one row with a NULL id carries the query's lexemes even when no arm found anything.
        lexemes = list(next(r[-1] for r in rows if r[0] is None) or [])
        rows = [r for r in rows if r[0] is not None]
        scores = {arm: {r[0]: r[i] for r in rows if r[i] is not None}
                  for i, arm in enumerate(arms, start=1)}
        if terms and theta is not None and match is not None:
            got = sorted(scores["bm25"].values(), reverse=True)
            # Every row left out scores below theta, so when ``candidates`` scored rows reach it the
            # top is exact. If not, the keyword arm runs once more: with the threshold lowered to the
            # score of the ``candidates``-th row found (then those rows reach it), or over every
            # matching row when the first pass found fewer; in both cases only over the rows the
            # first pass did not match.
            if len(got) < candidates or got[candidates - 1] < theta:
                wider = (_match_query(terms, got[candidates - 1], k1=k1, b=b)
                         if len(got) >= candidates else None)
                if wider is None:
                    wider = terms.any_tsquery()
                # The rows the first pass matched are scored already, and the ones it left out of
                # its top rank below that top: the second pass scores only rows it did not match
                # (the GIN index leaves those out), and the two tops merge.
                if match:  # empty when no set of lexemes could reach the first threshold
                    wider = f"({wider}) & !({match})"
                _, again = _arm_rows(conn, c, query, None, ("bm25",), flt, terms, False, keep=keep,
                                     match=wider, candidates=candidates, k1=k1, b=b)
                merged = scores["bm25"] | {r[0]: r[1] for r in again
                                           if r[0] is not None and r[1] is not None}
                best = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:candidates]
                scores["bm25"] = dict(best)
    keys = list(dict.fromkeys(key for arm in arms for key in scores[arm]))
    ids = np.array([str(key) for key in keys], dtype=object)
    id_rank = id_ranks(ids)
    key_array = np.empty(len(keys), dtype=object)
    key_array[:] = keys
    columns: dict[str, np.ndarray] = {"key": key_array, "id": ids}
    nan = np.full(len(keys), np.nan)
    columns.update(distance=nan, semantic_score=nan, semantic_rank=nan)
    for arm in arms:
        got_arm = scores[arm]
        raw = np.array([got_arm.get(key, np.nan) for key in keys], dtype=np.float64)
        if arm == "sem":
            columns["distance"] = raw
            columns["semantic_score"] = _similarity(c.metric, raw)
            columns["semantic_rank"] = _ranks(columns["semantic_score"], id_rank)
        else:
            columns[f"{arm}_score"] = raw
            columns[f"{arm}_rank"] = _ranks(raw, id_rank)
    notes = []
    if not lexemes:
        notes.append("The query has no searchable words (only stopwords or punctuation), so the "
                     "keyword arm is empty.")
    if keep is not None:
        counted, used = (
            (f" that occur in {c.name!r}", f"the {len(keep)} rarest of them, the most distinctive "
             "(as Lucene's MoreLikeThis does with a long text)") if terms is not None
            else ("", f"the first {len(keep)} of them"))
        notes.append(f"The query has {of} distinct words{counted}; the keyword arm ranks by "
                     f"{used}, since scoring time grows with a query's words.")
    if on_the_fly or (rankers and not c.tsv_column):
        notes.append(f"{c.name!r} has no stored tsvector with BM25 statistics, so the keyword "
                     "arm runs to_tsvector and the statistics on the fly (a full table scan per "
                     "query).")
    return Candidates(columns, lexemes, rankers, on_the_fly, notes)


@contextlib.contextmanager
def _one_snapshot(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run the enclosed reads in one REPEATABLE READ, read-only transaction, unless ``conn`` is
    not in autocommit mode or is in a transaction already (the caller's then applies)."""
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
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


def _arm_rows(
    conn: psycopg.Connection[Any],
    c: Collection,
    query: str,
    vector: Sequence[float] | np.ndarray | None,
    rankers: tuple[KeywordRanker, ...],
    flt: SearchFilters,
    terms: TermStats | None,
    on_the_fly: bool,
    *,
    keep: list[str] | None,
    match: str | None,
    candidates: int,
    k1: float,
    b: float,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The arms' names and the statement's rows: (id, one score per arm (NULL when the row is
    not in that arm)..., NULL), plus one row (NULL, NULL..., the query's lexemes). BM25 scores
    with the stored statistics in ``terms`` (None: no query lexeme occurs in the collection),
    or computes them over the whole table when ``on_the_fly``. ``keep``: the only query lexemes
    the keyword arms use (None: all)."""
    from vecdash.bm25 import TSV_LENGTH, doc_length, term_frequency

    params: dict[str, Any] = {"cfg": c.text_config, "q": query, "cand": candidates,
                              "k1": float(k1), "b": float(b), "match": match, "keep": keep}
    where = _filter_sql(c, flt, params)
    tid = sql.Identifier("t", c.id_column)
    ctes: list[sql.Composable] = [sql.SQL(
        "tq AS MATERIALIZED (SELECT l.lexemes, (SELECT string_agg("
        "array_to_tsvector(ARRAY[x])::text, ' | ')::tsquery FROM unnest(l.lexemes) x) AS q "
        "FROM (SELECT array_agg(DISTINCT u.lexeme ORDER BY u.lexeme) AS lexemes "
        "FROM unnest(to_tsvector(%(cfg)s::regconfig, %(q)s)) u "
        "WHERE %(keep)s::text[] IS NULL OR u.lexeme = ANY(%(keep)s::text[])) l), "
        "mq AS MATERIALIZED (SELECT coalesce(%(match)s::tsquery, (SELECT q FROM tq)) AS q)")]
    arms: list[str] = []
    if vector is not None:
        params["v"] = query_vector(c, vector)
        ctes.append(sql.SQL(
            "sem AS MATERIALIZED (SELECT {tid} AS id, {vec} {op} %(v)s::{cast} AS score "
            "FROM {table} t WHERE true{where} ORDER BY score LIMIT %(cand)s)").format(
            tid=tid, vec=sql.Identifier("t", c.vector_column), op=c.distance_operator,
            cast=c.vector_cast, table=c.table, where=where))
        arms.append("sem")
    doc_tsv = _doc_tsv(c, "t")
    if "bm25" in rankers and not on_the_fly:
        if terms is None:
            ctes.append(sql.SQL("bm25 AS (SELECT {tid} AS id, NULL::float8 AS score "
                                "FROM {table} t WHERE false)").format(tid=tid, table=c.table))
        else:
            # One pass over the matching rows, each scored as it is read: per lexeme its term
            # frequency from a ts_rank (see bm25.term_frequency) and its idf from the stored
            # statistics; the length from the ranks of all of them (see bm25.doc_length). The
            # subquery is kept apart (OFFSET 0) so each rank is computed once per row; the
            # arithmetic over them is cheap enough to repeat.
            lexq_params = [_tsquery_lexeme(x) for x in terms.lexemes]
            params.update(lexq=lexq_params, lexq_any=terms.any_tsquery(),
                          idf=[float(x) for x in terms.idf()], avglen=terms.avglen)
            n = len(terms.lexemes)
            lexq = [sql.SQL("(SELECT lexq[{}] FROM kq)").format(sql.Literal(i + 1))
                    for i in range(n)]
            ranks = sql.SQL(", ").join(
                sql.SQL("ts_rank(t.tsv, {})::float8 AS {}").format(q, sql.Identifier(f"r{i}"))
                for i, q in enumerate(lexq))
            tfs = [term_frequency(sql.SQL("s.{}").format(sql.Identifier(f"r{i}")))
                   for i in range(n)]
            score = sql.SQL(" + ").join(
                sql.SQL("(SELECT idf[{i}] FROM kq) * {tf} * (%(k1)s + 1) / ({tf} + "
                        "%(k1)s * (1 - %(b)s + %(b)s * s.len / %(avglen)s))").format(
                    i=sql.Literal(i + 1), tf=tf)
                for i, tf in enumerate(tfs))
            ctes.append(sql.SQL(
                "kq AS MATERIALIZED (SELECT %(lexq)s::tsquery[] AS lexq, %(idf)s::float8[] AS idf,"
                " %(lexq_any)s::tsquery AS q), "
                "bm25 AS MATERIALIZED (SELECT s.id, {score} AS score FROM (SELECT {tid} AS id, "
                "{ranks}, {len} AS len FROM {table} t "
                "WHERE t.tsv @@ (SELECT q FROM mq){where} OFFSET 0) s "
                "ORDER BY score DESC, s.id LIMIT %(cand)s)").format(
                score=score, tid=tid, ranks=ranks, table=c.table, where=where,
                len=doc_length(sql.SQL("t.tsv"), sql.SQL("(SELECT q FROM kq)"))))
        arms.append("bm25")
    elif "bm25" in rankers:
        ctes.append(sql.SQL(
            "kcorpus AS MATERIALIZED (SELECT {tid} AS id, {tsv} AS tsv FROM {table} t), "
            "kdocs AS MATERIALIZED (SELECT k.id, k.tsv, {len}::float8 AS len FROM kcorpus k "
            "JOIN {table} t ON {tid} = k.id WHERE k.tsv @@ (SELECT q FROM tq){where}), "
            "kstats AS (SELECT count(*)::float8 AS n, coalesce(nullif(avg({len}), 0), 1)"
            "::float8 AS avglen FROM kcorpus k), "
            "kdf AS (SELECT u.lexeme, count(*) AS df FROM kcorpus k, unnest(k.tsv) u "
            "WHERE u.lexeme = ANY((SELECT lexemes FROM tq)::text[]) GROUP BY u.lexeme), "
            "bm25 AS MATERIALIZED (SELECT d.id, sum(f.idf * u.tf * (%(k1)s + 1) / (u.tf + "
            "%(k1)s * (1 - %(b)s + %(b)s * d.len / s.avglen))) AS score "
            "FROM kdocs d CROSS JOIN kstats s "
            "CROSS JOIN LATERAL (SELECT x.lexeme, coalesce(array_length(x.positions, 1), 1)"
            "::float8 AS tf FROM unnest(ts_filter(setweight(d.tsv, 'A', (SELECT lexemes FROM tq)), "
            "'{{a}}')) x) u "
            "JOIN (SELECT kdf.lexeme, ln(1 + (s2.n - kdf.df + 0.5) / (kdf.df + 0.5)) AS idf "
            "      FROM kdf CROSS JOIN kstats s2) f ON f.lexeme = u.lexeme "
            "GROUP BY d.id ORDER BY score DESC, d.id LIMIT %(cand)s)").format(
            tid=tid, tsv=doc_tsv, table=c.table, where=where,
            len=sql.SQL(TSV_LENGTH).format(sql.SQL("k.tsv"))))
        arms.append("bm25")
    if "ts_rank_cd" in rankers:
        ctes.append(sql.SQL(
            "ts_rank_cd AS MATERIALIZED (SELECT {tid} AS id, "
            "ts_rank_cd({tsv}, (SELECT q FROM tq))::float8 AS score FROM {table} t "
            "WHERE {tsv} @@ (SELECT q FROM tq){where} ORDER BY score DESC, {tid} LIMIT %(cand)s)"
        ).format(tid=tid, tsv=doc_tsv, table=c.table, where=where))
        arms.append("ts_rank_cd")
    if not arms:
        raise InvalidInput("Nothing to search: give a query vector or a keyword ranker.")
    # Full outer join of every arm on the document id.
    select_scores = sql.SQL(", ").join(
        sql.SQL("{}.score").format(sql.Identifier(a)) for a in arms)
    join: sql.Composable = sql.Identifier(arms[0])
    seen = [arms[0]]
    for a in arms[1:]:
        key = sql.SQL("coalesce({})").format(sql.SQL(", ").join(
            sql.SQL("{}.id").format(sql.Identifier(s)) for s in seen)) if len(seen) > 1 else \
            sql.SQL("{}.id").format(sql.Identifier(seen[0]))
        join = sql.SQL("{} FULL OUTER JOIN {} ON {}.id = {}").format(
            join, sql.Identifier(a), sql.Identifier(a), key)
        seen.append(a)
    id_expr = sql.SQL("coalesce({})").format(sql.SQL(", ").join(
        sql.SQL("{}.id").format(sql.Identifier(a)) for a in arms))
    statement = sql.SQL(
        "WITH {ctes} SELECT {id_expr}, {scores}, NULL FROM {join} "
        "UNION ALL SELECT NULL, {nulls}, (SELECT lexemes FROM tq)").format(
        ctes=sql.SQL(", ").join(ctes), id_expr=id_expr, scores=select_scores, join=join,
        nulls=sql.SQL(", ").join(sql.SQL("NULL") for _ in arms))
    # One round trip: the settings and the statement go together in pipeline mode.
    with conn.pipeline(), conn.transaction():
        if vector is not None:
            conn.execute(
                "SELECT set_config('hnsw.ef_search', greatest(coalesce(nullif(current_setting("
                "'hnsw.ef_search', true), ''), '40')::int, least(%(cand)s, 1000))::text, true), "
                "set_config('hnsw.iterative_scan', %(mode)s, true), "
                "set_config('ivfflat.iterative_scan', %(mode)s, true)",
                {"cand": candidates, "mode": "relaxed_order" if flt.active else "off"},
            )
        cur = conn.execute(statement, params)
    return arms, cur.fetchall()


MAXSCORE_MIN_MATCHES = 2000  # below this many matching rows (summed df), scoring them all is cheap
PRUNE_MAX_TERMS = 12  # combinations of lexemes are enumerated (2^n); longer queries: MaxScore
MAXSCORE_FIRST_ROWS = 20  # a long query's first pass: about this many rows per candidate
FIRST_PASS_EXPECTED = 5  # the first threshold: rows per candidate expected to reach it
PRUNE_MAX_CLAUSES = 64  # beyond this many ANDs the tsquery is an OR of the lexemes that can count


@dataclass(frozen=True)
class TermStats:
    """A query's lexemes that occur in the collection, with their statistics."""

    lexemes: list[str]
    df: np.ndarray
    max_tf: np.ndarray
    min_len: np.ndarray
    docs: float
    avglen: float

    def idf(self) -> np.ndarray:
        return np.log(1 + (self.docs - self.df + 0.5) / (self.df + 0.5))

    def any_tsquery(self) -> str:
        """The tsquery text matching a row that holds any of the lexemes."""
        return " | ".join(_tsquery_lexeme(x) for x in self.lexemes)

    def rarest(self, n: int) -> TermStats:
        """The ``n`` lexemes with the largest idf (the smallest df; ties: in lexeme order)."""
        by_df = sorted(range(len(self.lexemes)), key=lambda i: (self.df[i], self.lexemes[i]))
        keep = sorted(by_df[:n])
        return TermStats([self.lexemes[i] for i in keep], self.df[keep], self.max_tf[keep],
                         self.min_len[keep], self.docs, self.avglen)

    def bounds(self, k1: float, b: float) -> np.ndarray:
        """The most each lexeme can add to a score: idf at its largest term frequency in the
        shortest document that contains it."""
        tf = self.max_tf
        out: np.ndarray = self.idf() * tf * (k1 + 1) / (
            tf + k1 * (1 - b + b * self.min_len / self.avglen))
        return out


def _term_stats(conn: psycopg.Connection[Any], c: Collection, relid: int,
                query: str) -> TermStats | None:
    rows = conn.execute(
        "SELECT t.lexeme, t.df, t.max_tf, t.min_len, s.docs, s.total_length "
        "FROM vecdash_bm25_totals s JOIN vecdash_bm25_terms t ON t.relid = s.relid "
        "WHERE s.relid = %s AND t.df > 0 AND t.lexeme = ANY(tsvector_to_array("
        "to_tsvector(%s::regconfig, %s))) ORDER BY t.lexeme",
        (relid, c.text_config, query),
    ).fetchall()
    if not rows or not rows[0][4]:
        return None
    docs = float(rows[0][4])
    return TermStats(
        lexemes=[str(r[0]) for r in rows],
        df=np.array([r[1] for r in rows], dtype=np.float64),
        max_tf=np.array([r[2] for r in rows], dtype=np.float64),
        min_len=np.array([r[3] for r in rows], dtype=np.float64),
        docs=docs,
        avglen=(float(rows[0][5]) / docs) or 1.0,
    )


def _prune_threshold(terms: TermStats, *, candidates: int, k1: float, b: float) -> float | None:
    """A first threshold for pruned BM25, or None when pruning cannot pay (few matching rows,
    or one lexeme).

    The highest sum of lexeme bounds that about FIRST_PASS_EXPECTED times ``candidates``
    documents are expected to reach, taking the lexemes as independent (each in a fraction df/N
    of the documents; lexemes of real text co-occur more often than that, which only adds rows to
    the first pass). A guess that is too high costs a second pass, never exactness (see
    fetch_candidates); bounds are loose (a row reaching one mostly scores well below it), so
    the margin is wide: 5 rather than 2 made second passes rarer on the benchmark's 100k
    collections (85 -> 78 of 100 real-text queries, 20 -> 14 of 64 stress queries) and the
    arm's mean time 8% and 29% lower, its median about the same.

    Past PRUNE_MAX_TERMS lexemes (a pasted paragraph) the combinations are not enumerated: the
    threshold is the sum of the smallest bounds that leaves, in MaxScore's terms, essential
    lexemes held by about MAXSCORE_FIRST_ROWS rows per candidate (the rarest, largest-bound
    ones), so the first pass scores those rows and the second pass, with the threshold their
    scores give, skips the rows holding only the commonest lexemes."""
    n = len(terms.lexemes)
    if n < 2 or terms.df.sum() < MAXSCORE_MIN_MATCHES:
        return None
    bound = terms.bounds(k1, b)
    if n > PRUNE_MAX_TERMS:
        rising = _by_bound(terms, bound)[::-1]
        rows_from = np.cumsum(terms.df[rising][::-1])[::-1]  # rows holding lexeme j or a later
        j = next((j for j in range(1, n) if rows_from[j] <= MAXSCORE_FIRST_ROWS * candidates),
                 n - 1)
        return float(bound[rising][: j + 1].sum())
    masks = ((np.arange(1 << n)[:, None] >> np.arange(n)) & 1).astype(bool)
    p = terms.df / terms.docs
    probability = np.prod(np.where(masks, p, 1 - p), axis=1)
    reach = masks @ bound
    order = np.argsort(-reach, kind="stable")
    expected = np.cumsum(probability[order]) * terms.docs
    i = int(np.searchsorted(expected, FIRST_PASS_EXPECTED * candidates))
    if i >= len(order):
        return None
    theta = float(reach[order[i]])
    return theta if theta > float(bound.min()) else None


def _match_query(terms: TermStats, theta: float, *, k1: float, b: float) -> str | None:
    """The tsquery of the rows whose bounds reach ``theta``: an OR of the smallest sets of
    lexemes whose bounds add up to it (an AND each). None: every matching row can reach it."""
    bound = terms.bounds(k1, b)
    # a hair lower: a row scoring exactly theta (a bound reached in SQL's arithmetic) stays in
    theta -= abs(theta) * 1e-9
    order = _by_bound(terms, bound)
    if bound[order[-1]] >= theta:
        return None
    clauses: list[list[int]] = []

    def grow(start: int, chosen: list[int], total: float) -> None:
        # Lexemes in descending bound order, stopping as soon as the sum reaches theta: every
        # set found is minimal (dropping any member, at least as big as the last, falls short).
        if len(clauses) > PRUNE_MAX_CLAUSES:
            return
        for j in range(start, len(order)):
            rest = sum(bound[i] for i in order[j:])
            if total + rest < theta:
                return
            i = order[j]
            if total + bound[i] >= theta:
                clauses.append([*chosen, i])
            else:
                grow(j + 1, [*chosen, i], total + bound[i])

    if len(order) <= PRUNE_MAX_TERMS:
        grow(0, [], 0.0)
    if len(order) > PRUNE_MAX_TERMS or len(clauses) > PRUNE_MAX_CLAUSES:
        # MaxScore: the lexemes with the smallest bounds that together stay below theta cannot
        # lift a row into the top on their own; rows need one of the others.
        skipped, total = set(), 0.0
        for i in reversed(order):
            if total + bound[i] >= theta:
                break
            total += bound[i]
            skipped.add(i)
        clauses = [[i] for i in order if i not in skipped]
    return " | ".join("(" + " & ".join(_tsquery_lexeme(terms.lexemes[i]) for i in clause) + ")"
                      for clause in clauses)


def _first_lexemes(conn: psycopg.Connection[Any], c: Collection, query: str,
                   n: int) -> tuple[list[str] | None, int]:
    """The first ``n`` distinct lexemes of ``query`` (by position) and how many it has; None
    when it has no more than ``n``."""
    row = conn.execute(
        "SELECT array_agg(u.lexeme ORDER BY u.positions[1], u.lexeme) "
        "FROM unnest(to_tsvector(%s::regconfig, %s)) u", (c.text_config, query)).fetchone()
    lexemes = list(row[0] or []) if row else []
    return (lexemes[:n], len(lexemes)) if len(lexemes) > n else (None, 0)


def _by_bound(terms: TermStats, bound: np.ndarray) -> list[int]:
    """The lexemes' indexes from the largest bound down (ties: in lexeme order)."""
    return sorted(range(len(bound)), key=lambda i: (-bound[i], terms.lexemes[i]))


def _tsquery_lexeme(lexeme: str) -> str:
    """A lexeme quoted for tsquery input (embedded quotes and backslashes doubled)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def id_ranks(ids: np.ndarray) -> np.ndarray:
    """Each id's position in sorted order (the last tie-breaker of every ranking)."""
    out = np.empty(len(ids), dtype=np.int64)
    out[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return out


def _ranks(scores: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """1-based ranks by score (descending, ties by id); NaN where the score is NaN."""
    out = np.full(len(scores), np.nan)
    present = np.flatnonzero(~np.isnan(scores))
    if present.size:
        order = present[np.lexsort((id_rank[present], -scores[present]))]
        out[order] = np.arange(1, len(order) + 1)
    return out


def fuse(
    frame: pd.DataFrame | Candidates,
    *,
    weight: float,
    fusion: str = "convex",
    rrf_k: int = 60,
    keyword_ranker: str = "bm25",
    fallback_to_semantic: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse one query's candidates (``Candidates`` or its ``frame``) in numpy.

    Returns (order, fused): the row positions of the fused ranking, best first, and every row's
    fused score (NaN for rows the setting leaves out). weight is the semantic share: 1.0 is the
    semantic ranking alone, 0.0 the keyword ranking alone. ``convex``: weight * minmax(semantic)
    + (1 - weight) * minmax(keyword), a document absent from an arm scoring 0 there. ``rrf``:
    weight / (rrf_k + semantic rank) + (1 - weight) / (rrf_k + keyword rank). Ties go to the
    better rank in either arm, then the id.
    """
    if not 0.0 <= weight <= 1.0:
        raise InvalidInput(f"The semantic weight must be between 0 and 1; got {weight!r}.")
    if fusion not in FUSIONS:
        raise InvalidInput(f"Unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}.")
    if fusion == "rrf" and (not isinstance(rrf_k, int) or rrf_k < 1):
        raise InvalidInput(f"The RRF k must be a whole number of at least 1; got {rrf_k!r}.")
    def col(name: str) -> np.ndarray:
        if isinstance(frame, Candidates):
            return frame.columns[name]
        return frame[name].to_numpy()

    return fuse_arrays(
        col("semantic_score").astype(np.float64, copy=False),
        col("semantic_rank").astype(np.float64, copy=False),
        col(f"{keyword_ranker}_score").astype(np.float64, copy=False),
        col(f"{keyword_ranker}_rank").astype(np.float64, copy=False),
        id_ranks(col("id")),
        weight=weight, fusion=fusion, rrf_k=rrf_k, fallback_to_semantic=fallback_to_semantic,
    )


def fuse_arrays(
    sem_s: np.ndarray,
    sem_r: np.ndarray,
    kw_s: np.ndarray,
    kw_r: np.ndarray,
    id_rank: np.ndarray,
    *,
    weight: float,
    fusion: str = "convex",
    rrf_k: int = 60,
    fallback_to_semantic: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``fuse`` on plain arrays (scores, 1-based ranks with NaN for absent, id order)."""
    in_sem = ~np.isnan(sem_r)
    in_kw = ~np.isnan(kw_r)
    if fallback_to_semantic and not in_kw.any():
        weight = 1.0
    if weight >= 1.0:
        keep = in_sem
    elif weight <= 0.0:
        keep = in_kw
    else:
        keep = in_sem | in_kw
    if fusion == "rrf":
        sem_part = np.where(in_sem, 1.0 / (rrf_k + np.nan_to_num(sem_r)), 0.0)
        kw_part = np.where(in_kw, 1.0 / (rrf_k + np.nan_to_num(kw_r)), 0.0)
    else:
        sem_part = _minmax(sem_s, in_sem)
        kw_part = _minmax(kw_s, in_kw)
    fused = np.where(keep, weight * sem_part + (1.0 - weight) * kw_part, np.nan)
    if weight >= 1.0:
        best_rank = sem_r
    elif weight <= 0.0:
        best_rank = kw_r
    else:
        best_rank = np.fmin(sem_r, kw_r)
    idx = np.flatnonzero(keep)
    order = idx[np.lexsort((id_rank[idx], best_rank[idx], -fused[idx]))]
    return order.astype(np.int64), fused


def _minmax(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.zeros(len(scores))
    if not present.any():
        return out
    vals = scores[present]
    lo, hi = float(vals.min()), float(vals.max())
    out[present] = 1.0 if hi == lo else (vals - lo) / (hi - lo)
    return out


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
    k1: float = 1.2,
    b: float = 0.75,
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
    """
    check_k(k)
    if keyword_ranker not in KEYWORD_RANKERS:
        raise InvalidInput(
            f"Unknown keyword ranker {keyword_ranker!r}; choose one of "
            f"{', '.join(KEYWORD_RANKERS)}.")
    vec = embed_query(collection, query, embedder=embedder) if vector is None else vector
    ranker: KeywordRanker = "bm25" if keyword_ranker == "bm25" else "ts_rank_cd"
    cands = fetch_candidates(conn, collection, query, vec, candidates=candidates,
                             keyword_rankers=(ranker,), filters=filters, k1=k1, b=b)
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
    return {r[0]: (r[1], r[2], r[3] or "", r[4], r[5] or "") for r in rows}


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
) -> Comparison:
    """Side by side: the semantic, keyword and hybrid top-k, their pairwise overlap and, per
    document, its rank in each list and how far hybrid moved it from each arm."""
    check_k(k)
    if keyword_ranker not in KEYWORD_RANKERS:
        raise InvalidInput(f"Unknown keyword ranker {keyword_ranker!r}.")
    ranker: KeywordRanker = "bm25" if keyword_ranker == "bm25" else "ts_rank_cd"
    vec = embed_query(collection, query, embedder=embedder)
    cands = fetch_candidates(conn, collection, query, vec, candidates=candidates,
                             keyword_rankers=(ranker,), filters=filters)
    frame = cands.frame
    lists: dict[str, np.ndarray] = {}
    for name, w in (("semantic", 1.0), ("keyword", 0.0), ("hybrid", weight)):
        order, _ = fuse(frame, weight=w, fusion=fusion, rrf_k=rrf_k, keyword_ranker=ranker)
        lists[name] = order[:k]
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
    movement = pd.DataFrame({
        "id": [frame["id"].iloc[i] for i in everyone],
        "title": [details[frame["key"].iloc[i]][1] or details[frame["key"].iloc[i]][0]
                  for i in everyone],
        "hybrid_rank": pd.array([pos["hybrid"].get(i) for i in everyone], dtype="Int64"),
        "semantic_rank": pd.array([pos["semantic"].get(i) for i in everyone], dtype="Int64"),
        "keyword_rank": pd.array([pos["keyword"].get(i) for i in everyone], dtype="Int64"),
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
