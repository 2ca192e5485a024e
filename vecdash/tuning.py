"""Tuning a search setting that holds on the next query: a grid of settings (semantic weight,
fusion, keyword ranker, BM25 k1 / b, candidate depth) scored per labeled query in numpy, and
k-fold cross-validation over the queries (each fold's setting is chosen on the other folds and
scored on it).

The candidates for one BM25 (k1, b) pair are fetched once per query, at the grid's deepest
candidate depth; every weight, fusion and shallower depth is fused from them in numpy
(``vecdash.quality.EvalRun``). Settings and their spec syntax: ``vecdash.search_setting``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from vecdash.bm25.statistics import DEFAULT_B, DEFAULT_K1
from vecdash.collections import Collection
from vecdash.embedders import Embedder
from vecdash.errors import Cancelled, InvalidInput
from vecdash.labels import LabeledSet, Query
from vecdash.quality import DEFAULT_WEIGHTS, EvalRun, ProgressFn, measure_names
from vecdash.quality import run_labeled_queries as _run
from vecdash.search import KEYWORD_RANKERS, embed_query
from vecdash.search_setting import Setting, check_setting

DEFAULT_K1S = (0.6, 0.9, 1.2, 1.5, 2.0)
DEFAULT_BS = (0.3, 0.5, 0.75, 0.9)
DEFAULT_DEPTHS = (50, 100)
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class TuneGrid:
    """The settings a tune tries. fusions: (fusion, RRF k) pairs."""

    weights: Sequence[float] = DEFAULT_WEIGHTS
    fusions: Sequence[tuple[str, int]] = (("convex", 60), ("rrf", 20), ("rrf", 60))
    keyword_rankers: Sequence[str] = KEYWORD_RANKERS
    k1s: Sequence[float] = DEFAULT_K1S
    bs: Sequence[float] = DEFAULT_BS
    depths: Sequence[int] = DEFAULT_DEPTHS

    @classmethod
    def weight_sweep(cls, *, candidates: int = 100, rrf_k: int = 60) -> TuneGrid:
        """The Quality Lab's sweep: weight and fusion, BM25 at its defaults, one depth."""
        return cls(fusions=(("convex", 60), ("rrf", rrf_k)), keyword_rankers=("bm25",),
                   k1s=(DEFAULT_K1,), bs=(DEFAULT_B,), depths=(candidates,))

    def settings(self) -> list[Setting]:
        """Every distinct ranking of the grid (settings that rank alike appear once)."""
        empty = [name for name in ("weights", "fusions", "keyword_rankers", "k1s", "bs", "depths")
                 if not len(getattr(self, name))]
        if empty:
            raise InvalidInput(f"The tuning grid has no values for {', '.join(empty)}, so there "
                               "is nothing to try. Give at least one value for each.")
        out: dict[Setting, None] = {}
        for depth, ranker, k1, b, (fusion, rrf_k), w in itertools.product(
                self.depths, self.keyword_rankers, self.k1s, self.bs, self.fusions, self.weights):
            s = check_setting(Setting(float(w), fusion, int(rrf_k), ranker, float(k1), float(b),
                                      int(depth)))
            out[s.normalized()] = None
        return list(out)


# --- fetching and scoring -------------------------------------------------------------------


@dataclass
class TuningRuns:
    """Every judged query's candidates, once per BM25 (k1, b) pair, at ``depth`` per arm."""

    runs: dict[tuple[float, float], EvalRun]
    depth: int

    @property
    def base(self) -> EvalRun:
        """The run at BM25's defaults, which also holds ts_rank_cd."""
        return self.runs[(DEFAULT_K1, DEFAULT_B)]

    @property
    def queries(self) -> list[Query]:
        return self.base.queries

    def run_for(self, setting: Setting) -> EvalRun:
        pair = setting.bm25_pair
        if pair not in self.runs:
            raise InvalidInput(f"{setting.label}: its candidates (BM25 k1={pair[0]:g}, "
                               f"b={pair[1]:g}) were not fetched; include them in the grid.")
        if setting.candidates > self.depth:
            raise InvalidInput(f"{setting.label}: depth {setting.candidates} is deeper than the "
                               f"{self.depth} candidates fetched per arm.")
        return self.runs[pair]

    def scores(self, setting: Setting, *, k: int = 10) -> np.ndarray:
        """Every query's measures under ``setting`` (rows in query order, ``measure_names``)."""
        return self.run_for(setting).scores(setting.config(), k=k)


CancelledFn = Callable[[], bool]


def fetch_tuning_runs(
    conn: psycopg.Connection[Any],
    collection: Collection,
    labeled: LabeledSet,
    *,
    embedder: Embedder,
    settings: Sequence[Setting],
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
    exact: bool = False,
) -> TuningRuns:
    """Embed the judged queries once and fetch their candidates once per BM25 (k1, b) pair the
    settings use (the defaults always: they also carry semantic and ts_rank_cd), at the deepest
    depth. Progress counts (pair, query) fetches; ``cancelled()`` true stops between them with
    Cancelled (nothing is written, so nothing is left half-done). ``exact``: the semantic arm
    as an exact scan (see quality.run_labeled_queries)."""
    if not settings:
        raise InvalidInput("There are no settings to fetch candidates for.")
    pairs = list(dict.fromkeys([(DEFAULT_K1, DEFAULT_B), *(s.bm25_pair for s in settings)]))
    depth = max(s.candidates for s in settings)
    queries = [q for q in labeled.queries if q.id in labeled.qrels]
    vectors = None
    if queries and not labeled.problems:
        embed_query(collection, queries[0].text, embedder=embedder)  # checks dimension and model
        vectors = embedder.embed([q.text for q in queries])
    total = len(pairs) * max(len(queries), 1)
    runs: dict[tuple[float, float], EvalRun] = {}
    for n, (k1, b) in enumerate(pairs):
        def step(i: int, _: int, offset: int = n * len(queries)) -> None:
            if cancelled is not None and cancelled():
                raise Cancelled("The tune was cancelled; nothing was saved. Start it again when "
                                "you are ready.")
            if progress is not None:
                progress(offset + i, total)

        rankers: tuple[Any, ...] = ("bm25", "ts_rank_cd") if n == 0 else ("bm25",)
        runs[(k1, b)] = _run(conn, collection, labeled, embedder=embedder, candidates=depth,
                             k1=k1, b=b, progress=step, vectors=vectors, keyword_rankers=rankers,
                             exact=exact)
    return TuningRuns(runs, depth)


# --- cross-validation -----------------------------------------------------------------------


def judged_mask(queries: Sequence[Query], qrels: dict[str, dict[str, int]]) -> np.ndarray:
    """True for the queries with at least one relevant judgment (grade >= 1): the others score
    0 under every setting and cannot tell settings apart."""
    return np.array([any(g >= 1 for g in qrels.get(q.id, {}).values()) for q in queries],
                    dtype=bool)


def check_folds(judged: np.ndarray, folds: int) -> None:
    """InvalidInput unless ``folds`` folds can each hold a judged query."""
    if not isinstance(folds, int) or folds < 2:
        raise InvalidInput(f"Cross-validation needs at least 2 folds; got {folds!r}.")
    n, relevant = len(judged), int(judged.sum())
    if n < folds:
        raise InvalidInput(f"There are {n} labeled queries, fewer than the {folds} folds asked "
                           f"for. Use at most {n} folds (--cv {max(n, 2)}), or label more queries.")
    if relevant == 0:
        raise InvalidInput("Every judgment is 0 (not relevant), so every setting scores 0 and "
                           "there is nothing to tune or compare. Grade the relevant documents "
                           "1 (partly) or 2 (highly) in the qrels.")
    if relevant < folds:
        raise InvalidInput(f"Only {relevant} of the {n} labeled queries have a relevant "
                           f"judgment (grade >= 1), so {folds} folds would leave a fold with no "
                           f"judged query to score on. Use at most {relevant} folds, or judge "
                           "more queries.")


def fold_of(judged: np.ndarray, folds: int, *, seed: int = 0) -> np.ndarray:
    """Each query's fold (0..folds-1): shuffled with ``seed`` and dealt in turn, the judged
    queries first, so every fold holds a judged query when there are enough."""
    check_folds(judged, folds)
    rng = np.random.default_rng(seed)
    out = np.empty(len(judged), dtype=np.int64)
    start = 0
    for part in (np.flatnonzero(judged), np.flatnonzero(~judged)):
        shuffled = rng.permutation(part)
        out[shuffled] = (start + np.arange(len(shuffled))) % folds
        start += len(shuffled)
    return out


@dataclass(frozen=True)
class CrossValidation:
    """cv_score: the mean over queries of each query's score under the setting chosen on the
    other folds; in_sample_best: the best setting's mean on all queries (chosen and scored on
    the same queries, so optimistic). Indices refer to the rows of the score matrix."""

    folds: int
    seed: int
    cv_score: float
    in_sample_best: float
    chosen: int
    fold_choices: list[int]
    fold_scores: list[float]
    fold_sizes: list[int]
    per_query: np.ndarray = field(repr=False)


def cross_validate(scores: np.ndarray, judged: np.ndarray, *, folds: int = DEFAULT_FOLDS,
                   seed: int = 0) -> CrossValidation:
    """k-fold cross-validation of "pick the setting with the best mean" over a (settings x
    queries) matrix of one measure. Ties go to the first setting."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise InvalidInput("There are no settings to choose from (the grid is empty).")
    if scores.shape[1] != len(judged):
        raise InvalidInput(f"{scores.shape[1]} scored queries for {len(judged)} labeled ones.")
    assignment = fold_of(judged, folds, seed=seed)
    per_query = np.zeros(scores.shape[1])
    choices, fold_scores, sizes = [], [], []
    for f in range(folds):
        test = assignment == f
        pick = int(np.argmax(scores[:, ~test].mean(axis=1)))
        per_query[test] = scores[pick, test]
        choices.append(pick)
        fold_scores.append(float(scores[pick, test].mean()))
        sizes.append(int(test.sum()))
    means = scores.mean(axis=1)
    chosen = int(np.argmax(means))
    return CrossValidation(folds, seed, float(per_query.mean()), float(means[chosen]), chosen,
                           choices, fold_scores, sizes, per_query)


@dataclass
class TuneResult:
    settings: list[Setting]
    scores: np.ndarray = field(repr=False)  # settings x queries x measures
    measure: str
    k: int
    cv: CrossValidation
    runs: TuningRuns = field(repr=False)

    @property
    def chosen(self) -> Setting:
        """The setting chosen on all labeled queries (what to ship)."""
        return self.settings[self.cv.chosen]

    def per_query(self, setting: Setting) -> np.ndarray:
        """One measure per query (``self.measure``) under ``setting``."""
        return self.runs.scores(setting, k=self.k)[:, measure_names(self.k).index(self.measure)]

    def summary(self) -> pd.DataFrame:
        """The tuned setting's cross-validated and in-sample scores beside semantic and BM25
        at their defaults (nothing tuned: their cross-validated score is their mean)."""
        depth = self.runs.depth
        rows = [("tuned (cross-validated)", "chosen per fold", self.cv.cv_score),
                ("tuned (in-sample best)", self.chosen.label, self.cv.in_sample_best)]
        for name, s in (("semantic", Setting(1.0, candidates=depth)),
                        ("BM25", Setting(0.0, candidates=depth))):
            rows.append((name, s.label, float(self.per_query(s).mean())))
        return pd.DataFrame(rows, columns=["ranking", "setting", self.measure])

    def folds_table(self) -> pd.DataFrame:
        cv = self.cv
        return pd.DataFrame({"fold": range(1, cv.folds + 1), "queries": cv.fold_sizes,
                             "setting chosen on the other folds":
                                 [self.settings[i].label for i in cv.fold_choices],
                             f"{self.measure} on the fold": cv.fold_scores})

    def report(self) -> str:
        """The figures as plain text (the eval command prints it)."""
        lines = [f"{self.cv.folds}-fold cross-validation (seed {self.cv.seed}) over "
                 f"{len(self.runs.queries)} queries, {len(self.settings)} settings, by "
                 f"{self.measure}:"]
        for row in self.summary().itertuples(index=False):
            lines.append(f"  {row[0]:<24} {row[2]:.4f}   {row[1]}")
        lines.append("  per fold: " + "; ".join(
            f"{i + 1}: {self.settings[c].label} -> {s:.4f}"
            for i, (c, s) in enumerate(zip(self.cv.fold_choices, self.cv.fold_scores,
                                           strict=True))))
        lines.append(f"chosen on all queries: {self.chosen.label}")
        return "\n".join(lines)


def tune(
    conn: psycopg.Connection[Any],
    collection: Collection,
    labeled: LabeledSet,
    *,
    embedder: Embedder,
    grid: TuneGrid | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    measure: str = "nDCG@10",
    k: int = 10,
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
    exact: bool = False,
) -> TuneResult:
    """Score every setting of ``grid`` on every judged query and cross-validate the choice.
    Everything is checked before the database is asked (folds against the queries, the grid).
    Nothing is written: a cancelled tune (Cancelled) leaves nothing behind."""
    settings = (grid or TuneGrid()).settings()
    if measure not in measure_names(k):
        raise InvalidInput(f"Unknown measure {measure!r}; choose one of "
                           f"{', '.join(measure_names(k))}.")
    queries = [q for q in labeled.queries if q.id in labeled.qrels]
    judged = judged_mask(queries, labeled.qrels)
    check_folds(judged, folds)
    fetches = len({s.bm25_pair for s in settings} | {(DEFAULT_K1, DEFAULT_B)}) * len(queries)
    total = fetches + len(settings)
    runs = fetch_tuning_runs(conn, collection, labeled, embedder=embedder, settings=settings,
                             progress=progress, cancelled=cancelled, exact=exact)
    column = measure_names(k).index(measure)
    scores = np.zeros((len(settings), len(runs.queries), 4))
    for i, s in enumerate(settings):
        if i % 50 == 0:
            if cancelled is not None and cancelled():
                raise Cancelled("The tune was cancelled; nothing was saved.")
            if progress is not None:
                progress(fetches + i, total)
        scores[i] = runs.scores(s, k=k)
    if progress is not None:
        progress(total, total)
    judged = judged_mask(runs.queries, labeled.qrels)
    cv = cross_validate(scores[:, :, column], judged, folds=folds, seed=seed)
    return TuneResult(settings, scores, measure, k, cv, runs)
