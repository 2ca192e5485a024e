"""Bulk-load benchmark: vecdash's loader (COPY BINARY, per-batch transactions) vs the common
pgvector tutorial (one INSERT per row with a %s::vector text cast, executemany), same run.

    .venv/bin/python bench/ingest_bench.py [--rows 100000] [--dim 384] [--batch 5000]

Both load the same precomputed vectors into fresh tables with the same columns, stored tsvector,
GIN and unique indexes on a temporary embedded PostgreSQL; only vecdash's table also carries its
BM25-statistics triggers. Prints rows/s and the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from vecdash import db  # noqa: E402
from vecdash.collections import create_collection  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.ingest import Record, ingest_records  # noqa: E402

WORDS = ("vector index recall latency postgres query embedding cluster neighbour search "
         "keyword semantic hybrid table column batch copy insert transaction").split()


def make_rows(n: int, dim: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, len(WORDS), size=(n, 8))
    texts = [f"row {i}: " + " ".join(WORDS[j] for j in picks[i]) for i in range(n)]
    return texts, vectors


def load_vecdash(conn: object, texts: list[str], vectors: np.ndarray, batch: int) -> float:
    c = create_collection(conn, "bench_vecdash", dimension=vectors.shape[1],  # type: ignore[arg-type]
                          embedder="none", model="precomputed")
    records = (Record(content=t, title=f"doc {i}", external_id=f"d{i}", category=f"c{i % 10}",
                      metadata={"i": i}, embedding=v)
               for i, (t, v) in enumerate(zip(texts, vectors, strict=True)))
    start = time.perf_counter()
    report = ingest_records(conn, c, records, batch_size=batch)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert report.inserted == len(texts), report
    return elapsed


def load_tutorial(conn: object, texts: list[str], vectors: np.ndarray, batch: int) -> float:
    # The same columns, stored tsvector, GIN and unique indexes, but none of vecdash's triggers
    # (BM25 statistics): the tutorial's table, which favours the baseline.
    conn.execute("CREATE TABLE bench_tutorial (LIKE bench_vecdash INCLUDING ALL)")  # type: ignore[attr-defined]
    insert = ("INSERT INTO bench_tutorial (external_id, title, content, category, metadata, "
              "content_hash, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s::vector)")
    start = time.perf_counter()
    for lo in range(0, len(texts), batch):
        rows = [
            (f"d{i}", f"doc {i}", texts[i], f"c{i % 10}", json.dumps({"i": i}),
             hashlib.sha256(texts[i].encode()).hexdigest(),
             "[" + ",".join(str(float(x)) for x in vectors[i]) + "]")
            for i in range(lo, min(lo + batch, len(texts)))
        ]
        with conn.transaction(), conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.executemany(insert, rows)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()

    texts, vectors = make_rows(args.rows, args.dim)
    with tempfile.TemporaryDirectory(prefix="vecdash-bench-") as tmp:
        settings = Settings.from_env({"VECDASH_DATA_DIR": str(Path(tmp))})
        with db.connect(settings) as conn:
            version = db.server_info(conn)
            print(f"PostgreSQL {version.postgres_version}, pgvector {version.pgvector_version} "
                  f"(embedded); {args.rows:,} rows x {args.dim} dims, batches of {args.batch:,}")
            t_vecdash = load_vecdash(conn, texts, vectors, args.batch)
            t_tutorial = load_tutorial(conn, texts, vectors, args.batch)
            for table in ("bench_vecdash", "bench_tutorial"):
                row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
                assert row is not None and row[0] == args.rows, (table, row)
    r_vecdash = args.rows / t_vecdash
    r_tutorial = args.rows / t_tutorial
    print(f"vecdash COPY BINARY loader : {t_vecdash:8.1f} s  {r_vecdash:10,.0f} rows/s")
    print(f"tutorial INSERT executemany: {t_tutorial:8.1f} s  {r_tutorial:10,.0f} rows/s")
    print(f"ratio (vecdash / tutorial) : {r_vecdash / r_tutorial:8.1f}x   (target >= 10x)")


if __name__ == "__main__":
    main()
