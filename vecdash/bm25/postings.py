"""Impact-ordered BM25 postings, kept per collection in plain PostgreSQL (no extension).

A collection with postings has a table ``vecdash_postings_<oid>`` (in the collection's schema)
with one row per (lexeme, document): the lexeme's term frequency ``tf``, the document's length
``len`` and its ``impact``, BM25's term-frequency part at the default k1 / b::

    impact = tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_ref))

computed with a reference average length ``avg_ref`` recorded in ``vecdash_bm25_postings`` when
the first rows were written (or the postings rebuilt). One btree, (lexeme, impact DESC, doc)
INCLUDE (tf, len), lets a query read the highest-impact postings of each of its lexemes first
(see vecdash.bm25.postings_query for the exact threshold algorithm that reads them).

The average length drifts as rows come and go, so the stored impact is not the current one; but
with the current average ``avg_now`` a posting's true term-frequency part is at most
``impact * max(1, avg_now / avg_ref)`` (a larger average shrinks the length normalisation, by at
most that ratio), so bounds built from stored impacts stay valid upper bounds: search stays exact
and only reads more postings as the drift grows. ``rebuild_postings`` re-references them (the
search notes say when the drift passes DRIFT_REBUILD).

Statement-level triggers with transition tables keep the postings exact in the writing
transaction on INSERT / COPY, DELETE, UPDATE and TRUNCATE, as the statistics triggers do (which
fire first: trigger names sort "vecdash_bm25_*" before "vecdash_postings_*"). A deleted row's
postings are found by their index key, its impact recomputed from the old tsvector with the same
expression and the same ``avg_ref``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg import sql

from vecdash.bm25.statistics import (
    DEFAULT_B,
    DEFAULT_K1,
    doc_length,
    ensure_bm25,
    supports_stored_stats,
)
from vecdash.db import require_writable
from vecdash.errors import InvalidInput
from vecdash.statement_timeout import without_statement_timeout

if TYPE_CHECKING:
    from vecdash.collections import Collection

DRIFT_REBUILD = 1.5  # avg_now / avg_ref past which search suggests rebuilding the postings
POSTINGS_TRIGGERS = ("vecdash_postings_ins", "vecdash_postings_del", "vecdash_postings_upd",
                     "vecdash_postings_trunc")
_EVENTS = ("insert", "delete", "update", "truncate")

# The registry of collections that keep postings: one row per collection table (by oid).
META_DDL = sql.SQL("""CREATE TABLE IF NOT EXISTS vecdash_bm25_postings (
       relid oid PRIMARY KEY, avg_ref float8, built_at timestamptz NOT NULL DEFAULT now())""")


def postings_name(relid: int) -> str:
    return f"vecdash_postings_{relid}"


def postings_table(collection: Collection, relid: int) -> sql.Identifier:
    return sql.Identifier(collection.schema_name, postings_name(relid))


def _impact(tf: LiteralString, length: LiteralString) -> sql.Composed:
    """The stored impact of a posting (real): the same expression on insert and on delete, so a
    deleted row's postings are found again by their exact key."""
    return sql.SQL("({tf} * {k1p} / ({tf} + {k1} * (1 - {b} + {b} * {len} / m.avg_ref)))::real").format(
        tf=sql.SQL(tf), len=sql.SQL(length), k1=sql.Literal(DEFAULT_K1),
        k1p=sql.Literal(DEFAULT_K1 + 1), b=sql.Literal(DEFAULT_B))


# The postings of the rows in {src} (transition table or the collection table): per row its
# length once (ts_rank's normalisation, as the statistics triggers compute it), then per lexeme.
_POSTINGS_OF: LiteralString = """
    SELECT x.lexeme, {impact} AS impact, d.id AS doc, x.tf, d.len
    FROM (SELECT n.id, n.tsv, {length}::integer AS len
          FROM {src} n CROSS JOIN LATERAL (SELECT array_to_tsvector(
                 (tsvector_to_array(n.tsv))[1:1])::text::tsquery AS q
                 WHERE length(n.tsv) > 0) f
          OFFSET 0) d
    CROSS JOIN LATERAL (SELECT y.lexeme, greatest(cardinality(y.positions), 1) AS tf
                        FROM unnest(d.tsv) y) x
    CROSS JOIN (SELECT avg_ref FROM vecdash_bm25_postings WHERE relid = {relid}) m"""


def _postings_of(src: sql.Composable, relid: sql.Composable) -> sql.Composed:
    return sql.SQL(_POSTINGS_OF).format(
        impact=_impact("x.tf", "d.len"), src=src, relid=relid,
        length=doc_length(sql.SQL("n.tsv"), sql.SQL("f.q")))


def _set_reference(relid: sql.Composable) -> sql.Composed:
    """An empty collection's first rows fix the reference length (the statistics include them)."""
    return sql.SQL(
        "UPDATE vecdash_bm25_postings m SET avg_ref = s.total_length::float8 / s.docs, "
        "built_at = now() FROM vecdash_bm25_totals s "
        "WHERE m.relid = {relid} AND s.relid = {relid} AND m.avg_ref IS NULL AND s.docs > 0 "
        "AND s.total_length > 0;").format(relid=relid)


def _insert(table: sql.Identifier, src: sql.Composable, relid: sql.Composable) -> sql.Composed:
    # Sorted by the index key: the btree is written page after page, not all over.
    return sql.SQL("INSERT INTO {table} (lexeme, impact, doc, tf, len) "
                   "SELECT * FROM ({rows}) p ORDER BY p.lexeme, p.impact DESC, p.doc;").format(
        table=table, rows=_postings_of(src, relid))


def _delete(table: sql.Identifier) -> sql.Composed:
    return sql.SQL(
        "DELETE FROM {table} p USING ({rows}) o "
        "WHERE p.lexeme = o.lexeme AND p.impact = o.impact AND p.doc = o.doc; "
        "UPDATE vecdash_bm25_postings SET avg_ref = NULL WHERE relid = TG_RELID "
        "AND NOT EXISTS (SELECT 1 FROM {table});").format(
        table=table, rows=_postings_of(sql.Identifier("vecdash_old"), sql.SQL("TG_RELID")))


def _bodies(table: sql.Identifier) -> dict[str, sql.Composable]:
    relid = sql.SQL("TG_RELID")
    new = sql.Identifier("vecdash_new")
    add = sql.Composed([_set_reference(relid), _insert(table, new, relid)])
    return {
        "insert": add,
        "delete": _delete(table),
        "update": sql.Composed([_delete(table), add]),
        "truncate": sql.SQL("TRUNCATE {}; UPDATE vecdash_bm25_postings SET avg_ref = NULL "
                            "WHERE relid = TG_RELID;").format(table),
    }


def _function_name(relid: int, event: str) -> str:
    return f"vecdash_postings_{relid}_{event}"


_TRIGGER: dict[str, LiteralString] = {
    "insert": "CREATE TRIGGER vecdash_postings_ins AFTER INSERT ON {table} REFERENCING NEW TABLE "
              "AS vecdash_new FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    "delete": "CREATE TRIGGER vecdash_postings_del AFTER DELETE ON {table} REFERENCING OLD TABLE "
              "AS vecdash_old FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    "update": "CREATE TRIGGER vecdash_postings_upd AFTER UPDATE ON {table} REFERENCING OLD TABLE "
              "AS vecdash_old NEW TABLE AS vecdash_new FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    "truncate": "CREATE TRIGGER vecdash_postings_trunc AFTER TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
}


def _require_managed(collection: Collection) -> None:
    if not supports_stored_stats(collection):
        raise InvalidInput(
            f"{collection.name!r} is not a managed collection with a stored tsv column, so it "
            "cannot keep BM25 postings (its keyword search scores rows on the fly).")


def enable_postings(conn: psycopg.Connection[Any], collection: Collection) -> None:
    """Keep impact-ordered BM25 postings for a managed collection: the table, its index and
    triggers, backfilled from the stored rows with the current average length as reference, in
    one transaction (the collection's writers wait). Running it again rebuilds the postings
    (re-referencing them to today's average length)."""
    require_writable(conn)
    _require_managed(collection)
    relid = ensure_bm25(conn, collection)
    if relid is None:
        raise InvalidInput(f"{collection.name!r} has no BM25 statistics yet (read-only mode?).")
    # A backfill of a large collection is work the user asked for: no statement timeout.
    with without_statement_timeout(conn):
        _build(conn, collection, relid)
    forget_cached(collection)
    # Index-only reads need the visibility map: vacuum the new table now (outside the
    # transaction) rather than wait for autovacuum.
    if conn.autocommit:
        with without_statement_timeout(conn):
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(postings_table(collection, relid)))


def _build(conn: psycopg.Connection[Any], c: Collection, relid: int) -> None:
    table = postings_table(c, relid)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('vecdash_bm25'))")
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(c.table))
        conn.execute(META_DDL)
        _drop_objects(conn, c, relid)
        conn.execute(sql.SQL(
            "CREATE TABLE {} (lexeme text COLLATE \"C\" NOT NULL, impact real NOT NULL, "
            "doc bigint NOT NULL, tf smallint NOT NULL, len integer NOT NULL)").format(table))
        conn.execute(
            "INSERT INTO vecdash_bm25_postings (relid, avg_ref) VALUES (%s, (SELECT CASE "
            "WHEN docs > 0 AND total_length > 0 THEN total_length::float8 / docs END "
            "FROM vecdash_bm25_totals WHERE relid = %s))",
            (relid, relid))
        conn.execute(_insert(table, c.table, sql.Literal(relid)))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} (lexeme, impact DESC, doc) INCLUDE (tf, len)")
                     .format(sql.Identifier(postings_name(relid) + "_top"), table))
        for event, body in _bodies(table).items():
            conn.execute(sql.SQL(
                "CREATE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {} "
                "RETURN NULL; END $$").format(sql.Identifier(c.schema_name),
                                              sql.Identifier(_function_name(relid, event)), body))
            conn.execute(sql.SQL(_TRIGGER[event]).format(
                table=c.table, fn=sql.Identifier(c.schema_name, _function_name(relid, event))))


rebuild_postings = enable_postings


def _drop_objects(conn: psycopg.Connection[Any], c: Collection, relid: int) -> None:
    for name in POSTINGS_TRIGGERS:
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name),
                                                                        c.table))
    for event in _EVENTS:
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(
            sql.Identifier(c.schema_name, _function_name(relid, event))))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(postings_table(c, relid)))
    conn.execute("DELETE FROM vecdash_bm25_postings WHERE relid = %s", (relid,))


def disable_postings(conn: psycopg.Connection[Any], collection: Collection) -> None:
    """Stop keeping postings for a collection (its keyword search takes the exact path again)."""
    require_writable(conn)
    relid = _table_oid(conn, collection)
    if relid is None:
        return
    with conn.transaction():
        conn.execute(META_DDL)
        _drop_objects(conn, collection, relid)
    forget_cached(collection)


def drop_postings_of_table(conn: psycopg.Connection[Any], collection: Collection) -> None:
    """For drop_collection: the postings, triggers' functions and registry row of a table about
    to be dropped (nothing when it keeps none)."""
    if conn.execute("SELECT to_regclass('vecdash_bm25_postings')").fetchone() == (None,):
        return
    relid = _table_oid(conn, collection)
    if relid is not None:
        _drop_objects(conn, collection, relid)
    forget_cached(collection)


def _table_oid(conn: psycopg.Connection[Any], collection: Collection) -> int | None:
    row = conn.execute("SELECT to_regclass(%s)::oid",
                       (collection.table.as_string(conn),)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


@dataclass(frozen=True)
class PostingsStatus:
    """A collection's postings: how many, the reference and current average lengths."""

    relid: int
    postings: int
    avg_ref: float | None
    avg_now: float | None

    @property
    def drift(self) -> float:
        """avg_now / avg_ref (1.0 when either is unknown): how loose the stored bounds are."""
        if not self.avg_ref or not self.avg_now:
            return 1.0
        return self.avg_now / self.avg_ref


def postings_status(conn: psycopg.Connection[Any], collection: Collection) -> PostingsStatus | None:
    """The collection's postings, or None when it keeps none."""
    if not supports_stored_stats(collection):
        return None
    row = conn.execute(
        "SELECT m.relid, m.avg_ref, s.total_length::float8 / nullif(s.docs, 0) "
        "FROM vecdash_bm25_postings m LEFT JOIN vecdash_bm25_totals s ON s.relid = m.relid "
        "WHERE to_regclass('vecdash_bm25_postings') IS NOT NULL AND m.relid = to_regclass(%s)",
        (collection.table.as_string(conn),)).fetchone() if _meta_exists(conn) else None
    if row is None:
        return None
    relid = int(row[0])
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        postings_table(collection, relid))).fetchone()
    return PostingsStatus(relid, int(count[0]) if count else 0,
                          None if row[1] is None else float(row[1]),
                          None if row[2] is None else float(row[2]))


def _meta_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('vecdash_bm25_postings') IS NOT NULL").fetchone()
    return bool(row and row[0])


# Whether a collection keeps postings, cached for a few seconds so a search does not spend a
# round trip on it: a change made by this process clears it at once, one made elsewhere is seen
# within the TTL (a search that meets a postings table dropped meanwhile falls back and clears it).
CACHE_SECONDS = 5.0
_cache: dict[tuple[Any, ...], tuple[float, int | None]] = {}


def _key(collection: Collection) -> tuple[Any, ...]:
    return (collection.schema_name, collection.table_name, collection.created_at)


def forget_cached(collection: Collection) -> None:
    """This process changed the collection's postings: look again on its next search."""
    for key in [k for k in _cache if k[-3:] == _key(collection)]:
        _cache.pop(key, None)


def postings_relid(conn: psycopg.Connection[Any], collection: Collection) -> int | None:
    """The table's oid when the collection keeps postings (cached, see CACHE_SECONDS)."""
    if not supports_stored_stats(collection):
        return None
    key = (conn.info.host, conn.info.port, conn.info.dbname, *_key(collection))
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    relid = None
    if _meta_exists(conn):
        row = conn.execute("SELECT relid FROM vecdash_bm25_postings WHERE relid = to_regclass(%s)",
                           (collection.table.as_string(conn),)).fetchone()
        relid = int(row[0]) if row else None
    _cache[key] = (now, relid)
    return relid


def forget_all_cached() -> None:
    """After a search met a postings table that is gone: look again next time."""
    _cache.clear()
