"""`python -m vecdash ...`: the dashboard's operations, headless.

Each subcommand is a function taking the parsed arguments and returning an exit code; ``COMMANDS``
maps names to (function, help, argument setup). Errors print their message and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from vecdash import db
from vecdash.config import Settings, settings_table
from vecdash.errors import VecdashError

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


def cmd_search(args: argparse.Namespace) -> int:
    from vecdash.collections import get_collection
    from vecdash.embedders import get_embedder
    from vecdash.search import search_text

    settings = Settings.from_env()
    with _connect() as conn:
        collection = get_collection(conn, args.collection)
        embedder = get_embedder(collection.embedder, collection.model,
                                api_key=settings.openai_api_key,
                                base_url=settings.openai_base_url)
        hits = search_text(conn, collection, args.query, embedder=embedder, k=args.k)
    for hit in hits.itertuples():
        print(f"{hit.rank:>3}  {hit.distance:.4f}  {hit.external_id}  {hit.title}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vecdash.collections import get_collection
    from vecdash.embedders import get_embedder
    from vecdash.quality import evaluation_report, load_labeled_files, run_labeled_queries

    settings = Settings.from_env()
    with _connect() as conn:
        collection = get_collection(conn, args.collection)
        labeled = load_labeled_files(args.queries, args.qrels, collection=collection)
        for p in labeled.problems:
            print(f"{p.source}:{p.line or '-'}: {p.problem}", file=sys.stderr)
        embedder = get_embedder(collection.embedder, collection.model,
                                api_key=settings.openai_api_key,
                                base_url=settings.openai_base_url)
        run = run_labeled_queries(conn, collection, labeled, embedder=embedder,
                                  candidates=args.candidates)
    print(evaluation_report(run, k=args.k, weight=args.weight, fusion=args.fusion))
    return 0


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
