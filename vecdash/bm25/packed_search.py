"""Keyword search from the packed postings (vecdash.bm25.packed keeps them): one statement reads
the snapshot's rows of the query's lexemes, with their statistics, while no write has made it
stale; the documents' length normalisations are read once per snapshot and computed once per
k1 / b; vecdash.bm25.packed_scoring adds the parts up and picks the top, exactly as the SQL arms
score."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

import numpy as np
import psycopg

from vecdash.bm25.packed_scoring import sum_by_id, top, top_floor
from vecdash.db import outside_transaction

if TYPE_CHECKING:
    from vecdash.collections import Collection

# One statement: the snapshot when still valid, the query's lexemes, the rows of those it holds
# (lexeme order: the SQL arms add the lexemes' parts in that order, so scores agree to the bit),
# each with its df in the statistics, and their document count and total length: after deletes
# the snapshot's postings still hold the deleted documents (skipped), the statistics do not.
_READ: LiteralString = """
    SELECT w.writes IS NOT DISTINCT FROM s.writes, s.token, coalesce(tot.docs, 0),
           coalesce(tot.total_length, 0),
           q.lexemes, p.lexeme, t.df, p.ids, p.tfs_less_one
    FROM vecdash_bm25_packed_state s
    LEFT JOIN vecdash_bm25_writes w ON w.relid = s.relid
    LEFT JOIN vecdash_bm25_totals tot ON tot.relid = s.relid
    CROSS JOIN (SELECT coalesce(array_agg(DISTINCT u.lexeme ORDER BY u.lexeme), '{}') AS lexemes
                FROM unnest(to_tsvector(%(cfg)s::regconfig, %(q)s)) u) q
    LEFT JOIN vecdash_bm25_packed p ON p.relid = s.relid AND p.lexeme = ANY(q.lexemes)
                                       AND w.writes IS NOT DISTINCT FROM s.writes
    LEFT JOIN vecdash_bm25_terms t ON t.relid = s.relid AND t.lexeme = p.lexeme
    WHERE s.relid = %(relid)s
    ORDER BY p.lexeme, p.segment"""
# What packed_bm25 returns for a snapshot that a write has made stale.
STALE = "stale"


@dataclass(frozen=True)
class PackedArm:
    """A keyword arm from the snapshot: the query's lexemes, the top documents' BM25 scores by
    id, and what it read."""

    lexemes: list[str]
    scores: dict[int, float]
    postings_read: int
    documents_scored: int


def read_snapshot(conn: psycopg.Connection[Any], query: LiteralString,
                  params: Any) -> list[Any] | None:
    """The rows of one statement over the snapshot's tables, None when they do not exist (or the
    role may not read them). In autocommit one statement needs no transaction (no round trips
    for BEGIN / COMMIT); inside the caller's transaction a savepoint keeps a failure local."""
    try:
        if outside_transaction(conn):
            return conn.execute(query, params, binary=True).fetchall()
        with conn.transaction():
            return conn.execute(query, params, binary=True).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn,
            psycopg.errors.InsufficientPrivilege):
        return None  # (UndefinedColumn: an earlier layout, replaced at the next build)


def packed_bm25(conn: psycopg.Connection[Any], collection: Collection, relid: int, query: str,
                *, candidates: int, k1: float, b: float,
                max_lexemes: int | None) -> PackedArm | str | None:
    """The BM25 top ``candidates`` from the snapshot; STALE when a write made it stale; None when
    there is none (or the query has more than ``max_lexemes`` lexemes in the collection: the
    exact path caps them)."""
    rows = read_snapshot(conn, _READ, {"cfg": collection.text_config, "q": query, "relid": relid})
    if not rows:
        return None
    if not rows[0][0]:
        return STALE
    token, docs, total_length, lexemes = rows[0][1], int(rows[0][2]), float(rows[0][3]), rows[0][4]
    found = [r for r in rows if r[5] is not None and r[6] is not None]  # (no df: all deleted)
    df_of = {r[5]: int(r[6]) for r in found}  # the statistics' df, every segment's row alike
    if max_lexemes is not None and len(df_of) > max_lexemes:
        return None
    if not found or docs == 0:
        return PackedArm(list(lexemes), {}, 0, 0)
    avglen = (total_length / docs) or 1.0
    norms = _norms(conn, relid, str(token), k1=k1, b=b, avglen=avglen)
    if norms is None:
        return None
    ids = [np.frombuffer(r[7], dtype=">i4") for r in found]  # lexeme order; segments: other ids
    if any(len(run) and (run[0] < 0 or run[-1] >= len(norms)) for run in ids):
        return None  # (ids ascending in a run) not the snapshot's documents: the exact path
    idfs = np.array([np.log(1 + (docs - df_of[r[5]] + 0.5) / (df_of[r[5]] + 0.5)) for r in found])
    tfs = [np.frombuffer(r[8], dtype=np.uint8) for r in found]
    found_sums = sum_by_id(ids, tfs, idfs, norms, k1=k1,
                           at_least=top_floor(ids, tfs, idfs, norms, k1=k1, n=candidates))
    return PackedArm(list(lexemes), top(found_sums.ids, found_sums.sums, candidates),
                     sum(map(len, ids)), found_sums.met)


@dataclass
class _SnapshotLengths:
    """A snapshot's document lengths by id (0 where no document), its deleted ids and the
    length normalisations computed from them."""

    token: str
    lengths: np.ndarray
    deleted: np.ndarray
    norms: dict[tuple[float, float], np.ndarray]


_norms_lock = threading.Lock()
_norms_cache: dict[int, _SnapshotLengths] = {}  # by relid, the last snapshot read
_NORMS_KEPT = 2  # k1 / b pairs kept per snapshot (the default and the one being tried)


def _norms(conn: psycopg.Connection[Any], relid: int, token: str, *, k1: float, b: float,
           avglen: float) -> np.ndarray | None:
    """Every document's BM25 length normalisation, k1 * (1 - b + b * length / avglen), indexed by
    id, -1 for a deleted document (the kernel skips its postings): the lengths read once per
    snapshot, the normalisation computed once per snapshot and k1 / b (element by element, so
    to the bit what a posting's own computation gives)."""
    with _norms_lock:
        hit = _norms_cache.get(relid)
    if hit is None or hit.token != token:
        rows = read_snapshot(conn, "SELECT ids, lengths, deleted FROM "
                             "vecdash_bm25_packed_state WHERE relid = %s AND token = %s",
                             (relid, token))
        if not rows:
            return None
        row = rows[0]
        ids = np.frombuffer(row[0], dtype=">i8").astype(np.intp)
        by_id = np.zeros(int(ids.max()) + 1 if len(ids) else 1)
        by_id[ids] = np.frombuffer(row[1], dtype=">i4")
        hit = _SnapshotLengths(token, by_id, np.frombuffer(row[2], dtype=">i8").astype(np.intp),
                               {})
    norms = hit.norms.get((k1, b))
    if norms is None:
        norms = k1 * (1 - b + b * hit.lengths / avglen)
        norms[hit.deleted] = -1.0
        kept = list(hit.norms.items())[-(_NORMS_KEPT - 1):] if _NORMS_KEPT > 1 else []
        hit = _SnapshotLengths(token, hit.lengths, hit.deleted, {**dict(kept), (k1, b): norms})
    with _norms_lock:
        _norms_cache[relid] = hit
    return norms


