"""vecdash: explore vector search in PostgreSQL with pgvector. The data layer (no Streamlit here).

The names a library user needs are importable from here (``vecdash.hybrid_search``); each lives
in the module named in ``_EXPORTS`` and is imported on first use, so ``import vecdash`` stays
cheap and importing one submodule does not load them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vecdash.errors import (
    Cancelled,
    ConnectionFailed,
    EmbedderError,
    ExtensionMissing,
    InvalidInput,
    NotFound,
    ReadOnlyError,
    VecdashError,
)

if TYPE_CHECKING:
    from vecdash.collections import Collection, create_collection, get_collection, list_collections
    from vecdash.config import Settings
    from vecdash.db import connect, open_pool
    from vecdash.embedders import Embedder, embedder_for, get_embedder
    from vecdash.indexes import IndexSpec, build_index
    from vecdash.ingest import ingest_records
    from vecdash.loading import ingest_file
    from vecdash.quality import run_labeled_queries
    from vecdash.records import Record
    from vecdash.search import SearchFilters, hybrid_search, semantic_search

_EXPORTS = {
    "Settings": "vecdash.config",
    "connect": "vecdash.db",
    "open_pool": "vecdash.db",
    "Collection": "vecdash.collections",
    "get_collection": "vecdash.collections",
    "create_collection": "vecdash.collections",
    "list_collections": "vecdash.collections",
    "Embedder": "vecdash.embedders",
    "get_embedder": "vecdash.embedders",
    "embedder_for": "vecdash.embedders",
    "Record": "vecdash.records",
    "ingest_records": "vecdash.ingest",
    "ingest_file": "vecdash.loading",
    "semantic_search": "vecdash.search",
    "hybrid_search": "vecdash.search",
    "SearchFilters": "vecdash.search",
    "IndexSpec": "vecdash.indexes",
    "build_index": "vecdash.indexes",
    "run_labeled_queries": "vecdash.quality",
}

__all__ = [
    "Settings", "connect", "open_pool",
    "Collection", "get_collection", "create_collection", "list_collections",
    "Embedder", "get_embedder", "embedder_for",
    "Record", "ingest_records", "ingest_file",
    "semantic_search", "hybrid_search", "SearchFilters",
    "IndexSpec", "build_index", "run_labeled_queries",
    "VecdashError", "ConnectionFailed", "ExtensionMissing", "InvalidInput", "NotFound",
    "ReadOnlyError", "EmbedderError", "Cancelled",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vecdash' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
