"""The package's floor plan (mlm_pretrain.FLOORS): every import, module-level or inside a function, goes to
the module's own floor or below, there is no import circle, a name is imported from the module that
defines it (never through a re-export), and modules and functions stay small enough to read."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mlm_pretrain

PKG = Path(mlm_pretrain.__file__).resolve().parent
MODULES = {p.stem: p for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: The config's section dataclasses: one declaration (and docstring) per field, worth their length.
FIELD_DECLARATIONS = {"config": ("CorpusConfig", "TokenizerConfig", "DataConfig", "MaskingConfig", "ModelConfig",
                                 "PretrainConfig", "FinetuneConfig", "HubConfig", "TrackingConfig", "Config")}


def _imports(module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported package module, names) of every import of a package module in ``module``."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.append((node.lineno, node.module.split(".")[0], [a.name for a in node.names]))
            else:  # from . import finetune
                out += [(node.lineno, a.name, []) for a in node.names if a.name in MODULES]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [a.name for a in node.names]
            for name in names:
                if name and name.startswith("mlm_pretrain."):
                    out.append((node.lineno, name.split(".")[1], []))
    return [(line, m, names) for line, m, names in out if m in MODULES and m != module]


def _graph() -> dict[str, set[str]]:
    return {m: {target for _, target, _ in _imports(m)} for m in MODULES}


def _defined(module: str) -> set[str]:
    names = set()
    for node in ast.parse(MODULES[module].read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def test_every_module_is_on_one_floor():
    placed = [m for floor in mlm_pretrain.FLOORS for m in floor]
    assert sorted(placed) == sorted(MODULES), "add the new module to mlm_pretrain.FLOORS (and the table above it)"


def test_imports_go_down_the_floors():
    floor = {m: len(mlm_pretrain.FLOORS) - i for i, f in enumerate(mlm_pretrain.FLOORS) for m in f}
    upward = [f"{m}.py:{line} imports {target} (floor {floor[target]} > {floor[m]})"
              for m in MODULES for line, target, _ in _imports(m) if floor[target] > floor[m]]
    assert not upward, "a module imports from a floor above it; move the name down instead:\n" + "\n".join(upward)


def test_there_is_no_import_circle():
    graph, index, low, stack, on_stack, circles = _graph(), {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_a_name_is_imported_from_the_module_that_defines_it():
    defined = {m: _defined(m) for m in MODULES}
    through = [f"{m}.py:{line} imports {name} from {target}, which only imports it"
               for m in MODULES for line, target, names in _imports(m) for name in names
               if name not in defined[target]]
    assert not through, "\n".join(through)


def _long_functions(tree: ast.AST, module: str) -> list[str]:
    return [f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module):
    tree = ast.parse(MODULES[module].read_text())
    fields = sum(node.end_lineno - node.lineno + 1 for node in tree.body
                 if isinstance(node, ast.ClassDef) and node.name in FIELD_DECLARATIONS.get(module, ()))
    lines = len(MODULES[module].read_text().splitlines()) - fields
    assert lines <= MAX_MODULE_LINES, f"{module}.py: {lines} lines (field declarations aside); split it by concern"
    assert not _long_functions(tree, module)


def test_the_checks_catch_what_they_look_for(tmp_path, monkeypatch):
    """The checks above on a made-up package: a circle, an upward import, a re-export and a long function."""
    for name, text in {"low": "from .high import thing\n", "high": "from .low import other\nthing = 1\n",
                       "user": "from .high import other\n" + "def f():\n" + "    x = 1\n" * 90}.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.setattr(mlm_pretrain, "FLOORS", (("user",), ("high",), ("low",)))
    globals()["MODULES"], saved = {p.stem: p for p in tmp_path.glob("*.py")}, MODULES
    try:
        with pytest.raises(AssertionError, match="low.py:1 imports high"):
            test_imports_go_down_the_floors()
        with pytest.raises(AssertionError, match=r"import circles: \[\['high', 'low'\]\]"):
            test_there_is_no_import_circle()
        with pytest.raises(AssertionError, match="user.py:1 imports other from high, which only imports it"):
            test_a_name_is_imported_from_the_module_that_defines_it()
        with pytest.raises(AssertionError):
            test_modules_and_functions_stay_small("user")
    finally:
        globals()["MODULES"] = saved
