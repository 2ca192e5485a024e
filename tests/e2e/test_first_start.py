"""The first start as a person meets it (issue 17, item 8): from the first paint until the Home
page is usable, the page always shows that it is working; and a restart (item 9): the model loads
in the background, so the first search does not wait for it. Servers of their own, so these tests
see whole starts however the other browser tests are ordered."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import MAIN, VIEWPORT, exceptions_on, open_app, served_app, wait_for_run

# What the page shows, sampled: Streamlit's "Running..." indicator, the first-start status box,
# and whether Home is usable (the Collections table drawn, the sidebar's picker set to the demo).
SAMPLE = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    const picker = document.querySelector('[data-testid="stSidebar"] input[role="combobox"]');
    const box = document.querySelector('[data-testid="stExpander"] summary');
    return {
        running: !!document.querySelector('[data-testid="stStatusWidget"]'),
        usable: !!(main && main.querySelector('[data-testid="stDataFrame"]')
                   && picker && picker.value === 'demo'),
        drawn: !!(main && main.innerText.trim()),
        box: box ? box.innerText.trim() : '',
    };
}"""
LONGEST_SILENT_GAP_S = 1.5  # a rerun's hand-over may blank the indicator for a moment


def test_the_first_start_never_looks_stuck(browser: Any) -> None:
    with served_app() as url:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(url, wait_until="domcontentloaded")
        started = time.time()
        silent_since: float | None = None
        silent_gaps: list[str] = []
        seen_loading = False
        while True:
            now = time.time()
            s = page.evaluate(SAMPLE)
            seen_loading = seen_loading or "loading the demo collection" in s["box"]
            if s["usable"] and not s["running"]:
                break
            # Silent: nothing says the app is working, yet the page cannot be used.
            if not s["running"] and not s["usable"]:
                silent_since = silent_since or now
                if now - silent_since > LONGEST_SILENT_GAP_S:
                    silent_gaps.append(f"at {now - started:.1f} s: drawn={s['drawn']} "
                                       f"box={s['box']!r}")
                    silent_since = now
            else:
                silent_since = None
            assert now - started < 300, "the first start did not finish in 5 minutes"
            page.wait_for_timeout(200)
        assert seen_loading, "the first start's status box was never shown"
        assert silent_gaps == [], "the page looked stuck (no sign of work, not usable)"
        assert exceptions_on(page) == []
        context.close()


MODEL_SPINNER = "Loading the local embedding model"
MODEL_READY = "the local model is ready"
# Records whether the model's loading spinner is ever drawn, however briefly, from now on.
WATCH_SPINNER = """(text) => {
    window.sawModelSpinner = document.body.innerText.includes(text);
    new MutationObserver(() => {
        if (document.body.innerText.includes(text)) window.sawModelSpinner = true;
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def test_the_first_search_after_a_restart_does_not_wait_for_the_model(browser: Any) -> None:
    data_dir = tempfile.mkdtemp(prefix="vecdash-e2e-restart-")
    log = Path(data_dir) / "streamlit.log"
    try:
        with served_app(data_dir) as url:  # the first start: the demo, the model's calibration
            context = browser.new_context(viewport=VIEWPORT)
            open_app(context.new_page(), url)
            context.close()
        with served_app(data_dir) as url:  # the restart: nothing asks for the model yet
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            open_app(page, url, "search")
            # No query was typed: the model must be loading, or loaded, on its own.
            deadline = time.time() + 120
            while MODEL_READY not in log.read_text() and time.time() < deadline:
                page.wait_for_timeout(250)
            assert MODEL_READY in log.read_text(), (
                "the model was not loaded in the background after a restart:\n"
                + log.read_text()[-2000:])
            page.evaluate(WATCH_SPINNER, MODEL_SPINNER)
            box = page.get_by_label("Query")
            box.fill("why does my bread not rise")
            box.press("Enter")
            wait_for_run(page)
            assert exceptions_on(page) == []
            assert "dough" in page.locator(MAIN).inner_text().lower()
            assert page.evaluate("window.sawModelSpinner") is False, (
                "the first search waited behind the model's loading spinner")
            context.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
