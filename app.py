"""vecdash: the entry point. Navigation, the shared sidebar and first-start set-up; nothing else."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

import ui
from vecdash import db
from vecdash.bm25.packed_scoring import warm_up_in_background as warm_up_bm25_scoring
from vecdash.collections import list_collections
from vecdash.demo import DEMO_COLLECTION, demo_is_incomplete
from vecdash.embedders import warm_up_local_model_in_background
from vecdash.errors import VecdashError
from vecdash.projection import warm_up_in_background
from vecdash.redaction import redact

st.set_page_config(page_title="vecdash", page_icon="🧭", layout="wide")
warm_up_in_background()  # compile UMAP's numba code while the first page loads (once)
warm_up_local_model_in_background()  # load the local model and calibrate its precision (once)
warm_up_bm25_scoring()  # compile (or load) the packed postings' scoring kernel (once)

# The pages live in app_pages/, not pages/: Streamlit treats a pages/ folder beside the entry script
# as a legacy multipage app until st.navigation runs, so a deep link (/search) opened first on a
# fresh server would run the page without this script (no sidebar, no set-up).
PAGES = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/search.py", title="Search", icon=":material/search:"),
    st.Page("app_pages/ingest.py", title="Ingest", icon=":material/upload_file:"),
    st.Page("app_pages/quality.py", title="Quality Lab", icon=":material/science:"),
    st.Page("app_pages/indexes.py", title="Index Lab", icon=":material/tune:"),
    st.Page("app_pages/map.py", title="Embedding Map", icon=":material/scatter_plot:"),
]


def sidebar() -> None:
    with ui.connection() as conn:
        info = db.server_info(conn)
        names = [c.name for c in list_collections(conn)]
    st.sidebar.markdown(f"**Database** · {info.label}")
    st.sidebar.caption(
        f"PostgreSQL {info.postgres_version} · pgvector {info.pgvector_version} · "
        f"user {info.user}"
    )
    if info.read_only_enforced:
        st.sidebar.warning(f"Read-only mode: nothing can be changed (role {info.user} may only "
                           "read).", icon="🔒")
    elif info.read_only:
        st.sidebar.warning(
            f"Read-only mode is advisory for role {info.user}: it can write, so only vecdash's "
            "checks and the session's read-only default stop writes. For a guarantee, connect as "
            "a read-only role (README: Using your own PostgreSQL).", icon="🔓")
    if not names:
        st.sidebar.info("No collections yet.")
        st.session_state.pop("collection", None)
        return
    current = st.session_state.get("collection")
    if current not in names:
        current = DEMO_COLLECTION if DEMO_COLLECTION in names else names[0]
    # A plain session key, not a widget key: widget state created in the entry script before
    # st.navigation does not survive reruns reliably, and pages (and tests) set the key directly.
    st.session_state["collection"] = st.sidebar.selectbox(
        "Collection", names, index=names.index(current)
    )


def first_start() -> Callable[[], None] | None:
    """Load the demo collection when the database has no collection at all (first `make run`),
    or finish it when a first start was stopped half-way (the load resumes). Returns what marks
    the status box done once the page is drawn, or None when nothing was loaded."""
    current = ui.settings()
    if not current.autoload_demo or current.read_only or st.session_state.get("demo_checked"):
        return None
    with ui.connection() as conn:
        resume = demo_is_incomplete(conn)
        if not resume and list_collections(conn):
            st.session_state["demo_checked"] = True  # once per session: no count on every rerun
            return None
    label = ("Finishing the demo collection (an earlier first start stopped half-way)…" if resume
             else "First start: loading the demo collection…")
    return ui.load_demo_with_progress(label, page_follows=True)


demo_loaded: Callable[[], None] | None = None
try:
    demo_loaded = first_start()
    sidebar()
except VecdashError as exc:
    st.error(redact(str(exc)), icon="⚠️")
    st.stop()

try:
    st.navigation(PAGES).run()
finally:
    if demo_loaded is not None:  # the page is drawn: the first start is over
        demo_loaded()
