"""The embedded broker behind ``memory://`` (and ``python -m trio_msg broker``).

Three layers, as the client has: :mod:`.model` (exchanges, queues, bindings
and consumers as plain data, with RabbitMQ's rules), :mod:`.server` (the
broker's side of one AMQP connection, sans IO, on the project's own frame
codec) and :mod:`.driver` (a ``memory://`` connection served in the
client's own tasks, or anyio tasks serving a TCP stream).

Connections to ``memory://NAME`` in one process share the broker ``NAME``
(made on first use); different names are different brokers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .driver import BrokerServer, MemoryClient, MemoryWire
from .model import AMQPError, Broker

__all__ = [
    "AMQPError",
    "Broker",
    "BrokerServer",
    "MemoryClient",
    "MemoryWire",
    "attach",
    "get_broker",
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


def attach(name: str) -> tuple[MemoryClient, Callable[[], Awaitable[None]]]:
    """A client stream to the broker ``name``, and its broker side's ticker
    (the caller runs it in the connection's task group; see
    :meth:`BrokerServer.attach`)."""
    return get_broker(name).attach()
