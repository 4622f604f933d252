"""Every exception trio_msg raises, in one place.

The protocol and close errors live in the sans-IO core
(:mod:`trio_msg._protocol.errors`) and are re-exported here; the errors
below belong to the messaging layer.
"""

from __future__ import annotations

import queue as _queue
from typing import TYPE_CHECKING

from trio_msg._protocol.errors import *  # noqa: F403
from trio_msg._protocol.errors import TrioMsgError
from trio_msg._protocol.errors import __all__ as _protocol_all

if TYPE_CHECKING:
    from trio_msg.channel import PublishResult

__all__ = [
    *_protocol_all,
    "CompressionError",
    "ConnectionFailed",
    "ConsumerCancelled",
    "ContentDisallowed",
    "DecodeError",
    "Empty",
    "EncodeError",
    "MessageNacked",
    "MessageOutcomeUnknown",
    "NotBoundError",
    "NotSupported",
    "SerializerNotInstalled",
    "Unroutable",
]


class NotSupported(TrioMsgError, NotImplementedError):
    """The broker (RabbitMQ) cannot do what was asked, e.g. ``immediate=True``
    or global prefetch-size.  Raised locally; nothing was sent."""


class NotBoundError(TrioMsgError):
    """An :class:`~trio_msg.Exchange` or :class:`~trio_msg.Queue` method that
    needs a channel was called on an entity not bound to one (kombu's
    ``NotBoundError``).  Bind it first (``queue(channel)``) or pass
    ``channel=``.  Raised locally; nothing was sent."""


class ConnectionFailed(TrioMsgError, OSError):
    """No connection could be made to any of the broker's addresses (refused,
    unreachable, timed out, or the TLS handshake failed).  The message says
    which address and why; it never contains the password."""


class ConsumerCancelled(TrioMsgError):
    """The broker cancelled a consumer (``basic.cancel`` from the server),
    e.g. because its queue was deleted.  Ends that consumer's iteration."""


class SerializerNotInstalled(TrioMsgError, LookupError):
    """No serializer (or compressor) is registered under that name, or its
    optional dependency is not installed."""


class ContentDisallowed(TrioMsgError):
    """A message's content type is not in the consumer's accept list.  The
    body was not decoded."""


class EncodeError(TrioMsgError):
    """A body could not be serialized."""


class DecodeError(TrioMsgError):
    """A body could not be deserialized (or decompressed)."""


class CompressionError(DecodeError):
    """A body could not be decompressed."""


class MessageNacked(TrioMsgError):
    """The broker nacked a publish (``basic.nack``): it did not take
    responsibility for the message."""


class MessageOutcomeUnknown(TrioMsgError):
    """The channel or connection went away before the broker confirmed or
    nacked the publish: it may or may not have been routed.  ``reason`` is
    the error that closed the channel or connection (also the ``__cause__``);
    ``result`` the publish's :class:`~trio_msg.PublishResult`, when known."""

    def __init__(
        self,
        message: str,
        reason: TrioMsgError | None = None,
        result: PublishResult | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.result = result


class Unroutable(TrioMsgError):
    """A ``mandatory`` publish was returned by the broker (``basic.return``).

    ``reply_code`` is 312 (NO_ROUTE) for RabbitMQ; ``message`` is the returned
    message, with its body, when available."""

    def __init__(
        self,
        reply_text: str,
        reply_code: int,
        exchange: str,
        routing_key: str,
        message: object = None,
    ) -> None:
        super().__init__(
            f"({reply_code}) {reply_text}: exchange={exchange!r} routing_key={routing_key!r}"
        )
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key
        self.message = message


class Empty(TrioMsgError, _queue.Empty):
    """:meth:`SimpleQueue.get <trio_msg.simple.SimpleQueue.get>` found no
    message in time (or ``get_nowait`` found none at once).  A subclass of
    the standard library's :class:`queue.Empty`, which is what kombu raises,
    so ``except queue.Empty`` keeps working."""
