"""The embedded broker's protocol core: one client connection, sans IO.

:class:`ServerConnection` takes the client's bytes (:meth:`receive_data`) and
the time (:meth:`tick`), applies what they say to the shared
:class:`~.model.Broker`, and gives bytes to send (:meth:`data_to_send`).
It reuses the client's frame codec (:mod:`trio_msg._protocol.frames`):
frames are cut and checked by :class:`~trio_msg._protocol.frames.FrameReader`,
methods decoded by pamqp, content headers by the project's own codec.

Deliveries caused by another connection (a publish there, an ack that frees
a consumer here) are written to this connection's output too; the driver
learns of them through :attr:`ServerConnection.on_output`.

Errors are RabbitMQ's: a channel error closes the channel with
``channel.close`` (and the channel then ignores everything until
``channel.close-ok``), a connection error closes the connection with
``connection.close``, each with the code and text RabbitMQ 3.10 sends.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable
from typing import Any

from pamqp import base as _pbase
from pamqp import commands as C
from pamqp import decode as _pdecode

from .._protocol import frames as fr
from .._protocol.errors import FrameError
from .model import (
    ACCESS_REFUSED,
    CHANNEL_ERROR,
    COMMAND_INVALID,
    FRAME_ERROR,
    NO_ROUTE,
    NOT_ALLOWED,
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    UNEXPECTED_FRAME,
    AMQPError,
    Broker,
    Queue,
    StoredMessage,
    message_ttl,
)

__all__ = ["REPLY_TO", "ServerConnection"]

_PUBLISH_ID = struct.pack(">I", C.Basic.Publish.index)

#: The pseudo-queue of RabbitMQ's direct reply-to.
REPLY_TO = "amq.rabbitmq.reply-to"

SERVER_PROPERTIES: dict[str, Any] = {
    "product": "trio_msg memory broker",
    "platform": "Python",
    "capabilities": {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
    },
}

_HEADER = "header"  # waiting for the protocol header
_START = "start"  # connection.start sent
_TUNE = "tune"  # connection.tune sent
_OPEN = "open"  # tune-ok received, waiting for connection.open
_RUNNING = "running"
_CLOSING = "closing"  # connection.close sent, waiting for close-ok
_CLOSED = "closed"


#: How late, at most, the client may be woken for a delivery to a consumer
#: with others in flight, and for a confirm (see ``driver.MemoryWire``): a
#: client busy with the others reads these in batches, not one by one, and
#: a task that waits for a confirm reads it itself.  The confirm's bound is
#: about RabbitMQ's own confirm latency on loopback.
LAZY_DELIVERY = 0.001
LAZY_CONFIRM = 0.0002
_ACK_ID = struct.pack(">I", C.Basic.Ack.index)
_FRAME_TYPES = frozenset((fr.FRAME_METHOD, fr.FRAME_HEADER, fr.FRAME_BODY, fr.FRAME_HEARTBEAT))
#: Bodies up to this size are sent in one byte string with their frames;
#: larger ones as views (no copy before the transport's).
_JOIN_UNDER = 4096
_SHORT = struct.Struct(">B")
_DELIVER_ID = struct.pack(">I", C.Basic.Deliver.index)
_FRAME_HEAD = struct.Struct(">BHI")
# a frame's end octet and the next frame's header
_END_HEADER_HEAD = struct.Struct(">BBHI")
_END_BODY_HEAD = _END_HEADER_HEAD
_TAG_BITS = struct.Struct(">QB")


class _Publish:
    """``basic.publish`` as read by :func:`_decode` (the one method that
    comes once per message: pamqp's generic decoder is kept off it)."""

    __slots__ = ("exchange", "immediate", "mandatory", "routing_key")
    index = C.Basic.Publish.index
    name = "Basic.Publish"

    def __init__(self, exchange: str, routing_key: str, mandatory: bool, immediate: bool) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate


def _decode(payload: bytes) -> Any:
    """A method frame's payload: ``basic.publish`` by hand, the rest by
    :func:`~trio_msg._protocol.frames.decode_method`."""
    if payload[:4] != _PUBLISH_ID:
        return fr.decode_method(payload)
    try:
        pos = 6  # method id, ticket
        size = payload[pos]
        exchange = payload[pos + 1 : pos + 1 + size].decode()
        pos += 1 + size
        size = payload[pos]
        routing_key = payload[pos + 1 : pos + 1 + size].decode()
        pos += 1 + size
        bits = payload[pos]
        if pos + 1 != len(payload) or len(exchange.encode()) != payload[6]:
            raise ValueError("length mismatch")
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"cannot decode Basic.Publish: {exc!r}") from None
    return _Publish(exchange, routing_key, bool(bits & 1), bool(bits & 2))


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    return _SHORT.pack(len(raw)) + raw


def _deliver_frame(
    channel: int, consumer_tag: str, tag: int, redelivered: bool, exchange: str, key: str
) -> bytes:
    """A whole ``basic.deliver`` method frame."""
    payload = b"".join(
        (
            _DELIVER_ID,
            _shortstr(consumer_tag),
            _TAG_BITS.pack(tag, redelivered),
            _shortstr(exchange),
            _shortstr(key),
        )
    )
    return _FRAME_HEAD.pack(fr.FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


def _ids(method: _pbase.Frame) -> tuple[int, int]:
    index = method.index
    return index >> 16, index & 0xFFFF


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _Consumer:
    """One ``basic.consume`` on a channel."""

    __slots__ = (
        "arguments",
        "channel",
        "exclusive",
        "head",
        "no_ack",
        "prefetch",
        "priority",
        "queue",
        "tag",
        "unacked",
    )

    def __init__(
        self,
        channel: _Channel,
        queue: Queue,
        tag: str,
        no_ack: bool,
        exclusive: bool,
        prefetch: int,
        arguments: dict[str, Any],
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch
        self.arguments = arguments
        self.unacked = 0
        #: basic.deliver's payload up to the delivery tag.
        self.head = _DELIVER_ID + _shortstr(tag)
        priority = arguments.get("x-priority", 0)
        self.priority = priority if isinstance(priority, int) else 0

    def can_take(self) -> bool:
        if self.no_ack:
            return self.channel.open
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        return self.channel.can_deliver()

    def take(self, queue: Queue, message: StoredMessage) -> None:
        self.channel.deliver(self, queue, message)

    def cancelled_by_server(self, queue: Queue) -> None:
        self.channel.consumer_cancelled(self)


class _Unacked:
    __slots__ = ("consumer", "message", "queue")

    def __init__(self, queue: Queue, message: StoredMessage, consumer: _Consumer | None) -> None:
        self.queue = queue
        self.message = message
        self.consumer = consumer


class _Channel:
    def __init__(self, connection: ServerConnection, number: int) -> None:
        self.connection = connection
        self.broker = connection.broker
        self.number = number
        self.open = True
        self.consumers: dict[str, _Consumer] = {}
        self.unacked: dict[int, _Unacked] = {}
        self.next_tag = 1
        self.prefetch = 0  # for consumers made from now on (global=false)
        self.global_prefetch = 0  # the channel's limit (global=true)
        self.confirming = False
        self.publish_seq = 0
        self.transactional = False
        self.tx_publishes: list[tuple[str, str, fr.BasicProperties, bytes, bool]] = []
        self.tx_settles: list[tuple[str, int, bool, bool]] = []
        #: Direct reply-to: the consumer tag and the key replies come by.
        self.reply_tag: str | None = None
        self.reply_key: str | None = None
        # the publish whose content is coming
        self.publishing: C.Basic.Publish | None = None
        self.properties: fr.BasicProperties | None = None
        self.header = b""  # its content header's payload, as sent
        self.body_size = 0
        self.body: list[bytes] = []
        self.received = 0

    # --- output ---------------------------------------------------------------

    def send(self, method: _pbase.Frame) -> None:
        self.connection.send_method(self.number, method)

    def deliver(self, consumer: _Consumer, queue: Queue, message: StoredMessage) -> None:
        tag = self.next_tag
        self.next_tag = tag + 1
        if not consumer.no_ack:
            self.unacked[tag] = _Unacked(queue, message, consumer)
            consumer.unacked += 1
            queue.unacked += 1
        connection = self.connection
        if consumer.unacked > 1:
            # others in flight: its client has deliveries to work on
            connection.lazy = LAZY_DELIVERY
        try:
            self._deliver(consumer, tag, message)
        finally:
            connection.lazy = 0.0

    def _deliver(self, consumer: _Consumer, tag: int, message: StoredMessage) -> None:
        connection = self.connection
        number = self.number
        keys = connection._keys.get((message.exchange, message.routing_key))
        if keys is None:
            keys = connection.deliver_keys(message.exchange, message.routing_key)
        head = consumer.head
        method = (
            _FRAME_HEAD.pack(fr.FRAME_METHOD, number, len(head) + 9 + len(keys)),
            head,
            _TAG_BITS.pack(tag, message.redelivered),
            keys,
        )
        header = message.header
        if header is None:
            connection._push(b"".join(method), b"\xce")
            connection.send_content(number, message.body, message.properties)
            return
        body = message.body
        size = len(body)
        if size < _JOIN_UNDER and size + 8 <= connection.frame_max:
            # the whole delivery in one byte string
            connection._push(
                b"".join(
                    (
                        *method,
                        _END_HEADER_HEAD.pack(fr.FRAME_END, fr.FRAME_HEADER, number, len(header)),
                        header,
                        _END_BODY_HEAD.pack(fr.FRAME_END, fr.FRAME_BODY, number, size),
                        body,
                        b"\xce",
                    )
                    if size
                    else (
                        *method,
                        _END_HEADER_HEAD.pack(fr.FRAME_END, fr.FRAME_HEADER, number, len(header)),
                        header,
                        b"\xce",
                    )
                )
            )
            return
        connection._push(
            b"".join(
                (
                    *method,
                    _END_HEADER_HEAD.pack(fr.FRAME_END, fr.FRAME_HEADER, number, len(header)),
                    header,
                    b"\xce",
                )
            ),
            *fr._body_frames(number, body, connection.frame_max),
        )

    def can_deliver(self) -> bool:
        return self.open and (not self.global_prefetch or len(self.unacked) < self.global_prefetch)

    def consumer_cancelled(self, consumer: _Consumer) -> None:
        """The broker cancels the consumer (its queue was deleted)."""
        if self.consumers.pop(consumer.tag, None) is None:
            return
        if self.open and self.connection.cancel_notify:
            self.send(fr.make_method(C.Basic.Cancel, consumer_tag=consumer.tag, nowait=True))

    # --- closing --------------------------------------------------------------

    def release(self) -> None:
        """The channel is closed (either side, or with its connection): its
        consumers go, its unacknowledged messages go back to their queues."""
        self.open = False
        if self.reply_key is not None:
            self.broker.replies.pop(self.reply_key, None)
            self.reply_key = self.reply_tag = None
        queues: dict[int, Queue] = {}
        for consumer in list(self.consumers.values()):
            self.broker.remove_consumer(consumer.queue, consumer)
            queues[id(consumer.queue)] = consumer.queue
        self.consumers.clear()
        for entry in self.unacked.values():
            entry.queue.unacked -= 1
            if self.broker.queues.get(entry.queue.name) is entry.queue:
                entry.queue.requeue(entry.message)
                queues[id(entry.queue)] = entry.queue
        self.unacked.clear()
        for queue in queues.values():
            if self.broker.queues.get(queue.name) is queue:
                self.broker.dispatch(queue)

    # --- settling -------------------------------------------------------------

    def settle(self, what: str, tag: int, multiple: bool, requeue: bool) -> None:
        if what == "ack" and not multiple and len(self.consumers) <= 1:
            # one delivery acknowledged: the usual case, in fewer steps
            entry = self.unacked.pop(tag, None)
            if entry is None:
                raise AMQPError(PRECONDITION_FAILED, f"unknown delivery tag {tag}")
            queue = entry.queue
            queue.unacked -= 1
            if entry.consumer is not None:
                entry.consumer.unacked -= 1
            broker = self.broker
            queues = broker.queues
            if queues.get(queue.name) is queue:
                broker.dispatch(queue)
            for consumer in self.consumers.values():
                other = consumer.queue
                if other is not queue and queues.get(other.name) is other:
                    broker.dispatch(other)
            return
        if multiple:
            if tag:
                # (tags are added in increasing order: stop at the first above)
                tags = []
                for t in self.unacked:
                    if t > tag:
                        break
                    tags.append(t)
            else:
                tags = list(self.unacked)
        else:
            if tag not in self.unacked:
                raise AMQPError(PRECONDITION_FAILED, f"unknown delivery tag {tag}")
            tags = [tag]
        if multiple and tag and not tags:
            raise AMQPError(PRECONDITION_FAILED, f"unknown delivery tag {tag}")
        touched: dict[int, Queue] = {}
        for t in tags:
            entry = self.unacked.pop(t)
            entry.queue.unacked -= 1
            if entry.consumer is not None:
                entry.consumer.unacked -= 1
            if what != "ack" and self.broker.queues.get(entry.queue.name) is entry.queue:
                if requeue:
                    entry.queue.requeue(entry.message)
                else:
                    self.broker.dead_letter(entry.queue, [entry.message], "rejected")
            touched[id(entry.queue)] = entry.queue
        for consumer in self.consumers.values():
            touched[id(consumer.queue)] = consumer.queue
        for queue in touched.values():
            if self.broker.queues.get(queue.name) is queue:
                self.broker.dispatch(queue)

    # --- publishing -------------------------------------------------------------

    def publish(
        self,
        exchange: str,
        routing_key: str,
        properties: fr.BasicProperties,
        body: bytes,
        mandatory: bool,
        header: bytes | None = None,
    ) -> bool:
        """Route and enqueue one message; False when a queue refused it.
        ``header``: the content header's payload as published, kept to be
        sent again with each delivery (its properties unchanged)."""
        broker = self.broker
        if (
            exchange == ""
            and properties.headers is None
            and properties.expiration is None
            and properties.reply_to != REPLY_TO
        ):
            # The common case: the default exchange, to a queue without
            # arguments (or to none).
            queue = broker.queues.get(routing_key)
            if queue is not None and not queue.arguments:
                broker.enqueue_plain(queue, exchange, routing_key, properties, body, header)
                return True
        message_ttl(properties.expiration)  # a bad one is refused before routing
        if properties.reply_to == REPLY_TO:
            # Direct reply-to: the reply comes to this channel's reply consumer.
            if self.reply_key is None:
                raise AMQPError(PRECONDITION_FAILED, "fast reply consumer does not exist")
            properties = dataclasses.replace(properties, reply_to=self.reply_key)
            header = None
        if exchange == "" and routing_key.startswith(REPLY_TO + "."):
            target = broker.replies.get(routing_key)
            if target is not None:
                target.deliver_reply(exchange, routing_key, properties, body)
                return True
            queues: list[Queue] = []
        else:
            queues = broker.route_all(exchange, routing_key, properties.headers)
        if not queues and mandatory:
            self.send(
                fr.make_method(
                    C.Basic.Return,
                    reply_code=NO_ROUTE,
                    reply_text="NO_ROUTE",
                    exchange=exchange,
                    routing_key=routing_key,
                )
            )
            self.connection.send_content(self.number, body, properties)
        return broker.enqueue(queues, exchange, routing_key, properties, body, header)

    def deliver_reply(
        self, exchange: str, routing_key: str, properties: fr.BasicProperties, body: bytes
    ) -> None:
        """A reply to this channel's direct reply-to consumer (no ack)."""
        if not self.open or self.reply_tag is None:
            return
        tag = self.next_tag
        self.next_tag += 1
        connection = self.connection
        connection._push(
            _deliver_frame(self.number, self.reply_tag, tag, False, exchange, routing_key)
        )
        connection.send_content(self.number, body, properties)


class ServerConnection:
    """The broker's side of one AMQP connection.

    ``users`` maps user names to passwords (guest/guest by default);
    ``heartbeat``, ``frame_max`` and ``channel_max`` are what it proposes in
    ``connection.tune``.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        users: dict[str, str] | None = None,
        heartbeat: int = 60,
        frame_max: int = 131072,
        channel_max: int = 2047,
        now: float = 0.0,
    ) -> None:
        self.broker = broker
        self.users = {"guest": "guest"} if users is None else dict(users)
        self.state = _HEADER
        self.heartbeat = heartbeat
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.reader = fr.FrameReader(fr.FRAME_MIN_SIZE, channel_max)
        self.channels: dict[int, _Channel] = {}
        #: Channels closed by the broker, waiting for the client's close-ok.
        self.closing_channels: set[int] = set()
        self.client_properties: dict[str, Any] = {}
        self.cancel_notify = False
        self.auth_failure_close = False
        self.user = ""
        self._out: list[fr.Buffer] = []
        #: A frame could not be cut (bad header or frame end): nothing after
        #: it is read.
        self._broken = False
        #: Encoded exchange + routing key fields of basic.deliver, by the pair.
        self._keys: dict[tuple[str, str], bytes] = {}
        #: Decoded properties by their bytes (a stream repeats a few).
        self._properties: dict[bytes, Any] = {}
        self._header_buf = b""
        self.last_received = now
        self.last_sent = now
        #: Called when output is added outside :meth:`receive_data` (a
        #: delivery caused by another connection).
        self.on_output: Callable[[], None] | None = None
        #: Why the connection ended, once it has.
        self.close_reason: str | None = None
        #: Whether connection.blocked was sent (and unblocked not yet).
        self.blocked = False
        self.blocked_capable = False
        self._paused = False
        self._held: list[fr.Frame] = []
        #: Called when a paused connection may be read again.
        self.on_resume: Callable[[], None] | None = None
        #: Called to drop the stream at once (:meth:`abort`).
        self.on_abort: Callable[[], None] | None = None
        #: Called once the connection is over (:attr:`closed`), however it ended.
        self.on_end: Callable[[], None] | None = None
        #: While output is queued that the client need not be woken for at
        #: once, how soon it must be (see ``driver.MemoryWire``); 0: at once.
        self.lazy = 0.0
        #: The transport was told of output lazily: :attr:`on_output` is
        #: called again for the next output (it may be more urgent).
        self.told_lazily = False

    # --- output -------------------------------------------------------------------

    def _push(self, *buffers: fr.Buffer) -> None:
        was_empty = not self._out
        self._out.extend(buffers)
        if (was_empty or self.told_lazily) and self.on_output is not None:
            self.on_output()

    def deliver_keys(self, exchange: str, routing_key: str) -> bytes:
        """basic.deliver's exchange and routing key fields, remembered."""
        keys = self._keys
        if len(keys) >= 256:
            keys.clear()
        encoded = keys[exchange, routing_key] = _shortstr(exchange) + _shortstr(routing_key)
        return encoded

    def send_method(self, channel: int, method: _pbase.Frame) -> None:
        self._push(fr.encode_method(channel, method))

    def send_stored(self, channel: int, message: StoredMessage) -> None:
        """A stored message's content: its content header as the publisher
        sent it, where its properties are unchanged, and its body."""
        header = message.header
        if header is None:
            self.send_content(channel, message.body, message.properties)
            return
        self._push(
            _FRAME_HEAD.pack(fr.FRAME_HEADER, channel, len(header)),
            header,
            b"\xce",
            *fr._body_frames(channel, message.body, self.frame_max),
        )

    def send_content(self, channel: int, body: bytes, properties: fr.BasicProperties) -> None:
        self._push(*fr.encode_content(channel, body, properties, self.frame_max))

    def data_to_send(self) -> bytes:
        """Everything queued for the client, and forget it."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def output_over(self, limit: int) -> bool:
        """Whether more than ``limit`` bytes are queued for the client
        (counted only when many buffers are: the usual answer is free)."""
        out = self._out
        return len(out) > 64 and sum(map(len, out)) > limit

    @property
    def closed(self) -> bool:
        """The connection is over: the driver sends what is left and closes
        the stream."""
        return self.state == _CLOSED

    # --- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float = 0.0) -> None:
        """Bytes from the client.  Never raises for anything the client
        sends: errors become ``channel.close`` / ``connection.close``."""
        if self.state == _CLOSED or not data:
            return
        self.last_received = now
        if self.state == _HEADER:
            data = self._header_buf + data
            if len(data) < 8:
                self._header_buf = data
                return
            header, data = data[:8], data[8:]
            self._header_buf = b""
            if header != fr.PROTOCOL_HEADER:
                # RabbitMQ answers a wrong header with the one it speaks, then closes.
                self._push(fr.PROTOCOL_HEADER)
                self._end("the client sent a wrong protocol header")
                return
            self.send_method(
                0,
                fr.make_method(
                    C.Connection.Start,
                    version_major=0,
                    version_minor=9,
                    server_properties=SERVER_PROPERTIES,
                    mechanisms="PLAIN AMQPLAIN",
                    locales="en_US",
                ),
            )
            self.state = _START
            if not data:
                return
        self._run(data)

    def _run(self, data: bytes) -> None:
        """Cut ``data`` (after what is held of a frame not yet complete) into
        frames, checked as :class:`~trio_msg._protocol.frames.FrameReader`
        checks them, and act on each in order; hold what is left of an
        incomplete frame for the next call.

        A ``basic.publish`` whose content header and body frames are all
        here is taken in one step (:meth:`_publish_whole`), and so is a
        plain ``basic.ack`` (:meth:`_ack`): the frames are the same, read
        with less ceremony.  Anything unusual about them goes the general
        way, frame by frame (:meth:`_frame`), which has every check.
        """
        if self._broken:
            return  # a framing error: nothing after it can be read
        reader = self.reader
        whole = reader.take(data)
        if whole is None:
            return
        pos = 0
        end = len(whole)
        try:
            while end - pos >= 7:
                if self.state == _CLOSED:
                    pos = end
                    return
                frame_type, number, size = _FRAME_HEAD.unpack_from(whole, pos)
                if (
                    size + 8 > reader.frame_max
                    or number > reader.channel_max
                    or frame_type not in _FRAME_TYPES
                    or (frame_type == fr.FRAME_HEARTBEAT and number)
                ):
                    try:
                        fr.check_frame_header(
                            whole,
                            pos,
                            frame_type,
                            number,
                            size,
                            reader.frame_max,
                            reader.channel_max,
                        )
                    except FrameError:
                        self._broken = True
                        raise
                stop = pos + 7 + size
                if stop >= end:
                    break  # its payload or frame-end octet is still to come
                if whole[stop] != fr.FRAME_END:
                    self._broken = True
                    raise fr.bad_frame_end(whole[stop])
                if frame_type == fr.FRAME_METHOD and not self._paused:
                    if whole.startswith(_PUBLISH_ID, pos + 7):
                        if self.broker.alarm is not None:
                            # A resource alarm: the broker stops reading a
                            # connection that publishes, and says so
                            # (connection.blocked); the publish is held.
                            self._pause()
                        else:
                            after = self._publish_whole(whole, pos, number, stop, end)
                            if after:
                                pos = after
                                continue
                    elif (
                        size == 13
                        and whole.startswith(_ACK_ID, pos + 7)
                        and self._ack(whole, pos + 11, number)
                    ):
                        pos = stop + 1
                        continue
                payload = whole[pos + 7 : stop]
                pos = stop + 1
                if self._paused:
                    self._held.append((frame_type, number, payload))
                    continue
                self._frame(frame_type, number, payload)
        except FrameError as exc:
            self._fail(AMQPError(exc.reply_code or FRAME_ERROR, str(exc)))
        except AMQPError as exc:
            self._fail(exc)
        finally:
            if not self._broken:
                reader.keep(whole, pos)

    def _run_frames(self, frames: list[fr.Frame]) -> None:
        """Act on frames held during a resource alarm."""
        try:
            for i, frame in enumerate(frames):
                if self.state == _CLOSED:
                    return
                if self.paused:
                    self._held += frames[i:]
                    return
                frame_type, channel, payload = frame
                if (
                    frame_type == fr.FRAME_METHOD
                    and payload[:4] == _PUBLISH_ID
                    and self.broker.alarm is not None
                ):
                    # A resource alarm: the broker stops reading a connection
                    # that publishes, and says so (connection.blocked).
                    self._pause()
                    self._held.append(frame)
                    continue
                self._frame(frame_type, channel, payload)
        except FrameError as exc:
            self._fail(AMQPError(exc.reply_code or FRAME_ERROR, str(exc)))
        except AMQPError as exc:
            self._fail(exc)

    def _fail(self, exc: AMQPError) -> None:
        # Before the handshake is done RabbitMQ drops the socket on a bad
        # frame; after it, it says why in connection.close.
        if self.state in (_START, _TUNE):
            self._end(exc.text)
        else:
            self._connection_error(exc, None)

    # --- resource alarms (connection.blocked) ------------------------------------

    @property
    def paused(self) -> bool:
        """The broker does not read this connection now (a resource alarm):
        the driver stops reading its stream until :attr:`on_resume`."""
        return self._paused

    def _pause(self) -> None:
        self._paused = True
        if self.blocked_capable and not self.blocked:
            self.blocked = True
            self.send_method(0, C.Connection.Blocked(reason=self.broker.alarm or ""))

    def alarm_cleared(self) -> None:
        """The broker's alarm is over: say so to a blocked client, and go on
        with what it sent meanwhile."""
        if self.blocked and self.state not in (_CLOSED, _CLOSING):
            self.send_method(0, C.Connection.Unblocked())
        self.blocked = False
        if not self._paused:
            return
        self._paused = False
        held, self._held = self._held, []
        self._run_frames(held)
        if not self._paused:
            self._run(b"")
        if not self._paused and self.on_resume is not None:
            self.on_resume()

    def abort(self) -> None:
        """Drop the connection without a word (its socket closed), as a
        network failure or a killed broker would."""
        if self.on_abort is not None:
            self.on_abort()
        self._end("connection dropped by the broker")

    def tick(self, now: float) -> None:
        """Heartbeats: send one when nothing was sent for half the interval;
        end the connection when the client was silent for two."""
        if self.state not in (_RUNNING, _OPEN) or not self.heartbeat:
            return
        if now - self.last_received > 2 * self.heartbeat and not self._paused:
            self._end(f"missed heartbeats from client, timeout: {self.heartbeat}s")
            return
        if now - self.last_sent >= self.heartbeat / 2:
            self._push(fr.HEARTBEAT_FRAME)

    def sent(self, now: float) -> None:
        """The driver wrote output at ``now``."""
        self.last_sent = now

    def connection_lost(self) -> None:
        """The stream ended (either side): release everything."""
        if self.state != _CLOSED:
            self._end("client unexpectedly closed TCP connection")

    def _end(self, reason: str) -> None:
        if self.state == _CLOSED:
            return
        self.state = _CLOSED
        self.close_reason = reason
        for channel in list(self.channels.values()):
            channel.release()
        self.channels.clear()
        self.broker.connection_gone(self)
        if self.on_end is not None:
            self.on_end()

    def server_close(self, code: int, text: str) -> None:
        """Close the connection from the broker's side (``rabbitmqctl
        close_connection``)."""
        if self.state in (_CLOSED, _CLOSING):
            return
        self._connection_error(AMQPError(code, text), None)

    # --- frames ------------------------------------------------------------------

    def _frame(self, frame_type: int, number: int, payload: bytes) -> None:
        if frame_type == fr.FRAME_HEARTBEAT:
            return
        if self.state == _CLOSING:
            # After connection.close only close-ok (or a crossing close) counts.
            if frame_type == fr.FRAME_METHOD:
                method = fr.decode_method(payload)
                if isinstance(method, C.Connection.CloseOk | C.Connection.Close):
                    if isinstance(method, C.Connection.Close):
                        self.send_method(0, C.Connection.CloseOk())
                    self._end("closed by the broker")
            return
        if number == 0:
            if frame_type != fr.FRAME_METHOD:
                raise AMQPError(
                    UNEXPECTED_FRAME,
                    f"expected method frame, got frame type {frame_type} on channel 0",
                )
            self._connection_method(fr.decode_method(payload))
            return
        if self.state != _RUNNING:
            raise AMQPError(COMMAND_INVALID, "channel frame before connection.open")
        if number in self.closing_channels:
            if frame_type == fr.FRAME_METHOD:
                method = fr.decode_method(payload)
                if isinstance(method, C.Channel.CloseOk):
                    self.closing_channels.discard(number)
                elif isinstance(method, C.Channel.Close):
                    # A crossing close: answered, and (as RabbitMQ does) the
                    # channel stays closing until the close-ok for ours.
                    self.send_method(number, C.Channel.CloseOk())
            return
        channel = self.channels.get(number)
        if frame_type == fr.FRAME_METHOD:
            method = _decode(payload)
            if channel is not None and channel.publishing is not None:
                raise AMQPError(
                    UNEXPECTED_FRAME,
                    "expected content header for class 60, got non content header frame instead",
                )
            if channel is None:
                if not isinstance(method, C.Channel.Open):
                    raise AMQPError(CHANNEL_ERROR, f"expected 'channel.open' on channel {number}")
                self.channels[number] = _Channel(self, number)
                self.send_method(number, C.Channel.OpenOk())
                return
            if isinstance(method, C.Channel.Open):
                raise AMQPError(CHANNEL_ERROR, "second 'channel.open' seen")
            try:
                self._channel_method(channel, method)
            except AMQPError as exc:
                if exc.connection:
                    self._connection_error(exc, method)
                else:
                    self._channel_error(channel, exc, method)
            return
        if channel is None:
            raise AMQPError(CHANNEL_ERROR, f"expected 'channel.open' on channel {number}")
        if frame_type == fr.FRAME_HEADER:
            if channel.publishing is None or channel.properties is not None:
                raise AMQPError(UNEXPECTED_FRAME, "content header without a publish")
            class_id, size, props = fr.decode_content_header(payload, self._properties)
            if class_id != 60:
                raise AMQPError(FRAME_ERROR, f"content header for class {class_id}")
            channel.properties = props
            channel.header = payload
            channel.body_size = size
            channel.body = []
            channel.received = 0
            if size == 0:
                self._published(channel)
            return
        # a body frame
        if channel.properties is None:
            raise AMQPError(UNEXPECTED_FRAME, "content body without a content header")
        channel.body.append(payload)
        channel.received += len(payload)
        if channel.received > channel.body_size:
            raise AMQPError(FRAME_ERROR, "content body larger than its header said")
        if channel.received == channel.body_size:
            self._published(channel)

    def _published(self, channel: _Channel) -> None:
        method = channel.publishing
        props = channel.properties
        assert method is not None and props is not None
        body = b"".join(channel.body)
        channel.publishing = None
        channel.properties = None
        channel.body = []
        self._take_message(
            channel,
            _text(method.exchange),
            _text(method.routing_key),
            bool(method.mandatory),
            props,
            body,
            channel.header,
            method,
        )

    def _take_message(
        self,
        channel: _Channel,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        props: fr.BasicProperties,
        body: bytes,
        header: bytes,
        method: _pbase.Frame | _Publish | None,
    ) -> None:
        """A whole published message: route it (or keep it for the
        transaction), and confirm it on a confirming channel.  ``method``:
        its ``basic.publish``, for an error's class and method ids (made
        from the rest when None)."""
        try:
            if channel.transactional:
                self.broker.exchange(exchange)
                channel.tx_publishes.append((exchange, routing_key, props, body, mandatory))
                return
            if self.broker.nacking and channel.confirming:
                self.broker.exchange(exchange)
                accepted = False  # scripted: the broker could not take it
            else:
                accepted = channel.publish(exchange, routing_key, props, body, mandatory, header)
        except AMQPError as exc:
            if method is None:
                method = _Publish(exchange, routing_key, mandatory, False)
            if exc.connection:
                self._connection_error(exc, method)
            else:
                self._channel_error(channel, exc, method)
            return
        if channel.confirming:
            channel.publish_seq += 1
            # basic.ack (method 80) or basic.nack (120), neither multiple
            confirm = fr.encode_ack(channel.number, 80 if accepted else 120, channel.publish_seq, 0)
            if self.broker.holding_confirms:
                self.broker.held_confirms.append((self, channel, confirm))
            else:
                # A task waiting for it reads it itself (it is here before
                # the publisher waits); otherwise nobody is in a hurry.
                self.lazy = LAZY_CONFIRM
                self._push(confirm)
                self.lazy = 0.0

    def _publish_whole(self, data: bytes, pos: int, number: int, stop: int, end: int) -> int:
        """A ``basic.publish`` method frame at ``data[pos:stop + 1]`` whose
        content header and body frames follow in ``data`` (before ``end``):
        take the message, and return where its last frame ends.  0 when
        anything is unusual or not all here (the frames then go one by
        one through :meth:`_frame`, which says what is wrong, if anything)."""
        if self.state != _RUNNING:
            return 0
        channel = self.channels.get(number)
        if channel is None or channel.publishing is not None:
            return 0
        # the method: id (4), ticket (2), exchange, routing key, bits
        p = pos + 13
        ex_end = p + 1 + data[p]
        if ex_end >= stop:
            return 0
        key_end = ex_end + 1 + data[ex_end]
        if key_end + 1 != stop:
            return 0
        bits = data[key_end]
        if bits & 2:
            return 0  # immediate: refused there
        try:
            exchange = data[p + 1 : ex_end].decode()
            routing_key = data[ex_end + 1 : key_end].decode()
        except UnicodeDecodeError:
            return 0
        if exchange:
            target = self.broker.exchanges.get(exchange)
            if target is None or target.internal:
                return 0
        # the content header
        frame_max = self.reader.frame_max
        h = stop + 1
        if end - h < 7:
            return 0
        kind, channel_number, size = _FRAME_HEAD.unpack_from(data, h)
        if kind != fr.FRAME_HEADER or channel_number != number or size + 8 > frame_max:
            return 0
        h_stop = h + 7 + size
        if h_stop >= end or data[h_stop] != fr.FRAME_END:
            return 0
        header = data[h + 7 : h_stop]
        try:
            class_id, body_size, props = fr.decode_content_header(header, self._properties)
        except FrameError:
            return 0
        if class_id != 60:
            return 0
        # the body frames
        b: int = h_stop + 1
        if not body_size:
            body = b""
        else:
            pieces: list[bytes | memoryview] = []
            got = 0
            view = None
            while got < body_size:
                if end - b < 7:
                    return 0
                kind, channel_number, size = _FRAME_HEAD.unpack_from(data, b)
                if kind != fr.FRAME_BODY or channel_number != number or size + 8 > frame_max:
                    return 0
                b_stop = b + 7 + size
                if b_stop >= end or data[b_stop] != fr.FRAME_END:
                    return 0
                got += size
                if got > body_size:
                    return 0
                if size < _JOIN_UNDER:
                    pieces.append(data[b + 7 : b_stop])
                else:
                    if view is None:
                        view = memoryview(data)
                    pieces.append(view[b + 7 : b_stop])
                b = b_stop + 1
            first = pieces[0]
            body = first if len(pieces) == 1 and type(first) is bytes else b"".join(pieces)
        self._take_message(
            channel, exchange, routing_key, bool(bits & 1), props, body, header, None
        )
        return b

    def _ack(self, data: bytes, pos: int, number: int) -> bool:
        """A ``basic.ack`` of one delivery (its tag and bits at ``data[pos:]``)
        on a channel that has it: settle it; False when it is anything else
        (it then goes through :meth:`_frame`)."""
        if self.state != _RUNNING:
            return False
        channel = self.channels.get(number)
        if channel is None or channel.publishing is not None or channel.transactional:
            return False
        tag, bits = _TAG_BITS.unpack_from(data, pos)
        if bits or tag not in channel.unacked:
            return False
        channel.settle("ack", tag, False, False)
        return True

    def send_held_confirm(self, channel: _Channel, confirm: bytes) -> None:
        if channel.open and self.channels.get(channel.number) is channel:
            self._push(confirm)

    # --- errors -------------------------------------------------------------------

    def _channel_error(
        self, channel: _Channel, exc: AMQPError, method: _pbase.Frame | None
    ) -> None:
        class_id, method_id = _ids(method) if method is not None else (0, 0)
        channel.release()
        del self.channels[channel.number]
        self.closing_channels.add(channel.number)
        self.send_method(
            channel.number,
            C.Channel.Close(
                reply_code=exc.code, reply_text=exc.text, class_id=class_id, method_id=method_id
            ),
        )

    def _connection_error(self, exc: AMQPError, method: _pbase.Frame | None) -> None:
        if self.state in (_CLOSED, _CLOSING):
            return
        class_id, method_id = _ids(method) if method is not None else (0, 0)
        self.send_method(
            0,
            C.Connection.Close(
                reply_code=exc.code, reply_text=exc.text, class_id=class_id, method_id=method_id
            ),
        )
        for channel in list(self.channels.values()):
            channel.release()
        self.channels.clear()
        self.state = _CLOSING
        self.close_reason = exc.text

    # --- connection methods -------------------------------------------------------

    def _connection_method(self, method: _pbase.Frame) -> None:
        state = self.state
        if state == _START and isinstance(method, C.Connection.StartOk):
            self._start_ok(method)
        elif state == _TUNE and isinstance(method, C.Connection.TuneOk):
            frame_max = method.frame_max or self.frame_max
            if frame_max < fr.FRAME_MIN_SIZE or frame_max > self.frame_max:
                raise AMQPError(
                    NOT_ALLOWED, f"frame_max={frame_max} outside 4096..{self.frame_max}"
                )
            self.frame_max = frame_max
            self.reader.frame_max = frame_max
            if method.channel_max:
                self.channel_max = min(self.channel_max, method.channel_max)
                self.reader.channel_max = self.channel_max
            self.heartbeat = method.heartbeat
            self.state = _OPEN
        elif state == _OPEN and isinstance(method, C.Connection.Open):
            vhost = _text(method.virtual_host)
            if vhost != "/":
                raise AMQPError(NOT_ALLOWED, f"vhost {vhost} not found")
            self.send_method(0, C.Connection.OpenOk())
            self.state = _RUNNING
        elif isinstance(method, C.Connection.Close):
            self.send_method(0, C.Connection.CloseOk())
            self._end("closed by the client")
        elif isinstance(method, C.Connection.CloseOk):
            self._end("closed")
        elif isinstance(method, C.Connection.UpdateSecret):
            raise AMQPError(NOT_IMPLEMENTED, "connection.update-secret")
        else:
            raise AMQPError(COMMAND_INVALID, f"unexpected {method.name} on channel 0")

    def _start_ok(self, method: C.Connection.StartOk) -> None:
        props = method.client_properties or {}
        self.client_properties = props
        caps = props.get("capabilities") or {}
        self.cancel_notify = bool(caps.get("consumer_cancel_notify"))
        self.blocked_capable = bool(caps.get("connection.blocked"))
        self.auth_failure_close = bool(caps.get("authentication_failure_close"))
        mechanism = _text(method.mechanism)
        response = method.response
        raw = response if isinstance(response, bytes) else str(response).encode("utf-8")
        user = password = None
        if mechanism == "PLAIN":
            parts = raw.split(b"\x00")
            if len(parts) == 3:
                user, password = (
                    parts[1].decode("utf-8", "replace"),
                    parts[2].decode("utf-8", "replace"),
                )
        elif mechanism == "AMQPLAIN":
            try:
                _, table = _pdecode.field_table(struct.pack(">I", len(raw)) + raw)
                user, password = _text(table.get("LOGIN")), _text(table.get("PASSWORD"))
            except Exception:
                user = None
        else:
            self._refuse(f"unsupported authentication mechanism '{mechanism}'")
            return
        if user is None or self.users.get(user) != password:
            self._refuse(
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile."
            )
            return
        self.user = user
        self.send_method(
            0,
            C.Connection.Tune(
                channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=self.heartbeat
            ),
        )
        self.state = _TUNE

    def _refuse(self, text: str) -> None:
        if self.auth_failure_close:
            self._connection_error(AMQPError(ACCESS_REFUSED, text), None)
        else:
            self._end(text)

    # --- channel methods ------------------------------------------------------------

    def _channel_method(self, channel: _Channel, method: _pbase.Frame) -> None:
        handler = _HANDLERS.get(type(method))
        if handler is None:
            raise AMQPError(
                NOT_IMPLEMENTED, f"{method.name} is not implemented by the memory broker"
            )
        handler(self, channel, method)

    def _channel_close(self, channel: _Channel, method: C.Channel.Close) -> None:
        channel.release()
        del self.channels[channel.number]
        self.send_method(channel.number, C.Channel.CloseOk())

    def _channel_flow(self, channel: _Channel, method: C.Channel.Flow) -> None:
        if not method.active:
            raise AMQPError(NOT_IMPLEMENTED, "active=false")
        channel.send(C.Channel.FlowOk(active=True))

    def _exchange_declare(self, channel: _Channel, m: C.Exchange.Declare) -> None:
        self.broker.declare_exchange(
            _text(m.exchange),
            _text(m.exchange_type),
            passive=bool(m.passive),
            durable=bool(m.durable),
            auto_delete=bool(m.auto_delete),
            internal=bool(m.internal),
            arguments=dict(m.arguments or {}),
        )
        if not m.nowait:
            channel.send(C.Exchange.DeclareOk())

    def _exchange_delete(self, channel: _Channel, m: C.Exchange.Delete) -> None:
        self.broker.delete_exchange(_text(m.exchange), if_unused=bool(m.if_unused))
        if not m.nowait:
            channel.send(C.Exchange.DeleteOk())

    def _binding(self, channel: _Channel, m: Any) -> None:
        """exchange.bind / unbind and queue.bind / unbind: one shape."""
        if isinstance(m, C.Exchange.Bind | C.Exchange.Unbind):
            kind, destination, source = "exchange", m.destination, m.source
        else:
            kind, destination, source = "queue", m.queue, m.exchange
        act = (
            self.broker.bind
            if isinstance(m, C.Exchange.Bind | C.Queue.Bind)
            else self.broker.unbind
        )
        act(
            kind,
            _text(destination),
            _text(source),
            _text(m.routing_key),
            dict(m.arguments or {}),
            self,
        )
        # (queue.unbind has no nowait)
        if not getattr(m, "nowait", False):
            channel.send(_BIND_OK[type(m)]())

    def _queue_declare(self, channel: _Channel, m: C.Queue.Declare) -> None:
        queue = self.broker.declare_queue(
            _text(m.queue),
            owner=self,
            passive=bool(m.passive),
            durable=bool(m.durable),
            exclusive=bool(m.exclusive),
            auto_delete=bool(m.auto_delete),
            arguments=dict(m.arguments or {}),
        )
        self.broker.expire(queue)
        if not m.nowait:
            channel.send(
                fr.make_method(
                    C.Queue.DeclareOk,
                    queue=queue.name,
                    message_count=len(queue.ready),
                    consumer_count=len(queue.consumers),
                )
            )

    def _queue_purge(self, channel: _Channel, m: C.Queue.Purge) -> None:
        count = self.broker.purge_queue(_text(m.queue), self)
        if not m.nowait:
            channel.send(C.Queue.PurgeOk(message_count=count))

    def _queue_delete(self, channel: _Channel, m: C.Queue.Delete) -> None:
        count = self.broker.delete_queue(
            _text(m.queue), owner=self, if_unused=bool(m.if_unused), if_empty=bool(m.if_empty)
        )
        if not m.nowait:
            channel.send(C.Queue.DeleteOk(message_count=count))

    def _basic_qos(self, channel: _Channel, m: C.Basic.Qos) -> None:
        if m.prefetch_size:
            raise AMQPError(NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})")
        if m.global_:
            channel.global_prefetch = m.prefetch_count
        else:
            channel.prefetch = m.prefetch_count
        channel.send(C.Basic.QosOk())
        for consumer in list(channel.consumers.values()):
            self.broker.dispatch(consumer.queue)

    def _basic_consume(self, channel: _Channel, m: C.Basic.Consume) -> None:
        tag = _text(m.consumer_tag) or "amq.ctag-" + os.urandom(16).hex()
        if tag in channel.consumers or tag == channel.reply_tag:
            raise AMQPError(NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'")
        if _text(m.queue) == REPLY_TO:
            if not m.no_ack:
                raise AMQPError(PRECONDITION_FAILED, "reply consumer cannot acknowledge")
            if channel.reply_tag is not None:
                raise AMQPError(PRECONDITION_FAILED, "reply consumer already set")
            channel.reply_tag = tag
            channel.reply_key = f"{REPLY_TO}.{os.urandom(12).hex()}"
            self.broker.replies[channel.reply_key] = channel
            if not m.nowait:
                channel.send(fr.make_method(C.Basic.ConsumeOk, consumer_tag=tag))
            return
        queue = self.broker.queue(_text(m.queue), self)
        arguments = dict(m.arguments or {})
        priority = arguments.get("x-priority")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise AMQPError(
                PRECONDITION_FAILED,
                f"invalid arg 'x-priority' for queue '{queue.name}' in vhost '/': "
                f"{{unacceptable_type,{type(priority).__name__}}}",
            )
        for key in ("x-stream-offset",):
            if key in arguments:
                raise AMQPError(
                    NOT_IMPLEMENTED,
                    f"consumer argument '{key}' is not implemented by the memory broker",
                )
        consumer = _Consumer(
            channel, queue, tag, bool(m.no_ack), bool(m.exclusive), channel.prefetch, arguments
        )
        # refused before consume-ok is sent (the model checks again, to the same effect)
        self.broker.check_consumer(queue, consumer)
        channel.consumers[tag] = consumer
        if not m.nowait:
            channel.send(fr.make_method(C.Basic.ConsumeOk, consumer_tag=tag))
        self.broker.add_consumer(queue, consumer)

    def _basic_cancel(self, channel: _Channel, m: C.Basic.Cancel) -> None:
        tag = _text(m.consumer_tag)
        if tag == channel.reply_tag and channel.reply_key is not None:
            self.broker.replies.pop(channel.reply_key, None)
            channel.reply_tag = channel.reply_key = None
        consumer = channel.consumers.pop(tag, None)
        if not m.nowait:
            channel.send(fr.make_method(C.Basic.CancelOk, consumer_tag=tag))
        if consumer is not None:
            self.broker.remove_consumer(consumer.queue, consumer)

    def _basic_publish(self, channel: _Channel, m: C.Basic.Publish) -> None:
        if m.immediate:
            raise AMQPError(NOT_IMPLEMENTED, "immediate=true")
        exchange = self.broker.exchange(_text(m.exchange))
        if exchange.internal:
            raise AMQPError(
                ACCESS_REFUSED,
                f"cannot publish to internal exchange '{exchange.name}' in vhost '/'",
            )
        channel.publishing = m

    def _basic_get(self, channel: _Channel, m: C.Basic.Get) -> None:
        queue = self.broker.queue(_text(m.queue), self)
        self.broker.expire(queue)
        self.broker.touch(queue)
        if not queue.ready:
            channel.send(C.Basic.GetEmpty())
            return
        message = queue.ready.popleft()
        tag = channel.next_tag
        channel.next_tag += 1
        if not m.no_ack:
            channel.unacked[tag] = _Unacked(queue, message, None)
            queue.unacked += 1
        channel.send(
            fr.make_method(
                C.Basic.GetOk,
                delivery_tag=tag,
                redelivered=message.redelivered,
                exchange=message.exchange,
                routing_key=message.routing_key,
                message_count=len(queue.ready),
            )
        )
        self.send_stored(channel.number, message)

    def _settle(
        self, channel: _Channel, what: str, tag: int, multiple: bool, requeue: bool
    ) -> None:
        if channel.transactional:
            if not multiple and tag not in channel.unacked:
                raise AMQPError(PRECONDITION_FAILED, f"unknown delivery tag {tag}")
            channel.tx_settles.append((what, tag, multiple, requeue))
            return
        channel.settle(what, tag, multiple, requeue)

    def _basic_ack(self, channel: _Channel, m: C.Basic.Ack) -> None:
        self._settle(channel, "ack", int(m.delivery_tag), bool(m.multiple), False)

    def _basic_nack(self, channel: _Channel, m: C.Basic.Nack) -> None:
        self._settle(channel, "nack", int(m.delivery_tag), bool(m.multiple), bool(m.requeue))

    def _basic_reject(self, channel: _Channel, m: C.Basic.Reject) -> None:
        self._settle(channel, "reject", int(m.delivery_tag), False, bool(m.requeue))

    def _basic_recover(self, channel: _Channel, m: C.Basic.Recover) -> None:
        if not m.requeue:
            raise AMQPError(NOT_IMPLEMENTED, "requeue=false")
        # recover-ok first: RabbitMQ's queues redeliver after the channel
        # has answered.
        channel.send(C.Basic.RecoverOk())
        channel.settle("recover", 0, True, True)

    def _confirm_select(self, channel: _Channel, m: C.Confirm.Select) -> None:
        if channel.transactional:
            raise AMQPError(PRECONDITION_FAILED, "cannot switch from tx to confirm mode")
        channel.confirming = True
        if not m.nowait:
            channel.send(C.Confirm.SelectOk())

    def _tx_select(self, channel: _Channel, m: C.Tx.Select) -> None:
        if channel.confirming:
            raise AMQPError(PRECONDITION_FAILED, "cannot switch from confirm to tx mode")
        channel.transactional = True
        channel.send(C.Tx.SelectOk())

    def _tx_commit(self, channel: _Channel, m: C.Tx.Commit) -> None:
        if not channel.transactional:
            raise AMQPError(PRECONDITION_FAILED, "channel is not transactional")
        publishes, settles = channel.tx_publishes, channel.tx_settles
        channel.tx_publishes, channel.tx_settles = [], []
        for exchange, routing_key, props, body, mandatory in publishes:
            channel.publish(exchange, routing_key, props, body, mandatory)
        for what, tag, multiple, requeue in settles:
            channel.settle(what, tag, multiple, requeue)
        channel.send(C.Tx.CommitOk())

    def _tx_rollback(self, channel: _Channel, m: C.Tx.Rollback) -> None:
        if not channel.transactional:
            raise AMQPError(PRECONDITION_FAILED, "channel is not transactional")
        channel.tx_publishes, channel.tx_settles = [], []
        channel.send(C.Tx.RollbackOk())


_BIND_OK: dict[type[_pbase.Frame], type[_pbase.Frame]] = {
    C.Exchange.Bind: C.Exchange.BindOk,
    C.Exchange.Unbind: C.Exchange.UnbindOk,
    C.Queue.Bind: C.Queue.BindOk,
    C.Queue.Unbind: C.Queue.UnbindOk,
}

_HANDLERS: dict[type[_pbase.Frame], Callable[[ServerConnection, _Channel, Any], None]] = {
    C.Channel.Close: ServerConnection._channel_close,
    C.Channel.Flow: ServerConnection._channel_flow,
    C.Exchange.Declare: ServerConnection._exchange_declare,
    C.Exchange.Delete: ServerConnection._exchange_delete,
    C.Exchange.Bind: ServerConnection._binding,
    C.Exchange.Unbind: ServerConnection._binding,
    C.Queue.Declare: ServerConnection._queue_declare,
    C.Queue.Bind: ServerConnection._binding,
    C.Queue.Unbind: ServerConnection._binding,
    C.Queue.Purge: ServerConnection._queue_purge,
    C.Queue.Delete: ServerConnection._queue_delete,
    C.Basic.Qos: ServerConnection._basic_qos,
    C.Basic.Consume: ServerConnection._basic_consume,
    C.Basic.Cancel: ServerConnection._basic_cancel,
    C.Basic.Publish: ServerConnection._basic_publish,
    _Publish: ServerConnection._basic_publish,
    C.Basic.Get: ServerConnection._basic_get,
    C.Basic.Ack: ServerConnection._basic_ack,
    C.Basic.Nack: ServerConnection._basic_nack,
    C.Basic.Reject: ServerConnection._basic_reject,
    C.Basic.Recover: ServerConnection._basic_recover,
    C.Confirm.Select: ServerConnection._confirm_select,
    C.Tx.Select: ServerConnection._tx_select,
    C.Tx.Commit: ServerConnection._tx_commit,
    C.Tx.Rollback: ServerConnection._tx_rollback,
}
