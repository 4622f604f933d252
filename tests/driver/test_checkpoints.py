"""Every public async method is a checkpoint (trio's rule), including when it
has nothing to wait for: an already-confirmed result, a consumer with nothing
to cancel, a buffered message, a cached declaration, a second ``aclose``.

The last test lists the public async methods of the driver's classes and
the ``check("Class.method", ...)`` calls in this file, so a new method
without a checkpoint test here fails it.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from pamqp import commands as C

from trio_msg import (
    Blocked,
    Channel,
    Connection,
    Consumer,
    Exchange,
    Message,
    Outcome,
    Pipeline,
    Producer,
    PublishResult,
    Queue,
    Watcher,
)
from trio_msg._ports import ChannelPort, ConnectionPort
from trio_msg._protocol.events import Delivery
from trio_msg.connection import connect
from trio_msg.errors import MessageStateError

from .fake_broker import URL, FakeBroker

CLASSES = (Connection, Channel, PublishResult, Producer, Pipeline, Consumer, Message, Watcher)


async def check(name: str, call: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``call()`` and assert it checkpointed (a cancel point and a
    schedule point).  ``name`` is ``Class.method``, for the coverage test."""
    with trio.testing.assert_checkpoints():
        return await call()


async def buffered(consumer: Consumer, broker: FakeBroker, *bodies: bytes) -> None:
    """Deliver and wait until the consumer has them buffered."""
    (tag,) = [t for t, (ch, _q) in broker.consumers.items() if ch == consumer.channel.channel_id]
    json = C.Basic.Properties(content_type="application/json")
    for data in bodies:
        await broker.deliver(tag, data, properties=json)
    await trio.testing.wait_all_tasks_blocked()


@pytest.mark.trio
async def test_connection_and_channel(broker: FakeBroker) -> None:
    broker.get_queue.extend([b"got", b"got again"])
    async with broker, connect(URL) as conn:
        ch = await check("Connection.open_channel", conn.open_channel)
        await check("Connection.wait_connected", conn.wait_connected)
        await check("Channel.exchange_declare", lambda: ch.exchange_declare("ex"))
        await check("Channel.exchange_bind", lambda: ch.exchange_bind("ex2", "ex"))
        await check("Channel.exchange_unbind", lambda: ch.exchange_unbind("ex2", "ex"))
        await check("Channel.exchange_delete", lambda: ch.exchange_delete("ex"))
        await check("Channel.queue_declare", lambda: ch.queue_declare("q"))
        await check("Channel.queue_bind", lambda: ch.queue_bind("q", "ex"))
        await check("Channel.queue_unbind", lambda: ch.queue_unbind("q", "ex"))
        await check("Channel.queue_purge", lambda: ch.queue_purge("q"))
        await check("Channel.queue_delete", lambda: ch.queue_delete("q"))
        await check("Channel.basic_qos", lambda: ch.basic_qos(prefetch_count=2))
        await check("Channel.basic_recover", ch.basic_recover)
        await check("Channel.flow", lambda: ch.flow(True))
        message = await check("Channel.basic_get", lambda: ch.basic_get("q"))
        assert message is not None and message.body == b"got"
        await check("Message.ack", message.ack)
        send, _receive = anyio.create_memory_object_stream[Delivery](5)
        tag = await check("Channel.basic_consume", lambda: ch.basic_consume("q", send))
        await check("Channel.basic_cancel", lambda: ch.basic_cancel(tag))
        # Completes at once: no reply to wait for.
        assert await check("Channel.basic_publish", lambda: ch.basic_publish(b"x")) is None
        await check("Channel.confirm_select", ch.confirm_select)
        await check("Channel.confirm_select", ch.confirm_select)  # already on: no request
        result = await check("Channel.basic_publish", lambda: ch.basic_publish(b"y"))
        assert result is not None
        assert await check("PublishResult.wait", result.wait) is Outcome.ACK
        assert await check("PublishResult.wait", result.wait) is Outcome.ACK  # known already
        async with conn.channel() as tx:
            await check("Channel.tx_select", tx.tx_select)
            await check("Channel.tx_commit", tx.tx_commit)
            await check("Channel.tx_rollback", tx.tx_rollback)
        await check("Channel.aclose", ch.aclose)
        await check("Channel.aclose", ch.aclose)  # already closed
        await check("Connection.aclose", conn.aclose)
        await check("Connection.aclose", conn.aclose)  # already closed
        await check("Connection.wait_connected", _raises(conn.wait_connected))


def _raises(call: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    """``call``, expected to raise a trio_msg error (after checkpointing)."""

    async def run() -> None:
        from trio_msg.errors import TrioMsgError

        with pytest.raises(TrioMsgError):
            await call()

    return run


@pytest.mark.trio
async def test_messages_settle_at_a_checkpoint(broker: FakeBroker) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        await buffered(consumer, broker, b"1", b"2", b"3", b"4", b"5")
        messages = [await check("Consumer.__anext__", consumer.__anext__) for _ in range(5)]
        await check("Message.ack", messages[0].ack)
        await check("Message.reject", messages[1].reject)
        await check("Message.requeue", messages[2].requeue)
        await check("Message.nack", messages[3].nack)
        await check("Message.nack", lambda: messages[4].nack(multiple=True, requeue=False))
        with pytest.raises(MessageStateError):  # settled twice: an error, at once (kombu's)
            messages[0].ack()


@pytest.mark.trio
async def test_producer(broker: FakeBroker) -> None:
    exchange = Exchange("media", type="direct")
    async with broker, connect(URL) as conn:
        async with Producer(conn, exchange=exchange) as producer:
            await check("Producer.declare", producer.declare)  # cached: no request
            await check("Producer.publish", lambda: producer.publish(b"confirmed"))
            async with producer.pipeline(max_unconfirmed=10) as pipe:
                await check("Pipeline.publish", lambda: pipe.publish(b"piped"))
                await check("Pipeline.wait_all", pipe.wait_all)
                await check("Pipeline.wait_all", pipe.wait_all)  # nothing pending
            await check("Producer.maybe_declare", lambda: producer.maybe_declare(exchange))
            await check("Producer.maybe_declare", lambda: producer.maybe_declare(None))
            await check("Producer.revive", lambda: producer.revive(conn))
            await check("Producer.close", producer.close)
            await check("Producer.release", producer.release)  # closed already
        async with Producer(conn, confirm=False) as plain:
            await check("Producer.declare", plain.declare)  # default exchange
            await check("Producer.publish", lambda: plain.publish(b"unconfirmed"))


@pytest.mark.trio
async def test_consumer(broker: FakeBroker) -> None:
    handled: list[object] = []
    queue = Queue("q")
    async with (
        broker,
        connect(URL) as conn,
        Consumer(
            conn,
            queues=[queue],
            no_ack=True,
            callbacks=[lambda body, message: handled.append(body)],
            accept=["json"],
        ) as consumer,
    ):
        await check("Consumer.declare", consumer.declare)
        await check("Consumer.consume", consumer.consume)  # nothing new to consume
        await check("Consumer.qos", lambda: consumer.qos(prefetch_count=5))
        await check("Consumer.flow", lambda: consumer.flow(True))
        await check("Consumer.recover", consumer.recover)
        assert await check("Consumer.purge", consumer.purge) == 0
        await buffered(consumer, broker, b'"a"', b'"b"', b'"c"')
        await check("Consumer.run", lambda: consumer.run(limit=1))
        await check("Consumer.drain_events", lambda: consumer.drain_events(timeout=1))
        message = await consumer.__anext__()
        await check("Consumer.receive", lambda: consumer.receive(message.decode(), message))
        assert handled == ["a", "b", "c"]
        await check("Consumer.cancel_by_queue", lambda: consumer.cancel_by_queue("other"))
        await check("Consumer.cancel_by_queue", lambda: consumer.cancel_by_queue(queue))
        await check("Consumer.cancel", consumer.cancel)  # nothing left to cancel
        await check("Consumer.consume", consumer.consume)
        await check("Consumer.cancel", consumer.cancel)
        await check("Consumer.revive", lambda: consumer.revive(conn))
        await check("Consumer.add_queue", lambda: consumer.add_queue(Queue("q2")))
        await check("Consumer.close", consumer.close)
        async with conn.channel() as ch, Consumer(ch, queues=[]) as empty:
            await check("Consumer.declare", empty.declare)  # no queues
            assert await check("Consumer.purge", empty.purge) == 0


@pytest.mark.trio
async def test_watcher(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn, conn.watch() as events:
        await broker.send(0, C.Connection.Blocked(reason="memory"))
        await trio.testing.wait_all_tasks_blocked()
        # (an event is buffered: it checkpoints all the same)
        assert await check("Watcher.__anext__", events.__anext__) == Blocked("memory")


def test_every_public_async_method_is_covered() -> None:
    """Every public async method, that is, not the driver's internal ports
    (trio_msg/_ports.py: the API layer's, documented as no checkpoints)."""
    covered = set(re.findall(r'check\(\s*"(\w+\.\w+)"', inspect.getsource(sys.modules[__name__])))
    internal = {
        name for port in (ChannelPort, ConnectionPort) for name in vars(port) if name[0] != "_"
    }
    public: set[str] = set()
    for cls in CLASSES:
        for name, member in inspect.getmembers(cls):
            if (name.startswith("_") and name != "__anext__") or name in internal:
                continue
            if inspect.iscoroutinefunction(member):
                public.add(f"{cls.__name__}.{name}")
    missing = public - covered
    assert not missing, f"no checkpoint test for: {sorted(missing)}"
