"""AppTest: the Embedding Map page on the demo collection: draw the map, select a point (through
the document picker, which a chart click also sets), place a query, colour by clusters."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.conftest import PageOpener
from vecdash import projection as pj
from vecdash.collections import Collection, create_collection, drop_collection
from vecdash.demo import demo_documents
from vecdash.ingest import Record, ingest_records


def chart(at: AppTest) -> dict[str, Any]:
    charts = at.get("plotly_chart")
    assert charts, "no map drawn"
    spec: dict[str, Any] = json.loads(charts[-1].proto.spec)
    return spec


def values(field: Any) -> list[Any]:
    """A trace array from plotly's JSON: a list, or a typed array {"dtype", "bdata"}."""
    if isinstance(field, dict) and "bdata" in field:
        return list(np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"]))
    return list(field)


def trace(spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in spec["data"] if t.get("name") == name), None)


def test_map_draws_demo_and_selects_a_point(open_page: PageOpener, demo: Collection, pool: Any) -> None:
    with pool.connection() as conn:
        pj.clear_cache(conn, demo)
    at = open_page("app_pages/map.py", collection="demo")
    captions = " ".join(c.value for c in at.caption)
    assert "UMAP** of" in captions and "computed in" in captions
    spec = chart(at)
    categories = {d["category"] for d in demo_documents()}
    names = {t["name"] for t in spec["data"]}
    assert categories <= names  # coloured by category, one trace each
    assert sum(len(values(t["x"])) for t in spec["data"] if t["name"] in categories) == len(demo_documents())
    assert spec["data"][0]["type"] == "scattergl"
    # A select/lasso dragmode makes Streamlit turn click selection off (the browser test clicks).
    assert spec["layout"].get("dragmode") not in ("lasso", "select")

    # a reload (new session) gets the stored projection
    again = open_page("app_pages/map.py", collection="demo")
    assert "from the stored projection" in " ".join(c.value for c in again.caption)

    # select a point: the picker the chart selection also drives
    ids = chart(again)["data"][0]["customdata"]
    again.selectbox(key="map_pick").set_value(ids[0]).run()
    assert not again.exception, [e.message for e in again.exception]
    spec = chart(again)
    selected = trace(spec, "selected")
    neighbours = trace(spec, "nearest neighbours")
    assert selected is not None and selected["customdata"] == [ids[0]]
    assert neighbours is not None and len(neighbours["customdata"]) == 10
    assert ids[0] not in neighbours["customdata"]
    side_tables = [t.value for t in again.table]  # a table: long titles wrap, not cut off
    assert any(list(t.columns) == ["title", "distance"] and len(t) == 10
               and list(t.index) == list(range(1, 11)) for t in side_tables)


def test_map_places_a_query_with_semantic_and_keyword_hits(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/map.py", collection="demo")
    at.text_input(key="map_query").input("sourdough starter feeding")
    at.button(key="FormSubmitter:map_query_form-Place query").click().run()
    assert not at.exception, [e.message for e in at.exception]
    spec = chart(at)
    query = trace(spec, "query")
    assert query is not None and len(values(query["x"])) == 1
    assert trace(spec, "semantic hits") is not None
    assert trace(spec, "keyword hits") is not None
    captions = " ".join(c.value for c in at.caption)
    assert "placed by" in captions
    tables = [d.value for d in at.dataframe]
    assert sum(1 for t in tables if "on_map" in t.columns) == 2
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download coordinates (CSV)", "Download picture (PNG)"]


def test_map_colours_by_clusters_and_switches_to_pca(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/map.py", collection="demo")
    at.selectbox(key="map_colour").set_value("cluster").run()
    assert not at.exception, [e.message for e in at.exception]
    names = {t["name"] for t in chart(at)["data"]}
    assert {f"cluster {i}" for i in range(8)} <= names
    at.selectbox(key="map_method").set_value("pca").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "PCA** of" in " ".join(c.value for c in at.caption)


def test_map_falls_back_to_pca_for_few_rows(
    open_page: PageOpener, pool: Any, unique_name: str, embedder: Any) -> None:
    with pool.connection() as conn:
        collection = create_collection(conn, unique_name, dimension=384)
        ingest_records(conn, collection, [
            Record(content=text, title=text) for text in
            ["bread rises with yeast", "tomatoes need sun", "sharpen a knife on a stone",
             "the cat sleeps all day", "rain is coming tomorrow"]
        ], embedder=embedder)
    try:
        at = open_page("app_pages/map.py", collection=unique_name)
        assert any("Only 5 usable rows" in i.value for i in at.info)
        assert "PCA** of 5 of 5" in " ".join(c.value for c in at.caption)
    finally:
        with pool.connection() as conn:
            pj.clear_cache(conn, collection)
            drop_collection(conn, unique_name)


def test_map_empty_query_warns(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/map.py", collection="demo")
    at.button(key="FormSubmitter:map_query_form-Place query").click().run()
    assert any("empty" in w.value for w in at.warning)
