"""The layer table of docs/architecture.md, checked against the imports of every module in ivr/.

Every ``import`` and ``from ... import`` is read with ``ast``, including those inside
functions (an import done late to dodge a cycle is still a dependency). Imports under
``if TYPE_CHECKING:`` are left out: they never run, so they load nothing and cannot form an
import cycle; they let a lower layer annotate what an upper layer hands it (the campaign
dialler is given the worker). A unit is a package
under ``ivr/`` (``ivr.call``) or a top-level module (``ivr.simulate``); a unit may import
only units of lower layers. Strict layers cannot form a cycle; the cycle check is there to
name one clearly when the table is edited to allow it.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IVR = ROOT / "ivr"
DOC = ROOT / "docs" / "architecture.md"


def layers_from_doc(text: str) -> dict[str, int]:
    """``layer N: ivr.a ivr.b`` lines of the doc's ``layers`` block: unit -> N."""
    block = re.search(r"```text\n(# layers.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```text block starting with '# layers'"
    out: dict[str, int] = {}
    for line in block.group(1).splitlines():
        m = re.match(r"\s*layer\s+(\d+):\s*(.+?)\s*(?:#.*)?$", line)
        if m:
            for unit in m.group(2).split():
                assert unit not in out, f"{unit} is listed twice"
                out[unit] = int(m.group(1))
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported ivr module, line) for every import in the file, wherever it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    skip = type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            found += [(f"{target}.{a.name}", node.lineno) for a in node.names]  # from pkg import module
    return [(t, line) for t, line in found if t == "ivr" or t.startswith("ivr.")]


def type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the nodes inside ``if TYPE_CHECKING:`` blocks of ``tree``."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for stmt in node.body:
                inside.update(id(n) for n in ast.walk(stmt))
    return inside


def dependencies() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> ["file:line", ...]."""
    modules = {module_name(p): p for p in IVR.rglob("*.py")}
    deps: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for module, path in modules.items():
        for target, line in imports_of(path, module):
            if target not in modules:
                continue  # "from ivr.x import name": the module ivr.x is counted already
            a, b = unit_of(module), unit_of(target)
            if a != b:
                deps[a][b].append(f"{path.relative_to(ROOT)}:{line}")
    return deps


def test_every_unit_of_ivr_has_a_layer_in_the_doc():
    layers = layers_from_doc(DOC.read_text(encoding="utf-8"))
    units = {unit_of(module_name(p)) for p in IVR.rglob("*.py")}
    assert sorted(units - set(layers)) == [], "add these to the layer table of docs/architecture.md"
    assert sorted(set(layers) - units) == [], "the layer table names units that do not exist"


def test_each_layer_imports_only_the_layers_below_it():
    layers = layers_from_doc(DOC.read_text(encoding="utf-8"))
    wrong = [f"{where}: {a} (layer {layers[a]}) imports {b} (layer {layers[b]})"
             for a, targets in dependencies().items() for b, wheres in targets.items()
             if layers.get(b, 99) >= layers.get(a, -1) for where in wheres]
    assert wrong == []


def test_no_import_cycle_between_units():
    deps = dependencies()
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(unit: str, path: list[str]) -> list[str] | None:
        seen[unit] = 1
        for nxt in sorted(deps.get(unit, {})):
            if seen.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt] if nxt in path else [unit, nxt]
            if nxt not in seen and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        seen[unit] = 2
        return None

    for unit in sorted(deps):
        if unit not in seen:
            cycle = visit(unit, [unit])
            assert cycle is None, " -> ".join(cycle)


def test_the_checker_sees_imports_inside_functions_and_relative_ones():
    path = IVR / "flow" / "python_call.py"
    found = {t for t, _ in imports_of(path, "ivr.flow.python_call")}
    assert "ivr.agent" in found  # imported inside FlowCall.agent
    assert "ivr.flow" in found  # "from . import run_subflow" inside FlowCall.subflow
    api = {t for t, _ in imports_of(IVR / "call" / "api.py", "ivr.call.api")}
    assert "ivr.call.call" not in api  # under TYPE_CHECKING only
