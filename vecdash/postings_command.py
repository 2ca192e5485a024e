"""`python -m vecdash postings`: a collection's BM25 postings, packed (vecdash.bm25.packed, the
default from 20,000 rows) and impact-ordered (vecdash.bm25.postings, opt-in): their status, built,
rebuilt or dropped."""

from __future__ import annotations

import argparse
import sys

from vecdash import db
from vecdash.config import Settings


def cmd_postings(args: argparse.Namespace) -> int:
    from vecdash.bm25.packed import build_packed, describe_packed, drop_packed, packed_status
    from vecdash.bm25.postings import disable_postings, enable_postings, postings_status
    from vecdash.collections import get_collection

    with db.connect(Settings.from_env()) as conn:
        collection = get_collection(conn, args.collection)
        if args.disable:
            disable_postings(conn, collection)
        elif args.enable or args.rebuild:
            enable_postings(conn, collection)
        elif args.pack and not build_packed(conn, collection):
            print(f"{collection.name}: its ids are too sparse for packed postings (far more ids "
                  "than rows); keyword search keeps the exact path", file=sys.stderr)
        elif args.unpack:
            drop_packed(conn, collection)
        status = postings_status(conn, collection)
        print(describe_packed(collection.name, packed_status(conn, collection)))
    if status is None:
        print(f"{collection.name}: no impact-ordered BM25 postings")
    else:
        print(f"{collection.name}: {status.postings} impact-ordered BM25 postings, average length "
              f"{status.avg_now or 0:.1f} ({status.drift:.2f}x the {status.avg_ref or 0:.1f} "
              "they were built with)")
    return 0


def setup_postings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", default="demo")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--enable", action="store_true", help="keep impact-ordered postings")
    act.add_argument("--disable", action="store_true", help="drop them (exact path only)")
    act.add_argument("--rebuild", action="store_true",
                     help="rebuild them at today's average length (after a large drift)")
    act.add_argument("--pack", action="store_true",
                     help="build the packed postings now (a load of a large collection does)")
    act.add_argument("--unpack", action="store_true", help="drop the packed postings")
