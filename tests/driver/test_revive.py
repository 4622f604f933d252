"""Revive in virtual time: the retry policy's waits, giving up, publishing
while disconnected, ``aclose()`` during a reconnect, the ledger replayed
first, and a Consumer carrying on.  (The real-broker side is in
tests/integration/test_revive.py.)"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_msg import Consumer, Exchange, Producer, Queue, maybe_declare
from trio_msg._retry import RetryPolicy
from trio_msg.connection import connect
from trio_msg.errors import ConnectionFailed, HeartbeatTimeout, MessageStateError

from .fake_broker import URL, FakeBroker

POLICY = RetryPolicy(max_retries=5, interval_start=1, interval_step=2, interval_max=4)


@pytest.mark.trio
async def test_reconnects_after_the_policy_waits(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.serve_again = True
    async with broker, connect(URL, revive=POLICY) as conn:
        broker.refuse = 2
        start = trio.current_time()
        await broker.hang_up()
        await broker.wait_sessions(2)
        with trio.fail_after(60):
            await conn.wait_connected()
        # Waits of 1 and 3 s before the two refused attempts, 4 (the max)
        # before the one that worked.
        assert trio.current_time() - start == pytest.approx(1 + 3 + 4, abs=0.01)
        assert broker.connects == 4
        assert conn.is_open
        async with conn.channel() as ch:
            assert (await ch.queue_declare("after")).queue == "after"
    assert broker.names(session=2)[:4] == [
        "ProtocolHeader",
        "Connection.StartOk",
        "Connection.TuneOk",
        "Connection.Open",
    ]


@pytest.mark.trio
async def test_gives_up_after_max_retries(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.serve_again = True
    waited: list[BaseException] = []
    async with broker:
        with pytest.raises(ConnectionFailed) as info:
            async with connect(URL, revive=RetryPolicy(max_retries=3, interval_start=1)) as conn:
                broker.refuse = 100
                start = trio.current_time()
                await broker.hang_up()
                try:
                    await conn.wait_connected()
                    await trio.sleep(0.001)
                    await conn.wait_connected()
                except ConnectionFailed as exc:
                    waited.append(exc)
                elapsed = trio.current_time() - start
    assert "gave up reconnecting after 3 attempts" in str(info.value)
    assert waited == [info.value]
    assert elapsed == pytest.approx(1 + 2 + 3, abs=0.01)
    assert broker.connects == 1 + 3


@pytest.mark.trio
async def test_heartbeat_timeout_revives(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.serve_again = True
    broker.heartbeat = 10
    async with broker, connect(URL, heartbeat=10, revive=POLICY) as conn:
        broker.silent = True
        await broker.wait_sessions(2)
        with trio.fail_after(60):
            await conn.wait_connected()
        assert conn.incarnation == 2
        assert conn.is_open
    assert broker.sessions == 2


@pytest.mark.trio
async def test_publish_while_disconnected_waits_cancellably(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.serve_again = True
    policy = RetryPolicy(max_retries=None, interval_start=5, interval_step=0)
    async with broker, connect(URL, revive=policy) as conn, Producer(conn) as producer:
        await producer.publish(b"before", routing_key="q")
        broker.refuse = 3
        await broker.hang_up()
        await trio.testing.wait_all_tasks_blocked()  # the client saw it: now disconnected
        assert not conn.is_open
        with trio.move_on_after(2) as scope:
            await producer.publish(b"cancelled", routing_key="q")
            pytest.fail("published while disconnected")
        assert scope.cancelled_caught
        with trio.fail_after(60):
            await producer.publish(b"after", routing_key="q")
    assert [p.body for p in broker.published] == [b"before", b"after"]
    assert broker.published[1].tag == 1  # a new channel in confirm mode


@pytest.mark.trio
async def test_aclose_during_a_reconnect_is_bounded(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.serve_again = True
    policy = RetryPolicy(max_retries=None, interval_start=1000, interval_step=0)
    async with broker, connect(URL, revive=policy) as conn:
        broker.refuse = 10
        await broker.hang_up()
        await trio.sleep(1)
        start = trio.current_time()
        await conn.aclose()
        assert trio.current_time() - start <= conn.close_timeout + 1
        assert not conn.is_open
        assert broker.connects == 1


@pytest.mark.trio
async def test_ledger_is_replayed_first_in_declaration_order(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.serve_again = True
    exchange = Exchange("media", type="topic")
    queue = Queue("video", exchange, routing_key="video.#")
    async with broker, connect(URL, revive=POLICY) as conn:
        async with conn.channel() as ch:
            await maybe_declare(exchange, ch)
            await maybe_declare(queue, ch)
        await broker.hang_up()
        with trio.fail_after(60):
            await conn.wait_connected()
        async with conn.channel() as ch:
            await ch.queue_declare("mine")
    after_open = broker.names(session=2)[4:]
    assert after_open[:6] == [
        "Channel.Open",
        "Exchange.Declare",
        "Exchange.Declare",  # the queue declares its exchange, then itself
        "Queue.Declare",
        "Queue.Bind",
        "Channel.Close",
    ], after_open
    assert after_open.index("Queue.Declare") < len(after_open) - 1
    declared = [r.frame for r in broker.received if r.session == 2 and r.name == "Queue.Declare"]
    assert [q.queue for q in declared] == ["video", "mine"]


@pytest.mark.trio
async def test_consumer_carries_on_after_a_revive(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.serve_again = True
    async with (
        broker,
        connect(URL, revive=POLICY) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=5) as consumer,
    ):
        (tag,) = broker.consumers
        await broker.deliver(tag, b"old")
        with trio.fail_after(5):
            old = await consumer.__anext__()
        await broker.hang_up()
        await broker.wait_sessions(2)
        async with trio.open_nursery() as nursery:

            async def deliver_when_consuming() -> None:
                await broker.wait_for("Basic.Consume", 2)
                (new_tag,) = broker.consumers
                await broker.deliver(new_tag, b"new", redelivered=True)

            nursery.start_soon(deliver_when_consuming)
            with trio.fail_after(60):
                new = await consumer.__anext__()
        assert new.body == b"new" and new.redelivered
        with pytest.raises(MessageStateError):
            await old.ack()  # its tag belongs to the lost channel
        await new.ack()
        await consumer.channel.queue_declare("sync")
    acks = [r.frame.delivery_tag for r in broker.received if r.name == "Basic.Ack"]
    assert acks == [1]  # the new message's tag, on the new channel, once


@pytest.mark.trio
async def test_heartbeat_error_is_not_raised_after_a_revive(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """The lost incarnation's error is history once the connection is back:
    leaving the block raises nothing."""
    broker.serve_again = True
    broker.heartbeat = 10
    async with broker:
        try:
            async with connect(URL, heartbeat=10, revive=POLICY) as conn:
                broker.silent = True
                await broker.wait_sessions(2)
                with trio.fail_after(60):
                    await conn.wait_connected()
        except HeartbeatTimeout:
            pytest.fail("the revived connection raised the lost one's error")


@pytest.mark.trio
async def test_a_publish_waits_out_a_loss_during_its_move_to_a_new_channel(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """The connection is lost again while the Producer opens its channel on
    the revived connection: the publish waits for the next one too, as it
    waited for the first, instead of raising the second loss."""
    broker.serve_again = True
    policy = RetryPolicy(max_retries=None, interval_start=1, interval_step=0)

    async def drop_the_second(b: FakeBroker, received: object) -> None:
        if b.sessions == 2:
            await b.hang_up()  # lost during the rebind
        else:
            await b.answer(received)  # type: ignore[arg-type]

    async with broker, connect(URL, revive=policy) as conn, Producer(conn) as producer:
        await producer.publish(b"before", routing_key="q")
        broker.handlers["Confirm.Select"] = drop_the_second
        await broker.hang_up()
        await trio.testing.wait_all_tasks_blocked()  # the client saw it: now disconnected
        assert not conn.is_open
        with trio.fail_after(60):
            await producer.publish(b"after", routing_key="q")
        assert conn.incarnation == 3
    assert [p.body for p in broker.published] == [b"before", b"after"]
