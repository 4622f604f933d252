"""The embedded broker's driver: serves :class:`~.server.ServerConnection`\\ s
over any anyio byte stream (TCP), or in the client's own tasks
(``memory://``, :meth:`BrokerServer.attach`).

A served stream is three small tasks in the task group of whoever serves
it: a reader (bytes into the core), a writer (the core's output out, woken
when there is some) and a ticker (heartbeats).

``memory://`` has no stream and no broker task on the path of a message:
the client's connection writes to a :class:`MemoryWire`, whose write hands
the bytes to the broker's core there and then (the broker reads them, frame
by frame, with the project's codec, and answers at once), and whose read
takes the bytes the core has queued for this client.  A write and the
reply it causes are one step of the writing task.  What is left to a task of its own is the clock:
one ticker per connection (heartbeats, queue expiry, and the wake-ups the
wire puts off: :meth:`MemoryWire._wake_reader`), in the client
connection's own task group, so the broker's side of a connection lives
and dies with it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc

from .._lowlevel import current_checkpoints
from .._protocol.frames import Buffer
from .._wire import skip
from .model import Broker
from .server import ServerConnection

__all__ = ["BrokerServer", "MemoryClient", "MemoryWire"]

#: How much a ``memory://`` connection's broker side may hold for the
#: client, unread, before it stops taking the client's writes: a socket's
#: buffers, so that a client that writes and never reads is pushed back on.
OUTPUT_LIMIT = 1 << 20


class MemoryWire:
    """The client's side of a ``memory://`` connection, as the connection's
    direct wire (``trio_msg._wire.DirectWire``): :meth:`try_send` is the
    broker reading, :meth:`try_receive` the client reading what the broker
    wrote.  One per connection; made by :meth:`BrokerServer.attach`.

    Errors are a socket's: writing to a connection the broker has ended (or
    dropped) raises :class:`BrokenPipeError`; reading past its end raises
    :class:`anyio.EndOfStream`, at once when it was dropped (what it had
    queued is lost, as with a socket torn down), after the last bytes when
    it was closed.
    """

    direct = True

    def __init__(self, conn: ServerConnection, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._clock = clock
        self._ck = current_checkpoints()
        #: The event the task in :meth:`wait_readable` waits on, if any.
        self._readable: Any = None
        self._interrupted = False
        #: The event a writer waiting for room waits on, if any.
        self._writable: Any = None
        #: Set when the connection is over (the ticker waits on it).
        self.ended: Any = self._ck.new_event()
        #: The broker dropped it (:meth:`ServerConnection.abort`).
        self.dropped = False
        #: The client closed its end.
        self.closed = False
        #: The ticker's wait, whose deadline a lazy wake moves closer.
        self._timer: anyio.CancelScope | None = None
        #: The writer task is writing (:meth:`send`): no lazy wake.
        self._eager = False
        conn.on_output = self._wake_reader
        conn.on_resume = self._wake_writer
        conn.on_abort = self._drop
        conn.on_end = self._ended

    # --- the broker's side --------------------------------------------------------

    def _wake_reader(self) -> None:
        """Output for the client: wake the task waiting to read, if any.

        Interrupt moderation, as a network card does it: output the broker
        marks lazy (``ServerConnection.lazy``: a delivery to a consumer that
        has others in flight, a confirm) does not wake the reader at once
        but within that many seconds, by the ticker, unless output that is
        not lazy comes first or a task reads meanwhile.  A consumer's
        client busy with the deliveries it has, or a publisher going on
        with its next messages, then reads in batches, not a wake-up per
        message; a task that waits for a confirm finds it already there
        (it came as the publish was written) and reads it itself.  A
        consumer with at most one in flight (an RPC server, a prefetch of
        one) and everything else wake the reader at once, and so does what
        the writer task writes (it was corked: a task may be waiting for
        its answer already)."""
        readable = self._readable
        if readable is None:
            return
        conn = self._conn
        if conn.lazy and not self._eager:
            timer = self._timer
            if timer is None:
                self._wake_now()
                return
            due = self._ck.current_time() + conn.lazy
            if due < timer.deadline:
                timer.deadline = due
            conn.told_lazily = True
            return
        self._wake_now()

    def _wake_now(self) -> None:
        self._conn.told_lazily = False
        readable = self._readable
        if readable is not None:
            self._readable = None
            readable.set()

    def _wake_writer(self) -> None:
        writable = self._writable
        if writable is not None:
            self._writable = None
            writable.set()

    def _drop(self) -> None:
        self.dropped = True

    def _ended(self) -> None:
        self.ended.set()
        self._wake_now()
        self._wake_writer()

    # --- the client's side ----------------------------------------------------------

    def try_send(self, buffers: Sequence[Buffer]) -> int:
        """Hand *buffers* to the broker, which reads them now (and queues
        its answers); how many bytes it took: all of them, or none while
        it does not read this connection (a resource alarm) or holds more
        than :data:`OUTPUT_LIMIT` for the client."""
        conn = self._conn
        if conn.closed or self.closed:
            raise BrokenPipeError("the memory broker's side of the connection is closed")
        if conn.paused or conn.output_over(OUTPUT_LIMIT):
            return 0
        data = buffers[0] if len(buffers) == 1 else b"".join(buffers)
        conn.receive_data(data if type(data) is bytes else bytes(data), self._clock())
        return len(data)

    async def send(self, buffers: Sequence[Buffer]) -> None:
        """Hand all of *buffers* to the broker, waiting while it takes
        none.  Cancelled while waiting, it took none of them."""
        total = sum(map(len, buffers))
        while True:
            # What the writer task writes was corked, and a task may be
            # waiting for its answers already: they wake it at once.
            self._eager = True
            try:
                sent = self.try_send(buffers)
            finally:
                self._eager = False
            if sent == total:
                return
            if sent:
                buffers = skip(buffers, sent)
                total -= sent
                continue
            writable = self._writable = self._ck.new_event()
            try:
                await writable.wait()
            finally:
                if self._writable is writable:
                    self._writable = None

    def try_receive(self, size: int | None = None) -> bytes | None:
        """Everything the broker has queued for the client, without
        waiting (*size* is not a bound: the bytes are in memory already);
        ``None`` if there is nothing.  Raises :class:`anyio.EndOfStream`
        once the connection is over and everything was read."""
        conn = self._conn
        if self.dropped or self.closed:
            raise anyio.EndOfStream
        data = conn.data_to_send()
        if data:
            conn.told_lazily = False
            conn.sent(self._clock())
            if self._writable is not None and not conn.output_over(OUTPUT_LIMIT):
                self._wake_writer()
            return data
        if conn.closed:
            raise anyio.EndOfStream
        return None

    def _readable_now(self) -> bool:
        conn = self._conn
        return conn.has_output or conn.closed or self.dropped or self.closed

    async def wait_readable(self) -> bool:
        """Wait until there is something to read (or the end): ``True``;
        ``False`` if :meth:`interrupt` woke it first.  Always a yield, as a
        socket's: when there is something already, a checkpoint (without
        it, a client that answers what it reads at once -- a consumer
        rejecting deliveries while it cancels, the broker redelivering them
        -- could keep its reader running and every other task waiting).
        One task at a time may wait here."""
        if self._readable_now():
            await self._ck.checkpoint()
            return True
        readable = self._readable = self._ck.new_event()
        self._interrupted = False
        try:
            await readable.wait()
        finally:
            if self._readable is readable:
                self._readable = None
        return not self._interrupted

    def interrupt(self) -> None:
        """Wake the task in :meth:`wait_readable`, if any: it returns ``False``."""
        if self._readable is not None:
            self._interrupted = True
            self._wake_now()

    async def receive(self, size: int | None = None) -> bytes:
        """The next bytes from the broker; waits only when there are none.
        A read that did not wait yields before it returns.  Cancelled, it
        took nothing (the cancellation is taken before the bytes are)."""
        await self._ck.checkpoint_if_cancelled()
        data = self.try_receive(size)
        if data is not None:
            await self._ck.cancel_shielded_checkpoint()
            return data
        while True:
            await self.wait_readable()
            data = self.try_receive(size)
            if data is not None:
                return data

    def close(self) -> None:
        """The client closes its end: the broker's side is lost (its
        channels released, its exclusive queues deleted) unless it ended."""
        if self.closed:
            return
        self.closed = True
        self._conn.connection_lost()
        self._ended()


class MemoryClient(anyio.abc.ByteStream):
    """The client's end of a ``memory://`` connection as an anyio byte
    stream; the connection reads and writes it through :attr:`wire`
    (``trio_msg._wire.make_wire`` picks that)."""

    def __init__(self, wire: MemoryWire) -> None:
        self.wire = wire
        #: What a read took beyond its ``max_bytes``: the next read's.
        self._rest = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """At most *max_bytes* of what the broker sent (the wire hands over
        all it has at once; the rest waits here for the next read)."""
        data = self._rest
        if data:
            await anyio.lowlevel.checkpoint_if_cancelled()
            await anyio.lowlevel.cancel_shielded_checkpoint()
        else:
            data = await self.wire.receive(max_bytes)
        self._rest = data[max_bytes:]
        return data[:max_bytes]

    async def send(self, item: bytes) -> None:
        await self.wire.send([item])

    async def send_eof(self) -> None:
        self.wire.close()
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.wire.close()
        await anyio.lowlevel.checkpoint()


class BrokerServer:
    """A :class:`~.model.Broker` and the connections served to it."""

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        users: dict[str, str] | None = None,
        heartbeat: int = 60,
        frame_max: int = 131072,
        channel_max: int = 2047,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker if broker is not None else Broker(clock=clock)
        self.users = users
        self.heartbeat = heartbeat
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.clock = clock
        self.connections: list[ServerConnection] = []

    def _new_connection(self) -> ServerConnection:
        return ServerConnection(
            self.broker,
            users=self.users,
            heartbeat=self.heartbeat,
            frame_max=self.frame_max,
            channel_max=self.channel_max,
            now=self.clock(),
        )

    async def serve_stream(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one client over ``stream`` until either side ends it; then
        close the stream.  Cancellation ends the connection as a lost one
        (its channels released, its exclusive queues deleted)."""
        conn = self._new_connection()
        wake = anyio.Event()

        def on_output() -> None:
            nonlocal wake
            wake.set()

        conn.on_output = on_output
        self.connections.append(conn)
        try:
            async with anyio.create_task_group() as tg:

                async def reader() -> None:
                    try:
                        while not conn.closed:
                            if conn.paused:
                                # A resource alarm: read nothing until it is
                                # over (TCP pushes back on the client).
                                resumed = anyio.Event()
                                conn.on_resume = resumed.set
                                await resumed.wait()
                                continue
                            data = await stream.receive(65536)
                            conn.receive_data(data, self.clock())
                            if conn.has_output:
                                wake.set()
                    except (
                        anyio.EndOfStream,
                        anyio.BrokenResourceError,
                        anyio.ClosedResourceError,
                        OSError,
                    ):
                        conn.connection_lost()
                    wake.set()

                async def writer() -> None:
                    nonlocal wake
                    try:
                        while True:
                            data = conn.data_to_send()
                            if data:
                                await stream.send(data)
                                conn.sent(self.clock())
                                continue
                            if conn.closed:
                                break
                            await wake.wait()
                            wake = anyio.Event()
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        conn.connection_lost()
                    tg.cancel_scope.cancel()

                async def ticker() -> None:
                    while not conn.closed:
                        beat = conn.heartbeat or 0
                        await anyio.sleep(min(beat / 2, 1.0) if beat else 1.0)
                        conn.tick(self.clock())
                        self.broker.sweep()
                        if conn.has_output:
                            wake.set()

                conn.on_abort = tg.cancel_scope.cancel
                tg.start_soon(reader)
                tg.start_soon(writer)
                tg.start_soon(ticker)
        finally:
            conn.connection_lost()
            self.connections.remove(conn)
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    def attach(self) -> tuple[MemoryClient, Callable[[], Awaitable[None]]]:
        """A ``memory://`` connection to this broker: the client's stream,
        and its broker side's ticker (heartbeats, queue expiry), for the
        caller to run in the connection's task group.  The ticker returns
        once the connection is over; cancelled, it ends the connection as a
        lost one (its channels released, its exclusive queues deleted)."""
        conn = self._new_connection()
        wire = MemoryWire(conn, self.clock)
        self.connections.append(conn)
        ended = wire._ended

        def gone() -> None:
            ended()
            if conn in self.connections:
                self.connections.remove(conn)

        conn.on_end = gone

        def over() -> bool:
            return conn.closed or wire.dropped

        async def ticker() -> None:
            now = anyio.current_time
            next_tick = now()
            try:
                while not over():
                    if now() >= next_tick:
                        beat = conn.heartbeat or 0
                        next_tick = now() + (min(beat / 2, 1.0) if beat else 1.0)
                        conn.tick(self.clock())
                        self.broker.sweep()
                    with anyio.CancelScope(deadline=next_tick) as timer:
                        wire._timer = timer
                        try:
                            await wire.ended.wait()
                        finally:
                            wire._timer = None
                    if conn.told_lazily:
                        wire._wake_now()
            finally:
                conn.connection_lost()

        return MemoryClient(wire), ticker

    # --- scripting (what trio_msg.testing uses) ------------------------------

    def set_alarm(self, reason: str | None) -> None:
        """Raise a resource alarm (``reason``), or end it (``None``): while
        it is on, a connection that publishes gets ``connection.blocked`` and
        is not read until the alarm is over, as RabbitMQ does."""
        self.broker.alarm = reason
        if reason is None:
            for conn in list(self.connections):
                conn.alarm_cleared()

    def hold_confirms(self, hold: bool) -> None:
        """Hold publisher confirms back (``True``) or send every held one,
        in order (``False``)."""
        self.broker.holding_confirms = hold
        if not hold:
            held, self.broker.held_confirms = self.broker.held_confirms, []
            for conn, channel, confirm in held:
                conn.send_held_confirm(channel, confirm)

    async def serve_tcp(
        self,
        port: int = 5672,
        host: str = "127.0.0.1",
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) and serve every client;
        ``task_status.started`` gets the port.  Runs until cancelled."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        async with listener:
            bound = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(bound)
            await listener.serve(self.serve_stream)
