"""Corking (see :mod:`trio_msg._pump`): what the broker receives, and when.

A publish or ack that no task waits on may wait up to ``LINGER`` for
company; anything a task waits for is written before it waits; a message
that answers the broker, a lone message (``QUIET`` after the last) and a
cork past ``FLUSH_BYTES`` or ``CORK_AGE`` go at once.  An ack is no
answer: it goes at once when a quarter of the prefetch window is corked.

Virtual time: trio's autojump clock, and the ``cork_clock`` fixture puts
that clock behind the pump's corking, so time stands still while a test
publishes and a loaded machine changes nothing.  A message the fake broker
receives at the instant it was sent was written at once; one that arrives
``LINGER`` later was corked.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_msg import Consumer, Producer, Queue
from trio_msg._pump import CORK_AGE, FLUSH_BYTES, LINGER, QUIET
from trio_msg.connection import connect

from .fake_broker import URL, FakeBroker

pytestmark = pytest.mark.trio


@pytest.fixture(autouse=True)
def cork_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    import trio_msg._pump

    monkeypatch.setattr(trio_msg._pump, "_now", trio.current_time)


def arrivals(broker: FakeBroker) -> dict[bytes, float]:
    return {p.body[:16]: p.time for p in broker.published}


async def warm(broker: FakeBroker, producer: Producer) -> None:
    """One publish, received, then a pause: what follows is not an answer
    to anything and not in company."""
    await producer.publish(b"warm-up", routing_key="q")
    await broker.wait_published(1)
    await trio.sleep(1)


async def test_a_run_of_publishes_is_written_together_a_linger_after_the_first(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        await warm(broker, producer)
        sent = trio.current_time()
        for i in range(5):
            await producer.publish(b"m%d" % i, routing_key="q")
        await broker.wait_published(6)
    got = arrivals(broker)
    # The first goes at once (a lone message); the rest wait for company,
    # a LINGER at most (the second may share the first's write).
    assert got[b"m0"] == pytest.approx(sent, abs=1e-9)
    assert got[b"m4"] == pytest.approx(sent + LINGER, abs=1e-9)
    assert all(sent <= got[b"m%d" % i] <= sent + LINGER for i in range(5))


async def test_a_reply_is_written_at_once_and_the_run_behind_it_is_corked(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("requests")], no_ack=True) as requests,
        Producer(conn, confirm=False) as producer,
    ):
        (tag,) = broker.consumers
        await warm(broker, producer)
        sent: dict[bytes, float] = {}
        for i in range(3):
            await broker.deliver(tag, b"request %d" % i)
            await requests.__anext__()
            for body in [b"reply %d" % i] + [b"company %d.%d" % (i, j) for j in range(5)]:
                sent[body] = trio.current_time()
                await producer.publish(body, routing_key="replies")
            await broker.wait_published(1 + 6 * (i + 1))
    got = arrivals(broker)
    for i in range(3):
        # The reply follows the request: written at once.
        assert got[b"reply %d" % i] == pytest.approx(sent[b"reply %d" % i], abs=1e-9)
        # The run behind it waits for company, LINGER from its first.
        assert got[b"company %d.4" % i] == pytest.approx(
            sent[b"company %d.1" % i] + LINGER, abs=1e-9
        )


async def test_a_lone_message_is_written_at_once(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        await warm(broker, producer)
        sent = []
        for i in range(3):
            sent.append(trio.current_time())
            await producer.publish(b"m%d" % i, routing_key="q")
            await trio.sleep(QUIET * 2)  # no company follows
        await broker.wait_published(4)
    got = arrivals(broker)
    assert [got[b"m%d" % i] for i in range(3)] == pytest.approx(sent, abs=1e-9)


async def test_a_cork_past_flush_bytes_is_written_at_once(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        await warm(broker, producer)
        sent = trio.current_time()
        await producer.publish(b"first", routing_key="q")
        await producer.publish(b"second", routing_key="q")  # corked
        await producer.publish(b"x" * FLUSH_BYTES, routing_key="q")
        await broker.wait_published(4)
    got = arrivals(broker)
    assert got[b"second"] == pytest.approx(sent, abs=1e-9)
    assert got[b"x" * 16] == pytest.approx(sent, abs=1e-9)


async def test_a_steady_stream_writes_each_cork_once_it_has_aged(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Publishes a little closer together than QUIET: each cork is written
    by the publish that finds it CORK_AGE old, before the LINGER is up."""
    gap = CORK_AGE * 0.6
    assert gap < QUIET
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        await warm(broker, producer)
        sent = {}
        for i in range(8):
            sent[i] = trio.current_time()
            await producer.publish(b"m%d" % i, routing_key="q")
            await trio.sleep(gap)
        await broker.wait_published(9)
    got = arrivals(broker)
    delays = [got[b"m%d" % i] - sent[i] for i in range(8)]
    assert max(delays) < LINGER
    assert delays[0] == pytest.approx(0, abs=1e-9)  # a lone message (after the warm-up)
    assert any(d > 0 for d in delays)  # corked, all the same


async def test_a_cork_lingers_from_its_own_first_message(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """A cork written early (past FLUSH_BYTES) leaves no deadline behind:
    the next cork, started at once after it, gets its whole LINGER."""
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        await warm(broker, producer)
        await producer.publish(b"first", routing_key="q")
        await producer.publish(b"second", routing_key="q")  # starts a cork
        await trio.sleep(LINGER * 0.4)
        await producer.publish(b"x" * FLUSH_BYTES, routing_key="q")  # writes it
        sent = trio.current_time()
        await producer.publish(b"last", routing_key="q")
        await producer.publish(b"last but not", routing_key="q")  # the next cork
        await broker.wait_published(6)
    got = arrivals(broker)
    assert got[b"x" * 16] == pytest.approx(sent, abs=1e-9)
    assert got[b"last but not"] == pytest.approx(sent + LINGER, abs=1e-9)


async def test_waiting_for_a_confirm_writes_the_corked_publish_first(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with broker, connect(URL) as conn, conn.channel() as channel:
        await channel.confirm_select()
        results = []
        sent = trio.current_time()
        for i in range(3):  # corked: nobody waits yet
            result = await channel.basic_publish(b"m%d" % i, "", "q")
            assert result is not None
            results.append(result)
        await results[-1].wait()
    got = arrivals(broker)
    assert [got[b"m%d" % i] for i in range(3)] == pytest.approx([sent] * 3, abs=1e-9)


async def test_a_consumer_about_to_wait_writes_its_corked_acks(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Acks are corked, but the consumer's wait for its next delivery
    writes them: the broker's prefetch window waits for them."""
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        (tag,) = broker.consumers
        for i in range(3):
            await broker.deliver(tag, b"m%d" % i)
        for _ in range(3):
            message = await consumer.__anext__()
            await message.ack()
        acked_at = trio.current_time()
        with trio.move_on_after(1):
            await consumer.__anext__()  # nothing comes
        acks = [r for r in broker.received if r.name == "Basic.Ack"]
        assert broker.acked() == [1, 2, 3]
        assert acks[-1].time == pytest.approx(acked_at, abs=1e-9)


@pytest.mark.parametrize("broker_speaks", [False, True], ids=["quiet", "delivery-between"])
async def test_an_ack_nobody_waits_after_is_written_a_linger_later(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, broker_speaks: bool
) -> None:
    """The first ack after a pause is a lone message: at once.  The second
    is corked, and nothing but the LINGER writes it: not even a delivery
    read between the two (an ack answers nobody; the broker's prefetch
    window, 100 here, has plenty left)."""
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=100) as consumer,
    ):
        (tag,) = broker.consumers
        for i in range(2):
            await broker.deliver(tag, b"m%d" % i)
        first = await consumer.__anext__()
        second = await consumer.__anext__()
        await trio.sleep(1)
        sent = trio.current_time()
        await first.ack()  # a lone message: at once
        await trio.testing.wait_all_tasks_blocked()  # (written)
        if broker_speaks:
            await broker.deliver(tag, b"m2")
            await trio.testing.wait_all_tasks_blocked()  # (read)
        await second.ack()  # corked
        await trio.sleep(1)  # the consumer does not wait: nothing else writes it
        assert broker.acked() == [1, 2]
    times = [r.time for r in broker.received if r.name == "Basic.Ack"]
    assert times == pytest.approx([sent, sent + LINGER], abs=1e-9)


@pytest.mark.parametrize(
    ("prefetch", "at_once_at_least", "at_once_at_most"), [(8, 7, 8), (1000, 1, 4)]
)
async def test_acks_are_written_once_a_quarter_of_the_prefetch_window_waits(
    broker: FakeBroker,
    autojump_clock: trio.testing.MockClock,
    prefetch: int,
    at_once_at_least: int,
    at_once_at_most: int,
) -> None:
    """With a small window the broker needs the acks before its window runs
    dry: every second ack of a window of 8 writes the cork, so at most one
    (less than a quarter) waits.  With a window of 1000 the run of acks
    waits for company: only the first, a lone message, goes at once (with
    the next one or two, merged into it if they came before the writer
    took it), and the rest a LINGER later."""
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=prefetch) as consumer,
    ):
        (tag,) = broker.consumers
        for i in range(8):
            await broker.deliver(tag, b"m%d" % i)
        messages = [await consumer.__anext__() for _ in range(8)]
        await trio.sleep(1)
        sent = trio.current_time()
        for message in messages:
            await message.ack()
        await trio.sleep(1)  # the consumer does not wait: nothing else writes them
        assert broker.acked() == list(range(1, 9))
    acks = [r for r in broker.received if r.name == "Basic.Ack"]
    # (acks in a row are merged: a frame acks every tag up to its own)
    at_once = max(r.frame.delivery_tag for r in acks if r.time == pytest.approx(sent, abs=1e-9))
    assert at_once_at_least <= at_once <= at_once_at_most
    assert all(r.time <= sent + LINGER + 1e-9 for r in acks)
    if at_once < 8:
        assert acks[-1].time == pytest.approx(sent + LINGER, abs=1e-9)


async def test_a_multiple_ack_counts_every_delivery_it_releases(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """An ack with ``multiple`` that releases a quarter of the window (4 of
    16) is written at once, as four acks would be."""
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=16) as consumer,
    ):
        (tag,) = broker.consumers
        for i in range(5):
            await broker.deliver(tag, b"m%d" % i)
        messages = [await consumer.__anext__() for _ in range(5)]
        await trio.sleep(1)
        sent = trio.current_time()
        await messages[0].ack()  # a lone message: at once
        await trio.testing.wait_all_tasks_blocked()  # (written)
        await messages[4].ack(multiple=True)  # releases 2..5: a quarter
        await trio.sleep(1)
        assert broker.acked() == [1, 2, 3, 4, 5]
    times = [r.time for r in broker.received if r.name == "Basic.Ack"]
    assert times == pytest.approx([sent, sent], abs=1e-9)
