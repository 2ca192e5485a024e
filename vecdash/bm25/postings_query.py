"""The keyword arm over impact-ordered postings (vecdash.bm25.postings): BM25's exact top
``candidates`` in one SQL statement, at the default k1 / b, reading a few hundred postings
instead of every row that holds a query lexeme.

A threshold algorithm in two reads, all in SQL (CTEs, so the arm joins the semantic arm in the
same statement and the whole search is one round trip):

1. For each query lexeme (its idf from the statistics, as today), its ``candidates`` postings of
   highest impact. Every posting carries tf and the document's length, so each gives that
   document's exact contribution from that lexeme at the current average length; a document's
   contributions read so far sum to a lower bound of its score, and the ``candidates``-th
   largest such sum is a lower bound ``theta`` of the exact top's last score.
2. What a document can have from a lexeme whose posting was not read is bounded: nothing when
   the lexeme's postings were all read, else idf * f * (the impact last read), with f =
   max(1, avg_now / avg_ref) * (1 + 1e-6) (the drift of the reference length, and the rounding
   of the stored real). Those bounds are shared out so they sum to just under ``theta``
   (water-filling: a lexeme whose bound is small keeps it; the others get equal shares of what
   is left, and their postings are read down to the impact that share needs). A document that
   no read reached then scores below ``theta``, so it is not in the exact top; nor is a read
   document whose contributions read plus the bounds of the rest stay below ``theta``.
3. The remaining documents are scored exactly from their stored tsvector with the same
   expression as the exact path (vecdash.search.arms.stored_bm25_cte), and the top
   ``candidates`` kept (ties by id).

The result is the exact BM25 top ``candidates`` with the same scores (tested against the exact
path, also after inserts that move the average length, deletes, updates and truncates).
"""

from __future__ import annotations

from typing import Any, LiteralString

from psycopg import sql

from vecdash.bm25.statistics import DEFAULT_B, DEFAULT_K1, doc_length, term_frequency

ROUNDING = 1e-6  # stored impacts are real: at most 2^-24 below the float8 value they came from
THETA_MARGIN = 1e-9  # float8 sums in another order: keep documents a hair below theta


def _contribution(idf: LiteralString, tf: LiteralString, length: LiteralString) -> sql.Composed:
    """One lexeme's BM25 term, the exact path's expression (in p_r1 and p_r2 ``idf`` is the
    column of the lexeme's row, named l and w there)."""
    return sql.SQL(
        "{idf} * {tf} * (%(k1)s + 1) / ({tf} + %(k1)s * (1 - %(b)s + %(b)s * {len} / a.avg_now))"
    ).format(idf=sql.SQL(idf), tf=sql.SQL(tf), len=sql.SQL(length))


def postings_bm25_ctes(postings: sql.Identifier, table: sql.Composable, id_column: str,
                       relid: int, max_lexemes: int | None,
                       params: dict[str, Any]) -> sql.Composed:
    """The CTEs ending in ``bm25`` (id, score) and ``p_info`` (one json row: the lexemes kept,
    how many occur, postings read, documents scored). Needs ``tq`` (the query's lexemes)."""
    params.update(relid=relid, maxlex=max_lexemes, k1=float(DEFAULT_K1), b=float(DEFAULT_B),
                  rounding=1 + ROUNDING, margin=1 - THETA_MARGIN)
    tid = sql.Identifier("t", id_column)
    return sql.SQL("""
p_terms AS MATERIALIZED (
  SELECT x.lexeme, x.df FROM vecdash_bm25_terms x
  WHERE x.relid = %(relid)s AND x.df > 0 AND x.lexeme = ANY((SELECT lexemes FROM tq)::text[])),
p_lex AS MATERIALIZED (
  SELECT row_number() OVER (ORDER BY k.lexeme) AS i, k.lexeme,
         ln(1 + (s.docs - k.df + 0.5::float8) / (k.df + 0.5::float8)) AS idf,
         array_to_tsvector(ARRAY[k.lexeme::text])::text::tsquery AS lq
  FROM (SELECT * FROM p_terms ORDER BY df, lexeme LIMIT %(maxlex)s) k
  CROSS JOIN vecdash_bm25_totals s WHERE s.relid = %(relid)s AND s.docs > 0 ORDER BY k.lexeme),
p_q AS MATERIALIZED (SELECT string_agg(lq::text, ' | ' ORDER BY i)::tsquery AS q FROM p_lex),
p_avg AS MATERIALIZED (
  SELECT s.total_length::float8 / s.docs AS avg_now,
         greatest(1, s.total_length::float8 / s.docs / m.avg_ref) * %(rounding)s AS f
  FROM vecdash_bm25_totals s JOIN vecdash_bm25_postings m ON m.relid = s.relid
  WHERE s.relid = %(relid)s AND s.docs > 0 AND s.total_length > 0 AND m.avg_ref IS NOT NULL),
p_r1 AS MATERIALIZED (
  SELECT l.i, p.doc, p.impact, {c_posting} AS c
  FROM p_lex l CROSS JOIN p_avg a CROSS JOIN LATERAL (
    SELECT o.doc, o.impact, o.tf, o.len FROM {postings} o WHERE o.lexeme = l.lexeme
    ORDER BY o.impact DESC LIMIT %(cand)s) p),
p_list AS MATERIALIZED (
  SELECT l.i, l.lexeme, l.idf, count(r.doc) AS n, l.idf * a.f * min(r.impact) AS u
  FROM p_lex l CROSS JOIN p_avg a LEFT JOIN p_r1 r ON r.i = l.i
  GROUP BY l.i, l.lexeme, l.idf, a.f),
p_theta AS MATERIALIZED (
  SELECT coalesce((SELECT sum(c) FROM p_r1 GROUP BY doc ORDER BY 1 DESC
                   OFFSET %(cand)s - 1 LIMIT 1), 0) * %(margin)s AS v),
p_open AS MATERIALIZED (
  SELECT o.i, o.u, row_number() OVER w - 1 AS j, count(*) OVER () AS cnt,
         coalesce(sum(o.u) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
           AS before
  FROM p_list o WHERE o.n >= %(cand)s WINDOW w AS (ORDER BY o.u, o.i)),
p_cut AS MATERIALIZED (
  SELECT o.j, (t.v - o.before) / (o.cnt - o.j) AS share FROM p_open o CROSS JOIN p_theta t
  WHERE o.u * (o.cnt - o.j) > t.v - o.before ORDER BY o.j LIMIT 1),
p_bound AS MATERIALIZED (
  SELECT l.i, l.lexeme, l.idf,
         CASE WHEN l.n < %(cand)s THEN 0 WHEN o.j >= c.j THEN c.share ELSE l.u END AS bound,
         CASE WHEN o.j >= c.j THEN c.share / (l.idf * a.f) END AS tau
  FROM p_list l CROSS JOIN p_avg a LEFT JOIN p_open o ON o.i = l.i LEFT JOIN p_cut c ON true),
p_r2 AS MATERIALIZED (
  SELECT w.i, p.doc, {c_posting} AS c
  FROM p_bound w CROSS JOIN p_avg a CROSS JOIN LATERAL (
    SELECT o.doc, o.tf, o.len FROM {postings} o
    WHERE o.lexeme = w.lexeme AND o.impact >= w.tau) p
  WHERE w.tau IS NOT NULL),
p_seen AS MATERIALIZED (
  SELECT s.doc, s.i, max(s.c) AS c
  FROM (SELECT i, doc, c FROM p_r1 UNION ALL SELECT i, doc, c FROM p_r2) s GROUP BY s.doc, s.i),
p_cand AS MATERIALIZED (
  SELECT s.doc FROM p_seen s JOIN p_bound w ON w.i = s.i GROUP BY s.doc
  HAVING sum(s.c) - sum(w.bound) + (SELECT sum(bound) FROM p_bound)
         >= (SELECT v FROM p_theta)),
bm25 AS MATERIALIZED (
  SELECT s.id, s.score FROM (
    SELECT {tid} AS id,
           (SELECT sum({c_row} ORDER BY l.i)
            FROM p_lex l CROSS JOIN LATERAL (SELECT {tf} AS tf) f) AS score
    FROM {table} t CROSS JOIN p_avg a CROSS JOIN LATERAL (SELECT {len} AS len) d
    WHERE {tid} = ANY(ARRAY(SELECT doc FROM p_cand)) OFFSET 0) s
  ORDER BY s.score DESC, s.id LIMIT %(cand)s),
p_info AS (
  SELECT json_build_object(
    'occurring', (SELECT count(*) FROM p_terms),
    'kept', (SELECT array_agg(lexeme::text ORDER BY i) FROM p_lex),
    'drift', (SELECT f / %(rounding)s FROM p_avg),
    'postings_read', (SELECT count(*) FROM p_r1) + (SELECT count(*) FROM p_r2),
    'scored', (SELECT count(*) FROM p_cand)) AS info)""").format(
        postings=postings, table=table, tid=tid,
        c_posting=_contribution("idf", "p.tf", "p.len"),
        c_row=_contribution("l.idf", "f.tf", "d.len"),
        tf=term_frequency(sql.SQL("ts_rank(t.tsv, l.lq)::float8")),
        len=doc_length(sql.SQL("t.tsv"), sql.SQL("(SELECT q FROM p_q)")))

