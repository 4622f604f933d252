"""A scripted AMQP broker on an in-memory byte stream, for the driver tests.

The driver connects through ``Connection._connect_tcp``; the ``broker``
fixture (``conftest.py``) replaces it with :meth:`FakeBroker._accept`, which
hands the driver one end of an in-memory :class:`MemoryByteStream` pair and
serves the other end.  The broker decodes what the client sends with pamqp
(independently of ``trio_msg._protocol``) and answers as RabbitMQ would:
handshake, channels, declarations, consumers, confirms.  Tests script the
rest: hold the replies to some methods, go silent, stop reading, send
deliveries, acks, ``connection.blocked``, closes or raw bytes.

Both ends are plain anyio memory object streams of ``bytes`` with a bounded
number of chunks in flight, so the same broker runs on trio (with the
autojump clock) and on asyncio, and a side that stops reading really makes
the other side's ``send`` wait, as TCP would.  With ``tcp = True`` the two
ends are a real loopback TCP connection instead (on trio, the driver then
takes its direct socket path, ``trio_msg._wire.SocketWire``).

Usage::

    async with broker, connect(URL) as conn:
        ...
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pamqp import commands as C
from pamqp import frame, heartbeat
from pamqp.base import Frame
from protocol.peer import build, content_frames

__all__ = [
    "HEARTBEAT_FRAME",
    "URL",
    "FakeBroker",
    "MemoryByteStream",
    "Published",
    "Received",
    "stream_pair",
]

#: Any host will do: the fake broker answers whatever address is asked for.
URL = "amqp://guest:guest@fake-broker.invalid//"
HEARTBEAT_FRAME = frame.marshal(heartbeat.Heartbeat(), 0)

_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)


# --- the byte stream -------------------------------------------------------------


class MemoryByteStream(anyio.abc.ByteStream):
    """One end of an in-memory, bounded byte pipe (both backends)."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send = send
        self._receive = receive
        self._pending = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._pending:
            await checkpoint()
        else:
            self._pending = await self._receive.receive()
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def send(self, item: bytes) -> None:
        if item:
            await self._send.send(bytes(item))
        else:
            await checkpoint()

    async def send_eof(self) -> None:
        self._send.close()
        await checkpoint()

    async def aclose(self) -> None:
        self._send.close()
        self._receive.close()
        await checkpoint()

    @property
    def queued(self) -> int:
        """Chunks sent by this end and not yet taken by the other end."""
        return self._send.statistics().current_buffer_used


def stream_pair(capacity: int = 4) -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected ends; at most ``capacity`` chunks in flight each way."""
    a_send, b_receive = anyio.create_memory_object_stream[bytes](capacity)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](capacity)
    return MemoryByteStream(a_send, a_receive), MemoryByteStream(b_send, b_receive)


async def tcp_pair(
    buffer: int | None = None,
) -> tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]:
    """Two ends of a loopback TCP connection (client, server); *buffer* sets
    the client's SO_SNDBUF and the server's SO_RCVBUF."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener:
        (accepting,) = listener.listeners
        assert isinstance(accepting, anyio.abc.SocketListener)
        port = accepting.extra(anyio.abc.SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await accepting.accept()
    if buffer is not None:
        raw = anyio.abc.SocketAttribute.raw_socket
        client.extra(raw).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        server.extra(raw).setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    return client, server


# --- what the broker saw ------------------------------------------------------------


@dataclass
class Received:
    """One frame from the client, decoded by pamqp, and when it arrived."""

    channel: int
    frame: Any
    time: float
    #: Which connection to the broker (1 for the first) it came on.
    session: int = 1

    @property
    def name(self) -> str:
        return str(self.frame.name)


@dataclass
class Published:
    """One whole ``basic.publish`` (method, header and body) from the client."""

    channel: int
    method: Any
    properties: Any
    body: bytes
    #: Its delivery tag when the channel is in confirm mode.
    tag: int | None = None
    #: When its ``basic.publish`` frame arrived (the broker's clock).
    time: float = 0.0


@dataclass
class _Channel:
    confirming: bool = False
    next_publish_tag: int = 1
    next_delivery_tag: int = 1
    content: Published | None = None
    content_size: int = 0
    chunks: list[bytes] = field(default_factory=list)


Handler = Callable[["FakeBroker", Received], Awaitable[None]]


class FakeBroker:
    """A scripted broker for one connection.

    Knobs (set them before or while the client talks to it):

    - ``heartbeat``, ``frame_max``, ``channel_max``: what ``connection.tune``
      proposes.  With a heartbeat negotiated the broker sends heartbeats
      every half interval (unless ``silent`` or ``send_heartbeats=False``).
    - ``silent``: read and record everything, answer nothing, send nothing.
    - ``hold``: names of methods (``"Queue.Declare"``) whose replies are
      held back in ``held`` until :meth:`release`; later methods on the
      same channel queue up behind them, as on a broker.
    - ``handlers``: name -> ``async def handler(broker, received)`` that
      replaces the default answer.
    - ``auto_confirm``: ack every publish on a confirm channel at once.
    - ``reply_delay``: take that long over each answer on a channel.
    - :meth:`pause_reading` / :meth:`resume_reading`: stop taking bytes
      from the client (its writes then back up).
    - ``tcp``: serve over a loopback TCP connection, not the memory pipe;
      ``tcp_buffer``: the kernel's send buffer of the client's socket and
      receive buffer of the broker's (small: the client's writes fill it).
    """

    def __init__(self) -> None:
        self.heartbeat = 0
        self.frame_max = 131072
        self.channel_max = 2047
        self.pipe_capacity = 4
        self.tcp = False
        self.tcp_buffer: int | None = None
        self.server_properties: dict[str, Any] = {
            "product": "fake-broker",
            "capabilities": {
                "publisher_confirms": True,
                "consumer_cancel_notify": True,
                "basic.nack": True,
                "connection.blocked": True,
                "exchange_exchange_bindings": True,
            },
        }
        self.silent = False
        #: Seconds the broker takes over each answer on a channel (it reads
        #: nothing meanwhile): spreads an operation's steps out in time.
        self.reply_delay = 0.0
        self.send_heartbeats = True
        self.auto_confirm = True
        self.hold: set[str] = set()
        self.held: list[Received] = []
        self.handlers: dict[str, Handler] = {}
        #: Messages ``basic.get`` hands out, oldest first (then get-empty).
        self.get_queue: deque[bytes] = deque()

        self.received: list[Received] = []
        self.published: list[Published] = []
        self.heartbeats: list[float] = []
        self.consumers: dict[str, tuple[int, str]] = {}  # tag -> (channel, queue)
        self.channels: dict[int, _Channel] = {}
        self.negotiated_heartbeat: int | None = None
        self.connection: Any = None
        self.stream: anyio.abc.ByteStream | None = None
        self.client_closed = anyio.Event()  # the client closed its end
        self.connects = 0
        #: Connections served so far (the current one's number).
        self.sessions = 0
        #: Refuse this many connection attempts (then accept again).
        self.refuse = 0
        #: Accept a new connection after the last one ended (a revive).
        self.serve_again = False
        #: When the broker last sent bytes (its clock).
        self.last_sent: float | None = None

        self._tg: anyio.abc.TaskGroup | None = None
        self._reading = anyio.Event()
        self._reading.set()
        self._changed = anyio.Event()
        self._names = 0
        self._send_lock = anyio.Lock()

    # --- lifetime ----------------------------------------------------------------

    async def __aenter__(self) -> FakeBroker:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The body's exception is not handed to the task group, so it leaves
        # this block as it is (not inside an ExceptionGroup).
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    async def _accept(
        self, conn: Any, host: str, port: int, ssl_context: object
    ) -> anyio.abc.ByteStream:
        """Stands in for ``Connection._connect_tcp``."""
        await checkpoint()
        if self._tg is None:
            raise RuntimeError("use the broker as 'async with broker, connect(URL) as conn'")
        self.connects += 1
        if self.refuse:
            self.refuse -= 1
            raise ConnectionRefusedError("fake broker: connection refused")
        if self.stream is not None:
            if not self.serve_again:
                raise ConnectionRefusedError("fake broker: it serves one connection only")
            # A new session: what the old connection had is gone with it.
            await self.stream.aclose()
            self.channels.clear()
            self.consumers.clear()
            self.held.clear()
            self.negotiated_heartbeat = None
            self.silent = False  # a broker that came back talks again
        self.sessions += 1
        if self.tcp:
            client, server = await tcp_pair(self.tcp_buffer)
        else:
            client, server = stream_pair(self.pipe_capacity)
        self.stream = server
        self.connection = conn
        self.client_closed = anyio.Event()
        self._tg.start_soon(self._serve, server, self.client_closed)
        self._notify()
        return client

    # --- reading --------------------------------------------------------------------

    def pause_reading(self) -> None:
        if self._reading.is_set():
            self._reading = anyio.Event()

    def resume_reading(self) -> None:
        self._reading.set()

    async def _serve(self, stream: anyio.abc.ByteStream, closed: anyio.Event) -> None:
        buffer = bytearray()
        try:
            while True:
                await self._reading.wait()
                size = _frame_size(buffer)
                if not size:
                    buffer += await stream.receive(65536)
                    continue
                chunk = bytes(buffer[:size])
                del buffer[:size]
                _consumed, channel, value = frame.unmarshal(chunk)
                rec = Received(channel, value, anyio.current_time(), self.sessions)
                await self._on_frame(rec, stream)
        except _GONE:
            return  # the client hung up while we were answering
        except Exception:
            await stream.aclose()  # a bug in a test's script: fail fast, not by timeout
            raise
        finally:
            closed.set()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _on_frame(self, rec: Received, stream: anyio.abc.ByteStream) -> None:
        if stream is not self.stream:
            return  # a frame of a session that has been replaced
        self.received.append(rec)
        self._notify()
        name = rec.name
        if name == "Heartbeat":
            self.heartbeats.append(rec.time)
            return
        if name in ("Basic.Publish", "ContentHeader", "ContentBody"):
            await self._on_content(rec)
            return
        if name in self.handlers:
            await self.handlers[name](self, rec)
            return
        if self.silent:
            return
        if name in self.hold or any(h.channel == rec.channel for h in self.held):
            # A broker answers a channel's methods in order: once one is
            # held, everything after it on that channel waits behind it.
            self.held.append(rec)
            return
        if self.reply_delay and rec.channel:
            await anyio.sleep(self.reply_delay)
        await self.answer(rec)

    async def _on_content(self, rec: Received) -> None:
        ch = self.channels.setdefault(rec.channel, _Channel())
        value = rec.frame
        if rec.name == "Basic.Publish":
            ch.content = Published(rec.channel, value, None, b"", time=rec.time)
            ch.content_size = -1
            ch.chunks = []
            return
        assert ch.content is not None, f"{rec.name} without basic.publish"
        if rec.name == "ContentHeader":
            ch.content.properties = value.properties
            ch.content_size = value.body_size
        else:
            ch.chunks.append(value.value)
        if ch.content_size == sum(map(len, ch.chunks)):
            published = ch.content
            published.body = b"".join(ch.chunks)
            ch.content = None
            if ch.confirming:
                published.tag = ch.next_publish_tag
                ch.next_publish_tag += 1
            self.published.append(published)
            self._notify()
            if published.tag is not None and self.auto_confirm and not self.silent:
                if self.reply_delay:
                    await anyio.sleep(self.reply_delay)
                await self.send(rec.channel, C.Basic.Ack(delivery_tag=published.tag))

    # --- the default answers -----------------------------------------------------

    async def answer(self, rec: Received) -> None:
        """Answer one client frame the way RabbitMQ would."""
        name, channel, m = rec.name, rec.channel, rec.frame
        if name == "ProtocolHeader":
            await self.send(
                0,
                C.Connection.Start(
                    server_properties=self.server_properties,
                    mechanisms="PLAIN AMQPLAIN",
                    locales="en_US",
                ),
            )
        elif name == "Connection.StartOk":
            await self.send(
                0,
                C.Connection.Tune(
                    channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=self.heartbeat
                ),
            )
        elif name == "Connection.TuneOk":
            self.negotiated_heartbeat = m.heartbeat
            if m.heartbeat and self._tg is not None and self.stream is not None:
                self._tg.start_soon(self._beat, m.heartbeat, self.stream)
        elif name == "Connection.Close":
            await self.send(0, C.Connection.CloseOk())
            await self.hang_up()
        elif name == "Connection.CloseOk":
            await self.hang_up()
        elif name == "Channel.Open":
            self.channels[channel] = _Channel()
            await self.send(channel, C.Channel.OpenOk())
        elif name == "Channel.Close":
            self._channel_gone(channel)
            await self.send(channel, C.Channel.CloseOk())
        elif name == "Channel.CloseOk":
            self._channel_gone(channel)
        elif name == "Confirm.Select":
            self.channels.setdefault(channel, _Channel()).confirming = True
            if not m.nowait:
                await self.send(channel, C.Confirm.SelectOk())
        elif name == "Queue.Declare":
            queue = m.queue
            if not queue:
                self._names += 1
                queue = f"amq.gen-{self._names}"
            await self.reply(
                m, channel, build(C.Queue.DeclareOk, queue=queue, message_count=0, consumer_count=0)
            )
        elif name in ("Queue.Purge", "Queue.Delete"):
            await self.reply(m, channel, build(_REPLIES[name], message_count=0))
        elif name == "Basic.Consume":
            tag = m.consumer_tag
            if not tag:
                self._names += 1
                tag = f"amq.ctag-{self._names}"
            self.consumers[tag] = (channel, m.queue)
            await self.reply(m, channel, build(C.Basic.ConsumeOk, consumer_tag=tag))
        elif name == "Basic.Cancel":
            self.consumers.pop(m.consumer_tag, None)
            await self.reply(m, channel, build(C.Basic.CancelOk, consumer_tag=m.consumer_tag))
        elif name == "Basic.Get":
            if self.get_queue:
                data = self.get_queue.popleft()
                tag = self._next_delivery_tag(channel)
                method = build(
                    C.Basic.GetOk,
                    delivery_tag=tag,
                    exchange="",
                    routing_key=m.queue,
                    message_count=len(self.get_queue),
                )
                await self.send_raw(b"".join(content_frames(channel, method, data)))
            else:
                await self.send(channel, C.Basic.GetEmpty())
        elif name == "Channel.Flow":
            await self.send(channel, C.Channel.FlowOk(active=m.active))
        elif name in _REPLIES:
            await self.reply(m, channel, _REPLIES[name]())
        # Basic.Ack / Nack / Reject, Channel.FlowOk ...: nothing to answer.

    def _channel_gone(self, channel: int) -> None:
        """A closed channel takes its consumers with it."""
        self.channels.pop(channel, None)
        for tag, (ch, _queue) in list(self.consumers.items()):
            if ch == channel:
                del self.consumers[tag]

    async def reply(self, request: Any, channel: int, method: Frame) -> None:
        if not getattr(request, "nowait", False):
            await self.send(channel, method)

    async def release(self, name: str | None = None) -> None:
        """Answer the held frames (those named ``name``, or all), in order."""
        keep: list[Received] = []
        todo: list[Received] = []
        for rec in self.held:
            (todo if name is None or rec.name == name else keep).append(rec)
        self.held = keep
        for rec in todo:
            await self.answer(rec)

    async def _beat(self, interval: int, stream: anyio.abc.ByteStream) -> None:
        try:
            while stream is self.stream:
                await anyio.sleep(interval / 2)
                if not self.silent and self.send_heartbeats and stream is self.stream:
                    await stream.send(HEARTBEAT_FRAME)
                    self.last_sent = anyio.current_time()
        except _GONE:
            return

    # --- sending --------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        assert self.stream is not None, "no client connected"
        # The broker's own answers and a test's deliveries take turns, as
        # on a real broker.  (A socket's send ends with a yield after its
        # bytes are out; a client quick enough to answer within it used
        # to meet a test's next send still inside the last one.)
        async with self._send_lock:
            await self.stream.send(data)
        self.last_sent = anyio.current_time()

    async def send(self, channel: int, *methods: Frame) -> None:
        await self.send_raw(b"".join(frame.marshal(m, channel) for m in methods))

    async def hang_up(self) -> None:
        """Close the socket (the client reads EOF)."""
        if self.stream is not None:
            await self.stream.aclose()

    def _next_delivery_tag(self, channel: int) -> int:
        ch = self.channels.setdefault(channel, _Channel())
        tag = ch.next_delivery_tag
        ch.next_delivery_tag += 1
        return tag

    async def deliver(
        self,
        consumer_tag: str,
        data: bytes = b"body",
        *,
        properties: C.Basic.Properties | None = None,
        redelivered: bool = False,
        exchange: str = "",
        routing_key: str = "",
    ) -> int:
        """Deliver one message to a consumer; returns its delivery tag."""
        channel, queue = self.consumers[consumer_tag]
        tag = self._next_delivery_tag(channel)
        method = build(
            C.Basic.Deliver,
            consumer_tag=consumer_tag,
            delivery_tag=tag,
            redelivered=redelivered,
            exchange=exchange,
            routing_key=routing_key or queue,
        )
        chunk = self.frame_max - 8
        await self.send_raw(b"".join(content_frames(channel, method, data, properties, chunk)))
        return tag

    async def confirm(
        self, channel: int, tag: int, *, multiple: bool = False, nack: bool = False
    ) -> None:
        cls = C.Basic.Nack if nack else C.Basic.Ack
        await self.send(channel, cls(delivery_tag=tag, multiple=multiple))

    async def close_connection(self, reply_code: int = 320, reply_text: str = "forced") -> None:
        """``connection.close`` from the broker (320: CONNECTION_FORCED)."""
        await self.send(
            0,
            C.Connection.Close(
                reply_code=reply_code, reply_text=reply_text, class_id=0, method_id=0
            ),
        )

    async def close_channel(
        self,
        channel: int,
        reply_code: int = 406,
        reply_text: str = "",
        *,
        class_id: int = 0,
        method_id: int = 0,
    ) -> None:
        """Close a channel over an error; ``class_id``/``method_id`` name the
        method that caused it (``60, 40``: basic.publish)."""
        await self.send(
            channel,
            C.Channel.Close(
                reply_code=reply_code, reply_text=reply_text, class_id=class_id, method_id=method_id
            ),
        )

    # --- looking at what came in -------------------------------------------------

    def names(self, channel: int | None = None, session: int | None = None) -> list[str]:
        """Names of the frames received (heartbeats left out)."""
        return [
            r.name
            for r in self.received
            if r.name != "Heartbeat"
            and (channel is None or r.channel == channel)
            and (session is None or r.session == session)
        ]

    async def wait_sessions(self, count: int) -> None:
        """Wait until ``count`` connections were accepted."""
        while self.sessions < count:
            await self._changed.wait()

    def frames(self, name: str) -> list[Any]:
        return [r.frame for r in self.received if r.name == name]

    def count(self, name: str) -> int:
        return sum(1 for r in self.received if r.name == name)

    def acked(self, channel: int | None = None) -> list[int]:
        """The delivery tags the client's ``basic.ack`` frames settled, in
        the order settled: one with ``multiple`` settles every tag up to its
        own not settled before (the client merges acks in a row into one).
        Assumes the client acks only what was delivered, as the real broker
        would insist."""
        settled: dict[int, list[int]] = {}
        for r in self.received:
            if r.name != "Basic.Ack" or (channel is not None and r.channel != channel):
                continue
            done = settled.setdefault(r.channel, [])
            tag = r.frame.delivery_tag
            if r.frame.multiple:
                seen = set(done)
                done.extend(t for t in range(1, tag + 1) if t not in seen)
            else:
                done.append(tag)
        return [t for tags in settled.values() for t in tags]

    async def wait_for(self, name: str, count: int = 1) -> Any:
        """Wait until ``count`` frames named ``name`` came in; return the last."""
        while self.count(name) < count:
            if self.client_closed.is_set():
                raise AssertionError(f"the client hung up before sending {count} x {name}")
            await self._changed.wait()
        return self.frames(name)[count - 1]

    async def wait_published(self, count: int) -> None:
        while len(self.published) < count:
            if self.client_closed.is_set():
                raise AssertionError(f"the client hung up after {len(self.published)} publishes")
            await self._changed.wait()

    async def wait_closed(self) -> None:
        await self.client_closed.wait()


_REPLIES: dict[str, type[Frame]] = {
    "Connection.Open": C.Connection.OpenOk,
    "Exchange.Declare": C.Exchange.DeclareOk,
    "Exchange.Delete": C.Exchange.DeleteOk,
    "Exchange.Bind": C.Exchange.BindOk,
    "Exchange.Unbind": C.Exchange.UnbindOk,
    "Queue.Bind": C.Queue.BindOk,
    "Queue.Unbind": C.Queue.UnbindOk,
    "Queue.Purge": C.Queue.PurgeOk,
    "Queue.Delete": C.Queue.DeleteOk,
    "Basic.Qos": C.Basic.QosOk,
    "Basic.Recover": C.Basic.RecoverOk,
    "Tx.Select": C.Tx.SelectOk,
    "Tx.Commit": C.Tx.CommitOk,
    "Tx.Rollback": C.Tx.RollbackOk,
}


def _frame_size(buffer: bytearray) -> int:
    """The size of the complete frame at the start of ``buffer``, or 0."""
    if buffer[:4] == b"AMQP":
        return 8 if len(buffer) >= 8 else 0
    if len(buffer) < 7:
        return 0
    (size,) = struct.unpack_from(">I", buffer, 3)
    total = 7 + size + 1
    return total if len(buffer) >= total else 0
