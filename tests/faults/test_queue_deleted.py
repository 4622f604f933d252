"""A queue deleted under its consumer (the broker sends ``basic.cancel``)."""

from __future__ import annotations

import anyio
import pytest
from _ledger import Ledger
from _workload import FAST, delete_queue, queue_depth

import trio_msg
from trio_msg.errors import ConsumerCancelled, NotFound

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("revive", [False, True], ids=["plain", "reviving"])
async def test_queue_deleted_under_a_consumer(
    broker_url: str, unique_name: str, ledger: Ledger, revive: bool
) -> None:
    """Everything confirmed before the deletion was consumed; the consumer's
    iteration ends with ConsumerCancelled (a server cancel is not a lost
    connection: a reviving one does not paper over it), and the connection
    goes on working."""
    queue = trio_msg.Queue(unique_name, durable=False)
    other = trio_msg.Queue(unique_name + ".other", durable=False)
    try:
        with anyio.fail_after(30):
            async with (
                trio_msg.connect(broker_url, revive=FAST if revive else False) as conn,
                trio_msg.Producer(conn) as producer,
                trio_msg.Consumer(conn, queues=[queue], prefetch_count=5) as consumer,
            ):
                for i in range(20):
                    ledger.publishing(i)
                    await producer.publish(i, routing_key=queue.name)
                    ledger.confirm(i)
                async for message in consumer:
                    ledger.consume(message.payload)
                    await message.ack()
                    if ledger.complete():
                        break
                async with trio_msg.connect(broker_url) as admin, admin.channel() as ch:
                    await ch.queue_delete(queue.name)
                with pytest.raises(ConsumerCancelled):
                    await consumer.__anext__()
                # the connection and the producer are fine
                await producer.publish("still here", routing_key=other.name, declare=[other])
                assert conn.incarnation == 1
        ledger.check(min_confirmed=20)
        assert await queue_depth(broker_url, other.name) == 1
        with pytest.raises(NotFound):
            await queue_depth(broker_url, queue.name)
    finally:
        await delete_queue(broker_url, other.name)


async def test_queue_deleted_with_messages_in_the_consumers_buffer(
    broker_url: str, unique_name: str
) -> None:
    """Messages already delivered are still handed over (and can be acked)
    before the iteration ends with ConsumerCancelled."""
    queue = trio_msg.Queue(unique_name, durable=False)
    async with (
        trio_msg.connect(broker_url, revive=FAST) as conn,
        trio_msg.Producer(conn) as producer,
        trio_msg.Consumer(conn, queues=[queue], prefetch_count=10) as consumer,
    ):
        for i in range(5):
            await producer.publish(i, routing_key=queue.name)
        first = await consumer.__anext__()
        await first.ack()
        async with trio_msg.connect(broker_url) as admin, admin.channel() as ch:
            await ch.queue_delete(queue.name)
        got = [first.payload]
        with anyio.fail_after(10), pytest.raises(ConsumerCancelled):
            while True:
                message = await consumer.__anext__()
                got.append(message.payload)
                await message.ack()
        assert got == list(range(5))
