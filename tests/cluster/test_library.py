"""The cluster features that need no cluster, on the embedded broker
(memory://): a retrying publish that is nacked goes again on a new channel,
the delivery count and stream offset a message shows, and the stream
options a Consumer checks."""

from __future__ import annotations

import datetime

import anyio
import pytest

import trio_msg
from trio_msg.messaging import STREAM_PREFETCH

pytestmark = pytest.mark.anyio


async def test_a_nacked_retrying_publish_goes_again_on_a_new_channel(unique_name: str) -> None:
    """A full ``reject-publish`` queue nacks; with ``retry=True`` the
    producer moves to a new channel and publishes again until the queue
    has room."""
    async with trio_msg.connect("memory://") as conn:
        async with conn.channel() as ch:
            await ch.queue_declare(
                unique_name,
                durable=False,
                arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
            )
        policy = trio_msg.RetryPolicy(interval_start=0.01, interval_step=0.01, interval_max=0.05)
        async with trio_msg.Producer(conn) as producer:
            await producer.publish("first", routing_key=unique_name)
            first_channel = producer.channel
            async with anyio.create_task_group() as tg:

                async def second() -> None:
                    await producer.publish(
                        "second", routing_key=unique_name, retry=True, retry_policy=policy
                    )

                tg.start_soon(second)
                got = []
                queue = trio_msg.Queue(unique_name, no_declare=True)
                async with trio_msg.Consumer(conn, queues=[queue]) as c:
                    with anyio.fail_after(10):
                        async for message in c:
                            got.append(message.payload)
                            await message.ack()
                            if len(got) == 2:
                                break
            assert got == ["first", "second"]
            assert producer.channel is not first_channel
            assert not first_channel.is_open


async def test_without_retry_a_nack_still_raises(unique_name: str) -> None:
    async with trio_msg.connect("memory://") as conn:
        async with conn.channel() as ch:
            await ch.queue_declare(
                unique_name,
                durable=False,
                arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
            )
        async with trio_msg.Producer(conn) as producer:
            await producer.publish("fits", routing_key=unique_name)
            with pytest.raises(trio_msg.errors.MessageNacked):
                await producer.publish("refused", routing_key=unique_name)


async def test_delivery_count_and_stream_offset_come_from_the_headers(unique_name: str) -> None:
    async with trio_msg.connect("memory://") as conn:
        queue = trio_msg.Queue(unique_name, durable=False)
        async with trio_msg.Producer(conn) as producer:
            await producer.publish(0, routing_key=unique_name, declare=[queue])
            await producer.publish(
                1, routing_key=unique_name, headers={"x-delivery-count": 3, "x-stream-offset": 42}
            )
        async with trio_msg.Consumer(conn, queues=[queue]) as consumer:
            plain = await consumer.__anext__()
            counted = await consumer.__anext__()
        assert (plain.delivery_count, plain.stream_offset) == (0, None)
        assert (counted.delivery_count, counted.stream_offset) == (3, 42)


def test_stream_options_are_checked_and_the_prefetch_is_set() -> None:
    stream = trio_msg.Queue("s", queue_type="stream")
    assert trio_msg.Consumer(None, queues=[stream]).prefetch_count == STREAM_PREFETCH  # type: ignore[arg-type]
    assert trio_msg.Consumer(None, queues=[stream], prefetch_count=7).prefetch_count == 7  # type: ignore[arg-type]
    classic = trio_msg.Queue("c")
    assert trio_msg.Consumer(None, queues=[classic]).prefetch_count is None  # type: ignore[arg-type]
    utc = datetime.UTC
    for good in ("first", "last", "next", 0, 10**12, datetime.datetime(2026, 1, 1, tzinfo=utc)):
        consumer = trio_msg.Consumer(None, queues=[stream], stream_offset=good)  # type: ignore[arg-type]
        assert consumer.stream_offset == good
    for bad, error in [
        ("middle", ValueError),
        (-1, ValueError),
        (True, TypeError),
        (1.5, TypeError),
        (datetime.datetime(2026, 1, 1), ValueError),  # naive: local time or UTC?
    ]:
        with pytest.raises(error):
            trio_msg.Consumer(None, queues=[stream], stream_offset=bad)  # type: ignore[arg-type]
