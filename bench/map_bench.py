"""Embedding map benchmark: time to the first UMAP projection, vecdash vs plain umap-learn.

Every measurement runs in a fresh Python process (subprocess), started by this script:

- plain:   ``umap.UMAP(metric="cosine").fit_transform(X)`` on the same vectors (umap-learn's
           default path: pynndescent kNN through the cosine metric, numba layout compiled in
           the process);
- vecdash: ``vecdash.projection.project(conn, collection, refresh=True)``: sample from
           PostgreSQL, blocked exact kNN, UMAP with precomputed_knn, store the result;
- vecdash, cold JIT cache: the same with NUMBA_CACHE_DIR pointing at an empty directory, i.e. the
           first map after installing (the app's start-up warm-up normally pays this in the
           background);
- cached:  ``project`` again in a new process: the stored projection for unchanged data.

Times are wall-clock from the top of the child process (imports included) to having the 2-D
coordinates. Quality: sklearn.manifold.trustworthiness (k=10, cosine) of each result; for 20,000
points on a fixed random subset of 5,000 (the full 20,000^2 distance matrices would need ~6 GB).

Data: synthetic clustered 384-d vectors, L2-normalised: 8 topics x 6 subtopics; a subtopic centre
is its topic centre plus Gaussian noise, a vector its subtopic centre plus more noise, so there is
structure at two scales and clusters overlap as real embeddings do. Loaded into a collection of a
throwaway embedded PostgreSQL.

    .venv/bin/python bench/map_bench.py [--sizes 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIM = 384


def synthesise(n: int, seed: int = 0) -> tuple[object, list[str]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(8, DIM))
    subtopics = np.repeat(topics, 6, axis=0) + rng.normal(scale=0.6, size=(48, DIM))
    labels = rng.integers(0, 48, n)
    vectors = subtopics[labels] + rng.normal(scale=1.1, size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [f"topic {label // 6}" for label in labels]


def trust(x_path: str, coords: object, subset: int = 5000) -> float:
    import numpy as np
    from sklearn.manifold import trustworthiness

    x = np.load(x_path)
    y = np.asarray(coords)
    if len(x) > subset:
        pick = np.random.default_rng(1).choice(len(x), subset, replace=False)
        x, y = x[pick], y[pick]
    return float(trustworthiness(x, y, n_neighbors=10, metric="cosine"))


# ---------------------------------------------------------------- children (one measurement each)


def child_plain(x_path: str) -> dict[str, float]:
    start = time.perf_counter()
    import numpy as np
    import umap

    x = np.load(x_path)
    coords = umap.UMAP(metric="cosine").fit_transform(x)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "trust": trust(x_path, coords)}


def child_vecdash(name: str, x_path: str, n: int, refresh: bool) -> dict[str, float | str]:
    start = time.perf_counter()


    from vecdash import db
    from vecdash.collections import get_collection
    from vecdash.config import Settings
    from vecdash.projection import ProjectionParams, project

    imported = time.perf_counter() - start
    with db.connect(Settings.from_env()) as conn:
        collection = get_collection(conn, name)
        call = time.perf_counter()
        result = project(conn, collection, ProjectionParams(sample_size=n), refresh=refresh)
        call = time.perf_counter() - call
    seconds = time.perf_counter() - start
    out: dict[str, float | str] = {"seconds": seconds, "method": result.method,
                                   "from_cache": str(result.from_cache), "call": call,
                                   "imports": imported}
    if refresh:
        # align with the vectors file (rows in the order of its ids file)
        ids = json.loads(Path(x_path + ".ids.json").read_text())
        row_of = {pid: i for i, pid in enumerate(result.frame["id"])}
        out["trust"] = trust(x_path, result.coords[[row_of[pid] for pid in ids]])
    return out


# ---------------------------------------------------------------- parent


def run_child(args: list[str], env: dict[str, str]) -> dict[str, float | str]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=env, cwd=ROOT, capture_output=True,
        text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float | str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--no-demo", dest="demo", action="store_false",
                        help="skip the demo collection (real embeddings) quality check")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "plain":
            print(json.dumps(child_plain(rest[0])))
        else:
            print(json.dumps(child_vecdash(rest[0], rest[1], int(rest[2]), kind == "vecdash")))
        return

    import numpy as np

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from psycopg import sql

    from vecdash import db
    from vecdash.collections import create_collection, drop_collection, get_collection
    from vecdash.config import Settings
    from vecdash.errors import NotFound
    from vecdash.ingest import Record, ingest_records

    work = Path(tempfile.mkdtemp(prefix="vecdash-map-bench-"))
    env = {**os.environ, "VECDASH_DATA_DIR": str(work / "data"), "VECDASH_AUTOLOAD_DEMO": "0",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("VECDASH_DATABASE_URL", None)
    os.environ.update({k: env[k] for k in ("VECDASH_DATA_DIR", "VECDASH_AUTOLOAD_DEMO")})
    settings = Settings.from_env()
    url = db.start_embedded(settings)
    env["VECDASH_DATABASE_URL"] = url
    print(f"map benchmark: synthetic clustered {DIM}-d vectors, fresh process per measurement, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    with db.connect(settings) as conn:
        cases: list[tuple[str, int]] = [("demo", 0)] if args.demo else []
        cases += [(f"map_bench_{n}", n) for n in args.sizes]
        for name, n in cases:
            if name == "demo":
                from vecdash.demo import load_demo
                from vecdash.embedders import LocalEmbedder

                load_demo(conn, embedder=LocalEmbedder())
            else:
                vectors, cats = synthesise(n)
                try:
                    drop_collection(conn, name)
                except NotFound:
                    pass
                collection = create_collection(conn, name, dimension=DIM, embedder="synthetic",
                                               model="clusters")
                ingest_records(conn, collection, (
                    Record(content=f"synthetic vector {i}", title=f"row {i}",
                           external_id=f"v{i}", category=cat, embedding=vec)
                    for i, (vec, cat) in enumerate(zip(vectors, cats, strict=True))
                ), batch_size=2000)
            assert get_collection(conn, name).dimension == DIM
            with conn.cursor(binary=True) as cur:
                stored = cur.execute(
                    sql.SQL("SELECT id::text, embedding FROM {}").format(sql.Identifier(name))
                ).fetchall()
            n = len(stored)
            x_path = str(work / f"{name}.npy")
            np.save(x_path, np.stack([r[1].to_numpy() for r in stored]).astype(np.float32))
            Path(x_path + ".ids.json").write_text(json.dumps([r[0] for r in stored]))
            plain = run_child(["plain", x_path], env)
            ours = run_child(["vecdash", name, x_path, str(n)], env)
            cold_dir = work / f"numba-cold-{n}"
            cold_dir.mkdir()
            cold = run_child(["vecdash", name, x_path, str(n)],
                             {**env, "NUMBA_CACHE_DIR": str(cold_dir)})
            cached = run_child(["cached", name, x_path, str(n)], env)
            assert cached["from_cache"] == "True", cached
            rows.append((n, plain, ours, cold, cached))
            sys.stdout.flush()
            what = "the demo collection (real all-MiniLM-L6-v2 embeddings)" if name == "demo" \
                else "synthetic clustered vectors"
            print(f"\n{n:,} points x {DIM} dims: {what}")
            print(f"  plain umap.UMAP(metric='cosine').fit_transform : {plain['seconds']:7.1f} s   "
                  f"trustworthiness {plain['trust']:.4f}")
            print(f"  vecdash project (numba disk cache warm)        : {ours['seconds']:7.1f} s   "
                  f"trustworthiness {ours['trust']:.4f}   (imports {ours['imports']:.1f} s, "
                  f"project() call {ours['call']:.1f} s)")
            print(f"  vecdash project (cold JIT cache, first install): {cold['seconds']:7.1f} s   "
                  f"trustworthiness {cold['trust']:.4f}")
            print(f"  vecdash cached reload (new process)            : {cached['seconds']:7.2f} s   "
                  f"(imports {cached['imports']:.2f} s, project() call {cached['call']:.2f} s)")
            print(f"  speed-up vs plain: {float(plain['seconds']) / float(ours['seconds']):.1f}x "
                  f"(cold cache {float(plain['seconds']) / float(cold['seconds']):.1f}x); "
                  f"trustworthiness difference {float(ours['trust']) - float(plain['trust']):+.4f}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    print("\ntargets: 5,000 points < 10 s from a fresh process; cached reload < 1 s; "
          "trustworthiness within 0.02 of plain umap-learn")
    for n, plain, ours, _, cached in rows:
        ok = (float(ours["seconds"]) < 10 or n != 5000) and float(cached["seconds"]) < 1 and \
            abs(float(ours["trust"]) - float(plain["trust"])) <= 0.02
        print(f"  {n:,}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
