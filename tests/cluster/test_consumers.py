"""Quorum queues and consumers on the cluster: the delivery count and the
delivery limit (poison messages), single active consumer, consumer
priorities, and the consumer timeout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import pytest
from _cluster import Cluster, ClusterNode

import trio_msg
from trio_msg.errors import PreconditionFailed

pytestmark = pytest.mark.anyio


async def drop(conn: trio_msg.Connection, *names: str) -> None:
    async with conn.channel() as ch:
        for name in names:
            await ch.queue_delete(name)


async def test_redeliveries_are_counted_and_a_poison_message_is_dead_lettered(
    healthy: Cluster, unique_name: str, anyio_backend: str
) -> None:
    """``x-delivery-limit`` 2: the message is delivered three times (counts
    0, 1, 2), then dead-lettered instead of coming back a fourth time."""
    dlq = trio_msg.Queue(f"{unique_name}.dead", queue_type="quorum")
    queue = trio_msg.Queue(
        unique_name,
        queue_type="quorum",
        dead_letter_exchange="",
        dead_letter_routing_key=dlq.name,
        queue_arguments={"x-delivery-limit": 2},
    )
    async with trio_msg.connect(healthy.urls) as conn:
        try:
            async with trio_msg.Producer(conn) as producer:
                await producer.publish("poison", routing_key=queue.name, declare=[dlq, queue])
            counts: list[int] = []
            with anyio.fail_after(30):
                async with trio_msg.Consumer(conn, queues=[queue], prefetch_count=1) as consumer:
                    async for message in consumer:
                        counts.append(message.delivery_count)
                        assert message.redelivered == (len(counts) > 1)
                        await message.requeue()
                        if len(counts) == 3:
                            break
                async with trio_msg.Consumer(conn, queues=[dlq]) as consumer:
                    async for message in consumer:
                        assert message.payload == "poison"
                        await message.ack()
                        break
            assert counts == [0, 1, 2]
            async with conn.channel() as ch:
                assert (await ch.queue_declare(queue.name, passive=True)).message_count == 0
        finally:
            await drop(conn, queue.name, dlq.name)


async def test_single_active_consumer(healthy: Cluster, unique_name: str) -> None:
    """Two consumers on a queue with ``x-single-active-consumer``: the first
    gets everything; when it is cancelled the second takes over."""
    queue = trio_msg.Queue(
        unique_name, queue_type="quorum", queue_arguments={"x-single-active-consumer": True}
    )
    async with (
        trio_msg.connect(healthy.nodes[0].url) as a_conn,
        trio_msg.connect(healthy.nodes[1].url) as b_conn,
    ):
        try:
            with anyio.fail_after(30):
                async with trio_msg.Consumer(a_conn, queues=[queue], prefetch_count=50) as a:
                    b = trio_msg.Consumer(b_conn, queues=[queue], prefetch_count=50)
                    async with b, trio_msg.Producer(a_conn) as producer:
                        for i in range(10):
                            await producer.publish(i, routing_key=queue.name)
                        got_a = []
                        async for message in a:
                            got_a.append(message.payload)
                            await message.ack()
                            if len(got_a) == 10:
                                break
                        assert got_a == list(range(10))
                        await a.cancel()  # b becomes the active consumer
                        for i in range(10, 15):
                            await producer.publish(i, routing_key=queue.name)
                        got_b = []
                        async for message in b:
                            got_b.append(message.payload)
                            await message.ack()
                            if len(got_b) == 5:
                                break
                        assert got_b == list(range(10, 15))
        finally:
            await drop(a_conn, queue.name)


async def test_consumer_priority(healthy: Cluster, unique_name: str) -> None:
    """The consumer with the higher ``x-priority`` gets the messages while it
    has room in its prefetch; the other gets them once it is full."""
    queue = trio_msg.Queue(unique_name, queue_type="quorum")
    high = trio_msg.Queue(unique_name, queue_type="quorum", consumer_arguments={"x-priority": 10})
    async with trio_msg.connect(healthy.urls) as conn:
        try:
            with anyio.fail_after(30):
                async with (
                    trio_msg.Consumer(conn, queues=[queue], prefetch_count=10) as low_c,
                    trio_msg.Consumer(conn, queues=[high], prefetch_count=3) as high_c,
                    trio_msg.Producer(conn) as producer,
                ):
                    for i in range(5):
                        await producer.publish(i, routing_key=queue.name)
                    # the high-priority consumer took 0..2 and is full; 3, 4 went low
                    got_high = [(await high_c.__anext__()).payload for _ in range(3)]
                    got_low = [(await low_c.__anext__()).payload for _ in range(2)]
                    assert got_high == [0, 1, 2]
                    assert got_low == [3, 4]
        finally:
            await drop(conn, queue.name)


@contextmanager
def short_consumer_timeout(node: ClusterNode, ms: int) -> Iterator[None]:
    """``consumer_timeout`` *ms* on *node* for channels opened in the block
    (and the channel tick that checks it, every second); both restored after
    to what they were."""
    saved = {
        key: node.ctl("eval", f"application:get_env(rabbit, {key}).").strip()
        for key in ("consumer_timeout", "channel_tick_interval")
    }
    node.ctl(
        "eval",
        f"application:set_env(rabbit, consumer_timeout, {ms}), "
        "application:set_env(rabbit, channel_tick_interval, 1000).",
    )
    try:
        yield
    finally:
        for key, value in saved.items():
            match = re.fullmatch(r"\{ok,(\d+)\}", value)
            assert match is not None, f"{key} was {value!r}"
            node.ctl("eval", f"application:set_env(rabbit, {key}, {match.group(1)}).")


async def test_an_ack_after_the_consumer_timeout(healthy: Cluster, unique_name: str) -> None:
    """A message left unacknowledged past ``consumer_timeout``: RabbitMQ
    closes the channel with 406 PRECONDITION_FAILED.  The consumer raises
    it, naming the timeout; the late ack raises too (the message is no
    longer ours: the broker redelivers it); iterating again goes on with the
    redelivery on a new channel."""
    node = healthy.nodes[2]
    queue = trio_msg.Queue(unique_name, queue_type="quorum")
    async with trio_msg.connect(node.url) as conn:
        try:
            async with trio_msg.Producer(conn) as producer:
                await producer.publish("slow", routing_key=queue.name, declare=[queue])
            with short_consumer_timeout(node, 500):
                async with trio_msg.Consumer(conn, queues=[queue], prefetch_count=1) as consumer:
                    with anyio.fail_after(30):
                        message = await consumer.__anext__()
                        with pytest.raises(PreconditionFailed, match="timed out") as caught:
                            await consumer.__anext__()
                    assert caught.value.reply_code == 406
                    with pytest.raises(trio_msg.errors.TrioMsgError):
                        await message.ack()
                    with anyio.fail_after(30):
                        again = await consumer.__anext__()
                    assert again.payload == "slow" and again.redelivered
                    await again.ack()
        finally:
            await drop(conn, queue.name)
