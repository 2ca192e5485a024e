"""Embedding-ingestion benchmark, same run, same texts, local all-MiniLM-L6-v2 on the CPU:

1. raw ``SentenceTransformer.encode`` (batch 64, normalised): the baseline, model time only;
2. vecdash's whole file ingestion (CSV reader, hashing, dedupe, embedding cache lookups and
   writes, the model, COPY BINARY, one transaction per batch) into a new collection;
3. re-ingesting the same file into the same collection (everything is stored: skipped by hash);
4. ingesting the same file into another collection (the embedding cache serves every vector).

    .venv/bin/python bench/embed_bench.py [--docs 2000] [--batch 256]

Runs on a temporary embedded PostgreSQL. Texts carry a per-round tag so the cache starts cold.
Raw encode and vecdash ingestion alternate for ``--rounds`` rounds and the best round of each
counts (other processes on a shared machine slow whichever runs at the time); CPU time of this
process (which includes the model's threads) is printed too, being less sensitive to such load.
Targets: vecdash / raw docs/s >= 0.9; re-ingestion: zero model calls and >= 20x faster.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from vecdash import db  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.embedders import LocalEmbedder, load_local_model  # noqa: E402
from vecdash.loading import ingest_file  # noqa: E402


def timed(fn: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def make_texts(n: int) -> list[tuple[str, str, str]]:
    """(id, title, content): the demo passages, varied and tagged so every text is new."""
    path = Path(__file__).resolve().parents[1] / "vecdash" / "data" / "demo_docs.jsonl"
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tag = uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        d = docs[i % len(docs)]
        out.append((f"b{i}", d["title"], f"{d['content']} (variant {i // len(docs)}, run {tag})"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    model = load_local_model()
    model.encode(["warm up"] * 64, batch_size=64, normalize_embeddings=True)
    embedder = LocalEmbedder()
    raw: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="vecdash-embed-bench-") as tmp:
        settings = Settings.from_env({"VECDASH_DATA_DIR": str(Path(tmp) / "data")})
        with db.connect(settings) as conn:
            for r in range(args.rounds):
                rows = make_texts(args.docs)
                texts = [f"{title}\n{content}" for _, title, content in rows]  # what is embedded
                path = Path(tmp) / f"docs{r}.csv"
                with path.open("w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["id", "title", "content"])
                    writer.writerows(rows)
                if r == 0:
                    print(f"{args.docs:,} documents, {LocalEmbedder.model} on the CPU, batches "
                          f"of {args.batch}, best of {args.rounds} rounds; mean text "
                          f"{sum(map(len, texts)) / len(texts):.0f} characters")
                wall, cpu, _ = timed(lambda texts=texts: model.encode(
                    texts, batch_size=embedder.batch_size, normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False))
                raw.append((wall, cpu))
                name = f"bench_first{r}"
                wall, cpu, (_, first) = timed(lambda path=path, name=name: ingest_file(
                    conn, path, collection=name, embedder=embedder, batch_size=args.batch))
                ours.append((wall, cpu))
                assert first.inserted == args.docs and first.embedded == args.docs, first
            t_raw, c_raw = min(raw)
            t_first, c_first = min(ours)

            calls = embedder.calls
            start = time.perf_counter()
            _, again = ingest_file(conn, path, collection=name, embedder=embedder,
                                   batch_size=args.batch)
            t_again = time.perf_counter() - start
            calls_again = embedder.calls - calls
            assert again.skipped_duplicates == args.docs, again

            calls = embedder.calls
            start = time.perf_counter()
            _, other = ingest_file(conn, path, collection="bench_other", embedder=embedder,
                                   batch_size=args.batch)
            t_other = time.perf_counter() - start
            calls_other = embedder.calls - calls
            assert other.inserted == args.docs and other.cached == args.docs, other

    n = args.docs
    print(f"raw SentenceTransformer.encode      : {t_raw:7.2f} s  {n / t_raw:8.1f} docs/s  "
          f"(CPU {c_raw:.1f} s)")
    print(f"vecdash ingestion (file -> rows)    : {t_first:7.2f} s  {n / t_first:8.1f} docs/s  "
          f"(CPU {c_first:.1f} s)")
    print(f"ratio (vecdash / raw encode)        : {t_raw / t_first:7.2f}    (target >= 0.9); "
          f"by CPU time {c_raw / c_first:.2f}")
    print(f"re-ingest, same collection          : {t_again:7.2f} s  model calls {calls_again}  "
          f"{t_first / t_again:6.1f}x faster (target: 0 calls, >= 20x)")
    print(f"same file, new collection (cache)   : {t_other:7.2f} s  model calls {calls_other}  "
          f"{t_first / t_other:6.1f}x faster (target: 0 calls, >= 20x)")


if __name__ == "__main__":
    main()
