"""The error family shared by the sans-IO core and the driver.

Every exception trio_msg raises derives from
:exc:`~trio_msg.errors.TrioMsgError`.  Faults in the byte stream are
:exc:`~trio_msg.errors.ProtocolError`, split (as in h11) into
:exc:`~trio_msg.errors.LocalProtocolError` (we were about to break the
protocol, or were asked to) and :exc:`~trio_msg.errors.RemoteProtocolError`
(the peer broke it).  Both carry the AMQP reply code that describes the fault.

Closes map to one class per AMQP reply code: :func:`connection_closed` and
:func:`channel_closed` pick the right subclass from a reply code, so callers
can ``except NotFound`` instead of comparing integers.

The classes' public home is :mod:`trio_msg.errors`, which re-exports them
and sets their ``__module__`` to its own name; this module imports nothing
but the standard library.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "AccessRefused",
    "AuthenticationError",
    "ChannelClosed",
    "ChannelError",
    "ChannelNotOpen",
    "CommandInvalid",
    "ConnectionClosed",
    "ConnectionForced",
    "ConnectionLost",
    "FrameError",
    "HeartbeatTimeout",
    "InternalError",
    "InvalidPath",
    "LocalProtocolError",
    "MessageStateError",
    "NotAllowed",
    "NotFound",
    "NotImplementedByBroker",
    "PreconditionFailed",
    "ProtocolError",
    "RemoteProtocolError",
    "ResourceError",
    "ResourceLocked",
    "TrioMsgError",
    "UnexpectedFrame",
    "WrongProtocol",
    "channel_closed",
    "connection_closed",
]

# AMQP 0-9-1 reply codes (spec section 1.2 / RabbitMQ's amqp-0-9-1 errata).
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541


class TrioMsgError(Exception):
    """Base class of every error trio_msg raises."""


class MessageStateError(TrioMsgError):
    """A message was settled (acked, rejected, requeued) twice, or on a
    channel that is gone.  Raised locally, before anything reaches the broker,
    so the channel stays open."""


class ProtocolError(TrioMsgError):
    """The AMQP conversation broke.  ``reply_code`` is the AMQP code that
    describes the fault (501 frame error, 505 unexpected frame, ...)."""

    def __init__(self, message: str, reply_code: int = SYNTAX_ERROR) -> None:
        super().__init__(message)
        self.reply_code = reply_code


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids (or that the
    connection cannot do in its current state).  Nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol.  The connection is dead;
    the core has queued a ``connection.close`` carrying ``reply_code``."""


class FrameError(RemoteProtocolError):
    """A malformed frame: bad length, bad frame-end octet, undecodable payload
    (AMQP 501)."""

    def __init__(self, message: str, reply_code: int = FRAME_ERROR) -> None:
        super().__init__(message, reply_code)


class WrongProtocol(FrameError):
    """The peer does not speak AMQP 0-9-1: the first bytes it sent are no
    AMQP frame (an HTTP server, the management port), or a protocol header
    offering another version.  The driver reports it as
    :class:`~trio_msg.errors.ConnectionFailed`."""


class UnexpectedFrame(RemoteProtocolError):
    """A well-formed frame arrived where the protocol does not allow it
    (AMQP 505)."""

    def __init__(self, message: str, reply_code: int = UNEXPECTED_FRAME) -> None:
        super().__init__(message, reply_code)


class ConnectionLost(TrioMsgError):
    """The transport went away (socket error, EOF, heartbeat timeout) without
    an AMQP close.  Publishes not yet confirmed have an unknown outcome."""


class HeartbeatTimeout(ConnectionLost):
    """The peer sent nothing for two heartbeat intervals."""


class _Closed(TrioMsgError):
    """Common shape of connection and channel closes."""

    reply_code: int = 0

    def __init__(
        self,
        reply_text: str = "",
        reply_code: int | None = None,
        class_id: int = 0,
        method_id: int = 0,
        *,
        by_peer: bool = True,
    ) -> None:
        if reply_code is not None:
            self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id
        self.by_peer = by_peer
        side = "broker" if by_peer else "client"
        super().__init__(f"({self.reply_code}) {reply_text} [closed by {side}]")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the fields, not from ``args`` (the formatted message),
        # so a pickled close unpickles with the same text and attributes.
        rebuild = functools.partial(type(self), by_peer=self.by_peer)
        fields = (self.reply_text, self.reply_code, self.class_id, self.method_id)
        return rebuild, fields, self.__dict__


class ConnectionClosed(_Closed):
    """The connection was closed with an AMQP ``connection.close``."""


class ChannelClosed(_Closed):
    """The channel was closed with an AMQP ``channel.close`` (or because its
    connection closed)."""


class ChannelNotOpen(ChannelClosed, LocalProtocolError):
    """An operation was attempted on a channel that is not open."""

    reply_code = CHANNEL_ERROR

    def __init__(
        self, reply_text: str = "channel is not open", *args: object, **kw: object
    ) -> None:
        _Closed.__init__(self, reply_text, CHANNEL_ERROR, by_peer=False)
        ProtocolError.__init__(self, str(self), CHANNEL_ERROR)


# --- one class per reply code ---------------------------------------------------


class ConnectionForced(ConnectionClosed):
    """320: an operator or the broker closed the connection."""

    reply_code = CONNECTION_FORCED


class InvalidPath(ConnectionClosed):
    """402: the virtual host does not exist."""

    reply_code = INVALID_PATH


class AccessRefused(ConnectionClosed, ChannelClosed):
    """403: wrong credentials, or no permission on a resource.

    Raised as a connection error for a refused login and as a channel error
    for a refused operation; it is both classes so either ``except`` works."""

    reply_code = ACCESS_REFUSED


class AuthenticationError(AccessRefused):
    """The broker refused our credentials.  Never retried.  The message
    never contains the password."""


class NotFound(ChannelClosed):
    """404: the exchange or queue does not exist."""

    reply_code = NOT_FOUND


class ResourceLocked(ChannelClosed):
    """405: the queue is exclusive to another connection."""

    reply_code = RESOURCE_LOCKED


class PreconditionFailed(ChannelClosed):
    """406: e.g. redeclaring an entity with other arguments, or an unknown
    delivery tag."""

    reply_code = PRECONDITION_FAILED


class CommandInvalid(ConnectionClosed):
    """503: the broker received a method it did not expect."""

    reply_code = COMMAND_INVALID


class ChannelError(ConnectionClosed):
    """504: the broker saw a method on a channel that is not open."""

    reply_code = CHANNEL_ERROR


class ResourceError(ConnectionClosed):
    """506: the broker ran out of a resource (e.g. too many channels)."""

    reply_code = RESOURCE_ERROR


class NotAllowed(ConnectionClosed):
    """530: e.g. the user may not access the virtual host."""

    reply_code = NOT_ALLOWED


class NotImplementedByBroker(ConnectionClosed, ChannelClosed):
    """540: the broker does not implement what was asked (RabbitMQ closes
    the connection for some, the channel for others)."""

    reply_code = NOT_IMPLEMENTED


class InternalError(ConnectionClosed):
    """541: the broker hit an internal error."""

    reply_code = INTERNAL_ERROR


_CONNECTION_CLASSES: dict[int, type[ConnectionClosed]] = {
    CONNECTION_FORCED: ConnectionForced,
    INVALID_PATH: InvalidPath,
    ACCESS_REFUSED: AccessRefused,
    COMMAND_INVALID: CommandInvalid,
    CHANNEL_ERROR: ChannelError,
    RESOURCE_ERROR: ResourceError,
    NOT_ALLOWED: NotAllowed,
    NOT_IMPLEMENTED: NotImplementedByBroker,
    INTERNAL_ERROR: InternalError,
}

_CHANNEL_CLASSES: dict[int, type[ChannelClosed]] = {
    ACCESS_REFUSED: AccessRefused,
    NOT_FOUND: NotFound,
    RESOURCE_LOCKED: ResourceLocked,
    PRECONDITION_FAILED: PreconditionFailed,
    NOT_IMPLEMENTED: NotImplementedByBroker,
}


def connection_closed(
    reply_code: int,
    reply_text: str = "",
    class_id: int = 0,
    method_id: int = 0,
    *,
    by_peer: bool = True,
) -> ConnectionClosed:
    """Build the :exc:`~trio_msg.errors.ConnectionClosed` subclass for ``reply_code``."""
    cls = _CONNECTION_CLASSES.get(reply_code, ConnectionClosed)
    return cls(reply_text, reply_code, class_id, method_id, by_peer=by_peer)


def channel_closed(
    reply_code: int,
    reply_text: str = "",
    class_id: int = 0,
    method_id: int = 0,
    *,
    by_peer: bool = True,
) -> ChannelClosed:
    """Build the :exc:`~trio_msg.errors.ChannelClosed` subclass for ``reply_code``."""
    cls = _CHANNEL_CLASSES.get(reply_code, ChannelClosed)
    return cls(reply_text, reply_code, class_id, method_id, by_peer=by_peer)
