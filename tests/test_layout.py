"""The package's layout: a library wing and an experiment wing, and no import circles.

Every module of the package, its kernels included, is read with ``ast`` (nothing of it is
imported but the package itself, to find its files). Every import statement counts, those
inside functions too: an import deferred into a function still makes two modules depend on
each other, it only hides the circle until the function runs.
"""

import ast
import importlib.util
from pathlib import Path

import sparse_tickets

PACKAGE = "sparse_tickets"
# The names at the package's root, by wing: the library a user imports, and the experiment
# the command runs. A new name must join one of them.
LIBRARY = {"__init__", "functional", "files", "progress", "nn", "ops", "compact", "optim",
           "pruning", "models", "data", "kernels"}
EXPERIMENT = {"__main__", "cli", "lottery"}
ROOT_MODULES = {"__init__", "__main__", "cli", "functional", "files", "progress"}
def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name; a package is its ``__init__``."""
    roots = {PACKAGE: Path(sparse_tickets.__file__).parent}
    kernels = importlib.util.find_spec(f"{PACKAGE}.kernels")
    if kernels is not None:  # installed from the repository's kernels/ folder
        roots[f"{PACKAGE}.kernels"] = Path(kernels.origin).parent
    found = {}
    for prefix, root in roots.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if not all((root.joinpath(*parts[:depth]) / "__init__.py").is_file()
                       for depth in range(1, len(parts))):
                continue  # in a folder that is not a package: a script, not a module
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def _import_statements(tree: ast.Module):
    """Each import statement of ``tree``, at any depth (inside functions too)."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that module ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_statements(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            source = node.module
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            # `from a import b` imports the module a.b when there is one, else a name of a.
            targets = [f"{source}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:  # the deepest module the name is in
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the package it imports."""
    files = module_files()
    modules = set(files)
    return {name: imports_of(name, path, modules) for name, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, round a circle (the strongly connected
    components of more than one module, by Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def wing(module: str) -> str:
    """The name at the package's root that ``module`` lives under (``__init__`` for the root)."""
    return module.split(".")[1] if "." in module else "__init__"


def test_no_modules_of_the_package_import_each_other_round_a_circle():
    assert circles(import_graph()) == []


def test_the_library_never_imports_the_experiment():
    crossings = sorted(f"{module} imports {target}"
                       for module, targets in import_graph().items() if wing(module) in LIBRARY
                       for target in targets if wing(target) in EXPERIMENT)
    assert crossings == []


def test_every_name_at_the_root_is_in_one_wing():
    tops = {wing(module) for module in import_graph()}
    assert tops - LIBRARY - EXPERIMENT == set()
    assert LIBRARY & EXPERIMENT == set()


def test_the_root_holds_only_the_command_and_the_library_modules_beside_the_subpackages():
    root = Path(sparse_tickets.__file__).parent
    assert {path.stem for path in root.glob("*.py")} - ROOT_MODULES == set()
