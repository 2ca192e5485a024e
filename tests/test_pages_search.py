"""AppTest: the Search and Quality Lab pages against the session's real database and model."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import PageOpener
from vecdash.collections import Collection


def cards(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "fused" in m.value and m.value.startswith("**")]


def test_search_hybrid_flow(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/search.py", collection="demo")
    assert any("Type a query" in i.value for i in at.info)
    at.text_input(key="search_query").input("sourdough starter").run()
    assert not at.exception, [e.message for e in at.exception]
    results = at.dataframe[0].value
    assert len(results) == 10 and list(results["rank"]) == list(range(1, 11))
    assert set(results["source"]) <= {"both", "semantic only", "keyword only"}
    assert len(cards(at)) == 10 and cards(at)[0].startswith("**1.")
    assert any("<mark>" in m.value for m in at.markdown)  # highlighted snippets
    # keyword only: every row comes from the keyword arm
    at.radio(key="search_mode").set_value("keyword").run()
    assert set(at.dataframe[0].value["source"]) <= {"both", "keyword only"}
    # compare view: three lists and the movement table
    assert any("overlap" in m.label for m in at.metric)
    assert len(at.dataframe) >= 5


def test_search_pasted_paragraph(open_page: PageOpener, demo: Collection) -> None:
    """A pasted paragraph is searched (keyword arm over its rarest words) and the page says so."""
    from vecdash.demo import demo_documents

    at = open_page("app_pages/search.py", collection="demo")
    paragraph = " ".join(d["content"] for d in demo_documents()[:12])
    at.text_input(key="search_query").input(paragraph).run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.dataframe[0].value) == 10
    assert any("rarest" in i.value and "MoreLikeThis" in i.value for i in at.info)


def test_search_slider_rrf_and_filter(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/search.py", collection="demo")
    at.text_input(key="search_query").input("how do I fix a slow drain").run()
    at.slider(key="search_weight").set_value(0.2).run()
    at.selectbox(key="search_fusion").set_value("rrf").run()
    assert not at.exception, [e.message for e in at.exception]
    cat = at.multiselect(key="search_categories")
    first = cat.options[0]
    cat.set_value([first]).run()
    assert not at.exception, [e.message for e in at.exception]
    frame = at.dataframe[0].value
    assert len(frame) == 10 and set(frame["category"]) == {first}


def test_search_stopwords_fall_back_to_semantic(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/search.py", collection="demo")
    at.text_input(key="search_query").input("the of and").run()
    assert not at.exception
    assert any("only stopwords" in i.value for i in at.info)
    assert set(at.dataframe[0].value["source"]) == {"semantic only"}


def test_quality_lab_runs_demo_and_applies_best(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/quality.py", collection="demo")
    at.button(key="quality_go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value
    assert list(table.columns) == ["configuration", "nDCG@10", "R@10", "RR@10", "P@10"]
    assert {"semantic", "keyword: BM25", "keyword: ts_rank_cd"} <= set(table["configuration"])
    assert table["nDCG@10"].between(0, 1).all()
    assert len(at.get("plotly_chart")) == 1
    caption = next(c.value for c in at.caption if c.value.startswith("Best by"))
    # per-query comparison with the type breakdown
    by_type = next(d.value for d in at.dataframe if "b wins" in d.value.columns)
    assert {"all", "exact", "conceptual"} <= set(by_type["type"])
    at.button(key="quality_apply").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.radio(key="search_mode").value == "hybrid"
    weight = at.slider(key="search_weight").value
    assert f"weight {weight:.1f}" in caption


def test_quality_lab_upload_asks_for_both_files(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/quality.py", collection="demo")
    at.radio(key="quality_source").set_value("Upload queries + qrels").run()
    assert any("Upload both files" in i.value for i in at.info)
