"""Bulk-load benchmark: vecdash's loader (COPY BINARY, per-batch transactions) vs the common
pgvector tutorial (one INSERT per row with a %s::vector text cast, executemany), same run.

    .venv/bin/python bench/ingest_bench.py [--rows 100000] [--dim 384] [--batch 5000]

Both load the same precomputed vectors into fresh tables with the same columns, stored tsvector,
GIN and unique indexes on a temporary embedded PostgreSQL; only vecdash's table also carries its
BM25-statistics triggers. vecdash loads three ways: without postings (a collection under
20,000 rows loads so), as by default (a larger collection's load ends with its packed BM25
postings rebuilt, vecdash.bm25.packed), and into a collection that also keeps impact-ordered
postings (vecdash.bm25.postings, triggers from the first row); the impact-ordered postings of
the default load are then built in one backfill, the other way to get them.
Every timed load starts in the same state: after one untimed warm-up load
(so none pays for creating the new cluster's WAL files) and right after a checkpoint. Prints rows/s
and the ratio.
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
from vecdash.bm25 import packed  # noqa: E402
from vecdash.bm25.packed import PACKED_MIN_ROWS  # noqa: E402
from vecdash.bm25.postings import enable_postings  # noqa: E402
from vecdash.collections import create_collection, drop_collection, get_collection  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.ingest import ingest_records  # noqa: E402
from vecdash.records import Record  # noqa: E402

WORDS = ("vector index recall latency postgres query embedding cluster neighbour search "
         "keyword semantic hybrid table column batch copy insert transaction").split()


def make_rows(n: int, dim: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, len(WORDS), size=(n, 8))
    texts = [f"row {i}: " + " ".join(WORDS[j] for j in picks[i]) for i in range(n)]
    return texts, vectors


def load_vecdash(conn: object, texts: list[str], vectors: np.ndarray, batch: int,
                 name: str = "bench_vecdash", postings: bool = False, packs: bool = True) -> float:
    """One timed load; ``packs``: as vecdash loads by default (a collection from
    packed.PACKED_MIN_ROWS rows ends with its packed postings rebuilt), else without them."""
    packed.PACKED_MIN_ROWS = PACKED_MIN_ROWS if packs else sys.maxsize
    c = create_collection(conn, name, dimension=vectors.shape[1],  # type: ignore[arg-type]
                          embedder="none", model="precomputed")
    if postings:  # impact-ordered BM25 postings kept by triggers from the first row
        enable_postings(conn, c)  # type: ignore[arg-type]
    records = (Record(content=t, title=f"doc {i}", external_id=f"d{i}", category=f"c{i % 10}",
                      metadata={"i": i}, embedding=v)
               for i, (t, v) in enumerate(zip(texts, vectors, strict=True)))
    start = time.perf_counter()
    report = ingest_records(conn, c, records, batch_size=batch)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert report.inserted == len(texts), report
    return elapsed


TUTORIAL_TABLES = {
    # The same columns, stored tsvector, GIN and unique indexes as vecdash's table, but none of
    # vecdash's triggers (BM25 statistics): the fair comparison, slightly favouring the baseline.
    "bench_same_shape": "CREATE TABLE bench_same_shape (LIKE bench_vecdash INCLUDING ALL)",
    # The tutorial's own table: no tsvector, no GIN, no unique keys. It does less work per row
    # than vecdash's table, so this comparison favours the baseline a lot.
    "bench_tutorial": "CREATE TABLE bench_tutorial (id bigserial PRIMARY KEY, external_id text, "
    "title text, content text, category text, metadata jsonb, content_hash text, "
    "created_at timestamptz DEFAULT now(), embedding vector(384))",
}


def load_tutorial(conn: object, table: str, texts: list[str], vectors: np.ndarray,
                  batch: int) -> float:
    conn.execute(TUTORIAL_TABLES[table].replace("384", str(vectors.shape[1])))  # type: ignore[attr-defined]
    insert = (f"INSERT INTO {table} (external_id, title, content, category, metadata, "  # noqa: S608
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
            # A warm-up load, untimed and dropped: a new cluster creates (and zero-fills) every WAL
            # segment its first load writes, and later loads reuse them after a checkpoint, so
            # without it only the first timed load (vecdash's) would pay for that.
            load_vecdash(conn, texts, vectors, args.batch)
            drop_collection(conn, "bench_vecdash")  # type: ignore[arg-type]
            # Each load starts right after a checkpoint (untimed): otherwise the checkpoint the
            # previous loads' WAL triggers falls into the next load (full-page images, writes).
            conn.execute("CHECKPOINT")
            t_plain = load_vecdash(conn, texts, vectors, args.batch, "bench_plain", packs=False)
            drop_collection(conn, "bench_plain")  # type: ignore[arg-type]
            conn.execute("CHECKPOINT")
            t_vecdash = load_vecdash(conn, texts, vectors, args.batch)
            conn.execute("CHECKPOINT")
            t_postings = load_vecdash(conn, texts, vectors, args.batch, "bench_postings",
                                      postings=True)
            drop_collection(conn, "bench_postings")  # type: ignore[arg-type]
            # The other way to get postings: load without, then build them in one backfill.
            conn.execute("CHECKPOINT")
            t_backfill = time.perf_counter()
            enable_postings(conn, get_collection(conn, "bench_vecdash"))  # type: ignore[arg-type]
            t_backfill = time.perf_counter() - t_backfill
            t_base = {}
            for table in TUTORIAL_TABLES:
                conn.execute("CHECKPOINT")
                t_base[table] = load_tutorial(conn, table, texts, vectors, args.batch)
            for table in ("bench_vecdash", *TUTORIAL_TABLES):
                row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
                assert row is not None and row[0] == args.rows, (table, row)
        db.stop_embedded(settings)  # before the data directory is removed
    r_plain, r_vecdash = args.rows / t_plain, args.rows / t_vecdash
    print(f"vecdash COPY BINARY loader (tsvector, GIN, BM25 triggers): {t_plain:6.1f} s "
          f"{r_plain:8,.0f} rows/s   (no postings)")
    print(f"the same, packed postings rebuilt at the end (the default): {t_vecdash:6.1f} s "
          f"{r_vecdash:8,.0f} rows/s")
    labels = {"bench_same_shape": "tutorial INSERT executemany, same table without triggers",
              "bench_tutorial": "tutorial INSERT executemany, tutorial table (no tsvector/GIN)"}
    r_postings = args.rows / t_postings
    print(f"the same, impact-ordered postings kept too:                 {t_postings:6.1f} s "
          f"{r_postings:8,.0f} rows/s")
    print(f"impact-ordered postings built after a load (one backfill):  {t_backfill:6.1f} s")
    for table, elapsed in t_base.items():
        rate = args.rows / elapsed
        print(f"{labels[table]:<58}: {elapsed:6.1f} s {rate:8,.0f} rows/s")
        print(f"  ratio: no postings {r_plain / rate:5.1f}x (target >= 10x), packed (default) "
              f"{r_vecdash / rate:5.1f}x, packed + impact-ordered {r_postings / rate:5.1f}x "
              "(targets >= 3x)")


if __name__ == "__main__":
    main()
