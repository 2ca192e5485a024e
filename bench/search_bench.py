"""Search benchmark: semantic, BM25 and hybrid latency on the demo and on 100,000-row collections
(HNSW + GIN), and the time of a full 11-weight sweep over the demo's labeled queries.

    .venv/bin/python bench/search_bench.py [--rows 100000] [--data-dir DIR] [--repeat 3]
                                           [--queries 100]

Without --data-dir it runs on a fresh temporary embedded PostgreSQL (loads the demo with the local
model, then builds the large collections); with --data-dir existing large collections are reused.

The 100,000-row collection the target is judged on is real text (bench/realtext.py): paragraphs
of the docstrings of the Python standard library and of the packages in .venv, titled with what
they document, with the local model's embeddings (computed once and cached: about 36 minutes on
2 cores the first time). Its queries are the first sentence (cut to 8 words) of held-out
paragraphs, embedded before timing.

Then a stress case for the keyword arm: every row copies one demo passage's words, drops about a
third of them at random and shuffles the rest into a new short text, with that passage's
embedding plus Gaussian noise (sigma 0.05 per dimension, L2-normalised) as its vector. With a
vocabulary of a few thousand words over 100,000 rows every query word is common (typical queries
match 5,000-28,000 rows), which no real corpus looks like; its figures are printed so what that
costs stays visible. Its queries are the demo's labeled queries.

Both large collections are loaded with vecdash.ingest.ingest_records (records carry embedding=)
with the GIN index on the tsvector and the BM25 statistics (triggers) kept during the load, then
an HNSW index (m=16, ef_construction=64) is built.

Query embedding is excluded from every figure, and each is taken after one untimed pass over
the queries (a warm server: shared_buffers hold the pages the queries touch). Semantic =
vecdash.search.semantic_search top 10 (HNSW); BM25 = the keyword arm alone (fetch_candidates,
100 candidates); hybrid = vecdash.search.hybrid_search top 10 (both arms, 100 candidates each,
fused, highlighted snippets); no keyword = hybrid_search of a stopword-only query (its keyword arm
is empty), what a hybrid search costs before any keyword work.
Each large collection is measured with BM25 scored exactly over its rows, then read from
impact-ordered postings (real text), then from packed postings (vecdash.bm25.packed, which a load
of 20,000 rows or more builds), each checked against the exact path's BM25 top 100 and hybrid
top 10.
Targets: hybrid p50 <= 3x semantic p50 at 100k rows (the real-text collection); the demo sweep (11
weights, convex and RRF) under 5 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import realtext  # noqa: E402  (bench/realtext.py, next to this file)
from psycopg import sql  # noqa: E402

from vecdash import db  # noqa: E402
from vecdash.bm25.packed import PACKED_MIN_ROWS, build_packed, drop_packed  # noqa: E402
from vecdash.bm25.postings import disable_postings, enable_postings  # noqa: E402
from vecdash.collections import create_collection, drop_collection, get_collection  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.demo import DEMO_COLLECTION, demo_documents, load_demo  # noqa: E402
from vecdash.embedders import LocalEmbedder  # noqa: E402
from vecdash.errors import NotFound  # noqa: E402
from vecdash.ingest import Record, ingest_records  # noqa: E402
from vecdash.labels import demo_labeled_set  # noqa: E402
from vecdash.quality import query_metrics, run_labeled_queries, sweep  # noqa: E402
from vecdash.search import fetch_candidates, hybrid_search, semantic_search  # noqa: E402

BIG = "bench_search_100k"
REAL = "bench_search_docstrings_100k"
# A query of stopwords only: the keyword arm is empty, so a hybrid search of it costs the semantic
# arm at the candidate depth, the fusion and the snippets, before any keyword work.
NO_KEYWORDS = "the of and"


def percentiles(fn: Callable[[int], Any], n: int, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t) * 1000)
    arr = np.array(times)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def reusable(conn: Any, name: str, rows: int) -> Any | None:
    """The collection ``name`` when it already holds ``rows`` rows (--data-dir); otherwise it is
    dropped, if there, and None."""
    try:
        c = get_collection(conn, name)
    except NotFound:
        return None
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(c.table)).fetchone()[0]
    if count >= rows:
        return c
    drop_collection(conn, name)
    return None


def build_big(conn: Any, rows: int, seed: int = 0) -> tuple[Any, float]:
    if (c := reusable(conn, BIG, rows)) is not None:
        return c, 0.0
    demo = get_collection(conn, DEMO_COLLECTION)
    base = conn.execute(sql.SQL("SELECT title, content, category, embedding FROM {} ORDER BY id")
                        .format(demo.table)).fetchall()
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    c = create_collection(conn, BIG, dimension=demo.dimension)
    centres = np.stack([np.asarray(r[3].to_numpy(), dtype=np.float32) for r in base])
    words = [(f"{r[0]} {r[1]}").split() for r in base]

    def records() -> Any:
        for i in range(rows):
            p = int(rng.integers(len(base)))
            w = words[p]
            keep = rng.random(len(w)) > 0.33
            picked = [x for x, k in zip(w, keep, strict=True) if k] or w[:5]
            rng.shuffle(picked)
            text = " ".join(picked[:60]) + f" (variant {i})"
            vec = centres[p] + rng.normal(scale=0.05, size=centres.shape[1]).astype(np.float32)
            yield Record(text, title=str(base[p][0])[:60], external_id=f"b{i}",
                         category=base[p][2], embedding=vec / np.linalg.norm(vec))

    report = ingest_records(conn, c, records(), batch_size=5000)
    assert report.inserted == rows, report
    _hnsw(conn, c)
    return c, time.perf_counter() - started


def build_real(conn: Any, docs: list[realtext.Passage], vectors: np.ndarray) -> tuple[Any, float]:
    """The docstring corpus (bench/realtext.py) as a collection, with its model embeddings."""
    if (c := reusable(conn, REAL, len(docs))) is not None:
        return c, 0.0
    started = time.perf_counter()
    c = create_collection(conn, REAL, dimension=vectors.shape[1])
    report = ingest_records(conn, c, (p.record(f"d{i}", vectors[i]) for i, p in enumerate(docs)),
                            batch_size=5000)
    assert report.inserted == len(docs), report
    _hnsw(conn, c)
    return c, time.perf_counter() - started


def _hnsw(conn: Any, c: Any) -> None:
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops) "
                         "WITH (m = 16, ef_construction = 64)").format(c.table))
    conn.execute(sql.SQL("ANALYZE {}").format(c.table))


def latency(conn: Any, c: Any, texts: list[str], vectors: np.ndarray, embedder: Any,
            repeat: int) -> dict[str, tuple[float, float]]:
    n = len(texts)
    # One untimed pass over every query first: the figures are of a warm server, as a dashboard
    # that has been searching for a while is (the embedded server is started by this run, so
    # each page's first read would come from the OS rather than shared_buffers).
    for i in range(n):
        semantic_search(conn, c, vectors[i], k=10)
        hybrid_search(conn, c, texts[i], embedder=embedder, vector=vectors[i], k=10)
        hybrid_search(conn, c, NO_KEYWORDS, embedder=embedder, vector=vectors[i], k=10)
    return {
        "semantic": percentiles(lambda i: semantic_search(conn, c, vectors[i], k=10), n, repeat),
        "bm25": percentiles(lambda i: fetch_candidates(conn, c, texts[i], None,
                                                       keyword_rankers=("bm25",)), n, repeat),
        "hybrid": percentiles(lambda i: hybrid_search(conn, c, texts[i], embedder=embedder,
                                                      vector=vectors[i], k=10), n, repeat),
        "no keyword": percentiles(lambda i: hybrid_search(conn, c, NO_KEYWORDS, embedder=embedder,
                                                          vector=vectors[i], k=10), n, repeat),
    }


# The seed tutorial's hybrid query: the semantic top 2k LEFT JOIN ts_rank over plainto_tsquery
# (an AND of every query word), 0.7 / 0.3. Built on the bench's own tables (names are constants).
TUTORIAL_HYBRID = sql.SQL(
    "WITH semantic AS (SELECT id, 1 - (embedding <=> %(v)s::vector) AS score FROM {t} "
    "ORDER BY embedding <=> %(v)s::vector LIMIT 2 * %(k)s), "
    "keyword AS (SELECT id, ts_rank(tsv, plainto_tsquery('english', %(q)s)) AS score FROM {t} "
    "WHERE tsv @@ plainto_tsquery('english', %(q)s)) "
    "SELECT s.id, s.external_id, s.title FROM (SELECT semantic.id, 0.7 * semantic.score + "
    "0.3 * coalesce(keyword.score, 0) AS score FROM semantic LEFT JOIN keyword "
    "ON keyword.id = semantic.id ORDER BY score DESC LIMIT %(k)s) h JOIN {t} s ON s.id = h.id "
    "ORDER BY h.score DESC")


def tutorial_hybrid(conn: Any, c: Any, text: str, vector: np.ndarray, k: int = 10) -> list[str]:
    """The tutorial's top k (external ids)."""
    rows = conn.execute(TUTORIAL_HYBRID.format(t=c.table),
                        {"v": np.asarray(vector, dtype=np.float32), "k": k, "q": text}).fetchall()
    return [r[1] for r in rows]


def vecdash_hybrid(conn: Any, c: Any, text: str, vector: np.ndarray, embedder: Any,
                   k: int = 10) -> list[str]:
    """vecdash's hybrid top k at the tutorial's weights (external ids)."""
    got = hybrid_search(conn, c, text, embedder=embedder, vector=vector, k=k, weight=0.7)
    return list(got["external_id"])


def quality(conn: Any, c: Any, texts: list[str], vectors: np.ndarray, judged: list[dict[str, int]],
            embedder: Any, what: str) -> None:
    """nDCG@10 of the tutorial's hybrid SQL and of vecdash's hybrid (w=0.7), and their p50."""
    for name, fn in (("tutorial hybrid SQL (0.7/0.3, plainto_tsquery AND)",
                      lambda i: tutorial_hybrid(conn, c, texts[i], vectors[i])),
                     ("vecdash hybrid_search (w=0.7, BM25 over any word)",
                      lambda i: vecdash_hybrid(conn, c, texts[i], vectors[i], embedder))):
        ndcg = np.mean([query_metrics(fn(i), judged[i])["nDCG@10"] for i in range(len(texts))])
        p50, p95 = percentiles(fn, len(texts), 1)
        print(f"  {name:<52} nDCG@10 {ndcg:.4f}  p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  ({what})")


def same_top_as_exact(conn: Any, c: Any, texts: list[str], vectors: np.ndarray, embedder: Any,
                      exact_bm25: list[dict[str, np.ndarray]], exact_hybrid: list[Any]) -> int:
    """How many queries get the exact path's BM25 top 100 (ids in order, scores to 1e-6) and
    hybrid top 10 (ids, fused scores) on the path now in force."""
    same = 0
    for i, t in enumerate(texts):
        got = fetch_candidates(conn, c, t, None, keyword_rankers=("bm25",)).columns
        want = exact_bm25[i]
        top = sorted(zip(got["key"], got["bm25_score"], strict=True), key=lambda x: (-x[1], x[0]))
        ref = sorted(zip(want["key"], want["bm25_score"], strict=True),
                     key=lambda x: (-x[1], x[0]))
        hyb = hybrid_search(conn, c, t, embedder=embedder, vector=vectors[i], k=10)
        same += ([x[0] for x in top] == [x[0] for x in ref]
                 and np.allclose([x[1] for x in top], [x[1] for x in ref], atol=1e-6)
                 and list(hyb["id"]) == list(exact_hybrid[i]["id"])
                 and np.allclose(hyb["fused_score"], exact_hybrid[i]["fused_score"], atol=1e-6))
    return same


def keyword_index_figures(conn: Any, c: Any, texts: list[str], vectors: np.ndarray,
                          embedder: Any, repeat: int, *, build: Callable[[], Any],
                          drop: Callable[[], Any], what: str) -> dict[str, tuple[float, float]]:
    """The collection's search with BM25 read from ``what`` (made by ``build``, removed by
    ``drop`` afterwards): latency, and the check that every query's hybrid top 10 and BM25 top
    100 equal the exact path's (measured just before, without it)."""
    exact_bm25 = [fetch_candidates(conn, c, t, None, keyword_rankers=("bm25",)).columns
                  for t in texts]
    exact_hybrid = [hybrid_search(conn, c, t, embedder=embedder, vector=v, k=10)
                    for t, v in zip(texts, vectors, strict=True)]
    started = time.perf_counter()
    build()
    print(f"  {what} built in {time.perf_counter() - started:.1f} s")
    try:
        same = same_top_as_exact(conn, c, texts, vectors, embedder, exact_bm25, exact_hybrid)
        print(f"  top-k equal to exact BM25 fusion (BM25 top 100 to 1e-6, hybrid top 10): "
              f"{same} of {len(texts)} queries")
        return latency(conn, c, texts, vectors, embedder, repeat)
    finally:
        drop()


def report(label: str, figures: dict[str, tuple[float, float]], target: bool = False) -> None:
    print(f"\n{label}")
    print(f"  {'query':<10} {'p50 ms':>8} {'p95 ms':>8}")
    for name, (p50, p95) in figures.items():
        print(f"  {name:<10} {p50:>8.2f} {p95:>8.2f}")
    ratio = figures["hybrid"][0] / figures["semantic"][0]
    print(f"  hybrid p50 / semantic p50 = {ratio:.2f}x", end="")
    print(f"   (target <= 3x: {'met' if ratio <= 3 else 'NOT met'})" if target else "")
    floor = figures["no keyword"][0] / figures["semantic"][0]
    print(f"  'no keyword' = hybrid of {NO_KEYWORDS!r} (stopwords: the keyword arm is empty): "
          f"{floor:.2f}x semantic before any keyword work")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--data-dir", help="reuse this embedded database (keeps the big collection)")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the queries per figure")
    parser.add_argument("--queries", type=int, default=100,
                        help="held-out queries for the real-text collection")
    parser.add_argument("--demo-only", action="store_true",
                        help="only the demo's figures (no 100k collections)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vecdash-search-bench-") as tmp:
        settings = Settings.from_env({"VECDASH_DATA_DIR": args.data_dir or tmp})
        embedder = LocalEmbedder()
        with db.connect(settings) as conn:
            demo, _ = load_demo(conn, embedder=embedder)
            labeled = demo_labeled_set()
            queries = [q for q in labeled.queries if q.id in labeled.qrels]
            texts = [q.text for q in queries]
            vectors = embedder.embed(texts)
            print(f"demo: {len(demo_documents())} passages, {len(queries)} labeled queries "
                  "(embedded once, before timing)")

            report("demo collection (exact scan, no vector index)",
                   latency(conn, demo, texts, vectors, embedder, args.repeat))
            report("demo collection, BM25 from impact-ordered postings",
                   keyword_index_figures(conn, demo, texts, vectors, embedder, args.repeat,
                                         build=lambda: enable_postings(conn, demo),
                                         drop=lambda: disable_postings(conn, demo),
                                         what="impact-ordered postings"))
            print("\nquality on the demo's labeled queries (graded qrels):")
            quality(conn, demo, texts, vectors, [labeled.qrels[q.id] for q in queries], embedder,
                    "demo")

            t = time.perf_counter()
            run = run_labeled_queries(conn, demo, labeled, embedder=embedder, vectors=vectors)
            fetched = time.perf_counter() - t
            t = time.perf_counter()
            swept = sweep(run)
            fused = time.perf_counter() - t
            total = fetched + fused
            print(f"\n11-weight sweep over {len(queries)} demo queries, convex and RRF "
                  f"({len(swept)} settings x 4 measures), query embedding excluded:")
            print(f"  candidates fetched once per query (semantic + BM25 + ts_rank_cd): "
                  f"{fetched:.2f} s")
            print(f"  fusion + metrics in numpy for every setting: {fused:.2f} s")
            print(f"  total {total:.2f} s (target < 5 s: {'met' if total < 5 else 'NOT met'})")

            if args.demo_only:
                return 0
            passages = realtext.harvest()
            docs, held = realtext.split(passages, args.rows, realtext.HELD_OUT)
            doc_vectors = realtext.embed_cached(docs + held, embedder)[:len(docs)]
            real, built = build_real(conn, docs, doc_vectors)
            how = f"built in {built:.0f} s" if built else "reused from --data-dir"
            real_texts = [realtext.query_text(p) for p in held[:args.queries]]
            real_vectors = embedder.embed(real_texts)
            print(f"\n{REAL} ({how}): {realtext.describe(docs)}; vectors from the local model; "
                  "HNSW (m=16, ef_construction=64) + GIN, ef_search 100 (the candidate depth)")
            print(f"queries: the first sentence (up to 8 words) of {len(real_texts)} held-out "
                  f"paragraphs, e.g. {real_texts[0]!r}, {real_texts[1]!r} (embedded before timing)")
            drop_packed(conn, real)  # the load built them: the exact path first
            report(f"{len(docs)}-row real-text collection (HNSW + GIN), exact BM25",
                   latency(conn, real, real_texts, real_vectors, embedder, args.repeat),
                   target=True)
            report(f"{len(docs)}-row real-text collection, BM25 from impact-ordered postings",
                   keyword_index_figures(
                       conn, real, real_texts, real_vectors, embedder, args.repeat,
                       build=lambda: enable_postings(conn, real),
                       drop=lambda: disable_postings(conn, real), what="impact-ordered postings"),
                   target=True)
            report(f"{len(docs)}-row real-text collection, BM25 from packed postings (the default "
                   f"from {PACKED_MIN_ROWS:,} rows)",
                   keyword_index_figures(
                       conn, real, real_texts, real_vectors, embedder, args.repeat,
                       build=lambda: build_packed(conn, real), drop=lambda: None,
                       what="packed postings"),
                   target=True)
            # Known-item queries: the first sentence of a stored passage; its own row is the one
            # relevant document.
            known = list(range(0, len(docs), max(1, len(docs) // args.queries)))[:args.queries]
            print(f"\nquality on {len(known)} known-item queries (a stored passage's first "
                  "sentence, up to 8 words; relevant: that passage):")
            known_texts = [realtext.query_text(docs[i]) for i in known]
            quality(conn, real, known_texts, embedder.embed(known_texts),
                    [{f"d{i}": 1} for i in known], embedder, "real text, BM25 from packed postings")

            big, built = build_big(conn, args.rows)
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(big.table)).fetchone()[0]
            how = (f"built in {built:.0f} s" if built else "reused from --data-dir")
            print(f"\nstress case, {BIG}: {rows} rows ({how}): the demo's 365 passages' words "
                  "dropped and shuffled into distinct texts, so every query word is common (a "
                  "vocabulary of a few thousand words over every row); vectors = the passage's "
                  "embedding + N(0, 0.05) noise, normalised; HNSW + GIN; the demo's queries")
            drop_packed(conn, big)
            report(f"{rows}-row stress collection (HNSW + GIN), exact BM25",
                   latency(conn, big, texts, vectors, embedder, args.repeat))
            report(f"{rows}-row stress collection, BM25 from packed postings",
                   keyword_index_figures(conn, big, texts, vectors, embedder, args.repeat,
                                         build=lambda: build_packed(conn, big),
                                         drop=lambda: None, what="packed postings"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
