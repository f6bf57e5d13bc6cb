"""The Faust and aiokafka internals the connector relies on are where `connector._faust_compat` expects
them in the installed versions, and nothing else in `connector/` touches a private name of theirs."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
from pathlib import Path

import pytest

from connector._faust_compat import RELIED_ON

PACKAGE = Path(__file__).resolve().parents[2] / "connector"
LIBRARIES = ("faust", "aiokafka", "mode")


@pytest.mark.parametrize(("function", "owner", "attribute"), RELIED_ON, ids=[f"{f}:{a}" for f, _, a in RELIED_ON])
def test_every_internal_relied_on_is_still_there(function: str, owner: str, attribute: str) -> None:
    found = _resolve(owner)
    assert found is not None, f"_faust_compat.{function} relies on {owner}, which the installed version no longer has"
    assert _has(found, attribute), (
        f"_faust_compat.{function} relies on {owner}.{attribute}, which the installed version no longer has"
    )


def test_nothing_outside_the_compat_module_touches_a_private_name_of_the_libraries() -> None:
    ours = _private_names_defined_in_connector()
    offences = []
    for path in _modules():
        for node in _nodes(path):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
                offences += [f"{path.name}:{node.lineno} imports {node.module}.{a.name}" for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in ours:
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    offences.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not offences, "private names of Faust/aiokafka used outside connector/_faust_compat.py: " + "; ".join(offences)


def test_the_check_above_sees_a_private_use() -> None:
    source = "import faust.streams\nfaust.streams._current_event.set(None)\n"
    attributes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute) and _private(n.attr)]
    assert [a.attr for a in attributes] == ["_current_event"]
    assert "_current_event" not in _private_names_defined_in_connector()


def _modules() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_faust_compat.py" and "sandbox" not in path.relative_to(PACKAGE).parts
    ]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def _nodes(path: Path) -> tuple[ast.AST, ...]:
    return tuple(ast.walk(ast.parse(path.read_text())))


@functools.cache
def _private_names_defined_in_connector() -> frozenset[str]:
    """Private names the connector's own modules define (methods, attributes set on self, module names)."""
    names: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in _nodes(path):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and _private(node.target.id):
                names.add(node.target.id)
    return frozenset(names)


def _resolve(path: str) -> object | None:
    """The module, or the object inside a module, that `path` names."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name, None)
            if found is None:
                return None
        return found
    return None


def _has(owner: object, attribute: str) -> bool:
    """Whether `owner` has `attribute`: as a class attribute, a slot, or an attribute its __init__ sets."""
    if hasattr(owner, attribute) or attribute in getattr(owner, "__slots__", ()):
        return True
    init = getattr(owner, "__init__", None)
    try:
        return f"self.{attribute} =" in inspect.getsource(init) or f"self.{attribute}:" in inspect.getsource(init)
    except (TypeError, OSError):
        return False
