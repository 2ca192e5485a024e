"""AppTest: the Search and Quality Lab pages against the session's real database and model."""

from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import PageOpener
from vecdash.collections import Collection
from vecdash.search_setting import clear_search_setting, parse_setting


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


def test_quality_lab_tunes_compares_applies_and_saves(open_page: PageOpener, demo: Collection,
                                                      conn: Any) -> None:
    at = open_page("app_pages/quality.py", collection="demo")
    at.button(key="quality_go").click().run()
    at.radio(key="quality_grid").set_value("weight sweep only").run()
    at.number_input(key="quality_folds").set_value(4).run()
    at.button(key="quality_tune_go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    headline = next(m.value for m in at.markdown if m.value.startswith("**Cross-validated"))
    assert "4 folds" in headline and "in-sample best" in headline
    summary = next(d.value for d in at.dataframe if "ranking" in d.value.columns)
    scores = summary.set_index("ranking")["nDCG@10"]
    assert scores["tuned (cross-validated)"] <= scores["tuned (in-sample best)"]
    # the tuned setting is offered for the comparison, with the paired test's verdict
    assert any(o.startswith("tuned: ") for o in at.selectbox(key="quality_b").options)
    at.selectbox(key="quality_b").set_value(
        next(o for o in at.selectbox(key="quality_b").options if o.startswith("tuned: "))).run()
    verdicts = [m.value for m in [*at.success, *at.info] if "p = " in m.value]
    assert verdicts and ("noise" in verdicts[0])
    assert any("flatters" in c.value for c in at.caption)
    disagree = next(d.value for d in at.dataframe if "shared top-10" in d.value.columns)
    assert len(disagree) == 10
    assert at.get("download_button")  # the HTML report
    chosen = headline.split("`")[1]
    try:
        at.button(key="quality_tune_save").click().run()
        assert not at.exception, [e.message for e in at.exception]
        assert any(chosen in s.value for s in at.success)
        # a new session's Search page opens with the saved setting
        search = open_page("app_pages/search.py", collection="demo")
        expected = parse_setting(chosen).search_state()
        assert search.slider(key="search_weight").value == pytest.approx(
            expected["search_weight"])
        assert search.selectbox(key="search_fusion").value == expected["search_fusion"]
    finally:
        clear_search_setting(conn, demo)


def test_quality_lab_read_only_hides_saving(open_page: PageOpener, demo: Collection,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECDASH_READ_ONLY", "1")
    at = open_page("app_pages/quality.py", collection="demo")
    at.radio(key="quality_grid").set_value("weight sweep only").run()
    at.button(key="quality_tune_go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    keys = [b.key for b in at.button]
    assert "quality_tune_apply" in keys and "quality_tune_save" not in keys


def test_search_view_survives_leaving_the_page(open_page: PageOpener, demo: Collection) -> None:
    at = open_page("app_pages/search.py", collection="demo")
    at.text_input(key="search_query").input("sourdough starter").run()
    at.slider(key="search_weight").set_value(0.3).run()
    at.selectbox(key="search_fusion").set_value("rrf").run()
    categories = at.multiselect(key="search_categories").options
    at.multiselect(key="search_categories").set_value([categories[0]]).run()
    # the page writes its view into the URL
    assert at.query_params["q"] == "sourdough starter" and at.query_params["weight"] == "0.3"
    assert at.query_params["fusion"] == "rrf" and at.query_params["cat"] == categories[0]
    link = next(c.value for c in at.code if "/search?" in c.value)
    assert "q=sourdough+starter&mode=hybrid&weight=0.3&fusion=rrf&k=10&depth=100" in link
    at.switch_page("app_pages/home.py").run()
    at.switch_page("app_pages/search.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.text_input(key="search_query").value == "sourdough starter"
    assert at.slider(key="search_weight").value == pytest.approx(0.3)
    assert at.selectbox(key="search_fusion").value == "rrf"
    assert at.multiselect(key="search_categories").value == [categories[0]]
    assert set(at.dataframe[0].value["category"]) == {categories[0]}


def test_search_opens_a_link_and_notes_bad_parameters(open_page: PageOpener,
                                                      demo: Collection) -> None:
    at = open_page(collection="demo")
    at.query_params.update({"q": "slow drain", "mode": "keyword", "weight": "0.7", "k": "5",
                            "ranker": "ts_rank_cd", "depth": "banana", "cat": "nonsense",
                            "colour": "red"})
    at.switch_page("app_pages/search.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error
    assert at.text_input(key="search_query").value == "slow drain"
    assert at.radio(key="search_mode").value == "keyword"
    assert at.slider(key="search_weight").value == pytest.approx(0.7)
    assert at.number_input(key="search_k").value == 5
    assert at.selectbox(key="search_keyword_ranker").value == "ts_rank_cd"
    assert at.number_input(key="search_candidates").value == 100
    note = next(i.value for i in at.info if "Ignored" in i.value)
    assert "depth='banana'" in note and "'nonsense'" in note and "'colour'" in note
    assert len(at.dataframe[0].value) == 5
    # the URL now holds the view as read (the bad parameters dropped)
    assert at.query_params["depth"] == "100" and "colour" not in at.query_params


def test_applied_quality_setting_survives_leaving_search(open_page: PageOpener,
                                                         demo: Collection) -> None:
    at = open_page("app_pages/quality.py", collection="demo")
    at.button(key="quality_apply").click().run()
    assert not at.exception, [e.message for e in at.exception]
    applied = (at.slider(key="search_weight").value, at.selectbox(key="search_fusion").value)
    at.switch_page("app_pages/home.py").run()
    at.switch_page("app_pages/search.py").run()
    assert (at.slider(key="search_weight").value,
            at.selectbox(key="search_fusion").value) == applied
    assert at.radio(key="search_mode").value == "hybrid"


def test_compare_tab_headers_in_words_and_singular_wording(open_page: PageOpener,
                                                           demo: Collection) -> None:
    at = open_page("app_pages/search.py", collection="demo")
    at.text_input(key="search_query").input("knead dough").run()
    at.number_input(key="search_k").set_value(1).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(c.value.startswith("1 result from ") for c in at.caption)
    movement = next(d.value for d in at.dataframe if "hybrid rank" in d.value.columns)
    assert list(movement.columns) == ["id", "title", "hybrid rank", "semantic rank",
                                      "keyword rank (BM25)", "moved vs semantic",
                                      "moved vs keyword (BM25)"]


def test_the_caption_says_when_packed_postings_answered_bm25(
        open_page: PageOpener, demo: Collection, conn: Any, unique_name: str) -> None:
    from tests.test_postings import demo_copy
    from vecdash.bm25.packed import build_packed
    from vecdash.collections import drop_collection

    def caption(name: str) -> str:
        at = open_page("app_pages/search.py", collection=name)
        at.text_input(key="search_query").input("sourdough starter").run()
        assert not at.exception, [e.message for e in at.exception]
        return next(c.value for c in at.caption if " result" in c.value)

    assert "packed postings" not in caption("demo")  # 365 rows: the exact path
    copy = demo_copy(conn, demo, unique_name, embedder=demo.embedder, model=demo.model)
    try:
        assert build_packed(conn, copy)
        assert "BM25 from the packed postings" in caption(unique_name)
    finally:
        drop_collection(conn, unique_name)
