"""Warm-ups run once per process in daemon threads while the first page loads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_lock = threading.Lock()
_threads: dict[str, threading.Thread] = {}


def warm_up_once(what: str, warm_up: Callable[[], float]) -> threading.Thread:
    """Start ``warm_up`` (which returns the seconds it took) in a daemon thread named after
    ``what``, once per process: later calls return that thread. A failure is logged, never
    raised (the work is done again, in the foreground, when first needed)."""
    with _lock:
        thread = _threads.get(what)
        if thread is None:

            def run() -> None:
                try:
                    log.info("%s warm-up finished in %.1f s", what, warm_up())
                except Exception:  # never break the app over a warm-up
                    log.exception("%s warm-up failed", what)

            thread = threading.Thread(target=run, name=f"vecdash-{what}-warm-up", daemon=True)
            _threads[what] = thread
            thread.start()
        return thread
