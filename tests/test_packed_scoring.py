"""The packed postings' scoring kernel: the sums by id are those of adding each run's parts in
order (to the bit), each id once, in one pass or in two halves of the ids on two threads, the
sums array left zeroed for the next search (in any thread); only sums at a floor or above are
kept, and the floor keeps the n best; the top is the n best, score descending and id
ascending."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vecdash.bm25 import packed_scoring
from vecdash.bm25.packed_scoring import Sums, sum_by_id, top, top_floor

K1 = 1.2


def reference(ids: list[np.ndarray], tfs: list[np.ndarray], idfs: np.ndarray,
              norms: np.ndarray) -> dict[int, float]:
    sums: dict[int, float] = {}
    for run, run_tfs, idf in zip(ids, tfs, idfs, strict=True):
        tf = run_tfs.astype(np.float64) + 1
        parts = idf * tf * (K1 + 1) / (tf + norms[run])  # as numpy and SQL compute them
        for doc, part in zip(run.tolist(), parts.tolist(), strict=True):
            sums[doc] = sums.get(doc, 0.0) + part
    return sums


runs = st.lists(st.tuples(st.sets(st.integers(0, 199), max_size=60),
                          st.floats(0.01, 12.0)), max_size=6)


@contextmanager
def halves(split: bool) -> Iterator[None]:
    """Postings added in two halves of the ids on two threads (on a machine with two cores), or
    in one."""
    was = packed_scoring.SPLIT_MIN_POSTINGS
    packed_scoring.SPLIT_MIN_POSTINGS = 0 if split else 2**62
    try:
        yield
    finally:
        packed_scoring.SPLIT_MIN_POSTINGS = was


@pytest.mark.parametrize("split", [False, True])
@settings(max_examples=150, deadline=None)
@given(runs=runs, seed=st.integers(0, 2**16))
def test_sums_are_the_runs_parts_added_in_order(split: bool,
                                                 runs: list[tuple[set[int], float]],
                                                 seed: int) -> None:
    with halves(split):
        check_sums(runs, seed)


def check_sums(runs: list[tuple[set[int], float]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    norms = rng.random(200) * 3
    ids = [np.array(sorted(r), dtype=">i4") for r, _ in runs]
    tfs = [rng.integers(0, 255, size=len(run), dtype=np.uint8) for run in ids]
    idfs = np.array([idf for _, idf in runs])
    touched, scores = pairs(sum_by_id(ids, tfs, idfs, norms, k1=K1))
    want = reference(ids, tfs, idfs, norms)
    assert len(touched) == len(set(touched.tolist())) == len(want)
    assert dict(zip(touched.tolist(), scores.tolist(), strict=True)) == want  # exact equality
    again = pairs(sum_by_id(ids, tfs, idfs, norms, k1=K1))  # nothing left over from the first
    assert again[0].tolist() == touched.tolist() and again[1].tolist() == scores.tolist()


def pairs(found: Sums) -> tuple[np.ndarray, np.ndarray]:
    return found.ids, found.sums


@pytest.mark.parametrize("split", [False, True])
@settings(max_examples=200, deadline=None)
@given(runs=st.lists(st.sets(st.integers(0, 299), max_size=150), max_size=6),
       n=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_the_floor_keeps_the_top(split: bool, runs: list[set[int]], n: int, seed: int) -> None:
    with halves(split):
        check_floor(runs, n, seed)


def check_floor(runs: list[set[int]], n: int, seed: int) -> None:
    # Few norm and idf values: many equal sums, so a top that ends in a tie is common.
    rng = np.random.default_rng(seed)
    norms = rng.choice([0.4, 1.2, 2.0], size=300)
    norms[rng.random(300) < 0.05] = -1.0  # deleted documents
    ids = [np.array(sorted(r), dtype=">i4") for r in runs]
    tfs = [rng.integers(0, 3, size=len(run), dtype=np.uint8) for run in ids]
    idfs = rng.choice([0.3, 2.5, 7.0], size=len(runs))
    floor = top_floor(ids, tfs, idfs, norms, k1=K1, n=n)
    kept = sum_by_id(ids, tfs, idfs, norms, k1=K1, at_least=floor)
    every = sum_by_id(ids, tfs, idfs, norms, k1=K1)
    assert kept.met == every.met == len(every.ids)
    assert sorted(kept.ids.tolist()) == sorted(d for d, s in zip(every.ids.tolist(),
                                                                 every.sums.tolist(),
                                                                 strict=True) if s >= floor)
    assert top(kept.ids, kept.sums, n) == top(every.ids, every.sums, n)


def test_the_floor_leaves_most_documents_out() -> None:
    # A rare word with a large idf and a common one: the top n hold the rare word, and the
    # floor, its n-th best part, is above what the common word alone gives.
    rng = np.random.default_rng(3)
    norms = rng.random(20_000) + 0.5
    ids = [np.sort(rng.choice(20_000, size=500, replace=False)),
           np.sort(rng.choice(20_000, size=10_000, replace=False))]
    tfs = [rng.integers(0, 3, size=len(r), dtype=np.uint8) for r in ids]
    idfs = np.array([8.0, 0.5])
    floor = top_floor(ids, tfs, idfs, norms, k1=K1, n=10)
    kept = sum_by_id(ids, tfs, idfs, norms, k1=K1, at_least=floor)
    assert kept.met > 10_000 and len(kept.ids) < 500, (kept.met, len(kept.ids))


@pytest.mark.parametrize("split", [False, True])
def test_threads_score_at_once_without_mixing_their_sums(split: bool) -> None:
    rng = np.random.default_rng(1)
    norms = rng.random(5000) + 0.2
    cases = []
    for _ in range(4):
        ids = [np.sort(rng.choice(5000, size=1500, replace=False)).astype(np.intp)
               for _ in range(3)]
        tfs = [rng.integers(0, 4, size=1500, dtype=np.uint8) for _ in ids]
        idfs = rng.random(3) + 0.5
        cases.append((ids, tfs, idfs, reference(ids, tfs, idfs, norms)))
    failures: list[int] = []

    def score(case: int) -> None:
        ids, tfs, idfs, want = cases[case]
        for _ in range(30):
            touched, scores = pairs(sum_by_id(ids, tfs, idfs, norms, k1=K1))
            if dict(zip(touched.tolist(), scores.tolist(), strict=True)) != want:
                failures.append(case)

    threads = [threading.Thread(target=score, args=(i,)) for i in range(4)]
    with halves(split):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_each_search_scores_with_its_own_snapshots_lengths() -> None:
    # The working memory kept between searches holds the last search's normalisations: a search
    # of another snapshot (other values, another size) or another k1 / b must not score with them.
    rng = np.random.default_rng(2)
    snapshots = [rng.random(50) + 0.1, rng.random(80) + 0.1, rng.random(50) + 2.0]
    snapshots[2][7] = -1.0  # a deleted document
    ids = [np.array([1, 7, 20, 49]), np.array([7, 33])]
    tfs = [np.array([0, 3, 1, 2], dtype=np.uint8), np.array([5, 0], dtype=np.uint8)]
    idfs = np.array([1.5, 0.7])
    for norms in snapshots * 2:
        want = {d: s for d, s in reference(ids, tfs, idfs, np.maximum(norms, 0)).items()
                if norms[d] >= 0}
        touched, scores = pairs(sum_by_id(ids, tfs, idfs, norms, k1=K1))
        assert dict(zip(touched.tolist(), scores.tolist(), strict=True)) == want


def test_more_postings_than_documents_stay_inside_the_working_memory(tmp_path: Path) -> None:
    # Every document met, then met again: the kernel (compiled without bounds checks) must not
    # write past the room it was given. A fresh process compiles it with NUMBA_BOUNDSCHECK=1,
    # which turns such a write into an IndexError.
    script = (
        "import numpy as np\n"
        "from vecdash.bm25 import packed_scoring\n"
        "from vecdash.bm25.packed_scoring import sum_by_id\n"
        "for size, split in [(s, split) for s in (1, 2, 3, 8) for split in (0, 2**62)]:\n"
        "    packed_scoring.SPLIT_MIN_POSTINGS = split  # two halves, or one\n"
        "    run = np.arange(size)\n"
        "    tfs = np.zeros(size, dtype=np.uint8)\n"
        "    for _ in range(2):\n"
        "        found = sum_by_id([run] * 3, [tfs] * 3, np.ones(3), np.ones(size), k1=1.2)\n"
        "        assert sorted(found.ids.tolist()) == list(range(size)), found\n"
    )
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_id_outside_the_documents_is_refused() -> None:
    norms = np.ones(10)
    for bad in ([3, 10], [-1, 4]):
        with pytest.raises(ValueError, match="outside"):
            sum_by_id([np.array(bad)], [np.zeros(2, dtype=np.uint8)], np.array([1.0]), norms,
                      k1=K1)


@given(scores=st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0]), max_size=40),
       n=st.integers(1, 45), seed=st.integers(0, 1000))
def test_top_is_the_n_best_ties_by_lowest_id(scores: list[float], n: int, seed: int) -> None:
    ids = np.random.default_rng(seed).permutation(1000)[: len(scores)]
    got = top(ids, np.array(scores), n)
    want = sorted(zip(ids.tolist(), scores, strict=True), key=lambda p: (-p[1], p[0]))[:n]
    assert list(got.items()) == want
