"""No import circle in oml_exp, read from the `import` statements of its files (also those inside functions)."""

import ast
from pathlib import Path

import oml_exp

PACKAGE = Path(oml_exp.__file__).resolve().parent


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of `package` and the package's modules it imports. `from a import b` imports the module a.b when
    there is one, else a name of a (its __init__.py); the parent packages that Python runs first are not counted."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                             for a in node.names}
        graph[name] = (imported & files.keys()) - {name}
    return graph


def reached(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        new = graph[todo.pop()] - seen
        seen |= new
        todo += new
    return seen


def circles(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for each import of b by a from which the imports lead back to a."""
    return [f"{a} -> {b}" for a, imported in graph.items() for b in sorted(imported) if a in reached(graph, b)]


def test_no_module_imports_a_module_that_imports_it_back():
    graph = import_graph(PACKAGE)
    assert {"oml_exp.reporting.table", "oml_exp.reporting.plots"} <= graph["oml_exp.reporting.sweep"]
    assert not [m for m in graph["oml_exp.reporting.wandb_log"] if m.startswith("oml_exp.reporting")], \
        "the W&B logger takes the finished tables, plots and summaries it is handed"
    found = circles(graph)
    assert not found, "import circles (a -> b: a imports b, which leads back to a):\n" + "\n".join(found)


def test_a_circle_through_a_function_and_another_module_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.b import thing\n")
    (package / "a.py").write_text("from pkg.sub import b\n")  # the module pkg.sub.b, not pkg/sub/__init__.py
    (package / "sub" / "b.py").write_text("import pkg.c\nthing = 1\n")
    (package / "c.py").write_text("def late():\n    from pkg import a\n")
    assert circles(import_graph(package)) == ["pkg.a -> pkg.sub.b", "pkg.c -> pkg.a", "pkg.sub.b -> pkg.c"]
    (package / "c.py").write_text("def late():\n    from pkg.sub import thing\n")  # a name of pkg/sub/__init__.py
    assert circles(import_graph(package)) == ["pkg.c -> pkg.sub", "pkg.sub -> pkg.sub.b", "pkg.sub.b -> pkg.c"]
