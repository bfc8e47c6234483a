"""The import contract: arrows point down.

Every module of the package is parsed with ``ast`` and its imports make the import graph:
those inside functions count (they run), those inside ``if TYPE_CHECKING:`` are left out (they
never run; only rule (b) reads them). Each module belongs to a unit: a folder
(``aws_ork/checks/``) or a top-level module (``aws_ork/loop.py``); each unit to a layer of
:data:`LAYERS`, bottom first:

0. ``base``: errors, ids, MinionIdTemplate, text bounding and escaping, Salt's key vocabulary
   and fingerprints, atomic files, the trust rule for a directory, the AWS error tally.
   Imports nothing of aws_ork outside ``base/``.
1. the package itself (``__version__``) and ``defaults`` (every tunable); then ``values`` (the
   parser of each option's value) and ``options`` (every option declared once).
2. what the stages share and that knows no stage: ``aws`` (boto3 clients), ``events`` (the
   parsers and their ``Event``), ``memory`` (the durable memories), ``config``.
3. ``runtime``: process plumbing beside the stages (stop flag, systemd, logging, ``-d``, the
   metrics server, which reads :mod:`aws_ork.runtime.stats` records, never the parts).
4. the stages: ``sqs``, ``checks``, ``keys``, ``lifecycle``, ``mirror``.
5. ``decision``: the pure decision over what the checks found and what the key stage did;
   then ``effects`` (what follows a decision: the lifecycle action, the reactor event, and the
   watchers' follow-ups of the key stage); then ``decide`` and ``sweep``, which use them.
6. ``loop``, which runs them.
7. ``app`` (the daemon's wiring) and ``preflight`` (``--check``), the two things the CLI runs,
   and ``flags`` (the command line's flags, which ``docgen`` reads too).
8. ``cli`` and ``docgen`` (writes the docs generated from ``options``); 9. ``__main__``.

The rules:

(a) no cycle, among modules or among units;
(b) no upward import: a module imports from its own unit or a lower layer; imports for the
    type checker alone neither (a part that must name a higher one's type takes a Protocol:
    the metrics read :mod:`aws_ork.runtime.stats` records, never the ``Loop``);
(c) no sideways import between two units of one layer for a helper: a helper that two stages
    need goes down (into ``base/``, say). The sideways imports that are legitimate are in
    :data:`SIDEWAYS`, each with its reason; those that are not, but live in code another
    change is rewriting, are in :data:`KNOWN`, each naming what removes it. An entry of either
    that the code no longer has fails too (so the lists stay true).

The checker is tried on a made-up graph first, so the contract cannot pass vacuously.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import aws_ork

#: bottom first; a unit is a top-level module or folder ("<package>": its own __init__)
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer.split())
    for layer in (
        "base",
        "<package> defaults",
        "values",
        "options",
        "aws events memory config",
        "runtime",
        "sqs checks keys lifecycle mirror",
        "decision",
        "effects",
        "decide sweep",
        "loop",
        "app preflight flags",
        "cli docgen",
        "__main__",
    )
)

#: legitimate sideways imports: (importing unit, imported module) -> why
SIDEWAYS: dict[tuple[str, str], str] = {
    ("checks", "aws_ork.lifecycle.client"): (
        "the instance check asks Auto Scaling whether an instance is Terminating through the "
        "one module that calls Auto Scaling (a client is shared, not copied), and uses its "
        "TERMINATING_STATES and LifecycleError"
    ),
}

#: sideways or upward imports that must go, left to the change that rewrites their code:
#: (importing module, imported module) -> why it is still here
KNOWN: dict[tuple[str, str], str] = {}

Graph = Mapping[str, frozenset[str]]


def package_modules(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    tree: ast.Module, module: str, is_package: bool, known: set[str], type_checking: bool
) -> set[str]:
    """The package's modules that this module's code imports (and with ``type_checking``,
    those its ``if TYPE_CHECKING:`` blocks import too): ``from P import n`` imports ``P.n``
    when that is a module, else ``P`` (a name of it)."""
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: from the package this module is in (or is)
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = here[: len(here) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                name = f"{source}.{alias.name}"
                found.add(name if name in known else source)
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in known and name != module}


def parse(path: Path) -> ast.Module:
    """``ast.parse`` of a module. CPython 3.11's AST constructor keeps one recursion counter
    per interpreter (python/cpython#106905): another thread building AST objects at the same
    moment (3.11's traceback module parses a line to place its carets, e.g. while a Salt
    thread of an earlier test logs an error) makes it raise a spurious SystemError. Asked
    again, the same text parses."""
    text = path.read_text(encoding="utf-8")
    for _ in range(4):
        try:
            return ast.parse(text, str(path))
        except SystemError:
            continue
    return ast.parse(text, str(path))


def import_graph(root: Path, type_checking: bool = False) -> dict[str, frozenset[str]]:
    """module -> the package's modules it imports (when it runs; or for the type checker)."""
    modules = package_modules(root)
    known = set(modules)
    graph = {}
    for module, path in modules.items():
        tree = parse(path)
        is_package = path.name == "__init__.py"
        graph[module] = frozenset(_imports(tree, module, is_package, known, type_checking))
    return graph


def unit_of(module: str) -> str:
    """``aws_ork.checks.ec2`` -> ``checks``; ``aws_ork.loop`` -> ``loop``; the package's own
    ``__init__`` -> ``<package>``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<package>"


def cycles(graph: Graph) -> list[list[str]]:
    """Every strongly connected set of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1 or node in graph.get(node, ()):
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(
    graph: Graph,
    layers: tuple[frozenset[str], ...],
    sideways: Mapping[tuple[str, str], str],
    known: Mapping[tuple[str, str], str],
    *,
    cycles_too: bool = True,
) -> list[str]:
    """What breaks the contract (rules (a) to (c) of the module docstring; without
    ``cycles_too``, (b) and (c) only), one line each."""
    layer_of = {unit: n for n, layer in enumerate(layers) for unit in layer}
    problems: list[str] = []
    for unit in sorted({unit_of(m) for m in graph} - set(layer_of)):
        problems.append(f"unit {unit} is in no layer: add it to LAYERS")
    units: dict[str, set[str]] = {}
    used: set[tuple[str, str]] = set()
    for module, targets in sorted(graph.items()):
        src = unit_of(module)
        for target in sorted(targets):
            dst = unit_of(target)
            if src == dst:
                continue
            units.setdefault(src, set()).add(dst)
            if src not in layer_of or dst not in layer_of:
                continue
            if (module, target) in known:
                used.add((module, target))
                continue
            if layer_of[dst] > layer_of[src]:
                problems.append(f"upward: {module} -> {target} ({src} is below {dst})")
            elif layer_of[dst] == layer_of[src]:
                if (src, target) in sideways:
                    used.add((src, target))
                else:
                    problems.append(f"sideways: {module} -> {target} ({src} and {dst} are peers)")
    if cycles_too:
        for cycle in cycles(graph):
            problems.append(f"cycle of modules: {' -> '.join(cycle)}")
        for cycle in cycles({unit: frozenset(dsts) for unit, dsts in units.items()}):
            problems.append(f"cycle of units: {' -> '.join(cycle)}")
    for entry in sorted((set(sideways) | set(known)) - used):
        problems.append(
            f"listed but not in the code any more (remove it): {entry[0]} -> {entry[1]}"
        )
    return problems


# --- the checker, on a made-up graph ---


def test_the_checker_finds_a_cycle_an_upward_and_a_sideways_import_and_a_stale_entry():
    layers = (frozenset({"low"}), frozenset({"left", "right"}), frozenset({"top"}))
    graph = {
        "p.low": frozenset({"p.top"}),  # upward, and so a cycle low -> top -> right -> low
        "p.left.a": frozenset({"p.left.b", "p.right"}),  # sideways; a cycle inside left
        "p.left.b": frozenset({"p.left.a"}),
        "p.right": frozenset({"p.low"}),
        "p.top": frozenset({"p.right"}),
    }
    assert violations(graph, layers, {}, {("p.top", "p.gone"): "fixed since"}) == [
        "sideways: p.left.a -> p.right (left and right are peers)",
        "upward: p.low -> p.top (low is below top)",
        "cycle of modules: p.low -> p.right -> p.top",
        "cycle of modules: p.left.a -> p.left.b",
        "cycle of units: low -> right -> top",
        "listed but not in the code any more (remove it): p.top -> p.gone",
    ]
    # listed, the sideways and the upward import pass; the cycles never do
    assert violations(graph, layers, {("left", "p.right"): "why"}, {("p.low", "p.top"): "why"}) == [
        "cycle of modules: p.low -> p.right -> p.top",
        "cycle of modules: p.left.a -> p.left.b",
        "cycle of units: low -> right -> top",
    ]
    tidy = {**graph, "p.low": frozenset(), "p.left.b": frozenset({"p.low"})}
    assert violations(tidy, layers, {("left", "p.right"): "why"}, {}) == []
    # a unit outside every layer is refused, not passed over
    assert violations({"p.new": frozenset()}, layers, {}, {}) == [
        "unit new is in no layer: add it to LAYERS"
    ]


def test_the_parser_reads_imports_as_python_runs_them(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "low.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from pkg.sub.b import x\n")
    (root / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from pkg import top\nelse:\n    import pkg.low\n"
        "def later():\n    from ..sub import x\n"
    )
    (root / "sub" / "b.py").write_text("x = 1\n")
    (root / "top.py").write_text("from pkg.sub import a, x\n")
    assert import_graph(root) == {
        "pkg": frozenset(),
        "pkg.low": frozenset(),
        "pkg.sub": frozenset({"pkg.sub.b"}),
        "pkg.sub.a": frozenset({"pkg.sub.b", "pkg.low", "pkg.sub"}),
        "pkg.sub.b": frozenset(),
        "pkg.top": frozenset({"pkg.sub.a", "pkg.sub"}),
    }
    assert import_graph(root, type_checking=True)["pkg.sub.a"] == {
        "pkg.sub.b",
        "pkg.low",
        "pkg.sub",
        "pkg.top",
    }


# --- the package ---


def test_arrows_point_down():
    graph = import_graph(Path(aws_ork.__file__).parent)
    assert len(graph) > 50 and sum(map(len, graph.values())) > 150  # the whole package read
    assert violations(graph, LAYERS, SIDEWAYS, KNOWN) == []


def test_imports_for_the_type_checker_do_not_run_up_either():
    """A part that must name a higher one's type takes a Protocol instead (the metrics read
    runtime/stats records, not the Loop); such imports never run, so they may close a cycle."""
    graph = import_graph(Path(aws_ork.__file__).parent, type_checking=True)
    assert violations(graph, LAYERS, SIDEWAYS, KNOWN, cycles_too=False) == []


def test_base_imports_nothing_of_aws_ork_above_it():
    graph = import_graph(Path(aws_ork.__file__).parent)
    above = {
        f"{module} -> {target}"
        for module, targets in graph.items()
        if unit_of(module) == "base"
        for target in targets
        if unit_of(target) != "base"
    }
    assert above == set()


def main() -> int:
    """``python -m tests.test_layers`` (the lint env, which has no pytest): the checker on
    the made-up graph, then the package; each problem on a line, exit 1 when there is one."""
    test_the_checker_finds_a_cycle_an_upward_and_a_sideways_import_and_a_stale_entry()
    root = Path(aws_ork.__file__).parent
    problems = violations(import_graph(root), LAYERS, SIDEWAYS, KNOWN) + [
        f"type checker: {problem}"
        for problem in violations(
            import_graph(root, type_checking=True), LAYERS, SIDEWAYS, KNOWN, cycles_too=False
        )
    ]
    for problem in problems:
        print(f"import contract: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
