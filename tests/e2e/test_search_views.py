"""Search and Quality Lab in a real browser (issue 17, items 2, 4, 7 and 10): the view lives for
the session and in the URL, a link opens it, bad parameters are notes, the Quality Lab's applied
setting survives a page change, the compare table's ranks and headers, no truncated labels."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import expect

from tests.e2e.conftest import exceptions_on, open_app, wait_for_run

# Every label, option, select value, button and tab text of the main area whose text is cut
# (wider than its box, with overflow hidden), and every table that scrolls sideways.
TRUNCATED_JS = """
() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const cut = [];
  const seen = new Set();
  const selectors = ['[data-testid="stWidgetLabel"]', '[data-testid="stSelectbox"]',
                     '[data-testid="stMultiSelect"]',
                     '[data-testid="stRadio"] label', '[data-testid="stCheckbox"] label',
                     'button', '[data-baseweb="tab"]', '[data-testid="stExpander"] summary',
                     '[data-testid="stMetricLabel"]'];
  for (const root of main.querySelectorAll(selectors.join(','))) {
    if (!root.offsetParent) continue;  // not shown (a closed expander, another tab)
    for (const el of [root, ...root.querySelectorAll('*')]) {
      if (seen.has(el) || !el.offsetParent) continue;
      seen.add(el);
      const style = getComputedStyle(el);
      const hides = style.overflow !== 'visible' || style.overflowX !== 'visible'
                    || style.textOverflow === 'ellipsis';
      // A select shows its value in an input (searchable): its text is the value.
      const text = el.tagName === 'INPUT' ? el.value : el.textContent.trim();
      const checked = el.tagName !== 'INPUT' || el.closest('[data-testid="stSelectbox"]');
      if (checked && hides && el.scrollWidth > el.clientWidth + 1 && text) {
        cut.push(text.slice(0, 80));
      }
    }
  }
  for (const grid of main.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')) {
    if (grid.offsetParent && grid.scrollWidth > grid.clientWidth + 1) {
      cut.push(`a table scrolls sideways (${grid.scrollWidth} > ${grid.clientWidth} px): `
               + grid.closest('[data-testid="stDataFrame"]')
               .textContent.slice(0, 80));
    }
  }
  return [...new Set(cut)];
}
"""


def main(page: Any) -> Any:
    return page.locator('[data-testid="stMain"]')


def params(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def search_for(page: Any, text: str) -> None:
    box = page.get_by_label("Query")
    box.fill(text)
    box.press("Enter")
    wait_for_run(page)


def pick(page: Any, label: str, option: str) -> None:
    main(page).get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_for_run(page)


def go_to(page: Any, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    wait_for_run(page)


def test_search_view_survives_pages_reloads_and_links(page: Any, app_url: str) -> None:
    open_app(page, app_url, "search")
    search_for(page, "how long to knead dough")
    pick(page, "Fusion", "RRF (by rank)")
    assert exceptions_on(page) == []
    assert params(page)["q"] == ["how long to knead dough"]
    assert params(page)["fusion"] == ["rrf"] and params(page)["mode"] == ["hybrid"]
    # away and back through the sidebar: the same query and fusion
    go_to(page, "Home")
    assert "/search" not in page.url
    go_to(page, "Search")
    expect(page.get_by_label("Query")).to_have_value("how long to knead dough")
    expect(main(page).get_by_role("combobox", name="Fusion")).to_have_value("RRF (by rank)")
    assert params(page)["fusion"] == ["rrf"]
    # the link control gives this URL, and the URL opens the view in a new session
    main(page).get_by_role("button", name=re.compile("Copy link to this view")).click()
    link = page.locator('[data-testid="stPopoverBody"] code').inner_text().strip()
    assert link.startswith(f"{app_url}/search?q=how+long+to+knead+dough&mode=hybrid&weight=0.5"
                           "&fusion=rrf&k=10&depth=100&ranker=bm25")
    page.keyboard.press("Escape")
    page.reload(wait_until="domcontentloaded")
    wait_for_run(page)
    expect(page.get_by_label("Query")).to_have_value("how long to knead dough")
    expect(main(page).get_by_role("combobox", name="Fusion")).to_have_value("RRF (by rank)")
    open_app(page, app_url, link.removeprefix(f"{app_url}/").replace("weight=0.5", "weight=0.8"))
    expect(page.get_by_label("Query")).to_have_value("how long to knead dough")
    assert params(page)["weight"] == ["0.8"]
    # a bad parameter: a note, the rest of the view, no error
    open_app(page, app_url, "search?q=bread&k=5&depth=lots&fusion=max&sort=title")
    assert exceptions_on(page) == []
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    note = main(page).locator('[data-testid="stAlertContentInfo"]', has_text="Ignored")
    expect(note).to_contain_text("depth='lots'")
    expect(note).to_contain_text("fusion='max'")
    expect(note).to_contain_text("'sort'")
    expect(page.get_by_label("Query")).to_have_value("bread")
    expect(main(page).get_by_text("5 results from")).to_be_visible()


def test_quality_lab_setting_survives_leaving_search(page: Any, app_url: str) -> None:
    open_app(page, app_url, "quality")
    caption = main(page).get_by_text(re.compile(r"^Best by")).inner_text()
    best = re.search(r"Best by \S+: (\w+), weight ([\d.]+)", caption)
    assert best, caption
    fusion, weight = best.groups()
    main(page).get_by_role("button", name="Apply this setting to the Search page").click()
    page.wait_for_url(re.compile(r"/search\?"), timeout=60_000)
    wait_for_run(page)
    applied = params(page)
    assert applied["fusion"] == [fusion] and float(applied["weight"][0]) == float(weight)
    go_to(page, "Index Lab")
    go_to(page, "Search")
    assert params(page)["fusion"] == [fusion]
    assert float(params(page)["weight"][0]) == float(weight)
    assert exceptions_on(page) == []


def test_compare_view_ranks_and_headers(page: Any, app_url: str) -> None:
    open_app(page, app_url, "search?q=knead+dough&k=1")
    expect(main(page).get_by_text("1 result from")).to_be_visible()
    main(page).get_by_role("tab", name="Compare semantic / keyword / hybrid").click()
    moved = main(page).locator('[data-testid="stDataFrame"]').last
    expect(moved).to_contain_text("hybrid rank", timeout=30_000)
    expect(moved).to_contain_text("keyword rank (BM25)")
    expect(moved).not_to_contain_text("hybrid_rank")
    expect(moved).not_to_contain_text("None")


def test_no_truncated_labels_on_search_and_quality(page: Any, app_url: str) -> None:
    open_app(page, app_url, "search?q=how+long+to+knead+dough&fusion=convex")
    main(page).locator('[data-testid="stExpander"] summary').first.click()
    page.wait_for_timeout(500)
    assert page.evaluate(TRUNCATED_JS) == []
    pick(page, "Fusion", "RRF (by rank)")
    assert page.evaluate(TRUNCATED_JS) == []
    open_app(page, app_url, "quality")
    assert page.evaluate(TRUNCATED_JS) == []
