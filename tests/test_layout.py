"""The package's layout: a library wing and an experiment wing, packages that import one way,
and no import circles, between modules or between packages.

Every module of the package, its kernels included, is read with ``ast`` (nothing of it is
imported but the package itself, to find its files). Every import statement counts, those
inside functions too: an import deferred into a function still makes two modules depend on
each other, it only hides the circle until the function runs.
"""

import ast
import functools
import importlib.util
from pathlib import Path

import sparse_tickets

PACKAGE = "sparse_tickets"
# The names at the package's root, by wing: the library a user imports, and the experiment
# the command runs. A new name must join one of them.
LIBRARY = {
    "__init__",
    "functional",
    "files",
    "progress",
    "settings",
    "conv_geometry",
    "tensor_cache",
    "nn",
    "ops",
    "formats",
    "compact",
    "optim",
    "pruning",
    "models",
    "data",
    "kernels",
}
EXPERIMENT = {"__main__", "cli", "lottery"}
ROOT_MODULES = {
    "__init__",
    "__main__",
    "cli",
    "functional",
    "files",
    "progress",
    "settings",
    "conv_geometry",
    "tensor_cache",
}
# The one-way order of the names at the root (subpackages and modules), lowest first: each
# imports only names of earlier levels, never one of its own level. The package's docstring
# (sparse_tickets/__init__.py) says what each level holds; a new name must join a level.
LEVELS = (
    {"settings", "files", "progress", "conv_geometry", "tensor_cache"},  # import nothing
    {"kernels"},
    {"formats"},  # the compact index the backends take
    {"ops"},
    {"functional"},
    {"compact"},  # when a layer runs compact, measured on the functional ops
    {"nn"},
    {"optim", "pruning", "models", "data"},
    {"__init__", "lottery"},  # the public API (re-exports only) and the experiment
    {"cli"},
    {"__main__"},
)


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
            if not all(
                (root.joinpath(*parts[:depth]) / "__init__.py").is_file()
                for depth in range(1, len(parts))
            ):
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
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            # `from a import b` imports the module a.b when there is one, else a name of a.
            targets = [f"{source}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:  # the deepest module the name is in
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@functools.cache  # the files do not change while the tests run
def import_graph() -> dict[str, set[str]]:
    """module -> the modules of the package it imports (shared: read, never changed)."""
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


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """name at the root -> the other names at the root that its modules import."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(wing(module), set()).update(
            wing(target) for target in targets if wing(target) != wing(module)
        )
    return packages


def imports_against_the_order(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module by one of another name at the root that is not of a lower
    level than its own, as "module imports module"."""
    level = {name: depth for depth, names in enumerate(LEVELS) for name in names}
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if wing(target) != wing(module) and level[wing(target)] >= level[wing(module)]
    )


def test_no_modules_of_the_package_import_each_other_round_a_circle():
    assert circles(import_graph()) == []


def test_no_packages_import_each_other_round_a_circle():
    assert circles(package_graph(import_graph())) == []


def test_every_import_between_packages_goes_down_the_order():
    assert imports_against_the_order(import_graph()) == []


def test_every_name_at_the_root_has_one_level():
    tops = {wing(module) for module in import_graph()}
    assert tops - set().union(*LEVELS) == set()
    assert sum(len(names) for names in LEVELS) == len(set().union(*LEVELS))


def test_the_order_checks_catch_a_circle_between_packages():
    # nn importing the optimizers, which import nn: the circle and the upward import are named.
    graph = {
        "sparse_tickets.nn.layers": {"sparse_tickets.optim.masked_adam"},
        "sparse_tickets.optim.masked_adam": {"sparse_tickets.nn.layers"},
    }
    assert circles(package_graph(graph)) == [["nn", "optim"]]
    assert imports_against_the_order(graph) == [
        "sparse_tickets.nn.layers imports sparse_tickets.optim.masked_adam"
    ]


def test_the_package_init_only_re_exports():
    # No wiring at import: imports, the docstring, __version__ and __all__, nothing that runs.
    tree = ast.parse((Path(sparse_tickets.__file__)).read_text(encoding="utf-8"))
    others = [
        ast.unparse(node).splitlines()[0]
        for node in tree.body
        if not isinstance(node, (ast.Import, ast.ImportFrom))
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        and not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.value, (ast.Constant, ast.List))
            and getattr(node.targets[0], "id", None) in ("__version__", "__all__")
        )
    ]
    assert others == []


def test_the_library_never_imports_the_experiment():
    crossings = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if wing(module) in LIBRARY
        for target in targets
        if wing(target) in EXPERIMENT
    )
    assert crossings == []


def test_every_name_at_the_root_is_in_one_wing():
    tops = {wing(module) for module in import_graph()}
    assert tops - LIBRARY - EXPERIMENT == set()
    assert LIBRARY & EXPERIMENT == set()


def test_the_root_holds_only_the_command_and_the_library_modules_beside_the_subpackages():
    root = Path(sparse_tickets.__file__).parent
    assert {path.stem for path in root.glob("*.py")} - ROOT_MODULES == set()
