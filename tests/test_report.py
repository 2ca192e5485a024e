"""The Quality Lab's HTML report (self-contained, what it holds) and writing it safely; the eval
command's --cv, --tune, --compare and --html."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from vecdash.cli import main
from vecdash.collections import Collection
from vecdash.embedders import LocalEmbedder
from vecdash.errors import InvalidInput
from vecdash.labels import demo_labeled_set
from vecdash.quality import Config, run_labeled_queries
from vecdash.report import compare, index_summary, quality_report, write_report


@pytest.fixture(scope="module")
def demo_run(pool: Any, demo: Collection, embedder: LocalEmbedder) -> Any:
    with pool.connection() as conn:
        return run_labeled_queries(conn, demo, demo_labeled_set(), embedder=embedder)


def test_report_is_self_contained_and_complete(conn: Any, demo: Collection,
                                               demo_run: Any) -> None:
    cmp = compare(demo_run, Config("semantic", 1.0), Config("keyword: BM25", 0.0),
                  measure="nDCG@10", k=10)
    text = quality_report(demo_run, collection=demo, indexes=index_summary(conn, demo),
                          comparison=cmp, labels="demo labeled queries")
    # plotly.js is inline: no script or stylesheet is loaded from anywhere
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=", text)
    assert "plotly.js v" in text or "Plotly" in text
    assert len(text) > 1_000_000  # the library itself is in the file
    for expected in (demo.name, demo.model, "nDCG@10", "keyword: ts_rank_cd",
                     "Semantic-weight sweep", "b wins", cmp.test.sentence("semantic",
                                                                          "keyword: BM25")[:40],
                     "paired randomisation test"):
        assert expected in text, expected
    # every query's row of the wins and losses
    assert all(q.id in text for q in demo_run.queries)


def test_write_report_refuses_existing_and_unwritable_paths(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    assert write_report(target, "one") == target and target.read_text() == "one"
    with pytest.raises(InvalidInput, match="already exists.*--force"):
        write_report(target, "two")
    assert target.read_text() == "one"
    write_report(target, "two", force=True)
    assert target.read_text() == "two"
    with pytest.raises(InvalidInput, match="does not exist"):
        write_report(tmp_path / "nope" / "r.html", "x")
    with pytest.raises(InvalidInput, match="is a folder"):
        write_report(tmp_path, "x")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(InvalidInput, match="Cannot write"):
            write_report(locked / "r.html", "x")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_write_leaves_no_file_under_the_name(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk, simulated: the write itself fails half-way.
    real_write_text = Path.write_text

    def full(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        real_write_text(self, text[:10], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "r.html"
    with pytest.raises(InvalidInput, match="No space left on device"):
        write_report(target, "x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_eval_cv_compare_and_html(demo: Collection, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Path) -> None:
    out_file = tmp_path / "report.html"
    assert main(["eval", "--collection", "demo", "--cv", "4", "--compare", "semantic",
                 "hybrid w=0.7", "--html", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "4-fold cross-validation" in out and "tuned (cross-validated)" in out
    assert "chosen on all queries: hybrid" in out
    assert "hybrid w=0.7 (b) against semantic (a)" in out and "p = " in out
    assert "where they disagree most" in out
    html = out_file.read_text()
    assert "Tuning, 4-fold cross-validated" in html and "hybrid w=0.7" in html
    # an existing file needs --force, and is refused before any work
    assert main(["eval", "--collection", "demo", "--html", str(out_file)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["eval", "--collection", "demo", "--html", str(out_file), "--force"]) == 0
    capsys.readouterr()
    for argv, words in ((["--compare", "semantic", "hybrid w=lots"], "w=lots"),
                        (["--compare", "semantic", "tuned"], "add --tune"),
                        (["--cv", "100"], "fewer than the 100 folds"),
                        (["--html", str(tmp_path / "no" / "r.html")], "does not exist")):
        assert main(["eval", "--collection", "demo", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
