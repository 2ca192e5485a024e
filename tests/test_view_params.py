"""The Search page's view as URL parameters and session state (pure: no database)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from vecdash.search.view_params import SearchView, view_from_params


def test_link_has_exactly_the_issue_parameters_in_order() -> None:
    view = SearchView(query="bread rise", mode="hybrid", weight=0.7, fusion="rrf", k=10,
                      depth=100, ranker="bm25", categories=("cooking",))
    url = view.url("http://127.0.0.1:8501/search")
    assert url == ("http://127.0.0.1:8501/search?q=bread+rise&mode=hybrid&weight=0.7&fusion=rrf"
                   "&k=10&depth=100&ranker=bm25&cat=cooking")
    assert view.url("http://h/search", collection="demo").endswith("&cat=cooking&collection=demo")


def test_a_link_reads_back_to_the_same_view() -> None:
    view = SearchView(query="a & b = c?", mode="keyword", weight=0.35, fusion="convex", k=25,
                      depth=300, ranker="ts_rank_cd", rrf_k=20, k1=0.9, b=0.5,
                      categories=("cooking", "home repair"))
    params = parse_qs(urlsplit(view.url("http://h/search")).query)
    back, notes = view_from_params(params)
    assert back == view and notes == []


def test_session_state_round_trip() -> None:
    view = SearchView(query="q", mode="semantic", weight=0.25, k=5, categories=("x",))
    state = view.to_state()
    assert state["search_weight"] == 0.25 and state["search_candidates"] == 100
    assert state["search_categories"] == ["x"]
    assert SearchView.from_state(state) == view
    assert SearchView.from_state({}) == SearchView()


@pytest.mark.parametrize(("name", "value", "said"), [
    ("mode", "fuzzy", "mode='fuzzy'"),
    ("weight", "1.5", "from 0 to 1"),
    ("weight", "nan", "from 0 to 1"),
    ("fusion", "max", "convex, rrf"),
    ("k", "0", "from 1 to 100"),
    ("k", "ten", "from 1 to 100"),
    ("depth", "5000", "from 10 to 1000"),
    ("ranker", "tfidf", "bm25, ts_rank_cd"),
    ("rrf_k", "-3", "from 1 to 1000"),
    ("b", "2", "from 0 to 1"),
    ("colour", "red", "unknown parameter 'colour'"),
])
def test_a_bad_parameter_is_ignored_with_a_note(name: str, value: str, said: str) -> None:
    view, notes = view_from_params({"q": ["dough"], "k": ["7"], name: [value]})
    assert view.query == "dough"
    assert len(notes) == 1 and said in notes[0] and "Ignored" in notes[0]
    default = SearchView()
    assert getattr(view, name, None) == getattr(default, name, None) or name == "k"
    assert view.k == (7 if name != "k" else 10)


def test_weight_snaps_to_the_slider_and_unknown_categories_drop() -> None:
    view, notes = view_from_params({"weight": ["0.73"], "cat": ["cooking", "astrology"]},
                                   categories=["cooking", "travel"])
    assert view.weight == 0.75 and view.categories == ("cooking",)
    assert any("rounded to 0.75" in n for n in notes)
    assert any("'astrology'" in n and "no such category" in n for n in notes)


def test_a_link_fills_only_what_it_names_on_top_of_the_base() -> None:
    base = SearchView(weight=0.6, fusion="rrf", rrf_k=20)
    view, notes = view_from_params({"q": ["x"], "collection": ["demo"]}, base=base)
    assert notes == [] and view == SearchView(query="x", weight=0.6, fusion="rrf", rrf_k=20)
