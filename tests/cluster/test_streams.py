"""Stream queues on the cluster: every kind of ``x-stream-offset`` returns
exactly the published sequence from where it says, the prefetch a stream
needs is set for the user, each message carries its offset, and a consumer
resumes after the last message it handed over."""

from __future__ import annotations

import datetime

import anyio
import pytest
from _cluster import Cluster

import trio_msg
from trio_msg.messaging import STREAM_PREFETCH

pytestmark = pytest.mark.anyio


def stream(name: str) -> trio_msg.Queue:
    return trio_msg.Queue(name, queue_type="stream")


async def publish(conn: trio_msg.Connection, queue: trio_msg.Queue, ids: range) -> None:
    async with trio_msg.Producer(conn) as producer:
        for i in ids:
            await producer.publish(i, routing_key=queue.name, declare=[queue])


async def read(
    conn: trio_msg.Connection, queue: trio_msg.Queue, count: int, **options: object
) -> list[tuple[int, int | None]]:
    """(payload, offset) of the next *count* messages read with *options*."""
    got: list[tuple[int, int | None]] = []
    with anyio.fail_after(30):
        async with trio_msg.Consumer(conn, queues=[queue], **options) as consumer:  # type: ignore[arg-type]
            async for message in consumer:
                got.append((message.payload, message.stream_offset))
                await message.ack()
                if len(got) == count:
                    break
    return got


async def test_each_kind_of_offset_reads_exactly_the_published_sequence(
    healthy: Cluster, unique_name: str
) -> None:
    queue = stream(unique_name)
    async with trio_msg.connect(healthy.urls) as conn:
        try:
            await publish(conn, queue, range(100))

            # first: everything, in order, with offsets 0..99 (a fresh stream)
            first = await read(conn, queue, 100, stream_offset="first")
            assert [p for p, _ in first] == list(range(100))
            offsets = [o for _, o in first]
            assert offsets == sorted(offsets) and None not in offsets
            by_offset = {o: p for p, o in first}

            # a number: from that message on
            k = offsets[37]
            assert [p for p, _ in await read(conn, queue, 100 - 37, stream_offset=k)] == list(
                range(37, 100)
            )

            # last: the last chunk -- a suffix of the sequence ending at 99
            last = await read(conn, queue, 1, stream_offset="last")
            start = last[0][0]
            assert by_offset[last[0][1]] == start
            tail = await read(conn, queue, 100 - start, stream_offset="last")
            assert [p for p, _ in tail] == list(range(start, 100))

            # next: only what is published after the consumer started
            got: list[int] = []
            async with trio_msg.Consumer(conn, queues=[queue], stream_offset="next") as consumer:
                await publish(conn, queue, range(100, 110))
                with anyio.fail_after(30):
                    async for message in consumer:
                        got.append(message.payload)
                        await message.ack()
                        if len(got) == 10:
                            break
            assert got == list(range(100, 110))

            # a timestamp (RabbitMQ's are whole seconds): chunks written at or
            # after it.  Wait for the next second so none of 0..109 is in it.
            now = datetime.datetime.now(datetime.UTC)
            since = now.replace(microsecond=0) + datetime.timedelta(seconds=1)
            await anyio.sleep((since - now).total_seconds() + 0.05)
            await publish(conn, queue, range(110, 120))
            assert [p for p, _ in await read(conn, queue, 10, stream_offset=since)] == list(
                range(110, 120)
            )
        finally:
            async with conn.channel() as ch:
                await ch.queue_delete(queue.name)


async def test_a_stream_consumer_gets_a_prefetch_without_asking(
    healthy: Cluster, unique_name: str
) -> None:
    queue = stream(unique_name)
    async with trio_msg.connect(healthy.urls) as conn:
        try:
            consumer = trio_msg.Consumer(conn, queues=[queue])
            assert consumer.prefetch_count == STREAM_PREFETCH
            # an explicit one wins; RabbitMQ refuses none at all (406)
            assert trio_msg.Consumer(conn, queues=[queue], prefetch_count=5).prefetch_count == 5
            await publish(conn, queue, range(3))
            assert [p for p, _ in await read(conn, queue, 3, stream_offset="first")] == [0, 1, 2]
            with pytest.raises(trio_msg.errors.PreconditionFailed, match="prefetch"):
                async with trio_msg.Consumer(conn, queues=[queue], prefetch_count=0):
                    pass
        finally:
            async with conn.channel() as ch:
                await ch.queue_delete(queue.name)


async def test_a_stream_consumer_resumes_after_the_last_message_it_handed_over(
    healthy: Cluster, unique_name: str
) -> None:
    """The broker closes the consumer's connection in the middle (320
    CONNECTION_FORCED); the reviving consumer consumes again from the
    message after the last one it handed over, not at ``first`` again."""
    queue = stream(unique_name)
    node = healthy.nodes[0]
    async with trio_msg.connect(node.url, connection_name=unique_name) as conn:
        try:
            await publish(conn, queue, range(50))
            got: list[int] = []
            async with trio_msg.Consumer(conn, queues=[queue], stream_offset="first") as consumer:
                with anyio.fail_after(60):
                    async for message in consumer:
                        got.append(message.payload)
                        await message.ack()
                        if len(got) == 20:
                            await anyio.to_thread.run_sync(
                                node.close_connection_by_name, unique_name
                            )
                        if got[-1] == 49:
                            break
            assert conn.incarnation >= 2
            # nothing skipped, nothing handed over twice
            assert got == list(range(50))
        finally:
            async with conn.channel() as ch:
                await ch.queue_delete(queue.name)
