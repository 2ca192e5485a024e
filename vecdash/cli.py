"""`python -m vecdash ...`: the dashboard's operations, headless.

Each subcommand is a function taking the parsed arguments and returning an exit code; ``COMMANDS``
maps names to (function, help, argument setup). Errors print their message and exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vecdash import db, postings_command
from vecdash.config import Settings, settings_table
from vecdash.errors import VecdashError
from vecdash.redaction import redact, redact_logs

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
    print(f"read-only:  {read_only_line(info)}")
    from vecdash.embedders import local_precision  # the model's calibration, cached per machine

    print(f"local model precision: {local_precision().describe()}")
    return 0


def read_only_line(info: db.ServerInfo) -> str:
    """What read-only mode means for this connection's role (README: "Read-only mode")."""
    if not info.read_only:
        return "no"
    if info.read_only_enforced:
        return f"yes, enforced: role {info.user} may only read"
    return (f"yes, but advisory: role {info.user} can write, so only vecdash and the session's "
            "default_transaction_read_only stop writes. Connect as a read-only role for a "
            "guarantee (README: Using your own PostgreSQL)")


def cmd_collections(args: argparse.Namespace) -> int:
    from vecdash.collections import describe_collections

    with _connect() as conn:
        rows = describe_collections(conn)
    if not rows:
        print("no collections (load the demo: python -m vecdash load-demo)")
        return 0
    print(f"{'collection':<24} {'rows':>9} {'dim':>6} {'metric':<7} {'model':<28} indexes")
    for s in rows:
        count = f"~{s.rows}" if s.rows_estimated else str(s.rows)  # ~: an estimate (large)
        print(f"{s.name:<24} {count:>9} {s.dimension:>6} {s.metric:<7} "
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


def _check_whole(value: Any, option: str, *, least: int = 1, example: str = "") -> None:
    """Refuse an option's number before any work (a count, a depth, a cutoff)."""
    from vecdash.errors import InvalidInput

    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInput(f"{option} must be a whole number of at least {least}; got {value!r}."
                           + (f" For example {option} {example}." if example else ""))


def cmd_search(args: argparse.Namespace) -> int:
    from vecdash.collections import get_collection, require_table
    from vecdash.search import check_k, search_text

    check_k(args.k)
    with _connect() as conn:
        collection = require_table(conn, get_collection(conn, args.collection))
        hits = search_text(conn, collection, args.query, embedder=_query_embedder(collection),
                           k=args.k)
    for hit in hits.itertuples():
        print(f"{hit.rank:>3}  {hit.distance:.4f}  {hit.external_id}  {hit.title}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vecdash.atomic_file import check_target
    from vecdash.collections import get_collection, require_table
    from vecdash.errors import InvalidInput
    from vecdash.labels import load_labeled_files
    from vecdash.quality import check_eval_parameters, evaluation_report, run_labeled_queries
    from vecdash.report import compare, index_summary, quality_report, write_report
    from vecdash.search_setting import parse_setting
    from vecdash.tuning import TuneGrid, fetch_tuning_runs, tune

    check_eval_parameters(k=args.k, weight=args.weight, fusion=args.fusion)
    _check_whole(args.candidates, "--candidates", example="100")
    if args.cv is not None:
        _check_whole(args.cv, "--cv", least=2, example="5")
    if args.html:
        check_target(args.html, force=args.force)  # before any work
    specs = [s for s in (args.compare or []) if s.strip().lower() != "tuned"]
    parsed = {s: parse_setting(s) for s in specs}  # a bad spec fails before any work
    if args.compare and len(parsed) < len(args.compare) and not (args.cv or args.tune):
        raise InvalidInput('"tuned" in --compare is the setting a tune chooses: add --tune '
                           "(or --cv N).")

    def bar(i: int, n: int) -> None:
        if i == n or i * 20 // n != (i - 1) * 20 // n:  # every 5%
            print(f"\rtuning: {100 * i // n}%", end="" if i < n else "\n", file=sys.stderr,
                  flush=True)

    tuned = comparison = None
    with _connect() as conn:
        collection = require_table(conn, get_collection(conn, args.collection))
        labeled = load_labeled_files(args.queries, args.qrels, collection=collection)
        for p in labeled.problems:
            print(f"{p.source}:{p.line or '-'}: {p.problem}", file=sys.stderr)
        embedder = _query_embedder(collection)
        run = run_labeled_queries(conn, collection, labeled, embedder=embedder,
                                  candidates=args.candidates)
        print(evaluation_report(run, k=args.k, weight=args.weight, fusion=args.fusion))
        if args.cv or args.tune:
            grid = TuneGrid() if args.tune else TuneGrid.weight_sweep(candidates=args.candidates)
            tuned = tune(conn, collection, labeled, embedder=embedder, grid=grid,
                         folds=args.cv or 5, seed=args.seed, k=args.k, progress=bar)
            print("\n" + tuned.report())
        if args.compare:
            a, b = (tuned.chosen if tuned and s.strip().lower() == "tuned" else parsed[s]
                    for s in args.compare)
            runs = fetch_tuning_runs(conn, collection, labeled, embedder=embedder,
                                     settings=[a, b])
            comparison = compare(runs.run_for(a), a.config(), b.config(), measure="nDCG@10",
                                 k=args.k, run_b=runs.run_for(b))
            print("\n" + comparison.text())
            if tuned and "tuned" in (x.strip().lower() for x in args.compare):
                print("  note: the tuned setting was chosen on these same queries, so this test "
                      "flatters it; the cross-validated score above is the fair figure.")
        if args.html:
            text = quality_report(run, collection=collection,
                                  indexes=index_summary(conn, collection), k=args.k,
                                  weight=args.weight, candidates=args.candidates,
                                  comparison=comparison, tuned=tuned, labels=labeled.source)
            print(f"\nwrote {write_report(args.html, text, force=args.force)}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import time

    from vecdash.chunking import ChunkSpec
    from vecdash.embedders import get_embedder
    from vecdash.ingest import check_batch_size
    from vecdash.loading import ingest_file
    from vecdash.readers import ColumnMapping, ReadCounter, count_rows, detect_format

    check_batch_size(args.batch_size)  # before any work
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
            progress=progress, counter=counter, vectors_from=args.vectors_from)
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
    p.add_argument("--metric", default=None, choices=["cosine", "l2", "ip"],
                   help="for a new collection (default: a vecdash export's own, else cosine)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--vectors-from", metavar="PROVIDER/MODEL", default=None,
                   help="with --embedder none: the model that made the file's vectors, e.g. "
                        "local/all-MiniLM-L6-v2 (lets them into that model's collection)")


def cmd_index(args: argparse.Namespace) -> int:
    from vecdash import indexes as ix
    from vecdash.collections import get_collection, require_table

    _check_whole(args.k, "-k", example="10")
    _check_whole(args.sample_vectors, "--sample-vectors", example="50")
    _check_whole(args.workers, "--workers", least=0, example="2")
    with _connect() as conn:
        collection = require_table(conn, get_collection(conn, args.collection))
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
            # Dropping the other indexes to measure each alone locks the table: only where
            # vecdash runs the server itself.
            frame = ix.sweep(conn, collection, queries, k=args.k,
                             isolate=ix.isolation_is_safe(conn))
            print(frame[["config", "setting", "recall", "p50_ms", "p95_ms", "qps"]]
                  .to_string(index=False, float_format=lambda x: f"{x:.3f}"))
            for note in dict.fromkeys(n for n in frame.get("note", []) if isinstance(n, str) and n):
                print(f"note: {note}")
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


def cmd_export(args: argparse.Namespace) -> int:
    from vecdash.collections import get_collection

    with _connect() as conn:
        collection = get_collection(conn, args.collection)
        if args.pg_dump:
            from vecdash.pg_dump import dump_collection

            dumped = dump_collection(conn, collection, args.pg_dump, force=args.force)
            print(f"{collection.name}: dumped to {dumped.path} ({dumped.bytes / 2**20:.1f} MB, "
                  f"{dumped.pg_dump}); restore into a fresh database with: "
                  f"psql -d NEWDB -v ON_ERROR_STOP=1 -f {dumped.path}")
            return 0
        from vecdash.export import export_collection

        def progress(done: int, total: int) -> None:
            width = 30
            filled = int(width * done / total) if total else width
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows",
                  end="", file=sys.stderr, flush=True)

        report = export_collection(conn, collection, args.to, force=args.force,
                                   batch_size=args.batch_size, progress=progress)
    print(file=sys.stderr)
    print(f"{collection.name}: {report.rows} rows to {report.path} ({report.format}, "
          f"{report.bytes / 2**20:.1f} MB)")
    return 0


def _setup_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", required=True)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="FILE", help="FILE.parquet or FILE.jsonl")
    target.add_argument("--pg-dump", metavar="FILE", help="a pg_dump SQL script of the table")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("--batch-size", type=int, default=1000, help="rows read per batch")


def cmd_drop(args: argparse.Namespace) -> int:
    from vecdash.collections import drop_collection, get_collection

    with _connect() as conn:
        collection = get_collection(conn, args.collection)
        drop_collection(conn, collection.name)
    kept = "" if collection.managed else " (an attached table: only unregistered, never dropped)"
    print(f"dropped {collection.name}{kept}")
    return 0


def _setup_drop(p: argparse.ArgumentParser) -> None:
    p.add_argument("collection", help="the collection to drop (its table too, when vecdash made it)")


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
    p.add_argument("--cv", type=int, metavar="FOLDS",
                   help="cross-validate the weight sweep's choice over FOLDS folds (with --tune: "
                        "the whole grid)")
    p.add_argument("--tune", action="store_true",
                   help="tune weight, fusion, keyword ranker, BM25 k1/b and depth (5 folds "
                        "unless --cv)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help='paired test of B against A, e.g. "semantic" "hybrid w=0.7 fusion=rrf" '
                        '(keys: w fusion rrf_k ranker k1 b depth; "tuned": the tune\'s choice)')
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--force", action="store_true", help="overwrite the --html file")


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
    "export": (cmd_export, "a collection to Parquet / JSONL (--to) or a pg_dump script (--pg-dump)",
               _setup_export),
    "drop": (cmd_drop, "drop a collection (or forget one whose table is gone)", _setup_drop),
    "postings": (postings_command.cmd_postings, "BM25 postings of a collection: status, --enable, --disable, "
                 "--rebuild (impact-ordered), --pack, --unpack (packed)",
                 postings_command.setup_postings),
    "settings": (cmd_settings, "print the settings table (environment variables)", None),
}


def _where(exc: BaseException) -> str:
    """The innermost frame of an exception (file:line in function), for a bug report."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "(unknown)"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vecdash", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text, setup) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if setup is not None:
            setup(p)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    redact_logs()
    try:
        return COMMANDS[args.command][0](args)
    except VecdashError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: what was committed stays (the load says how much)
        print(f"\n{redact(str(exc)) or 'stopped'}", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still never a traceback or a secret on the terminal
        from vecdash.statement_timeout import vecdash_error_for

        known = vecdash_error_for(exc)  # a query the statement timeout cancelled, say
        if known is not None:
            print(f"error: {redact(str(known))}", file=sys.stderr)
            return 2
        logging.getLogger("vecdash").error("%s in the %s command, at %s", type(exc).__name__,
                                           args.command, _where(exc))
        print(f"error: unexpected {type(exc).__name__}: {redact(str(exc))} (this is a bug in "
              "vecdash; please report it with the command you ran)", file=sys.stderr)
        return 2
