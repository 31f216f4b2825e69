"""The import layers of `agent/` (docs/architecture.md, "Layers"): every `import` of the package, at module
or function level, read with the AST, must point to the importer's own package or to a lower layer, and
sit at module level outside `commands/` and `cli.py` unless `LAZY` names it with its reason.

An upward import, a cycle between packages or an unlisted function-level import fails here with the
offending line. Imports under `if TYPE_CHECKING:` are annotations only and are left out; the optional
heavy runtimes (tensorrt, pycuda, onnxruntime, litert, matplotlib, paho) are not `agent` modules and are
not constrained here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agent"
assert PACKAGE.is_dir(), PACKAGE

# Top to bottom. A module may import its own unit (package or module) and any unit in a lower layer;
# units sharing a layer may not import each other.
LAYERS: Sequence[Sequence[str]] = (
    ("cli",),
    ("commands",),
    ("service", "fleet"),
    ("mqtt",),
    ("config",),
    ("jobs",),
    ("selection", "compress", "zoo"),
    ("measure",),
    ("profile",),
    ("backends",),
    ("graph",),
    ("report",),
    ("device",),  # below the report, whose `device` section is a DeviceSection
    ("bundle",),
    ("modelfile", "cache", "notify"),
    ("errors",),
    ("",),  # agent/__init__.py: the version
)

# Where every import of an agent module may sit inside a function: the subcommands, so that
# `edge-agent --help` imports no job.
LAZY_ANYWHERE = ("cli.py", "commands/")

# The other function-level imports of agent modules that stay: (file under agent/, imported module) -> why.
LAZY: Mapping[Tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One `import` of an agent module: who imports what, where."""

    importer: str  # dotted module name, e.g. agent.jobs.measure
    imported: str  # dotted module name (or agent.X for `from agent import X`)
    file: str
    line: int
    in_function: bool  # inside a def (run when called), not at module or class level (run on import)


def unit_of(module: str) -> str:
    """The layer unit of a dotted module name: `agent.jobs.measure` -> `jobs`, `agent` -> ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(unit: str, layers: Sequence[Sequence[str]] = LAYERS) -> int:
    """The index of `unit`'s layer (0 is the top); a unit in no layer fails the test."""
    for index, layer in enumerate(layers):
        if unit in layer:
            return index
    raise AssertionError(f"agent.{unit} is in no layer: add it to LAYERS and to docs/architecture.md")


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk(tree: ast.AST, in_function: bool = False) -> Iterator[Tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(tree):
        if _type_checking_only(child):
            continue
        yield child, in_function
        yield from _walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _module_name(root: Path, path: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join([package] + (parts[:-1] if parts[-1] == "__init__" else parts))


def imports_in(root: Path, package: str = "agent") -> List[Import]:
    """Every import of `package` modules in the tree under `root` (module and function level); `from P
    import N` counts as an import of the module P.N where there is one, else of P."""
    paths = sorted(root.rglob("*.py"))
    modules = {_module_name(root, path, package) for path in paths}
    found: List[Import] = []
    for path in paths:
        module = _module_name(root, path, package)
        is_init = path.name == "__init__.py"
        for node, in_function in _walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_init else module.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target != package and not target.startswith(package + "."):
                    continue
                named = {f"{target}.{alias.name}" for alias in node.names}
                targets = sorted(named & modules) + ([target] if named - modules else [])
                found += [Import(module, name, str(path), node.lineno, in_function) for name in targets]
            elif isinstance(node, ast.Import):
                found += [Import(module, alias.name, str(path), node.lineno, in_function) for alias in node.names
                          if alias.name == package or alias.name.startswith(package + ".")]
    return found


def violations(found: Sequence[Import], layers: Sequence[Sequence[str]] = LAYERS) -> List[str]:
    """One line per import that goes up a layer or sideways to another unit of the same layer."""
    bad = []
    for item in found:
        source, target = unit_of(item.importer), unit_of(item.imported)
        if source == target:
            continue
        if layer_of(target, layers) <= layer_of(source, layers):
            bad.append(f"{item.file}:{item.line}: {item.importer} imports {item.imported} "
                       f"(agent.{target} is not below agent.{source})")
    return bad


def unlisted_lazy_imports(found: Sequence[Import], root: Path,
                          allowed: Mapping[Tuple[str, str], str] = LAZY) -> List[str]:
    """One line per function-level import outside `LAZY_ANYWHERE` that `allowed` does not name, and one per
    entry of `allowed` that no longer matches an import (so the list shrinks with the code)."""
    bad, used = [], set()
    for item in found:
        file = Path(item.file).relative_to(root).as_posix()
        if not item.in_function or file.startswith(LAZY_ANYWHERE):
            continue
        if (file, item.imported) in allowed:
            used.add((file, item.imported))
        else:
            bad.append(f"{item.file}:{item.line}: {item.importer} imports {item.imported} inside a function "
                       "(move it to module level, or name it in LAZY with the reason)")
    bad += [f"LAZY names {file}: {module}, which no function there imports" for file, module in allowed
            if (file, module) not in used]
    return bad


def module_cycles(found: Sequence[Import]) -> List[List[str]]:
    """Cycles between modules (inside a package too): each as the list of modules around it."""
    graph: Dict[str, set] = {}
    for item in found:
        graph.setdefault(item.importer, set()).add(item.imported)
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_every_import_in_agent_points_down() -> None:
    assert violations(imports_in(PACKAGE)) == []


def test_no_module_imports_itself_round_a_cycle() -> None:
    # `agent.backends` importing `agent.backends.registry` and back is a cycle even inside one package.
    found = [i for i in imports_in(PACKAGE) if i.imported != "agent"]
    assert module_cycles(found) == []


def test_agent_modules_are_imported_at_module_level() -> None:
    assert unlisted_lazy_imports(imports_in(PACKAGE), PACKAGE) == []


def test_every_allowed_lazy_import_gives_its_reason() -> None:
    assert all(reason.strip() and "\n" not in reason for reason in LAZY.values())


def test_every_top_level_module_is_a_shared_one() -> None:
    shared = {"__init__", "cli", "errors", "report", "config", "cache", "bundle", "modelfile", "notify"}
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in shared) == []


def _synthetic(tmp_path: Path, files: Dict[str, str]) -> Path:
    root = tmp_path / "agent"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("code", [
    "from agent.jobs.measure import run_measure\n",  # module level
    "def f():\n    from agent.jobs import measure\n",  # function level
    "def f():\n    from agent import jobs\n",  # `from agent import <module>`
    "def f():\n    import agent.jobs.measure\n",
    "from ..jobs import measure\n",  # relative
])
def test_an_upward_import_is_caught(tmp_path: Path, code: str) -> None:
    root = _synthetic(tmp_path, {"measure/__init__.py": "", "measure/run.py": code, "jobs/__init__.py": "",
                                 "jobs/measure.py": "from agent.measure.run import x\n"})
    found = violations(imports_in(root))
    assert len(found) == 1 and "agent.measure.run imports agent.jobs" in found[0], found


def test_a_downward_or_type_checking_import_passes(tmp_path: Path) -> None:
    root = _synthetic(tmp_path, {
        "measure/__init__.py": "", "jobs/__init__.py": "",
        "jobs/measure.py": "from agent.measure import run\nfrom agent import __version__\n",
        "measure/run.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agent.jobs import measure\n"})
    assert violations(imports_in(root)) == []


def test_a_sideways_import_and_a_module_cycle_are_caught(tmp_path: Path) -> None:
    root = _synthetic(tmp_path, {"service/a.py": "from agent.fleet import b\n",
                                 "fleet/b.py": "def f():\n    from agent.fleet import c\n",
                                 "fleet/c.py": "from agent.fleet import b\n"})
    found = imports_in(root)
    assert len(violations(found)) == 1
    assert module_cycles(found) == [["agent.fleet.b", "agent.fleet.c", "agent.fleet.b"]]


def test_a_module_in_no_layer_is_named() -> None:
    with pytest.raises(AssertionError, match="agent.newthing is in no layer"):
        layer_of("newthing")


def test_a_function_level_import_is_caught_unless_allowed(tmp_path: Path) -> None:
    root = _synthetic(tmp_path, {
        "errors.py": "",
        "graph/read.py": "import agent.errors\nclass C:\n    from agent.errors import E\n"
                         "def f():\n    from agent.errors import E\n",
        "graph/onnx.py": "def f():\n    from agent import errors\n",
        "commands/bench.py": "def f():\n    from agent.jobs import measure\n",
        "cli.py": "def main():\n    from agent.commands import bench\n"})
    found = imports_in(root)
    assert unlisted_lazy_imports(found, root, {}) == [
        f"{root}/graph/onnx.py:2: agent.graph.onnx imports agent.errors inside a function "
        "(move it to module level, or name it in LAZY with the reason)",
        f"{root}/graph/read.py:5: agent.graph.read imports agent.errors inside a function "
        "(move it to module level, or name it in LAZY with the reason)"]
    allowed = {("graph/onnx.py", "agent.errors"): "why", ("graph/read.py", "agent.errors"): "why"}
    assert unlisted_lazy_imports(found, root, allowed) == []
    stale = {**allowed, ("graph/qdq.py", "agent.errors"): "why"}
    assert unlisted_lazy_imports(found, root, stale) == ["LAZY names graph/qdq.py: agent.errors, which no function "
                                                         "there imports"]
