"""`python -m vecdash ...`: the dashboard's operations, headless.

Each subcommand is a function taking the parsed arguments and returning an exit code; ``COMMANDS``
maps names to (function, help, argument setup). Errors print their message and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vecdash import db
from vecdash.config import Settings, settings_table
from vecdash.errors import VecdashError

if TYPE_CHECKING:
    from vecdash.collections import Collection
    from vecdash.embedders import Embedder

Handler = Callable[[argparse.Namespace], int]


def _connect() -> Any:
    return db.connect(Settings.from_env())


def cmd_info(args: argparse.Namespace) -> int:
    with _connect() as conn:
        info = db.server_info(conn)
    print(f"database:   {info.label} ({info.source})")
    print(f"postgres:   {info.postgres_version}")
    print(f"pgvector:   {info.pgvector_version}")
    print(f"read-only:  {'yes' if info.read_only else 'no'}")
    return 0


def cmd_collections(args: argparse.Namespace) -> int:
    from vecdash.collections import describe_collections

    with _connect() as conn:
        rows = describe_collections(conn)
    if not rows:
        print("no collections (load the demo: python -m vecdash load-demo)")
        return 0
    print(f"{'collection':<24} {'rows':>9} {'dim':>6} {'metric':<7} {'model':<28} indexes")
    for s in rows:
        print(f"{s.name:<24} {s.rows:>9} {s.dimension:>6} {s.metric:<7} "
              f"{s.embedder + '/' + s.model:<28} {s.indexes}")
    return 0


def cmd_load_demo(args: argparse.Namespace) -> int:
    from vecdash.demo import demo_documents, load_demo
    from vecdash.embedders import LocalEmbedder

    total = len(demo_documents())

    def progress(report: Any) -> None:
        print(f"\r{report.processed}/{total} passages", end="", file=sys.stderr, flush=True)

    with _connect() as conn:
        _, report = load_demo(conn, embedder=LocalEmbedder(), reload=args.reload, progress=progress)
    print(file=sys.stderr)
    print(f"inserted {report.inserted}, skipped {report.skipped_duplicates} duplicates, "
          f"failed {report.failed_count}")
    return 0


def _query_embedder(collection: Collection) -> Embedder:
    """The embedder for a collection's text queries (OpenAI key and base URL from the settings)."""
    from vecdash.embedders import embedder_for

    settings = Settings.from_env()
    return embedder_for(collection, api_key=settings.openai_api_key,
                        base_url=settings.openai_base_url)


def cmd_search(args: argparse.Namespace) -> int:
    from vecdash.collections import get_collection
    from vecdash.search import search_text

    with _connect() as conn:
        collection = get_collection(conn, args.collection)
        hits = search_text(conn, collection, args.query, embedder=_query_embedder(collection),
                           k=args.k)
    for hit in hits.itertuples():
        print(f"{hit.rank:>3}  {hit.distance:.4f}  {hit.external_id}  {hit.title}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vecdash.collections import get_collection
    from vecdash.labels import load_labeled_files
    from vecdash.quality import evaluation_report, run_labeled_queries

    with _connect() as conn:
        collection = get_collection(conn, args.collection)
        labeled = load_labeled_files(args.queries, args.qrels, collection=collection)
        for p in labeled.problems:
            print(f"{p.source}:{p.line or '-'}: {p.problem}", file=sys.stderr)
        run = run_labeled_queries(conn, collection, labeled, embedder=_query_embedder(collection),
                                  candidates=args.candidates)
    print(evaluation_report(run, k=args.k, weight=args.weight, fusion=args.fusion))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import time

    from vecdash.chunking import ChunkSpec
    from vecdash.embedders import get_embedder
    from vecdash.loading import ingest_file
    from vecdash.readers import ColumnMapping, ReadCounter, count_rows, detect_format

    settings = Settings.from_env()
    fmt = detect_format(args.file)
    embedder = None
    if args.embedder != "none":
        embedder = get_embedder(args.embedder, args.model, dimensions=args.dimensions,
                                api_key=settings.openai_api_key,
                                base_url=args.base_url or settings.openai_base_url)
    mapping = None
    if args.content:
        mapping = ColumnMapping(content=args.content, id=args.id, title=args.title,
                                category=args.category, embedding=args.vector_column,
                                metadata=tuple(args.metadata or ()))
    total = count_rows(args.file, fmt=fmt, text_mode=args.text_mode)
    counter = ReadCounter()
    started = time.monotonic()

    def progress(report: Any) -> None:
        done = min(counter.rows, total)
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / total) if total else width
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows  "
              f"{report.inserted} new  {rate:.1f} rows/s  ETA {eta:.0f}s ",
              end="", file=sys.stderr, flush=True)

    with _connect() as conn:
        collection, report = ingest_file(
            conn, args.file, collection=args.collection, mapping=mapping, fmt=fmt,
            text_mode=args.text_mode,
            chunking=ChunkSpec(args.chunking, args.chunk_size, args.overlap),
            embedder=embedder, metric=args.metric, batch_size=args.batch_size,
            progress=progress, counter=counter)
    print(file=sys.stderr)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for failure in report.failed[:20]:
        print(f"failed: {failure.external_id}: {failure.reason}", file=sys.stderr)
    if report.failed_count > 20:
        print(f"... and {report.failed_count - 20} more failures", file=sys.stderr)
    print(f"{collection.name}: inserted {report.inserted}, skipped {report.skipped_duplicates} "
          f"duplicates, failed {report.failed_count}; {report.embedded} texts embedded, "
          f"{report.cached} from the embedding cache")
    return 0


def _setup_ingest(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="CSV, TSV, JSON, JSONL, Parquet, .txt/.md or PDF")
    p.add_argument("--collection", required=True, help="target (created when missing)")
    p.add_argument("--embedder", default="local", choices=["local", "openai", "none"],
                   help="'none': the file has a vector column")
    p.add_argument("--model", default=None)
    p.add_argument("--dimensions", type=int, default=None, help="OpenAI text-embedding-3 only")
    p.add_argument("--base-url", default="", help="an OpenAI-compatible server")
    p.add_argument("--content", default=None, help="content column (default: guessed)")
    p.add_argument("--id", default=None)
    p.add_argument("--title", default=None)
    p.add_argument("--category", default=None)
    p.add_argument("--vector-column", default=None, help="column with precomputed vectors")
    p.add_argument("--metadata", nargs="*", help="columns kept in metadata")
    p.add_argument("--text-mode", default="file", choices=["file", "sections"])
    p.add_argument("--chunking", default="none", choices=["none", "paragraph", "tokens"])
    p.add_argument("--chunk-size", type=int, default=200, help="tokens per chunk")
    p.add_argument("--overlap", type=int, default=40, help="tokens shared by neighbours")
    p.add_argument("--metric", default="cosine", choices=["cosine", "l2", "ip"])
    p.add_argument("--batch-size", type=int, default=256)


def cmd_index(args: argparse.Namespace) -> int:
    from vecdash import indexes as ix
    from vecdash.collections import get_collection

    with _connect() as conn:
        collection = get_collection(conn, args.collection)
        if args.drop:
            ix.drop_index(conn, collection, args.drop)
            print(f"dropped {args.drop}")
        if args.build:
            spec = ix.IndexSpec(args.build, m=args.m, ef_construction=args.ef_construction,
                                lists=args.lists)
            r = ix.build_index(conn, collection, spec, maintenance_work_mem=args.memory,
                               parallel_workers=args.workers)
            print(f"built {r.index} ({r.spec.label}) in {r.seconds:.2f} s "
                  f"(maintenance_work_mem={r.maintenance_work_mem}, workers={r.parallel_workers})")
        for i in ix.list_vector_indexes(conn, collection):
            took = f"{i.build_seconds:.2f} s" if i.build_seconds is not None else "-"
            print(f"{i.name:<44} {i.opclass:<20} {'valid' if i.valid else 'INVALID':<8} "
                  f"{i.size_bytes / 2**20:8.1f} MB  build {took}")
        if args.sweep:
            queries = ix.stored_vector_queries(conn, collection, n=args.sample_vectors)
            frame = ix.sweep(conn, collection, queries, k=args.k)
            print(frame[["config", "setting", "recall", "p50_ms", "p95_ms", "qps"]]
                  .to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


def _setup_index(p: argparse.ArgumentParser) -> None:
    from vecdash import indexes as ix

    p.add_argument("--collection", required=True)
    p.add_argument("--build", choices=ix.METHODS, help="build an index")
    p.add_argument("--m", type=int, default=ix.HNSW_DEFAULTS["m"])
    p.add_argument("--ef-construction", type=int, default=ix.HNSW_DEFAULTS["ef_construction"])
    p.add_argument("--lists", type=int, default=None, help="IVFFlat lists (default rows/1000)")
    p.add_argument("--memory", default=ix.DEFAULT_MAINTENANCE_WORK_MEM,
                   help="maintenance_work_mem for the build")
    p.add_argument("--workers", type=int, default=0, help="extra parallel maintenance workers")
    p.add_argument("--drop", metavar="INDEX", help="drop this vector index first")
    p.add_argument("--sweep", action="store_true", help="recall vs latency sweep vs exact")
    p.add_argument("--sample-vectors", type=int, default=50, metavar="N",
                   help="how many stored vectors the sweep uses as queries")
    p.add_argument("-k", type=int, default=10)


def cmd_settings(args: argparse.Namespace) -> int:
    print(settings_table())
    return 0


def _setup_load_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reload", action="store_true", help="drop the demo collection first")


def _setup_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("query")
    p.add_argument("--collection", default="demo")
    p.add_argument("-k", type=int, default=10)


def _setup_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", default="demo")
    p.add_argument("--queries", help="queries file: BEIR JSONL or id<TAB>text[<TAB>type]")
    p.add_argument("--qrels", help="judgments file: BEIR TSV or TREC qrels")
    p.add_argument("-k", type=int, default=10, help="cutoff for Recall@k and P@k")
    p.add_argument("--weight", type=float, default=0.5, help="semantic weight of the hybrid rows")
    p.add_argument("--fusion", choices=["convex", "rrf"], default="convex")
    p.add_argument("--candidates", type=int, default=100, help="candidate depth per arm")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "info": (cmd_info, "which database is in use, PostgreSQL and pgvector versions", None),
    "collections": (cmd_collections, "list collections with rows, model, metric, indexes", None),
    "load-demo": (cmd_load_demo, "load (or --reload) the bundled demo collection", _setup_load_demo),
    "search": (cmd_search, "semantic search a collection", _setup_search),
    "eval": (cmd_eval, "labeled-query metrics (nDCG@10, R@k, MRR@10, P@k) and the weight sweep",
             _setup_eval),
    "ingest": (cmd_ingest, "load a file into a collection (resumes: stored rows are skipped)",
               _setup_ingest),
    "index": (cmd_index, "list, build, drop vector indexes; --sweep recall vs latency", _setup_index),
    "settings": (cmd_settings, "print the settings table (environment variables)", None),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vecdash", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text, setup) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if setup is not None:
            setup(p)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except VecdashError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
