"""The embedding map: sampling, the kNN graph, UMAP / PCA, the projection cache, query placement.

Speed plan (a fresh umap-learn run spends most of its time compiling numba code and computing
exact pairwise distances through a Python callable):

- the kNN graph is computed with normalised float32 matrix products in blocks and
  ``argpartition`` and handed to UMAP as ``precomputed_knn``, together with a small exact search
  index so that ``UMAP.transform`` works for new points (``knn``, ``fitting``);
- umap-learn's numba functions that are not cached on disk get numba's disk cache switched on,
  so the JIT compile is paid once per installation rather than once per process
  (``umap_runtime``), and ``warm_up_in_background`` compiles exactly the paths a map uses on a
  tiny input when the app starts (``warmup``);
- finished projections are stored in PostgreSQL keyed by collection, parameters and
  ``data_version`` (``store``); after rows are added, the previous projection is reused and only
  the new rows are placed, as long as they are a small share of the sample (``compute``).

umap-learn and scikit-learn are imported lazily: loading a cached projection never imports them.
"""

from vecdash.projection.compute import MAX_NEW_SHARE, compute_projection, pca_projection, project
from vecdash.projection.fitted_models import MODELS_KEPT
from vecdash.projection.fitting import distinct_rows
from vecdash.projection.knn import EXACT_KNN_MAX, KNN_BLOCK, knn_graph, knn_search, neighbour_mean
from vecdash.projection.sampling import SNIPPET_CHARS, fetch_rows, sample_vectors
from vecdash.projection.store import PROJECTIONS_DDL, cached_projection, clear_cache
from vecdash.projection.types import (
    DEFAULT_SAMPLE,
    MAX_SAMPLE,
    Method,
    Projection,
    ProjectionParams,
    Sample,
)
from vecdash.projection.usage import (
    Placement,
    cluster_labels,
    coordinates_csv,
    metadata_fields,
    metadata_values,
    place_vector,
)
from vecdash.projection.warmup import warm_up, warm_up_in_background

__all__ = [
    "DEFAULT_SAMPLE",
    "EXACT_KNN_MAX",
    "KNN_BLOCK",
    "MAX_NEW_SHARE",
    "MAX_SAMPLE",
    "MODELS_KEPT",
    "PROJECTIONS_DDL",
    "SNIPPET_CHARS",
    "Method",
    "Placement",
    "Projection",
    "ProjectionParams",
    "Sample",
    "cached_projection",
    "clear_cache",
    "cluster_labels",
    "compute_projection",
    "coordinates_csv",
    "distinct_rows",
    "fetch_rows",
    "knn_graph",
    "knn_search",
    "metadata_fields",
    "metadata_values",
    "neighbour_mean",
    "pca_projection",
    "place_vector",
    "project",
    "sample_vectors",
    "warm_up",
    "warm_up_in_background",
]
