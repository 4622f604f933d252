"""trio_msg's pytest plugin (registered as the ``trio_msg`` pytest11 entry
point): fixtures for tests of code that uses trio_msg.

``memory_broker``
    A fresh :class:`trio_msg.testing.MemoryBroker` for each test, forgotten
    after it.
``memory_broker_url``
    Its URL (``memory://...``), for code that takes a URL.

Both are plain (synchronous) fixtures, so they serve trio tests
(pytest-trio), anyio tests on either backend, and asyncio tests alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import MemoryBroker


@pytest.fixture
def memory_broker() -> Iterator[MemoryBroker]:
    """A fresh embedded broker for this test."""
    broker = MemoryBroker()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def memory_broker_url(memory_broker: MemoryBroker) -> str:
    """The URL of this test's embedded broker."""
    return memory_broker.url
