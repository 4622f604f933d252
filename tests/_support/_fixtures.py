"""Fixtures shared by tests/integration and tests/faults (each conftest imports them).

A missing broker fails the whole run (``pytest.exit``, return code 3) with a
message saying how to start one; it never turns into skips.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, nullcontext

import anyio
import pytest
from _broker import (
    BROKER_HOST,
    BROKER_PORT,
    BROKER_URL,
    EMBEDDED,
    MEMORY_URL,
    BrokerUnavailable,
    check_broker,
)
from _proxy import TcpProxy, tcp_proxy

__all__ = [
    "_embedded_tcp",
    "_embedded_tcp_thread",
    "_require_broker",
    "broker_url",
    "proxy",
    "trio_proxy",
    "unique_name",
]


@pytest.fixture(scope="session", autouse=True)
def _require_broker() -> None:
    if EMBEDDED:
        return  # served by the tests themselves
    try:
        check_broker()
    except BrokerUnavailable as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The AMQP URL of the broker under test (TRIO_MSG_TEST_URL), or, with
    ``TRIO_MSG_TEST_BROKER=memory``, the embedded broker's ``memory://`` URL."""
    return MEMORY_URL if MEMORY_URL is not None else BROKER_URL


# The embedded broker's TCP listener, served during one test (see
# tests/_support/_embedded.py); tests/integration/conftest.py gives each test
# the one that fits how it runs.


@asynccontextmanager
async def _serve_embedded() -> AsyncIterator[None]:
    import _embedded

    async with anyio.create_task_group() as tg:
        await tg.start(_embedded.serving)
        yield
        tg.cancel_scope.cancel()


@pytest.fixture
async def _embedded_tcp(anyio_backend: str) -> AsyncIterator[None]:
    """In the test's own event loop (anyio tests)."""
    async with _serve_embedded():
        yield


@pytest.fixture
def _embedded_tcp_thread() -> Iterator[None]:
    """For synchronous tests: an event loop in a thread of its own."""
    import _embedded

    with _embedded.serving_in_a_thread():
        yield


@pytest.fixture
async def proxy(anyio_backend: str) -> AsyncIterator[TcpProxy]:
    """A started TCP proxy to the broker; connect to 127.0.0.1:``proxy.port``."""
    async with tcp_proxy(BROKER_HOST, BROKER_PORT) as p:
        yield p


@pytest.fixture
async def trio_proxy() -> AsyncIterator[TcpProxy]:
    """The same, for ``@pytest.mark.trio`` tests (pytest-trio runs it; ``proxy``
    needs ``anyio_backend`` and so cannot serve trio-marked tests).  Embedded,
    it also serves the broker's TCP listener (pytest-trio runs only the
    fixtures a test names, so it cannot be given one as anyio tests are)."""
    async with _serve_embedded() if EMBEDDED else nullcontext(), tcp_proxy(
        BROKER_HOST, BROKER_PORT
    ) as p:
        yield p


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A per-test unique name for queues and exchanges."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    return f"trio_msg.test.{test}.{uuid.uuid4().hex[:8]}"
