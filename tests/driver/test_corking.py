"""Corking (``Connection._kick_lazy``): publishes and acks wait up to
``LINGER`` for company, except an answer: a message sent after the broker
said something is written at once.

On trio's autojump clock a corked message reaches the fake broker ``LINGER``
of virtual time after it was published, an uncorked one at the same instant.
(``QUIET`` is set out of reach here: it is measured on the real clock, and
a loaded machine can take longer than it between two publishes.)
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_msg import Consumer, Producer, Queue, connection
from trio_msg.connection import LINGER, connect

from .fake_broker import URL, FakeBroker


@pytest.mark.trio
async def test_a_reply_is_not_corked_but_a_run_of_publishes_is(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "QUIET", 3600.0)
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
