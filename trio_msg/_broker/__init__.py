"""The embedded broker behind ``memory://`` (and ``python -m trio_msg broker``).

Three layers, as the client has: :mod:`.model` (exchanges, queues, bindings
and consumers as plain data, with RabbitMQ's rules), :mod:`.server` (the
broker's side of one AMQP connection, sans IO, on the project's own frame
codec) and :mod:`.driver` (anyio tasks serving a connection over an
in-memory stream or TCP).

Connections to ``memory://NAME`` in one process share the broker ``NAME``
(made on first use); different names are different brokers.
"""

from __future__ import annotations

import anyio.abc

from .driver import BrokerServer, MemoryStream, memory_stream_pair
from .model import AMQPError, Broker

__all__ = [
    "AMQPError",
    "Broker",
    "BrokerServer",
    "MemoryStream",
    "attach",
    "get_broker",
    "memory_stream_pair",
]

_BROKERS: dict[str, BrokerServer] = {}


def get_broker(name: str = "") -> BrokerServer:
    """The embedded broker called ``name`` in this process, made on first use."""
    server = _BROKERS.get(name)
    if server is None:
        server = _BROKERS[name] = BrokerServer()
    return server


def drop_broker(name: str) -> None:
    """Forget the broker called ``name``: the next ``memory://NAME`` gets a
    fresh one (connections still attached keep the old one)."""
    _BROKERS.pop(name, None)


async def attach(name: str, tg: anyio.abc.TaskGroup) -> MemoryStream:
    """A client stream to the broker ``name``, served by a task in ``tg``."""
    client, server_side = memory_stream_pair()
    tg.start_soon(get_broker(name).serve_stream, server_side)
    await anyio.lowlevel.checkpoint()
    return client
