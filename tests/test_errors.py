"""The one exception tree (agent/errors.py): every `AgentError` is documented in its docstring's table with the
exit code and protocol code it carries, the codes are those of the contract (docs/report.md, docs/protocol.md),
and no module of `agent/` defines an exception of its own, read with the AST, except the internal ones below.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple, Type

import pytest

from agent import errors
from agent.errors import AgentError, ProtocolError, WorkerError, error_from

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "agent"
ERRORS = "agent/errors.py"
OWN_CODE = "(own)"  # the table's code for a class whose instances each name their code

# Exceptions that are not errors of edge-agent, so no part of the tree, each with why:
INTERNAL = {
    # a shape question a cost formula cannot answer: caught in costs.py, it becomes the layer's note
    ("agent/profile/costs.py", "Unresolved"),
    # a read past the end of a flatbuffer: caught in modelfile.py and raised again as a ModelFormatError
    ("agent/modelfile.py", "_OutOfBounds"),
    # a cancel, not a failure: not an AgentError, so the code that turns AgentErrors into failed reports
    # lets it through to whoever cancelled (the daemon's lane reports the job `cancelled`)
    ("agent/measure/isolate.py", "WorkerCancelled"),
    # an HTTP error answer: raised in the API's handlers and caught by its own exception handler, which
    # turns it into the JSON error body
    ("agent/fleet/api.py", "ApiError"),
    # a dashboard page's answers: a redirect to the login and an HTML error page, each raised in the page
    # handlers and caught by the dashboard's own exception handlers
    ("agent/fleet/dashboard/pages.py", "LoginNeeded"),
    ("agent/fleet/dashboard/pages.py", "PageError"),
    # a board's message refused: raised and caught inside ingest.py, where it becomes a RejectedMessage row
    ("agent/fleet/ingest.py", "Rejected"),
}

_ROW = re.compile(r"^\s*(?:[│ ]*[├└]── )?(?P<name>[A-Z]\w*)\s+(?P<exit>\d+)\s+(?P<code>\S+)\s", re.MULTILINE)


def agent_errors() -> List[Type[AgentError]]:
    """Every AgentError class that errors.py defines."""
    return [kind for kind in vars(errors).values()
            if isinstance(kind, type) and issubclass(kind, AgentError) and kind.__module__ == errors.__name__]


def documented() -> List[Tuple[str, int, str]]:
    """The rows of the docstring's table: (class, exit code, protocol code)."""
    assert errors.__doc__
    return [(m["name"], int(m["exit"]), m["code"]) for m in _ROW.finditer(errors.__doc__)]


def test_every_error_is_documented_once_with_its_codes() -> None:
    rows = documented()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names)), f"documented twice: {sorted({n for n in names if names.count(n) > 1})}"
    assert set(names) == {kind.__name__ for kind in agent_errors()}
    for name, exit_code, code in rows:
        kind = getattr(errors, name)
        assert kind.exit_code == exit_code, f"{name}: exit code {kind.exit_code}, documented {exit_code}"
        if code == OWN_CODE:
            assert "code" in inspect.signature(kind.__init__).parameters, f"{name} takes no code of its own"
        else:
            assert kind.code == code, f"{name}: code {kind.code!r}, documented {code!r}"


def test_a_failed_jobs_code_names_one_class() -> None:
    codes = [kind.code for kind in agent_errors() if kind.code != AgentError.code and kind is not ProtocolError]
    assert len(codes) == len(set(codes)), codes


def _paragraph(path: Path, opening: str) -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(opening)
    return text[start:text.index("\n\n", start)]


def test_the_codes_are_the_documented_contract() -> None:
    exits = _paragraph(ROOT / "docs" / "report.md", "`0` every configuration measured")
    failed = _paragraph(ROOT / "docs" / "protocol.md", "A failed job's `code`")
    for kind in agent_errors():
        if kind.exit_code > 1:
            assert re.search(rf"\b{kind.exit_code} ", exits), f"{kind.__name__}: exit {kind.exit_code} not in report.md"
        if kind.code != AgentError.code and kind is not ProtocolError:
            assert f"`{kind.code}`" in failed, f"{kind.__name__}: code {kind.code} not in protocol.md"


@pytest.mark.parametrize("kind", agent_errors(), ids=lambda kind: kind.__name__)
def test_a_reported_error_comes_back_as_its_class(kind: Type[AgentError]) -> None:
    error = error_from(kind.__name__, "what went wrong")
    assert type(error) is kind and str(error) == "what went wrong"


@pytest.mark.parametrize("name", ["ValueError", "Dict", "", "error_from"])
def test_a_name_that_is_no_agent_error_comes_back_as_a_worker_error(name: str) -> None:
    error = error_from(name, "segfault in the delegate")
    assert type(error) is WorkerError and str(error) == "segfault in the delegate"


def test_a_reported_protocol_error_keeps_a_protocol_code() -> None:
    error = error_from("ProtocolError", "'threads' is 0, outside 1..256")
    assert isinstance(error, ProtocolError) and error.code == "bad_value"
    assert ProtocolError("bad_model_name", "x").code == "bad_model_name"


def _class_defs() -> Iterator[Tuple[str, ast.ClassDef]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ClassDef):
                yield path.relative_to(ROOT).as_posix(), node


def _bases(node: ast.ClassDef) -> Set[str]:
    return {base.id if isinstance(base, ast.Name) else base.attr
            for base in node.bases if isinstance(base, (ast.Name, ast.Attribute))}


def exception_classes() -> Set[Tuple[str, str]]:
    """(file, class) of every class in agent/ that derives from an exception: a builtin one, one named
    *Error/*Exception (another library's), or an exception class of agent/, however deep."""
    classes: Dict[Tuple[str, str], Set[str]] = {(file, node.name): _bases(node) for file, node in _class_defs()}
    exceptions = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}
    found: Set[Tuple[str, str]] = set()
    while True:
        more = {key for key, bases in classes.items()
                if bases & exceptions or any(base.endswith(("Error", "Exception")) for base in bases)}
        if more == found:
            return found
        found = more
        exceptions |= {name for _, name in found}


def test_no_module_defines_an_exception_outside_errors_py() -> None:
    outside = {key for key in exception_classes() if key[0] != ERRORS}
    assert outside - INTERNAL == set(), "define these in agent/errors.py (or justify them in INTERNAL)"
    assert INTERNAL - outside == set(), "gone or renamed: drop them from INTERNAL"


def test_errors_py_defines_only_agent_errors() -> None:
    in_errors = {name for file, name in exception_classes() if file == ERRORS}
    assert in_errors == {kind.__name__ for kind in agent_errors()}


def test_errors_py_imports_nothing_of_the_project() -> None:
    tree = ast.parse((ROOT / ERRORS).read_text(encoding="utf-8"))
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert [name for name in imported if name == "agent" or name.startswith("agent.")] == []
