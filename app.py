"""vecdash: the entry point. Navigation, the shared sidebar and first-start set-up; nothing else."""

from __future__ import annotations

import streamlit as st

import ui
from vecdash import db
from vecdash.collections import list_collections
from vecdash.demo import DEMO_COLLECTION
from vecdash.errors import VecdashError
from vecdash.projection import warm_up_in_background

st.set_page_config(page_title="vecdash", page_icon="🧭", layout="wide")
warm_up_in_background()  # compile UMAP's numba code while the first page loads (once)

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
    if info.read_only:
        st.sidebar.warning("Read-only mode: nothing can be changed.", icon="🔒")
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


def first_start() -> None:
    """Load the demo collection when the database has no collection at all (first `make run`)."""
    current = ui.settings()
    if not current.autoload_demo or current.read_only:
        return
    with ui.connection() as conn:
        if list_collections(conn):
            return
    ui.load_demo_with_progress("First start: loading the demo collection…")


try:
    first_start()
    sidebar()
except VecdashError as exc:
    st.error(str(exc), icon="⚠️")
    st.stop()

st.navigation(PAGES).run()
