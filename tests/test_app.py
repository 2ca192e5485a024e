"""AppTest: the app shell and the Home page, against the session's real database and model."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import sql
from streamlit.testing.v1 import AppTest

from tests.conftest import PageOpener
from vecdash.collections import Collection, drop_collection, get_collection
from vecdash.demo import demo_documents, demo_is_incomplete


def search_button(at: AppTest) -> Any:
    return next(b for b in at.button if b.label == "Search")


def test_shell_shows_database_and_collection_picker(open_page: PageOpener, demo: Collection) -> None:
    at = open_page(timeout=180)
    sidebar_text = " ".join(m.value for m in at.sidebar.markdown)
    assert "embedded / vecdash" in sidebar_text
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "PostgreSQL 18" in captions and "pgvector 0.8" in captions
    picker = at.sidebar.selectbox[0]
    assert "demo" in picker.options and picker.value == "demo"


def test_home_lists_collections_and_searches(open_page: PageOpener, demo: Collection) -> None:
    at = open_page(timeout=180)
    frame = at.dataframe[0].value
    row = frame[frame["collection"] == "demo"].iloc[0]
    assert row["rows"] == len(demo_documents())
    assert row["metric"] == "cosine" and "all-MiniLM-L6-v2" in row["embedder / model"]
    at.text_input(key="quick_query").input("how do I keep my sourdough starter alive")
    search_button(at).click().run()
    assert not at.exception
    results = [m.value for m in at.markdown if "distance" in m.value]
    assert len(results) == 5
    assert results[0].startswith("**1.")


def test_home_empty_query_shows_message(open_page: PageOpener, demo: Collection) -> None:
    at = open_page(timeout=180)
    search_button(at).click().run()
    assert any("empty" in e.value for e in at.error)


def test_read_only_hides_writes(
    open_page: PageOpener, demo: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECDASH_READ_ONLY", "1")
    at = open_page(timeout=180)
    labels = [b.label for b in at.button]
    assert "Reload demo collection" not in labels
    assert any("Read-only" in w.value for w in at.sidebar.warning)


def test_home_reloads_demo_with_progress(open_page: PageOpener, demo: Collection) -> None:
    at = open_page(timeout=180)
    reload_button = next(b for b in at.button if b.label == "Reload demo collection")
    reload_button.click().run()
    assert not at.exception, [e.message for e in at.exception]
    frame = at.dataframe[0].value
    assert frame[frame["collection"] == "demo"].iloc[0]["rows"] == len(demo_documents())


def test_first_start_finishes_a_demo_left_half_loaded(
    open_page: PageOpener, demo: Collection, conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 item 8: a first start stopped half-way leaves a partial demo; the next start
    resumes the load (the other collections present do not stop it) and the page is drawn."""
    total = len(demo_documents())
    conn.execute(sql.SQL("DELETE FROM {} WHERE id IN (SELECT id FROM {} ORDER BY id DESC "
                         "LIMIT 40)").format(demo.table, demo.table))
    assert demo_is_incomplete(conn)
    monkeypatch.setenv("VECDASH_AUTOLOAD_DEMO", "1")
    at = open_page(timeout=300)
    assert not at.exception, [e.message for e in at.exception]
    statuses = [s for s in at.status if "Demo collection ready" in s.label]
    assert statuses and "40 passages loaded" in statuses[0].label, [s.label for s in at.status]
    assert statuses[0].state == "complete"  # marked done once the page was drawn
    assert not demo_is_incomplete(conn)
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(demo.table)).fetchone()
    assert row is not None and row[0] == total
    frame = at.dataframe[0].value
    assert frame[frame["collection"] == "demo"].iloc[0]["rows"] == total
    # A complete demo is left alone: the next start loads nothing.
    again = open_page(timeout=300)
    assert not [s for s in again.status if "Demo" in s.label]


def test_tutorial_table_shows_on_home_and_attaches_on_ingest(
    open_page: PageOpener, conn: Any, unique_name: str,
                                                             demo: Collection) -> None:
    table = f"documents_{unique_name}"
    conn.execute(f'CREATE TABLE "{table}" (id bigserial PRIMARY KEY, title text, content text, '
                 "category text, embedding vector(1536))")
    try:
        at = open_page(timeout=180)
        assert any("not attached yet" in s.value for s in at.subheader)
        assert any(table in m.value for m in at.markdown)
        at.switch_page("app_pages/ingest.py").run()
        assert not at.exception, [e.message for e in at.exception]
        pick = at.selectbox(key="ing_attach_pick")
        index = next(i for i, label in enumerate(pick.options) if table in label)
        pick.set_value(index).run()
        at.text_input[[t.label for t in at.text_input].index("Collection name")].input(unique_name)
        next(b for b in at.button if b.label == "Attach").click().run()
        assert not at.exception, [e.message for e in at.exception]
        attached = get_collection(conn, unique_name)
        assert (attached.table_name, attached.managed, attached.dimension) == (table, False, 1536)
        assert at.session_state["collection"] == unique_name
        drop_collection(conn, unique_name)
    finally:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
