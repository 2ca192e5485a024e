"""The SQL of the search arms: one CTE builder per arm (semantic, BM25 over stored statistics,
BM25 computed on the fly, ts_rank_cd), their full outer join, and the one round trip that runs
them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import psycopg
from psycopg import sql

from vecdash.bm25.postings_query import postings_bm25_ctes
from vecdash.bm25.pruning import TermStats, tsquery_lexeme
from vecdash.bm25.statistics import TSV_LENGTH, doc_length, term_frequency
from vecdash.errors import InvalidInput
from vecdash.search.filters import SearchFilters, filter_sql
from vecdash.search.semantic import query_vector, vector_scan_settings

if TYPE_CHECKING:
    from vecdash.collections import Collection

KeywordRanker = Literal["bm25", "ts_rank_cd"]
KEYWORD_RANKERS: tuple[KeywordRanker, ...] = ("bm25", "ts_rank_cd")


def check_keyword_ranker(name: str) -> KeywordRanker:
    """``name`` as a keyword ranker, or InvalidInput naming the choices."""
    for ranker in KEYWORD_RANKERS:
        if name == ranker:
            return ranker
    raise InvalidInput(
        f"Unknown keyword ranker {name!r}; choose one of {', '.join(KEYWORD_RANKERS)}.")


@dataclass(frozen=True)
class ArmQuery:
    """What one statement over the arms asks for. ``vector`` None: no semantic arm. ``terms``:
    the stored statistics BM25 scores with (None: no query lexeme occurs in the collection);
    ``on_the_fly``: BM25 computes them over the whole table instead. ``keep``: the only query
    lexemes the keyword arms use (None: all). ``match``: the tsquery of the rows stored-stats
    BM25 scores (None: every row holding a query lexeme)."""

    collection: Collection
    query: str
    vector: Sequence[float] | np.ndarray | None
    rankers: tuple[KeywordRanker, ...]
    filters: SearchFilters
    terms: TermStats | None
    on_the_fly: bool
    keep: list[str] | None
    match: str | None
    candidates: int
    k1: float
    b: float
    # BM25 from impact-ordered postings (vecdash.bm25.postings_query) instead of ``terms``:
    # the postings table and the collection table's oid; statistics are read in the statement.
    postings: sql.Identifier | None = None
    relid: int | None = None
    max_lexemes: int | None = None


def doc_tsv(collection: Collection, alias: str) -> sql.Composable:
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


# tq: the query's lexemes (those in %(keep)s) and their OR as a tsquery; mq: the tsquery of the
# rows stored-stats BM25 scores (%(match)s, else tq's).
_QUERY_CTES = sql.SQL(
    "tq AS MATERIALIZED (SELECT l.lexemes, (SELECT string_agg("
    "array_to_tsvector(ARRAY[x])::text, ' | ')::tsquery FROM unnest(l.lexemes) x) AS q "
    "FROM (SELECT array_agg(DISTINCT u.lexeme ORDER BY u.lexeme) AS lexemes "
    "FROM unnest(to_tsvector(%(cfg)s::regconfig, %(q)s)) u "
    "WHERE %(keep)s::text[] IS NULL OR u.lexeme = ANY(%(keep)s::text[])) l), "
    "mq AS MATERIALIZED (SELECT coalesce(%(match)s::tsquery, (SELECT q FROM tq)) AS q)")


def semantic_cte(q: ArmQuery, where: sql.Composable, params: dict[str, Any]) -> sql.Composable:
    """``sem``: the ``candidates`` nearest rows and their distances."""
    assert q.vector is not None
    c = q.collection
    params["v"] = query_vector(c, q.vector)
    return sql.SQL(
        "sem AS MATERIALIZED (SELECT {tid} AS id, {vec} {op} %(v)s::{cast} AS score "
        "FROM {table} t WHERE true{where} ORDER BY score LIMIT %(cand)s)").format(
        tid=sql.Identifier("t", c.id_column), vec=sql.Identifier("t", c.vector_column),
        op=c.distance_operator, cast=c.vector_cast, table=c.table, where=where)


def stored_bm25_cte(q: ArmQuery, where: sql.Composable, params: dict[str, Any]) -> sql.Composable:
    """``bm25`` with the stored statistics: one pass over the rows ``mq`` matches, each scored as
    it is read: per lexeme its term frequency from a ts_rank (see bm25.term_frequency) and its idf
    from the statistics; the length from the ranks of all of them (see bm25.doc_length). The
    subquery is kept apart (OFFSET 0) so each rank is computed once per row; the arithmetic over
    them is cheap enough to repeat."""
    c = q.collection
    tid = sql.Identifier("t", c.id_column)
    terms = q.terms
    if terms is None:
        return sql.SQL("bm25 AS (SELECT {tid} AS id, NULL::float8 AS score "
                       "FROM {table} t WHERE false)").format(tid=tid, table=c.table)
    params.update(lexq=[tsquery_lexeme(x) for x in terms.lexemes], lexq_any=terms.any_tsquery(),
                  idf=[float(x) for x in terms.idf()], avglen=terms.avglen)
    n = len(terms.lexemes)
    lexq = [sql.SQL("(SELECT lexq[{}] FROM kq)").format(sql.Literal(i + 1)) for i in range(n)]
    ranks = sql.SQL(", ").join(
        sql.SQL("ts_rank(t.tsv, {})::float8 AS {}").format(x, sql.Identifier(f"r{i}"))
        for i, x in enumerate(lexq))
    tfs = [term_frequency(sql.SQL("s.{}").format(sql.Identifier(f"r{i}"))) for i in range(n)]
    score = sql.SQL(" + ").join(
        sql.SQL("(SELECT idf[{i}] FROM kq) * {tf} * (%(k1)s + 1) / ({tf} + "
                "%(k1)s * (1 - %(b)s + %(b)s * s.len / %(avglen)s))").format(
            i=sql.Literal(i + 1), tf=tf)
        for i, tf in enumerate(tfs))
    return sql.SQL(
        "kq AS MATERIALIZED (SELECT %(lexq)s::tsquery[] AS lexq, %(idf)s::float8[] AS idf,"
        " %(lexq_any)s::tsquery AS q), "
        "bm25 AS MATERIALIZED (SELECT s.id, {score} AS score FROM (SELECT {tid} AS id, "
        "{ranks}, {len} AS len FROM {table} t "
        "WHERE t.tsv @@ (SELECT q FROM mq){where} OFFSET 0) s "
        "ORDER BY score DESC, s.id LIMIT %(cand)s)").format(
        score=score, tid=tid, ranks=ranks, table=c.table, where=where,
        len=doc_length(sql.SQL("t.tsv"), sql.SQL("(SELECT q FROM kq)")))


def on_the_fly_bm25_cte(q: ArmQuery, where: sql.Composable) -> sql.Composable:
    """``bm25`` with the statistics computed over the whole table (attached tables)."""
    c = q.collection
    return sql.SQL(
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
        tid=sql.Identifier("t", c.id_column), tsv=doc_tsv(c, "t"), table=c.table, where=where,
        len=sql.SQL(TSV_LENGTH).format(sql.SQL("k.tsv")))


def ts_rank_cd_cte(q: ArmQuery, where: sql.Composable) -> sql.Composable:
    """``ts_rank_cd``: PostgreSQL's cover density ranking of the rows holding a query lexeme."""
    c = q.collection
    return sql.SQL(
        "ts_rank_cd AS MATERIALIZED (SELECT {tid} AS id, "
        "ts_rank_cd({tsv}, (SELECT q FROM tq))::float8 AS score FROM {table} t "
        "WHERE {tsv} @@ (SELECT q FROM tq){where} ORDER BY score DESC, {tid} LIMIT %(cand)s)"
    ).format(tid=sql.Identifier("t", c.id_column), tsv=doc_tsv(c, "t"), table=c.table,
             where=where)


def joined_arms(arms: list[str], ctes: list[sql.Composable],
                info: sql.Composable = sql.NULL) -> sql.Composed:
    """The statement over the arms' CTEs: one row per document in any arm (full outer join on
    the id): (id, each arm's score or NULL, NULL, NULL), and one row (NULL, NULL..., the query's
    lexemes, ``info``: what the postings arm says about its work, else NULL)."""
    join: sql.Composable = sql.Identifier(arms[0])
    for i, a in enumerate(arms[1:], start=1):
        join = sql.SQL("{} FULL OUTER JOIN {} ON {}.id = {}").format(
            join, sql.Identifier(a), sql.Identifier(a), _first_id(arms[:i]))
    return sql.SQL(
        "WITH {ctes} SELECT {id}, {scores}, NULL, NULL::json FROM {join} "
        "UNION ALL SELECT NULL, {nulls}, (SELECT lexemes FROM tq), {info}").format(
        ctes=sql.SQL(", ").join(ctes), id=_first_id(arms), join=join, info=info,
        scores=sql.SQL(", ").join(sql.SQL("{}.score").format(sql.Identifier(a)) for a in arms),
        nulls=sql.SQL(", ").join(sql.NULL for _ in arms))


def _first_id(arms: list[str]) -> sql.Composable:
    """The id from the first of ``arms`` that has the row."""
    ids = [sql.SQL("{}.id").format(sql.Identifier(a)) for a in arms]
    return ids[0] if len(ids) == 1 else sql.SQL("coalesce({})").format(sql.SQL(", ").join(ids))


def arm_rows(
    conn: psycopg.Connection[Any], q: ArmQuery
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The arms' names ("sem", then the keyword rankers) and the rows of ``joined_arms``."""
    c = q.collection
    params: dict[str, Any] = {"cfg": c.text_config, "q": q.query, "cand": q.candidates,
                              "k1": float(q.k1), "b": float(q.b), "match": q.match,
                              "keep": q.keep}
    where = filter_sql(c, q.filters, params)
    ctes: list[sql.Composable] = [_QUERY_CTES]
    arms: list[str] = []
    if q.vector is not None:
        ctes.append(semantic_cte(q, where, params))
        arms.append("sem")
    info: sql.Composable = sql.NULL
    if "bm25" in q.rankers:
        if q.postings is not None:
            assert q.relid is not None and not q.filters.active
            ctes.append(postings_bm25_ctes(q.postings, c.table, c.id_column, q.relid,
                                           q.max_lexemes, params))
            info = sql.SQL("(SELECT info FROM p_info)")
        else:
            ctes.append(on_the_fly_bm25_cte(q, where) if q.on_the_fly
                        else stored_bm25_cte(q, where, params))
        arms.append("bm25")
    if "ts_rank_cd" in q.rankers:
        ctes.append(ts_rank_cd_cte(q, where))
        arms.append("ts_rank_cd")
    if not arms:
        raise InvalidInput("Nothing to search: give a query vector or a keyword ranker.")
    statement = joined_arms(arms, ctes, info)
    # One round trip: the settings and the statement go together in pipeline mode.
    with conn.pipeline(), conn.transaction():
        if q.vector is not None:
            conn.execute(*vector_scan_settings(conn, c, q.candidates,
                                               filtered=q.filters.active))
        cur = conn.execute(statement, params)
    return arms, cur.fetchall()
