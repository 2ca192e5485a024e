"""AppTest: the Index Lab page builds an index on a small collection, measures it and sweeps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import PageOpener
from vecdash import indexes as ix
from vecdash.collections import Collection, drop_collection, get_collection
from vecdash.indexes import measurement
from vecdash.synthetic import create_synthetic_collection


@pytest.fixture
def lab(pool: Any) -> Iterator[Collection]:
    name = f"lab_{uuid.uuid4().hex[:8]}"
    with pool.connection() as conn:
        collection, _ = create_synthetic_collection(conn, name, n=2000, dimension=32,
                                                    clusters=10, seed=1)
    yield collection
    with pool.connection() as conn:
        drop_collection(conn, name)


def button(at: AppTest, label: str) -> Any:
    return next(b for b in at.button if b.label == label)


def test_build_measure_sweep_and_explain(open_page: PageOpener, pool: Any, lab: Collection) -> None:
    at = open_page("app_pages/indexes.py", collection=lab.name)
    assert at.title[0].value == "Index Lab"
    assert any("No vector index yet" in i.value for i in at.info)
    assert any("Exact scan only" in i.value for i in at.info)

    at.number_input(key="ix_m").set_value(8)
    at.number_input(key="ix_efc").set_value(32)
    at.run()
    # Before the build: the graph's memory against maintenance_work_mem (issue 20).
    assert any("fits in maintenance_work_mem" in c.value for c in at.caption)
    button(at, "Build index").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Built" in s.value and "hnsw m=8" in s.value for s in at.success)
    table = at.dataframe[0].value
    assert list(table["type"]) == ["hnsw"] and list(table["valid"]) == ["yes"]
    assert table["build time"].iloc[0].endswith(" s")

    labels = [m.label for m in at.metric]
    assert "recall@10" in labels and "p95" in labels and "QPS" in labels
    recall = float(next(m for m in at.metric if m.label == "recall@10").value)
    assert 0.0 < recall <= 1.0

    at.slider(key="ix_ef").set_value(10).run()
    assert not at.exception
    assert any("ef_search=10" in c.value and "served by" in c.value for c in at.caption)
    # The embedded server: each index is measured alone, shown as a ticked, fixed box.
    isolate = at.checkbox(key="ix_isolate_on")
    assert isolate.value and isolate.disabled

    button(at, "Run sweep").click().run()
    assert not at.exception, [e.message for e in at.exception]
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    sweep = at.dataframe[-1].value
    assert list(sweep["index"])[0] == "exact scan"
    assert list(sweep["setting"])[1:] == [f"ef_search={v}" for v in ix.EF_SEARCH_SWEEP]
    assert (sweep["served by"].iloc[1:] == "as requested").all()
    # Each setting ran the queries several times: the median with the fastest-slowest range.
    assert (sweep["repeats"] == ix.DEFAULT_REPEATS).all()
    assert all("–" in r for r in sweep["p50 ms (range)"])
    assert all(f"ef_search={v}" in charts[0].proto.spec for v in ix.EF_SEARCH_SWEEP)  # labels
    downloads = [d.proto.label for d in at.get("download_button")]
    assert "Download table (CSV)" in downloads and "Download report (HTML)" in downloads
    assert any(label.endswith("(PNG)") for label in downloads) or any(
        "PNG charts need kaleido" in c.value for c in at.caption)

    assert any("Execution Time" in c.value for c in at.code)


def test_bad_build_shows_message_and_changes_nothing(
    open_page: PageOpener, pool: Any, lab: Collection) -> None:
    at = open_page("app_pages/indexes.py", collection=lab.name)
    at.radio(key="ix_method").set_value("ivfflat").run()
    at.number_input(key="ix_lists").set_value(5000)
    button(at, "Build index").click().run()
    assert not at.exception
    assert any("larger than the number of rows" in e.value for e in at.error)
    with pool.connection() as conn:
        assert ix.list_vector_indexes(conn, get_collection(conn, lab.name)) == []


def test_demo_uses_labeled_queries(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/indexes.py", collection=demo.name)
    assert any("labeled demo queries" in c.value for c in at.caption)
    at.radio(key="ix_method").set_value("ivfflat").run()
    captions = " ".join(c.value for c in at.caption)
    assert "about 1 list advised" in captions and "1 lists" not in captions


def test_synthetic_data_form_creates_collection(open_page: PageOpener, pool: Any) -> None:
    name = f"syn_{uuid.uuid4().hex[:8]}"
    at = open_page("app_pages/indexes.py", collection="demo")
    at.text_input(key="ix_syn_name").input(name)
    at.number_input(key="ix_syn_n").set_value(500)
    at.number_input(key="ix_syn_dim").set_value(64)
    next(b for b in at.button if b.label == "Generate and load").click().run()
    assert not at.exception, [e.message for e in at.exception]
    try:
        with pool.connection() as conn:
            created = get_collection(conn, name)
            assert created.model == "synthetic" and ix.row_count(conn, created) == 500
        assert at.session_state["collection"] == name  # the new collection is picked
    finally:
        with pool.connection() as conn:
            drop_collection(conn, name)


def test_read_only_hides_builds_but_measures(open_page: PageOpener, pool: Any, lab: Collection,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with pool.connection() as conn:
        ix.build_index(conn, lab, ix.IndexSpec("ivfflat", lists=4))
    monkeypatch.setenv("VECDASH_READ_ONLY", "1")
    at = open_page("app_pages/indexes.py", collection=lab.name)
    labels = [b.label for b in at.button]
    assert "Build index" not in labels and "Generate and load" not in labels
    assert "Run sweep" in labels
    assert any(m.label == "recall@10" for m in at.metric)


def test_outside_the_embedded_server_isolating_is_an_opt_in_that_warns(
        open_page: PageOpener, pool: Any, lab: Collection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As on someone else's server (isolation_is_safe answers False there): nothing is dropped
    unless the box is ticked, the sweep says which index served what, ticking warns of the lock."""
    with pool.connection() as conn:
        ix.build_index(conn, lab, ix.IndexSpec("hnsw", m=4, ef_construction=16))
        ix.build_index(conn, lab, ix.IndexSpec("hnsw", m=16, ef_construction=64))
    monkeypatch.setattr(ix, "isolation_is_safe", lambda conn: False)
    at = open_page("app_pages/indexes.py", collection=lab.name)
    box = at.checkbox(key="ix_isolate")
    assert not box.value and "locks the table" in box.label
    button(at, "Run sweep").click().run()
    assert not at.exception, [e.message for e in at.exception]
    sweep = at.dataframe[-1].value
    assert not (sweep["served by"].iloc[1:] == "as requested").all()  # one served both sweeps
    assert any("could not be measured alone" in w.value for w in at.warning)

    at.checkbox(key="ix_isolate").check().run()
    assert any("locks this table" in w.value for w in at.warning)
    button(at, "Run sweep").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert (at.dataframe[-1].value["served by"].iloc[1:] == "as requested").all()
    assert not any("could not be measured alone" in w.value for w in at.warning)


def test_drop_asks_first_and_a_changed_index_set_clears_the_sweep(
        open_page: PageOpener, pool: Any, lab: Collection) -> None:
    """Issue 17 items 5 and 10: Drop needs its confirmation box; after a drop the old sweep's
    charts are gone (they described indexes that no longer exist); a small collection is told
    its figures are noise; one list is "1 list"."""
    with pool.connection() as conn:
        ix.build_index(conn, lab, ix.IndexSpec("hnsw", m=4, ef_construction=16))
        name = ix.list_vector_indexes(conn, lab)[0].name
    at = open_page("app_pages/indexes.py", collection=lab.name)
    assert any("too few for index figures" in i.value for i in at.info)
    button(at, "Run sweep").click().run()
    assert len(at.get("plotly_chart")) == 2
    drop = at.button(key="ix_drop")
    assert drop.disabled  # not without the confirmation
    at.checkbox(key="ix_drop_confirm").check().run()
    at.button(key="ix_drop").click().run()
    assert not at.exception, [e.message for e in at.exception]
    with pool.connection() as conn:
        assert [i.name for i in ix.list_vector_indexes(conn, lab)] == []
    assert at.get("plotly_chart") == []
    assert any("indexes changed since the last sweep" in i.value for i in at.info), name

    at.radio(key="ix_method").set_value("ivfflat").run()
    assert any("about 2 lists advised" in c.value for c in at.caption)  # 2,000 rows / 1000


def test_each_sweep_times_the_exact_scan_again(pool: Any, lab: Collection) -> None:
    """The exact-scan row of a sweep is timed by that sweep, not copied from the cached ground
    truth (which keeps the latencies of its first run)."""
    with pool.connection() as conn:
        queries = ix.stored_vector_queries(conn, lab, n=20)
        cached = ix.exact_measurement(conn, lab, queries, k=10)
        first = ix.sweep(conn, lab, queries, k=10).iloc[0]
        second = ix.sweep(conn, lab, queries, k=10).iloc[0]
    assert first["config"] == "exact scan" and first["recall"] == 1.0
    assert len({cached.p50_ms, first["p50_ms"], second["p50_ms"]}) == 3


def test_on_a_large_table_the_exact_ground_truth_waits_for_a_click(
        open_page: PageOpener, pool: Any, lab: Collection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20: at 1M rows the first visit spent 56 s in exact scans before drawing. Above the
    size (lowered here so 2,000 rows count as large) nothing scans until the button is pressed,
    and the result is stored: the next visit reads it."""
    with pool.connection() as conn:
        ix.build_index(conn, lab, ix.IndexSpec("hnsw", m=8, ef_construction=32))
    monkeypatch.setattr(measurement, "AUTO_GROUND_TRUTH_MAX_ELEMENTS", 1)
    at = open_page("app_pages/indexes.py", collection=lab.name)
    assert not at.exception, [e.message for e in at.exception]
    assert any("sequential scans of about" in i.value for i in at.info)
    assert not any(m.label == "recall@10" for m in at.metric)
    with pool.connection() as conn:
        queries = ix.stored_vector_queries(conn, lab, n=50)
        assert not ix.ground_truth_is_ready(conn, lab, queries, k=10)
    button(at, "Compute the exact ground truth").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(m.label == "recall@10" for m in at.metric)

    again = open_page("app_pages/indexes.py", collection=lab.name)  # a new session
    assert not any("sequential scans of about" in i.value for i in again.info)
    assert any(m.label == "recall@10" for m in again.metric)
