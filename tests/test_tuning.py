"""Tuning: settings and their specs, cross-validation on synthetic score matrices whose answer
is known, the bad inputs, the demo's tune, cancel, and the saved search default."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from vecdash import db
from vecdash.collections import Collection
from vecdash.config import Settings
from vecdash.embedders import LocalEmbedder
from vecdash.errors import Cancelled, InvalidInput, ReadOnlyError
from vecdash.labels import LabeledSet, Query, demo_labeled_set
from vecdash.quality import Config, run_labeled_queries
from vecdash.search_setting import (
    Setting,
    clear_search_setting,
    parse_setting,
    save_search_setting,
    saved_search_setting,
)
from vecdash.tuning import TuneGrid, cross_validate, fold_of, tune


def test_specs_parse_and_labels_parse_back() -> None:
    assert parse_setting("semantic") == Setting(1.0)
    assert parse_setting("hybrid w=0.7") == Setting(0.7)
    s = parse_setting("hybrid w=0.6 fusion=rrf rrf_k=20 ranker=bm25 k1=0.9 b=0.5 depth=50")
    assert s == Setting(0.6, "rrf", 20, "bm25", 0.9, 0.5, 50)
    assert parse_setting(s.label) == s
    assert parse_setting("ts_rank_cd").keyword_ranker == "ts_rank_cd"
    # knobs a ranking ignores do not make a different setting
    assert Setting(1.0, "rrf", 5, "ts_rank_cd", 2.0).normalized() == Setting(1.0)
    assert Setting(0.5, "convex", 5, "ts_rank_cd", 2.0).label == "hybrid w=0.5 ranker=ts_rank_cd"
    for bad, words in (("", "start with"), ("fancy w=1", "start with"), ("hybrid w=two", "w=two"),
                       ("hybrid x=1", "x=1"), ("hybrid w=1.5", "between 0 and 1"),
                       ("bm25 k1=0", "k1"), ("hybrid fusion=max", "Unknown fusion"),
                       ("hybrid depth=0", "depth")):
        with pytest.raises(InvalidInput, match=words):
            parse_setting(bad)


def test_grid_settings_are_distinct_and_an_empty_grid_is_refused() -> None:
    settings = TuneGrid().settings()
    assert len(settings) == len(set(settings))
    assert Setting(1.0, candidates=50) in settings and Setting(1.0) in settings
    assert len(TuneGrid.weight_sweep().settings()) == 2 * 9 + 2  # two fusions; the ends once
    with pytest.raises(InvalidInput, match="no values for weights"):
        TuneGrid(weights=()).settings()
    with pytest.raises(InvalidInput, match="k1s, bs"):
        TuneGrid(k1s=(), bs=[]).settings()
    with pytest.raises(InvalidInput, match="no settings"):
        cross_validate(np.zeros((0, 10)), np.ones(10, dtype=bool))


def test_cv_is_never_above_the_in_sample_best_on_data_built_to_overfit() -> None:
    # 300 settings, none better than another in truth: each query's score is noise. The
    # in-sample best is the luckiest setting; cross-validation must not share its luck.
    gaps = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        scores = rng.random((300, 64))
        cv = cross_validate(scores, np.ones(64, dtype=bool), folds=5, seed=seed)
        assert cv.cv_score < cv.in_sample_best
        assert cv.in_sample_best == pytest.approx(scores.mean(axis=1).max())
        gaps.append(cv.in_sample_best - cv.cv_score)
    # the in-sample best's optimism is real (about 0.1 here), and CV's score is near the truth
    assert np.mean(gaps) > 0.05


def test_cv_finds_a_setting_that_is_truly_better() -> None:
    rng = np.random.default_rng(5)
    scores = rng.random((50, 40)) * 0.5
    scores[17] += 0.5  # better on every query
    cv = cross_validate(scores, np.ones(40, dtype=bool), folds=4, seed=1)
    assert cv.chosen == 17 and cv.fold_choices == [17] * 4
    assert cv.cv_score == pytest.approx(cv.in_sample_best)
    assert sum(cv.fold_sizes) == 40 and cv.per_query == pytest.approx(scores[17])


def test_folds_are_balanced_seeded_and_each_holds_a_judged_query() -> None:
    judged = np.array([True] * 5 + [False] * 20)
    folds = fold_of(judged, 5, seed=3)
    assert sorted(np.bincount(folds)) == [5] * 5
    assert sorted(folds[judged]) == [0, 1, 2, 3, 4]
    assert (fold_of(judged, 5, seed=3) == folds).all()
    assert not (fold_of(judged, 5, seed=4) == folds).all()


def test_bad_fold_inputs_have_clear_messages() -> None:
    with pytest.raises(InvalidInput, match="3 labeled queries, fewer than the 5 folds"):
        fold_of(np.ones(3, dtype=bool), 5)
    with pytest.raises(InvalidInput, match="leave a fold with no judged query"):
        fold_of(np.array([True, True] + [False] * 10), 5)
    with pytest.raises(InvalidInput, match="Every judgment is 0"):
        fold_of(np.zeros(10, dtype=bool), 5)
    with pytest.raises(InvalidInput, match="at least 2 folds"):
        fold_of(np.ones(10, dtype=bool), 1)


def test_tune_refuses_bad_labels_before_any_work(conn: Any, demo: Collection,
                                                 embedder: LocalEmbedder) -> None:
    real = demo_labeled_set()
    few = LabeledSet(real.queries[:3], {q.id: real.qrels[q.id] for q in real.queries[:3]}, "t")
    with pytest.raises(InvalidInput, match="fewer than the 5 folds"):
        tune(conn, demo, few, embedder=embedder)
    zero = LabeledSet(real.queries[:8], {q.id: {d: 0 for d in real.qrels[q.id]}
                                         for q in real.queries[:8]}, "t")
    with pytest.raises(InvalidInput, match="Every judgment is 0"):
        tune(conn, demo, zero, embedder=embedder)
    with pytest.raises(InvalidInput, match="no values for depths"):
        tune(conn, demo, real, embedder=embedder, grid=TuneGrid(depths=()))


def test_a_shallower_depth_fused_in_numpy_equals_fetching_it(conn: Any, demo: Collection,
                                                            embedder: LocalEmbedder) -> None:
    labeled = demo_labeled_set()
    # The same query vectors for both runs: the claim is about candidates and fusion, not about
    # the model giving bit-identical vectors on every call.
    judged = [q for q in labeled.queries if q.id in labeled.qrels]  # the ones a run embeds
    vectors = embedder.embed([q.text for q in judged])
    deep = run_labeled_queries(conn, demo, labeled, embedder=embedder, candidates=100,
                               vectors=vectors)
    shallow = run_labeled_queries(conn, demo, labeled, embedder=embedder, candidates=20,
                                  vectors=vectors)
    for w, fusion in ((0.5, "convex"), (0.7, "rrf"), (0.0, "convex"), (1.0, "convex")):
        got = deep.scores(Config("x", w, fusion, depth=20))
        assert got == pytest.approx(shallow.scores(Config("x", w, fusion)))
    assert not np.allclose(deep.scores(Config("x", 0.5)), shallow.scores(Config("x", 0.5)))


@pytest.fixture(scope="module")
def demo_tune(pool: Any, demo: Collection, embedder: LocalEmbedder) -> Any:
    with pool.connection() as conn:
        return tune(conn, demo, demo_labeled_set(), embedder=embedder, folds=5, seed=0)


def test_demo_tune(demo_tune: Any) -> None:
    t = demo_tune
    assert len(t.runs.runs) == 20 and t.runs.depth == 100  # one fetch per (k1, b) pair
    assert len(t.settings) > 1000
    summary = t.summary().set_index("ranking")["nDCG@10"]
    assert summary["tuned (cross-validated)"] <= summary["tuned (in-sample best)"]
    assert summary["tuned (cross-validated)"] > summary["semantic"] > summary["BM25"]
    assert t.chosen.label in t.report() and "cross-validated" in t.report()
    # the in-sample best is the chosen setting's own mean
    assert t.per_query(t.chosen).mean() == pytest.approx(t.cv.in_sample_best)
    assert len(t.folds_table()) == 5


def test_tune_cancel_leaves_nothing(conn: Any, demo: Collection, embedder: LocalEmbedder) -> None:
    calls: list[int] = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 10

    with pytest.raises(Cancelled, match="nothing was saved"):
        tune(conn, demo, demo_labeled_set(), embedder=embedder, cancelled=cancelled)
    assert len(calls) == 11  # stopped at the eleventh query, not at the end
    assert saved_search_setting(conn, demo) is None


def test_saved_search_default_round_trip_and_read_only(conn: Any, demo: Collection,
                                                       settings: Settings) -> None:
    s = parse_setting("hybrid w=0.6 fusion=rrf rrf_k=20 k1=0.9 b=0.5 depth=50")
    try:
        save_search_setting(conn, demo, s, note="5-fold CV")
        got = saved_search_setting(conn, demo)
        assert got is not None and got.setting == s and got.note == "5-fold CV"
        save_search_setting(conn, demo, Setting(0.3))
        got = saved_search_setting(conn, demo)
        assert got is not None and got.setting == Setting(0.3)
        with db.connect(replace(settings, read_only=True)) as ro:
            assert saved_search_setting(ro, demo) is not None  # reading works read-only
            with pytest.raises(ReadOnlyError):
                save_search_setting(ro, demo, s)
    finally:
        clear_search_setting(conn, demo)
    assert saved_search_setting(conn, demo) is None


def test_unlabeled_query_is_ignored_by_folds(conn: Any, demo: Collection,
                                            embedder: LocalEmbedder) -> None:
    real = demo_labeled_set()
    labeled = LabeledSet([*real.queries[:12], Query("extra", "no judgments here")],
                         {q.id: real.qrels[q.id] for q in real.queries[:12]}, "t")
    t = tune(conn, demo, labeled, embedder=embedder, grid=TuneGrid.weight_sweep(), folds=3)
    assert len(t.runs.queries) == 12 and sum(t.cv.fold_sizes) == 12
