"""Flows on Home, Ingest, Index Lab and the Embedding Map that only a real browser shows (issue
17): a click on a map point, a second upload on the Ingest page, text cut off at 1440 px."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import MAIN, exceptions_on, open_app, wait_for_run
from tests.e2e.test_search_views import TRUNCATED_JS


def point_on_screen(page: Any) -> tuple[float, float]:
    """The page coordinates of the first point of the map's first trace, from plotly's own axes
    (d2p: data to pixels inside the plot area, _size: where the plot area sits)."""
    position = page.evaluate("""() => {
        const gd = [...document.querySelectorAll('.js-plotly-plot')].pop();
        const layout = gd._fullLayout, trace = gd._fullData[0];
        const box = gd.getBoundingClientRect();
        return [box.left + layout._size.l + layout.xaxis.d2p(trace.x[0]),
                box.top + layout._size.t + layout.yaxis.d2p(trace.y[0])];
    }""")
    return float(position[0]), float(position[1])


def test_a_click_on_a_map_point_shows_its_neighbours(page: Any, app_url: str) -> None:
    open_app(page, app_url, "map")
    chart = page.locator('[data-testid="stPlotlyChart"]').last
    expect(chart).to_be_visible(timeout=60_000)
    page.wait_for_function("() => { const g = document.querySelector('.js-plotly-plot'); "
                           "return g && g._fullLayout && g._fullLayout.xaxis; }", timeout=60_000)
    main = page.locator(MAIN)
    assert "nearest neighbours by" not in main.inner_text()
    x, y = point_on_screen(page)
    page.mouse.click(x, y)
    wait_for_run(page)
    assert exceptions_on(page) == []
    expect(main).to_contain_text("nearest neighbours by", timeout=30_000)
    expect(main.locator('[data-testid="stTable"]')).to_contain_text("distance")


def upload(page: Any, path: Path) -> None:
    page.locator(f'{MAIN} input[type="file"]').first.set_input_files(str(path))
    wait_for_run(page)


def test_a_new_upload_on_ingest_starts_a_fresh_form(page: Any, app_url: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="vecdash-e2e-upload-"))
    first, second = folder / "garden_tips.csv", folder / "kitchen_notes.csv"
    first.write_text("id,title,body\ng1,Roses,Prune roses in late winter.\n"
                     "g2,Beans,Sow beans after the last frost.\n")
    second.write_text("id,subject,text\nk1,Tea,Steep green tea for two minutes.\n")
    open_app(page, app_url, "ingest")
    upload(page, first)
    name_box = page.get_by_label("New collection name")
    expect(name_box).to_have_value("garden_tips")
    name_box.fill("garden_e2e")
    name_box.press("Enter")
    wait_for_run(page)
    page.get_by_role("button", name="Start ingestion").click()
    wait_for_run(page)
    main = page.locator(MAIN)
    expect(main).to_contain_text("Done: 'garden_e2e'", timeout=120_000)

    page.locator('[data-testid="stFileChipDeleteBtn"]').first.click()
    wait_for_run(page)
    upload(page, second)
    assert exceptions_on(page) == []
    expect(page.get_by_label("New collection name")).to_have_value("kitchen_notes")
    assert "Done: 'garden_e2e'" not in main.inner_text()


TRUNCATED_LABELS = """() => [...document.querySelectorAll(
        '[data-testid="stMain"] [data-testid="stWidgetLabel"] p, '
        + '[data-testid="stMain"] [data-testid="stMetricLabel"] p, '
        + '[data-testid="stMain"] [data-testid="stSelectbox"] [value], '
        + '[data-testid="stMain"] [data-testid="stSelectbox"] div[class*="singleValue"], '
        + '[data-testid="stMain"] button p')]
    .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.innerText || e.getAttribute('value'))"""


@pytest.mark.parametrize("path", ["", "search", "ingest", "quality", "indexes", "map"])
def test_no_control_label_is_cut_off_at_1440_px(page: Any, app_url: str, path: str,
                                                demo_with_an_index: None) -> None:
    open_app(page, app_url, path)
    page.wait_for_timeout(1000)  # widgets settle their widths after the run
    assert exceptions_on(page) == []
    if path == "indexes":  # the index is there: its picker and its table row are on the page
        expect(page.locator(MAIN)).to_contain_text("demo_embedding_hnsw_m16_efc64")
    assert page.evaluate(TRUNCATED_LABELS) == []
    assert page.evaluate(TRUNCATED_JS) == []
