"""Which writes a managed collection's table has had since a snapshot of it was taken: a
counter of write statements and, per statement, the lowest id it wrote (vecdash.bm25.packed
uses them to tell a snapshot that no write has touched from one that only appends have passed,
which it can extend, and from one it must rebuild).

Statement-level triggers (vecdash's loads and plain SQL alike) add one to the table's row in
vecdash_bm25_writes and log (write number, kind, lowest id written) in vecdash_bm25_write_log: for an
INSERT or COPY the lowest new id, for an UPDATE the lowest old or new id, for a DELETE the lowest
old id, for a TRUNCATE the lowest bigint (it touches everything); a statement that wrote no row
logs nothing. The counter row is updated in the writing transaction, so writers of one table take
their numbers in commit order and a snapshot that sees write n sees every write before it: the
rows with ids above the highest id a snapshot held were all written by later statements. Every
COMPACT_EVERY writes the log is folded into one row, so a table written statement by statement
keeps a short log between builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from vecdash.collections import Collection

_COUNT_AND_LOG: LiteralString = """
    CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE n bigint; low bigint; only_deletes boolean;
    BEGIN
        INSERT INTO vecdash_bm25_writes AS w (relid, writes) VALUES (TG_RELID, 1)
        ON CONFLICT (relid) DO UPDATE SET writes = w.writes + 1 RETURNING w.writes INTO n;
        low := {lowest};
        IF low IS NOT NULL THEN
            INSERT INTO vecdash_bm25_write_log (relid, write, kind, low_id)
            VALUES (TG_RELID, n, {kind}, low);
        END IF;
        IF n % {every} = 0 THEN  -- folded: the table's log in one row
            WITH folded AS (
                DELETE FROM vecdash_bm25_write_log WHERE ctid = ANY(ARRAY(
                    SELECT l.ctid FROM vecdash_bm25_write_log l WHERE l.relid = TG_RELID
                    FOR UPDATE SKIP LOCKED))  -- (rows a build is forgetting: left to it)
                RETURNING kind, low_id)
            SELECT min(f.low_id), bool_and(f.kind = 'd') INTO low, only_deletes FROM folded f;
            IF low IS NOT NULL THEN
                INSERT INTO vecdash_bm25_write_log (relid, write, kind, low_id)
                VALUES (TG_RELID, n, CASE WHEN only_deletes THEN 'd' ELSE 'u' END, low);
            END IF;
        END IF;
        RETURN NULL;
    END $$"""
# Every this many writes the trigger folds the table's log into one row (stamped with that
# write's number): the kind 'd' when every write in it was a delete, else 'u', and the lowest
# id any of them wrote. Without it, a table written statement by statement (an application's
# own inserts) would log a row per statement until vecdash next builds its snapshot. Folding
# only ever makes writes_since say more was rewritten or deleted than was (a whole build, or
# deleted ids looked for from a lower id), never less: the folded row keeps the lowest id, and
# its number is that of the last write it holds.
COMPACT_EVERY = 1000
# Per trigger function: the kind of write it logs and the lowest id the statement wrote.
_LOWEST = {
    "vecdash_bm25_write_insert": ("i", "(SELECT min(id) FROM vecdash_new)"),
    "vecdash_bm25_write_update": ("u", "least((SELECT min(id) FROM vecdash_old), "
                                       "(SELECT min(id) FROM vecdash_new))"),
    "vecdash_bm25_write_delete": ("d", "(SELECT min(id) FROM vecdash_old)"),
    "vecdash_bm25_write_truncate": ("t", "-9223372036854775808"),
}
WRITE_LOG_DDL: list[sql.SQL | sql.Composed] = [
    sql.SQL("CREATE TABLE IF NOT EXISTS vecdash_bm25_writes (relid oid PRIMARY KEY, "
            "writes bigint NOT NULL)"),
    sql.SQL("""CREATE TABLE IF NOT EXISTS vecdash_bm25_write_log (relid oid NOT NULL,
            write bigint NOT NULL, kind "char" NOT NULL, low_id bigint NOT NULL,
            PRIMARY KEY (relid, write))"""),
    # (An earlier log without kinds: its writes count as updates, which a whole build takes in.)
    sql.SQL("""ALTER TABLE vecdash_bm25_write_log
            ADD COLUMN IF NOT EXISTS kind "char" NOT NULL DEFAULT 'u'"""),
    *(sql.SQL(_COUNT_AND_LOG).format(name=sql.Identifier(name), kind=sql.Literal(kind),
                                     lowest=sql.SQL(lowest), every=sql.Literal(COMPACT_EVERY))
      for name, (kind, lowest) in _LOWEST.items()),
]
# (Each event its own trigger: a trigger with transition tables takes one event. The BM25
# statistics' triggers capture the same transition tables, which a statement shares.)
TRIGGERS: dict[str, LiteralString] = {
    "vecdash_bm25_writes_ins": "AFTER INSERT ON {table} REFERENCING NEW TABLE AS vecdash_new "
                               "FOR EACH STATEMENT EXECUTE FUNCTION vecdash_bm25_write_insert()",
    "vecdash_bm25_writes_upd": "AFTER UPDATE ON {table} REFERENCING OLD TABLE AS vecdash_old "
                               "NEW TABLE AS vecdash_new FOR EACH STATEMENT "
                               "EXECUTE FUNCTION vecdash_bm25_write_update()",
    "vecdash_bm25_writes_del": "AFTER DELETE ON {table} REFERENCING OLD TABLE AS vecdash_old "
                               "FOR EACH STATEMENT EXECUTE FUNCTION vecdash_bm25_write_delete()",
    "vecdash_bm25_writes_trunc": "AFTER TRUNCATE ON {table} "
                                 "FOR EACH STATEMENT EXECUTE FUNCTION vecdash_bm25_write_truncate()",
}
# The one trigger of the first packed postings (a count without the log), replaced.
_EARLIER_TRIGGERS = ("vecdash_bm25_writes", "vecdash_bm25_writes_trunc")


def install_write_log(conn: psycopg.Connection[Any], collection: Collection, relid: int) -> None:
    """The tables, functions and the table's triggers, in the caller's transaction (under
    vecdash's DDL lock); the table is locked (SHARE ROW EXCLUSIVE, for CREATE TRIGGER) only
    when a trigger is missing."""
    # (Functions without the log's folding, of an earlier vecdash, are replaced too.)
    ready = conn.execute("SELECT to_regprocedure('vecdash_bm25_write_truncate()') IS NOT NULL "
                         "AND EXISTS (SELECT FROM pg_attribute WHERE attname = 'kind' AND "
                         "attrelid = to_regclass('vecdash_bm25_write_log')) AND NOT EXISTS ("
                         "SELECT FROM pg_proc WHERE proname = ANY(%s) "
                         "AND prosrc NOT LIKE '%%only_deletes%%')", (list(_LOWEST),)).fetchone()
    if not (ready and ready[0]):  # (functions replaced only then: a trigger may be running them)
        for statement in WRITE_LOG_DDL:
            conn.execute(statement)
    present = {r[0] for r in conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s", (relid,)).fetchall()}
    if not set(TRIGGERS) <= present:
        for name in _EARLIER_TRIGGERS:
            if name in present and name not in TRIGGERS:
                conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(
                    sql.Identifier(name), collection.table))
        for name, body in TRIGGERS.items():
            conn.execute(sql.SQL("CREATE OR REPLACE TRIGGER {} " + body).format(
                sql.Identifier(name), table=collection.table))
    # (Only when missing: a conflict with the row a writer holds would wait for its commit.)
    conn.execute("INSERT INTO vecdash_bm25_writes (relid, writes) SELECT %(r)s, 0 WHERE NOT "
                 "EXISTS (SELECT FROM vecdash_bm25_writes WHERE relid = %(r)s) "
                 "ON CONFLICT (relid) DO NOTHING", {"r": relid})


def drop_write_log(conn: psycopg.Connection[Any], collection: Collection, relid: int) -> None:
    """The table's triggers, write count and log gone, in the caller's transaction (which waits
    for the table's lock, SHARE ROW EXCLUSIVE, only when a trigger is there): once no snapshot
    needs them, writes to the table cost nothing of vecdash's. The next build installs them
    again."""
    present = {r[0] for r in conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s", (relid,)).fetchall()}
    for name in dict.fromkeys((*TRIGGERS, *_EARLIER_TRIGGERS)):  # (one name is in both)
        if name in present:
            conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name),
                                                                 collection.table))
    for side in ("vecdash_bm25_writes", "vecdash_bm25_write_log"):
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (side,)).fetchone() == (True,):
            conn.execute(sql.SQL("DELETE FROM {} WHERE relid = %s").format(sql.Identifier(side)),
                         (relid,))


@dataclass(frozen=True)
class WritesSince:
    """The table's write count and what the writes after a snapshot's did to the rows it
    holds (ids up to its highest): whether any inserted, updated or truncated them (only a
    whole build takes that in), and the lowest id a delete among them removed, if any."""

    writes: int
    rewrote_held: bool
    lowest_deleted: int | None


def writes_since(conn: psycopg.Connection[Any], relid: int, since: int,
                 held_ids_up_to: int) -> WritesSince:
    """In the caller's snapshot: what the writes after write ``since`` did to ids up to
    ``held_ids_up_to`` (rows above them were all written later, see the module's text)."""
    row = conn.execute(
        "SELECT coalesce((SELECT writes FROM vecdash_bm25_writes WHERE relid = %(r)s), 0), "
        "coalesce(bool_or(kind <> 'd'), false), min(low_id) FILTER (WHERE kind = 'd') "
        "FROM vecdash_bm25_write_log WHERE relid = %(r)s AND write > %(s)s AND low_id <= %(m)s",
        {"r": relid, "s": since, "m": held_ids_up_to}).fetchone()
    assert row is not None
    return WritesSince(int(row[0]), bool(row[1]), None if row[2] is None else int(row[2]))


def forget_writes_up_to(conn: psycopg.Connection[Any], relid: int, writes: int | None) -> None:
    """Drop the log of the writes a new snapshot has taken in (up to write ``writes``; every
    write when None: no snapshot needs the log). In its own statement after the snapshot's
    transaction, rows another session is folding skipped: it never waits for a writer, and a
    writer's fold never makes a build fail."""
    conn.execute(
        "DELETE FROM vecdash_bm25_write_log WHERE ctid = ANY(ARRAY("
        "SELECT l.ctid FROM vecdash_bm25_write_log l WHERE l.relid = %(r)s "
        "AND (%(w)s::bigint IS NULL OR l.write <= %(w)s) FOR UPDATE SKIP LOCKED))",
        {"r": relid, "w": writes})
