"""Producers and Consumers outlive channel errors, against the real broker.

RabbitMQ closes a channel over one failed operation (404 for a publish to a
missing exchange, 406 for a redeclare with other arguments or an unknown
delivery tag).  The error goes to the callers whose operations were on that
channel; a Producer or Consumer made from a connection then opens a new
channel on its next use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

import trio_msg
from trio_msg import Consumer, Outcome, Producer, Queue
from trio_msg.errors import (
    ChannelNotOpen,
    MessageStateError,
    NotFound,
    PreconditionFailed,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 10
FAST = trio_msg.RetryPolicy(interval_start=0.05, interval_step=0.05, interval_max=0.2)


@pytest.fixture(params=[False, True], ids=["plain", "revive"])
async def conn(
    broker_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[trio_msg.Connection]:
    """The same behaviour is expected of a reviving connection: a channel
    error is not a connection loss."""
    async with trio_msg.connect(broker_url, revive=FAST if request.param else False) as c:
        yield c


@pytest.fixture
async def queue(broker_url: str, unique_name: str) -> AsyncIterator[Queue]:
    q = Queue(unique_name, durable=False, expires=120)
    yield q
    with anyio.fail_after(TIMEOUT):
        async with trio_msg.connect(broker_url) as c, c.channel() as ch:
            await ch.queue_delete(q.name)


def _mismatch(queue: Queue) -> Queue:
    """The same queue with other arguments: declaring it closes the channel
    with 406 PRECONDITION_FAILED."""
    return Queue(queue.name, durable=False, expires=120, max_length=5)


async def _get_bodies(conn: trio_msg.Connection, queue: Queue) -> list[bytes]:
    out = []
    async with conn.channel() as ch:
        while (message := await ch.basic_get(queue.name, no_ack=True)) is not None:
            out.append(message.body)
    return out


async def test_a_refused_publish_raises_not_found_then_the_producer_goes_on(
    conn: trio_msg.Connection, queue: Queue, unique_name: str
) -> None:
    async with Producer(conn) as producer:
        await queue.declare(channel=producer.channel)
        with anyio.fail_after(TIMEOUT), pytest.raises(NotFound) as info:
            await producer.publish(b"lost", exchange=unique_name + ".missing", routing_key="x")
        assert (info.value.class_id, info.value.method_id) == (60, 40)  # basic.publish
        with anyio.fail_after(TIMEOUT):
            result = await producer.publish(b"next", routing_key=queue.name)
        assert result is not None and result.outcome is Outcome.ACK
        assert producer.channel.confirming
        with anyio.fail_after(TIMEOUT):
            assert await _get_bodies(conn, queue) == [b"next"]
    assert conn.is_open


async def test_without_confirms_the_refusal_is_raised_by_the_next_publish(
    conn: trio_msg.Connection, queue: Queue, unique_name: str
) -> None:
    async with Producer(conn, confirm=False) as producer:
        await queue.declare(channel=producer.channel)
        closed = producer.channel
        assert await producer.publish(b"lost", exchange=unique_name + ".missing") is None
        with anyio.fail_after(TIMEOUT):
            while closed.is_open:  # the broker's close comes after publish returned
                await anyio.sleep(0.01)
        # The next publish raises it, sending nothing...
        with pytest.raises(NotFound):
            await producer.publish(b"not sent", routing_key=queue.name)
        # ...and the one after goes out on a new channel.
        await producer.publish(b"sent", routing_key=queue.name)
        assert producer.channel is not closed
        with anyio.fail_after(TIMEOUT):
            while not (bodies := await _get_bodies(conn, queue)):
                await anyio.sleep(0.01)
        assert bodies == [b"sent"]


async def test_without_confirms_leaving_raises_a_refusal_no_publish_raised(
    conn: trio_msg.Connection, unique_name: str
) -> None:
    with anyio.fail_after(TIMEOUT), pytest.raises(NotFound):
        async with Producer(conn, confirm=False) as producer:
            await producer.publish(b"lost", exchange=unique_name + ".missing")
    assert conn.is_open


async def test_a_redeclare_with_other_arguments_raises_then_the_producer_goes_on(
    conn: trio_msg.Connection, queue: Queue
) -> None:
    async with Producer(conn) as producer:
        await queue.declare(channel=producer.channel)
        other = Queue(queue.name, durable=False, expires=120, max_length=5)
        with anyio.fail_after(TIMEOUT), pytest.raises(PreconditionFailed):
            await producer.publish(b"lost", routing_key=queue.name, declare=[other])
        with anyio.fail_after(TIMEOUT):
            await producer.publish(b"next", routing_key=queue.name)
            assert await _get_bodies(conn, queue) == [b"next"]


async def test_a_pipeline_resolves_every_pending_publish_when_the_channel_closes(
    conn: trio_msg.Connection, queue: Queue, unique_name: str
) -> None:
    missing = unique_name + ".missing"
    async with Producer(conn) as producer:
        await queue.declare(channel=producer.channel)
        with anyio.fail_after(TIMEOUT):
            async with producer.pipeline(100, raise_on_failure=False) as pipe:
                results = [await pipe.publish(b"%d" % i, routing_key=queue.name) for i in range(20)]
                refused = await pipe.publish(b"lost", exchange=missing)
                after = [await pipe.publish(b"after", routing_key=queue.name) for _ in range(5)]
        every = [*results, refused, *after]
        assert all(r.done for r in every)
        assert refused.outcome is Outcome.NACK and isinstance(refused.reason, NotFound)
        # The others were acked before the close, or unknown because of it.
        for r in results + after:
            assert r.outcome is Outcome.ACK or (
                r.outcome is Outcome.UNKNOWN and isinstance(r.reason, NotFound)
            )
        assert pipe.acked + pipe.nacked + pipe.unknown == len(every)
        assert pipe.nacked == 1
        # The producer goes on, on a new channel.
        with anyio.fail_after(TIMEOUT):
            await producer.publish(b"next", routing_key=queue.name)
            bodies = await _get_bodies(conn, queue)
        assert bodies[-1] == b"next"
        assert b"lost" not in bodies


async def test_unknown_outcomes_of_bystanders_are_retried(
    broker_url: str, queue: Queue, unique_name: str
) -> None:
    """retry=True publishes again what another operation's channel error
    left unknown; the refused publish itself is not retried."""
    missing = unique_name + ".missing"
    async with trio_msg.connect(broker_url, revive=FAST) as conn, Producer(conn) as producer:
        await queue.declare(channel=producer.channel)
        with anyio.fail_after(TIMEOUT):
            async with producer.pipeline(100, raise_on_failure=False) as pipe:
                for i in range(50):
                    await pipe.publish(b"%d" % i, routing_key=queue.name, retry=True)
                await pipe.publish(b"lost", exchange=missing, retry=True)
                for i in range(50, 60):
                    await pipe.publish(b"%d" % i, routing_key=queue.name, retry=True)
        assert pipe.nacked == 1 and pipe.unknown == 0
        assert pipe.acked == 60
        with anyio.fail_after(TIMEOUT):
            bodies = set(await _get_bodies(conn, queue))
        assert bodies == {b"%d" % i for i in range(60)}  # (at least once: duplicates allowed)


async def test_a_producer_on_a_callers_channel_says_it_needs_a_new_one(
    conn: trio_msg.Connection, queue: Queue, unique_name: str
) -> None:
    ch = await conn.open_channel()
    async with Producer(ch) as producer:
        with anyio.fail_after(TIMEOUT), pytest.raises(NotFound):
            await producer.publish(b"lost", exchange=unique_name + ".missing")
        with pytest.raises(ChannelNotOpen, match="revive"):
            await producer.publish(b"x", routing_key=queue.name)
        async with conn.channel() as fresh:
            await queue.declare(channel=fresh)
            await producer.revive(fresh)
            with anyio.fail_after(TIMEOUT):
                await producer.publish(b"next", routing_key=queue.name)
                assert await _get_bodies(conn, queue) == [b"next"]


async def test_a_consumer_whose_channel_is_closed_gets_the_error_then_messages_again(
    conn: trio_msg.Connection, queue: Queue
) -> None:
    async with Producer(conn) as producer:
        await queue.declare(channel=producer.channel)
        for i in range(3):
            await producer.publish(b"%d" % i, routing_key=queue.name)
    async with Consumer(conn, queues=[queue], prefetch_count=2) as consumer:
        with anyio.fail_after(TIMEOUT):
            held = [await consumer.__anext__(), await consumer.__anext__()]
        # A redeclaration of the queue with other arguments on the
        # consumer's channel: the broker closes it with 406.
        old = consumer.channel
        with anyio.fail_after(TIMEOUT), pytest.raises(PreconditionFailed):
            await _mismatch(queue).declare(channel=old)
        with anyio.fail_after(TIMEOUT), pytest.raises(PreconditionFailed):
            async for _ in consumer:
                pass
        # The old messages' tags died with their channel: acking one is
        # refused here, never sent on the new channel.
        with pytest.raises(MessageStateError, match="closed"):
            await held[0].ack()
        # The next iteration consumes again on a new channel, prefetch and all.
        with anyio.fail_after(TIMEOUT):
            again = [await consumer.__anext__(), await consumer.__anext__()]
            assert consumer.channel is not old and consumer.channel.is_open
            assert [m.body for m in again] == [b"0", b"1"]
            assert all(m.delivery_info["redelivered"] for m in again)  # unacked before
            for m in again:
                await m.ack()
            last = await consumer.__anext__()
        assert last.body == b"2"
        assert not last.delivery_info["redelivered"]  # held back by the prefetch of 2
        await last.ack()
    with anyio.fail_after(TIMEOUT):
        assert await _get_bodies(conn, queue) == []


async def test_a_consumer_goes_on_after_a_redeclare_on_its_channel_fails(
    conn: trio_msg.Connection, queue: Queue
) -> None:
    async with Consumer(conn, queues=[queue], prefetch_count=5) as consumer:
        other = Queue(queue.name, durable=False, expires=120, max_length=5)
        with anyio.fail_after(TIMEOUT), pytest.raises(PreconditionFailed):
            await other.declare(channel=consumer.channel)
        with anyio.fail_after(TIMEOUT), pytest.raises(PreconditionFailed):
            await consumer.__anext__()
        async with Producer(conn) as producer:
            await producer.publish(b"after", routing_key=queue.name)
        with anyio.fail_after(TIMEOUT):
            message = await consumer.__anext__()
        assert message.body == b"after"
        await message.ack()


async def test_a_delivery_in_flight_when_the_broker_closes_the_channel_is_dropped(
    conn: trio_msg.Connection, queue: Queue
) -> None:
    """Acking one message frees the prefetch window: the queue sends the
    next one while the channel is closing over the declaration after it, and
    RabbitMQ may put it on the wire after its channel.close.  The client
    drops it (the broker redelivers it) and the connection goes on."""
    async with Producer(conn) as producer:
        await queue.declare(channel=producer.channel)
        for i in range(2):
            await producer.publish(b"%d" % i, routing_key=queue.name)
    async with Consumer(conn, queues=[queue], prefetch_count=1) as consumer:
        with anyio.fail_after(TIMEOUT):
            first = await consumer.__anext__()
        await first.ack()  # (corked: goes out with the declaration after it)
        with anyio.fail_after(TIMEOUT), pytest.raises(PreconditionFailed):
            await _mismatch(queue).declare(channel=consumer.channel)
        with anyio.fail_after(TIMEOUT), pytest.raises(PreconditionFailed):
            async for _ in consumer:
                pass
        with anyio.fail_after(TIMEOUT):
            second = await consumer.__anext__()
        assert second.body == b"1"
        await second.ack()
    assert conn.is_open
