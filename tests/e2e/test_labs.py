"""The Index Lab and the Quality Lab on the demo with an index, in a real browser (issue 17,
items 5 and 6): a sweep's points carry their settings and their spread, the exact scan is timed
in the sweep itself, the page says the demo is too small for index figures, and the Quality Lab
says which index produced its figures and offers an exact evaluation."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.e2e.conftest import MAIN, exceptions_on, open_app, wait_for_run
from tests.e2e.test_search_views import TRUNCATED_JS
from vecdash.indexes import EF_SEARCH_SWEEP


def chart_texts(page: Any, selector: str) -> list[list[str]]:
    """The SVG text plotly drew under ``selector``, chart by chart (point labels: g.textpoint
    text; x-axis ticks: g.xtick text)."""
    return list(page.evaluate("""selector => [...document.querySelectorAll(
            '[data-testid="stMain"] .js-plotly-plot')]
        .map(chart => [...chart.querySelectorAll(selector)].map(t => t.textContent))""",
                              selector))


def test_index_lab_sweep_labels_every_point_and_shows_its_spread(
        page: Any, app_url: str, demo_with_an_index: None) -> None:
    open_app(page, app_url, "indexes")
    main = page.locator(MAIN)
    expect(main).to_contain_text("too few for index figures to mean much")
    page.get_by_role("button", name="Run sweep").click()
    wait_for_run(page)
    assert exceptions_on(page) == []
    expect(main.locator(".js-plotly-plot").first).to_be_visible(timeout=120_000)
    page.wait_for_timeout(1000)  # plotly draws its text after the chart appears
    charts = chart_texts(page, "g.textpoint text")
    assert len(charts) >= 2, charts  # p50 and p95 against recall
    for labels in charts:
        assert "exact scan" in labels, labels  # the reference point, timed in this sweep
        assert {f"ef_search={ef}" for ef in EF_SEARCH_SWEEP} <= set(labels), labels
    table = main.locator('[data-testid="stDataFrame"]').last
    for header in ("p50 ms (range)", "repeats", "served by"):  # all in view: no sideways scroll
        expect(table).to_contain_text(header)
    assert page.evaluate(TRUNCATED_JS) == []
    # The latency axis (log) reads as increasing numbers of milliseconds, not "2 3 ... 1000 2 3".
    for ticks in chart_texts(page, "g.xtick text"):
        values = [float(t.replace("\u2212", "-").split()[0]) for t in ticks if t.strip()]
        assert values and values == sorted(set(values)), ticks


def test_quality_lab_names_the_index_behind_its_figures_and_offers_exact(
        page: Any, app_url: str, demo_with_an_index: None) -> None:
    open_app(page, app_url, "quality")
    main = page.locator(MAIN)
    # On 365 rows the planner reads every row rather than the index: the page says so by name
    # (it used to say the collection had no index the query could use).
    expect(main).to_contain_text("The query plan does not use demo_embedding_hnsw_m16_efc64",
                                 timeout=120_000)
    expect(main).to_contain_text("so these figures are exact")
    page.get_by_text("Exact semantic search for the evaluation").click()
    wait_for_run(page)
    expect(main).to_contain_text("Semantic arm: exact scan (index scans switched off",
                                 timeout=120_000)
    assert exceptions_on(page) == []
