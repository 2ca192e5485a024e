"""Index benchmark: HNSW and IVFFlat against the exact scan, on synthetic data, in one run.

    .venv/bin/python bench/index_bench.py [--rows 100000] [--dim 384] [--clusters 100]
                                          [--intrinsic-dim 0] [--queries 200] [--memory 2GB]
                                          [--skip-1536]

Case 1: ``--rows`` clustered ``--dim``-dimensional vectors (cosine). HNSW with default parameters
(m=16, ef_construction=64) built with 0 and with 1 extra parallel maintenance worker, IVFFlat with
the default lists (rows / 1000); recall@10 and p50 latency at hnsw.ef_search = 40 and
ivfflat.probes = 10 against the exact scan measured in the same run. Queries are held out (drawn
from the same clusters, not stored). Targets: HNSW recall@10 >= 0.95 at ef_search 40 and p50 at
least 10x faster than the exact scan.

Case 2 (the tutorial exercise): 10,000 random 1536-dimensional vectors: no index vs IVFFlat vs HNSW.

Everything runs on a temporary embedded PostgreSQL; the settings used are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from vecdash import db  # noqa: E402
from vecdash import indexes as ix  # noqa: E402
from vecdash.collections import Collection, create_collection  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.ingest import ingest_records  # noqa: E402
from vecdash.synthetic import generate_vectors, synthetic_records  # noqa: E402


def load(conn: Any, name: str, rows: int, dim: int, queries: int, *, kind: str,
         clusters: int, intrinsic_dim: int = 0) -> tuple[Collection, ix.SampleQueries, float]:
    """Store ``rows`` generated vectors and hold out ``queries`` more from the same distribution."""
    vectors, labels = generate_vectors(rows + queries, dim, kind=kind, clusters=clusters,
                                       intrinsic_dim=intrinsic_dim, seed=1)
    collection = create_collection(conn, name, dimension=dim, embedder="none", model="synthetic")
    start = time.perf_counter()
    ingest_records(conn, collection, synthetic_records(vectors[:rows], labels[:rows], kind=kind),
                   batch_size=5000)
    seconds = time.perf_counter() - start
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(name)))
    held_out = ix.queries_from_vectors(collection, vectors[rows:],
                                       [f"q{i}" for i in range(queries)], source="held out")
    return collection, held_out, seconds


def build(conn: Any, collection: Collection, spec: ix.IndexSpec, memory: str,
          workers: int) -> ix.BuildResult:
    result = ix.build_index(conn, collection, spec, maintenance_work_mem=memory,
                            parallel_workers=workers)
    print(f"  build {result.spec.label:<36} workers={workers}: {result.seconds:8.1f} s")
    return result


def line(label: str, m: ix.Measurement, exact: ix.Measurement) -> None:
    print(f"  {label:<34} recall@10 {m.recall:6.3f}   p50 {m.p50_ms:8.2f} ms   "
          f"p95 {m.p95_ms:8.2f} ms   {m.qps:8.0f} QPS   p50 speed-up vs exact "
          f"{exact.p50_ms / m.p50_ms:6.1f}x")


def case_clustered(conn: Any, args: argparse.Namespace) -> None:
    within = (f"within-cluster variation in a {args.intrinsic_dim}-d subspace" if args.intrinsic_dim
              else "isotropic within-cluster noise")
    print(f"\n== {args.rows:,} clustered {args.dim}-d vectors ({args.clusters} clusters, {within}, "
          f"cosine), {args.queries} held-out queries ==")
    c, queries, load_s = load(conn, "bench_clustered", args.rows, args.dim, args.queries,
                              kind="clustered", clusters=args.clusters,
                              intrinsic_dim=args.intrinsic_dim)
    print(f"  loaded in {load_s:.1f} s ({args.rows / load_s:,.0f} rows/s, COPY via ingest_records)")
    exact = ix.exact_measurement(conn, c, queries, k=10)
    line("exact scan (no index)", exact, exact)
    first = build(conn, c, ix.IndexSpec("hnsw"), args.memory, 0)
    ix.drop_index(conn, c, first.index)
    hnsw = build(conn, c, ix.IndexSpec("hnsw"), args.memory, 1)
    print(f"  HNSW build speed-up with 1 extra worker: {first.seconds / hnsw.seconds:.2f}x")
    h = ix.measure(conn, c, queries, index=hnsw.index, setting=ix.Setting(ef_search=40), k=10)
    line("HNSW m=16 efc=64, ef_search=40", h, exact)
    for ef in (80, 160):
        more = ix.measure(conn, c, queries, index=hnsw.index, setting=ix.Setting(ef_search=ef))
        line(f"HNSW m=16 efc=64, ef_search={ef}", more, exact)
    ivf = build(conn, c, ix.IndexSpec("ivfflat"), args.memory, 0)
    v = ix.measure(conn, c, queries, index=ivf.index, setting=ix.Setting(probes=10), k=10)
    line(f"IVFFlat lists={ivf.spec.lists}, probes=10", v, exact)
    speed = exact.p50_ms / h.p50_ms
    print(f"  targets: HNSW recall@10 {h.recall:.3f} (>= 0.95: "
          f"{'met' if h.recall >= 0.95 else 'NOT met'}); p50 speed-up {speed:.1f}x "
          f"(>= 10x: {'met' if speed >= 10 else 'NOT met'})")


def case_random_1536(conn: Any, args: argparse.Namespace) -> None:
    rows, dim = 10_000, 1536
    print(f"\n== {rows:,} random {dim}-d vectors (cosine), {args.queries} held-out queries: "
          "no index vs IVFFlat vs HNSW ==")
    c, queries, load_s = load(conn, "bench_random", rows, dim, args.queries, kind="random",
                              clusters=1)
    print(f"  loaded in {load_s:.1f} s ({rows / load_s:,.0f} rows/s)")
    exact = ix.exact_measurement(conn, c, queries, k=10)
    line("exact scan (no index)", exact, exact)
    ivf = build(conn, c, ix.IndexSpec("ivfflat"), args.memory, 0)
    hnsw = build(conn, c, ix.IndexSpec("hnsw"), args.memory, 0)
    for probes in (1, 10):
        m = ix.measure(conn, c, queries, index=ivf.index, setting=ix.Setting(probes=probes))
        line(f"IVFFlat lists={ivf.spec.lists}, probes={probes}", m, exact)
    for ef in (40, 200):
        m = ix.measure(conn, c, queries, index=hnsw.index, setting=ix.Setting(ef_search=ef))
        line(f"HNSW m=16 efc=64, ef_search={ef}", m, exact)
    print("  (uniform random vectors have no neighbourhood structure: ANN recall is far lower "
          "than on real or clustered embeddings)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--intrinsic-dim", type=int, default=0,
                        help="0: isotropic within-cluster noise; r: variation in an r-d subspace")
    parser.add_argument("--memory", default="2GB", help="maintenance_work_mem for the builds")
    parser.add_argument("--skip-1536", action="store_true", help="skip the 10,000 x 1536 case")
    args = parser.parse_args()
    args.memory = ix.check_memory(args.memory)

    with tempfile.TemporaryDirectory(prefix="vecdash-index-bench-") as tmp:
        settings = Settings.from_env({"VECDASH_DATA_DIR": str(Path(tmp))})
        with db.connect(settings) as conn:
            info = db.server_info(conn)
            shown = conn.execute(
                "SELECT current_setting('shared_buffers'), current_setting('max_worker_processes'),"
                " current_setting('max_parallel_workers'), "
                "current_setting('max_parallel_maintenance_workers'), "
                "current_setting('maintenance_work_mem')").fetchone()
            assert shown is not None
            print(f"PostgreSQL {info.postgres_version}, pgvector {info.pgvector_version} "
                  "(embedded, temporary data dir)")
            print(f"server: shared_buffers={shown[0]}, max_worker_processes={shown[1]}, "
                  f"max_parallel_workers={shown[2]}, default max_parallel_maintenance_workers="
                  f"{shown[3]}, default maintenance_work_mem={shown[4]}")
            print(f"builds: maintenance_work_mem={args.memory} (SET LOCAL per build); "
                  "queries: one client, one after another, k=10, each query's latency measured "
                  "client-side (execute + fetch)")
            case_clustered(conn, args)
            if not args.skip_1536:
                case_random_1536(conn, args)


if __name__ == "__main__":
    main()
