"""The shape of the code, checked: no import cycles, no borrowed private names, the layers.

Every module of `station`, `drivers`, `sim` and `procedures` is parsed (never imported) and every
import statement in it is read, at module level, inside functions and under `TYPE_CHECKING`
alike: an import that only runs later still ties the two modules together. `from pkg import mod`
counts as an import of `pkg.mod` when `mod` is a module. Importing `a.b.c` does not add edges to
the packages `a` and `a.b` (Python runs their `__init__` first, but a package whose `__init__`
imports its own submodules is not a cycle).

The layers (see each package's `__init__` docstring): records <- authoring <- config; the engine
may import authoring, records and bench; storage imports records and the fault points; tofupilot
imports storage and records; the CLI imports everything and nothing imports it; `drivers` never
imports `station`.

The last test keeps every file git tracks honest about the documents it points at.
"""

from __future__ import annotations

import ast
import re
import subprocess
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("station", "drivers", "sim", "procedures")


@dataclass(frozen=True)
class Edge:
    """One import statement of one module of ours naming another module of ours."""

    importer: str
    target: str
    line: int
    statement: str  # the source text, for messages

    def where(self) -> str:
        return f"{_display(self.importer)}:{self.line}"


@dataclass(frozen=True)
class PrivateUse:
    """A `_private` name of another module reached from `importer` (import or attribute)."""

    importer: str
    owner: str  # the module the name belongs to
    name: str
    line: int

    def __str__(self) -> str:
        where = f"{_display(self.importer)}:{self.line}"
        return f"{where}: {self.importer} uses {self.owner}.{self.name}"


@dataclass
class ModuleImports:
    edges: list[Edge] = field(default_factory=list)
    private: list[PrivateUse] = field(default_factory=list)


# -- reading the code -------------------------------------------------------------------------


@cache
def _modules() -> dict[str, Path]:
    """Every module of ours by dotted name (`pkg/__init__.py` is `pkg`)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _display(module: str) -> str:
    path = _modules().get(module)
    return str(path.relative_to(ROOT)) if path else module


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _known_prefix(dotted: str) -> str | None:
    """The longest prefix of `dotted` that is a module of ours (None: not ours)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in _modules():
            return candidate
    return None


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name `from <...> import` refers to, relative imports included."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _private_module_use(importer: str, target: str, line: int) -> PrivateUse | None:
    """`pkg._mod` may be imported from inside `pkg` only."""
    parts = target.split(".")
    for index, part in enumerate(parts):
        owner = ".".join(parts[:index])
        if index and _is_private(part) and not _within(importer, owner):
            return PrivateUse(importer, owner, part, line)
    return None


def _dotted(node: ast.expr) -> list[str] | None:
    """['a', 'b', 'c'] for the expression `a.b.c`; None for anything else."""
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    names.append(node.id)
    return names[::-1]


@cache
def _imports_of(module: str) -> ModuleImports:
    path = _modules()[module]
    return scan(module, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py")


def scan(module: str, source: str, *, is_package: bool = False) -> ModuleImports:
    """The imports of ours, and the private names of ours, that `source` (module `module`) uses."""
    tree = ast.parse(source)
    found = ModuleImports()
    bound: dict[str, str] = {}  # local name -> module of ours it is bound to

    seen: set[tuple[str, int]] = set()

    def edge(target: str, node: ast.stmt | ast.expr) -> None:
        if target != module and (target, node.lineno) not in seen:
            seen.add((target, node.lineno))
            statement = ast.get_source_segment(source, node) or ""
            found.edges.append(Edge(module, target, node.lineno, " ".join(statement.split())))
            private = _private_module_use(module, target, node.lineno)
            if private is not None:
                found.private.append(private)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known_prefix(alias.name)
                if target is None:
                    continue
                edge(target, node)
                if alias.asname and target == alias.name:
                    bound[alias.asname] = target
                elif not alias.asname:
                    top = alias.name.split(".")[0]
                    if top in _modules():
                        bound[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, is_package, node)
            owner = _known_prefix(base)
            if owner is None:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in _modules():
                    edge(submodule, node)
                    bound[alias.asname or alias.name] = submodule
                    continue
                edge(owner, node)
                if _is_private(alias.name) and owner != module:
                    found.private.append(PrivateUse(module, owner, alias.name, node.lineno))
        elif (  # importlib.import_module("station.x") with a literal name
            isinstance(node, ast.Call)
            and _dotted(node.func) in (["importlib", "import_module"], ["import_module"])
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            target = _known_prefix(node.args[0].value)
            if target is not None:
                edge(target, node)

    # `mod._name` and `getattr(mod, "_name")` where `mod` is bound to another module of ours.
    for node in ast.walk(tree):
        chain: list[str] | None = None
        if isinstance(node, ast.Attribute):
            chain = _dotted(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            head = _dotted(node.args[0])
            chain = [*head, node.args[1].value] if head else None
        if not chain or chain[0] not in bound:
            continue
        owner = bound[chain[0]]
        rest = chain[1:]
        while rest and f"{owner}.{rest[0]}" in _modules():
            owner, rest = f"{owner}.{rest[0]}", rest[1:]
        if rest and _is_private(rest[0]) and owner != module:
            found.private.append(PrivateUse(module, owner, rest[0], node.lineno))
    return found


def _edges() -> Iterator[Edge]:
    for module in _modules():
        yield from _imports_of(module).edges


def _graph() -> dict[str, dict[str, Edge]]:
    """importer -> {target: the first statement importing it}."""
    graph: dict[str, dict[str, Edge]] = {module: {} for module in _modules()}
    for e in _edges():
        graph[e.importer].setdefault(e.target, e)
    return graph


# -- cycles -----------------------------------------------------------------------------------


def _strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def _shortest_cycle(graph: dict[str, dict[str, Edge]], members: list[str]) -> list[Edge]:
    """A shortest cycle through the first member, staying inside the component."""
    inside = set(members)
    start = members[0]
    came_from: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, e in sorted(graph[node].items()):
                if target not in inside:
                    continue
                if target == start:
                    path = [e]
                    while path[0].importer != start:
                        path.insert(0, came_from[path[0].importer])
                    return path
                if target not in came_from:
                    came_from[target] = e
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def find_cycles() -> list[str]:
    """Each import cycle, readably: `a (file:line: statement) -> b ... -> a`."""
    graph = _graph()
    reports = []
    for members in _strongly_connected(graph):
        cycle = _shortest_cycle(graph, members)
        steps = [f"  {e.importer} ({e.where()}: {e.statement})\n    -> {e.target}" for e in cycle]
        also = (
            f" (all of {', '.join(members)} are in one cycle)" if len(members) > len(cycle) else ""
        )
        reports.append("import cycle" + also + ":\n" + "\n".join(steps))
    return reports


def test_cycle_finder_reports_a_cycle_readably():
    """The checker itself: two modules importing each other, one of them inside a function."""
    a = Edge("station", "station.engine", 3, "import station.engine")
    b = Edge("station.engine", "station", 9, "from station import x")
    graph = {"station": {"station.engine": a}, "station.engine": {"station": b}, "sim": {}}
    assert _strongly_connected(graph) == [["station", "station.engine"]]
    assert _shortest_cycle(graph, ["station", "station.engine"]) == [a, b]


def test_no_import_cycles():
    cycles = find_cycles()
    assert not cycles, "\n\n".join(cycles)


# -- private names ----------------------------------------------------------------------------


def test_no_module_uses_another_modules_private_names():
    uses = [str(use) for module in _modules() for use in _imports_of(module).private]
    assert not uses, (
        "a `_private` name belongs to its module; make it public where it is shared:\n"
        + "\n".join(sorted(set(uses)))
    )


def test_private_name_check_is_precise():
    """Imports (relative ones too), attribute reads and getattr of another module's `_name` are
    found; dunders, names of objects that are not modules, and private submodules used from
    inside their own package are not."""
    source = textwrap.dedent("""
        import station.engine.runner as r
        from station.records import model
        from station.authoring.helpers import _safe_repr, Dut
        from . import _package_private
        from .worker import __doc__

        def f(self):
            from station.engine import worker
            worker._POLL_S, r._RUN_IF_FALSE, getattr(model, "_adapter"), model.__name__
            self._private, _safe_repr, Dut._x
            import station
            station.records.model._scrub
            importlib.import_module("station.cli.main")
    """)
    uses = scan("station.engine.fake", source).private
    assert sorted((u.owner, u.name, u.line) for u in uses) == [
        ("station.authoring.helpers", "_safe_repr", 4),
        ("station.engine", "_package_private", 5),
        ("station.engine.runner", "_RUN_IF_FALSE", 10),
        ("station.engine.worker", "_POLL_S", 10),
        ("station.records.model", "_adapter", 10),
        ("station.records.model", "_scrub", 13),
    ]
    assert ("station.cli.main", 14) in {(e.target, e.line) for e in scan("x", source).edges}
    assert _private_module_use("station.cli.main", "station.engine._impl", 1) is not None
    assert _private_module_use("station.engine.runner", "station.engine._impl", 1) is None


# -- layers -----------------------------------------------------------------------------------


def _violations(
    importers: Iterable[str], allowed: Iterable[str] = (), forbidden: Iterable[str] = ()
) -> list[str]:
    """Imports by `importers` of our modules outside `allowed` (when given) or inside `forbidden`.

    `allowed`/`forbidden` are packages or modules: `station.records` covers its submodules.
    """
    allowed, forbidden = list(allowed), list(forbidden)
    chosen = set(importers)
    bad = []
    for e in _edges():
        if e.importer not in chosen:
            continue
        if any(_within(e.target, f) for f in forbidden) or (
            allowed and not any(_within(e.target, a) for a in allowed)
        ):
            bad.append(f"{e.where()}: {e.importer} imports {e.target} ({e.statement})")
    return sorted(bad)


def _in(package: str) -> list[str]:
    return [module for module in _modules() if _within(module, package)]


# What each layer of `station` may import of ours, besides itself (as its `__init__` says).
MAY_IMPORT = {
    "station.records": [],
    "station.authoring": ["station.records"],
    "station.config": ["station.authoring", "station.records"],
    "station.bench": ["drivers", "station.records"],
    "station.engine": ["station.authoring", "station.records", "station.bench"],
    "station.storage": ["station.records", "station.testing.faultpoints"],
    "station.tofupilot": ["station.storage", "station.records", "station.testing.faultpoints"],
    "station.testing": ["station.records", "station.authoring", "station.config", "station.engine"],
    "station.web": ["station.records", "station.config", "station.line", "station.tofupilot"],
    "station.line": [
        "station.records",
        "station.authoring",
        "station.config",
        "station.bench",
        "station.engine",
        "station.storage",
        "station.tofupilot",
        "station.testing",
    ],
    "station.cli": ["station", "drivers", "sim"],
}


@pytest.mark.parametrize("layer", list(MAY_IMPORT))
def test_each_layer_imports_only_the_layers_below_it(layer):
    bad = _violations(_in(layer), allowed=[layer, *MAY_IMPORT[layer]])
    assert not bad, f"{layer} may import only {MAY_IMPORT[layer] or 'itself'}:\n" + "\n".join(bad)


def test_every_station_layer_has_a_rule():
    """A new sub-package of `station` must say here (and in its `__init__`) what it may import."""
    layers = {".".join(m.split(".")[:2]) for m in _in("station") if m.count(".") >= 1}
    facade = {"station.__main__"}  # `python -m station`: calls the CLI
    assert layers - facade <= set(MAY_IMPORT), sorted(layers - facade - set(MAY_IMPORT))


LAYER_RULES = {
    "drivers never imports station or sim": dict(
        importers=_in("drivers"), allowed=["drivers"], forbidden=["station", "sim"]
    ),
    "station.engine never imports storage, tofupilot or the CLI": dict(
        importers=_in("station.engine"),
        forbidden=["station.storage", "station.tofupilot", "station.cli"],
    ),
    "nothing but station.cli imports station.cli (and `python -m station`)": dict(
        importers=[
            m for m in _modules() if not _within(m, "station.cli") and m != "station.__main__"
        ],
        forbidden=["station.cli"],
    ),
    "station imports sim only from station.cli (the transport seam for --sim)": dict(
        importers=[m for m in _in("station") if not _within(m, "station.cli")],
        forbidden=["sim"],
    ),
    "the station package itself re-exports the public authoring API only": dict(
        importers=["station"], allowed=["station.authoring", "station.records", "drivers.errors"]
    ),
    "procedures import only the public `station` API": dict(
        importers=_in("procedures"),
        forbidden=[m for m in _in("station") if m != "station"] + ["sim", "drivers"],
    ),
    "station.testing.faultpoints imports only station.records (storage calls it)": dict(
        importers=["station.testing.faultpoints"], allowed=["station.records"]
    ),
    "nothing but station.cli imports station.web (the operator page)": dict(
        importers=[
            m for m in _modules() if not any(_within(m, p) for p in ("station.web", "station.cli"))
        ],
        forbidden=["station.web"],
    ),
    "only the testing package's lazy export imports the harness": dict(
        importers=[m for m in _modules() if m != "station.testing"],
        forbidden=["station.testing.harness"],
    ),
}


@pytest.mark.parametrize("rule", list(LAYER_RULES))
def test_layering(rule):
    bad = _violations(**LAYER_RULES[rule])
    assert not bad, f"{rule}:\n" + "\n".join(bad)


def test_the_layer_rules_see_function_level_and_type_checking_imports():
    """Imports inside functions and under `if TYPE_CHECKING:` are edges too."""
    path = _modules()["station.testing"]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested = {
        node.lineno
        for outer in ast.walk(tree)
        if isinstance(outer, ast.FunctionDef | ast.If)
        for node in ast.walk(outer)
        if isinstance(node, ast.ImportFrom)
    }
    seen = {e.line for e in _imports_of("station.testing").edges}
    assert nested and nested <= seen


# -- package docstrings -----------------------------------------------------------------------

_MIN_WORDS = 15
_CODE_LINE = re.compile(r"^\s*(?:>>>\s*)?(?:from\s+\S+\s+)?import\s", re.MULTILINE)


def _packages() -> list[str]:
    return [m for m, path in _modules().items() if path.name == "__init__.py" and m != "procedures"]


@pytest.mark.parametrize("package", _packages())
def test_every_package_says_what_it_owns(package):
    """PEP 257 shape: a summary line, then at least one paragraph; station and drivers packages
    also say, in prose, what they may import."""
    path = _modules()[package]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    where = path.relative_to(ROOT)
    summary, _, body = doc.partition("\n\n")
    assert summary.strip() and body.strip() and len(doc.split()) >= _MIN_WORDS, (
        f"{where}: the package docstring must be a summary line and at least one paragraph "
        f"saying what the package owns; it is {doc!r}"
    )
    if package.split(".")[0] in ("station", "drivers"):
        prose = _CODE_LINE.sub("", doc)
        assert re.search(r"\bimport", prose, re.IGNORECASE), (
            f"{where}: the package docstring must say what the package may import"
        )


# -- references to documents ------------------------------------------------------------------

# Documents this repository never held; written so this file does not match them itself.
_ABSENT_DOCS = re.compile(r"\b(?:DESIG[N]|NOTE[S])\b(?:\.md)?")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_MD_PATH = re.compile(r"(?<![\w./-])([\w][\w./-]*\.md)\b")


def _tracked_text_files() -> Iterator[tuple[Path, str]]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout, so there is no list of tracked files: {exc}")
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree, not committed yet
            continue
        try:
            yield path, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary


def missing_document_references(files: Iterable[tuple[Path, str]]) -> list[str]:
    """`file:line: 'name'` for each mention of a document the repository does not contain."""
    found = []
    for path, text in files:
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for number, line in enumerate(text.splitlines(), 1):
            line = _URL.sub(" ", line)
            for match in _ABSENT_DOCS.finditer(line):
                name = match.group(0)
                if not (ROOT / (name if name.endswith(".md") else name + ".md")).is_file():
                    found.append(f"{where}:{number}: {name!r} is not in the repository")
            for match in _MD_PATH.finditer(line):
                name = match.group(1).rstrip(".")
                if _ABSENT_DOCS.fullmatch(name):
                    continue  # already reported above
                if not ((ROOT / name).is_file() or (path.parent / name).is_file()):
                    found.append(f"{where}:{number}: {name!r} does not exist")
    return found


def test_document_reference_check_is_precise(tmp_path):
    """Names that only look like documents (station.yaml, *.md globs, URLs) are not flagged."""
    design, notes, missing = "DESIG" + "N" + ".md", "NOTE" + "S", "MISSING" + ".md"
    sample = tmp_path / "sample.py"
    text = (
        "# station.yaml, run.json, '*.md', https://example.com/GUIDE.md, README.md\n"
        "CONFIG_NOTES = 1  # DESIGN_EXAMPLE\n"
        f"# see {design} §3 and the form {notes} recommends, and {missing}\n"
    )
    found = missing_document_references([(sample, text)])
    assert [entry.split(": ", 1)[1] for entry in found] == [
        f"{design!r} is not in the repository",
        f"{notes!r} is not in the repository",
        f"{missing!r} does not exist",
    ]


def test_no_file_refers_to_a_document_the_repository_does_not_contain():
    found = missing_document_references(_tracked_text_files())
    assert not found, (
        "these refer to documents the repository does not hold; point at a document it has "
        "(docs/architecture.md for the design) or state the fact:\n" + "\n".join(found)
    )
