"""The README says what the code does: its settings table is the one `python -m vecdash settings`
prints, and its library example runs against the real database and model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vecdash.config import settings_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_settings_table_is_what_the_cli_prints() -> None:
    printed = subprocess.run([sys.executable, "-m", "vecdash", "settings"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
    assert printed == settings_table()
    start = README.index("| variable | default | what it does |")
    table = README[start:].split("\n\n", 1)[0].strip()
    assert table == printed


def library_example() -> str:
    section = README.split("## Use it as a library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's library section has no python example"
    return match.group(1)


def test_readme_library_example_runs(settings: Any, demo: Any, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    code = library_example()
    assert len(code.strip().splitlines()) <= 16
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    lines = out.strip().lower().splitlines()
    # three cooking hits for a baking question, ranked, the first about dough or bread
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert "dough" in lines[0] or "bread" in lines[0]
