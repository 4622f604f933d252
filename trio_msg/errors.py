"""Every exception trio_msg raises, in one place.

This is the public home of all of them: ``from trio_msg.errors import
NotFound``.  The protocol and close errors are defined by the sans-IO core
(``trio_msg._protocol.errors``, which imports nothing outside the standard
library) and re-exported here; the others belong to the messaging layer.
Each class's ``__module__`` is this module, so tracebacks and pickles
name ``trio_msg.errors.NotFound``, never the core's internal path.
"""

from __future__ import annotations

import queue as _queue
from typing import TYPE_CHECKING, Any

from trio_msg._protocol import errors as _core
from trio_msg._protocol.errors import (
    AccessRefused,
    AuthenticationError,
    ChannelClosed,
    ChannelError,
    ChannelNotOpen,
    CommandInvalid,
    ConnectionClosed,
    ConnectionForced,
    ConnectionLost,
    FrameError,
    HeartbeatTimeout,
    InternalError,
    InvalidPath,
    LocalProtocolError,
    MessageStateError,
    NotAllowed,
    NotFound,
    NotImplementedByBroker,
    PreconditionFailed,
    ProtocolError,
    RemoteProtocolError,
    ResourceError,
    ResourceLocked,
    TrioMsgError,
    UnexpectedFrame,
    WrongProtocol,
)

if TYPE_CHECKING:
    from trio_msg.channel import PublishResult

__all__ = [
    "AccessRefused",
    "AuthenticationError",
    "ChannelClosed",
    "ChannelError",
    "ChannelNotOpen",
    "CommandInvalid",
    "CompressionError",
    "ConnectionClosed",
    "ConnectionFailed",
    "ConnectionForced",
    "ConnectionLost",
    "ConsumerCancelled",
    "ContentDisallowed",
    "DecodeError",
    "Empty",
    "EncodeError",
    "FrameError",
    "HeartbeatTimeout",
    "InternalError",
    "InvalidPath",
    "LocalProtocolError",
    "MessageNacked",
    "MessageOutcomeUnknown",
    "MessageStateError",
    "NotAllowed",
    "NotBoundError",
    "NotFound",
    "NotImplementedByBroker",
    "NotSupported",
    "PipelineFailed",
    "PreconditionFailed",
    "ProtocolError",
    "RemoteProtocolError",
    "ResourceError",
    "ResourceLocked",
    "SerializerNotInstalled",
    "TrioMsgError",
    "UnexpectedFrame",
    "Unroutable",
    "WrongProtocol",
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


class PipelineFailed(TrioMsgError):
    """A :meth:`Producer.pipeline <trio_msg.Producer.pipeline>` ended with
    publishes that were not plainly acked: nacked, outcome unknown, or
    returned unroutable (``mandatory``).  Raised on leaving the pipeline's
    ``async with`` (unless it was given ``raise_on_failure=False``), once
    every outcome is known.  ``failures`` holds their
    :class:`~trio_msg.PublishResult` objects; ``acked``, ``nacked``,
    ``unknown`` and ``returned`` count the pipeline's outcomes."""

    def __init__(
        self,
        failures: list[PublishResult],
        acked: int,
        nacked: int,
        unknown: int,
        returned: int,
    ) -> None:
        total = acked + len(failures)
        super().__init__(
            f"{len(failures)} of {total} pipelined publishes failed: {nacked} nacked, "
            f"{unknown} outcome unknown, {returned} returned unroutable (see .failures)"
        )
        self.failures = failures
        self.acked = acked
        self.nacked = nacked
        self.unknown = unknown
        self.returned = returned

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.failures, self.acked, self.nacked, self.unknown, self.returned)
        return type(self), fields


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

    def __reduce__(self) -> tuple[Any, ...]:
        # ``args`` holds the formatted message; rebuild from the fields.
        fields = (self.reply_text, self.reply_code, self.exchange, self.routing_key, self.message)
        return type(self), fields, self.__dict__


class Empty(TrioMsgError, _queue.Empty):
    """:meth:`SimpleQueue.get <trio_msg.simple.SimpleQueue.get>` found no
    message in time (or ``get_nowait`` found none at once).  A subclass of
    the standard library's :class:`queue.Empty`, which is what kombu raises,
    so ``except queue.Empty`` keeps working."""


# The core's classes are presented as this module's own (see the docstring).
# The sans-IO core stays free of any import from the rest of the package;
# it is this module that claims them.
for _name in _core.__all__:
    _obj = getattr(_core, _name)
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
