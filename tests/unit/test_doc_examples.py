"""The first code a newcomer reads runs as shown.

README's example and the quickstart's program are taken from the files,
pointed at an embedded broker (``memory://``) instead of localhost, and run
on each backend (the quickstart says the same code runs on asyncio).  What
they print is what the page implies: the message that was published.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from trio_msg._broker import drop_broker

ROOT = Path(__file__).resolve().parents[2]
URL = '"amqp://guest:guest@localhost:5672//"'


def _readme() -> str:
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    return block.group(1)


def _quickstart() -> str:
    text = (ROOT / "docs" / "quickstart.rst").read_text()
    block = re.search(r"\.\. code-block:: python\n\n(.*?)\n(?=\S)", text, re.S)
    assert block is not None
    return "\n".join(line.removeprefix("    ") for line in block.group(1).splitlines())


@pytest.mark.parametrize("source", [_readme, _quickstart], ids=["README", "quickstart"])
def test_the_example_runs_as_shown(
    source: Any, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = source()
    assert code.count(URL) == 1, "the example no longer names the URL this test replaces"
    assert code.rstrip().endswith("trio.run(main)")
    assert max(len(line) for line in code.splitlines()) <= 80, "it must fit the page"
    name = f"doc-example-{uuid.uuid4().hex[:12]}"
    code = code.replace(URL, repr(f"memory://{name}")).rstrip().removesuffix("trio.run(main)")
    namespace: dict[str, Any] = {}
    try:
        exec(compile(code, source.__name__, "exec"), namespace)
        anyio.run(namespace["main"], backend=anyio_backend)
    finally:
        drop_broker(name)
    assert capsys.readouterr().out == "{'hello': 'world'}\n"
