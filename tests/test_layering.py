"""The layering rules of DESIGN.md: vecdash/ never imports streamlit, pages (app_pages/) never import psycopg,
and SQL text is never built with f-strings or str.format."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_data_layer_never_imports_streamlit() -> None:
    files = sorted((ROOT / "vecdash").rglob("*.py"))
    assert files
    offenders = [str(p) for p in files if "streamlit" in imported_modules(p)]
    assert offenders == []


def test_pages_and_shell_never_import_psycopg() -> None:
    files = sorted((ROOT / "app_pages").glob("*.py")) + [ROOT / "app.py", ROOT / "ui.py"]
    assert len(files) >= 3
    bad = {"psycopg", "psycopg_pool", "psycopg2"}
    offenders = [str(p) for p in files if imported_modules(p) & bad]
    assert offenders == []


SQL_WORDS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", "DROP ", "ALTER ", "COPY ")


def test_no_sql_built_with_fstrings_or_format() -> None:
    offenders = []
    for path in sorted((ROOT / "vecdash").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values
                               if isinstance(v, ast.Constant) and isinstance(v.value, str))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "format" and isinstance(node.func.value, ast.Constant)
                  and isinstance(node.func.value.value, str)):
                text = node.func.value.value
            if text and any(text.lstrip().startswith(w) for w in SQL_WORDS):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_no_legacy_pages_folder() -> None:
    # A pages/ folder beside app.py switches Streamlit into its legacy multipage mode until
    # st.navigation runs, so a deep link opened first on a fresh server would skip app.py.
    assert not (ROOT / "pages").exists()
    assert (ROOT / "app_pages" / "home.py").exists()
