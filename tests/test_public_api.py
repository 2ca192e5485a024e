"""The public API: the names a library user imports from ``vecdash`` (the README's example uses
them). Adding or removing one is a decision, so the list is spelled out here."""

from __future__ import annotations

import subprocess
import sys

import vecdash
from vecdash.errors import VecdashError

PUBLIC = set("""
    Settings connect open_pool Collection get_collection create_collection list_collections
    Embedder get_embedder embedder_for Record ingest_records ingest_file
    semantic_search hybrid_search SearchFilters IndexSpec build_index run_labeled_queries
    VecdashError ConnectionFailed ExtensionMissing InvalidInput NotFound ReadOnlyError
    EmbedderError Cancelled
""".split())


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert set(vecdash.__all__) == PUBLIC
    assert len(vecdash.__all__) == len(PUBLIC)


def test_every_public_name_resolves_to_the_object_in_its_module() -> None:
    from vecdash.search import hybrid_search

    for name in vecdash.__all__:
        assert getattr(vecdash, name) is not None, name
    assert vecdash.hybrid_search is hybrid_search
    assert issubclass(vecdash.InvalidInput, VecdashError)
    assert "hybrid_search" in dir(vecdash)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        vecdash.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("vecdash.no_such_thing resolved")


def test_importing_vecdash_does_not_load_the_heavy_modules() -> None:
    code = ("import sys, vecdash; "
            "print(sorted(m for m in ('pandas', 'torch', 'psycopg', 'vecdash.search') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == "[]"


def test_every_lazy_export_is_public() -> None:
    assert set(vecdash._EXPORTS) <= set(vecdash.__all__)
