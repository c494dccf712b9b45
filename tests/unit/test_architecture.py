"""The shape promised in docs/architecture.md: no import circle anywhere in kubectl_caas (imports
inside functions count; those only for type checkers do not), no module over 400 lines, and no
module but plugins.py asking which plugin it serves."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[2] / "kubectl_caas"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str) -> Set[str]:
    """The kubectl_caas modules `name` imports when it runs, wherever the import statement is."""
    tree = ast.parse(MODULES[name].read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found: Set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(t for t in targets if t in MODULES and t != name)
    # `from kubectl_caas.cli import common` names the module, not the package's own code.
    return found - {"kubectl_caas", "kubectl_caas.cli"}


def test_no_import_circle_anywhere_in_the_package():
    graph = {name: imports_of(name) for name in MODULES}
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: List[List[str]] = []

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_passes_400_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {n: lines for n, lines in long.items() if lines > MAX_LINES} == {}


def test_only_the_plugin_records_ask_which_plugin_this_is():
    offenders = []
    for name, path in MODULES.items():
        if name == "kubectl_caas.plugins":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if 'plugin == "' in line or "plugin == '" in line or '"openstack": ' in line and '"iam"' in line:
                offenders.append(f"{path.name}:{number}")
    assert offenders == []
