"""Appends to the 100k and 1M collections of a scale_bench data directory with the embedded
server's checkpoint settings at their defaults and at a longer checkpoint_timeout / larger
max_wal_size, alternating: whether checkpoints (each page's first change after one writes its
full image into the WAL) explain why an append to the 1M table is slower (issue 20).

    .venv/bin/python bench/append_checkpoints.py --data-dir DIR [--rounds 2] [--rows 10000]
        [--corpus FILE]

DIR is one that `bench/scale_bench.py --data-dir DIR` filled (scale_100000, scale_1000000). Per
round, setting and size, once no VACUUM runs: ingest_records of --rows new perturbed copies
(batches of 5,000, the HNSW and GIN indexes kept, the packed postings' update held back), with
the full-page images, WAL bytes and checkpoints of the append (pg_stat_wal,
pg_stat_checkpointer). No row is deleted until every append is timed (a delete's autovacuum would
overlap the next); then all are deleted and vacuumed, and the settings reset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import realtext  # noqa: E402
import scale_bench as sb  # noqa: E402
from psycopg import sql  # noqa: E402

from vecdash import db  # noqa: E402
from vecdash.bm25 import packed  # noqa: E402
from vecdash.collections import get_collection  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.embedders import LocalEmbedder  # noqa: E402
from vecdash.ingest import ingest_records  # noqa: E402
from vecdash.records import Record  # noqa: E402

SETTINGS = {"default": {}, "longer": {"checkpoint_timeout": "15min", "max_wal_size": "4GB"}}
NAMES = ("scale_100000", "scale_1000000")


def configure(conn: Any, values: dict[str, str]) -> None:
    for name in ("checkpoint_timeout", "max_wal_size"):
        if name in values:
            conn.execute(f"ALTER SYSTEM SET {name} = '{values[name]}'")
        else:
            conn.execute(f"ALTER SYSTEM RESET {name}")
    conn.execute("SELECT pg_reload_conf()")
    time.sleep(1)


def wal(conn: Any) -> tuple[float, float, int]:
    fpi, size = conn.execute("SELECT wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
    checkpoints = conn.execute("SELECT num_timed + num_requested "
                               "FROM pg_stat_checkpointer").fetchone()[0]
    return float(fpi), float(size), int(checkpoints)


def clean(conn: Any, c: Any, records: list[Record]) -> None:
    """The appended rows deleted and vacuumed, the packed postings whole again (as scale_bench
    leaves them)."""
    sb.delete_appended(conn, c, records)
    sb.wait_for_vacuums(conn, 60)
    conn.execute(sql.SQL("VACUUM {}").format(c.table))
    status = packed.packed_status(conn, c)
    if status is None or not status.current or status.deleted:
        packed.build_packed(conn, c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a scale_bench --data-dir")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per append")
    parser.add_argument("--corpus", help="the docstrings-*.jsonl scale_bench was given, if any")
    args = parser.parse_args()
    os.environ.update(VECDASH_DATA_DIR=args.data_dir, VECDASH_AUTOLOAD_DEMO="0")
    passages = (realtext.harvest() if not args.corpus else
                [realtext.Passage(**json.loads(line))
                 for line in Path(args.corpus).read_text(encoding="utf-8").splitlines()])
    docs, held = realtext.split(passages, 100_000, realtext.HELD_OUT)
    vectors = sb.cached_vectors(docs + held, LocalEmbedder(), False, 0)
    corpus = sb.Corpus(docs, vectors[: len(docs)], len(docs))
    batches = [corpus.extra(args.rows, seed=100 + i) for i in range(args.rounds * len(SETTINGS))]
    every = [r for batch in batches for r in batch]
    for i, batch in enumerate(batches):  # (distinct external ids across the batches)
        for j, r in enumerate(batch):
            r.external_id = f"checkpoints{i}-{j}"
    rates: dict[tuple[str, str], list[float]] = {}
    with db.connect(Settings.from_env()) as conn:
        conn.autocommit = True
        conn.execute("SET statement_timeout = 0")
        collections = {name: get_collection(conn, name) for name in NAMES}
        for c in collections.values():
            clean(conn, c, every)  # (rows a stopped run left)
        try:
            for rnd in range(args.rounds):
                order = list(SETTINGS.items())[:: -1 if rnd % 2 else 1]  # (the tables grow)
                for k, (setting, values) in enumerate(order):
                    records = batches[rnd * len(SETTINGS) + k]
                    configure(conn, values)
                    for name, c in collections.items():
                        sb.wait_for_vacuums(conn, 30)
                        kept, packed.PACKED_MIN_ROWS = packed.PACKED_MIN_ROWS, 2**62
                        try:
                            before = wal(conn)
                            started = time.perf_counter()
                            report = ingest_records(conn, c, records, batch_size=sb.BATCH)
                            rate = report.inserted / (time.perf_counter() - started)
                            after = wal(conn)
                        finally:
                            packed.PACKED_MIN_ROWS = kept
                        rates.setdefault((setting, name), []).append(rate)
                        print(f"round {rnd}, {setting}, {name}: {rate:,.0f} rows/s "
                              f"({report.inserted:,} rows, some copies may exist already), "
                              f"{(after[0] - before[0]) / max(report.inserted, 1):.1f} full-page "
                              f"images a row, {(after[1] - before[1]) / 1e6:,.0f} MB of WAL, "
                              f"{after[2] - before[2]} checkpoints", flush=True)
            for setting, values in SETTINGS.items():
                small, large = (float(np.median(rates[(setting, n)])) for n in NAMES)
                shown = ", ".join(f"{k} {v}" for k, v in values.items()) or "server defaults"
                print(f"{setting} ({shown}): median {small:,.0f} / {large:,.0f} rows/s, "
                      f"{large / small:.2f}x", flush=True)
        finally:
            configure(conn, {})
            for c in collections.values():
                clean(conn, c, every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
