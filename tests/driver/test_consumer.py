"""Consumers: order, bounded buffering (a full buffer stops the reader, so
TCP pushes back on the broker), and ends of iteration (a server-sent cancel,
a channel closed under the consumer)."""

from __future__ import annotations

import anyio
import pytest
import trio
import trio.testing
from pamqp import commands as C

from trio_msg import Consumer, Message, Queue
from trio_msg.connection import connect
from trio_msg.errors import ConsumerCancelled, PreconditionFailed

from .fake_broker import URL, FakeBroker


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


@pytest.mark.anyio
async def test_deliveries_come_out_in_order_and_acks_go_back(broker: FakeBroker) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        (tag,) = broker.consumers
        assert broker.frames("Basic.Qos")[0].prefetch_count == 10
        async with anyio.create_task_group() as tg:

            async def deliver_all() -> None:
                for i in range(50):
                    await broker.deliver(tag, b"%d" % i)

            tg.start_soon(deliver_all)
            received = []
            with anyio.fail_after(5):
                async for message in consumer:
                    received.append(message)
                    await message.ack()
                    if len(received) == 50:
                        break
        assert [m.body for m in received] == [b"%d" % i for i in range(50)]
        assert [m.delivery_tag for m in received] == list(range(1, 51))
        assert all(
            m.routing_key == "q" and m.delivery_info["consumer_tag"] == tag for m in received
        )
        await consumer.channel.queue_declare("sync")  # every ack is on the wire
    assert broker.acked() == list(range(1, 51))
    assert broker.count("Basic.Ack") < 50  # acks in a row were merged


@pytest.mark.anyio
async def test_full_buffer_stops_the_reader_and_nothing_is_lost(broker: FakeBroker) -> None:
    buffer_size = 4
    total = 100
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], no_ack=True, buffer_size=buffer_size) as consumer,
    ):
        (tag,) = broker.consumers
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(total):
                await broker.deliver(tag, b"%d" % i)
                sent += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(flood)
            await settle()
            # The consumer's buffer, the one delivery the reader holds, and
            # the pipe's chunks: then the broker's send waits (TCP back-pressure).
            assert sent < total
            assert sent <= buffer_size + 1 + broker.pipe_capacity
            assert broker.stream is not None
            assert broker.stream.queued == broker.pipe_capacity
            stalled = sent
            await settle()
            assert sent == stalled
            bodies = []
            with anyio.fail_after(5):
                async for message in consumer:
                    bodies.append(message.body)
                    if len(bodies) == total:
                        break
        assert bodies == [b"%d" % i for i in range(total)]


@pytest.mark.anyio
async def test_prefetch_sized_buffer_never_blocks_the_reader(broker: FakeBroker) -> None:
    """A broker that respects prefetch never fills the consumer's buffer: the
    connection keeps working for everyone while the consumer sits idle."""
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=3) as consumer,
        conn.channel() as other,
    ):
        (tag,) = broker.consumers
        for i in range(3):
            await broker.deliver(tag, b"%d" % i)
        with anyio.fail_after(5):
            assert (await other.queue_declare("still-served")).queue == "still-served"
        with anyio.fail_after(5):
            for i in range(3):
                assert (await consumer.__anext__()).body == b"%d" % i


@pytest.mark.anyio
async def test_server_cancel_ends_iteration_after_what_was_delivered(
    broker: FakeBroker,
) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        (tag,) = broker.consumers
        channel, _queue = broker.consumers[tag]
        await broker.deliver(tag, b"first")
        await broker.deliver(tag, b"second")
        await broker.send(channel, C.Basic.Cancel(consumer_tag=tag, nowait=True))
        bodies = []
        with pytest.raises(ConsumerCancelled), anyio.fail_after(5):
            async for message in consumer:
                bodies.append(message.body)
                await message.ack()
        assert bodies == [b"first", b"second"]
        assert consumer.channel.is_open
        assert (await consumer.channel.queue_declare("next")).queue == "next"


@pytest.mark.anyio
async def test_server_cancel_stops_run_with_callbacks(broker: FakeBroker) -> None:
    seen: list[object] = []

    def on_message(body: object, message: Message) -> None:
        seen.append(body)

    async with (
        broker,
        connect(URL) as conn,
        Consumer(
            conn, queues=[Queue("q")], callbacks=[on_message], no_ack=True, accept=["json"]
        ) as consumer,
    ):
        (tag,) = broker.consumers
        channel, _queue = broker.consumers[tag]
        props = C.Basic.Properties(content_type="application/json")
        await broker.deliver(tag, b'{"n": 1}', properties=props)
        await broker.send(channel, C.Basic.Cancel(consumer_tag=tag, nowait=True))
        with pytest.raises(ConsumerCancelled), anyio.fail_after(5):
            await consumer.run()
    assert seen == [{"n": 1}]


@pytest.mark.anyio
async def test_channel_closed_under_the_consumer_raises_its_error(broker: FakeBroker) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        (tag,) = broker.consumers
        channel, _queue = broker.consumers[tag]
        await broker.deliver(tag, b"one")
        with anyio.fail_after(5):
            message = await consumer.__anext__()
        await broker.close_channel(channel, 406, "PRECONDITION_FAILED - unknown delivery tag")
        with pytest.raises(PreconditionFailed), anyio.fail_after(5):
            await consumer.__anext__()
        assert not message.channel.is_open
        assert conn.is_open


@pytest.mark.trio
async def test_drain_events_times_out_in_virtual_time(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], no_ack=True, on_message=lambda m: None) as consumer,
    ):
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await consumer.drain_events(timeout=30)
        assert trio.current_time() - start == pytest.approx(30)
        (tag,) = broker.consumers
        await broker.deliver(tag, b"now")
        await consumer.drain_events(timeout=30)


@pytest.mark.trio
async def test_leaving_a_consumer_with_a_full_buffer_is_prompt(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """No prefetch: the broker floods, the buffer fills, the reader waits for
    room.  Leaving the consumer must not wait out the close timeout."""
    async with broker, connect(URL) as conn:
        consumer = Consumer(conn, queues=[Queue("q")], no_ack=True, buffer_size=2)
        await consumer.__aenter__()
        (tag,) = broker.consumers
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                for i in range(10):
                    if tag not in broker.consumers:
                        return  # cancel-ok sent: a broker sends no more
                    await broker.deliver(tag, b"%d" % i)

            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await consumer.__aexit__(None, None, None)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
        # The reader was waiting for room in the buffer nobody reads: the
        # consumer must free it before waiting for cancel-ok and close-ok.
        assert elapsed < 1, elapsed
        assert conn.is_open
