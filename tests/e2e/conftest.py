"""Browser tests: the dashboard served by `streamlit run app.py` on a free loopback port, with its
own data directory (so its embedded PostgreSQL and first-start demo load are the real ones),
driven by Playwright in Debian's chromium. Skipped, with the reason, where chromium is missing."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own background connections are refused on a closed network, many at a time.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
MAIN = '[data-testid="stMain"]'
VIEWPORT = {"width": 1440, "height": 2400}  # Streamlit scrolls inside its own container
RUN_TIMEOUT_S = 240

if CHROMIUM is None:
    collect_ignore_glob = ["test_*.py"]
    print("\nbrowser tests skipped: chromium is not installed (apt-get install chromium; "
          ".ci/run installs it)", file=sys.stderr)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served_app(data_dir: str | None = None) -> Iterator[str]:
    """`streamlit run app.py` on a fresh data directory (the first page view loads the demo), or
    on ``data_dir`` (kept afterwards: a restart), yielding its URL; its console goes to
    streamlit.log there. The server and its embedded PostgreSQL are stopped afterwards."""
    from vecdash import db
    from vecdash.config import Settings

    fresh = data_dir is None
    data_dir = data_dir or tempfile.mkdtemp(prefix="vecdash-e2e-")
    env = {k: v for k, v in os.environ.items()
           if k not in ("VECDASH_DATABASE_URL", "VECDASH_READ_ONLY", "PGHOST", "PGDATABASE")}
    env.update(VECDASH_DATA_DIR=data_dir, VECDASH_AUTOLOAD_DEMO="1", HF_HUB_OFFLINE="1")
    port = _free_port()
    log = open(Path(data_dir) / "streamlit.log", "w")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not start; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        db.stop_embedded(Settings.from_env({"VECDASH_DATA_DIR": data_dir}))
        if fresh:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """The dashboard on a fresh data directory, shared by the session's tests."""
    with served_app() as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    yield p
    context.close()


def wait_for_run(page: Any, *, timeout_s: float = RUN_TIMEOUT_S) -> None:
    """Wait until the script run has finished: the app is drawn and Streamlit's status widget
    ("Running...") has been gone for a moment (a rerun can start right after one ends)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    deadline = time.time() + timeout_s
    # Before the first script run draws anything the status widget is not shown either.
    while (page.locator('[data-testid="stMain"] h1, [data-testid="stExpander"], '
                        '[data-testid="stException"]').count() == 0 and time.time() < deadline):
        page.wait_for_timeout(200)
    quiet_since: float | None = None
    while time.time() < deadline:
        busy = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= 0.75:
            return
        page.wait_for_timeout(150)
    raise AssertionError(f"the page was still running after {timeout_s:.0f} s")


def open_app(page: Any, url: str, path: str = "") -> None:
    page.goto(f"{url}/{path}", wait_until="domcontentloaded")
    wait_for_run(page)
    # The first view of a fresh server loads the demo behind a status box, then reruns.
    deadline = time.time() + RUN_TIMEOUT_S
    while page.get_by_text("loading the demo collection").count() and time.time() < deadline:
        page.wait_for_timeout(500)
        wait_for_run(page)


def exceptions_on(page: Any) -> list[str]:
    errors = page.locator('[data-testid="stException"]')
    return [errors.nth(i).inner_text()[:500] for i in range(errors.count())]


def screenshot(page: Any, name: str) -> None:
    """Save a full-page PNG when VECDASH_SCREENSHOT_DIR is set (`make screenshots`)."""
    folder = os.environ.get("VECDASH_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(1500)  # charts draw after the script ends
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def demo_with_an_index(browser: Any, app_url: str) -> Iterator[None]:
    """The demo with an HNSW index, built on the Index Lab as a person does (a fresh demo has
    none, so the index picker and an index table row were never looked at); dropped after."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    open_app(p, app_url, "indexes")
    p.get_by_role("button", name="Build index").click()
    wait_for_run(p)
    expect(p.locator(MAIN)).to_contain_text("Built demo_embedding_hnsw", timeout=120_000)
    yield
    open_app(p, app_url, "indexes")
    p.get_by_role("button", name="Drop an index").click()
    p.get_by_text("Yes, drop").click()
    wait_for_run(p)
    p.get_by_role("button", name="Drop index", exact=True).click()
    wait_for_run(p)
    context.close()
