"""The direct socket path (``trio_msg._wire``): a plain TCP socket on trio is
read and written without trio's socket wrappers, and a task about to wait
writes its own bytes when the writer is idle.

The wire itself is tested on a real loopback connection: partial writes
with a small kernel buffer, the fairness yield of a reader that keeps
finding data, the end of stream and a close while waiting.  The driver is
then run over TCP against the fake broker (``broker.tcp = True``), with a
send buffer small enough that the kernel takes only part of a task's
direct write: the writer must send the rest first, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
import sniffio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_msg import Consumer, Producer, Queue
from trio_msg._asyncio_wire import AsyncioSocketWire
from trio_msg._protocol.frames import Buffer
from trio_msg._trio_wire import SocketWire
from trio_msg._wire import IOV_MAX, DirectWire, StreamWire, make_wire, skip
from trio_msg.connection import connect

from .fake_broker import URL, FakeBroker, stream_pair, tcp_pair

RAW = anyio.abc.SocketAttribute.raw_socket


def socket_wire(stream: anyio.abc.SocketStream, read_size: int = 256 * 1024) -> DirectWire:
    """The direct wire of the running backend on *stream*'s socket."""
    if sniffio.current_async_library() == "trio":
        return SocketWire(stream.extra(RAW), read_size=read_size)
    return AsyncioSocketWire(stream.extra(RAW), read_size=read_size)


async def read_exactly(stream: anyio.abc.ByteStream, n: int) -> bytes:
    """*n* bytes from *stream*; a writer that loses bytes fails the test
    (TimeoutError) instead of hanging it."""
    data = bytearray()
    with anyio.fail_after(10):
        while len(data) < n:
            data += await stream.receive(1 << 20)
    return bytes(data)


@pytest.mark.anyio
async def test_make_wire_takes_the_socket_path_only_for_tcp(anyio_backend: str) -> None:
    client, server = await tcp_pair()
    async with client, server:
        wire = make_wire(client)
        assert isinstance(wire, SocketWire if anyio_backend == "trio" else AsyncioSocketWire)
        assert wire.direct
        wire.close()
    memory, _other = stream_pair()
    assert isinstance(make_wire(memory), StreamWire)


@pytest.mark.anyio
async def test_send_writes_everything_through_a_full_kernel_buffer() -> None:
    client, server = await tcp_pair(buffer=16384)
    async with client, server:
        wire = socket_wire(client)
        data = bytes(range(256)) * 1024  # 256 KiB: several times the buffers
        # Nobody reads yet: the kernel takes some of it, then no more
        # (try_send says 0 instead of waiting).
        taken = 0
        for _ in range(100):
            more = wire.try_send([data[taken:]])
            if not more:
                break
            taken += more
        assert 0 < taken < len(data) and more == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(wire.send, [data[taken:]])
            assert await read_exactly(server, len(data)) == data


@pytest.mark.anyio
async def test_send_writes_many_buffers_in_order_through_a_full_kernel_buffer() -> None:
    """More buffers than one ``sendmsg`` takes (IOV_MAX), some of them
    views, against a kernel buffer that takes a fraction at a time."""
    client, server = await tcp_pair(buffer=16384)
    async with client, server:
        wire = socket_wire(client)
        big = bytes(range(256)) * 512
        buffers: list[Buffer] = []
        for i in range(IOV_MAX + 300):
            if i % 100 == 7:
                buffers.append(memoryview(big)[i % 256 :])
            else:
                buffers.append(bytes([i & 0xFF]) * (1 + i % 37))
        expected = b"".join(buffers)
        async with anyio.create_task_group() as tg:
            tg.start_soon(wire.send, buffers)
            assert await read_exactly(server, len(expected)) == expected


@settings(max_examples=200, deadline=None)
@given(
    buffers=st.lists(st.binary(min_size=1, max_size=40), max_size=8).map(
        lambda parts: [memoryview(p) if len(p) % 2 else p for p in parts]
    ),
    data=st.data(),
)
def test_skip_leaves_what_follows_the_bytes_written(
    buffers: list[Buffer], data: st.DataObject
) -> None:
    joined = b"".join(buffers)
    sent = data.draw(st.integers(0, len(joined)))
    rest = skip(buffers, sent)
    assert b"".join(rest) == joined[sent:]
    assert all(len(piece) for piece in rest)


@pytest.mark.anyio
async def test_receive_yields_while_data_keeps_coming() -> None:
    client, server = await tcp_pair()
    async with client, server:
        wire = socket_wire(client, read_size=1000)
        await server.send(b"x" * 200_000)
        await anyio.wait_all_tasks_blocked()
        steps = 0

        async def other() -> None:
            nonlocal steps
            while True:
                steps += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            await anyio.lowlevel.checkpoint()
            before = steps
            got = 0
            reads = 0
            # Small reads: the data lasts for many of them.
            while reads < 32:
                got += len(await wire.receive())
                reads += 1
            # Every read found data at once, yet the other task ran in between.
            assert steps - before >= reads // 2
            tg.cancel_scope.cancel()
        assert got == reads * 1000


@pytest.mark.anyio
async def test_receive_ends_at_the_peers_end_of_stream() -> None:
    client, server = await tcp_pair()
    async with client:
        wire = socket_wire(client)
        await server.send(b"last words")
        await server.aclose()
        assert await wire.receive() == b"last words"
        with pytest.raises(anyio.EndOfStream):
            await wire.receive()


@pytest.mark.anyio
async def test_closing_the_stream_wakes_a_waiting_receive() -> None:
    client, server = await tcp_pair()
    async with server:
        wire = socket_wire(client)
        failure: list[BaseException] = []

        async def receive() -> None:
            try:
                await wire.receive()
            except BaseException as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            wire.close()  # as the connection does, just before the stream's aclose
            await client.aclose()
        assert [type(e) for e in failure] == [anyio.ClosedResourceError]


@pytest.mark.anyio
async def test_receive_is_cancellable_while_waiting() -> None:
    client, server = await tcp_pair()
    async with client, server:
        wire = socket_wire(client)
        with anyio.move_on_after(0.05) as scope:
            await wire.receive()
        assert scope.cancelled_caught
        await server.send(b"still works")
        assert await wire.receive() == b"still works"


@pytest.mark.anyio
async def test_interrupt_wakes_a_waiting_reader_and_leaves_the_socket_working() -> None:
    """An interrupt (on trio, notify_closing on a socket that stays open)
    wakes the reader with False; a writer waiting for room (which trio's
    interrupt wakes too) finishes its send; the next wait works as ever."""
    client, server = await tcp_pair(buffer=16384)
    async with client, server:
        wire = socket_wire(client)
        data = bytes(range(256)) * 1024
        woke: list[bool] = []

        async def read() -> None:
            woke.append(await wire.wait_readable())

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            tg.start_soon(wire.send, [data])  # waits for room: nobody reads yet
            await anyio.wait_all_tasks_blocked()
            wire.interrupt()
            await anyio.wait_all_tasks_blocked()
            assert woke == [False]
            assert await read_exactly(server, len(data)) == data  # the send went on
        wire.interrupt()  # nobody waits: nothing happens
        await server.send(b"after")
        assert await wire.wait_readable() is True
        assert wire.try_receive() == b"after"


@pytest.mark.anyio
async def test_a_close_after_an_interrupt_is_still_a_close() -> None:
    client, server = await tcp_pair()
    async with server:
        wire = socket_wire(client)
        failure: list[BaseException] = []

        async def wait() -> None:
            try:
                await wire.wait_readable()
            except BaseException as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            wire.interrupt()
            wire.close()
            await client.aclose()  # before the interrupted waiter has run
        # By the time it looks, the socket is gone: that is what it reports.
        assert [type(e) for e in failure] == [anyio.ClosedResourceError]


# --- the driver over TCP ----------------------------------------------------------------


def record_partial_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(taken, offered) of every direct write the kernel took only part of."""
    partial: list[tuple[int, int]] = []
    for cls in (SocketWire, AsyncioSocketWire):
        real = cls.try_send

        def try_send(self: Any, buffers: Sequence[Buffer], real: Any = real) -> int:
            sent = real(self, buffers)
            offered = sum(map(len, buffers))
            if sent < offered:
                partial.append((sent, offered))
            return sent

        monkeypatch.setattr(cls, "try_send", try_send)
    return partial


@pytest.mark.anyio
async def test_confirmed_publishes_over_tcp_arrive_whole_and_in_order(
    broker: FakeBroker, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """Confirmed publishes are written by the publishing task itself (on
    trio); with a 16 KiB buffer the kernel takes only part of a 200 KB
    message, and the writer sends the rest before anything else."""
    broker.tcp = True
    broker.tcp_buffer = 16384
    bodies = [bytes([i]) * (200_000 + i) for i in range(10)]
    partial = record_partial_writes(monkeypatch)
    with anyio.fail_after(10):
        await publish_all(broker, bodies)
    assert [p.body for p in broker.published] == bodies
    if anyio_backend == "trio":
        assert partial  # the writer did have remainders to send


async def publish_all(broker: FakeBroker, bodies: list[bytes]) -> None:
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        for body in bodies:
            result = await producer.publish(body, routing_key="q", content_type="x/y")
            assert result is not None and result.done
        await broker.wait_published(len(bodies))


@pytest.mark.anyio
async def test_unconfirmed_publishes_and_a_round_trip_over_tcp(broker: FakeBroker) -> None:
    """Corked publishes (the writer's) and a direct flush (a declare waiting
    for its reply) share one socket: the broker sees every frame in order."""
    broker.tcp = True
    broker.tcp_buffer = 16384
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        for i in range(500):
            await producer.publish(b"%d" % i * 50, routing_key="q", content_type="x/y")
            if i % 100 == 99:
                await producer.channel.queue_declare(f"q{i}", passive=True)
        await broker.wait_published(500)
    assert [p.body for p in broker.published] == [b"%d" % i * 50 for i in range(500)]


@pytest.mark.anyio
async def test_large_and_small_unconfirmed_publishes_over_tcp_keep_their_order(
    broker: FakeBroker, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """Large bodies go out as views of themselves (several buffers per
    write), small ones joined between them; through a 16 KiB kernel buffer
    every remainder is sent first, and each body arrives whole."""
    broker.tcp = True
    broker.tcp_buffer = 16384
    bodies = [bytes([i]) * (1 << 20) if i % 3 == 0 else bytes([i]) * (50 + i) for i in range(12)]
    partial = record_partial_writes(monkeypatch)
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        with anyio.fail_after(20):
            for body in bodies:
                await producer.publish(body, routing_key="q", content_type="x/y")
            await broker.wait_published(len(bodies))
    assert [p.body for p in broker.published] == bodies
    if anyio_backend == "trio":
        assert partial


@pytest.mark.anyio
async def test_consume_and_ack_over_tcp(broker: FakeBroker) -> None:
    broker.tcp = True
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=50) as consumer,
    ):
        (tag,) = broker.consumers
        for i in range(200):
            await broker.deliver(tag, b"m%d" % i)
        got = []
        async for message in consumer:
            got.append(message.body)
            await message.ack()
            if len(got) == 200:
                break
        with anyio.fail_after(5):
            while len(broker.acked()) < 200:
                await anyio.sleep(0.01)
    assert got == [b"m%d" % i for i in range(200)]
    assert broker.acked() == list(range(1, 201))


@pytest.mark.anyio
async def test_a_stream_wire_reads_big_only_while_a_large_frame_comes_in(
    broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a direct wire (TLS, a memory stream) the reader sizes its
    reads the same way: ``READ_SIZE``, and ``BIG_READ_SIZE`` while part of
    a frame larger than that is in (tests/integration/test_reads.py checks
    the direct wires against the broker)."""
    from trio_msg._wire import BIG_READ_SIZE, READ_SIZE

    asked: list[int] = []
    real = StreamWire.receive

    async def recording(self: StreamWire, size: int | None = None) -> bytes:
        asked.append(size or READ_SIZE)
        return await real(self, size)

    monkeypatch.setattr(StreamWire, "receive", recording)
    big = bytes(range(256)) * 4096  # 1 MiB: eight frames of 128 KiB
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], no_ack=True) as consumer,
    ):
        (tag,) = broker.consumers
        with anyio.fail_after(10):
            await broker.deliver(tag, b"small")
            assert (await consumer.__anext__()).body == b"small"
            small_run = len(asked)
            await broker.deliver(tag, big)
            assert (await consumer.__anext__()).body == big
            large = asked[small_run:]
            await broker.deliver(tag, b"after")
            assert (await consumer.__anext__()).body == b"after"
            after = asked[small_run + len(large) :]
    assert set(asked[:small_run]) == {READ_SIZE}
    assert BIG_READ_SIZE in large
    assert after and set(after) == {READ_SIZE}
