"""Shared fixtures: the anyio backends each test half runs on.

pytest-trio's ``trio_mode`` is off on purpose (see docs/testing.rst): with it
on, pytest-trio would also run the asyncio half of anyio tests on trio.
``TRIO_MSG_BACKENDS`` (``trio,asyncio`` by default) picks the halves; the nox
sessions run one each.
"""

from __future__ import annotations

import os

import pytest

BACKENDS = [b for b in os.environ.get("TRIO_MSG_BACKENDS", "trio,asyncio").split(",") if b]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
