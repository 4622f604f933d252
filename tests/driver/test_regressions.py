"""Driver bugs the driver suite found, one test each (they failed before the
fixes that came with them).  Each test states the behaviour it expects."""

from __future__ import annotations

import anyio
import pytest
import trio
import trio.testing
from pamqp import commands as C

from trio_msg import Consumer, Producer, Queue
from trio_msg.connection import connect
from trio_msg.errors import ChannelClosed, NotSupported, TrioMsgError

from .fake_broker import URL, FakeBroker

N = 10


# --- A: a slow consumer without prefetch kills its own connection -------------------


@pytest.mark.trio
async def test_a_slow_unprefetched_consumer_does_not_time_out_a_live_broker(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """The broker is alive and sending heartbeats; the client only stopped
    reading because its consumer's buffer is full (documented TCP
    back-pressure).  A consumer that takes longer than two heartbeat
    intervals to get to its buffer should not make the client declare the
    broker dead."""
    broker.heartbeat = N
    async with (
        broker,
        connect(URL, heartbeat=N) as conn,
        Consumer(conn, queues=[Queue("q")], no_ack=True, buffer_size=2) as consumer,
    ):
        (tag,) = broker.consumers
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                for i in range(20):
                    await broker.deliver(tag, b"%d" % i)

            nursery.start_soon(flood)
            await trio.sleep(3 * N)  # busy elsewhere, for three intervals
            assert conn.is_open, conn.error
            for _ in range(20):
                await consumer.__anext__()


# --- C: a timed-out channel close leaves the channel's other waiters hanging ---------


@pytest.mark.trio
async def test_c_waiters_on_a_channel_whose_close_timed_out_are_released(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.hold |= {"Queue.Declare"}  # and channel.close waits behind it
    async with broker, connect(URL) as conn:
        ch = await conn.open_channel()
        outcome: list[BaseException] = []

        async def declare() -> None:
            try:
                await ch.queue_declare("q")
            except TrioMsgError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(declare)
            await broker.wait_for("Queue.Declare")
            await ch.aclose()  # returns after close_timeout
            with trio.move_on_after(60) as scope:
                while not outcome:
                    await trio.sleep(1)
            nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught, "queue_declare still waiting 60 s after aclose()"
        assert isinstance(outcome[0], ChannelClosed)


# --- D: a publisher released by channel.flow ignores connection.blocked ---------------


@pytest.mark.anyio
async def test_d_flow_resumed_publisher_still_respects_connection_blocked(
    broker: FakeBroker,
) -> None:
    async with broker, connect(URL) as conn, conn.channel() as ch:
        await broker.send(ch.channel_id, C.Channel.Flow(active=False))
        await anyio.wait_all_tasks_blocked()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ch.basic_publish, b"x", "", "q")
            await anyio.wait_all_tasks_blocked()
            await broker.send(0, C.Connection.Blocked(reason="memory"))
            await anyio.wait_all_tasks_blocked()
            assert conn.blocked
            await broker.send(ch.channel_id, C.Channel.Flow(active=True))
            await anyio.wait_all_tasks_blocked()
            published_while_blocked = list(broker.published)
            await broker.send(0, C.Connection.Unblocked())
        assert published_while_blocked == [], "published while the connection was blocked"


# --- E: checkpoints on the error and context-manager paths --------------------------


@pytest.mark.trio
@pytest.mark.parametrize("call", ["basic_qos", "basic_recover", "flow"])
async def test_e_unsupported_options_raise_at_a_checkpoint(broker: FakeBroker, call: str) -> None:
    """basic_publish(immediate=True) checkpoints before raising NotSupported;
    these three raise without one."""
    async with broker, connect(URL) as conn, conn.channel() as ch:
        calls = {
            "basic_qos": lambda: ch.basic_qos(prefetch_size=1),
            "basic_recover": lambda: ch.basic_recover(requeue=False),
            "flow": lambda: ch.flow(False),
        }
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                try:
                    await calls[call]()
                except NotSupported:
                    pytest.fail(f"{call} raised NotSupported without a checkpoint")


@pytest.mark.trio
async def test_e_async_with_entry_and_exit_are_checkpoints(broker: FakeBroker) -> None:
    """Entering and leaving a Producer or Consumer on a caller's channel (and
    entering a Channel) can complete without a checkpoint."""
    async with broker, connect(URL) as conn:
        ch = await conn.open_channel()
        missing = []
        for name, manager in [
            ("Channel.__aenter__", ch),
            ("Producer(channel, confirm=False).__aenter__", Producer(ch, confirm=False)),
        ]:
            try:
                with trio.testing.assert_checkpoints():
                    await manager.__aenter__()
            except AssertionError:
                missing.append(name)
        producer = Producer(ch, confirm=False)
        await producer.__aenter__()
        try:
            with trio.testing.assert_checkpoints():
                await producer.__aexit__(None, None, None)
        except AssertionError:
            missing.append("Producer(channel).__aexit__")
        await ch.aclose()
        assert missing == [], missing


# --- F: on crossing closes the client's close-ok is never written ---------------------


@pytest.mark.trio
async def test_f_crossing_close_is_answered_with_close_ok(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    from trio_msg.errors import ConnectionForced

    async def close_instead(b: FakeBroker, rec: object) -> None:
        await b.close_connection(320, "CONNECTION_FORCED - shutdown")

    broker.handlers["Connection.Close"] = close_instead
    async with broker:
        with pytest.raises(ConnectionForced):
            async with connect(URL, revive=False):
                pass
        await broker.wait_closed()
    # The core queued close-ok; aclose() closed the socket before the writer sent it.
    assert broker.names()[-2:] == ["Connection.Close", "Connection.CloseOk"]


# --- G: on a reviving connection, a publish waiting for room dies with the connection --


@pytest.mark.trio
async def test_g_publish_waiting_for_room_survives_a_revive(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Nothing of the waiting publish was queued when the connection died, so
    on a reviving connection it should wait and publish on the new channel
    (docs/revive.rst: a Producer made from the connection waits for it to
    come back), not raise ConnectionLost."""
    from trio_msg._pump import HIGH_WATER
    from trio_msg._retry import RetryPolicy
    from trio_msg.errors import ConnectionLost

    broker.serve_again = True
    policy = RetryPolicy(max_retries=5, interval_start=1)
    errors: list[BaseException] = []
    async with (
        broker,
        connect(URL, revive=policy) as conn,
        Producer(conn, confirm=False) as producer,
    ):
        broker.pause_reading()
        done = trio.Event()

        async def flood() -> None:
            try:
                while conn._core.outbound_size <= HIGH_WATER:
                    await producer.publish(b"x" * 65536, routing_key="q")
                await producer.publish(b"the one that waits", routing_key="q")
            except ConnectionLost as exc:
                errors.append(exc)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()
            broker.resume_reading()
            await broker.hang_up()
            with trio.fail_after(60):
                await done.wait()
    assert errors == []
    assert broker.published[-1].body == b"the one that waits"
