"""The ``broker`` fixture: a :class:`FakeBroker` behind ``Connection._connect_tcp``."""

from __future__ import annotations

from typing import Any

import anyio.abc
import pytest

from trio_msg.connection import Connection

from .fake_broker import FakeBroker


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    """A fake broker; every ``connect()`` in the test reaches it.

    Use it as ``async with broker, connect(URL) as conn:`` (the broker's
    tasks live in its ``async with``)."""
    fake = FakeBroker()

    async def connect_tcp(
        self: Connection, host: str, port: int, ssl_context: Any
    ) -> anyio.abc.ByteStream:
        return await fake._accept(self, host, port, ssl_context)

    monkeypatch.setattr(Connection, "_connect_tcp", connect_tcp)
    return fake
