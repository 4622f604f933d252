"""The embedded broker's driver: serves :class:`~.server.ServerConnection`\\ s
over any anyio byte stream, in-memory (``memory://``) or TCP.

Each served connection is three small tasks in the task group of whoever
attached it: a reader (bytes into the core), a writer (the core's output
out, woken when there is some) and a ticker (heartbeats).  For
``memory://`` that task group is the client connection's own, so the
broker's side of a connection lives and dies with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .model import Broker
from .server import ServerConnection

__all__ = ["BrokerServer", "MemoryStream", "memory_stream_pair"]


class MemoryStream(anyio.abc.ByteStream):
    """One end of an in-memory byte pipe (see :func:`memory_stream_pair`)."""

    def __init__(
        self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]
    ) -> None:
        self._send = send
        self._receive = receive
        self._leftover = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._leftover:
            await anyio.lowlevel.checkpoint()
            data = self._leftover
        else:
            data = await self._receive.receive()
        if len(data) > max_bytes:
            self._leftover = data[max_bytes:]
            return data[:max_bytes]
        self._leftover = b""
        return data

    async def send(self, item: bytes) -> None:
        if item:
            await self._send.send(bytes(item))
        else:
            await anyio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        self._send.close()
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._send.close()
        self._receive.close()
        await anyio.lowlevel.checkpoint()


def memory_stream_pair(buffer: int = 256) -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory byte streams; each direction holds at most
    ``buffer`` writes before the writer waits (back-pressure, as a socket's)."""
    a_send, b_receive = anyio.create_memory_object_stream[bytes](buffer)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](buffer)
    return MemoryStream(a_send, a_receive), MemoryStream(b_send, b_receive)


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

    async def serve_stream(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one client over ``stream`` until either side ends it; then
        close the stream.  Cancellation ends the connection as a lost one
        (its channels released, its exclusive queues deleted)."""
        conn = ServerConnection(
            self.broker,
            users=self.users,
            heartbeat=self.heartbeat,
            frame_max=self.frame_max,
            channel_max=self.channel_max,
            now=self.clock(),
        )
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
