"""Streamlit glue shared by app.py and the pages: settings, cached resources, the current
collection and the one place where VecdashError becomes st.error. No SQL here."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import streamlit as st

import vecdash as vecdash_package
from vecdash import db, embedders
from vecdash.collections import Collection, get_collection
from vecdash.config import Settings
from vecdash.demo import demo_documents, load_demo
from vecdash.embedders import Embedder, LocalEmbedder
from vecdash.errors import VecdashError
from vecdash.redaction import redact, redact_every_log_record
from vecdash.statement_timeout import vecdash_error_for

# Streamlit's own loggers (an uncaught exception's traceback, say) print through redaction too.
redact_every_log_record()


def _print_vecdash_logs() -> None:
    """vecdash's own log lines (the server started, the model is ready) on the console beside
    Streamlit's: without a handler Python drops everything below a warning. Once per process."""
    logger = logging.getLogger("vecdash")
    if any(getattr(h, "vecdash_console", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s vecdash: %(message)s", "%H:%M:%S"))
    handler.vecdash_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


_print_vecdash_logs()


def settings() -> Settings:
    return Settings.from_env()


@st.cache_resource(show_spinner="Connecting to PostgreSQL…")
def _pool(current: Settings) -> Any:
    return db.open_pool(current)


@st.cache_resource(show_spinner="Loading the local embedding model…")
def local_embedder() -> LocalEmbedder:
    """The local model, loaded once per process and shared by every session."""
    embedder = LocalEmbedder()
    embedder.embed(["warm up"])
    return embedder


@contextmanager
def connection() -> Iterator[Any]:
    """A pooled connection (autocommit; data-layer functions manage their transactions)."""
    with _pool(settings()).connection() as conn:
        yield conn


def read_only() -> bool:
    return settings().read_only


def openai_key() -> str:
    key = settings().openai_api_key
    if key:
        return key
    try:
        return str(st.secrets.get("openai_api_key", "") or st.secrets.get("OPENAI_API_KEY", ""))
    except (FileNotFoundError, KeyError, st.errors.StreamlitSecretNotFoundError):
        return ""


def embedder_for(collection: Collection) -> Embedder:
    """The embedder that produced the collection's vectors, ready to embed queries (the local
    model shared by every session; the OpenAI key from the settings or st.secrets)."""
    return embedders.embedder_for(collection, local=local_embedder, api_key=openai_key(),
                                  base_url=settings().openai_base_url)


def select_collection(name: str) -> None:
    """Make ``name`` the current collection (the sidebar picks it up on the next run)."""
    st.session_state["collection"] = name


def current_collection_name() -> str | None:
    name = st.session_state.get("collection")
    return str(name) if name else None


def current_collection() -> Collection | None:
    """The collection picked in the sidebar, or None (with a hint shown) when there is none."""
    name = current_collection_name()
    if name is None:
        st.info("No collection yet. Load the demo on the Home page or ingest your own data.")
        return None
    with connection() as conn:
        return get_collection(conn, name)


def page_collection() -> Collection:
    """The sidebar's collection, for a page that works on one: when there is none (or it cannot
    be read) the hint or the error is shown and the rest of the page does not run."""
    collection = None
    with errors_shown():
        collection = current_collection()
    if collection is None:
        st.stop()
    return collection


@contextmanager
def errors_shown() -> Iterator[None]:
    """Run a block; a VecdashError is shown as st.error with its message instead of a traceback.
    Any other error raised inside vecdash (a bug) is shown as a plain message too, and logged
    with where it happened; an error of the page's own code is left to Streamlit (tests see it)."""
    try:
        yield
    except VecdashError as exc:
        st.error(redact(str(exc)), icon="⚠️")
    except Exception as exc:
        known = vecdash_error_for(exc)  # a query the statement timeout cancelled, say
        if known is not None:
            st.error(redact(str(known)), icon="⚠️")
            return
        where = _vecdash_frame(exc)
        if where is None:
            raise
        _log.error("%s at %s: %s", type(exc).__name__, where, redact(str(exc)))
        st.error(f"Something went wrong inside vecdash ({type(exc).__name__}: "
                 f"{redact(str(exc))[:300]}): a bug in vecdash. Try again, and if it happens "
                 "again please report it with what you did.", icon="⚠️")


_VECDASH_DIR = str(Path(vecdash_package.__file__).resolve().parent)
_log = logging.getLogger("vecdash.ui")


def _vecdash_frame(exc: BaseException) -> str | None:
    """The innermost frame of ``exc``'s traceback inside the vecdash package, or None."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if str(Path(frame.filename).resolve()).startswith(_VECDASH_DIR):
            return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
    return None


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def load_demo_with_progress(label: str, *, reload: bool = False,
                            page_follows: bool = False) -> Callable[[], None]:
    """Load (or reload) the demo collection with a status box and a progress bar. With
    ``page_follows`` the box stays running ("Preparing the page…") until the caller calls the
    returned function once the page is drawn, so the wait after the load never looks stuck."""
    total = len(demo_documents())
    with st.status(label, expanded=True) as status:
        bar = st.progress(0.0, text="Embedding passages with the local model…")
        embedder = local_embedder()
        with connection() as conn:
            _, report = load_demo(
                conn,
                embedder=embedder,
                reload=reload,
                progress=lambda r: bar.progress(
                    min(1.0, r.processed / total), text=f"{r.processed} of {total} passages"
                ),
            )
        ready = (f"Demo collection ready: {report.inserted} passages loaded, "
                 f"{report.skipped_duplicates} already there.")

        def finish() -> None:
            bar.empty()
            status.update(label=ready, state="complete", expanded=False)

        if not page_follows:
            finish()
            return finish
        bar.progress(1.0, text=f"{total} of {total} passages stored. Preparing the page…")
        status.update(label=f"{ready} Preparing the page…", state="running")
        return finish
