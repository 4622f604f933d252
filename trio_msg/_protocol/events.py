"""Events the core gives the driver: small, immutable, typed.

Every event names the channel it concerns (0 for the connection).  They carry
plain Python values (ints, strs, dicts, our own value classes): no pamqp
object leaves the core.
"""

from __future__ import annotations

import enum
from typing import Any

from ._build import fast_constructor, value
from .errors import TrioMsgError
from .frames import BasicProperties

__all__ = [
    "ChannelClosed",
    "ChannelFlow",
    "ChannelOpened",
    "Confirmation",
    "ConnectionBlocked",
    "ConnectionOpened",
    "ConnectionTerminated",
    "ConnectionUnblocked",
    "ConsumerCancelled",
    "Delivery",
    "Event",
    "Outcome",
    "Returned",
    "RpcReply",
]


class Outcome(enum.Enum):
    """What became of a publish in confirm mode."""

    ACK = "ack"
    """The broker took responsibility for the message."""
    NACK = "nack"
    """The broker refused it (``basic.nack``; or, set by the driver, a
    ``channel.close`` over this publish, e.g. a 404 for a missing exchange)."""
    UNKNOWN = "unknown"
    """The channel or connection went away first: it may or may not have been routed."""


@value
class ConnectionOpened:
    """The handshake finished: ``connection.open-ok`` arrived."""

    server_properties: dict[str, Any]
    frame_max: int
    channel_max: int
    heartbeat: int
    mechanism: str
    channel_id: int = 0


@value
class ConnectionBlocked:
    """The broker stopped reading our socket (a resource alarm)."""

    reason: str
    channel_id: int = 0


@value
class ConnectionUnblocked:
    """The broker reads our socket again."""

    channel_id: int = 0


@value
class ConnectionTerminated:
    """The last event of a connection.  ``error`` says why: a
    :class:`~trio_msg.errors.ConnectionClosed` subclass (a close from either
    side; reply code 200 for a normal close of ours), a protocol error, or
    :class:`~trio_msg.errors.ConnectionLost`."""

    error: TrioMsgError
    channel_id: int = 0


@value
class ChannelOpened:
    channel_id: int


@value
class ChannelClosed:
    """The channel is gone; ``error`` says why (reply code 200 when we closed
    it normally).  Every request still waiting on it has failed."""

    channel_id: int
    error: TrioMsgError


@value
class RpcReply:
    """The reply to the synchronous request ``token``: the reply method's
    AMQP ``name`` (``"queue.declare-ok"``, ``"basic.get-empty"``...) and its
    ``fields`` by their AMQP names (``{"queue": ..., "message_count": ...,
    "consumer_count": ...}``).  ``properties`` and ``body`` are set for
    ``basic.get-ok``."""

    channel_id: int
    token: int
    name: str
    fields: dict[str, Any]
    properties: BasicProperties | None = None
    body: bytes | None = None


@value
class Delivery:
    """A whole message pushed to a consumer (``basic.deliver`` + content)."""

    channel_id: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: BasicProperties
    body: bytes


@value
class Returned:
    """A ``mandatory`` publish came back (``basic.return`` + content).
    ``publish_tag`` is the confirm sequence number of the publish it returns,
    when the channel is in confirm mode and the pairing is known."""

    channel_id: int
    publish_tag: int | None
    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str
    properties: BasicProperties
    body: bytes


@value
class Confirmation:
    """Publishes in confirm mode, resolved.  Each sequence number is resolved
    exactly once, in one Confirmation."""

    channel_id: int
    delivery_tags: tuple[int, ...]
    outcome: Outcome


@value
class ConsumerCancelled:
    """The broker cancelled a consumer (e.g. its queue was deleted)."""

    channel_id: int
    consumer_tag: str


@value
class ChannelFlow:
    """The broker asked us to stop (``active=False``) or resume publishing on
    a channel.  ``channel.flow-ok`` has already been queued."""

    channel_id: int
    active: bool


Event = (
    ConnectionOpened
    | ConnectionBlocked
    | ConnectionUnblocked
    | ConnectionTerminated
    | ChannelOpened
    | ChannelClosed
    | RpcReply
    | Delivery
    | Returned
    | Confirmation
    | ConsumerCancelled
    | ChannelFlow
)


# Positional constructors for the receive path (see ._build): the same objects,
# built several times faster than through the classes' own __init__.
new_delivery = fast_constructor(Delivery)
new_returned = fast_constructor(Returned)
new_confirmation = fast_constructor(Confirmation)
