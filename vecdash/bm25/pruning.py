"""Exact pruning of BM25 with stored statistics, for queries whose lexemes match many rows.

Each lexeme's score bound (its idf at its largest term frequency in the shortest document that
holds it, see ``TermStats.bounds``) caps what it can add to any row's score. A row whose
lexemes' bounds sum to less than a threshold cannot reach the top, so the keyword arm's GIN scan
asks only for the combinations of lexemes that can (``match_query``: a tsquery of ANDs), with a
first threshold guessed from the lexemes' document frequencies (``prune_threshold``).

Every row the first pass leaves out scores below its threshold, so when ``candidates`` scored
rows reach it the top is exact. When fewer do, a second pass (``second_pass_query``) scores only
the rows the first one did not match, with the threshold lowered to the score of the first
pass's ``candidates``-th row (or over every matching row when it found fewer): the rows it
matched are scored already and the ones it left out of its top rank below that top, so the two
tops merge into the exact one. The top and its scores are the same as without pruning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

if TYPE_CHECKING:
    from vecdash.collections import Collection

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
        return " | ".join(tsquery_lexeme(x) for x in self.lexemes)

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


def term_stats(conn: psycopg.Connection[Any], c: Collection, relid: int,
               query: str) -> TermStats | None:
    """The stored statistics of the query's lexemes in table ``relid``; None when none of them
    occurs (or the table is empty)."""
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


def prune_threshold(terms: TermStats, *, candidates: int, k1: float, b: float) -> float | None:
    """A first threshold for pruned BM25, or None when pruning cannot pay (few matching rows,
    or one lexeme).

    The highest sum of lexeme bounds that about FIRST_PASS_EXPECTED times ``candidates``
    documents are expected to reach, taking the lexemes as independent (each in a fraction df/N
    of the documents; lexemes of real text co-occur more often than that, which only adds rows to
    the first pass). A guess that is too high costs a second pass, never exactness; bounds are
    loose (a row reaching one mostly scores well below it), so the margin is wide, which makes
    second passes rarer.

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


def match_query(terms: TermStats, theta: float, *, k1: float, b: float) -> str | None:
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
    return " | ".join("(" + " & ".join(tsquery_lexeme(terms.lexemes[i]) for i in clause) + ")"
                      for clause in clauses)


def second_pass_query(terms: TermStats, theta: float, match: str, scores: list[float], *,
                      candidates: int, k1: float, b: float) -> str | None:
    """The tsquery of the rows a second pass scores after a first pass over ``match`` with
    threshold ``theta`` found ``scores``; None when the first pass's top is exact already (see
    the module's docstring)."""
    got = sorted(scores, reverse=True)
    if len(got) >= candidates and got[candidates - 1] >= theta:
        return None
    wider = (match_query(terms, got[candidates - 1], k1=k1, b=b)
             if len(got) >= candidates else None)
    if wider is None:
        wider = terms.any_tsquery()
    if match:  # empty when no set of lexemes could reach the first threshold
        wider = f"({wider}) & !({match})"
    return wider


def _by_bound(terms: TermStats, bound: np.ndarray) -> list[int]:
    """The lexemes' indexes from the largest bound down (ties: in lexeme order)."""
    return sorted(range(len(bound)), key=lambda i: (-bound[i], terms.lexemes[i]))


def tsquery_lexeme(lexeme: str) -> str:
    """A lexeme quoted for tsquery input (embedded quotes and backslashes doubled)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
