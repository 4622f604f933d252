"""Cancellation at every await of the composite operations.

The broker takes one virtual second over each answer, so the n-th step of
``Consumer`` or ``Producer`` entry (open the channel, declare, bind, qos,
consume, ...) is in flight during second n; cancelling at n + 0.5 lands in
each of them in turn.  Whatever the step, once the dust settles the broker
holds no channel and no consumer, and the connection works.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_msg import Consumer, Exchange, Producer, Queue
from trio_msg.connection import Connection, connect

from .fake_broker import URL, FakeBroker

# Channel.Open, Exchange.Declare, Queue.Declare, Queue.Bind, Basic.Qos,
# Basic.Consume: six answers, then the body; then the exit.
CONSUMER_STEPS = 8
# Channel.Open, Confirm.Select, Exchange.Declare; then publish(declare=[queue]):
# Exchange.Declare (the queue's), Queue.Declare, Queue.Bind, the confirm; then
# the body; then the exit.
PRODUCER_STEPS = 9


def queue() -> Queue:
    return Queue("q", Exchange("ex", type="direct"), routing_key="k")


async def still_works(conn: Connection, broker: FakeBroker) -> None:
    broker.reply_delay = 0
    with trio.fail_after(5):
        async with conn.channel() as ch:
            assert (await ch.queue_declare("after")).queue == "after"


@pytest.mark.trio
@pytest.mark.parametrize("step", range(CONSUMER_STEPS))
async def test_consumer_cancelled_at_each_step_leaves_nothing_behind(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, step: int
) -> None:
    broker.reply_delay = 1
    async with broker, connect(URL) as conn:
        entered = False
        with trio.move_on_after(step + 0.5) as scope:
            async with Consumer(conn, queues=[queue()], prefetch_count=3):
                entered = True
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert entered == (step >= 6)
        await trio.sleep(30)  # every late reply has come in and been handled
        assert broker.consumers == {}, f"consumer left on the broker after step {step}"
        assert broker.channels == {}, f"channel left open after step {step}"
        await still_works(conn, broker)


@pytest.mark.trio
@pytest.mark.parametrize("step", range(PRODUCER_STEPS))
async def test_producer_cancelled_at_each_step_leaves_nothing_behind(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, step: int
) -> None:
    broker.reply_delay = 1
    async with broker, connect(URL) as conn:
        published = False
        with trio.move_on_after(step + 0.5) as scope:
            async with Producer(conn, exchange=Exchange("ex", type="direct")) as producer:
                await producer.publish(b"m", routing_key="k", declare=[queue()])
                published = True
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert published == (step >= 7)
        await trio.sleep(30)
        assert broker.channels == {}, f"channel left open after step {step}"
        # Sent at most once, and certainly sent if publish returned.
        assert len(broker.published) == (1 if published else len(broker.published))
        assert len(broker.published) <= 1
        await still_works(conn, broker)
