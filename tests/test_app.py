"""AppTest: the app shell and the Home page, against the session's real database and model."""

from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import PageOpener
from vecdash.collections import Collection, drop_collection, get_collection
from vecdash.demo import demo_documents


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
