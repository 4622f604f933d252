"""The core is sans-IO: no module under trio_msg/_protocol imports IO, an
event loop or logging."""

from __future__ import annotations

import ast
from pathlib import Path

import trio_msg._protocol

FORBIDDEN = {"trio", "anyio", "asyncio", "socket", "ssl", "logging"}
PROTOCOL_DIR = Path(trio_msg._protocol.__file__).parent


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", None))
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_checker_sees_every_import_form() -> None:
    tree = ast.parse(
        "import a.b\nfrom c import d\nfrom . import e\nimportlib.import_module('f.g')\n"
        "def h():\n    import i\n__import__('j')\n"
    )
    assert _imported_roots(tree) == {"a", "c", "f", "i", "j"}


def test_protocol_modules_import_no_io() -> None:
    modules = sorted(PROTOCOL_DIR.glob("*.py"))
    names = {m.name for m in modules}
    assert {"frames.py", "connection.py", "events.py", "state.py", "sasl.py", "errors.py"} <= names
    offenders = {}
    for module in modules:
        bad = _imported_roots(ast.parse(module.read_text(), str(module))) & FORBIDDEN
        if bad:
            offenders[module.name] = sorted(bad)
    assert offenders == {}


def test_protocol_imports_only_stdlib_and_pamqp() -> None:
    import sys

    allowed = set(sys.stdlib_module_names) | {"pamqp"}
    for module in sorted(PROTOCOL_DIR.glob("*.py")):
        roots = _imported_roots(ast.parse(module.read_text(), str(module)))
        assert roots <= allowed, (module.name, roots - allowed)
