"""Fusing one query's semantic and keyword rankings in numpy: ranks, min-max scaling, convex
combination and reciprocal rank fusion."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from vecdash.errors import InvalidInput

if TYPE_CHECKING:
    from vecdash.search.candidates import Candidates

Fusion = Literal["convex", "rrf"]
FUSIONS: tuple[Fusion, ...] = ("convex", "rrf")


def id_ranks(ids: np.ndarray) -> np.ndarray:
    """Each id's position in sorted order (the last tie-breaker of every ranking)."""
    out = np.empty(len(ids), dtype=np.int64)
    out[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    return out


def ranks(scores: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """1-based ranks by score (descending, ties by id); NaN where the score is NaN."""
    out = np.full(len(scores), np.nan)
    present = np.flatnonzero(~np.isnan(scores))
    if present.size:
        order = present[np.lexsort((id_rank[present], -scores[present]))]
        out[order] = np.arange(1, len(order) + 1)
    return out


def fuse(
    frame: pd.DataFrame | Candidates,
    *,
    weight: float,
    fusion: str = "convex",
    rrf_k: int = 60,
    keyword_ranker: str = "bm25",
    fallback_to_semantic: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse one query's candidates (``Candidates`` or its ``frame``) in numpy.

    Returns (order, fused): the row positions of the fused ranking, best first, and every row's
    fused score (NaN for rows the setting leaves out). weight is the semantic share: 1.0 is the
    semantic ranking alone, 0.0 the keyword ranking alone. ``convex``: weight * minmax(semantic)
    + (1 - weight) * minmax(keyword), a document absent from an arm scoring 0 there. ``rrf``:
    weight / (rrf_k + semantic rank) + (1 - weight) / (rrf_k + keyword rank). Ties go to the
    better rank in either arm, then the id.
    """
    if not 0.0 <= weight <= 1.0:
        raise InvalidInput(f"The semantic weight must be between 0 and 1; got {weight!r}.")
    if fusion not in FUSIONS:
        raise InvalidInput(f"Unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}.")
    if fusion == "rrf" and (not isinstance(rrf_k, int) or rrf_k < 1):
        raise InvalidInput(f"The RRF k must be a whole number of at least 1; got {rrf_k!r}.")

    def col(name: str) -> np.ndarray:
        if isinstance(frame, pd.DataFrame):
            return frame[name].to_numpy()
        return frame.columns[name]

    return fuse_arrays(
        col("semantic_score").astype(np.float64, copy=False),
        col("semantic_rank").astype(np.float64, copy=False),
        col(f"{keyword_ranker}_score").astype(np.float64, copy=False),
        col(f"{keyword_ranker}_rank").astype(np.float64, copy=False),
        id_ranks(col("id")),
        weight=weight, fusion=fusion, rrf_k=rrf_k, fallback_to_semantic=fallback_to_semantic,
    )


def fuse_arrays(
    sem_s: np.ndarray,
    sem_r: np.ndarray,
    kw_s: np.ndarray,
    kw_r: np.ndarray,
    id_rank: np.ndarray,
    *,
    weight: float,
    fusion: str = "convex",
    rrf_k: int = 60,
    fallback_to_semantic: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``fuse`` on plain arrays (scores, 1-based ranks with NaN for absent, id order)."""
    in_sem = ~np.isnan(sem_r)
    in_kw = ~np.isnan(kw_r)
    if fallback_to_semantic and not in_kw.any():
        weight = 1.0
    if weight >= 1.0:
        keep = in_sem
    elif weight <= 0.0:
        keep = in_kw
    else:
        keep = in_sem | in_kw
    if fusion == "rrf":
        sem_part = np.where(in_sem, 1.0 / (rrf_k + np.nan_to_num(sem_r)), 0.0)
        kw_part = np.where(in_kw, 1.0 / (rrf_k + np.nan_to_num(kw_r)), 0.0)
    else:
        sem_part = _minmax(sem_s, in_sem)
        kw_part = _minmax(kw_s, in_kw)
    fused = np.where(keep, weight * sem_part + (1.0 - weight) * kw_part, np.nan)
    if weight >= 1.0:
        best_rank = sem_r
    elif weight <= 0.0:
        best_rank = kw_r
    else:
        best_rank = np.fmin(sem_r, kw_r)
    idx = np.flatnonzero(keep)
    order = idx[np.lexsort((id_rank[idx], best_rank[idx], -fused[idx]))]
    return order.astype(np.int64), fused


def _minmax(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.zeros(len(scores))
    if not present.any():
        return out
    vals = scores[present]
    lo, hi = float(vals.min()), float(vals.max())
    out[present] = 1.0 if hi == lo else (vals - lo) / (hi - lo)
    return out
