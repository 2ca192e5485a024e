"""Tuning benchmark: a full cross-validated tune of the demo's 64 labeled queries (weight 0..1,
convex / RRF k 20 and 60, BM25 and ts_rank_cd, k1 x b = 5 x 4, depth 50 and 100: about 1,180
settings, 5 folds) against one plain evaluation of the same queries (one candidate fetch per
query, every figure of the Quality Lab's table) measured in the same run.

    .venv/bin/python bench/tune_bench.py [--data-dir DIR]

Without --data-dir it runs on a fresh temporary embedded PostgreSQL (loads the demo with the local
model). Query embedding is in both figures (the tune embeds once, as an evaluation does). Target:
the full tune under 60 s on this machine (2 cores); the ratio says what the 20 (k1, b) fetches
and the numpy fusion of every setting cost over one evaluation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from vecdash import db  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.demo import load_demo  # noqa: E402
from vecdash.embedders import LocalEmbedder  # noqa: E402
from vecdash.labels import demo_labeled_set  # noqa: E402
from vecdash.quality import metrics_table, run_labeled_queries, standard_configs  # noqa: E402
from vecdash.tuning import TuneGrid, tune  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="reuse this embedded database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vecdash-tune-bench-") as tmp:
        settings = Settings.from_env({"VECDASH_DATA_DIR": args.data_dir or tmp})
        embedder = LocalEmbedder()
        embedder.embed(["warm up"])
        with db.connect(settings) as conn:
            demo, _ = load_demo(conn, embedder=embedder)
            labeled = demo_labeled_set()
            run_labeled_queries(conn, demo, labeled, embedder=embedder)  # untimed: warm server
            t0 = time.perf_counter()
            run = run_labeled_queries(conn, demo, labeled, embedder=embedder)
            metrics_table(run, standard_configs())
            baseline = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = tune(conn, demo, labeled, embedder=embedder, grid=TuneGrid(), folds=5)
            tuned = time.perf_counter() - t0
        if not args.data_dir:
            db.stop_embedded(settings)
    print(f"one evaluation of {len(run.queries)} queries: {baseline:.2f} s")
    print(f"full tune ({len(result.settings)} settings, {len(result.runs.runs)} (k1, b) "
          f"fetches, 5 folds): {tuned:.1f} s = {tuned / baseline:.1f}x one evaluation "
          f"(target < 60 s)")
    print(result.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
