"""Journeys a person takes in a real browser, from a fresh start."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import exceptions_on, open_app, screenshot, wait_for_run

PAGES = {"home": "", "search": "search", "ingest": "ingest", "quality": "quality",
         "indexes": "indexes", "map": "map"}


def test_first_start_loads_the_demo_and_home_lists_it(page: Any, app_url: str) -> None:
    open_app(page, app_url)
    assert exceptions_on(page) == []
    assert page.get_by_role("heading", name="vecdash").count() == 1
    # The grid draws on a canvas; its cells are in an accessible table (text content).
    expect(page.locator('[data-testid="stDataFrame"]').first).to_contain_text("demo",
                                                                               timeout=30_000)
    picker = page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Collection")
    expect(picker).to_have_value("demo", timeout=30_000)


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders_without_an_exception(page: Any, app_url: str, name: str) -> None:
    open_app(page, app_url, PAGES[name])
    assert exceptions_on(page) == []
    assert page.locator("h1").count() >= 1
    screenshot(page, name)


def test_a_typed_query_shows_ranked_results(page: Any, app_url: str) -> None:
    open_app(page, app_url, "search")
    box = page.get_by_label("Query")
    box.fill("why does my bread not rise")
    box.press("Enter")
    wait_for_run(page)
    assert exceptions_on(page) == []
    main = page.locator('[data-testid="stMain"]')
    text = main.inner_text().lower()
    assert "dough" in text or "bread" in text
    assert "fused" in text
