"""Heartbeats in virtual time: the client sends them when idle and gives up
on a broker that has gone silent, failing every waiting task with one error."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

from trio_msg import Consumer, Producer, Queue
from trio_msg.connection import connect
from trio_msg.errors import HeartbeatTimeout, MessageOutcomeUnknown

from .fake_broker import URL, FakeBroker

N = 10  # the negotiated heartbeat interval, in (virtual) seconds


@pytest.mark.trio
async def test_silent_broker_fails_every_waiter_after_two_intervals(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.heartbeat = N
    broker.auto_confirm = False
    outcomes: dict[str, tuple[BaseException | None, float]] = {}

    async def waiter(name: str, call: Any) -> None:
        try:
            await call()
        except BaseException as exc:
            outcomes[name] = (exc, trio.current_time())
            if isinstance(exc, trio.Cancelled):
                raise
        else:
            outcomes[name] = (None, trio.current_time())

    async with broker:
        with pytest.raises(HeartbeatTimeout) as info, trio.fail_after(10 * N):
            async with connect(URL, heartbeat=N, revive=False) as conn:
                assert conn.heartbeat == N
                ch = await conn.open_channel()
                producer_channel = await conn.open_channel()
                consumer = await Consumer(conn, queues=[Queue("q")], no_ack=True).__aenter__()
                producer = await Producer(producer_channel).__aenter__()

                async def consume() -> None:
                    async for _message in consumer:
                        pass

                broker.hold |= {"Queue.Declare", "Channel.Open"}
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(waiter, "rpc", lambda: ch.queue_declare("never"))
                    nursery.start_soon(waiter, "open_channel", conn.open_channel)
                    nursery.start_soon(waiter, "consumer", consume)
                    nursery.start_soon(waiter, "publish", lambda: producer.publish(b"x"))
                    await broker.wait_for("Channel.Open", 4)
                    await broker.wait_published(1)
                    await trio.testing.wait_all_tasks_blocked()
                    broker.silent = True
    error = info.value
    assert type(error) is HeartbeatTimeout
    assert broker.last_sent is not None
    assert set(outcomes) == {"rpc", "open_channel", "consumer", "publish"}
    for name, (exc, when) in outcomes.items():
        if name == "publish":
            assert isinstance(exc, MessageOutcomeUnknown), exc
        else:
            assert exc is error, (name, exc)
        # The spec: no traffic for two intervals means the peer is dead.  The
        # core notices at its next tick, so allow half an interval more.
        silence = when - broker.last_sent
        assert 2 * N <= silence <= 2.5 * N, (name, silence)


@pytest.mark.trio
async def test_idle_client_sends_heartbeats_every_half_interval(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.heartbeat = N
    async with broker, connect(URL, heartbeat=N) as conn:
        start = trio.current_time()
        await trio.sleep(20 * N)
        assert conn.is_open  # the broker's own heartbeats keep it alive
    beats = [t - start for t in broker.heartbeats]
    assert 38 <= len(beats) <= 41, beats
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert all(N / 2 - 0.01 <= gap <= N / 2 + 0.01 for gap in gaps), gaps


@pytest.mark.trio
async def test_no_heartbeats_when_busy_sending(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Any frame counts as traffic: a client publishing more often than every
    half interval has no reason to send heartbeats."""
    broker.heartbeat = N
    async with broker, connect(URL, heartbeat=N) as conn, conn.channel() as ch:
        for i in range(100):
            await ch.basic_publish(b"%d" % i, "", "q")
            await trio.sleep(N / 5)
        assert conn.is_open
    assert broker.heartbeats == []
    assert len(broker.published) == 100


@pytest.mark.trio
async def test_heartbeats_off_when_both_sides_say_zero(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.heartbeat = 0
    broker.silent = False
    async with broker, connect(URL, heartbeat=0) as conn:
        assert conn.heartbeat == 0
        broker.silent = True  # hears nothing from the broker for a day: still open
        await trio.sleep(24 * 3600)
        assert conn.is_open
        broker.silent = False
    assert broker.heartbeats == []
    assert broker.negotiated_heartbeat == 0


@pytest.mark.trio
async def test_broker_proposal_accepted_when_the_client_has_no_preference(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.heartbeat = 4
    async with broker, connect(URL, heartbeat=None) as conn:
        assert conn.heartbeat == 4
        await trio.sleep(4)
    assert broker.negotiated_heartbeat == 4
    assert len(broker.heartbeats) >= 1
