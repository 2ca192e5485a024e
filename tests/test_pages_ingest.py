"""AppTest: the Ingest page uploads a small CSV, maps columns, loads it with the local model and
the new collection appears; mismatches are refused before work; read-only hides it all."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from psycopg import sql
from streamlit.testing.v1 import AppTest

from tests.conftest import PageOpener
from tests.openai_server import FakeOpenAI
from vecdash.collections import create_collection, drop_collection, list_collections

CSV = (b"doc_id,heading,body,topic\n"
       b"a1,Kettles,Descale the kettle with vinegar every month.,kitchen\n"
       b"a2,Bikes,Oil the bicycle chain after riding in rain.,garage\n"
       b"a3,Empty,,garage\n"
       b"a4,Plants,Water succulents only when the soil is dry.,garden\n")




def upload(at: AppTest, name: str = "chores.csv", data: bytes = CSV) -> AppTest:
    at.file_uploader(key="ing_files").set_value((name, data, "text/csv"))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_upload_csv_creates_a_collection(open_page: PageOpener, conn: Any) -> None:
    name = f"chores_{uuid.uuid4().hex[:8]}"
    at = upload(open_page("app_pages/ingest.py"))
    preview = at.dataframe[0].value
    assert list(preview.columns) == ["doc_id", "heading", "body", "topic"] and len(preview) == 4
    # guessed mapping: id and title are found by name; content is chosen by hand here
    assert at.selectbox(key="ing_map_id").value == "doc_id"
    assert at.selectbox(key="ing_map_title").value == "heading"
    at.selectbox(key="ing_map_content").set_value("body")
    at.selectbox(key="ing_map_category").set_value("topic")
    at.run()
    at.text_input(key="ing_new_name").set_value(name)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    at.button(key="ing_start").click().run()
    assert not at.exception, [e.message for e in at.exception]
    try:
        assert any(f"'{name}'" in s.value for s in at.success), [e.value for e in at.error]
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Inserted"] == "3" and metrics["Failed"] == "1"
        failures = next(d.value for d in at.dataframe if "reason" in d.value.columns)
        assert list(failures["reason"]) == ["empty content"]
        assert any(b.label == "Download failures (CSV)" for b in at.get("download_button"))
        assert at.session_state["collection"] == name  # the sidebar picker switches to it
        collection = next(c for c in list_collections(conn) if c.name == name)
        rows = conn.execute(sql.SQL("SELECT external_id, title, category FROM {} ORDER BY 1")
                            .format(collection.table)).fetchall()
        assert rows == [("a1", "Kettles", "kitchen"), ("a2", "Bikes", "garage"),
                        ("a4", "Plants", "garden")]
        # the same upload into the existing collection: everything is skipped as duplicate
        at.radio(key="ing_target").set_value("existing").run()
        at.selectbox(key="ing_existing").set_value(name).run()
        at.button(key="ing_start").click().run()
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Inserted"] == "0" and metrics["Skipped as duplicates"] == "3"
    finally:
        if any(c.name == name for c in list_collections(conn)):
            drop_collection(conn, name)


NOTES = (b"id,subject,text\n"
         b"n1,Tea,Steep green tea for two minutes.\n"
         b"n2,Rice,Rinse rice until the water runs clear.\n")


def test_a_new_upload_starts_a_fresh_form(open_page: PageOpener, conn: Any) -> None:
    """Issue 17 item 3: after one file is loaded and another uploaded in its place, the form
    holds the new file's name and mapping and the old "Done" summary is gone."""
    name = f"chores_{uuid.uuid4().hex[:8]}"
    at = upload(open_page("app_pages/ingest.py"))
    at.selectbox(key="ing_map_content").set_value("body").run()
    at.selectbox(key="ing_map_category").set_value("topic").run()
    at.text_input(key="ing_new_name").set_value(name).run()
    try:
        at.button(key="ing_start").click().run()
        assert any(f"'{name}'" in s.value for s in at.success)
        # Remove the upload, then add another file.
        at.file_uploader(key="ing_files").set_value([]).run()
        upload(at, "kitchen_notes.csv", NOTES)
        assert not at.success, [s.value for s in at.success]  # the old summary is gone
        assert at.text_input(key="ing_new_name").value == "kitchen_notes"
        assert at.selectbox(key="ing_map_content").value == "text"
        assert at.selectbox(key="ing_map_category").value == "(none)"
        assert at.selectbox(key="ing_map_id").value == "id"
    finally:
        if any(c.name == name for c in list_collections(conn)):
            drop_collection(conn, name)


def test_mismatched_existing_collection_is_refused_before_work(
    open_page: PageOpener, conn: Any, unique_name: str) -> None:
    create_collection(conn, unique_name, dimension=1536, embedder="openai",
                      model="text-embedding-3-small")
    try:
        at = upload(open_page("app_pages/ingest.py"))
        at.selectbox(key="ing_map_content").set_value("body").run()
        at.radio(key="ing_target").set_value("existing").run()
        at.selectbox(key="ing_existing").set_value(unique_name).run()
        assert any("384-dimensional" in e.value for e in at.error)
        assert not [b for b in at.button if b.key == "ing_start"]  # no way to start
    finally:
        drop_collection(conn, unique_name)


VECTORS = (b"id,text,vec\n"
           b"v1,Fold the towels in thirds.,\"[1, 0, 0]\"\n"
           b"v2,Hang shirts to dry.,\"[0, 1, 0]\"\n")


def test_file_vectors_need_the_collection_model_named(
    open_page: PageOpener, conn: Any, unique_name: str) -> None:
    """Issue 16: a file's own vectors go into a collection of a model vecdash runs only once the
    person names that model on the page; another model is refused before any work."""
    create_collection(conn, unique_name, dimension=3, embedder="local", model="all-MiniLM-L6-v2")
    try:
        at = upload(open_page("app_pages/ingest.py"), "laundry.csv", VECTORS)
        at.selectbox(key="ing_map_content").set_value("text").run()
        at.selectbox(key="ing_map_vector").set_value("vec").run()
        at.radio(key="ing_embedder").set_value("precomputed").run()
        at.radio(key="ing_target").set_value("existing").run()
        at.selectbox(key="ing_existing").set_value(unique_name).run()
        assert at.selectbox(key=f"ing_vectors_from:{unique_name}").value is None
        assert any("Name the model" in i.value for i in at.info)
        assert not [b for b in at.button if b.key == "ing_start"]
        at.selectbox(key=f"ing_vectors_from:{unique_name}").set_value("openai/text-embedding-3-small").run()
        assert any("not comparable" in e.value for e in at.error)
        assert not [b for b in at.button if b.key == "ing_start"]
        at.selectbox(key=f"ing_vectors_from:{unique_name}").set_value("local/all-MiniLM-L6-v2").run()
        at.button(key="ing_start").click().run()
        assert not at.exception, [e.message for e in at.exception]
        assert {m.label: m.value for m in at.metric}["Inserted"] == "2"
    finally:
        drop_collection(conn, unique_name)


def test_openai_shows_tokens_and_cost_before_starting(
    open_page: PageOpener, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeOpenAI().start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    try:
        at = upload(open_page("app_pages/ingest.py"))
        at.selectbox(key="ing_map_content").set_value("body").run()
        at.radio(key="ing_embedder").set_value("openai").run()
        assert not at.exception, [e.message for e in at.exception]
        metrics = {m.label: m.value for m in at.metric}
        assert int(metrics["Tokens to embed"]) > 20 and metrics["Estimated cost"].startswith("$")
        assert any("$0.02 per 1M tokens" in c.value for c in at.caption)
        assert fake.requests == []  # counting costs no request
    finally:
        fake.stop()


def test_read_only_hides_ingestion(open_page: PageOpener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECDASH_READ_ONLY", "1")
    at = open_page("app_pages/ingest.py")
    assert any("Read-only" in i.value for i in at.info)
    assert not at.file_uploader and not [b for b in at.button if b.key == "ing_start"]
