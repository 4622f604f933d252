"""kombu's meanings, at the wire (issue 19): settling without awaiting and
what cancellation does to it, publish's ``timeout`` and ``confirm_timeout``,
the default delivery mode, and ``revive=True`` as connect()'s default."""

from __future__ import annotations

import gc
import warnings

import anyio
import pytest
import trio
import trio.testing
from pamqp import commands as C

from trio_msg import Consumer, Exchange, MessageState, Producer, Queue
from trio_msg.connection import connect
from trio_msg.errors import NotSupported

from .fake_broker import URL, FakeBroker


async def buffered(consumer: Consumer, broker: FakeBroker, *bodies: bytes) -> None:
    (tag,) = [t for t, (ch, _q) in broker.consumers.items() if ch == consumer.channel.channel_id]
    for data in bodies:
        await broker.deliver(tag, data)
    await anyio.wait_all_tasks_blocked()


async def flushed(consumer: Consumer) -> None:
    """A round trip on the consumer's channel: corked acks go out before it."""
    await consumer.channel.queue_declare("sync")


@pytest.mark.anyio
async def test_settling_without_await_sends_the_frames(broker: FakeBroker) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        await buffered(consumer, broker, b"1", b"2", b"3", b"4")
        m1, m2, m3, m4 = [await consumer.__anext__() for _ in range(4)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m1.ack()
            m2.reject()
            m3.requeue()
            m4.nack(requeue=False)
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
        assert [m.state for m in (m1, m2, m3, m4)] == [
            MessageState.ACK,
            MessageState.REJECTED,
            MessageState.REQUEUED,
            MessageState.REJECTED,
        ]
        await flushed(consumer)
    assert [f.delivery_tag for f in broker.frames("Basic.Ack")] == [1]
    assert [(f.delivery_tag, f.requeue) for f in broker.frames("Basic.Reject")] == [
        (2, False),
        (3, True),
    ]
    assert [(f.delivery_tag, f.requeue) for f in broker.frames("Basic.Nack")] == [(4, False)]


@pytest.mark.anyio
async def test_a_settle_in_a_cancelled_scope_settles_nothing(broker: FakeBroker) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        await buffered(consumer, broker, b"1", b"2")
        first, second = [await consumer.__anext__() for _ in range(2)]
        with anyio.CancelScope() as scope:
            scope.cancel()
            first.ack()  # dropped: nothing settled
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await second.ack()
        assert first.state is second.state is MessageState.RECEIVED
        await flushed(consumer)
        assert broker.frames("Basic.Ack") == []
        # Cancelled after the call: the ack is queued and the await does not raise.
        with anyio.CancelScope() as scope:
            waiting = first.ack()
            scope.cancel()
            await waiting
        assert first.state is MessageState.ACK
        # Shielded between the call and the await: it settles then.
        with anyio.CancelScope() as scope:
            scope.cancel()
            late = second.ack()
            with anyio.CancelScope(shield=True):
                await late
        assert second.state is MessageState.ACK
        await flushed(consumer)
    assert sorted(f.delivery_tag for f in broker.frames("Basic.Ack")) == [1, 2]


@pytest.mark.trio
async def test_publish_confirm_timeout(broker: FakeBroker, autojump_clock: object) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        with pytest.raises(TimeoutError, match="outcome is unknown"):
            await producer.publish(b"x", routing_key="q", confirm_timeout=3)
        # timeout= bounds the confirm too when confirm_timeout is not given (kombu's)
        with pytest.raises(TimeoutError, match="no confirm within 2"):
            await producer.publish(b"y", routing_key="q", timeout=2)
        assert [p.body for p in broker.published] == [b"x", b"y"]
        await broker.confirm(producer.channel.channel_id, 3)  # the channel is still usable
        broker.auto_confirm = True
        await producer.publish(b"z", routing_key="q", timeout=2)


@pytest.mark.trio
async def test_publish_timeout_while_blocked_sends_nothing(
    broker: FakeBroker, autojump_clock: object
) -> None:
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        await broker.send(0, C.Connection.Blocked(reason="memory"))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(TimeoutError, match="nothing was sent"):
            await producer.publish(b"never", routing_key="q", timeout=5)
        await broker.send(0, C.Connection.Unblocked())
        await trio.testing.wait_all_tasks_blocked()
        await producer.publish(b"after", routing_key="q", timeout=5)
    assert [p.body for p in broker.published] == [b"after"]


@pytest.mark.anyio
async def test_delivery_mode_rules(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn:
        async with Producer(conn, auto_declare=False) as producer:
            await producer.publish(b"a", routing_key="q")
            await producer.publish(b"b", routing_key="q", delivery_mode="transient")
            await producer.publish(b"c", exchange=Exchange("t", delivery_mode=1), routing_key="q")
            await producer.publish(b"d", exchange="by-name", routing_key="q")
        transient = Exchange("t", delivery_mode="transient")
        async with Producer(conn, exchange=transient, auto_declare=False) as producer:
            await producer.publish(b"e", routing_key="q")
            await producer.publish(b"f", exchange="by-name", routing_key="q")
            await producer.publish(b"g", exchange="", routing_key="q")
            await producer.publish(b"h", exchange=Exchange("p"), routing_key="q")
    modes = {p.body: p.properties.delivery_mode for p in broker.published}
    assert modes == {
        b"a": 2,
        b"b": 1,
        b"c": 1,
        b"d": 2,
        b"e": 1,
        b"f": 1,
        b"g": 1,
        b"h": 2,
    }
    # kombu's ``exchange or self.exchange``: "" is the producer's exchange.
    exchanges = {p.body: p.method.exchange for p in broker.published}
    assert exchanges[b"g"] == "t"
    assert exchanges[b"a"] == ""


@pytest.mark.anyio
async def test_connect_revives_by_default(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn:
        assert conn.reviving


@pytest.mark.anyio
async def test_revive_false_opts_out(broker: FakeBroker) -> None:
    async with broker, connect(URL, revive=False) as conn, Producer(conn) as producer:
        assert not conn.reviving
        with pytest.raises(NotSupported, match="reviving"):
            await producer.publish(b"x", routing_key="q", retry=True)


@pytest.mark.trio
async def test_pipeline_publish_timeout(broker: FakeBroker, autojump_clock: object) -> None:
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        async with producer.pipeline(10) as pipe:
            with pytest.raises(TypeError, match="confirm_timeout"):
                await pipe.publish(b"x", routing_key="q", confirm_timeout=1)
            await broker.send(0, C.Connection.Blocked(reason="memory"))
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(TimeoutError, match="nothing was sent"):
                await pipe.publish(b"never", routing_key="q", timeout=5)
            await broker.send(0, C.Connection.Unblocked())
            await trio.testing.wait_all_tasks_blocked()
            await pipe.publish(b"after", routing_key="q", timeout=5, declare=None)
        assert pipe.acked == 1
    assert [p.body for p in broker.published] == [b"after"]
