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

from collections.abc import Awaitable, Callable

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


def attach(name: str) -> tuple[MemoryStream, Callable[[], Awaitable[None]]]:
    """A client stream to the broker ``name``, and the function that serves
    its other end (the caller runs it in the connection's task group)."""
    client, server_side = memory_stream_pair()
    server = get_broker(name)

    async def serve() -> None:
        await server.serve_stream(server_side)

    return client, serve
