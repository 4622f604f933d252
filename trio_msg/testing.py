"""Test your code against trio_msg's embedded broker, and script it.

:class:`MemoryBroker` is a broker of your own in the process, reached at
:attr:`MemoryBroker.url` (``memory://...``) through the whole client stack,
frames included (see :doc:`memory`).  Besides serving connections, it lets a
test look inside (queues, their messages, exchanges, bindings, connections)
and make things happen that are hard to make happen with RabbitMQ: a forced
close, a dropped socket, a resource alarm, a consumer cancelled by the
broker, confirms held back or refused::

    from trio_msg.testing import MemoryBroker

    async def test_order_is_published() -> None:
        broker = MemoryBroker()
        async with trio_msg.connect(broker.url) as conn:
            await place_order(conn, 42)          # the code under test
        [message] = broker.messages("orders")
        assert message.body == b'{"order": 42}'

With pytest, the ``memory_broker`` fixture gives each test a fresh one (the
plugin is installed with trio_msg; see docs/testing.rst).

Every method is synchronous: call it from any task, on trio or asyncio.
What it changes takes effect at once; what the clients see of it arrives
through their connections as usual.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._broker import drop_broker, get_broker
from ._broker.model import CONNECTION_FORCED, AMQPError, StoredMessage
from ._broker.server import ServerConnection
from ._protocol.frames import BasicProperties

__all__ = [
    "BindingInfo",
    "ConnectionInfo",
    "ExchangeInfo",
    "MemoryBroker",
    "MessageInfo",
    "QueueInfo",
]


@dataclass(frozen=True)
class QueueInfo:
    """A queue as the broker sees it now."""

    name: str
    #: Ready messages (not counting those delivered and not yet settled).
    messages: int
    #: Delivered to consumers (or by ``basic.get``) and not yet settled.
    unacked: int
    consumers: int
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageInfo:
    """A ready message in a queue."""

    body: bytes
    exchange: str
    routing_key: str
    redelivered: bool
    properties: BasicProperties

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})


@dataclass(frozen=True)
class ExchangeInfo:
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BindingInfo:
    source: str
    #: ``"queue"`` or ``"exchange"``.
    destination_type: str
    destination: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectionInfo:
    #: The ``connection_name`` the client gave, if any.
    name: str | None
    user: str
    channels: int
    #: Whether the broker has blocked it (a resource alarm).
    blocked: bool
    client_properties: dict[str, Any] = field(default_factory=dict)


class MemoryBroker:
    """An embedded broker for one test (or one program).

    ``name`` defaults to a fresh unique one; connections to :attr:`url`
    share this broker.  :meth:`close` forgets it (the next connection to the
    same URL gets a new, empty broker); connections still open keep it.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name if name is not None else f"test-{uuid.uuid4().hex}"
        self._server = get_broker(self.name)

    def __repr__(self) -> str:
        return f"<trio_msg.testing.MemoryBroker {self.url!r}>"

    @property
    def url(self) -> str:
        """``memory://NAME``, for :func:`trio_msg.connect`."""
        return f"memory://{self.name}"

    def close(self) -> None:
        """Forget this broker (idempotent)."""
        drop_broker(self.name)

    # --- looking inside -------------------------------------------------------

    def queues(self) -> dict[str, QueueInfo]:
        """Every queue, by name."""
        out = {}
        for queue in list(self._server.broker.queues.values()):
            self._server.broker.expire(queue)
            out[queue.name] = QueueInfo(
                queue.name,
                len(queue.ready),
                queue.unacked,
                len(queue.consumers),
                queue.durable,
                queue.exclusive_owner is not None,
                queue.auto_delete,
                dict(queue.arguments),
            )
        return out

    def queue(self, name: str) -> QueueInfo:
        """One queue; :exc:`KeyError` if there is none of that name."""
        return self.queues()[name]

    def messages(self, queue: str) -> list[MessageInfo]:
        """The ready messages of ``queue``, in the order they will be
        delivered (they stay in the queue)."""
        q = self._server.broker.queues[queue]
        self._server.broker.expire(q)
        return [_info(m) for m in q.ready]

    def exchanges(self) -> dict[str, ExchangeInfo]:
        return {
            x.name: ExchangeInfo(
                x.name, x.type, x.durable, x.auto_delete, x.internal, dict(x.arguments)
            )
            for x in self._server.broker.exchanges.values()
        }

    def bindings(self) -> list[BindingInfo]:
        """Every binding made by clients (the default exchange's implicit
        ones are not listed, as in RabbitMQ's ``list_bindings``)."""
        return [
            BindingInfo(b.source, b.kind, b.destination, b.routing_key, dict(b.arguments))
            for x in self._server.broker.exchanges.values()
            for b in x.bindings
        ]

    def connections(self) -> list[ConnectionInfo]:
        """The open client connections."""
        return [
            ConnectionInfo(
                _name(c),
                c.user,
                len(c.channels),
                c.blocked,
                dict(c.client_properties),
            )
            for c in self._connections()
        ]

    # --- making things happen ---------------------------------------------------

    def close_connections(self, reason: str = "test", *, name: str | None = None) -> int:
        """Close connections (those whose ``connection_name`` is ``name``,
        or all) with ``320 CONNECTION_FORCED``, as ``rabbitmqctl
        close_connection`` does; returns how many."""
        targets = list(self._connections(name))
        for conn in targets:
            conn.server_close(
                CONNECTION_FORCED, f"broker forced connection closure with reason '{reason}'"
            )
        return len(targets)

    def drop_connections(self, *, name: str | None = None) -> int:
        """Drop connections (or those named ``name``) without a word: their
        streams end, as when the network or the broker dies; returns how
        many."""
        targets = list(self._connections(name))
        for conn in targets:
            conn.abort()
        return len(targets)

    def block(self, reason: str = "low on memory") -> None:
        """Raise a resource alarm: a connection that publishes gets
        ``connection.blocked`` (with ``reason``) and is not read until
        :meth:`unblock`, as RabbitMQ does on a memory or disk alarm."""
        self._server.set_alarm(reason)

    def unblock(self) -> None:
        """End the alarm: ``connection.unblocked``, and what the blocked
        connections sent meanwhile is processed."""
        self._server.set_alarm(None)

    def cancel_consumers(self, queue: str) -> int:
        """Cancel every consumer of ``queue`` from the broker's side
        (``basic.cancel``); the queue and its messages stay.  Returns how
        many consumers were cancelled."""
        return self._server.broker.cancel_consumers(self._server.broker.queues[queue])

    def hold_confirms(self) -> None:
        """Hold publisher confirms back until :meth:`release_confirms` (the
        messages are routed; only the answers wait)."""
        self._server.hold_confirms(True)

    def release_confirms(self) -> None:
        """Send every held confirm, in order, and stop holding them."""
        self._server.hold_confirms(False)

    def nack_publishes(self, nack: bool = True) -> None:
        """Refuse what confirming channels publish from now on: the message
        is not routed and its publisher gets ``basic.nack`` (``False`` ends
        it)."""
        self._server.broker.nacking = nack

    def publish(
        self,
        body: bytes,
        routing_key: str = "",
        exchange: str = "",
        properties: BasicProperties | None = None,
    ) -> int:
        """Route a message as if a client had published it; returns how many
        queues it reached.  :exc:`KeyError` for a missing exchange."""
        broker = self._server.broker
        try:
            queues = broker.route_all(exchange, routing_key, (properties or _EMPTY).headers)
        except AMQPError as exc:
            raise KeyError(exc.text) from None
        broker.enqueue(queues, exchange, routing_key, properties or _EMPTY, body)
        return len(queues)

    # ----------------------------------------------------------------------------

    def _connections(self, name: str | None = None) -> Iterator[ServerConnection]:
        for conn in list(self._server.connections):
            if conn.closed:
                continue
            if name is None or _name(conn) == name:
                yield conn


_EMPTY = BasicProperties()


def _name(conn: ServerConnection) -> str | None:
    value = conn.client_properties.get("connection_name")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _info(m: StoredMessage) -> MessageInfo:
    return MessageInfo(m.body, m.exchange, m.routing_key, m.redelivered, m.properties)
