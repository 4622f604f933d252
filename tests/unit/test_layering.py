"""The layers keep to their ports.

- The kombu API layer (messaging, message, entity, simple, worker, cli,
  testing) asks the driver (Connection, Channel, the core) for nothing
  but its public methods and the ports of ``trio_msg/_ports.py``: it touches
  no private name of theirs.
- The driver does not import the API layer's entities: a reviving connection
  replays the steps ``maybe_declare`` registered.
- The core's events carry plain values, never pamqp objects
  (``tests/protocol/test_plain_events.py``, beside the core's test peer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import trio_msg

PACKAGE = Path(trio_msg.__file__).parent
API_LAYER = ["messaging.py", "message.py", "entity.py", "simple.py", "worker.py", "cli.py"]
API_LAYER += ["testing.py"]
DRIVER = ["connection.py", "channel.py", "_observe.py", "_pump.py", "_protocol/connection.py"]


def _tree(name: str) -> ast.AST | None:
    path = PACKAGE / name
    return ast.parse(path.read_text(), str(path)) if path.exists() else None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_privates(tree: ast.AST) -> set[str]:
    """The private names a module's classes define: methods, ``self._x``
    attributes, class attributes and slots."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _private(node.name):
            names.add(node.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and _private(node.attr)
        ):
            names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    if _private(item.target.id):
                        names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    for target in item.targets:
                        if isinstance(target, ast.Name) and target.id == "__slots__":
                            value = item.value
                            if isinstance(value, ast.Tuple | ast.List):
                                names.update(
                                    e.value
                                    for e in value.elts
                                    if isinstance(e, ast.Constant)
                                    and isinstance(e.value, str)
                                    and _private(e.value)
                                )
    return names


def _foreign_private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """``x._name`` where ``x`` is not ``self`` or ``cls``."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            uses.append((node.lineno, ast.unparse(node)))
    return uses


def _driver_privates() -> set[str]:
    names: set[str] = set()
    for name in DRIVER:
        tree = _tree(name)
        if tree is not None:
            names |= _defined_privates(tree)
    return names


def _api_privates() -> set[str]:
    names: set[str] = set()
    for name in API_LAYER:
        tree = _tree(name)
        assert tree is not None, name
        names |= _defined_privates(tree)
    return names


def test_the_checker_sees_a_private_access() -> None:
    tree = ast.parse("def f(self, ch):\n    self._own()\n    ch.connection._kick()\n")
    assert _foreign_private_uses(tree) == [(3, "ch.connection._kick")]
    source = "class A:\n    __slots__ = ('_a', 'b')\n    _c: int\n    def _d(self):\n        self._e = 1\n"
    defined = _defined_privates(ast.parse(source))
    assert defined == {"_a", "_c", "_d", "_e"}


def test_api_layer_touches_no_driver_private() -> None:
    """Every ``x._name`` the API layer writes names a private of the API
    layer's own classes (a Producer's ``_owns_channel``...), never one of the
    driver's: what the API layer needs of the driver is a port
    (trio_msg/_ports.py).  A name both layers define counts as the
    driver's."""
    driver = _driver_privates()
    assert {"_kick", "_core", "_ck", "_error_told"} <= driver  # the checker sees them
    own = _api_privates() - driver
    offenders = []
    for name in API_LAYER:
        tree = _tree(name)
        assert tree is not None
        for line, text in _foreign_private_uses(tree):
            attr = text.rsplit(".", 1)[1]
            if attr not in own:
                offenders.append(f"trio_msg/{name}:{line}: {text}")
    assert offenders == []


def _runtime_imports(tree: ast.AST) -> set[str]:
    """Modules imported outside ``if TYPE_CHECKING:`` (relative: ``.entity``)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_driver_does_not_import_the_entities() -> None:
    for name in ["connection.py", "channel.py", "_pump.py"]:
        tree = _tree(name)
        if tree is None:
            continue
        imported = _runtime_imports(tree)
        assert not imported & {".entity", ".messaging", "trio_msg.entity"}, (name, imported)
