"""Shared fixtures: the anyio backends each test half runs on.

pytest-trio's ``trio_mode`` is off on purpose (see docs/testing.rst): with it
on, pytest-trio would also run the asyncio half of anyio tests on trio.
``TRIO_MSG_BACKENDS`` (``trio,asyncio`` by default) picks the halves; the nox
sessions run one each.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BACKENDS = [b for b in os.environ.get("TRIO_MSG_BACKENDS", "trio,asyncio").split(",") if b]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_CLUSTER = Path(__file__).resolve().parent / "cluster"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/cluster starts a three-node cluster of its own (``nox -s
    cluster``): collected only when named on the command line."""
    if collection_path.resolve() != _CLUSTER:
        return None
    named = (Path(arg.split("::")[0]).resolve() for arg in config.args)
    return True if not any(p == _CLUSTER or _CLUSTER in p.parents for p in named) else None
