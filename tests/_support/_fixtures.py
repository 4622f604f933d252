"""Fixtures shared by tests/integration and tests/faults (each conftest imports them).

A missing broker fails the whole run (``pytest.exit``, return code 3) with a
message saying how to start one; it never turns into skips.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
from _broker import BROKER_HOST, BROKER_PORT, BROKER_URL, BrokerUnavailable, check_broker
from _proxy import TcpProxy, tcp_proxy

__all__ = ["_require_broker", "broker_url", "proxy", "trio_proxy", "unique_name"]


@pytest.fixture(scope="session", autouse=True)
def _require_broker() -> None:
    try:
        check_broker()
    except BrokerUnavailable as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The AMQP URL of the broker under test (TRIO_MSG_TEST_URL)."""
    return BROKER_URL


@pytest.fixture
async def proxy(anyio_backend: str) -> AsyncIterator[TcpProxy]:
    """A started TCP proxy to the broker; connect to 127.0.0.1:``proxy.port``."""
    async with tcp_proxy(BROKER_HOST, BROKER_PORT) as p:
        yield p


@pytest.fixture
async def trio_proxy() -> AsyncIterator[TcpProxy]:
    """The same, for ``@pytest.mark.trio`` tests (pytest-trio runs it; ``proxy``
    needs ``anyio_backend`` and so cannot serve trio-marked tests)."""
    async with tcp_proxy(BROKER_HOST, BROKER_PORT) as p:
        yield p


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A per-test unique name for queues and exchanges."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    return f"trio_msg.test.{test}.{uuid.uuid4().hex[:8]}"
