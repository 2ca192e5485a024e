"""What the embedding map is made of: the parameters of a projection, a sample of rows with their
vectors, and a finished projection (2-D coordinates and how they were made)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from vecdash.errors import InvalidInput
from vecdash.projection.fitted_models import _model_get

Method = Literal["umap", "pca"]
DEFAULT_SAMPLE = 5000
MAX_SAMPLE = 100_000


@dataclass(frozen=True)
class ProjectionParams:
    """What a projection depends on besides the data. ``key`` is its cache key."""

    method: Method = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    sample_size: int = DEFAULT_SAMPLE
    seed: int = 42
    # None: 500 up to 2,000 rows, where epochs are cheap; 200 above (umap-learn's own choice for
    # large inputs: much faster, with no measurable loss of trustworthiness).
    n_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ("umap", "pca"):
            raise InvalidInput(f"Unknown projection method {self.method!r}; use 'umap' or 'pca'.")
        if not 2 <= self.n_neighbors <= 200:
            raise InvalidInput(f"n_neighbors must be between 2 and 200; got {self.n_neighbors}.")
        if not 0.0 <= self.min_dist <= 1.0:
            raise InvalidInput(f"min_dist must be between 0 and 1; got {self.min_dist}.")
        if self.n_epochs is not None and not 10 <= self.n_epochs <= 2000:
            raise InvalidInput(f"n_epochs must be between 10 and 2000; got {self.n_epochs}.")
        if not 10 <= self.sample_size <= MAX_SAMPLE:
            raise InvalidInput(
                f"The sample size must be between 10 and {MAX_SAMPLE:,}; got {self.sample_size}."
            )

    @property
    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Sample:
    """Rows sampled from a collection, with their vectors (float32, rows aligned with ``rows``)."""

    rows: pd.DataFrame  # id, title, snippet, category, metadata
    vectors: np.ndarray
    total_rows: int  # rows with a vector in the collection
    skipped: int  # sampled rows dropped because the vector is zero or not finite
    stratified: bool

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Projection:
    """2-D coordinates for a sample of a collection and how they were made."""

    collection: str
    params: ProjectionParams
    data_version: str
    method: str  # what ran: "umap", "pca", "umap + transform", "pca preview"
    note: str  # why a fallback was used, or how new rows were placed; '' when nothing to say
    frame: pd.DataFrame  # id, x, y, title, snippet, category, metadata
    vectors: np.ndarray
    total_rows: int
    skipped: int
    seconds: float
    from_cache: bool = False
    stratified: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def coords(self) -> np.ndarray:
        return self.frame[["x", "y"]].to_numpy(dtype=np.float32)

    @property
    def has_model(self) -> bool:
        """True when a fitted UMAP model is in this process's memory (exact transform)."""
        return _model_get(self._model_key) is not None

    @property
    def _model_key(self) -> tuple[str, str, str]:
        return (self.collection, self.params.key, self.data_version)
