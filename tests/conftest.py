"""Session-wide fixtures: one embedded PostgreSQL (in a temp dir), the real local model, the demo.

Every test talks to the real database. Tests that write make their own collections (unique names)
and leave the shared demo collection as it is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from vecdash import db
from vecdash.collections import Collection
from vecdash.config import Settings
from vecdash.demo import load_demo
from vecdash.embedders import LocalEmbedder


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    # Not under pytest's basetemp: a concurrent pytest run resets that tree to mode 0700, which
    # locks out the server's own system user when tests run as root.
    data_dir = tempfile.mkdtemp(prefix="vecdash-test-")
    # The app under AppTest reads the same environment, so it reuses this server.
    os.environ["VECDASH_DATA_DIR"] = data_dir
    os.environ["VECDASH_AUTOLOAD_DEMO"] = "0"
    for var in ("VECDASH_DATABASE_URL", "VECDASH_READ_ONLY", "PGHOST", "PGDATABASE"):
        os.environ.pop(var, None)
    current = Settings.from_env()
    yield current
    db.stop_embedded(current)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pool(settings: Settings) -> Iterator[Any]:
    p = db.open_pool(settings)
    yield p
    p.close()


@pytest.fixture
def conn(pool: Any) -> Iterator[Any]:
    with pool.connection() as c:
        yield c


@pytest.fixture(scope="session")
def embedder() -> LocalEmbedder:
    e = LocalEmbedder()
    e.embed(["warm up"])
    return e


@pytest.fixture(scope="session")
def demo(pool: Any, embedder: LocalEmbedder) -> Collection:
    with pool.connection() as c:
        collection, _ = load_demo(c, embedder=embedder)
    return collection


@pytest.fixture
def unique_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


APP = str(Path(__file__).resolve().parents[1] / "app.py")
PageOpener = Callable[..., AppTest]


@pytest.fixture
def open_page(settings: Settings) -> PageOpener:
    """Open the app under AppTest (on the session's server), optionally with a collection
    picked and switched to a page; every run must end without an exception."""

    def opener(page: str | None = None, *, collection: str | None = None,
               timeout: int = 300) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=timeout)
        if collection is not None:
            at.session_state["collection"] = collection
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        if page is not None:
            at.switch_page(page).run()
            assert not at.exception, [e.message for e in at.exception]
        return at

    return opener
