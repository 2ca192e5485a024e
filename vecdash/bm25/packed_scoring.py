"""Scoring the packed postings: each posting's BM25 part added to its document's sum, in one
compiled pass over the postings read (numba, compiled once per machine and cached on disk), and
the top documents picked from the sums.

The parts are computed and added exactly as the SQL arms compute and add them (the same
operations in the same order, lexeme by lexeme, no fused multiply-add), so the scores agree to the
bit. The sums live beside the normalisations in one array by id, kept for the next search and
all zeros between searches: a search costs the postings it reads, not a pass over every
document. The top's n-th score is known beforehand to reach a floor (the n-th best part of a
rare word's run), and only sums at the floor or above leave the kernel to be ranked. With a
second core and many postings, the lower and upper halves of the ids are added at once, on two
threads (the kernel releases the GIL).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from vecdash.background import warm_up_once

_kernel_lock = threading.Lock()
_kernel: Callable[..., tuple[int, int]] | None = None


def _compiled_kernel() -> Callable[..., tuple[int, int]]:
    """The numba kernel, imported (and compiled, or loaded from numba's disk cache) on first use:
    importing numba costs a fraction of a second that pages which never score postings skip."""
    global _kernel
    with _kernel_lock:
        if _kernel is None:
            import numba

            @numba.njit(cache=True, nogil=True, boundscheck=False)
            def add_parts(ids: Any, tfs_less_one: Any, begins: Any, ends: Any, idfs: Any,
                          k1: float, norms_and_sums: Any, touched: Any, scores: Any,
                          at_least: float) -> tuple[int, int]:
                k1p1 = k1 + 1
                n = 0
                for run in range(len(idfs)):
                    idf = idfs[run]
                    for i in range(begins[run], ends[run]):
                        doc = ids[i]
                        norm = norms_and_sums[doc, 0]
                        if norm < 0.0:  # a deleted document
                            continue
                        tf = np.float64(np.int64(tfs_less_one[i]) + 1)
                        # the SQL arms' expression, operation for operation
                        part = idf * tf * k1p1 / (tf + norm)
                        seen = norms_and_sums[doc, 1]
                        touched[n] = doc  # kept only when unseen: every part is above 0,
                        n += seen == 0.0  # so a zero sum is a document not met yet
                        norms_and_sums[doc, 1] = seen + part
                kept = 0  # the sums of at least at_least, moved to the front
                for j in range(n):
                    doc = touched[j]
                    total = norms_and_sums[doc, 1]
                    norms_and_sums[doc, 1] = 0.0
                    if total >= at_least:
                        touched[kept] = doc
                        scores[kept] = total
                        kept += 1
                return kept, n

            _kernel = add_parts
        return _kernel


def warm_up() -> float:
    """Compile (or load) the kernel on a tiny input; the seconds it took."""
    started = time.perf_counter()
    sum_by_id([np.array([1], dtype=np.intp)], [np.array([0], dtype=np.uint8)],
              np.array([1.0]), np.array([1.0, 1.0]), k1=1.2)
    return time.perf_counter() - started


def warm_up_in_background() -> threading.Thread:
    """Start ``warm_up`` in a daemon thread, once per process."""
    return warm_up_once("BM25 scoring", warm_up)


@dataclass(eq=False)  # (removed from the free list by identity)
class _Scratch:
    """One search's working memory: per id its length normalisation and its sum side by side (a
    posting touches one cache line, not two), the sums all zero between searches; and room for
    the ids met and their sums."""

    norms: np.ndarray  # the normalisations copied into column 0 (kept to recognise them)
    norms_and_sums: np.ndarray
    touched: np.ndarray
    scores: np.ndarray


# Free scratch memory for the next search, whatever its thread: Streamlit runs each rerun in a
# new thread, and a fresh array costs its page faults (milliseconds at 1M documents). As many as
# searches ran at once, at most _SCRATCH_KEPT.
_scratch_lock = threading.Lock()
_scratch_free: list[_Scratch] = []
_SCRATCH_KEPT = 4


def _take_scratch(norms: np.ndarray, room: int) -> _Scratch:
    with _scratch_lock:
        mine = next((s for s in _scratch_free if s.norms is norms), None)
        if mine is None and _scratch_free:
            mine = _scratch_free[-1]
        if mine is not None:
            _scratch_free.remove(mine)
    if mine is None or len(mine.norms_and_sums) != len(norms):
        pairs = np.zeros((len(norms), 2))
        pairs[:, 0] = norms
        return _Scratch(norms, pairs, np.empty(room, np.int64), np.empty(room))
    if mine.norms is not norms:  # another snapshot, or k1 / b: its sums are all zero
        mine.norms_and_sums[:, 0] = norms
        mine.norms = norms
    if len(mine.touched) < room:
        mine.touched, mine.scores = np.empty(room, np.int64), np.empty(room)
    return mine


def _give_back(scratch: _Scratch) -> None:
    with _scratch_lock:
        if len(_scratch_free) < _SCRATCH_KEPT:
            _scratch_free.append(scratch)


SPLIT_MIN_POSTINGS = 40_000  # below this, a second thread's start costs more than it saves
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _cores() -> int:
    """The cores this process may run on (a container or taskset may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        return os.cpu_count() or 1


def _second_core() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecdash-bm25")
        return _pool


@dataclass(frozen=True)
class Sums:
    """The documents kept and their sums, and how many documents the postings met."""

    ids: np.ndarray
    sums: np.ndarray
    met: int


def sum_by_id(ids: Sequence[np.ndarray], tfs_less_one: Sequence[np.ndarray], idfs: np.ndarray,
              norms: np.ndarray, *, k1: float,
              at_least: float = 0.0) -> Sums:
    """Each id of the runs once and the sum of its BM25 parts,
    ``idf * tf * (k1 + 1) / (tf + norm)`` with the run's idf, the posting's term frequency (one
    more than ``tfs_less_one``, bytes) and the id's length normalisation, added in the runs'
    order, kept when the sum is ``at_least`` or more (``top_floor``: at a million documents,
    picking the top from every sum costs as much as adding them); ids whose normalisation is
    below 0 (deleted documents) are skipped. A run holds ids in range of ``norms``, ascending.
    ``norms`` is read only; passing the same array again (a cached one) spares copying it."""
    for run in ids:  # (the kernel does not check bounds: a bad id would write anywhere)
        if len(run) and (run[0] < 0 or run[-1] >= len(norms)):
            raise ValueError("a posting's id is outside the snapshot's documents")
    all_ids = np.concatenate(ids).astype(np.int64, copy=False) if ids else np.zeros(0, np.int64)
    all_tfs = np.concatenate(tfs_less_one) if tfs_less_one else np.zeros(0, np.uint8)
    starts = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(run) for run in ids], out=starts[1:])
    # Two halves of the ids at once when there is a second core and enough postings (the sums
    # of different ids never share a write): at a million documents the adding waits on memory.
    halves = 2 if len(all_ids) >= SPLIT_MIN_POSTINGS and _cores() >= 2 else 1
    cuts = [0, len(norms) // 2, len(norms)] if halves == 2 else [0, len(norms)]
    bounds = [starts[:-1]] + [
        np.array([np.searchsorted(all_ids[starts[r]:starts[r + 1]], cut) + starts[r]
                  for r in range(len(ids))], dtype=np.int64) for cut in cuts[1:-1]] + [starts[1:]]
    # The kernel writes touched[n] before it knows whether the id is new: n never passes the
    # postings of its half, nor the ids there are.
    rooms = [min(int((bounds[h + 1] - bounds[h]).sum()), cuts[h + 1] - cuts[h]) + 1
             for h in range(halves)]
    offsets = np.cumsum([0, *rooms])
    scratch = _take_scratch(norms, int(offsets[-1]))
    idfs = np.asarray(idfs, dtype=np.float64)

    def add(h: int) -> tuple[int, int]:
        part = slice(int(offsets[h]), int(offsets[h + 1]))
        return _compiled_kernel()(all_ids, all_tfs, bounds[h], bounds[h + 1], idfs, float(k1),
                                  scratch.norms_and_sums, scratch.touched[part],
                                  scratch.scores[part], float(at_least))

    if halves == 2:
        try:
            other = _second_core().submit(add, 1)
        except RuntimeError:  # (the interpreter is shutting down: no new threads)
            done = [add(0), add(1)]
        else:
            done = [add(0), other.result()]
    else:
        done = [add(0)]
    kept_ids = np.concatenate([scratch.touched[offsets[h]:offsets[h] + done[h][0]]
                               for h in range(halves)])
    kept_sums = np.concatenate([scratch.scores[offsets[h]:offsets[h] + done[h][0]]
                                for h in range(halves)])
    _give_back(scratch)  # (only when the kernel finished: its sums are zero again)
    return Sums(kept_ids, kept_sums, sum(met for _, met in done))


def top_floor(ids: Sequence[np.ndarray], tfs_less_one: Sequence[np.ndarray], idfs: np.ndarray,
              norms: np.ndarray, *, k1: float, n: int) -> float:
    """A score the ``n``-th best sum of ``sum_by_id`` is known to reach: the ``n``-th best part
    within one run (its documents' sums are at least their parts, every part being above 0),
    the shortest run that holds ``n`` live documents and at most an eighth of the postings (or
    4n): the rarest word's, cheap to score, and the rarest words hold the best parts. 0 when no
    run does."""
    longest = max(4 * n, sum(len(run) for run in ids) // 8)
    for r in sorted(range(len(ids)), key=lambda r: len(ids[r])):  # the shortest first
        if not n <= len(ids[r]) <= longest:
            continue
        run_norms = norms[ids[r]]
        live = run_norms >= 0  # (below 0: a deleted document)
        tf = tfs_less_one[r][live].astype(np.float64) + 1
        parts = idfs[r] * tf * (k1 + 1) / (tf + run_norms[live])  # as the kernel computes them
        if len(parts) >= n:
            return float(np.partition(parts, len(parts) - n)[len(parts) - n])
    return 0.0


def top(ids: np.ndarray, scores: np.ndarray, n: int) -> dict[int, float]:
    """The ``n`` best (score descending, then id ascending, as the SQL arms' ORDER BY)."""
    if len(ids) > n:
        kth = np.partition(scores, len(scores) - n)[len(scores) - n]
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)
        tied = tied[np.argsort(ids[tied], kind="stable")[: n - len(above)]]  # lowest ids
        keep = np.concatenate([above, tied])
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))
    return {int(i): float(s) for i, s in zip(ids[order], scores[order], strict=True)}
