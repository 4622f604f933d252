"""Leader/follower reading (``Connection._lead``): on the direct socket path
(plain TCP, on trio and on asyncio), a task about to wait for what the broker sends -- a
confirm, a delivery -- reads the socket itself while the reader task is
idle, instead of being woken by the reader once it has read it.

These run over real loopback TCP against the fake broker, on both backends
(the plain path, without leading, is what every test over in-memory
streams takes).  ``leads`` records every lead, so a test can also check
that the path it means to cover was taken.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from trio_msg import Consumer, Outcome, Producer, Queue
from trio_msg.connection import Connection, Signal, connect
from trio_msg.errors import HeartbeatTimeout

from .fake_broker import URL, FakeBroker
from .steps import DeadlineMoves, TaskSteps, serve

pytestmark = pytest.mark.anyio


@dataclass
class Lead:
    woken: bool  # its signal was set when it stopped leading
    backlog: bool  # it handed undelivered events to the reader
    sleeps: int  # times it slept on the socket (``wait_readable``) instead of polling


#: The leader's count of sleeps on the socket, in the leading task's context
#: (the reader's own waits are not counted).
_SLEEPS: ContextVar[list[int] | None] = ContextVar("_SLEEPS", default=None)


@pytest.fixture
def leads(monkeypatch: pytest.MonkeyPatch) -> list[Lead]:
    from trio_msg._asyncio_wire import AsyncioSocketWire
    from trio_msg._trio_wire import SocketWire

    record: list[Lead] = []
    real = Connection._lead

    async def lead(self: Connection, wire: Any, signal: Signal) -> None:
        assert self._lead_by is None, "two tasks lead at once"
        sleeps = [0]
        token = _SLEEPS.set(sleeps)
        try:
            await real(self, wire, signal)
        finally:
            _SLEEPS.reset(token)
            record.append(Lead(signal.is_set(), self._backlog is not None, sleeps[0]))

    monkeypatch.setattr(Connection, "_lead", lead)
    for cls in (SocketWire, AsyncioSocketWire):

        async def wait_readable(wire: Any, real_wait: Any = cls.wait_readable) -> bool:
            sleeps = _SLEEPS.get()
            if sleeps is not None:
                sleeps[0] += 1
            return bool(await real_wait(wire))

        monkeypatch.setattr(cls, "wait_readable", wait_readable)
    return record


def answered_sleeps(leads: list[Lead]) -> list[int]:
    """For each lead that got what it waited for, in order: how many times
    it slept on the socket."""
    return [lead.sleeps for lead in leads if lead.woken]


@pytest.fixture
def tcp_broker(broker: FakeBroker) -> FakeBroker:
    broker.tcp = True
    return broker


async def take(consumer: Consumer, n: int) -> list[bytes]:
    """The bodies of the next *n* messages, each acked."""
    got = []
    async for message in consumer:
        got.append(message.body)
        await message.ack()
        if len(got) == n:
            break
    return got


async def test_a_confirm_is_read_by_the_task_that_waits_for_it(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    async with tcp_broker, connect(URL) as conn, Producer(conn) as producer:
        for i in range(20):
            result = await producer.publish(b"%d" % i, routing_key="q")
            assert result is not None and result.outcome is Outcome.ACK
    assert [p.body for p in tcp_broker.published] == [b"%d" % i for i in range(20)]
    # (the reader may hold the socket when a publish starts: not every one leads)
    assert sum(lead.woken for lead in leads) >= 10
    assert not any(lead.backlog for lead in leads)


@pytest.mark.parametrize("anyio_backend", ["trio"])  # counted with a trio instrument
async def test_the_reader_sleeps_through_a_run_of_confirmed_publishes(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """Each confirm ends a lead without waking the parked reader, and the
    publisher's next lead moves the reader's deadline on before it runs
    out: the reader does not run.  (It ran once per publish, and each
    run could cost the scheduler a pass.)"""
    import trio

    async with tcp_broker, connect(URL) as conn, Producer(conn) as producer:
        for _ in range(5):
            await producer.publish(b"warm", routing_key="q")
        count = TaskSteps("trio_msg._reader")
        trio.lowlevel.add_instrument(count)
        try:
            for i in range(100):
                await producer.publish(b"%d" % i, routing_key="q")
        finally:
            trio.lowlevel.remove_instrument(count)
    assert sum(lead.woken for lead in leads) >= 90
    # It was one step per publish.  (A pause longer than HANDBACK, on a
    # loaded machine, wakes it: rarely, but not never.)
    assert count.steps <= 50


@pytest.mark.parametrize("anyio_backend", ["trio"])  # counted with a trio instrument
async def test_the_reader_sleeps_through_a_servers_conversation(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    """An RPC server: the request ends the consumer's lead, the server
    publishes its reply and acks (two checkpoints), then waits for the next
    request and leads again, all within the reader's deadline."""
    import trio

    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("requests")]) as requests,
        Producer(conn, confirm=False) as producer,
    ):
        count = TaskSteps("trio_msg._reader")
        await serve(tcp_broker, requests, producer, 40, count)
        trio.lowlevel.remove_instrument(count)
    assert count.steps <= 35  # it was 2 or 3 per request (as above, a pause may wake it)


async def test_a_frame_nobody_waits_for_is_read_soon_after_a_lead(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """After its confirm, the publisher does something else: the reader's
    deadline expires and it reads what comes next, here a delivery for a
    consumer nobody is waiting on."""
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
        Producer(conn) as producer,
    ):
        (tag,) = tcp_broker.consumers
        for i in range(3):
            await producer.publish(b"%d" % i, routing_key="q")
        assert leads and leads[-1].woken
        await tcp_broker.deliver(tag, b"unawaited")
        with anyio.fail_after(5):
            while not len(consumer._receive):
                await anyio.sleep(0.01)  # not a Signal: nobody leads
        message = consumer._receive.receive_nowait()
        assert message.body == b"unawaited"
        assert conn._role_back is None  # no stale wake-up left behind


async def test_a_lead_with_others_waiting_wakes_the_reader_at_once(
    tcp_broker: FakeBroker, leads: list[Lead], monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """A publisher leads for its confirm while a consumer waits beside it:
    when the confirm ends the lead, the reader is woken at once to read
    for the consumer, instead of after a deadline."""
    handed: list[tuple[bool, int]] = []
    real = Connection._hand_back

    def hand_back(self: Connection, later: bool) -> None:
        if self._role_back is not None:
            handed.append((later, self._followers))
        real(self, later)

    monkeypatch.setattr(Connection, "_hand_back", hand_back)
    tcp_broker.auto_confirm = False
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
        Producer(conn) as producer,
    ):
        (tag,) = tcp_broker.consumers
        got: list[bytes] = []
        outcomes: list[Outcome] = []
        result = await producer.channel.basic_publish(b"x", "", "q")
        assert result is not None

        async def confirm() -> None:
            outcomes.append(await result.wait())  # waits first: it leads

        async def consume() -> None:
            got.extend(await take(consumer, 1))  # waits second: it follows

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tcp_broker.wait_published(1)
                tg.start_soon(confirm)
                await anyio.sleep(0.05)
                tg.start_soon(consume)
                await anyio.sleep(0.05)
                handed.clear()
                await tcp_broker.confirm(producer.channel.channel_id, 1)
                await tcp_broker.deliver(tag, b"m")
        assert outcomes == [Outcome.ACK]
        assert got == [b"m"]
    assert handed and handed[0] == (False, 1)


async def channel_publish(producer: Producer) -> Any:
    """A confirmed publish whose confirm the caller waits for."""
    result = await producer.channel.basic_publish(b"x", "", "q")
    assert result is not None
    return result


async def test_a_reply_is_read_by_the_task_that_waits_for_it(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    async with tcp_broker, connect(URL) as conn, conn.channel() as channel:
        for i in range(10):
            declared = await channel.queue_declare(f"q{i}")
            assert declared.queue == f"q{i}"
    assert sum(lead.woken for lead in leads) >= 5


async def test_a_delivery_is_read_by_the_consumer_that_waits_for_it(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        (tag,) = tcp_broker.consumers

        async def deliver() -> None:
            for i in range(20):
                await anyio.sleep(0.002)  # the consumer is waiting each time
                await tcp_broker.deliver(tag, b"m%d" % i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(deliver)
            got = await take(consumer, 20)
    assert got == [b"m%d" % i for i in range(20)]
    assert sum(lead.woken for lead in leads) >= 10


async def test_concurrent_waiters_share_one_reading_task(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """Three publishers wait at once: one leads, and the confirms it reads
    for the others wake them as the reader would."""
    async with tcp_broker, connect(URL) as conn:
        outcomes: dict[int, list[Outcome | None]] = {}

        async def publish(n: int) -> None:
            async with Producer(conn) as producer:
                for i in range(50):
                    result = await producer.publish(b"%d.%d" % (n, i), routing_key="q")
                    assert result is not None
                    outcomes.setdefault(n, []).append(result.outcome)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for n in range(3):
                    tg.start_soon(publish, n)
    assert outcomes == {n: [Outcome.ACK] * 50 for n in range(3)}
    assert len(tcp_broker.published) == 150
    assert leads


async def test_a_full_buffer_hands_the_rest_to_the_reader_in_order(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """The leader reads deliveries for a consumer whose buffer is full: the
    first that does not fit, and everything after it (the leader's own
    confirm too), go to the reader, which waits for room as ever.  Nothing
    is lost or reordered."""
    tcp_broker.auto_confirm = False
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=2) as consumer,
        Producer(conn) as producer,
    ):
        (tag,) = tcp_broker.consumers
        results: list[Outcome | None] = []

        async def publish() -> None:
            result = await producer.publish(b"p", routing_key="q")
            assert result is not None
            results.append(result.outcome)

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish)
            await tcp_broker.wait_published(1)
            for i in range(6):  # the buffer takes 2
                await tcp_broker.deliver(tag, b"m%d" % i)
            await tcp_broker.confirm(producer.channel.channel_id, 1)
            await anyio.sleep(0.1)  # the publisher reads all of it, no one consumes
            assert results == []  # its confirm waits behind the deliveries
            with anyio.fail_after(5):
                got = await take(consumer, 6)
        assert got == [b"m%d" % i for i in range(6)]
        assert results == [Outcome.ACK]
    assert any(lead.backlog for lead in leads)


@pytest.mark.parametrize(
    ("busy_poll", "cancel_after"), [(0.0, 0.1), (0.01, 0.001)], ids=["sleeping", "polling"]
)
async def test_a_cancelled_leader_leaves_the_reading_to_the_reader(
    tcp_broker: FakeBroker,
    leads: list[Lead],
    anyio_backend: str,
    busy_poll: float,
    cancel_after: float,
) -> None:
    """Cancelled while it sleeps on the socket, or while it polls (the
    poll's checkpoints take the cancellation, well before the 10 ms poll
    would end), the leader leaves the reading to the reader."""
    tcp_broker.auto_confirm = False
    async with (
        tcp_broker,
        connect(URL, busy_poll=busy_poll) as conn,
        conn.channel() as channel,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        await channel.confirm_select()
        result = await channel.basic_publish(b"x", "", "q")
        assert result is not None
        with anyio.move_on_after(cancel_after) as scope:
            start = time.perf_counter()
            await result.wait()
        assert scope.cancelled_caught
        if busy_poll:
            assert time.perf_counter() - start < 0.0095  # before the poll ran out
        assert leads and not leads[-1].woken
        # The reader reads again: a delivery reaches the consumer (which
        # may lead in turn), and the confirm the cancelled wait missed is
        # recorded on its result.
        (tag,) = tcp_broker.consumers
        await tcp_broker.deliver(tag, b"after")
        await tcp_broker.confirm(channel.channel_id, 1)
        with anyio.fail_after(5):
            message = await consumer.__anext__()
            assert message.body == b"after"
            assert await result.wait() is Outcome.ACK


async def test_a_leader_wakes_when_another_task_ends_its_wait(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """A heartbeat timeout is found by the heartbeat task, not by reading:
    it must wake a task that is reading the silent socket for a confirm."""
    tcp_broker.heartbeat = 1
    tcp_broker.send_heartbeats = False
    tcp_broker.auto_confirm = False
    with anyio.fail_after(10), pytest.raises(HeartbeatTimeout):
        async with tcp_broker, connect(URL, revive=False) as conn, conn.channel() as channel:
            await channel.confirm_select()
            result = await channel.basic_publish(b"x", "", "q")
            assert result is not None
            start = anyio.current_time()
            assert await result.wait() is Outcome.UNKNOWN
            assert anyio.current_time() - start < 4
            assert leads and leads[-1].woken
            await anyio.sleep(5)  # the body is not cancelled; the exit raises


async def test_a_hang_up_seen_by_the_leader_ends_every_waiter(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    tcp_broker.auto_confirm = False
    async with tcp_broker:
        with anyio.fail_after(5), pytest.raises(Exception) as info:
            async with connect(URL, revive=False) as conn, conn.channel() as channel:
                await channel.confirm_select()
                declared = anyio.Event()
                error: list[BaseException] = []

                async def declare() -> None:
                    tcp_broker.hold.add("Queue.Declare")
                    try:
                        declared.set()
                        await channel.queue_declare("q")
                    except Exception as exc:
                        error.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(declare)
                    await declared.wait()
                    result = await channel.basic_publish(b"x", "", "q")
                    assert result is not None
                    await tcp_broker.wait_published(1)
                    await tcp_broker.wait_for("Queue.Declare")
                    tg.start_soon(tcp_broker.hang_up)
                    assert await result.wait() is Outcome.UNKNOWN
                assert len(error) == 1
    assert "lost" in str(info.value)
    assert leads


async def test_an_ack_corked_after_a_lead_is_written_when_the_reader_wakes(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """An RPC server replies (written at once: an answer) and acks (corked),
    then does something else instead of waiting for its next request.  The
    cork counts on the parked reader's deadline, not on one of the
    writer's: the reader writes it when it wakes."""
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("requests")]) as requests,
        Producer(conn, confirm=False) as producer,
    ):
        (tag,) = tcp_broker.consumers

        async def take_one(got: list[Any]) -> None:
            got.append(await requests.__anext__())

        by_reader = 0
        for i in range(10):
            got: list[Any] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(take_one, got)
                with anyio.fail_after(5):  # it leads, the reader parked: then the request
                    while conn._lead_by is None or conn._patience is None:
                        await anyio.sleep(0.0005)
                await tcp_broker.deliver(tag, b"request %d" % i)
            (request,) = got
            await producer.publish(b"reply %d" % i, routing_key="replies")
            await request.ack()
            by_reader += conn._cork_by_reader
            with anyio.fail_after(5):  # not a wait of trio_msg's: nothing flushes
                while len(tcp_broker.acked()) <= i:
                    await anyio.sleep(0.0005)
            assert not conn._cork_by_reader
        assert tcp_broker.acked() == list(range(1, 11))
    # (a loaded machine may let the reader's deadline pass before an ack)
    assert by_reader >= 5, by_reader


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_servers_request_moves_one_deadline(
    tcp_broker: FakeBroker, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """Through an RPC server's conversation, each request moves at most one
    trio deadline (the reader's, at the start of the lead that waits for
    the next request).
    It moved three: the ack's cork set the writer's deadline and writing the
    cork took it away again.  (Each move costs about 2 µs inside trio.)"""
    import trio

    deadlines = DeadlineMoves()
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("requests")]) as requests,
        Producer(conn, confirm=False) as producer,
    ):
        deadlines.start(monkeypatch)
        steps = TaskSteps("trio_msg._writer")
        await serve(tcp_broker, requests, producer, 45, steps)
        trio.lowlevel.remove_instrument(steps)
        monkeypatch.undo()
    # For 45 requests; it was 135.  A request the reader reads itself (it was
    # awake when the broker sent it) ends no lead: its ack's cork then sets
    # and clears the writer's deadline, two moves, so this holds even if
    # every request raced so; the old code made two for such a request and
    # three for any other.
    assert deadlines.moves <= 90
    assert steps.steps <= 5


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_run_of_confirms_moves_the_readers_deadline_seldom(
    tcp_broker: FakeBroker, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """Each lead's start sets the parked reader's deadline only when the
    one it has is nearer than HANDBACK_KEEP, so after a move the next one
    waits at least HANDBACK - HANDBACK_KEEP, unless the reader parked
    again in between (it ran: a step), which leaves it none.  It was one
    move per confirm, at the end of each lead, between the confirm and the
    next publish."""
    import trio

    from trio_msg.connection import HANDBACK, HANDBACK_KEEP

    deadlines = DeadlineMoves()
    async with tcp_broker, connect(URL) as conn, Producer(conn) as producer:
        for _ in range(5):
            await producer.publish(b"warm", routing_key="q")
        reader = TaskSteps("trio_msg._reader")
        trio.lowlevel.add_instrument(reader)
        deadlines.start(monkeypatch)
        start = trio.current_time()
        for i in range(200):
            await producer.publish(b"%d" % i, routing_key="q")
        elapsed = trio.current_time() - start
        monkeypatch.undo()
        trio.lowlevel.remove_instrument(reader)
        assert conn._patience_until != float("inf")  # the reader has its deadline
    assert deadlines.moves <= elapsed / (HANDBACK - HANDBACK_KEEP) + reader.steps + 2, (
        deadlines.moves,
        elapsed,
        reader.steps,
    )


# --- busy polling (``busy_poll``) ---------------------------------------------


async def test_a_leader_polls_instead_of_sleeping_when_answers_come_soon(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """With ``busy_poll``, a task waiting for its confirm tries the socket
    and yields to the event loop, again and again, instead of sleeping on
    it.  The fake broker is a task of the same loop: it can answer only
    because the poll yields, and its confirm is then found by a try, with
    no sleep (no idle CPU to wake)."""
    async with tcp_broker, connect(URL, busy_poll=0.01) as conn, Producer(conn) as producer:
        for i in range(30):
            result = await producer.publish(b"%d" % i, routing_key="q")
            assert result is not None and result.outcome is Outcome.ACK
    sleeps = answered_sleeps(leads)
    assert len(sleeps) >= 15
    # (a pause of 10 ms on a loaded machine may end a poll: rarely)
    assert sum(1 for n in sleeps if n) <= 2, sleeps


async def test_without_busy_poll_a_leader_sleeps_for_every_answer(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    async with tcp_broker, connect(URL, busy_poll=0) as conn, Producer(conn) as producer:
        for i in range(30):
            await producer.publish(b"%d" % i, routing_key="q")
        assert not conn._polling
    sleeps = answered_sleeps(leads)
    assert len(sleeps) >= 15
    assert all(n >= 1 for n in sleeps), sleeps


async def test_polling_stops_after_a_slow_answer_and_resumes_after_a_quick_one(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """An answer that takes longer than POLL_AGAIN times ``busy_poll`` (a
    consumer whose messages come seldom, a slow RPC server) stops the
    polling: the next lead sleeps at once, and burns no CPU.  A quick
    answer starts it again."""
    from trio_msg.connection import POLL_AGAIN

    busy_poll = 0.002
    async with tcp_broker, connect(URL, busy_poll=busy_poll) as conn, conn.channel() as channel:
        await channel.queue_declare("quick")
        assert conn._polling
        tcp_broker.reply_delay = POLL_AGAIN * busy_poll * 5
        await channel.queue_declare("slow")
        assert not conn._polling
        tcp_broker.reply_delay = 0.0
        del leads[:]
        for i in range(6):
            await channel.queue_declare(f"q{i}")
        assert conn._polling
    sleeps = answered_sleeps(leads)
    assert len(sleeps) >= 3, sleeps
    assert sleeps[0] >= 1  # not polled: it slept on the socket
    assert sum(1 for n in sleeps[1:] if n) <= 1, sleeps  # polled again
