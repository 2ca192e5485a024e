"""Okapi BM25 over core PostgreSQL full-text search (no extension).

Term frequencies come from the stored tsvector of each matching row (positions per lexeme), the
candidates from the GIN index (``tsv @@ <tsquery>``), and the corpus statistics live in two side
tables keyed by the collection table's oid:

  vecdash_bm25_terms  (relid, lexeme, df, max_tf, min_len)
  vecdash_bm25_totals (relid, docs, total_length)

A document's length is its number of token positions (a lexeme stored without positions counts
once), the same count PostgreSQL's ts_rank divides by with normalization 2, which is how search
reads it per row: ``ts_rank(tsv, q, 0) / ts_rank(tsv, q, 2)``, rounded (exact below millions of
tokens), so no per-document table is kept. Search reads a term frequency from ts_rank too (see
``term_frequency``). ``max_tf`` (the largest frequency of the lexeme in any
document) and ``min_len`` (the shortest document containing it) bound the lexeme's contribution to
any score, which lets search skip rows that cannot reach the top (see vecdash.bm25.pruning); deletes
leave them as they are, which keeps them valid upper bounds (a rebuild makes them tight again).

Statement-level triggers with transition tables (``REFERENCING NEW TABLE / OLD TABLE``) on the
collection table keep them exact on INSERT and COPY, DELETE, UPDATE and TRUNCATE, in the writing
transaction, so ingestion and deletion need no code of their own. ``install_bm25`` creates the
triggers and backfills the statistics from the rows already stored; ``create_collection`` calls it,
and search calls ``ensure_bm25`` lazily for collections created before it existed.

Attached tables (and managed ones in read-only mode before the triggers exist) are never altered:
for them the keyword arm computes ``to_tsvector`` and the statistics on the fly, with a full scan
per query (fine for small tables, slow for big ones; the Search page says so).

Scoring (the Lucene / Robertson-Sparck Jones form, non-negative idf)::

    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(d) = sum over distinct query lexemes t in d of
               idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * len(d) / avglen))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg import sql

from vecdash.db import is_read_only, require_writable
from vecdash.errors import InvalidInput

if TYPE_CHECKING:
    from vecdash.collections import Collection

DEFAULT_K1 = 1.2
DEFAULT_B = 0.75


def check_parameters(k1: float, b: float) -> None:
    """BM25's k1 and b within the ranges the Search page offers."""
    if not (0 < k1 <= 10) or not (0 <= b <= 1):
        raise InvalidInput(f"BM25 needs 0 < k1 <= 10 and 0 <= b <= 1; got k1={k1}, b={b}.")


TRIGGER_NAMES = ("vecdash_bm25_ins", "vecdash_bm25_del", "vecdash_bm25_upd", "vecdash_bm25_trunc")

# The number of token positions in a tsvector (a lexeme stored without positions counts once).
TSV_LENGTH = "(SELECT coalesce(sum(coalesce(array_length(positions, 1), 1)), 0) FROM unnest({}))"


def doc_length(tsv: sql.Composable, query: sql.Composable) -> sql.Composed:
    """The same count, cheaper, for a tsvector that ``query`` matches: ts_rank divides by it
    with normalisation 2, so the ratio of the two ranks, rounded, gives it back."""
    return sql.SQL("round(ts_rank({tsv}, {q})::float8 / ts_rank({tsv}, {q}, 2))").format(
        tsv=tsv, q=query)


def term_frequency(rank: sql.Composable) -> sql.Composed:
    """A lexeme's frequency in a managed collection's tsvector from ``rank``, the ts_rank of that
    tsvector for a tsquery of the lexeme alone (default weights, no normalisation).

    ts_rank gives a lexeme whose positions all have weight D (to_tsvector's) 0.1 * (1 + 1/2^2 +
    ... + 1/tf^2) / 1.64493406685, and 0 when it is absent: increasing in tf, so inverting the sum
    (1/(pi^2/6 - sum) is tf + 1/2 + O(1/tf)) gives tf back, exact up to 255, the most positions a
    tsvector keeps per lexeme. ts_rank finds the lexeme by binary search, where unnesting the
    tsvector to read its positions costs time in proportion to its size."""
    return sql.SQL("round(1 / (1.6449340668482264 - {} * 16.4493406685) - 0.5)").format(rank)


# Bounds of terms whose statistics predate max_tf / min_len: the loosest valid ones (any tf, any
# length), so an upgraded collection prunes less until its statistics are rebuilt, never wrongly.
UNKNOWN_MAX_TF = 1_000_000
UNKNOWN_MIN_LEN = 0

# Statistics of the rows in {src} (a transition table in the triggers, the table itself for a
# backfill) added to those of table {relid}, in one pass over the rows' lexemes and positions. A
# row's length comes from ts_rank's normalisation by length (see above), with its first lexeme as
# the query: cheaper than summing its positions in a second pass.
_ADD_ROWS: LiteralString = """
         WITH t AS MATERIALIZED (
                SELECT x.lexeme, count(*) AS df, max(x.tf) AS max_tf, min(d.len) AS min_len,
                       sum(x.tf) AS tokens
                FROM (SELECT n.tsv, {length}::integer AS len
                      FROM {src} n CROSS JOIN LATERAL (SELECT array_to_tsvector(
                             (tsvector_to_array(n.tsv))[1:1])::text::tsquery AS q
                             WHERE length(n.tsv) > 0) f  -- rows without lexemes add none
                      OFFSET 0) d  -- the length once per row, not per lexeme; no copy of tsv
                CROSS JOIN LATERAL (SELECT y.lexeme, greatest(cardinality(y.positions), 1)
                                    AS tf FROM unnest(d.tsv) y) x
                GROUP BY x.lexeme),
              terms AS (
                INSERT INTO vecdash_bm25_terms AS t (relid, lexeme, df, max_tf, min_len)
                  SELECT {relid}, t.lexeme, t.df, t.max_tf, t.min_len FROM t ORDER BY t.lexeme
                ON CONFLICT (relid, lexeme) DO UPDATE
                  SET df = t.df + excluded.df, max_tf = greatest(t.max_tf, excluded.max_tf),
                      min_len = least(t.min_len, excluded.min_len))
         INSERT INTO vecdash_bm25_totals AS t (relid, docs, total_length)
           SELECT {relid}, (SELECT count(*) FROM {src}), (SELECT coalesce(sum(t.tokens), 0) FROM t)
         ON CONFLICT (relid) DO UPDATE
           SET docs = t.docs + excluded.docs, total_length = t.total_length + excluded.total_length;
"""


def _add_rows(src: sql.Composable, relid: sql.Composable) -> sql.Composed:
    return sql.SQL(_ADD_ROWS).format(src=src, relid=relid,
                                     length=doc_length(sql.SQL("n.tsv"), sql.SQL("f.q")))


_ADD_NEW = _add_rows(sql.Identifier("vecdash_new"), sql.SQL("TG_RELID"))
# Take away the rows in vecdash_old (a lexeme whose df reaches 0 is removed).
_REMOVE_OLD = sql.SQL("""
         WITH u AS MATERIALIZED (
                SELECT x.lexeme, greatest(cardinality(x.positions), 1) AS tf
                FROM vecdash_old o, unnest(o.tsv) x),
              terms AS (
                UPDATE vecdash_bm25_terms t SET df = t.df - o.c
                  FROM (SELECT u.lexeme, count(*) AS c FROM u GROUP BY u.lexeme) o
                  WHERE t.relid = TG_RELID AND t.lexeme = o.lexeme)
         UPDATE vecdash_bm25_totals t
           SET docs = t.docs - (SELECT count(*) FROM vecdash_old),
               total_length = t.total_length - (SELECT coalesce(sum(u.tf), 0) FROM u)
           WHERE t.relid = TG_RELID;
         DELETE FROM vecdash_bm25_terms t
           WHERE t.relid = TG_RELID AND t.df <= 0
             AND t.lexeme IN (SELECT l.lexeme
                              FROM vecdash_old d, unnest(tsvector_to_array(d.tsv)) AS l(lexeme));
""")


def _function(name: str, body: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {} "
        "RETURN NULL; END $$").format(sql.Identifier(name), body)


_SHARED_DDL: list[sql.SQL | sql.Composed] = [
    # Lexemes compare bytewise ("C"): only equality and a lock order depend on it, and the
    # triggers sort and look up a batch's lexemes without the locale's strcoll (a table an
    # earlier vecdash made keeps the database's collation: the same results, slower writes).
    sql.SQL("""CREATE TABLE IF NOT EXISTS vecdash_bm25_terms (
           relid oid NOT NULL, lexeme text COLLATE "C" NOT NULL, df bigint NOT NULL,
           max_tf integer NOT NULL, min_len integer NOT NULL,
           PRIMARY KEY (relid, lexeme))"""),
    # Statistics kept by an earlier vecdash (no bounds, a per-document length table).
    sql.SQL("ALTER TABLE vecdash_bm25_terms "
            "ADD COLUMN IF NOT EXISTS max_tf integer NOT NULL DEFAULT {}, "
            "ADD COLUMN IF NOT EXISTS min_len integer NOT NULL DEFAULT {}").format(
        sql.Literal(UNKNOWN_MAX_TF), sql.Literal(UNKNOWN_MIN_LEN)),
    sql.SQL("""CREATE TABLE IF NOT EXISTS vecdash_bm25_totals (
           relid oid PRIMARY KEY, docs bigint NOT NULL, total_length bigint NOT NULL)"""),
    _function("vecdash_bm25_insert", _ADD_NEW),
    _function("vecdash_bm25_delete", _REMOVE_OLD),
    # An update is the old rows' statistics taken away, then the new rows' added.
    _function("vecdash_bm25_update", sql.Composed([_REMOVE_OLD, _ADD_NEW])),
    sql.SQL("""CREATE OR REPLACE FUNCTION vecdash_bm25_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         DELETE FROM vecdash_bm25_terms WHERE relid = TG_RELID;
         UPDATE vecdash_bm25_totals SET docs = 0, total_length = 0 WHERE relid = TG_RELID;
         RETURN NULL;
       END $$"""),
    sql.SQL("DROP TABLE IF EXISTS vecdash_bm25_docs"),
    sql.SQL("DROP FUNCTION IF EXISTS vecdash_tsv_length(tsvector)"),
]

_TRIGGERS: list[LiteralString] = [
    "CREATE TRIGGER vecdash_bm25_ins AFTER INSERT ON {table} REFERENCING NEW TABLE AS vecdash_new "
    "FOR EACH STATEMENT EXECUTE FUNCTION vecdash_bm25_insert()",
    "CREATE TRIGGER vecdash_bm25_del AFTER DELETE ON {table} REFERENCING OLD TABLE AS vecdash_old "
    "FOR EACH STATEMENT EXECUTE FUNCTION vecdash_bm25_delete()",
    "CREATE TRIGGER vecdash_bm25_upd AFTER UPDATE ON {table} REFERENCING OLD TABLE AS vecdash_old "
    "NEW TABLE AS vecdash_new FOR EACH STATEMENT EXECUTE FUNCTION vecdash_bm25_update()",
    "CREATE TRIGGER vecdash_bm25_trunc AFTER TRUNCATE ON {table} "
    "FOR EACH STATEMENT EXECUTE FUNCTION vecdash_bm25_truncate()",
]


def supports_stored_stats(collection: Collection) -> bool:
    """Whether BM25 statistics can be kept by triggers: a managed table with its stored tsv."""
    return collection.managed and collection.tsv_column == "tsv" and collection.id_column == "id"


def table_relid(conn: psycopg.Connection[Any], collection: Collection) -> int | None:
    """The oid of the collection's table, None when it does not exist."""
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (collection.schema_name, collection.table_name),
    ).fetchone()
    return int(row[0]) if row else None


def bm25_installed(conn: psycopg.Connection[Any], collection: Collection) -> int | None:
    """The table's oid when its BM25 triggers are in place (statistics are current) and the
    statistics tables have this version's shape, else None."""
    row = conn.execute(
        "SELECT c.oid, (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid "
        "               AND t.tgname = ANY(%s)), "
        "       to_regclass('vecdash_bm25_docs') IS NULL AND EXISTS (SELECT 1 FROM pg_attribute a "
        "         WHERE a.attrelid = to_regclass('vecdash_bm25_terms') AND a.attname = 'min_len' "
        "         AND NOT a.attisdropped) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (list(TRIGGER_NAMES), collection.schema_name, collection.table_name),
    ).fetchone()
    if row is None or int(row[1]) != len(TRIGGER_NAMES) or not row[2]:
        return None
    return int(row[0])


def install_bm25(conn: psycopg.Connection[Any], collection: Collection) -> int:
    """Create the statistics tables and triggers for a managed collection and backfill the
    statistics from its stored rows, in one transaction (a savepoint when called inside one).
    Returns the table's oid. Idempotent: running it again rebuilds the statistics."""
    require_writable(conn)
    if not supports_stored_stats(collection):
        raise InvalidInput(f"{collection.name!r} is not a managed collection with a tsv column.")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('vecdash_bm25'))")
        for ddl in _SHARED_DDL:
            conn.execute(ddl)
        table = collection.table
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table))
        relid = table_relid(conn, collection)
        assert relid is not None
        for name in TRIGGER_NAMES:
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table))
        for trigger in _TRIGGERS:
            conn.execute(sql.SQL(trigger).format(table=table))
        # Statistics of tables that no longer exist (dropped collections) go too.
        orphans = [r[0] for r in conn.execute(
            "SELECT relid FROM vecdash_bm25_totals t "
            "WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.relid)"
        ).fetchall()]
        for stats in ("vecdash_bm25_terms", "vecdash_bm25_totals"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE relid = ANY(%s)").format(sql.Identifier(stats)),
                ([*orphans, relid],),
            )
        conn.execute(_add_rows(table, sql.Literal(relid)))
    return relid


_seen_installed: dict[tuple[Any, ...], int] = {}


def ensure_bm25(conn: psycopg.Connection[Any], collection: Collection) -> int | None:
    """The oid to read stored statistics with, installing the triggers (and backfilling) first
    when a managed collection predates them. None: compute statistics on the fly (attached
    tables, or read-only mode before the triggers exist)."""
    if not supports_stored_stats(collection):
        return None
    # Once seen installed, a collection (same database, table and registry creation time) keeps
    # its triggers: they go only with the table, and a recreated collection has a new created_at.
    key = (conn.info.host, conn.info.port, conn.info.dbname, collection.schema_name,
           collection.table_name, collection.created_at)
    if key in _seen_installed:
        return _seen_installed[key]
    relid = bm25_installed(conn, collection)
    if relid is not None:
        _seen_installed[key] = relid
        return relid
    if is_read_only(conn):
        return None
    try:
        return install_bm25(conn, collection)
    except psycopg.errors.ReadOnlySqlTransaction:
        return None


@dataclass(frozen=True)
class CorpusStats:
    docs: int
    total_length: int
    df: dict[str, int]
    bounds: dict[str, tuple[int, int]]  # lexeme -> (max_tf, min_len)


def stored_stats(conn: psycopg.Connection[Any], relid: int) -> CorpusStats:
    """The statistics the triggers keep for a table (for checks and tests)."""
    row = conn.execute(
        "SELECT docs, total_length FROM vecdash_bm25_totals WHERE relid = %s", (relid,)
    ).fetchone()
    terms = conn.execute(
        "SELECT lexeme, df, max_tf, min_len FROM vecdash_bm25_terms WHERE relid = %s", (relid,)
    ).fetchall()
    return CorpusStats(
        docs=int(row[0]) if row else 0,
        total_length=int(row[1]) if row else 0,
        df={str(lex): int(df) for lex, df, _, _ in terms},
        bounds={str(lex): (int(tf), int(ln)) for lex, _, tf, ln in terms},
    )


def bm25_scores(
    docs: Mapping[Any, Mapping[str, int]],
    query_lexemes: Sequence[str],
    *,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
) -> dict[Any, float]:
    """Reference BM25 in plain Python: ``docs`` maps a document id to its term frequencies
    (lexeme -> count). Returns the score of every document that contains a query lexeme."""
    n = len(docs)
    lengths = {d: sum(tf.values()) for d, tf in docs.items()}
    avg = (sum(lengths.values()) / n) if n else 0.0
    avg = avg if avg > 0 else 1.0
    terms = list(dict.fromkeys(query_lexemes))
    df = {t: sum(1 for tf in docs.values() if t in tf) for t in terms}
    out: dict[Any, float] = {}
    for d, tf in docs.items():
        score = 0.0
        matched = False
        for t in terms:
            f = tf.get(t, 0)
            if f == 0:
                continue
            matched = True
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            score += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * lengths[d] / avg))
        if matched:
            out[d] = score
    return out
