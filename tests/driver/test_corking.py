"""Corking (``Connection._kick_lazy``): publishes and acks wait up to
``LINGER`` for company, except an answer: a message sent after the broker
said something is written at once.

On trio's autojump clock a corked message reaches the fake broker ``LINGER``
of virtual time after it was published, an uncorked one at the same instant.
(``QUIET`` and ``CORK_AGE`` are set out of reach here: they are measured
on the real clock, and a loaded machine can take longer than them between
two publishes.)
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_msg import Consumer, Producer, Queue, connection
from trio_msg.connection import FLUSH_BYTES, LINGER, connect

from .fake_broker import URL, FakeBroker
from .steps import TaskSteps, serve


@pytest.fixture
def linger(broker: FakeBroker, monkeypatch: pytest.MonkeyPatch) -> float:
    """Real TCP (direct writes) and the real clock, with a linger long
    enough to tell apart, and to outlast any step of a test on a loaded
    machine; ``QUIET`` and ``CORK_AGE`` out of reach.  The linger's length."""
    value = 0.2
    monkeypatch.setattr(connection, "LINGER", value)
    monkeypatch.setattr(connection, "QUIET", 3600.0)
    monkeypatch.setattr(connection, "CORK_AGE", 3600.0)
    broker.tcp = True
    return value


@pytest.mark.trio
async def test_a_reply_is_not_corked_but_a_run_of_publishes_is(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "QUIET", 3600.0)
    monkeypatch.setattr(connection, "CORK_AGE", 3600.0)
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("requests")], no_ack=True) as requests,
        Producer(conn, confirm=False) as producer,
    ):
        (tag,) = broker.consumers
        await producer.publish(b"warm-up", routing_key="q")
        await broker.wait_published(1)
        sent: dict[bytes, float] = {}
        for i in range(3):
            await broker.deliver(tag, b"request %d" % i)
            request = await requests.__anext__()
            for body in [b"reply %d" % i] + [b"company %d.%d" % (i, j) for j in range(5)]:
                sent[body] = trio.current_time()
                await producer.publish(body, routing_key="replies")
            await broker.wait_published(1 + 6 * (i + 1))
    arrived = {p.body: p.time for p in broker.published}
    for i in range(3):
        # The reply follows the request: written at once.
        assert arrived[b"reply %d" % i] == pytest.approx(sent[b"reply %d" % i], abs=1e-6)
        # A run of messages behind it waits for company, LINGER at most.
        # (The first of them may share the reply's write.)
        delay = arrived[b"company %d.4" % i] - sent[b"company %d.4" % i]
        assert delay == pytest.approx(LINGER, abs=1e-4)
    assert request.body == b"request 2"


@pytest.mark.trio
async def test_a_cork_lingers_from_its_own_first_message(broker: FakeBroker, linger: float) -> None:
    # The writer lingers with a deadline that the first message of each new
    # cork moves on (Connection._kick_lazy).  On a direct wire a cork can be
    # written by its publisher while the writer lingers (here: past
    # FLUSH_BYTES); the next cork, started just after, still gets its whole
    # linger, and the timer of the cork written already does not fire for
    # it.
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        await producer.publish(b"warm-up", routing_key="q")
        await broker.wait_published(1)
        await producer.publish(b"first", routing_key="q")  # starts a cork
        await trio.sleep(linger * 0.75)
        await producer.publish(b"x" * FLUSH_BYTES, routing_key="q")  # written at once
        sent = trio.current_time()
        await producer.publish(b"last", routing_key="q")  # starts the next cork
        await broker.wait_published(4)
    arrived = {p.body[:5]: p.time for p in broker.published}
    assert arrived[b"xxxxx"] - sent < linger * 0.25
    # Without the deadline moved on, it would go at the first cork's end.
    assert linger * 0.9 <= arrived[b"last"] - sent < linger * 2


@pytest.mark.trio
async def test_a_publisher_writes_a_cork_that_has_aged(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CORK_AGE 0: every publish after a cork's first writes the cork itself.
    monkeypatch.setattr(connection, "QUIET", 3600.0)
    monkeypatch.setattr(connection, "CORK_AGE", 0.0)
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        await producer.publish(b"warm-up", routing_key="q")
        await broker.wait_published(1)
        sent = trio.current_time()
        await producer.publish(b"one", routing_key="q")
        await producer.publish(b"two", routing_key="q")
        await broker.wait_published(3)
    arrived = {p.body: p.time for p in broker.published}
    assert arrived[b"one"] - sent == pytest.approx(0, abs=1e-6)
    assert arrived[b"two"] - sent == pytest.approx(0, abs=1e-6)


@pytest.mark.trio
async def test_the_writer_sleeps_through_a_servers_conversation(
    broker: FakeBroker, linger: float
) -> None:
    # An RPC server: a request, the reply (an answer: written at once), the
    # ack (corked), then the wait for the next request, which writes the
    # ack itself.  The cork gives the idle writer a deadline instead of
    # waking it, and the write takes the deadline away: the writer never
    # runs.  (It used to run for every ack, and its timer expired, a
    # cancellation, each time.)
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("requests")]) as requests,
        Producer(conn, confirm=False) as producer,
    ):
        writer = TaskSteps("trio_msg._writer")
        await serve(broker, requests, producer, 30, writer)
        with trio.move_on_after(linger * 1.5):
            await requests.__anext__()  # writes the last ack, then waits past a linger
        trio.lowlevel.remove_instrument(writer)
        assert broker.acked() == list(range(1, 31))
    # Not even for a deadline left behind by the last ack, written already.
    assert writer.steps == 0
