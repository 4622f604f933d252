"""Which consumer the broker gives a message to: exclusive consumers,
consumer priorities (``x-priority``) and single active consumer
(``x-single-active-consumer``), as RabbitMQ 3.10 does it for classic queues.

Run against RabbitMQ and (``TRIO_MSG_TEST_BROKER=memory``) against the
embedded broker: both must answer the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import pytest

import trio_msg
from trio_msg import Consumer, Producer, Queue
from trio_msg.errors import AccessRefused

pytestmark = pytest.mark.anyio

TIMEOUT = 10


@pytest.fixture
async def conn(broker_url: str) -> AsyncIterator[trio_msg.Connection]:
    async with trio_msg.connect(broker_url, revive=False) as c:
        yield c


@pytest.fixture
async def queue_name(broker_url: str, unique_name: str) -> AsyncIterator[str]:
    yield unique_name
    async with trio_msg.connect(broker_url) as c, c.channel() as ch:
        await ch.queue_delete(unique_name)


async def receive(consumer: Consumer, n: int, *, ack: bool = False) -> list[str]:
    out = []
    with anyio.fail_after(TIMEOUT):
        async for message in consumer:
            out.append(message.payload)
            if ack:
                await message.ack()
            if len(out) == n:
                break
    return out


async def publish(conn: trio_msg.Connection, queue: str, bodies: list[str]) -> None:
    async with Producer(conn) as producer:
        for body in bodies:
            await producer.publish(body, routing_key=queue)


async def ready(conn: trio_msg.Connection, queue: str) -> int:
    async with conn.channel() as ch:
        return (await ch.queue_declare(queue, passive=True)).message_count


def consuming(queue: str, priority: int | None = None, **arguments: object) -> Queue:
    return Queue(
        queue,
        durable=False,
        queue_arguments=dict(arguments),
        consumer_arguments=None if priority is None else {"x-priority": priority},
    )


async def test_higher_priority_consumers_first_lower_ones_when_they_are_full(
    conn: trio_msg.Connection, queue_name: str
) -> None:
    """``x-priority``: the higher consumer takes what its prefetch allows,
    the lower one the rest; in arrival order either way."""
    async with conn.channel() as ch:
        await ch.queue_declare(queue_name, durable=False)
    async with (
        Consumer(conn, [consuming(queue_name)], prefetch_count=10) as low,
        Consumer(conn, [consuming(queue_name, 10)], prefetch_count=2) as high,
    ):
        await publish(conn, queue_name, [str(i) for i in range(5)])
        assert await receive(high, 2) == ["0", "1"]
        assert await receive(low, 3) == ["2", "3", "4"]


async def test_a_negative_priority_comes_after_the_default(
    conn: trio_msg.Connection, queue_name: str
) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare(queue_name, durable=False)
    async with (
        Consumer(conn, [consuming(queue_name, -5)], prefetch_count=10) as below,
        Consumer(conn, [consuming(queue_name)], prefetch_count=1) as default,
    ):
        await publish(conn, queue_name, ["a", "b", "c"])
        assert await receive(default, 1) == ["a"]
        assert await receive(below, 2) == ["b", "c"]


async def test_a_single_active_consumer_gets_everything_until_it_goes(
    conn: trio_msg.Connection, queue_name: str
) -> None:
    """The first consumer is the active one, whatever the priorities of
    those that come later; when it goes, the one with the highest priority
    (the earliest of those) takes over."""
    sac = {"x-single-active-consumer": True}
    async with conn.channel() as ch:
        await ch.queue_declare(queue_name, durable=False, arguments=sac)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            Consumer(conn, [consuming(queue_name, 0, **sac)], prefetch_count=10)
        )
        middle = await stack.enter_async_context(
            Consumer(conn, [consuming(queue_name, 5, **sac)], prefetch_count=10)
        )
        high = await stack.enter_async_context(
            Consumer(conn, [consuming(queue_name, 10, **sac)], prefetch_count=10)
        )
        late_high = await stack.enter_async_context(
            Consumer(conn, [consuming(queue_name, 10, **sac)], prefetch_count=10)
        )
        await publish(conn, queue_name, ["1", "2", "3"])
        assert await receive(first, 3, ack=True) == ["1", "2", "3"]  # none to the others

        await first.cancel()
        await publish(conn, queue_name, ["4", "5"])
        assert await receive(high, 2, ack=True) == ["4", "5"]
        assert await ready(conn, queue_name) == 0
        del middle, late_high


async def test_an_exclusive_consumer_has_the_queue_to_itself(
    conn: trio_msg.Connection, queue_name: str
) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare(queue_name, durable=False)
    async with conn.channel() as ch:
        sink_send, sink_receive = anyio.create_memory_object_stream[object](10)
        async with sink_receive:
            await ch.basic_consume(queue_name, sink_send, exclusive=True)
            async with conn.channel() as other:
                with pytest.raises(AccessRefused, match="in exclusive use"):
                    await other.basic_consume(queue_name, sink_send)


async def test_an_exclusive_consumer_needs_a_queue_without_consumers(
    conn: trio_msg.Connection, queue_name: str
) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare(queue_name, durable=False)
    async with conn.channel() as ch:
        sink_send, sink_receive = anyio.create_memory_object_stream[object](10)
        async with sink_receive:
            await ch.basic_consume(queue_name, sink_send)
            async with conn.channel() as other:
                with pytest.raises(AccessRefused, match="in exclusive use"):
                    await other.basic_consume(queue_name, sink_send, exclusive=True)
