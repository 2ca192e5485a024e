"""umap-learn, imported lazily (loading a cached projection never imports it), with numba's disk
cache switched on for its functions that lack it, so the JIT compile is paid once per installation
rather than once per process."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_umap_lock = threading.Lock()
_umap_ready = False


def _umap() -> Any:
    """Import umap-learn and switch numba's disk cache on for its functions that lack it, so a
    compiled function is reused by the next process instead of compiled again."""
    global _umap_ready
    import umap
    import umap.layouts
    import umap.umap_
    import umap.utils

    with _umap_lock:
        if not _umap_ready:
            try:
                from numba.core.caching import NullCache
                from numba.core.registry import CPUDispatcher

                for module in (umap.umap_, umap.layouts, umap.utils):
                    for obj in vars(module).values():
                        cache = getattr(obj, "_cache", None)
                        if isinstance(obj, CPUDispatcher) and isinstance(cache, NullCache):
                            obj.enable_caching()
            except Exception as exc:  # no writable cache location: compile per process
                log.info("numba disk cache not enabled for umap-learn: %s", exc)
            _umap_ready = True
    return umap
