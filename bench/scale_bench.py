"""Scale benchmark: how every cost grows from 100,000 to 1,000,000 rows of 384-d vectors with
real-looking text (issue 20).

    .venv/bin/python bench/scale_bench.py [--rows 100000,1000000] [--data-dir DIR] [--queries 50]

The small collection is the real-text corpus (bench/realtext.py: docstring paragraphs with the
local model's cached embeddings, the same 100k rows the other benches use). The large one holds the
same rows plus perturbed copies: each copy takes a random stored passage, drops about 15% of its
words, replaces about 10% with words of another random passage and swaps a few neighbours (so the
lexeme statistics stay those of real text, and every copy is a distinct text), with that passage's
vector plus Gaussian noise (sigma 0.03 per dimension, L2-normalised). Nothing is embedded here
beyond the queries: the run stops if the 100k vectors are not cached yet (bench/realtext.py
embed_cached; pass --embed to let this run embed them, about 36 minutes on 2 cores).

Per size, in one run on one server with the same settings:
- ingest: vecdash.ingest.ingest_records of precomputed vectors, batches of 5,000, the GIN index
  and the BM25 triggers kept during the load (which ends with the packed postings' build): the
  rate of the whole load, and the rate "at" that size: 20,000 more rows (a fifth of the small
  size at most) appended to the full table with its HNSW index, without and with the update of
  the packed postings that ends a load (a segment of the new rows, timed on its own after the
  rows are written, so both rates come from one append); the appended rows are deleted again
  (100 of them, then the rest, both timed: the packed postings record deleted ids up to a tenth
  of the rows, then build whole; rebuilt untimed after) after both sizes' appends, and vacuumed
  (timed: pgvector's HNSW vacuum takes minutes at 1M, and an autovacuum left running would
  overlap whatever is timed next; every timed phase waits for running vacuums first,
  --vacuum-wait), and with --impact-postings the
  opt-in impact-ordered postings are timed too (vecdash.bm25.postings: backfill, append,
  searches; minutes at 1M). This runs last;
- HNSW (m=16, ef_construction=64, cosine) build time with maintenance_work_mem set from the
  table's size, one extra parallel worker, and the index's size (the graph's memory is about its
  size; pgvector's notice, if the graph outgrew maintenance_work_mem, is printed);
- semantic / BM25 / hybrid p50 and p95 (vecdash.search functions; query embedding excluded; after
  one untimed pass, as search_bench does): BM25 and hybrid from the packed postings (as after a
  load), then by the exact path (the snapshot dropped), then the snapshot's whole build, timed;
- Index Lab ground truth: the exact top-10 of 50 queries (vecdash.indexes.exact_neighbours);
- the first map: a 5,000-point sample (vecdash.projection.sample_vectors) and its UMAP;
- each page's first render (Home, Search, Quality Lab, Index Lab, Embedding Map) under
  streamlit's AppTest in this process, the collection selected (the Map page with its projection
  stored, so it shows the cost of loading a map rather than of fitting one).

With --data-dir the collections and the load / build figures (data-dir/scale_bench.json) are kept,
so a second run measures the searches and pages at once. --rows 20000,200000 runs a quick check.
Targets (issue 20): ingest rate at 1M >= 0.8x at 100k; search p50/p95 at 1M <= 3x; every page's
first render at 1M <= 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

import realtext  # noqa: E402  (bench/realtext.py, next to this file)
from psycopg import sql  # noqa: E402
from search_bench import percentiles as timed_percentiles  # noqa: E402

from vecdash import db  # noqa: E402
from vecdash.bm25 import packed  # noqa: E402
from vecdash.collections import create_collection, drop_collection, get_collection  # noqa: E402
from vecdash.config import Settings  # noqa: E402
from vecdash.embedders import LocalEmbedder  # noqa: E402
from vecdash.errors import NotFound  # noqa: E402
from vecdash.ingest import Record, delete_documents, ingest_records  # noqa: E402
from vecdash.records import embed_text  # noqa: E402
from vecdash.search import fetch_candidates, hybrid_search, semantic_search  # noqa: E402

NOISE = 0.03
BATCH = 5000
PAGES = [("Home", "app_pages/home.py"), ("Search", "app_pages/search.py"),
         ("Quality Lab", "app_pages/quality.py"), ("Index Lab", "app_pages/indexes.py"),
         ("Embedding Map", "app_pages/map.py")]


class Corpus:
    """Texts, titles, categories and vectors of the largest size; a smaller collection is a
    prefix (so the large one holds the small one's rows)."""

    def __init__(self, docs: list[realtext.Passage], vectors: np.ndarray, rows: int,
                 seed: int = 0) -> None:
        started = time.perf_counter()
        base = len(docs)
        rng = np.random.default_rng(seed)
        self.titles = [p.title for p in docs]
        self.categories = [p.category for p in docs]
        self.texts = [p.text for p in docs]
        self.vectors = np.empty((rows, vectors.shape[1]), dtype=np.float32)
        self.vectors[:base] = vectors[:base]
        self.words = [p.text.split() for p in docs]
        self.seen = set(self.texts)
        sources = rng.integers(base, size=rows)
        for i in range(base, rows):
            p = int(sources[i])
            self.texts.append(self._distinct_copy(p, rng))
            self.titles.append(docs[p].title)
            self.categories.append(docs[p].category)
        for start in range(base, rows, 50_000):  # noise in blocks: no 1.5 GB temporary
            stop = min(rows, start + 50_000)
            self.vectors[start:stop] = _noisy(vectors[sources[start:stop]], rng)
        if rows > base:
            print(f"  {rows - base:,} perturbed copies made in {time.perf_counter() - started:.0f} s",
                  flush=True)

    def _distinct_copy(self, p: int, rng: np.random.Generator) -> str:
        text = self._perturb(self.words, p, rng)
        while text in self.seen:  # a copy equal to a stored text would be skipped as a duplicate
            text = self._perturb(self.words, p, rng)
        self.seen.add(text)
        return text

    def extra(self, n: int, seed: int) -> list[Record]:
        """``n`` more perturbed copies, distinct from every row: the batch appended to a full
        collection to time a load into a table of that size."""
        rng = np.random.default_rng(seed)
        sources = rng.integers(len(self.words), size=n)
        vectors = _noisy(self.vectors[sources], rng)
        return [Record(self._distinct_copy(int(p), rng), title=self.titles[int(p)],
                       external_id=f"append{i}", category=self.categories[int(p)],
                       embedding=vectors[i]) for i, p in enumerate(sources)]

    @staticmethod
    def _perturb(words: list[list[str]], p: int, rng: np.random.Generator) -> str:
        own = words[p]
        other = words[int(rng.integers(len(words)))]
        roll = rng.random(len(own))
        out = []
        for w, r in zip(own, roll, strict=True):
            if r < 0.15:
                continue  # dropped
            out.append(other[int(r * 1000) % len(other)] if r < 0.25 else w)  # swapped in
        if len(out) < 4:
            out = list(own)
        for _ in range(max(1, len(out) // 10)):  # a few neighbours reordered
            j = int(rng.integers(len(out) - 1))
            out[j], out[j + 1] = out[j + 1], out[j]
        return " ".join(out)

    def records(self, rows: int) -> Iterator[Record]:
        for i in range(rows):
            yield Record(self.texts[i], title=self.titles[i], external_id=f"s{i}",
                         category=self.categories[i], embedding=self.vectors[i])


def _noisy(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    block = vectors + rng.normal(scale=NOISE, size=vectors.shape).astype(np.float32)
    return block / np.linalg.norm(block, axis=1, keepdims=True)


def cached_vectors(docs: list[realtext.Passage], embedder: Any, allow_embed: bool,
                   wait_minutes: float) -> np.ndarray:
    texts = [embed_text(p.record("x")) for p in docs]
    path = realtext.CACHE / f"vectors-{realtext._key(embedder.model, texts)}.npy"
    deadline = time.monotonic() + 60 * wait_minutes
    if not path.exists() and wait_minutes:
        print(f"waiting up to {wait_minutes:g} min for {path}", flush=True)
    while not path.exists() and time.monotonic() < deadline:  # another run is embedding them
        time.sleep(20)
    if not path.exists() and not allow_embed:
        raise SystemExit(f"The corpus vectors are not cached yet ({path}). Wait for the run "
                         "embedding them, or pass --embed to embed them here (about 36 min).")
    return realtext.embed_cached(docs, embedder)


def percentiles(fn: Callable[[int], Any], n: int, repeat: int) -> tuple[float, float]:
    """search_bench's p50 / p95, after one untimed pass (a warm server)."""
    for i in range(n):
        fn(i)
    return timed_percentiles(fn, n, repeat)


def count_rows(conn: Any, c: Any) -> int:
    return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(c.table)).fetchone()[0])


def load(conn: Any, corpus: Corpus, name: str, rows: int) -> dict[str, float]:
    """Create and load the collection; the load's rate."""
    c = create_collection(conn, name, dimension=corpus.vectors.shape[1])
    started = time.perf_counter()
    report = ingest_records(conn, c, corpus.records(rows), batch_size=BATCH)
    seconds = time.perf_counter() - started
    if report.inserted != rows:
        raise SystemExit(f"{name}: {report.inserted:,} of {rows:,} rows loaded: {report}")
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(c.table))  # what autovacuum does soon after
    return {"load_s": seconds, "rate": rows / seconds}


def build_hnsw(conn: Any, name: str) -> dict[str, float]:
    c = get_collection(conn, name)
    rows = count_rows(conn, c)
    # room for the graph in memory: per element its vector (4 bytes a dimension), 2m = 32
    # layer-0 neighbours of about 24 bytes and some 256 bytes of bookkeeping, with a quarter
    # spare: a graph that outgrows maintenance_work_mem is finished on disk, many times slower
    mwm_mb = max(256, min(6144, int(rows * (c.dimension * 4 + 32 * 24 + 256) * 1.25 / 2**20)))
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{mwm_mb}MB")))
    conn.execute("SET max_parallel_maintenance_workers = 1")
    started = time.perf_counter()
    conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops) "
                         "WITH (m = 16, ef_construction = 64)").format(
        sql.Identifier(f"{name}_hnsw"), c.table))
    seconds = time.perf_counter() - started
    size = int(conn.execute("SELECT pg_relation_size(%s::regclass)",
                            (sql.Identifier(c.schema_name, f"{name}_hnsw").as_string(conn),)
                            ).fetchone()[0])
    conn.execute("RESET maintenance_work_mem")
    for n in notices:
        print(f"  notice: {n}", flush=True)
    return {"hnsw_s": seconds, "hnsw_mb": size / 2**20, "mwm_mb": float(mwm_mb),
            "hnsw_spilled": float(any("maintenance_work_mem" in n for n in notices))}


def prepare(conn: Any, corpus: Corpus, name: str, rows: int, saved: dict[str, Any]) -> Any:
    """The collection of ``rows`` rows with its HNSW index: reused when --data-dir holds it whole,
    else (re)built with its load and build figures recorded."""
    try:
        c = get_collection(conn, name)
        from vecdash.bm25.postings import disable_postings, postings_status
        if postings_status(conn, c) is not None:  # a run stopped half-way: measure without first
            disable_postings(conn, c)
        if count_rows(conn, c) == rows and name in saved and "hnsw_s" in saved[name]:
            print(f"{name}: reused ({rows:,} rows)", flush=True)
            return c
        drop_collection(conn, name)
    except NotFound:
        pass
    print(f"{name}: loading {rows:,} rows", flush=True)
    figures = load(conn, corpus, name, rows)
    print(f"  {figures['rate']:,.0f} rows/s ({figures['load_s']:.0f} s); HNSW build…", flush=True)
    figures.update(build_hnsw(conn, name))
    print(f"  HNSW {figures['hnsw_s']:.0f} s, {figures['hnsw_mb']:.0f} MB", flush=True)
    saved[name] = figures
    return get_collection(conn, name)


APPEND = 20_000


def append_rate(conn: Any, c: Any, records: list[Record]) -> float:
    """Rows/s of loading ``records`` into the full collection (then deleted again)."""
    started = time.perf_counter()
    report = ingest_records(conn, c, records, batch_size=BATCH)
    seconds = time.perf_counter() - started
    if report.inserted != len(records):
        raise SystemExit(f"{c.name}: appended {report.inserted:,} of {len(records):,}: {report}")
    return len(records) / seconds


def delete_appended(conn: Any, c: Any, records: list[Record]) -> float:
    """Seconds to delete the appended rows again (so a --data-dir rerun finds the collection
    whole; autovacuum reclaims them), the packed postings' update after it included."""
    started = time.perf_counter()
    delete_documents(conn, c, [r.external_id for r in records if r.external_id])
    return time.perf_counter() - started


def wait_for_vacuums(conn: Any, minutes: float) -> None:
    """Wait until no VACUUM runs on the server (a delete of many rows from a table with an HNSW
    index starts an autovacuum that takes minutes at 1M rows and competes with whatever is
    timed on 2 cores), at most ``minutes``; say how long it took."""
    started = time.perf_counter()
    while conn.execute("SELECT count(*) FROM pg_stat_progress_vacuum").fetchone()[0]:
        if time.perf_counter() - started > minutes * 60:
            print(f"  warning: a VACUUM still runs after {minutes:g} min: the figures that "
                  "follow overlap it", flush=True)
            return
        time.sleep(2)
    if time.perf_counter() - started > 1:
        print(f"  waited {time.perf_counter() - started:.0f} s for a VACUUM to finish", flush=True)


def append_figures(conn: Any, c: Any, records: list[Record], vacuum_wait: float,
                   ) -> dict[str, float]:
    """Appending to the full table with its HNSW index, the packed postings current, no VACUUM
    running: the load with its own update of them held back, then that update (a segment of
    the new rows) timed on its own, so the rates with and without it come from one append."""
    if not packed.packed_is_current(conn, c):
        packed.build_packed(conn, c)
    wait_for_vacuums(conn, vacuum_wait)
    kept, packed.PACKED_MIN_ROWS = packed.PACKED_MIN_ROWS, 2**62
    try:
        load_s = len(records) / append_rate(conn, c, records)
    finally:
        packed.PACKED_MIN_ROWS = kept
    started = time.perf_counter()
    packed.update_packed(conn, c)  # what the load does at its end
    segment_s = time.perf_counter() - started
    status = packed.packed_status(conn, c)
    if status is None or not status.current or status.segments < 2:
        print(f"  warning: {c.name}: the append did not add a segment: {status}", flush=True)
    return {"append": len(records) / load_s, "append_packed": len(records) / (load_s + segment_s),
            "segment_s": segment_s}


def delete_figures(conn: Any, c: Any, records: list[Record]) -> dict[str, float]:
    """Deleting the appended rows again: 100 of them, then the others (the packed postings
    record deleted ids up to a tenth of the rows, then build whole), then the VACUUM that
    reclaims them (pgvector repairs the HNSW graph around deleted rows), run here rather than
    left to autovacuum; last an untimed whole build, so a rerun finds the packed postings as a
    load leaves them."""
    out = {"delete_some_s": delete_appended(conn, c, records[:100])}
    status = packed.packed_status(conn, c)
    if status is None or not status.current or status.deleted != 100:
        print(f"  warning: {c.name}: the delete did not record 100 deleted ids: {status}",
              flush=True)
    out["delete_rest_s"] = delete_appended(conn, c, records[100:])
    status = packed.packed_status(conn, c)
    out["delete_rest_whole"] = float(status is not None and status.deleted == 0)
    conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE backend_type = "
                 "'autovacuum worker'")  # (one may have started on the table: this VACUUM waits)
    started = time.perf_counter()
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(c.table))
    out["vacuum_s"] = time.perf_counter() - started
    packed.build_packed(conn, c)
    return out


def with_postings(conn: Any, c: Any, records: list[Record], texts: list[str],
                  vectors: np.ndarray, embedder: Any, repeat: int) -> dict[str, float]:
    """Postings enabled (the backfill timed), an append timed with their triggers, the keyword
    and hybrid searches again (now served by the postings), then postings disabled."""
    from vecdash.bm25.postings import disable_postings, enable_postings

    started = time.perf_counter()
    enable_postings(conn, c)
    out = {"postings_backfill_s": time.perf_counter() - started,
           "append_postings": append_rate(conn, c, records)}
    delete_appended(conn, c, records)
    packed.drop_packed(conn, c)  # else the packed postings answer BM25 first
    found = search_figures(conn, c, texts, vectors, embedder, repeat, arms=("bm25", "hybrid"))
    for arm, (p50, p95) in found.items():
        out[f"{arm}_postings_p50"], out[f"{arm}_postings_p95"] = p50, p95
    probe = fetch_candidates(conn, c, texts[0], None, keyword_rankers=("bm25",))
    if not getattr(probe, "work", None):
        print(f"  warning: {c.name}: the keyword arm did not read the postings", flush=True)
    disable_postings(conn, c)
    packed.build_packed(conn, c)
    return out


def search_figures(conn: Any, c: Any, texts: list[str], vectors: np.ndarray, embedder: Any,
                   repeat: int, arms: tuple[str, ...] = ("semantic", "bm25", "hybrid"),
                   ) -> dict[str, tuple[float, float]]:
    n = len(texts)
    conn.execute("SET hnsw.ef_search = 100")  # the candidate depth, as search_bench runs it
    runs: dict[str, Callable[[int], Any]] = {
        "semantic": lambda i: semantic_search(conn, c, vectors[i], k=10),
        "bm25": lambda i: fetch_candidates(conn, c, texts[i], None, keyword_rankers=("bm25",)),
        "hybrid": lambda i: hybrid_search(conn, c, texts[i], embedder=embedder,
                                          vector=vectors[i], k=10),
    }
    return {arm: percentiles(runs[arm], n, repeat) for arm in arms}


def ground_truth_seconds(conn: Any, c: Any, vectors: np.ndarray) -> float:
    from vecdash.indexes.measurement import exact_neighbours
    from vecdash.indexes.sample_queries import queries_from_vectors

    queries = queries_from_vectors(c, vectors, [str(i) for i in range(len(vectors))],
                                   source="scale bench")
    started = time.perf_counter()
    exact_neighbours(conn, c, queries, k=10)
    return time.perf_counter() - started


def map_figures(conn: Any, c: Any) -> dict[str, float]:
    from vecdash.projection import ProjectionParams, clear_cache, compute_projection, sample_vectors

    clear_cache(conn, c)
    params = ProjectionParams(sample_size=5000)
    started = time.perf_counter()
    sample = sample_vectors(conn, c, limit=params.sample_size, seed=params.seed)
    sampled = time.perf_counter() - started
    compute_projection(conn, c, sample, params, store=True)
    return {"map_sample_s": sampled, "map_first_s": time.perf_counter() - started}


def page_seconds(name: str) -> dict[str, float]:
    """Each page's first render under AppTest, the collection selected (fresh session each)."""
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parents[1] / "app.py")
    out = {}
    for label, page in PAGES:
        at = AppTest.from_file(app, default_timeout=600)
        at.session_state["collection"] = name
        started = time.perf_counter()
        at.run()
        if page != "app_pages/home.py":
            started = time.perf_counter()  # Home ran first (the entry page): time the switch
            at.switch_page(page).run()
        out[label] = time.perf_counter() - started
        if at.exception:  # a page that failed has no render time worth comparing
            print(f"  {label}: {[e.message for e in at.exception]}", flush=True)
            out[label] = float("nan")
        for shown in at.error:  # what the page told its user went wrong (a timeout, say)
            print(f"  {label} showed an error: {str(shown.value)[:300]}", flush=True)
    return out


def table(sizes: list[int], figures: list[dict[str, float]]) -> None:
    small, large = sizes
    print(f"\n| figure | {small:,} rows | {large:,} rows | ratio | target |")
    print("|---|---:|---:|---:|---|")

    def row(label: str, key: str, unit: str, target: float | None, higher_is_better: bool = False,
            fmt: str = ",.1f") -> None:
        a, b = figures[0].get(key), figures[1].get(key)
        if a is None or b is None:
            return
        ratio = b / a if a else float("inf")
        if target is None:
            verdict = ""
        elif higher_is_better:
            verdict = f">= {target}x: {'met' if ratio >= target else 'NOT met'}"
        else:
            verdict = f"<= {target}x: {'met' if ratio <= target else 'NOT met'}"
        print(f"| {label} | {a:{fmt}} {unit} | {b:{fmt}} {unit} | {ratio:.2f}x | {verdict} |")

    row("ingest, whole load", "rate", "rows/s", None, fmt=",.0f")
    row("ingest, rows appended to the full table (packed postings kept: a segment added)",
        "append_packed", "rows/s", 0.8, True, ",.0f")
    row("ingest, rows appended to the full table (no packed postings)", "append", "rows/s", 0.8,
        True, ",.0f")
    row("packed postings, whole build", "packed_build_s", "s", None)
    row("packed postings, the appended rows' segment", "segment_s", "s", None, fmt=".2f")
    row("deleting 100 of the appended rows (their ids recorded in the packed postings)",
        "delete_some_s", "s", None, fmt=".2f")
    row("deleting the other appended rows (recorded; past a tenth of the rows a whole build: "
        + ", ".join(f"{n:,}: {'whole' if f.get('delete_rest_whole') else 'recorded'}"
                    for n, f in zip(sizes, figures, strict=True)) + ")",
        "delete_rest_s", "s", None)
    row("VACUUM after those deletes (pgvector repairs the HNSW graph)", "vacuum_s", "s", None)
    row("ingest with postings, appended to the full table", "append_postings", "rows/s", 0.8,
        True, ",.0f")
    row("postings backfill (enable_postings on the full table)", "postings_backfill_s", "s",
        None)
    row("HNSW build (m=16, ef_construction=64, 1 extra worker)", "hnsw_s", "s", None)
    row("HNSW index size (~ graph memory)", "hnsw_mb", "MB", None, fmt=",.0f")
    row("maintenance_work_mem given", "mwm_mb", "MB", None, fmt=",.0f")
    for arm in ("semantic", "bm25", "hybrid", "bm25_exact", "hybrid_exact", "bm25_postings",
                "hybrid_postings"):
        label = arm.replace("_postings", " (impact-ordered postings)").replace(
            "_exact", " (exact path)").replace("bm25", "BM25")
        if arm in ("bm25", "hybrid"):
            label += " (packed postings)"
        row(f"{label} p50", f"{arm}_p50", "ms", 3, fmt=".2f")
        row(f"{label} p95", f"{arm}_p95", "ms", 3, fmt=".2f")
    row("Index Lab ground truth (exact top-10, 50 queries)", "truth_s", "s", None)
    row("first map: 5,000-point sample", "map_sample_s", "s", None, fmt=".2f")
    row("first map: sample + UMAP", "map_first_s", "s", None)
    for label, _ in PAGES:
        row(f"page first render: {label}", f"page {label}", "s", 2, fmt=".2f")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="the two sizes, small,large")
    parser.add_argument("--data-dir", help="keep the collections in this embedded database")
    parser.add_argument("--queries", type=int, default=50, help="held-out queries per figure")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes over the queries")
    parser.add_argument("--embed", action="store_true", help="embed the corpus if not cached")
    parser.add_argument("--wait", type=float, default=0,
                        help="minutes to wait for the cached vectors (another run embeds them)")
    parser.add_argument("--corpus", help="a harvested docstrings-*.jsonl to use instead of "
                        "realtext.harvest() (whose cache key changes when .venv changes)")
    parser.add_argument("--no-pages", action="store_true", help="skip the page renders")
    parser.add_argument("--impact-postings", action="store_true",
                        help="also time the opt-in impact-ordered postings (minutes at 1M)")
    parser.add_argument("--vacuum-wait", type=float, default=30,
                        help="minutes to wait for a running VACUUM before timing (default 30)")
    parser.add_argument("--stand-in-vectors", action="store_true",
                        help="random vectors instead of the cached embeddings: checks the "
                             "machinery only (semantic figures are not those of real vectors)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.rows.split(","))
    if len(sizes) != 2 or sizes[0] < 1000:
        raise SystemExit("--rows takes two sizes, e.g. 100000,1000000")
    with tempfile.TemporaryDirectory(prefix="vecdash-scale-bench-") as tmp:
        data_dir = Path(args.data_dir or tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        # The pages (AppTest, in this process) read the same environment, so they use this server.
        os.environ.update(VECDASH_DATA_DIR=str(data_dir), VECDASH_AUTOLOAD_DEMO="0")
        settings = Settings.from_env()
        embedder = LocalEmbedder()
        passages = (realtext.harvest() if not args.corpus else
                    [realtext.Passage(**json.loads(line))
                     for line in Path(args.corpus).read_text(encoding="utf-8").splitlines()])
        docs, held = realtext.split(passages, 100_000, realtext.HELD_OUT)
        if args.stand_in_vectors:
            rng = np.random.default_rng(0)
            vectors = rng.normal(size=(len(docs), 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        else:
            vectors = cached_vectors(docs + held, embedder, args.embed, args.wait)
        base = min(sizes[0], len(docs))
        print(f"corpus: {realtext.describe(docs[:base])}; large = those plus perturbed copies",
              flush=True)
        corpus = Corpus(docs[:base], vectors[:base], sizes[1])
        query_texts = [realtext.query_text(p) for p in held[:args.queries]]
        query_vectors = np.asarray(embedder.embed(query_texts), dtype=np.float32)
        saved_path = data_dir / "scale_bench.json"
        saved: dict[str, Any] = json.loads(saved_path.read_text()) if saved_path.exists() else {}
        names = [f"scale_{n}" for n in sizes]
        figures: list[dict[str, float]] = []
        with db.connect(settings) as conn:
            conn.autocommit = True
            conn.execute("SET statement_timeout = 0")  # loads and builds take minutes here
            for name, rows in zip(names, sizes, strict=True):
                prepare(conn, corpus, name, rows, saved)
                saved_path.write_text(json.dumps(saved, indent=1))
            appended = corpus.extra(min(APPEND, sizes[0] // 5), seed=1)
            del corpus  # the pages and maps below should not run beside 2 GB of lists
            from vecdash.projection import warm_up
            warm_up()  # numba compiled once, before any map is timed
            wait_for_vacuums(conn, args.vacuum_wait)  # (one an earlier run's deletes started)
            for name in names:
                c = get_collection(conn, name)
                f = dict(saved[name])
                print(f"{name}: searching, ground truth, first map", flush=True)
                if not packed.packed_is_current(conn, c):
                    packed.build_packed(conn, c)
                for arm, (p50, p95) in search_figures(conn, c, query_texts, query_vectors,
                                                      embedder, args.repeat).items():
                    f[f"{arm}_p50"], f[f"{arm}_p95"] = p50, p95
                packed.drop_packed(conn, c)  # the exact path, as before packed postings
                for arm, (p50, p95) in search_figures(conn, c, query_texts, query_vectors,
                                                      embedder, args.repeat,
                                                      arms=("bm25", "hybrid")).items():
                    f[f"{arm}_exact_p50"], f[f"{arm}_exact_p95"] = p50, p95
                started = time.perf_counter()
                packed.build_packed(conn, c)
                f["packed_build_s"] = time.perf_counter() - started
                f["truth_s"] = ground_truth_seconds(conn, c, query_vectors[:50])
                f.update(map_figures(conn, c))
                figures.append(f)
            if not args.no_pages:
                page_seconds(names[0])  # warm: the model, the pool and the imports, untimed
                for name, f in zip(names, figures, strict=True):
                    print(f"{name}: page renders", flush=True)
                    f.update({f"page {k}": v for k, v in page_seconds(name).items()})
            # last: these write (appended rows deleted again, postings built and dropped)
            for name, f in zip(names, figures, strict=True):
                c = get_collection(conn, name)
                print(f"{name}: appending {len(appended):,} rows, with and without packed "
                      "postings", flush=True)
                f.update(append_figures(conn, c, appended, args.vacuum_wait))
            for name, f in zip(names, figures, strict=True):  # (after both appends: the
                c = get_collection(conn, name)  # deletes' VACUUM overlaps no timed append)
                print(f"{name}: deleting the appended rows, VACUUM", flush=True)
                f.update(delete_figures(conn, c, appended))
                if args.impact_postings:
                    f.update(with_postings(conn, c, appended, query_texts, query_vectors,
                                           embedder, args.repeat))
        print(f"\n{len(query_texts)} queries (held-out first sentences, 8 words), "
              f"{args.repeat} timed passes after one untimed; noise sigma {NOISE}; pages under "
              "AppTest in this process (Map with its projection stored)")
        table(sizes, figures)
        sys.stdout.flush()
        if not args.data_dir:
            db.stop_embedded(settings)
    # AppTest leaves the app's background threads (model and UMAP warm-ups, Streamlit's own)
    # running, and they keep the interpreter from exiting: everything is printed and stored.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
