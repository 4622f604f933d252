"""trio_msg.testing: the embedded broker as users script it in their tests,
through the ``memory_broker`` fixture of trio_msg's pytest plugin."""

from __future__ import annotations

import json

import anyio
import pytest

import trio_msg
from trio_msg import Consumer, Producer, Queue
from trio_msg.errors import (
    ConnectionForced,
    ConnectionLost,
    ConsumerCancelled,
    MessageNacked,
)
from trio_msg.testing import MemoryBroker

pytestmark = pytest.mark.anyio

TIMEOUT = 5


async def test_the_fixture_gives_each_test_an_empty_broker(memory_broker: MemoryBroker) -> None:
    assert memory_broker.url.startswith("memory://")
    assert memory_broker.queues() == {}
    async with trio_msg.connect(memory_broker.url) as conn, conn.channel() as ch:
        await ch.queue_declare("q", durable=False)
    assert set(memory_broker.queues()) == {"q"}


async def test_queues_messages_exchanges_bindings_and_connections(
    memory_broker: MemoryBroker,
) -> None:
    exchange = trio_msg.Exchange("orders", "topic", durable=False)
    queue = Queue("eu", exchange, routing_key="eu.#", durable=False)
    async with trio_msg.connect(memory_broker.url, connection_name="shop") as conn:
        async with Producer(conn, exchange=exchange, serializer="json") as producer:
            await producer.publish({"n": 1}, routing_key="eu.fr", declare=[queue])
            await producer.publish({"n": 2}, routing_key="eu.de", headers={"k": "v"})
        [shop] = memory_broker.connections()
        assert shop.name == "shop" and shop.user == "guest"
        info = memory_broker.queue("eu")
        assert (info.messages, info.unacked, info.consumers) == (2, 0, 0)
        messages = memory_broker.messages("eu")
        assert [json.loads(m.body) for m in messages] == [{"n": 1}, {"n": 2}]
        assert messages[1].headers == {"k": "v"}
        assert messages[0].routing_key == "eu.fr" and messages[0].exchange == "orders"
        assert memory_broker.exchanges()["orders"].type == "topic"
        [b] = memory_broker.bindings()
        assert (b.source, b.destination_type, b.destination, b.routing_key) == (
            "orders",
            "queue",
            "eu",
            "eu.#",
        )
        async with Consumer(conn, [queue], prefetch_count=1) as consumer:
            with anyio.fail_after(TIMEOUT):
                first = await consumer.__anext__()
            # delivered, not settled: one ready, one unacked, one consumer
            info = memory_broker.queue("eu")
            assert (info.messages, info.unacked, info.consumers) == (1, 1, 1)
            await first.ack()


async def test_close_connections_is_a_forced_close(memory_broker: MemoryBroker) -> None:
    with pytest.raises(ConnectionForced, match="reason 'maintenance'"):
        async with trio_msg.connect(memory_broker.url, revive=False, connection_name="c1"):
            assert memory_broker.close_connections("maintenance", name="c1") == 1
            await anyio.sleep_forever()  # the loss ends the block


async def test_a_reviving_connection_comes_back_after_a_drop(memory_broker: MemoryBroker) -> None:
    queue = Queue("q", durable=False)
    async with trio_msg.connect(memory_broker.url) as conn:
        async with Producer(conn) as producer:
            await producer.publish("one", routing_key="q", declare=[queue])
            before = conn.incarnation
            assert memory_broker.drop_connections() == 1
            with anyio.fail_after(TIMEOUT):
                await producer.publish("two", routing_key="q", retry=True)
        assert conn.incarnation > before
    assert [m.body for m in memory_broker.messages("q")] == [b"one", b"two"]


async def test_a_dropped_connection_without_revive_is_lost(memory_broker: MemoryBroker) -> None:
    with pytest.raises(ConnectionLost):
        async with trio_msg.connect(memory_broker.url, revive=False):
            memory_broker.drop_connections()
            await anyio.sleep_forever()


async def test_block_holds_publishers_until_unblock(memory_broker: MemoryBroker) -> None:
    queue = Queue("q", durable=False)
    async with trio_msg.connect(memory_broker.url) as conn, Producer(conn) as producer:
        await producer.publish("before", routing_key="q", declare=[queue])
        memory_broker.block("low on memory")
        done = anyio.Event()

        async def publish() -> None:
            await producer.publish("during", routing_key="q")
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish)
            with anyio.fail_after(TIMEOUT):
                while not conn.blocked:
                    await anyio.sleep(0.01)
            # blocked: the broker holds the publish (it is not in the queue)
            assert not done.is_set()
            assert [m.body for m in memory_broker.messages("q")] == [b"before"]
            [info] = memory_broker.connections()
            assert info.blocked
            memory_broker.unblock()
        assert done.is_set()
        assert not conn.blocked
    assert [m.body for m in memory_broker.messages("q")] == [b"before", b"during"]


async def test_cancel_consumers_ends_iteration(memory_broker: MemoryBroker) -> None:
    queue = Queue("q", durable=False)
    async with trio_msg.connect(memory_broker.url) as conn, Consumer(conn, [queue]) as consumer:
        assert memory_broker.cancel_consumers("q") == 1
        with pytest.raises(ConsumerCancelled), anyio.fail_after(TIMEOUT):
            await consumer.__anext__()
    assert memory_broker.queue("q").consumers == 0


async def test_held_confirms_keep_the_publisher_waiting(memory_broker: MemoryBroker) -> None:
    queue = Queue("q", durable=False)
    async with trio_msg.connect(memory_broker.url) as conn, Producer(conn) as producer:
        await producer.publish("declared", routing_key="q", declare=[queue])
        memory_broker.hold_confirms()
        with anyio.move_on_after(0.2) as waiting:
            await producer.publish("held", routing_key="q")
        assert waiting.cancelled_caught  # routed, but not confirmed
        assert memory_broker.queue("q").messages == 2
        memory_broker.release_confirms()
        with anyio.fail_after(TIMEOUT):
            await producer.publish("after", routing_key="q")


async def test_nacked_publishes(memory_broker: MemoryBroker) -> None:
    queue = Queue("q", durable=False)
    async with trio_msg.connect(memory_broker.url) as conn, Producer(conn) as producer:
        await producer.publish("ok", routing_key="q", declare=[queue])
        memory_broker.nack_publishes()
        with pytest.raises(MessageNacked):
            await producer.publish("refused", routing_key="q")
        memory_broker.nack_publishes(False)
        await producer.publish("ok again", routing_key="q")
    assert [m.body for m in memory_broker.messages("q")] == [b"ok", b"ok again"]


async def test_publish_from_the_broker_side(memory_broker: MemoryBroker) -> None:
    queue = Queue("inbox", durable=False)
    async with trio_msg.connect(memory_broker.url) as conn, Consumer(conn, [queue]) as consumer:
        assert memory_broker.publish(b"hello", routing_key="inbox") == 1
        with anyio.fail_after(TIMEOUT):
            message = await consumer.__anext__()
        assert message.body == b"hello"
        await message.ack()
    assert memory_broker.publish(b"nowhere", routing_key="missing") == 0
    with pytest.raises(KeyError, match="no exchange"):
        memory_broker.publish(b"x", exchange="missing")


def test_brokers_are_separate_and_close_forgets() -> None:
    a, b = MemoryBroker(), MemoryBroker()
    assert a.url != b.url
    a.publish(b"x")  # the default exchange: a queue-less message goes nowhere
    named = MemoryBroker("fixed-name")
    named.close()
    named.close()  # idempotent
    assert MemoryBroker("fixed-name").queues() == {}
