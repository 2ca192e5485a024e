"""Index benchmark: HNSW and IVFFlat against the exact scan, on real and synthetic 384-d
embeddings and on the tutorial's random 1536-d vectors, in one run.

    .venv/bin/python bench/index_bench.py [--rows 100000] [--dim 384] [--clusters 100]
                                          [--profile minilm-like] [--intrinsic-dim R]
                                          [--queries 200] [--memory 2GB] [--skip-real]
                                          [--skip-isotropic] [--skip-1536]

Each 100k case: HNSW with default parameters (m=16, ef_construction=64) built with 0 and with 1
extra parallel maintenance worker, IVFFlat with the default lists (rows / 1000); recall@10 and p50
latency at hnsw.ef_search = 40 (also 80, 160) and ivfflat.probes = 10 against the exact scan
measured in the same run, with held-out queries (not stored). Targets: HNSW recall@10 >= 0.95 at
ef_search 40 and p50 at least 10x faster than the exact scan.

Case 1, real embeddings (unless --skip-real): ``--rows`` docstring paragraphs of the Python
standard library and .venv's packages (bench/realtext.py) embedded by the local all-MiniLM-L6-v2,
which clusters the way text does (by package and topic); queries are the embeddings of held-out
paragraphs. The embeddings are computed once and cached (about 36 minutes on 2 cores the first time).

Calibration: the shape statistics (vecdash.synthetic.embedding_statistics: PCA components for 90%
of the variance, Levina-Bickel local intrinsic dimension, neighbour / mean distance ratios, mean
cosine) of the real model's embeddings of the 365 demo passages, next to the same statistics of
365 generated vectors in 10 clusters for each profile (vecdash.synthetic MINILM_LIKE, ISOTROPIC).

Case 2, synthetic: ``--rows`` clustered ``--dim``-dimensional vectors (cosine) shaped by
``--profile`` (default minilm-like, matched to the calibration above at 365 points; at 10,000
points it is harder for HNSW than real text: its local intrinsic dimension grows with the size
where real text's falls). Queries are drawn from the same clusters.

Case 2b (for comparison, unless --skip-isotropic or the profile is already isotropic): the same
size with the ISOTROPIC profile (tight blobs, noise in all dimensions; unlike real embeddings by
the statistics above): exact scan and HNSW m=16 efc=64 at ef_search 40, 1 extra worker.

Case 3 (the tutorial exercise): 10,000 random 1536-dimensional vectors: no index vs IVFFlat vs HNSW.

Everything runs on a temporary embedded PostgreSQL; the settings used are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import realtext  # noqa: E402  (bench/realtext.py, next to this file)

from vecdash import db  # noqa: E402
from vecdash import indexes as ix  # noqa: E402
from vecdash.collections import Collection, create_collection, drop_collection  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.ingest import ingest_records  # noqa: E402
from vecdash.synthetic import (  # noqa: E402
    ISOTROPIC,
    MINILM_DEMO_STATISTICS,
    PROFILES,
    ClusterProfile,
    EmbeddingStatistics,
    embedding_statistics,
    generate_vectors,
    synthetic_records,
)


def real_statistics() -> tuple[EmbeddingStatistics, str]:
    """embedding_statistics of the local model's embeddings of the demo passages (as ingested), or
    the values recorded in vecdash.synthetic when the model cannot be loaded."""
    try:
        from vecdash.demo import demo_records
        from vecdash.embedders import LocalEmbedder
        from vecdash.ingest import embed_text

        vectors = LocalEmbedder().embed([embed_text(r) for r in demo_records()])
        return embedding_statistics(vectors), "measured now"
    except Exception as exc:  # noqa: BLE001 - any failure: fall back, and say so
        return MINILM_DEMO_STATISTICS, f"recorded values; model not loaded ({exc.__class__.__name__})"


def stat_row(label: str, runs: list[EmbeddingStatistics]) -> None:
    """One row of the calibration table: the statistics averaged over ``runs``."""
    def mean(field: str) -> float:
        return float(np.mean([getattr(r, field) for r in runs]))
    print(f"  {label:<52} {mean('pca90'):6.1f} {mean('lid'):6.1f} {mean('knn_to_mean'):9.3f} "
          f"{mean('nn_to_mean'):8.3f} {mean('mean_cosine'):9.3f}")


def calibration(profile: ClusterProfile, dim: int) -> None:
    real, source = real_statistics()
    print(f"\n== calibration: shape of real vs generated {dim}-d vectors at the same size "
          f"({real.n} vectors; cosine; k=10) ==")
    print(f"  {'':<52} {'PCA90':>6} {'LID':>6} {'d10/mean':>9} {'d1/mean':>8} {'mean cos':>9}")
    stat_row(f"all-MiniLM-L6-v2, demo passages ({source})", [real])
    shown = [profile] + [p for p in PROFILES.values() if p.name != profile.name]
    for p in shown:
        if p.intrinsic_dim > dim:
            continue
        runs = [embedding_statistics(generate_vectors(real.n, dim, clusters=10, seed=seed,
                                                      **p.kwargs())[0]) for seed in range(4)]
        stat_row(f"generated '{p.name}', 10 clusters, seeds 0-3", runs)
    print("  (PCA90: components for 90% of the variance; LID: Levina-Bickel local intrinsic "
          "dimension; d10, d1: 10th and 1st neighbour distance)")


def load(conn: Any, name: str, rows: int, dim: int, queries: int, *, kind: str,
         clusters: int, profile: ClusterProfile = ISOTROPIC
         ) -> tuple[Collection, ix.SampleQueries, float]:
    """Store ``rows`` generated vectors and hold out ``queries`` more from the same distribution."""
    vectors, labels = generate_vectors(rows + queries, dim, kind=kind, clusters=clusters, seed=1,
                                       **profile.kwargs())
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


def describe(p: ClusterProfile) -> str:
    within = (f"within-cluster variation in a {p.intrinsic_dim}-d subspace" if p.intrinsic_dim
              else "isotropic within-cluster noise")
    return (f"profile '{p.name}': spread {p.spread}, {within}, centre similarity "
            f"{p.centre_similarity}")


def evaluate(conn: Any, c: Collection, queries: ix.SampleQueries, args: argparse.Namespace) -> None:
    """Exact scan, HNSW with defaults built with 0 and 1 extra workers (ef_search 40, 80, 160),
    IVFFlat with the default lists at probes 10, and the verdict on the targets."""
    exact = ix.exact_measurement(conn, c, queries, k=10)
    line("exact scan (no index)", exact, exact)
    first = build(conn, c, ix.IndexSpec("hnsw"), args.memory, 0)
    ix.drop_index(conn, c, first.index)
    hnsw = build(conn, c, ix.IndexSpec("hnsw"), args.memory, 1)
    print(f"  HNSW build speed-up with 1 extra worker: {first.seconds / hnsw.seconds:.2f}x")
    h = ix.measure(conn, c, queries, index=hnsw.index, setting=ix.Setting(ef_search=40), k=10,
                   isolate=True)  # its own server
    line("HNSW m=16 efc=64, ef_search=40", h, exact)
    for ef in (80, 160):
        more = ix.measure(conn, c, queries, index=hnsw.index, setting=ix.Setting(ef_search=ef),
                          isolate=True)  # its own server
        line(f"HNSW m=16 efc=64, ef_search={ef}", more, exact)
    ivf = build(conn, c, ix.IndexSpec("ivfflat"), args.memory, 0)
    v = ix.measure(conn, c, queries, index=ivf.index, setting=ix.Setting(probes=10), k=10,
                   isolate=True)  # its own server
    line(f"IVFFlat lists={ivf.spec.lists}, probes=10", v, exact)
    speed = exact.p50_ms / h.p50_ms
    print(f"  targets: HNSW recall@10 {h.recall:.3f} (>= 0.95: "
          f"{'met' if h.recall >= 0.95 else 'NOT met'}); p50 speed-up {speed:.1f}x "
          f"(>= 10x: {'met' if speed >= 10 else 'NOT met'})")


def case_real(conn: Any, args: argparse.Namespace) -> None:
    """Real embeddings: the docstring corpus of bench/realtext.py, embedded by the local model."""
    from vecdash.embedders import LocalEmbedder

    docs, held = realtext.split(realtext.harvest(), args.rows, realtext.HELD_OUT)
    vectors = realtext.embed_cached(docs + held, LocalEmbedder())
    n = min(args.queries, len(held))
    print(f"\n== real text: {realtext.describe(docs)}, embedded by all-MiniLM-L6-v2 "
          f"(384-d, cosine); {n} held-out paragraphs' embeddings as queries ==")
    c = create_collection(conn, "bench_real", dimension=vectors.shape[1], embedder="local")
    start = time.perf_counter()
    ingest_records(conn, c, (p.record(f"d{i}", vectors[i]) for i, p in enumerate(docs)),
                   batch_size=5000)
    load_s = time.perf_counter() - start
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(c.table))
    print(f"  loaded in {load_s:.1f} s ({len(docs) / load_s:,.0f} rows/s, COPY via ingest_records)")
    queries = ix.queries_from_vectors(c, vectors[len(docs):len(docs) + n],
                                      [f"q{i}" for i in range(n)], source="held out")
    evaluate(conn, c, queries, args)
    drop_table(conn, "bench_real")


def case_clustered(conn: Any, args: argparse.Namespace) -> None:
    p = args.profile
    print(f"\n== synthetic: {args.rows:,} clustered {args.dim}-d vectors ({args.clusters} "
          f"clusters, {describe(p)}; cosine), {args.queries} held-out queries ==")
    c, queries, load_s = load(conn, "bench_clustered", args.rows, args.dim, args.queries,
                              kind="clustered", clusters=args.clusters, profile=p)
    print(f"  loaded in {load_s:.1f} s ({args.rows / load_s:,.0f} rows/s, COPY via ingest_records)")
    evaluate(conn, c, queries, args)
    drop_table(conn, "bench_clustered")


def case_isotropic(conn: Any, args: argparse.Namespace) -> None:
    print(f"\n== for comparison, the previous default data: {args.rows:,} clustered {args.dim}-d "
          f"vectors ({args.clusters} clusters, {describe(ISOTROPIC)}; cosine; unlike real "
          f"embeddings), {args.queries} held-out queries ==")
    c, queries, load_s = load(conn, "bench_isotropic", args.rows, args.dim, args.queries,
                              kind="clustered", clusters=args.clusters, profile=ISOTROPIC)
    print(f"  loaded in {load_s:.1f} s ({args.rows / load_s:,.0f} rows/s)")
    exact = ix.exact_measurement(conn, c, queries, k=10)
    line("exact scan (no index)", exact, exact)
    hnsw = build(conn, c, ix.IndexSpec("hnsw"), args.memory, 1)
    h = ix.measure(conn, c, queries, index=hnsw.index, setting=ix.Setting(ef_search=40), k=10,
                   isolate=True)  # its own server
    line("HNSW m=16 efc=64, ef_search=40", h, exact)
    drop_table(conn, "bench_isotropic")


def drop_table(conn: Any, name: str) -> None:
    """Free the disk and cache a finished case used (the temporary server ends with the run)."""
    drop_collection(conn, name)


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
        m = ix.measure(conn, c, queries, index=ivf.index, setting=ix.Setting(probes=probes),
                       isolate=True)  # its own server
        line(f"IVFFlat lists={ivf.spec.lists}, probes={probes}", m, exact)
    for ef in (40, 200):
        m = ix.measure(conn, c, queries, index=hnsw.index, setting=ix.Setting(ef_search=ef),
                       isolate=True)  # its own server
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
    parser.add_argument("--profile", choices=list(PROFILES), default="minilm-like",
                        help="cluster shape for case 1 (vecdash.synthetic; default: calibrated "
                             "against all-MiniLM-L6-v2 embeddings of the demo passages)")
    parser.add_argument("--intrinsic-dim", type=int, default=None,
                        help="override the profile's intrinsic dimension (0: isotropic "
                             "within-cluster noise; r: variation in an r-d subspace)")
    parser.add_argument("--memory", default="2GB", help="maintenance_work_mem for the builds")
    parser.add_argument("--skip-real", action="store_true",
                        help="skip the real-text case (case 1; embeds the corpus the first time)")
    parser.add_argument("--skip-isotropic", action="store_true",
                        help="skip the isotropic comparison case (case 1b)")
    parser.add_argument("--skip-1536", action="store_true", help="skip the 10,000 x 1536 case")
    args = parser.parse_args()
    args.memory = ix.check_memory(args.memory)
    profile = PROFILES[args.profile]
    if args.intrinsic_dim is not None:
        profile = ClusterProfile(f"{profile.name}, intrinsic_dim {args.intrinsic_dim}",
                                 profile.spread, args.intrinsic_dim, profile.centre_similarity)
    args.profile = profile
    run_started = time.perf_counter()
    calibration(profile, args.dim)

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
            if not args.skip_real:
                started = time.perf_counter()
                case_real(conn, args)
                print(f"  ({time.perf_counter() - started:.0f} s)")
            started = time.perf_counter()
            case_clustered(conn, args)
            print(f"  ({time.perf_counter() - started:.0f} s)")
            if not args.skip_isotropic and profile != ISOTROPIC:
                started = time.perf_counter()
                case_isotropic(conn, args)
                print(f"  ({time.perf_counter() - started:.0f} s)")
            if not args.skip_1536:
                started = time.perf_counter()
                case_random_1536(conn, args)
                print(f"  ({time.perf_counter() - started:.0f} s)")
    print(f"\ntotal {time.perf_counter() - run_started:.0f} s")


if __name__ == "__main__":
    main()
