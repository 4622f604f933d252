"""Message.process(): settle a message by how a block ends (aio-pika's idiom)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import pytest

import trio_msg
from trio_msg import Consumer, Message, MessageState, Producer, Queue
from trio_msg.errors import MessageStateError

pytestmark = pytest.mark.anyio

TIMEOUT = 5


class Boom(Exception):
    pass


@pytest.fixture
async def conn(broker_url: str) -> AsyncIterator[trio_msg.Connection]:
    async with trio_msg.connect(broker_url) as connection:
        yield connection


@pytest.fixture
async def queues(broker_url: str, unique_name: str) -> AsyncIterator[tuple[Queue, Queue]]:
    """A work queue whose rejected messages are dead-lettered to a second one."""
    dead = Queue(f"{unique_name}.dead", durable=False)
    work = Queue(
        unique_name,
        durable=False,
        dead_letter_exchange="",
        dead_letter_routing_key=dead.name,
    )
    async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
        await dead.declare(channel=ch)
        await work.declare(channel=ch)
    yield work, dead
    with anyio.fail_after(TIMEOUT):
        async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
            await ch.queue_delete(work.name)
            await ch.queue_delete(dead.name)


async def counts(conn: trio_msg.Connection, work: Queue, dead: Queue) -> tuple[int, int]:
    """Ready messages in (work, dead), as the broker says."""
    async with conn.channel() as ch:
        ready = (await ch.queue_declare(work.name, passive=True)).message_count
        dead_ready = (await ch.queue_declare(dead.name, passive=True)).message_count
    return ready, dead_ready


async def one_message(conn: trio_msg.Connection, queue: Queue, body: str = "job") -> None:
    async with Producer(conn) as producer:
        await producer.publish(body, routing_key=queue.name)


async def next_message(consumer: Consumer) -> Message:
    return await consumer.__anext__()


async def test_success_acks(conn: trio_msg.Connection, queues: tuple[Queue, Queue]) -> None:
    work, dead = queues
    with anyio.fail_after(TIMEOUT):
        await one_message(conn, work)
        async with Consumer(conn, [work], prefetch_count=1) as consumer:
            message = await next_message(consumer)
            async with message.process() as entered:
                assert entered is message
            assert message.state is MessageState.ACK
        assert await counts(conn, work, dead) == (0, 0)


@pytest.mark.parametrize(
    ("requeue", "expected"),
    [(False, (0, 1)), (True, (1, 0))],
    ids=["reject", "requeue"],
)
async def test_exception_rejects_and_propagates(
    conn: trio_msg.Connection,
    queues: tuple[Queue, Queue],
    requeue: bool,
    expected: tuple[int, int],
) -> None:
    work, dead = queues
    with anyio.fail_after(TIMEOUT):
        await one_message(conn, work)
        async with Consumer(conn, [work], prefetch_count=1) as consumer:
            message = await next_message(consumer)
            with pytest.raises(Boom):
                async with message.process(requeue=requeue):
                    raise Boom
            assert message.state is (MessageState.REQUEUED if requeue else MessageState.REJECTED)
            await consumer.cancel()
        # requeue=False: dead-lettered (rejected); requeue=True: back in the queue.
        assert await counts(conn, work, dead) == expected


async def test_reject_on_redelivered(
    conn: trio_msg.Connection, queues: tuple[Queue, Queue]
) -> None:
    work, dead = queues
    with anyio.fail_after(TIMEOUT):
        await one_message(conn, work)
        async with Consumer(conn, [work], prefetch_count=1) as consumer:
            first = await next_message(consumer)
            with pytest.raises(Boom):
                async with first.process(requeue=True, reject_on_redelivered=True):
                    raise Boom
            second = await next_message(consumer)
            assert second.redelivered
            with pytest.raises(Boom):
                async with second.process(requeue=True, reject_on_redelivered=True):
                    raise Boom
            assert second.state is MessageState.REJECTED
        assert await counts(conn, work, dead) == (0, 1)


async def test_cancellation_requeues_even_without_requeue(
    conn: trio_msg.Connection, queues: tuple[Queue, Queue]
) -> None:
    work, dead = queues
    with anyio.fail_after(TIMEOUT):
        await one_message(conn, work)
        async with Consumer(conn, [work], prefetch_count=1) as consumer:
            message = await next_message(consumer)
            with anyio.CancelScope() as scope:
                async with message.process(requeue=False):
                    scope.cancel()
                    await anyio.sleep_forever()
            assert scope.cancelled_caught
            assert message.state is MessageState.REQUEUED
            await consumer.cancel()
        assert await counts(conn, work, dead) == (1, 0)


async def test_settled_in_the_block(conn: trio_msg.Connection, queues: tuple[Queue, Queue]) -> None:
    work, dead = queues
    with anyio.fail_after(TIMEOUT):
        for body in ("a", "b", "c"):
            await one_message(conn, work, body)
        async with Consumer(conn, [work], prefetch_count=3) as consumer:
            # ignore_processed: what the block did stands.
            message = await next_message(consumer)
            async with message.process(ignore_processed=True):
                await message.requeue()
            assert message.state is MessageState.REQUEUED
            # Without it: settled twice is an error, raised locally.
            message = await next_message(consumer)
            with pytest.raises(MessageStateError):
                async with message.process():
                    await message.ack()
            # Settled, then failed: the block's error goes on, nothing more is sent.
            message = await next_message(consumer)
            with pytest.raises(Boom):
                async with message.process():
                    await message.ack()
                    raise Boom
            assert message.state is MessageState.ACK
            await consumer.cancel()
        assert await counts(conn, work, dead) == (1, 0)  # only the requeued one


async def test_no_ack_message_needs_nothing(
    conn: trio_msg.Connection, queues: tuple[Queue, Queue]
) -> None:
    work, dead = queues
    with anyio.fail_after(TIMEOUT):
        await one_message(conn, work)
        async with Consumer(conn, [work], no_ack=True) as consumer:
            message = await next_message(consumer)
            with pytest.raises(Boom):
                async with message.process(requeue=True):
                    raise Boom
        assert await counts(conn, work, dead) == (0, 0)


async def test_channel_closed_sends_nothing(
    conn: trio_msg.Connection, queues: tuple[Queue, Queue], caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer's channel closed under the block: no reject can be sent
    (the broker requeues by itself), and a reject that was meant to drop the
    message is logged, since it comes back instead."""
    work, dead = queues
    caplog.set_level(logging.WARNING, logger="trio_msg.message")
    with anyio.fail_after(TIMEOUT):
        await one_message(conn, work)
        async with conn.channel() as ch:
            message = await ch.basic_get(work.name)
            assert message is not None
            with pytest.raises(Boom):
                async with message.process(requeue=False):
                    await ch.aclose()
                    raise Boom
        assert await counts(conn, work, dead) == (1, 0)
    assert any("was not rejected" in r.getMessage() for r in caplog.records)
