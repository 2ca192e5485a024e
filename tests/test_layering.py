"""The layering rules of docs/architecture.md: vecdash/ never imports streamlit, pages
(app_pages/) never import psycopg, SQL text is never built with f-strings or str.format, no import
cycle ties vecdash modules together, and no data-layer module outgrows the size limit."""

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


def _sql_call_with_fstring(node: ast.AST) -> bool:
    """``sql.SQL(f"...")`` (or ``SQL(f"...")``): SQL text built from Python values."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name == "SQL" and isinstance(node.args[0], ast.JoinedStr)


def test_no_sql_composable_built_from_an_fstring() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "vecdash").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if _sql_call_with_fstring(node)
    ]
    assert offenders == []


def test_the_fstring_check_catches_sql_of_an_fstring() -> None:
    tree = ast.parse('sql.SQL(f"{kind}({dim})")\nsql.SQL("vector({})")')
    assert [_sql_call_with_fstring(n) for n in ast.walk(tree) if isinstance(n, ast.Call)] == [
        True, False]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (they never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for inner in ast.walk(child):
                    if isinstance(inner, ast.Import | ast.ImportFrom):
                        lines.add(inner.lineno)
    return lines


def vecdash_import_graph() -> dict[str, set[str]]:
    """Module -> the vecdash modules it imports, counting imports inside functions (a cycle
    hidden in a function still ties the two modules together) but not TYPE_CHECKING ones."""
    paths = sorted((ROOT / "vecdash").rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno in skip:
                continue
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module not in modules:
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    edges.add(sub if sub in modules else node.module)
        edges.discard(_module_name(path))
        graph[_module_name(path)] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_vecdash_modules() -> None:
    graph = vecdash_import_graph()
    assert "vecdash.db" in graph and "vecdash.config" in graph["vecdash.db"]
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


MAX_MODULE_LINES = 500


def test_no_data_layer_module_is_over_the_size_limit() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in sorted((ROOT / "vecdash").rglob("*.py"))}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_nothing_in_the_repository_points_outside_it() -> None:
    # The design document lives in docs/; users never have the workplace's shared folder.
    texts = [ROOT / name for name in ("README.md", "app.py", "ui.py", "Makefile",
                                      "pyproject.toml", "docker-compose.yml")]
    for folder in ("vecdash", "app_pages", "tests", "bench", "docs", ".ci", ".streamlit"):
        texts += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix not in {".png", ".pyc"}]
    offenders = [str(p.relative_to(ROOT)) for p in texts
                 if "../shared" in p.read_text(errors="replace") and p.name != "test_layering.py"]
    assert offenders == []
