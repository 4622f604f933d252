"""The connection and channel state machines.

:class:`AMQPConnection` takes bytes (:meth:`~AMQPConnection.receive_data`) and
the time (:meth:`~AMQPConnection.tick`) in, and gives events
(:meth:`~AMQPConnection.next_events`) and bytes to send
(:meth:`~AMQPConnection.data_to_send`) out.  Commands (open a channel,
publish, declare a queue, ack...) append whole frames to the outbound buffer,
so a driver with a single writer never puts half a frame on the wire.

Automatic replies (heartbeats, ``connection.close-ok``, ``channel.close-ok``,
``channel.flow-ok``) are queued without the driver's help.

Synchronous requests are queued per channel and sent one at a time; each gets
a *token* that its :class:`~.events.RpcReply` carries back.  A request whose
caller gave up is :meth:`~AMQPChannel.abandon`\\ ed: dropped if not yet sent,
its reply swallowed (and undone where that matters: an abandoned consumer is
cancelled, an abandoned ``basic.get`` requeued) if it was.
"""

from __future__ import annotations

import platform
import re
import struct
from bisect import bisect_left, bisect_right, insort
from collections import deque
from typing import Any

from pamqp import base as _pbase
from pamqp import commands as C
from pamqp import encode as _pencode

from . import events as ev
from . import frames as fr
from . import sasl
from ._build import record
from .errors import (
    CHANNEL_ERROR,
    COMMAND_INVALID,
    CONTENT_TOO_LARGE,
    REPLY_SUCCESS,
    UNEXPECTED_FRAME,
    AuthenticationError,
    ChannelNotOpen,
    ConnectionLost,
    FrameError,
    HeartbeatTimeout,
    LocalProtocolError,
    MessageStateError,
    RemoteProtocolError,
    TrioMsgError,
    UnexpectedFrame,
    WrongProtocol,
    channel_closed,
    connection_closed,
)
from .state import (
    CHANNEL_TRANSITIONS,
    CONNECTION_TRANSITIONS,
    ChannelState,
    ConnectionState,
)

__all__ = ["DEFAULT_MAX_BODY_SIZE", "AMQPChannel", "AMQPConnection"]

DEFAULT_MAX_BODY_SIZE = 128 * 1024 * 1024  # RabbitMQ's own maximum
#: Outbound pieces this large are written as they are, not copied into one
#: string with their neighbours (:meth:`AMQPConnection.buffers_to_send`).
VECTOR_MIN = 16 * 1024
VERSION = "0.1.0"

CAPABILITIES = {
    "publisher_confirms": True,
    "consumer_cancel_notify": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
}

_U32 = struct.Struct(">I")
_unpack_header = fr._FRAME_HEADER.unpack_from
_unpack_content_header = fr._CONTENT_HEADER.unpack_from
_unpack_tag_bits = fr._QB.unpack_from
_unpack_tag_bits_len = fr._QBB.unpack_from
_new_delivery = ev.new_delivery
_DELIVER_ID = _U32.pack(C.Basic.Deliver.index)
_ACK_ID = _U32.pack(C.Basic.Ack.index)
_NACK_ID = _U32.pack(C.Basic.Nack.index)
_ACK = ev.Outcome.ACK
_NACK = ev.Outcome.NACK

# Which replies each synchronous request accepts.
_REPLIES: dict[type[_pbase.Frame], tuple[type[_pbase.Frame], ...]] = {
    C.Exchange.Declare: (C.Exchange.DeclareOk,),
    C.Exchange.Delete: (C.Exchange.DeleteOk,),
    C.Exchange.Bind: (C.Exchange.BindOk,),
    C.Exchange.Unbind: (C.Exchange.UnbindOk,),
    C.Queue.Declare: (C.Queue.DeclareOk,),
    C.Queue.Bind: (C.Queue.BindOk,),
    C.Queue.Unbind: (C.Queue.UnbindOk,),
    C.Queue.Purge: (C.Queue.PurgeOk,),
    C.Queue.Delete: (C.Queue.DeleteOk,),
    C.Basic.Qos: (C.Basic.QosOk,),
    C.Basic.Consume: (C.Basic.ConsumeOk,),
    C.Basic.Cancel: (C.Basic.CancelOk,),
    C.Basic.Get: (C.Basic.GetOk, C.Basic.GetEmpty),
    C.Basic.Recover: (C.Basic.RecoverOk,),
    C.Confirm.Select: (C.Confirm.SelectOk,),
    C.Tx.Select: (C.Tx.SelectOk,),
    C.Tx.Commit: (C.Tx.CommitOk,),
    C.Tx.Rollback: (C.Tx.RollbackOk,),
    C.Channel.Flow: (C.Channel.FlowOk,),
}
_REPLY_TYPES = frozenset(t for ts in _REPLIES.values() for t in ts)


def _amqp_name(method: type[_pbase.Frame]) -> str:
    """pamqp's ``"Queue.DeclareOk"`` as AMQP spells it: ``"queue.declare-ok"``."""
    cls, _, name = str(method.name).partition(".")
    return cls.lower() + "." + re.sub(r"(?<!^)([A-Z])", r"-\1", name).lower()


#: The AMQP name of each reply method (see events.RpcReply).
_REPLY_NAMES: dict[type[_pbase.Frame], str] = {
    reply: _amqp_name(reply) for replies in _REPLIES.values() for reply in replies
}


def _reply_name(method: _pbase.Frame) -> str:
    return _REPLY_NAMES[type(method)]


def _lower_nonzero(a: int, b: int) -> int:
    if a == 0:
        return b
    if b == 0:
        return a
    return min(a, b)


@record
class _Rpc:
    token: int
    method: _pbase.Frame
    replies: tuple[type[_pbase.Frame], ...]
    abandoned: bool = False


@record
class _Publish:
    mandatory: bool
    exchange: str
    routing_key: str
    returned: bool = False


class AMQPConnection:
    """The client side of one AMQP 0-9-1 connection, without IO.

    Typical driver loop::

        conn.initiate()
        send(conn.data_to_send())
        while True:
            conn.receive_data(recv())      # may raise RemoteProtocolError
            for event in conn.next_events(): ...
            send(conn.data_to_send())

    and, on a timer, ``conn.tick(now)`` (heartbeats; :meth:`next_deadline`
    says when).  When the transport breaks, ``conn.connection_lost(exc)``.
    """

    def __init__(
        self,
        *,
        username: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        auth_mechanism: str | None = None,
        frame_max: int = 131072,
        channel_max: int = 2047,
        heartbeat: int | None = 60,
        connection_name: str | None = None,
        client_properties: dict[str, Any] | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        locale: str = "en_US",
    ) -> None:
        self._username = username
        self._password = password
        self.vhost = vhost
        self.auth_mechanism = auth_mechanism
        self.mechanism = ""
        self._pref_frame_max = frame_max
        self._pref_channel_max = channel_max
        self._pref_heartbeat = heartbeat
        self.max_body_size = max_body_size
        self.locale = locale
        props: dict[str, Any] = {
            "product": "trio_msg",
            "version": VERSION,
            "platform": f"{platform.python_implementation()} {platform.python_version()}",
            "information": "https://github.com/trio-msg/trio_msg",
            "capabilities": dict(CAPABILITIES),
        }
        if connection_name is not None:
            props["connection_name"] = connection_name
        if client_properties:
            props.update(client_properties)
        self.client_properties = props

        self.state = ConnectionState.INIT
        self.server_properties: dict[str, Any] = {}
        self.frame_max = fr.FRAME_MIN_SIZE
        self.channel_max = channel_max or 65535
        self.heartbeat = 0
        self.blocked = False
        self.error: TrioMsgError | None = None
        self.channels: dict[int, AMQPChannel] = {}
        # Channels whose close crossed the broker's: we answered its close,
        # and its close-ok for ours is still to come.  Their numbers are not
        # reused until it does.
        self._crossed: set[int] = set()
        #: Channels the broker closed, oldest first: RabbitMQ may still send
        #: a delivery on one after its channel.close (one that its queue had
        #: in flight), so their frames are dropped, and a new channel takes
        #: another number while one is free.
        self._peer_closed: dict[int, None] = {}

        self._reader = fr.FrameReader(fr.FRAME_MIN_SIZE, 0)
        self._properties: dict[bytes, Any] = {}  # decoded property lists (frames.cached_properties)
        # The last consumer tag, exchange and routing key _fast_deliver
        # decoded, raw and as str: deliveries in a row nearly always repeat
        # them, and sharing one str (instead of a new one per message) saves
        # about 80 bytes a field for every message held in a delivery buffer.
        self._tag_raw = self._exch_raw = self._rkey_raw = b""
        self._tag_str = self._exch_str = self._rkey_str = ""
        self._out: list[fr.Buffer] = []
        self._out_size = 0
        #: A piece of at least VECTOR_MIN bytes is queued (buffers_to_send).
        self._out_large = False
        #: The channel whose ``basic.ack`` is the last piece queued, while
        #: ``_out`` is ``_ack_tail_len`` long (AMQPChannel.ack merges into it).
        self._ack_tail: AMQPChannel | None = None
        self._ack_tail_len = 0
        self._events: list[ev.Event] = []
        self._next_token = 1
        self._received = False
        self._sent = False
        self._last_recv: float | None = None
        self._last_send: float | None = None

    def __repr__(self) -> str:
        return (
            f"<AMQPConnection {self.state.value} user={self._username!r} vhost={self.vhost!r} "
            f"channels={len(self.channels)}>"
        )

    # --- plumbing ------------------------------------------------------------

    def _move(self, what: str) -> None:
        key = (self.state, what)
        nxt = CONNECTION_TRANSITIONS.get(key)
        if nxt is None:
            raise UnexpectedFrame(f"{what!r} is not allowed in connection state {self.state.value}")
        self.state = nxt

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    def _write_many(self, parts: list[fr.Buffer]) -> None:
        self._out.extend(parts)
        size = sum(map(len, parts))
        self._out_size += size
        if size >= VECTOR_MIN:
            self._out_large = True

    def _send_method(self, channel: int, method: _pbase.Frame) -> None:
        self._write(fr.encode_method(channel, method))

    def _token(self) -> int:
        token = self._next_token
        self._next_token += 1
        return token

    @property
    def frame_in_progress(self) -> int:
        """The size in bytes of the frame received in part, once its header
        is in (0 otherwise): a driver can size its next read by it, large
        for a large frame, small for the usual run of small ones."""
        return self._reader.frame_in_progress

    @property
    def outbound_size(self) -> int:
        """Bytes queued and not yet taken by :meth:`data_to_send`."""
        return self._out_size

    def data_to_send(self) -> bytes:
        """Take every byte queued for the peer (possibly ``b""``)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 and type(out[0]) is bytes else b"".join(out)
        self._taken()
        return data

    def _taken(self) -> None:
        """The outbound queue was taken whole."""
        self._out = []
        self._out_size = 0
        self._out_large = False
        self._ack_tail = None
        self._sent = True

    def buffers_to_send(self) -> list[fr.Buffer]:
        """Take every byte queued for the peer, as a list of buffers to
        write in order (``sendmsg``); empty if there is nothing.

        The same bytes as :meth:`data_to_send`, without its copy of large
        pieces: a piece of at least ``VECTOR_MIN`` bytes (a large body, or
        a view of one of its frames) is its own buffer, and the pieces
        between them are joined.  Joining a 1 MiB body into one string
        was a copy per message, and with it a fresh allocation that the
        allocator took from the system and gave back each time."""
        if not self._out_large:
            data = self.data_to_send()
            return [data] if data else []
        out: list[fr.Buffer] = []
        run: list[fr.Buffer] = []
        for piece in self._out:
            if len(piece) >= VECTOR_MIN:
                if run:
                    out.append(run[0] if len(run) == 1 else b"".join(run))
                    run = []
                out.append(piece)
            else:
                run.append(piece)
        if run:
            out.append(run[0] if len(run) == 1 else b"".join(run))
        self._taken()
        return out

    def next_events(self) -> list[ev.Event]:
        """Take every event produced so far, in order."""
        events = self._events
        self._events = []
        return events

    @property
    def is_open(self) -> bool:
        return self.state is ConnectionState.OPEN

    # --- commands ---------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the protocol header that starts the handshake."""
        if self.state is not ConnectionState.INIT:
            raise LocalProtocolError(f"the handshake was already started ({self.state.value})")
        self._move("send protocol-header")
        self._write(fr.PROTOCOL_HEADER)

    def close(self, reply_code: int = REPLY_SUCCESS, reply_text: str = "Normal shutdown") -> None:
        """Queue ``connection.close``.  The final :class:`~.events.ConnectionTerminated`
        comes with ``close-ok`` (or with :meth:`connection_lost`)."""
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED, ConnectionState.ERROR):
            return
        if self.state is ConnectionState.INIT:
            self._terminate(connection_closed(reply_code, reply_text, by_peer=False))
            return
        was = self.state
        self._move("send close")
        if was is ConnectionState.AWAIT_START:
            self._terminate(connection_closed(reply_code, reply_text, by_peer=False))
            return
        self._send_method(
            0,
            fr.make_method(
                C.Connection.Close,
                reply_code=reply_code,
                reply_text=reply_text[:255],
                class_id=0,
                method_id=0,
            ),
        )

    def connection_lost(self, error: TrioMsgError | None = None) -> None:
        """The transport is gone: close every channel, resolve every
        unconfirmed publish as unknown, and emit ConnectionTerminated."""
        if self.state is ConnectionState.CLOSED:
            return
        if error is None:
            if self.state in (
                ConnectionState.AWAIT_START,
                ConnectionState.AWAIT_TUNE,
                ConnectionState.AWAIT_OPEN_OK,
            ):
                # Not a refused login: the broker refuses with a 403
                # (authentication_failure_close, which we ask for).
                error = ConnectionLost("the connection to the broker was lost during the handshake")
            elif self.state is ConnectionState.CLOSING:
                error = connection_closed(REPLY_SUCCESS, "connection closed", by_peer=False)
            else:
                error = ConnectionLost("the connection to the broker was lost")
        self.state = ConnectionState.CLOSED
        self._terminate(error)

    def _terminate(self, error: TrioMsgError) -> None:
        self.state = ConnectionState.CLOSED
        if self.error is None:
            self.error = error
        for channel in list(self.channels.values()):
            channel._gone(error)
        self.channels.clear()
        self._events.append(ev.ConnectionTerminated(error))

    def open_channel(self, channel_id: int | None = None) -> AMQPChannel:
        """Queue ``channel.open``; :class:`~.events.ChannelOpened` follows."""
        if self.state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"connection is not open ({self.state.value})", CHANNEL_ERROR)
        peer_closed = self._peer_closed
        if channel_id is None:
            for candidate in range(1, self.channel_max + 1):
                if (
                    candidate not in self.channels
                    and candidate not in self._crossed
                    and candidate not in peer_closed
                ):
                    channel_id = candidate
                    break
            else:
                if not peer_closed:
                    raise LocalProtocolError(
                        f"all {self.channel_max} channels are in use", CHANNEL_ERROR
                    )
                channel_id = next(iter(peer_closed))  # the one closed longest ago
        elif (
            not 1 <= channel_id <= self.channel_max
            or channel_id in self.channels
            or channel_id in self._crossed
        ):
            raise LocalProtocolError(
                f"channel {channel_id} is in use or out of range", CHANNEL_ERROR
            )
        peer_closed.pop(channel_id, None)
        channel = AMQPChannel(self, channel_id)
        self.channels[channel_id] = channel
        self._send_method(channel_id, C.Channel.Open())
        return channel

    # --- time -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` should next be called (``None``: no heartbeats)."""
        if not self.heartbeat or self.state not in (
            ConnectionState.AWAIT_OPEN_OK,
            ConnectionState.OPEN,
            ConnectionState.CLOSING,
        ):
            return None
        if self._last_send is None or self._last_recv is None:
            return 0.0
        return min(self._last_send + self.heartbeat / 2, self._last_recv + 2 * self.heartbeat)

    def reading_paused(self) -> None:
        """The driver is not reading on purpose (a consumer's full buffer
        holds it back): whatever the peer sent sits unread, so its silence
        proves nothing.  Counts as hearing from it, for the next
        :meth:`tick`; our own heartbeats still go out."""
        self._received = True

    def tick(self, now: float) -> None:
        """Drive heartbeats: queue one when half an interval passed without
        sending; declare the peer dead (ConnectionTerminated with
        :class:`~trio_msg.errors.HeartbeatTimeout`) after two silent intervals."""
        if self.next_deadline() is None:
            return
        if self._received or self._last_recv is None:
            self._last_recv = now
            self._received = False
        if self._sent or self._last_send is None:
            self._last_send = now
            self._sent = False
        if now - self._last_recv >= 2 * self.heartbeat:
            self.connection_lost(
                HeartbeatTimeout(
                    f"the broker sent nothing for {now - self._last_recv:.1f}s "
                    f"(heartbeat interval {self.heartbeat}s)"
                )
            )
            return
        if now - self._last_send >= self.heartbeat / 2 and not self._out:
            self._write(fr.HEARTBEAT_FRAME)

    # --- input ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer.  Events go to :meth:`next_events`.

        :raises RemoteProtocolError: the peer broke the protocol.  The
            connection is then dead: ``connection.close`` with the reply code
            is queued, every channel closed, ConnectionTerminated emitted;
            every later call raises the same error.
        """
        if self.state is ConnectionState.ERROR:
            assert isinstance(self.error, RemoteProtocolError)
            raise self.error
        if self.state is ConnectionState.CLOSED:
            return
        if not data:
            return
        self._received = True
        if data.__class__ is not bytes:
            data = bytes(data)
        buf = self._reader.take(data)
        if buf is None:
            return  # still inside a frame
        try:
            self._frames(buf)
        except RemoteProtocolError as exc:
            error = exc
            if (
                self.state is ConnectionState.AWAIT_START
                and isinstance(exc, FrameError)
                and not isinstance(exc, WrongProtocol)
            ):
                # The first bytes the server sent are no AMQP frame: it is
                # some other server (HTTP, the management port, ...).
                error = WrongProtocol(
                    f"the server does not speak AMQP 0-9-1: it sent {buf[:40]!r} ({exc})"
                )
            self._protocol_error(error)
            if error is exc:
                raise
            raise error from exc

    def _frames(self, buf: bytes) -> None:
        """Cut ``buf`` into frames and handle them; hand what is left (the
        start of an incomplete frame) back to the reader.

        This is the receive loop, so it is written for speed: frames are
        cut here (with the reader's limits, checked on the header before
        the payload is looked at), payloads are single slices of ``buf``,
        and the commonest sequence, ``basic.deliver`` + content header +
        body all in ``buf``, is handled in one go by :meth:`_fast_deliver`,
        as are confirms; everything else goes frame by frame to the channel
        machines.  ``tests/protocol/test_splits.py`` and ``test_decode.py``
        check that feeding the same bytes whole (the fast way) or byte by
        byte (always the ordinary way) gives the same events and state.
        """
        reader = self._reader
        frame_max = reader.frame_max
        channel_max = reader.channel_max
        channels = self.channels
        end = len(buf)
        pos = 0
        try:
            while end - pos >= 7:
                frame_type, channel_id, size = _unpack_header(buf, pos)
                if not 0 < frame_type < 4 or size + 8 > frame_max or channel_id > channel_max:
                    fr.check_frame_header(
                        buf, pos, frame_type, channel_id, size, frame_max, channel_max
                    )
                stop = pos + 7 + size
                if stop >= end:  # payload or frame-end octet not here yet
                    break
                if buf[stop] != 0xCE:
                    raise fr.bad_frame_end(buf[stop])
                if channel_id == 0:
                    payload = buf[pos + 7 : stop]
                    pos = stop + 1
                    if frame_type == fr.FRAME_METHOD:
                        self._on_connection_method(fr.decode_method(payload))
                        if self.state is ConnectionState.CLOSED:
                            return
                        frame_max = reader.frame_max  # tune may have changed them
                        channel_max = reader.channel_max
                    elif frame_type != fr.FRAME_HEARTBEAT:
                        raise UnexpectedFrame("content frame on channel 0")
                    continue
                if self.state is ConnectionState.CLOSING:
                    pos = stop + 1
                    continue  # after our connection.close only close/close-ok count
                channel = channels.get(channel_id)
                if channel is None:
                    payload = buf[pos + 7 : stop]
                    pos = stop + 1
                    self._on_unknown_channel(frame_type, channel_id, payload)
                    continue
                if (
                    frame_type == fr.FRAME_METHOD
                    and channel._content_method is None
                    and channel.state is ChannelState.OPEN
                    and size >= 4
                ):
                    method_id = buf[pos + 7 : pos + 11]
                    if method_id == _DELIVER_ID:
                        after = self._fast_deliver(channel, buf, pos, stop, end, frame_max)
                        if after:
                            pos = after
                            continue
                    elif size == 13 and method_id in (_ACK_ID, _NACK_ID):
                        tag, bits = _unpack_tag_bits(buf, pos + 11)
                        pos = stop + 1
                        channel._on_confirm(
                            tag, (bits & 1) == 1, _ACK if method_id == _ACK_ID else _NACK
                        )
                        continue
                payload = buf[pos + 7 : stop]
                pos = stop + 1
                if frame_type == fr.FRAME_METHOD:
                    channel._on_method(payload)
                elif frame_type == fr.FRAME_HEADER:
                    channel._on_header(payload)
                else:
                    channel._on_body(payload)
        finally:
            reader.keep(buf, pos)

    def _fast_deliver(
        self, channel: AMQPChannel, buf: bytes, pos: int, stop: int, end: int, frame_max: int
    ) -> int:
        """A ``basic.deliver`` (the method frame at ``buf[pos:stop + 1]``), its
        content header and its one body frame (none for an empty body), all
        complete in ``buf``, on an open channel with no message in progress:
        the common case, done at once.

        Returns the offset after the last of those frames, or 0 when anything
        is unusual (a frame incomplete, of another type or channel, over a
        limit, undecodable; a body in several frames; a body too large): the
        frames then go the ordinary way, one by one, which deals with it and
        raises the same errors in the same order.  Nothing is changed before
        everything has been checked.
        """
        channel_id = channel.id
        after: int
        try:
            # fr.deliver_fields, inlined (test_decode checks both against pamqp)
            n = buf[pos + 11]
            p = pos + 12 + n
            raw = buf[pos + 12 : p]
            if raw == self._tag_raw:
                consumer_tag = self._tag_str
            else:
                consumer_tag = self._tag_str = raw.decode()
                self._tag_raw = raw
            tag, bits, n = _unpack_tag_bits_len(buf, p)
            p += 10
            q = p + n
            raw = buf[p:q]
            if raw == self._exch_raw:
                exchange = self._exch_str
            else:
                exchange = self._exch_str = raw.decode()
                self._exch_raw = raw
            n = buf[q]
            p = q + 1 + n
            raw = buf[q + 1 : p]
            if raw == self._rkey_raw:
                routing_key = self._rkey_str
            else:
                routing_key = self._rkey_str = raw.decode()
                self._rkey_raw = raw
            if p != stop:
                return 0
            h = stop + 1  # the content header frame
            if end - h < 22:
                return 0
            frame_type, frame_channel, size = _unpack_header(buf, h)
            h_stop = h + 7 + size
            if (
                frame_type != fr.FRAME_HEADER
                or frame_channel != channel_id
                or size < 14
                or size + 8 > frame_max
                or h_stop >= end
                or buf[h_stop] != 0xCE
            ):
                return 0
            class_id, _weight, body_size, flags = _unpack_content_header(buf, h + 7)
            if class_id != 60 or flags & 1 or body_size > self.max_body_size:
                return 0
            if flags:
                props = fr.cached_properties(buf[h + 19 : h_stop], self._properties)
            else:
                props = fr.EMPTY_PROPERTIES
            if body_size:
                b = h_stop + 1  # the body frame
                if end - b < 8:
                    return 0
                frame_type, frame_channel, size = _unpack_header(buf, b)
                after = b + 8 + size
                if (
                    frame_type != fr.FRAME_BODY
                    or frame_channel != channel_id
                    or size != body_size
                    or size + 8 > frame_max
                    or after > end
                    or buf[after - 1] != 0xCE
                ):
                    return 0
                body = buf[b + 7 : after - 1]
            else:
                body = b""
                after = h_stop + 1
        except (ValueError, IndexError, struct.error, TypeError, RecursionError):
            return 0
        # AMQPChannel._deliver, inlined
        no_ack = channel.consumers.get(consumer_tag)
        if no_ack is False:
            channel._unsettle(tag)
        if channel._orphans and consumer_tag in channel._orphans:
            if no_ack is False:
                channel.reject(tag, requeue=True)
            return after
        self._events.append(
            _new_delivery(
                channel_id,
                consumer_tag,
                tag,
                (bits & 1) == 1,
                exchange,
                routing_key,
                props,
                body,
            )
        )
        return after

    def _on_unknown_channel(self, frame_type: int, channel_id: int, payload: bytes) -> None:
        """A frame for a channel that is not (or no longer) open."""
        if channel_id in self._crossed:
            # Its close crossed the broker's: only its close-ok matters (it
            # frees the channel number); content still in flight is dropped.
            if frame_type == fr.FRAME_METHOD and isinstance(
                fr.decode_method(payload), C.Channel.CloseOk
            ):
                self._crossed.discard(channel_id)
            return
        if channel_id in self._peer_closed:
            return  # sent before the broker's close took effect
        raise RemoteProtocolError(
            f"frame on channel {channel_id}, which is not open", CHANNEL_ERROR
        )

    def _protocol_error(self, exc: RemoteProtocolError) -> None:
        if self.state in (
            ConnectionState.OPEN,
            ConnectionState.AWAIT_OPEN_OK,
            ConnectionState.AWAIT_TUNE,
        ):
            self._send_method(
                0,
                fr.make_method(
                    C.Connection.Close,
                    reply_code=exc.reply_code,
                    reply_text=str(exc)[:255],
                    class_id=0,
                    method_id=0,
                ),
            )
        self._terminate(exc)
        self.state = ConnectionState.ERROR

    def _on_connection_method(self, method: _pbase.Frame) -> None:
        name = method.name
        if self.state is ConnectionState.CLOSING and name not in (
            "Connection.Close",
            "Connection.CloseOk",
        ):
            return
        was = self.state
        self._move(f"recv {name}")
        if isinstance(method, C.Connection.Start):
            self._on_start(method)
        elif isinstance(method, C.Connection.Tune):
            self._on_tune(method)
        elif isinstance(method, C.Connection.OpenOk):
            self._events.append(
                ev.ConnectionOpened(
                    self.server_properties,
                    self.frame_max,
                    self.channel_max,
                    self.heartbeat,
                    self.mechanism,
                )
            )
        elif isinstance(method, C.Connection.Close):
            self._send_method(0, C.Connection.CloseOk())
            code = method.reply_code
            error: TrioMsgError = connection_closed(
                code, method.reply_text, method.class_id, method.method_id
            )
            if code == 403 and was is ConnectionState.AWAIT_TUNE:
                error = AuthenticationError(
                    method.reply_text, code, method.class_id, method.method_id
                )
            self._terminate(error)
        elif isinstance(method, C.Connection.CloseOk):
            self._terminate(connection_closed(REPLY_SUCCESS, "Normal shutdown", by_peer=False))
        elif isinstance(method, C.Connection.Blocked):
            self.blocked = True
            self._events.append(ev.ConnectionBlocked(method.reason))
        elif isinstance(method, C.Connection.Unblocked):
            self.blocked = False
            self._events.append(ev.ConnectionUnblocked())
        elif isinstance(method, C.Connection.Secure):
            raise UnexpectedFrame(
                "the broker sent a SASL challenge; no supported mechanism uses one"
            )

    def _on_start(self, method: C.Connection.Start) -> None:
        if (method.version_major, method.version_minor) != (0, 9):
            raise WrongProtocol(
                f"the server speaks AMQP {method.version_major}-{method.version_minor}, not 0-9-1",
                COMMAND_INVALID,
            )
        self.server_properties = dict(method.server_properties or {})
        try:
            mechanism = sasl.choose_mechanism(str(method.mechanisms), self.auth_mechanism)
        except AuthenticationError as exc:
            self._terminate(exc)
            return
        self.mechanism = mechanism
        response = sasl.initial_response(mechanism, self._username, self._password)
        payload = b"".join(
            (
                _U32.pack(C.Connection.StartOk.index),
                _pencode.field_table(self.client_properties),
                fr._shortstr(mechanism),
                _U32.pack(len(response)),
                response,
                fr._shortstr(self.locale),
            )
        )
        self._write(struct.pack(">BHI", fr.FRAME_METHOD, 0, len(payload)) + payload + b"\xce")

    def _on_tune(self, method: C.Connection.Tune) -> None:
        self.channel_max = _lower_nonzero(self._pref_channel_max, method.channel_max) or 65535
        self.frame_max = _lower_nonzero(self._pref_frame_max, method.frame_max) or 0xFFFFFFFF
        if self.frame_max < fr.FRAME_MIN_SIZE:
            raise RemoteProtocolError(
                f"the broker proposed frame_max {self.frame_max} < 4096", COMMAND_INVALID
            )
        if self._pref_heartbeat is None:
            self.heartbeat = method.heartbeat
        else:
            self.heartbeat = _lower_nonzero(self._pref_heartbeat, method.heartbeat)
        self._reader.frame_max = self.frame_max
        self._reader.channel_max = self.channel_max
        self._send_method(
            0,
            C.Connection.TuneOk(
                channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=self.heartbeat
            ),
        )
        self._send_method(0, fr.make_method(C.Connection.Open, virtual_host=self.vhost))


class AMQPChannel:
    """One channel of an :class:`AMQPConnection`.

    Obtained from :meth:`AMQPConnection.open_channel`.  A channel object is
    one incarnation: once closed it stays closed, and a new channel with the
    same number is a new object, so a delivery tag of a closed channel can
    never be acked on its successor.
    """

    def __init__(self, connection: AMQPConnection, channel_id: int) -> None:
        self.connection = connection
        self.id = channel_id
        self.state = ChannelState.OPENING
        self.error: TrioMsgError | None = None
        self.confirming = False
        self.transactional = False
        self.flow_active = True
        self.consumers: dict[str, bool] = {}  # consumer tag -> no_ack
        self._orphans: set[str] = set()
        self._rpcs: deque[_Rpc] = deque()
        self._in_flight: _Rpc | None = None
        #: Tags to settle, ascending.  A sorted list, not a dict: a dict
        #: emptied from the front as it fills at the back keeps about three
        #: slots per live tag (72 KiB for a window of 1,000, against 8), and
        #: finding its first live entry scans the deleted ones before it.
        self._unsettled: list[int] = []
        #: The highest tag put in _unsettled, and whether they all came in
        #: rising order (as the spec has them), which AMQPChannel.ack's
        #: merging relies on.
        self._top_tag = 0
        self._rising = True
        self._unconfirmed: dict[int, _Publish] = {}
        self._next_publish_tag = 1
        self._lowest_unconfirmed = 1
        # content being assembled
        self._content_method: _pbase.Frame | None = None
        self._content_props: fr.BasicProperties | None = None
        self._content_size = 0
        self._content_chunks: list[bytes] = []
        self._content_received = 0
        self._expect_header = False

    def __repr__(self) -> str:
        return f"<AMQPChannel {self.id} {self.state.value}>"

    @property
    def is_open(self) -> bool:
        return self.state is ChannelState.OPEN

    @property
    def unconfirmed(self) -> int:
        """Publishes in confirm mode not yet resolved."""
        return len(self._unconfirmed)

    @property
    def pending_requests(self) -> int:
        """Synchronous requests queued or in flight (abandoned ones included)."""
        return len(self._rpcs) + (self._in_flight is not None)

    def _move(self, what: str) -> None:
        nxt = CHANNEL_TRANSITIONS.get((self.state, what))
        if nxt is None:
            raise UnexpectedFrame(f"{what!r} is not allowed in channel state {self.state.value}")
        self.state = nxt

    def _check_open(self) -> None:
        if self.state is not ChannelState.OPEN:
            if self.error is not None and self.state is ChannelState.CLOSED:
                raise self.error
            raise ChannelNotOpen(f"channel {self.id} is {self.state.value.lower()}")

    # --- requests -------------------------------------------------------------

    def request(self, method: _pbase.Frame) -> int:
        """Queue a synchronous request; its reply comes as an RpcReply with
        the returned token."""
        self._check_open()
        replies = _REPLIES.get(type(method)) or _REPLIES[type(method).__mro__[1]]
        rpc = _Rpc(self.connection._token(), method, replies)
        if self._in_flight is None:
            self._send_rpc(rpc)
        else:
            self._rpcs.append(rpc)
        return rpc.token

    def _send_rpc(self, rpc: _Rpc) -> None:
        self._in_flight = rpc
        self.connection._send_method(self.id, rpc.method)
        if isinstance(rpc.method, C.Confirm.Select):
            self.confirming = True
        elif isinstance(rpc.method, C.Tx.Select):
            self.transactional = True

    def abandon(self, token: int) -> None:
        """The caller waiting for ``token`` gave up: drop the request if it
        was not sent, otherwise swallow (and where needed undo) its reply."""
        for rpc in self._rpcs:
            if rpc.token == token:
                self._rpcs.remove(rpc)
                return
        if self._in_flight is not None and self._in_flight.token == token:
            self._in_flight.abandoned = True

    def exchange_declare(
        self,
        exchange: str,
        exchange_type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> int:
        return self.request(
            fr.make_method(
                C.Exchange.Declare,
                exchange=fr.check_shortstr(exchange, "exchange"),
                exchange_type=fr.check_shortstr(exchange_type, "exchange type"),
                passive=passive,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=arguments or {},
            )
        )

    def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> int:
        return self.request(
            fr.make_method(
                C.Exchange.Delete,
                exchange=fr.check_shortstr(exchange, "exchange"),
                if_unused=if_unused,
            )
        )

    def _exchange_binding(
        self,
        cls: type[_pbase.Frame],
        destination: str,
        source: str,
        routing_key: str,
        arguments: dict[str, Any] | None,
    ) -> int:
        return self.request(
            fr.make_method(
                cls,
                destination=fr.check_shortstr(destination, "destination"),
                source=fr.check_shortstr(source, "source"),
                routing_key=fr.check_shortstr(routing_key, "routing key"),
                arguments=arguments or {},
            )
        )

    def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> int:
        return self._exchange_binding(C.Exchange.Bind, destination, source, routing_key, arguments)

    def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> int:
        return self._exchange_binding(
            C.Exchange.Unbind, destination, source, routing_key, arguments
        )

    def queue_declare(
        self,
        queue: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> int:
        return self.request(
            fr.make_method(
                C.Queue.Declare,
                queue=fr.check_shortstr(queue, "queue"),
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments or {},
            )
        )

    def _queue_binding(
        self,
        cls: type[_pbase.Frame],
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: dict[str, Any] | None,
    ) -> int:
        return self.request(
            fr.make_method(
                cls,
                queue=fr.check_shortstr(queue, "queue"),
                exchange=fr.check_shortstr(exchange, "exchange"),
                routing_key=fr.check_shortstr(routing_key, "routing key"),
                arguments=arguments or {},
            )
        )

    def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> int:
        return self._queue_binding(C.Queue.Bind, queue, exchange, routing_key, arguments)

    def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> int:
        return self._queue_binding(C.Queue.Unbind, queue, exchange, routing_key, arguments)

    def queue_purge(self, queue: str) -> int:
        return self.request(fr.make_method(C.Queue.Purge, queue=fr.check_shortstr(queue, "queue")))

    def queue_delete(self, queue: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        return self.request(
            fr.make_method(
                C.Queue.Delete,
                queue=fr.check_shortstr(queue, "queue"),
                if_unused=if_unused,
                if_empty=if_empty,
            )
        )

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, global_: bool = False
    ) -> int:
        if not 0 <= prefetch_count <= 0xFFFF:
            raise LocalProtocolError(f"prefetch_count must be 0..65535, not {prefetch_count}")
        if not 0 <= prefetch_size <= 0xFFFFFFFF:
            raise LocalProtocolError(f"prefetch_size must be 0..2**32-1, not {prefetch_size}")
        return self.request(
            C.Basic.Qos(prefetch_size=prefetch_size, prefetch_count=prefetch_count, global_=global_)
        )

    def basic_consume(
        self,
        queue: str,
        consumer_tag: str = "",
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> int:
        return self.request(
            fr.make_method(
                C.Basic.Consume,
                queue=fr.check_shortstr(queue, "queue"),
                consumer_tag=fr.check_shortstr(consumer_tag, "consumer tag"),
                no_ack=no_ack,
                exclusive=exclusive,
                arguments=arguments or {},
            )
        )

    def basic_cancel(self, consumer_tag: str) -> int:
        return self.request(fr.make_method(C.Basic.Cancel, consumer_tag=consumer_tag))

    def basic_get(self, queue: str, *, no_ack: bool = False) -> int:
        return self.request(
            fr.make_method(C.Basic.Get, queue=fr.check_shortstr(queue, "queue"), no_ack=no_ack)
        )

    def basic_recover(self, requeue: bool = False) -> int:
        return self.request(C.Basic.Recover(requeue=requeue))

    def confirm_select(self) -> int:
        if self.transactional:
            raise LocalProtocolError("a transactional channel cannot be put in confirm mode")
        return self.request(C.Confirm.Select())

    def tx_select(self) -> int:
        if self.confirming:
            raise LocalProtocolError("a channel in confirm mode cannot be made transactional")
        return self.request(C.Tx.Select())

    def tx_commit(self) -> int:
        return self.request(C.Tx.Commit())

    def tx_rollback(self) -> int:
        return self.request(C.Tx.Rollback())

    def flow(self, active: bool) -> int:
        return self.request(C.Channel.Flow(active=active))

    def close(self, reply_code: int = REPLY_SUCCESS, reply_text: str = "Normal shutdown") -> None:
        """Queue ``channel.close``; ChannelClosed follows its ``close-ok``.
        Requests not yet sent are dropped."""
        if self.state in (ChannelState.CLOSING, ChannelState.CLOSED):
            return
        self._move("send close")
        self._rpcs.clear()
        self._reset_content()
        self.connection._send_method(
            self.id,
            fr.make_method(
                C.Channel.Close,
                reply_code=reply_code,
                reply_text=reply_text[:255],
                class_id=0,
                method_id=0,
            ),
        )

    # --- asynchronous commands -----------------------------------------------

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: fr.BasicProperties = fr.EMPTY_PROPERTIES,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> int | None:
        """Queue ``basic.publish`` with its content.  In confirm mode,
        returns the publish's sequence number (its Confirmation will name it)."""
        self._check_open()
        conn = self.connection
        if len(body) > conn.max_body_size:
            raise LocalProtocolError(
                f"body of {len(body)} bytes exceeds max_body_size {conn.max_body_size}",
                CONTENT_TOO_LARGE,
            )
        conn._write_many(
            fr.encode_publish(
                self.id,
                exchange,
                routing_key,
                body,
                properties,
                conn.frame_max,
                mandatory,
                immediate,
            )
        )
        if not self.confirming:
            return None
        tag = self._next_publish_tag
        self._next_publish_tag = tag + 1
        self._unconfirmed[tag] = _Publish(mandatory, exchange, routing_key)
        return tag

    def _settle(self, delivery_tag: int, multiple: bool, what: str) -> None:
        if self.state is not ChannelState.OPEN:
            raise MessageStateError(
                f"cannot {what} delivery {delivery_tag}: channel {self.id} is closed "
                "(the broker redelivers unsettled messages)"
            )
        unsettled = self._unsettled
        if multiple:
            if delivery_tag == 0:
                unsettled.clear()
                return
            done = bisect_right(unsettled, delivery_tag)
            if not done:
                raise MessageStateError(f"no unsettled delivery up to tag {delivery_tag} to {what}")
            del unsettled[:done]
            return
        if unsettled and unsettled[0] == delivery_tag:  # the usual one: the oldest
            del unsettled[0]
            return
        i = bisect_left(unsettled, delivery_tag)
        if i == len(unsettled) or unsettled[i] != delivery_tag:
            raise MessageStateError(
                f"delivery {delivery_tag} is already settled (or unknown) on channel {self.id}"
            )
        del unsettled[i]

    def _end_ack_run(self) -> None:
        if self.connection._ack_tail is self:
            self.connection._ack_tail = None

    def _unsettle(self, delivery_tag: int) -> None:
        """A delivery the consumer must settle arrived."""
        if self._rising and delivery_tag > self._top_tag:
            self._unsettled.append(delivery_tag)  # (still sorted)
        else:
            self._rising = False  # a broker breaking the spec: never merge acks
            if not self.is_unsettled(delivery_tag):
                insort(self._unsettled, delivery_tag)
        self._top_tag = delivery_tag

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Queue ``basic.ack``.

        Acks in a row are merged while they wait to be sent: acking the
        oldest unsettled delivery when the last frame queued on the
        connection is this channel's ack replaces that frame with one
        ``basic.ack`` of this tag with ``multiple`` set.  The broker
        settles the same deliveries either way (every one up to this tag
        is then acked, by this frame or by the frames before it), and a
        consumer acking each message in turn sends one frame per flush
        instead of one per message, which the broker handles much faster.
        Anything else queued in between (another channel's ack, a publish)
        ends the run, so frames keep their order on the wire."""
        unsettled = self._unsettled
        oldest = not multiple and self._rising and bool(unsettled) and unsettled[0] == delivery_tag
        self._settle(delivery_tag, multiple, "ack")
        conn = self.connection
        if oldest:
            out = conn._out
            if conn._ack_tail is self and conn._ack_tail_len == len(out):
                out[-1] = fr.encode_ack(self.id, 80, delivery_tag, 1)  # the same size
                return
            conn._write(fr.encode_ack(self.id, 80, delivery_tag, 0))
            conn._ack_tail = self
            conn._ack_tail_len = len(out)
            return
        conn._write(fr.encode_ack(self.id, 80, delivery_tag, multiple))

    def nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self._settle(delivery_tag, multiple, "nack")
        self.connection._write(fr.encode_ack(self.id, 120, delivery_tag, multiple | (requeue << 1)))

    def reject(self, delivery_tag: int, requeue: bool = True) -> None:
        self._settle(delivery_tag, False, "reject")
        self.connection._write(fr.encode_ack(self.id, 90, delivery_tag, int(requeue)))

    @property
    def unsettled_count(self) -> int:
        """How many deliveries received in ack mode are not settled yet."""
        return len(self._unsettled)

    def is_unsettled(self, delivery_tag: int) -> bool:
        unsettled = self._unsettled
        i = bisect_left(unsettled, delivery_tag)
        return i < len(unsettled) and unsettled[i] == delivery_tag

    # --- input ------------------------------------------------------------------

    def _reset_content(self) -> None:
        self._content_method = None
        self._content_props = None
        self._content_chunks = []
        self._content_received = 0
        self._expect_header = False

    def _on_method(self, payload: bytes) -> None:
        if self._content_method is not None and self.state is not ChannelState.CLOSING:
            raise UnexpectedFrame(f"method frame on channel {self.id} in the middle of a message")
        method = fr.decode_method(payload)
        emit = self.connection._events.append
        name = method.name
        if self.state is ChannelState.CLOSING:
            if isinstance(method, C.Channel.CloseOk | C.Channel.Close):
                if isinstance(method, C.Channel.Close):
                    self.connection._send_method(self.id, C.Channel.CloseOk())
                    self.connection._crossed.add(self.id)
                self._move(f"recv {name}")
                if self.error is not None:
                    error = self.error
                elif isinstance(method, C.Channel.Close):
                    error = channel_closed(
                        method.reply_code, method.reply_text, method.class_id, method.method_id
                    )
                else:
                    error = channel_closed(REPLY_SUCCESS, "Normal shutdown", by_peer=False)
                self._closed(error)
            elif isinstance(method, C.Basic.Ack | C.Basic.Nack):
                self._on_confirm_method(method)
            elif isinstance(method, C.Basic.Deliver | C.Basic.GetOk | C.Basic.Return):
                self._content_method = method  # the content that follows is dropped
                self._expect_header = True
            return
        if isinstance(method, C.Basic.Deliver):
            self._check_state_open(name)
            self._start_content(method)
        elif isinstance(method, C.Basic.Ack | C.Basic.Nack):
            self._check_state_open(name)
            self._on_confirm_method(method)
        elif type(method) in _REPLY_TYPES:
            self._check_state_open(name)
            self._on_reply(method)
        elif isinstance(method, C.Basic.Return):
            self._check_state_open(name)
            self._start_content(method)
        elif isinstance(method, C.Channel.OpenOk):
            self._move(f"recv {name}")
            emit(ev.ChannelOpened(self.id))
        elif isinstance(method, C.Channel.Close):
            self._move(f"recv {name}")
            self.connection._send_method(self.id, C.Channel.CloseOk())
            self.connection._peer_closed[self.id] = None
            self._closed(
                channel_closed(
                    method.reply_code, method.reply_text, method.class_id, method.method_id
                )
            )
        elif isinstance(method, C.Basic.Cancel):
            self._check_state_open(name)
            self.consumers.pop(method.consumer_tag, None)
            if not method.nowait:
                self.connection._send_method(
                    self.id, fr.make_method(C.Basic.CancelOk, consumer_tag=method.consumer_tag)
                )
            if method.consumer_tag in self._orphans:
                self._orphans.discard(method.consumer_tag)
            else:
                emit(ev.ConsumerCancelled(self.id, method.consumer_tag))
        elif isinstance(method, C.Channel.Flow):
            self._check_state_open(name)
            self.flow_active = bool(method.active)
            self.connection._send_method(self.id, C.Channel.FlowOk(active=method.active))
            emit(ev.ChannelFlow(self.id, self.flow_active))
        else:
            raise UnexpectedFrame(f"unexpected {name} on channel {self.id}")

    def _check_state_open(self, name: str) -> None:
        if self.state is not ChannelState.OPEN:
            raise UnexpectedFrame(f"{name} on channel {self.id} before channel.open-ok")

    def _on_reply(self, method: _pbase.Frame) -> None:
        rpc = self._in_flight
        if rpc is None or type(method) not in rpc.replies:
            expected = "nothing" if rpc is None else rpc.method.name
            raise UnexpectedFrame(
                f"unexpected {method.name} on channel {self.id} (waiting for {expected})"
            )
        if isinstance(method, C.Basic.GetOk):
            self._start_content(method)  # the reply is emitted with its content
            return
        if isinstance(method, C.Basic.ConsumeOk):
            assert isinstance(rpc.method, C.Basic.Consume)
            self.consumers[method.consumer_tag] = bool(rpc.method.no_ack)
            if rpc.abandoned:
                # Nobody will read this consumer's messages: cancel it at once.
                # Send the cancel at once, ahead of any queued request, and
                # mark *it* abandoned (not whichever request comes next).
                self._orphans.add(method.consumer_tag)
                cancel = fr.make_method(C.Basic.Cancel, consumer_tag=method.consumer_tag)
                self._send_rpc(
                    _Rpc(self.connection._token(), cancel, (C.Basic.CancelOk,), abandoned=True)
                )
                return
        elif isinstance(method, C.Basic.CancelOk):
            self.consumers.pop(method.consumer_tag, None)
            self._orphans.discard(method.consumer_tag)
        elif isinstance(method, C.Basic.RecoverOk):
            # The broker redelivers every unacked message under new tags;
            # the old ones must never be acked again, nor merged into.
            self._unsettled.clear()
            self._end_ack_run()
        elif isinstance(method, C.Channel.FlowOk):
            pass
        if not rpc.abandoned:
            self.connection._events.append(
                ev.RpcReply(self.id, rpc.token, _reply_name(method), dict(method))
            )
        self._finish_rpc()

    def _finish_rpc(self) -> None:
        self._in_flight = None
        if self._rpcs and self.state is ChannelState.OPEN:
            self._send_rpc(self._rpcs.popleft())

    def _start_content(self, method: _pbase.Frame) -> None:
        self._content_method = method
        self._expect_header = True

    def _on_header(self, payload: bytes) -> None:
        if self._content_method is None or not self._expect_header:
            if self.state is ChannelState.CLOSING:
                return
            raise UnexpectedFrame(f"content header on channel {self.id} without a method before it")
        class_id, size, props = fr.decode_content_header(payload, self.connection._properties)
        if self.state is ChannelState.CLOSING:
            self._content_size = size
            self._expect_header = False
            if size == 0:
                self._reset_content()
            return
        if class_id != 60:
            raise UnexpectedFrame(f"content header of class {class_id}, not basic (60)")
        limit = self.connection.max_body_size
        if size > limit:
            # Refuse without buffering: closing the channel makes the broker
            # requeue the message (it was never acked), so nothing is lost.
            self.error = channel_closed(
                CONTENT_TOO_LARGE,
                f"message of {size} bytes exceeds max_body_size {limit}; channel closed, "
                "the broker keeps the message",
                by_peer=False,
            )
            self.close(
                CONTENT_TOO_LARGE, f"message body of {size} bytes exceeds the client's limit"
            )
            return
        self._content_props = props
        self._content_size = size
        self._expect_header = False
        if size == 0:
            self._complete_content(b"")

    def _on_body(self, payload: bytes) -> None:
        if self._content_method is None or self._expect_header:
            if self.state is ChannelState.CLOSING:
                return
            raise UnexpectedFrame(f"content body on channel {self.id} without a header before it")
        received = self._content_received + len(payload)
        if received > self._content_size:
            raise FrameError(
                f"content body on channel {self.id} is larger than its header said ({self._content_size})",
                UNEXPECTED_FRAME,
            )
        if self.state is ChannelState.CLOSING:
            self._content_received = received
            if received == self._content_size:
                self._reset_content()
            return
        if received == self._content_size and not self._content_chunks:
            self._complete_content(payload)
            return
        self._content_chunks.append(payload)
        self._content_received = received
        if received == self._content_size:
            self._complete_content(b"".join(self._content_chunks))

    def _complete_content(self, body: bytes) -> None:
        method = self._content_method
        props = self._content_props or fr.EMPTY_PROPERTIES
        self._reset_content()
        if isinstance(method, C.Basic.Deliver):
            self._deliver(
                method.consumer_tag,
                method.delivery_tag,
                bool(method.redelivered),
                method.exchange,
                method.routing_key,
                props,
                body,
            )
        elif isinstance(method, C.Basic.GetOk):
            rpc = self._in_flight
            assert rpc is not None and isinstance(rpc.method, C.Basic.Get)
            if not rpc.method.no_ack:
                self._unsettle(method.delivery_tag)
            if rpc.abandoned:
                if not rpc.method.no_ack:
                    self.reject(method.delivery_tag, requeue=True)
            else:
                self.connection._events.append(
                    ev.RpcReply(self.id, rpc.token, _reply_name(method), dict(method), props, body)
                )
            self._finish_rpc()
        elif isinstance(method, C.Basic.Return):
            self.connection._events.append(
                ev.new_returned(
                    self.id,
                    self._pair_return(method),
                    method.reply_code,
                    method.reply_text,
                    method.exchange,
                    method.routing_key,
                    props,
                    body,
                )
            )

    def _deliver(
        self,
        consumer_tag: str,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        props: fr.BasicProperties,
        body: bytes,
    ) -> None:
        """A whole ``basic.deliver`` message arrived."""
        no_ack = self.consumers.get(consumer_tag)
        if no_ack is False:
            self._unsettle(delivery_tag)
        if self._orphans and consumer_tag in self._orphans:
            if no_ack is False:
                self.reject(delivery_tag, requeue=True)
            return
        self.connection._events.append(
            ev.new_delivery(
                self.id,
                consumer_tag,
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
                props,
                body,
            )
        )

    def _pair_return(self, method: C.Basic.Return) -> int | None:
        for tag, pub in self._unconfirmed.items():
            if (
                pub.mandatory
                and not pub.returned
                and pub.exchange == method.exchange
                and pub.routing_key == method.routing_key
            ):
                pub.returned = True
                return tag
        return None

    def _on_confirm_method(self, method: C.Basic.Ack | C.Basic.Nack) -> None:
        outcome = _ACK if isinstance(method, C.Basic.Ack) else _NACK
        self._on_confirm(method.delivery_tag, bool(method.multiple), outcome)

    def _on_confirm(self, tag: int, multiple: bool, outcome: ev.Outcome) -> None:
        """``basic.ack`` / ``basic.nack`` from the broker (publisher confirms)."""
        pending = self._unconfirmed
        if multiple:
            low = self._lowest_unconfirmed
            if tag == 0 or tag >= self._next_publish_tag:
                # never loop past the last publish (a hostile tag could be 2**64-1)
                tag = self._next_publish_tag - 1
            tags = tuple(t for t in range(low, tag + 1) if pending.pop(t, None) is not None)
            self._lowest_unconfirmed = max(low, tag + 1)
        elif pending.pop(tag, None) is not None:
            tags = (tag,)
        else:
            return  # already resolved: a broker never does this, and it harms nothing
        self._advance_lowest()
        if tags:
            self.connection._events.append(ev.new_confirmation(self.id, tags, outcome))

    def _advance_lowest(self) -> None:
        low = self._lowest_unconfirmed
        nxt = self._next_publish_tag
        pending = self._unconfirmed
        while low < nxt and low not in pending:
            low += 1
        self._lowest_unconfirmed = low

    def _closed(self, error: TrioMsgError) -> None:
        """The channel is gone (close-ok, a peer close, or the connection)."""
        self.state = ChannelState.CLOSED
        self.error = error
        self._rpcs.clear()
        self._in_flight = None
        self._unsettled.clear()
        self._end_ack_run()
        self.consumers.clear()
        self._reset_content()
        events = self.connection._events
        if self._unconfirmed:
            events.append(ev.Confirmation(self.id, tuple(self._unconfirmed), ev.Outcome.UNKNOWN))
            self._unconfirmed.clear()
        events.append(ev.ChannelClosed(self.id, error))
        if self.connection.channels.get(self.id) is self:
            del self.connection.channels[self.id]

    def _gone(self, error: TrioMsgError) -> None:
        if self.state is not ChannelState.CLOSED:
            self._move("connection closed")
            self._closed(error)
