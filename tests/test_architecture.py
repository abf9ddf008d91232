"""The layer map holds in the code: every import of every module under ``toolkit/cnnkit`` is read with ``ast``.

An import is any ``import``/``from … import`` of a cnnkit module — at module level or inside a function (both
count: a deferred import is still a dependency) — except under ``if TYPE_CHECKING:``, and any string constant
``"cnnkit.x.y:Name"`` or ``"cnnkit.x.y"`` that names a cnnkit module (a lazy load by name). Checked: no module
imports a higher layer, no import cycle between modules, every top-level module and subpackage is in the map,
and ``docs/architecture.md`` lists the same layers as :data:`LAYERS`.

``cnnkit --help`` stays fast: :func:`test_cli_app_imports_nothing_heavy_at_import_time` follows the imports that
run when ``cnnkit.cli.app`` is imported and names the module and line that would pull a heavy library in. Its
run-time counterpart, which imports the app in a fresh interpreter and reads ``sys.modules``, is
``tests/cli/test_cli_foundation.py::test_help_is_fast_and_imports_nothing_heavy``.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolkit" / "cnnkit"
ARCHITECTURE_PAGE = ROOT / "docs" / "architecture.md"

# Low to high. A module may import its own layer and any lower one. Members are the names directly under
# toolkit/cnnkit (subpackages and top-level modules; "__init__" is cnnkit/__init__.py). docs/architecture.md
# lists the same, between its <!-- layers --> markers.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("__init__", "errors", "io", "envinfo", "_deps", "finite", "choices", "stats", "topk", "filekind")),
    ("results", ("results",)),
    ("graph", ("graph",)),
    ("data", ("data",)),
    ("keras", ("keras",)),
    ("runtimes", ("runtimes",)),
    ("checks", ("parity", "evaluate")),
    ("export", ("export",)),
    ("bench", ("bench",)),
    ("verify", ("verify",)),
    ("distributed", ("distributed",)),
    ("quantize", ("quantize",)),
    ("report", ("report",)),
    ("pipeline", ("pipeline",)),
    ("cli", ("cli", "__main__")),
)

# The one result loader names every result schema's class by string ("cnnkit.bench.result:BenchResult") and
# imports it only when a file of that schema is read. Those names reach upward by design — report and compare read
# every schema, and the schemas' classes live in the stages that write them, pipeline included — so the loader's
# string loads are exempt from the layer and cycle rules; each must still name a class that exists.
RESULT_LOADER = "cnnkit.results.load"

# Cycles allowed until they are removed (name -> the modules in it); a listed cycle that is gone fails the test.
ALLOWED_CYCLES: dict[str, frozenset[str]] = {}

# Never imported while `cnnkit --help` runs (top-level package names).
HEAVY = frozenset({"tensorflow", "keras", "tf2onnx", "sklearn", "onnxruntime", "openvino", "ai_edge_litert", "ray",
                   "mlperf_loadgen"})

_LAZY_NAME = re.compile(r"cnnkit(?:\.\w+)+(?::\w+)?")


@dataclasses.dataclass(frozen=True)
class Import:
    """One import in ``source`` (a dotted module name) at ``line``."""

    source: str
    target: str  # a cnnkit module, or a third-party top-level package when ``external``
    line: int
    at_import_time: bool  # False: inside a function that the module does not call while it is imported
    by_string: bool = False  # a lazy load by name, e.g. "cnnkit.bench.result:BenchResult"
    external: bool = False
    attribute: str = ""  # the ``Name`` of a "module:Name" string
    function: str = ""  # the outermost function the import sits in ("" at module level)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


@cache
def modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name, is_package = _module_name(path)
        found[name] = (path, is_package)
    return found


def _resolve(dotted: str) -> str:
    """The longest known module ``dotted`` starts with: ``cnnkit.graph.info.describe_onnx`` -> ``cnnkit.graph.info``."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules():
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[Import] = []
        self._functions: list[str] = []

    def _add(self, target: str, node: ast.AST, **kind: object) -> None:
        function = self._functions[0] if self._functions else ""
        self.found.append(Import(self.module, target, node.lineno, not function, function=function, **kind))

    def _deferring(self, node: ast.AST) -> None:
        self._functions.append(getattr(node, "name", "<lambda>"))
        self.generic_visit(node)
        self._functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _deferring

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # typing only: never runs
            for statement in node.orelse:
                self.visit(statement)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._imported(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module.split(".")
            if not self.is_package:
                package = package[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base.split(".")[0] != "cnnkit":
            self._imported(base, node)
            return
        for alias in node.names:  # a submodule imported by name is an import of that module
            submodule = f"{base}.{alias.name}"
            self._imported(submodule if submodule in modules() else base, node)

    def _imported(self, dotted: str, node: ast.AST) -> None:
        if dotted.split(".")[0] == "cnnkit":
            self._add(_resolve(dotted), node)
        else:
            self._add(dotted.split(".")[0], node, external=True)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _LAZY_NAME.fullmatch(node.value):
            name, _, attribute = node.value.partition(":")
            if name in modules() or attribute:  # "module:Name" always counts, so a stale name fails below
                self._add(name, node, by_string=True, attribute=attribute)


def _called_while_importing(tree: ast.Module) -> set[str]:
    """Functions the module calls by name at module level (``_register()`` in cli/app.py): their imports run then."""
    called = set()
    for statement in tree.body:
        if not isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            called |= {
                n.func.id for n in ast.walk(statement) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            }
    return called


@cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for name, (path, is_package) in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        visitor = _ImportVisitor(name, is_package)
        visitor.visit(tree)
        called = _called_while_importing(tree)
        found += [dataclasses.replace(e, at_import_time=True) if e.function in called else e for e in visitor.found]
    return tuple(found)


def _member(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(module: str) -> int:
    member = _member(module)
    for index, (_, members) in enumerate(LAYERS):
        if member in members:
            return index
    raise AssertionError(f"{module}: {member!r} is in no layer of LAYERS")


def _exempt(edge: Import) -> bool:
    return edge.by_string and edge.source == RESULT_LOADER


def _internal_edges() -> list[Import]:
    return [e for e in imports() if not e.external and e.target != e.source and not _exempt(e)]


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of ``graph`` (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def import_cycles() -> list[frozenset[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for edge in _internal_edges():
        graph[edge.source].add(edge.target)
    return [frozenset(c) for c in strongly_connected(graph) if len(c) > 1]


def _documented_layers() -> list[tuple[str, tuple[str, ...]]]:
    text = ARCHITECTURE_PAGE.read_text(encoding="utf-8")
    block = re.search(r"<!-- layers -->\s*```text\n(.*?)```\s*<!-- /layers -->", text, re.DOTALL)
    assert block, f"{ARCHITECTURE_PAGE}: no ```text block between <!-- layers --> and <!-- /layers -->"
    layers = []
    for line in block.group(1).splitlines():
        if line.strip():
            name, _, members = line.partition(":")
            layers.append((name.strip(), tuple(members.split())))
    return layers


def test_strongly_connected_finds_cycles_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(map(sorted, strongly_connected(graph))) == [["a", "b", "c"], ["d", "e"], ["f"]]


def test_every_subpackage_and_module_is_in_the_layer_map() -> None:
    present = {_member(name) for name in modules()}
    mapped = [member for _, members in LAYERS for member in members]
    assert len(mapped) == len(set(mapped)), f"a member is in two layers: {mapped}"
    assert not present - set(mapped), f"add to LAYERS (and docs/architecture.md): {sorted(present - set(mapped))}"
    assert not set(mapped) - present, f"in LAYERS but gone from toolkit/cnnkit: {sorted(set(mapped) - present)}"


def test_the_architecture_page_lists_the_same_layers() -> None:
    documented, expected = _documented_layers(), [(name, members) for name, members in LAYERS]
    assert documented == expected, f"docs/architecture.md's layer block:\n{documented}\nLAYERS:\n{expected}"


def test_no_module_imports_a_higher_layer() -> None:
    violations = [
        f"{e.source}:{e.line} imports {e.target} ({LAYERS[layer_of(e.target)][0]} is above "
        f"{LAYERS[layer_of(e.source)][0]})"
        for e in _internal_edges()
        if layer_of(e.target) > layer_of(e.source)
    ]
    assert not violations, "\n".join(violations)


def test_no_import_cycles_between_modules() -> None:
    cycles = set(import_cycles())
    unexpected = []
    for cycle in cycles - set(ALLOWED_CYCLES.values()):
        edges = sorted({f"{e.source}:{e.line} -> {e.target}" for e in _internal_edges()
                        if e.source in cycle and e.target in cycle})
        unexpected.append(f"cycle {sorted(cycle)}: " + "; ".join(edges))
    assert not unexpected, "\n".join(unexpected)
    gone = [name for name, cycle in ALLOWED_CYCLES.items() if cycle not in cycles]
    assert not gone, f"the allowed cycle is gone (or changed): delete {gone} from tests/test_architecture.py"


def test_the_result_loader_names_real_classes_and_is_the_only_upward_string() -> None:
    loads = [e for e in imports() if e.by_string and e.attribute]
    assert loads, "no 'module:Name' strings found in the result loader"
    assert {e.source for e in loads} == {RESULT_LOADER}
    for edge in loads:
        assert edge.target in modules(), f"{edge.source}:{edge.line}: no module {edge.target}"
        tree = ast.parse(modules()[edge.target][0].read_text(encoding="utf-8"))
        defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)}
        assert edge.attribute in defined, f"{edge.source}:{edge.line}: {edge.target} defines no {edge.attribute}"


def test_the_import_reader_sees_deferred_strings_and_skips_type_checking() -> None:
    edges = imports()
    # registry builds the OpenVINO runner inside a function; bench.extras names BenchConfig only for typing
    assert any(e.source == "cnnkit.runtimes.registry" and e.target == "cnnkit.runtimes.openvino"
               and not e.at_import_time for e in edges)
    assert not any(e.source == "cnnkit.bench.extras" and e.target == "cnnkit.bench.config" for e in edges)
    assert any(e.source == RESULT_LOADER and e.target == "cnnkit.bench.result" and e.by_string for e in edges)
    assert any(e.source == "cnnkit.graph.summary" and e.target == "cnnkit.graph.info" and e.at_import_time
               for e in edges)


def test_cli_app_imports_nothing_heavy_at_import_time() -> None:
    """The imports that run on ``import cnnkit.cli.app`` (parent packages included) pull in nothing in HEAVY."""
    by_source: dict[str, list[Import]] = {}
    for edge in imports():
        if edge.at_import_time and not edge.by_string:
            by_source.setdefault(edge.source, []).append(edge)
    seen, todo, heavy = set(), ["cnnkit.cli.app"], []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        for edge in by_source.get(module, []):
            if edge.external:
                if edge.target in HEAVY:
                    heavy.append(f"{module}:{edge.line} imports {edge.target} at import time")
            else:
                todo.append(edge.target)
    assert {"cnnkit.cli.bench", "cnnkit.cli.train", "cnnkit.errors"} <= seen  # _register() imports the commands
    assert not heavy, "\n".join(heavy)
