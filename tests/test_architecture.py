"""The package's layers: every import points down the order the docstrings declare, and none goes round."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import gancompress

PACKAGE = Path(gancompress.__file__).resolve().parent


def declared_order(package: Path) -> list[str]:
    """The layer order of the root docstring ('Layers: a, b, ...')."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    match = re.search(r"^Layers: ([^.]*)\.", doc, re.M)
    assert match, f"{package}/__init__.py: no 'Layers: ...' line"
    return [name.strip() for name in match.group(1).replace("\n", " ").split(",")]


def declared_imports(init: Path) -> list[str] | None:
    """The 'May import: a, b.' line of a subpackage docstring (None when it says 'every layer')."""
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    match = re.search(r"^May import: ([^.]*)\.", doc, re.M)
    assert match, f"{init}: the docstring does not say what the subpackage may import ('May import: ...')"
    text = match.group(1).replace("\n", " ")
    if text.startswith("every layer"):
        return None
    if text.strip() == "nothing":
        return []
    return [name.strip() for name in text.split(",")]


def module_name(package: Path, path: Path) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(package: Path) -> list[tuple[str, str, int, bool]]:
    """(importer, imported module, line, module level?) for every import of the package's own
    modules, lazy ones included; ``from pkg import sub`` names the submodule where there is one."""
    modules = {module_name(package, p): p for p in package.rglob("*.py")}
    out = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        base_parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(base_parts[:len(base_parts) - node.level + 1] + ([node.module] if node.module else []))
                elif (node.module or "").split(".")[0] == package.name:
                    base = node.module
                else:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    out.append((name, sub if sub in modules else base, node.lineno, id(node) in top))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package.name:
                        out.append((name, alias.name, node.lineno, id(node) in top))
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(package: Path) -> list[str]:
    """Every import against the declared order, as 'importer:line imports target (why)'."""
    order = declared_order(package)
    rank = {layer: i for i, layer in enumerate(order)}
    problems = []
    for init in sorted(package.glob("*/__init__.py")):
        layer = init.parent.name
        if layer not in rank:
            problems.append(f"{layer}: a subpackage missing from the root docstring's 'Layers:' line")
            continue
        allowed = declared_imports(init)
        if allowed is not None and allowed != order[:rank[layer]]:
            problems.append(f"{layer}: its docstring says 'May import: {', '.join(allowed)}', the layers before "
                            f"it are {', '.join(order[:rank[layer]])}")
    for importer, target, line, _ in imports(package):
        a, b = layer_of(importer), layer_of(target)
        if a is None or b is None or b.startswith("_") or b == "__version__" or a == b:
            continue
        if b not in rank or a not in rank:
            problems.append(f"{importer}:{line} imports {target} (a layer not in the order)")
        elif rank[b] > rank[a]:
            problems.append(f"{importer}:{line} imports {target} ({b} is above {a})")
    return problems


def cycles(package: Path) -> list[list[str]]:
    """Import circles among modules (every import, lazy ones too), as lists of module names."""
    graph: dict[str, set[str]] = {}
    for importer, target, _, _ in imports(package):
        if target != importer:
            graph.setdefault(importer, set()).add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_every_import_follows_the_layer_order():
    assert violations(PACKAGE) == []


def test_no_import_circle():
    assert cycles(PACKAGE) == []


def test_every_subpackage_says_what_it_holds():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split("\n\n")[0]) > 40, f"{init}: the docstring's first paragraph says little"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def tiny(tmp_path):
    """A two-layer package, 'low' below 'high', that the checks must pass."""
    return _write(tmp_path / "pkg", {
        "__init__.py": '"""Tiny.\n\nLayers: low, high.\n"""\n',
        "low/__init__.py": '"""Low.\n\nMay import: nothing.\n"""\n',
        "low/a.py": "X = 1\n",
        "high/__init__.py": '"""High.\n\nMay import: low.\n"""\n',
        "high/b.py": "from ..low.a import X\n",
    })


def test_the_checks_pass_a_package_that_keeps_the_order(tiny):
    assert violations(tiny) == []
    assert cycles(tiny) == []


def test_the_checks_catch_an_upward_import_and_a_circle(tiny):
    (tiny / "low/a.py").write_text("X = 1\n\n\ndef f():\n    from ..high.b import X\n    return X\n")
    problems = violations(tiny)
    assert any("pkg.low.a:5 imports pkg.high.b (high is above low)" in p for p in problems)
    assert cycles(tiny) == [["pkg.high.b", "pkg.low.a"]]


def test_the_checks_catch_a_docstring_that_disagrees_with_the_order(tiny):
    (tiny / "high/__init__.py").write_text('"""High.\n\nMay import: low, other.\n"""\n')
    assert any("high: its docstring says" in p for p in violations(tiny))
