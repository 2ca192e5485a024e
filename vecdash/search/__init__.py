"""Search: semantic top-k over a collection's vector column, and hybrid search (semantic + a
BM25 or ts_rank_cd keyword arm, fused by convex combination or reciprocal rank fusion)."""

from vecdash.search.arms import KEYWORD_RANKERS, KeywordRanker, check_keyword_ranker
from vecdash.search.candidates import (
    MAX_CANDIDATES,
    MAX_QUERY_LEXEMES,
    Candidates,
    fetch_candidates,
)
from vecdash.search.filters import SearchFilters, list_categories
from vecdash.search.fusion import FUSIONS, Fusion, fuse, fuse_arrays, id_ranks, ranks
from vecdash.search.hybrid import HYBRID_COLUMNS, Comparison, compare_rankings, hybrid_search
from vecdash.search.semantic import (
    MAX_K,
    RESULT_COLUMNS,
    check_k,
    embed_query,
    query_vector,
    search_text,
    semantic_search,
)

__all__ = [
    "FUSIONS",
    "HYBRID_COLUMNS",
    "KEYWORD_RANKERS",
    "MAX_CANDIDATES",
    "MAX_K",
    "MAX_QUERY_LEXEMES",
    "RESULT_COLUMNS",
    "Candidates",
    "Comparison",
    "Fusion",
    "KeywordRanker",
    "SearchFilters",
    "check_k",
    "check_keyword_ranker",
    "compare_rankings",
    "embed_query",
    "fetch_candidates",
    "fuse",
    "fuse_arrays",
    "hybrid_search",
    "id_ranks",
    "list_categories",
    "query_vector",
    "ranks",
    "search_text",
    "semantic_search",
]
