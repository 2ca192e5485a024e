"""Okapi BM25 over core PostgreSQL full-text search: the statistics the triggers keep
(``vecdash.bm25.statistics``) and the exact pruning search does with them
(``vecdash.bm25.pruning``)."""

from vecdash.bm25.pruning import (
    MAXSCORE_MIN_MATCHES,
    PRUNE_MAX_TERMS,
    TermStats,
    match_query,
    prune_threshold,
    second_pass_query,
    term_stats,
    tsquery_lexeme,
)
from vecdash.bm25.statistics import (
    DEFAULT_B,
    DEFAULT_K1,
    TRIGGER_NAMES,
    TSV_LENGTH,
    UNKNOWN_MAX_TF,
    UNKNOWN_MIN_LEN,
    CorpusStats,
    bm25_installed,
    bm25_scores,
    check_parameters,
    doc_length,
    ensure_bm25,
    install_bm25,
    stored_stats,
    supports_stored_stats,
    term_frequency,
)

__all__ = [
    "DEFAULT_B",
    "DEFAULT_K1",
    "MAXSCORE_MIN_MATCHES",
    "PRUNE_MAX_TERMS",
    "TRIGGER_NAMES",
    "TSV_LENGTH",
    "UNKNOWN_MAX_TF",
    "UNKNOWN_MIN_LEN",
    "CorpusStats",
    "TermStats",
    "bm25_installed",
    "bm25_scores",
    "check_parameters",
    "doc_length",
    "ensure_bm25",
    "install_bm25",
    "match_query",
    "prune_threshold",
    "second_pass_query",
    "stored_stats",
    "supports_stored_stats",
    "term_frequency",
    "term_stats",
    "tsquery_lexeme",
]
