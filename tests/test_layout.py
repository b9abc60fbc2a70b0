"""The layout stays readable: no import cycle among collector's modules (imports inside functions
count too: they only hide a cycle), no module so long that it holds several jobs, and no reliance
on private attributes of aiohttp or aiodocker (they change without notice between releases)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "collector"
MAX_LINES = 400
# Still being split by another engineer; remove a file here once it is under the limit.
TOO_LONG_FOR_NOW = frozenset({
})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(source: str, importer: str, is_package: bool, known: set[str]) -> set[str]:
    """The collector modules `source` imports anywhere in it: at the top, in a function, under
    `if TYPE_CHECKING`. `from package import name` counts as importing package.name when that is a
    module, else as importing the package."""
    found: set[str] = set()
    here = importer if is_package else importer.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in known:
                    found.add(submodule)
                elif base in known:
                    found.add(base)
    found.discard(importer)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported_modules(path.read_text(), name, path.name == "__init__.py", known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as [a, b, ..., a], or [] when there is none (depth-first, three colours)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str]:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target):], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return []

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_the_cycle_finder_sees_an_import_hidden_in_a_function() -> None:
    known = {"collector.a", "collector.b", "collector.pkg", "collector.pkg.c"}
    hidden = "import os\n\ndef f():\n    from collector.b import thing\n    return thing\n"
    assert imported_modules(hidden, "collector.a", False, known) == {"collector.b"}
    relative = "from . import c\nfrom .c import name\nfrom collector.pkg import other\n"
    assert imported_modules(relative, "collector.pkg", True, known) == {"collector.pkg.c"}
    assert imported_modules(relative, "collector.pkg.d", False, known) == {"collector.pkg.c", "collector.pkg"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    assert "collector.config" in graph and "collector.config.loader" in graph  # the walk found the tree
    cycle = find_cycle(graph)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


def test_no_module_is_long_enough_to_hold_several_jobs() -> None:
    lengths = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in modules().values()}
    too_long = {path: count for path, count in lengths.items() if count > MAX_LINES and path not in TOO_LONG_FOR_NOW}
    assert too_long == {}, f"over {MAX_LINES} lines: split them so each module has one job"
    split_already = sorted(path for path in TOO_LONG_FOR_NOW if lengths.get(path, 0) <= MAX_LINES)
    assert split_already == [], "split (or gone): take them off TOO_LONG_FOR_NOW"


# Private attributes of aiohttp and aiodocker that code has reached for (or easily would).
DEPENDENCY_PRIVATES = frozenset({
    "_server", "_sites", "_acquired", "_conns", "_connector", "_connection", "_protocol", "_transport",
    "_query", "_query_json", "_container", "_docker", "_session", "_closed", "_released",
})
# Private-looking but public: namedtuple's API.
PUBLIC_UNDERSCORED = frozenset({"_replace", "_asdict", "_fields", "_make"})
DEPENDENCIES = ("aiohttp", "aiodocker")


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, text) for each `x._name` on an object not our own (not self or cls), and each
    getattr(x, "_name"): of any name in a module that imports aiohttp or aiodocker, else of the
    names of DEPENDENCY_PRIVATES."""
    tree = ast.parse(source)
    uses_dependency = any(
        (isinstance(node, ast.Import) and any(alias.name.split(".")[0] in DEPENDENCIES for alias in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in DEPENDENCIES)
        for node in ast.walk(tree))

    def suspect(name: str) -> bool:
        if not name.startswith("_") or name.startswith("__") or name in PUBLIC_UNDERSCORED:
            return False
        return uses_dependency or name in DEPENDENCY_PRIVATES

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and suspect(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and suspect(node.args[1].value)):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_private_attribute_check_sees_what_it_looks_for() -> None:
    with_aiohttp = "import aiohttp\nsockets = site._server.sockets\nn = len(getattr(pool, '_acquired', ()))\nself._runner = 1\n"
    assert [line for line, _ in private_uses(with_aiohttp)] == [2, 3]
    without = "x = response._container\ny = other._mine\nz = parts._replace(path='')\n"
    assert private_uses(without) == [(1, "response._container")]


def test_no_private_attribute_of_aiohttp_or_aiodocker_is_used() -> None:
    found = {str(path.relative_to(REPO)): uses for path in modules().values() if (uses := private_uses(path.read_text()))}
    assert found == {}, "use the public API, or wrap what it lacks in one small module of ours"
