"""Leader/follower reading (``Pump._lead``): on the direct socket path
(plain TCP, on trio and on asyncio), a task about to wait for what the
broker sends -- a confirm, a reply, a delivery -- reads the socket itself
while the reader task is idle, instead of being woken by the reader once it
has read it.

These run over real loopback TCP against the fake broker, on both backends
(the plain path, without leading, is what every test over in-memory
streams takes), and check what the tasks and the broker see: every answer
reaches its waiter, in order, whoever reads it, and nothing is left unread
or unwritten when the waiting stops.  The tests marked ``perf`` (run with
``-m perf`` on a quiet machine) pin how: which task reads, how often the
reader and writer tasks run, how often a deadline moves, whether a leader
polls; ``leads`` records every lead for them.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from trio_msg import Consumer, Outcome, Producer, Queue
from trio_msg._pump import HANDBACK, HANDBACK_KEEP, POLL_AGAIN, Pump, Signal
from trio_msg.connection import connect
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
    real = Pump._lead

    async def lead(self: Pump, wire: Any, signal: Signal) -> None:
        assert self._lead_by is None, "two tasks lead at once"
        sleeps = [0]
        token = _SLEEPS.set(sleeps)
        try:
            await real(self, wire, signal)
        finally:
            _SLEEPS.reset(token)
            record.append(Lead(signal.is_set(), self._backlog is not None, sleeps[0]))

    monkeypatch.setattr(Pump, "_lead", lead)
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


async def test_confirms_reach_the_publisher_that_waits_for_them(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    async with tcp_broker, connect(URL) as conn, Producer(conn) as producer:
        for i in range(20):
            result = await producer.publish(b"%d" % i, routing_key="q")
            assert result is not None and result.outcome is Outcome.ACK
    assert [p.body for p in tcp_broker.published] == [b"%d" % i for i in range(20)]


async def test_replies_reach_the_caller_that_waits_for_them(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    async with tcp_broker, connect(URL) as conn, conn.channel() as channel:
        for i in range(10):
            declared = await channel.queue_declare(f"q{i}")
            assert declared.queue == f"q{i}"


async def test_deliveries_reach_the_consumer_that_waits_for_them(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        (tag,) = tcp_broker.consumers

        async def deliver() -> None:
            for i in range(20):
                await anyio.wait_all_tasks_blocked()  # the consumer is waiting
                await tcp_broker.deliver(tag, b"m%d" % i)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(deliver)
                got = await take(consumer, 20)
    assert got == [b"m%d" % i for i in range(20)]


async def test_a_frame_nobody_waits_for_is_read_after_a_lead(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    """After its confirm, the publisher does something else: what comes
    next -- a delivery for a consumer nobody is waiting on -- is read all
    the same."""
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
        Producer(conn) as producer,
    ):
        (tag,) = tcp_broker.consumers
        for i in range(3):
            await producer.publish(b"%d" % i, routing_key="q")
        await tcp_broker.deliver(tag, b"unawaited")
        with anyio.fail_after(5):
            while not len(consumer._receive):
                await anyio.sleep(0.01)  # (a look that does not read the socket)
        message = consumer._receive.receive_nowait()
        assert message.body == b"unawaited"


async def test_a_confirm_and_a_delivery_awaited_at_once_both_arrive(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    """A publisher waits for its confirm while a consumer waits beside it:
    one reads for both (whichever it is), and each gets its own."""
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
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(consume)
                await anyio.wait_all_tasks_blocked()
                await tcp_broker.confirm(producer.channel.channel_id, 1)
                await tcp_broker.deliver(tag, b"m")
        assert outcomes == [Outcome.ACK]
        assert got == [b"m"]
        with anyio.fail_after(5):
            await tcp_broker.wait_for("Basic.Ack")  # the consumer's ack went out


async def test_concurrent_waiters_each_get_their_answers(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    """Three publishers wait at once: one reads, and the confirms it reads
    for the others wake them."""
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


async def test_deliveries_past_a_full_buffer_and_a_confirm_behind_them_keep_their_order(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    """The publisher reads, while it waits for its confirm, deliveries for
    a consumer whose buffer is full: nothing is lost or reordered, and the
    confirm, behind them on the wire, is seen only once they are taken."""
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
            await anyio.wait_all_tasks_blocked()  # no one consumes
            assert results == []  # its confirm waits behind the deliveries
            with anyio.fail_after(5):
                got = await take(consumer, 6)
        assert got == [b"m%d" % i for i in range(6)]
        assert results == [Outcome.ACK]


@pytest.mark.parametrize(
    ("busy_poll", "cancel_after"), [(0.0, 0.1), (0.01, 0.001)], ids=["sleeping", "polling"]
)
async def test_a_cancelled_wait_leaves_nothing_unread(
    tcp_broker: FakeBroker, anyio_backend: str, busy_poll: float, cancel_after: float
) -> None:
    """Cancelled while it waits for a confirm (sleeping on the socket, or
    polling it: the poll's checkpoints take the cancellation), the task
    leaves the reading to the rest: a delivery reaches the consumer, and
    the confirm the cancelled wait missed is recorded on its result."""
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
            await result.wait()
        assert scope.cancelled_caught
        (tag,) = tcp_broker.consumers
        await tcp_broker.deliver(tag, b"after")
        await tcp_broker.confirm(channel.channel_id, 1)
        with anyio.fail_after(5):
            message = await consumer.__anext__()
            assert message.body == b"after"
            assert await result.wait() is Outcome.ACK


async def test_a_heartbeat_timeout_ends_a_wait_on_a_silent_socket(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    """A heartbeat timeout is found by the heartbeat task, not by reading:
    it ends the wait of a task reading the silent socket for a confirm."""
    tcp_broker.heartbeat = 1
    tcp_broker.send_heartbeats = False
    tcp_broker.auto_confirm = False
    with anyio.fail_after(10), pytest.raises(HeartbeatTimeout):
        async with tcp_broker, connect(URL, revive=False) as conn, conn.channel() as channel:
            await channel.confirm_select()
            result = await channel.basic_publish(b"x", "", "q")
            assert result is not None
            assert await result.wait() is Outcome.UNKNOWN
            await anyio.sleep_forever()  # the body is not cancelled; the exit raises


async def test_a_hang_up_ends_every_waiter(tcp_broker: FakeBroker, anyio_backend: str) -> None:
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


async def test_an_ack_after_a_reply_is_written_though_nobody_waits(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    """An RPC server replies (an answer) and acks (corked), then does
    something else instead of waiting for its next request: the broker
    gets the ack all the same."""
    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("requests")]) as requests,
        Producer(conn, confirm=False) as producer,
    ):
        (tag,) = tcp_broker.consumers

        async def take_one(got: list[Any]) -> None:
            got.append(await requests.__anext__())

        for i in range(10):
            got: list[Any] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(take_one, got)
                await anyio.wait_all_tasks_blocked()  # it waits (and reads)
                await tcp_broker.deliver(tag, b"request %d" % i)
            (request,) = got
            await producer.publish(b"reply %d" % i, routing_key="replies")
            await request.ack()
            with anyio.fail_after(5):  # not a wait of trio_msg's: nothing flushes
                await tcp_broker.wait_for("Basic.Ack", i + 1)
        assert tcp_broker.acked() == list(range(1, 11))


# --- pinned: how the reading is shared (``-m perf``) ---------------------------


@pytest.mark.perf
async def test_a_waiting_task_reads_its_own_answers(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    async with tcp_broker, connect(URL) as conn, Producer(conn) as producer:
        for i in range(20):
            await producer.publish(b"%d" % i, routing_key="q")
        async with conn.channel() as channel:
            for i in range(10):
                await channel.queue_declare(f"q{i}")
    # (the reader may hold the socket when a wait starts: not every one leads)
    assert sum(lead.woken for lead in leads) >= 15
    assert not any(lead.backlog for lead in leads)


@pytest.mark.perf
async def test_a_full_buffer_hands_the_rest_to_the_reader(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    await test_deliveries_past_a_full_buffer_and_a_confirm_behind_them_keep_their_order(
        tcp_broker, anyio_backend
    )
    assert any(lead.backlog for lead in leads)


@pytest.mark.perf
async def test_a_lead_with_others_waiting_wakes_the_reader_at_once(
    tcp_broker: FakeBroker, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """When the confirm ends the publisher's lead while a consumer waits
    beside it, the reader is woken at once to read for the consumer,
    instead of after its deadline."""
    handed: list[tuple[bool, int]] = []
    real = Pump._hand_back

    def hand_back(self: Pump, later: bool) -> None:
        if self._role_back is not None:
            handed.append((later, self._followers))
        real(self, later)

    monkeypatch.setattr(Pump, "_hand_back", hand_back)
    await test_a_confirm_and_a_delivery_awaited_at_once_both_arrive(tcp_broker, anyio_backend)
    assert (False, 1) in handed


@pytest.mark.perf
@pytest.mark.parametrize("anyio_backend", ["trio"])  # counted with a trio instrument
async def test_the_reader_sleeps_through_a_run_of_confirmed_publishes(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """Each confirm ends a lead without waking the parked reader, and the
    publisher's next lead moves the reader's deadline on before it runs
    out: the reader does not run."""
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
    # (A pause longer than HANDBACK, on a loaded machine, wakes it.)
    assert count.steps <= 50


@pytest.mark.perf
@pytest.mark.parametrize("anyio_backend", ["trio"])  # counted with a trio instrument
async def test_the_reader_and_writer_sleep_through_a_servers_conversation(
    tcp_broker: FakeBroker, anyio_backend: str
) -> None:
    """An RPC server: the request ends the consumer's lead, the server
    publishes its reply (at once: an answer) and acks (corked), then waits
    for the next request, which writes the ack and leads again, all within
    the reader's deadline: neither the reader nor the writer task runs."""
    import trio

    async with (
        tcp_broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("requests")]) as requests,
        Producer(conn, confirm=False) as producer,
    ):
        reader = TaskSteps("trio_msg._reader")
        writer = TaskSteps("trio_msg._writer")
        trio.lowlevel.add_instrument(writer)
        await serve(tcp_broker, requests, producer, 40, reader)
        trio.lowlevel.remove_instrument(reader)
        trio.lowlevel.remove_instrument(writer)
    assert reader.steps <= 35  # (as above, a pause may wake it)
    assert writer.steps <= 5


@pytest.mark.perf
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_servers_request_moves_one_deadline(
    tcp_broker: FakeBroker, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """Through an RPC server's conversation, each request moves at most one
    trio deadline (the reader's, at the start of the lead that waits for
    the next request), two when the reader read the request itself."""
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
        import trio

        trio.lowlevel.remove_instrument(steps)
        monkeypatch.undo()
    assert deadlines.moves <= 90
    assert steps.steps <= 5


@pytest.mark.perf
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_run_of_confirms_moves_the_readers_deadline_seldom(
    tcp_broker: FakeBroker, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    """Each lead's start sets the parked reader's deadline only when the
    one it has is nearer than HANDBACK_KEEP, so after a move the next one
    waits at least HANDBACK - HANDBACK_KEEP, unless the reader parked
    again in between (it ran: a step), which leaves it none."""
    import trio

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
        assert conn._pump._patience_until != float("inf")  # the reader has its deadline
    assert deadlines.moves <= elapsed / (HANDBACK - HANDBACK_KEEP) + reader.steps + 2, (
        deadlines.moves,
        elapsed,
        reader.steps,
    )


# --- pinned: busy polling (``busy_poll``) -------------------------------------


@pytest.mark.perf
async def test_a_leader_polls_instead_of_sleeping_when_answers_come_soon(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """With ``busy_poll``, a task waiting for its confirm tries the socket
    and yields to the event loop, again and again, instead of sleeping on
    it.  The fake broker is a task of the same loop: it can answer only
    because the poll yields, and its confirm is then found by a try, with
    no sleep."""
    async with tcp_broker, connect(URL, busy_poll=0.01) as conn, Producer(conn) as producer:
        for i in range(30):
            result = await producer.publish(b"%d" % i, routing_key="q")
            assert result is not None and result.outcome is Outcome.ACK
    sleeps = answered_sleeps(leads)
    assert len(sleeps) >= 15
    # (a pause of 10 ms on a loaded machine may end a poll: rarely)
    assert sum(1 for n in sleeps if n) <= 2, sleeps


@pytest.mark.perf
async def test_by_default_a_leader_sleeps_for_every_answer(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    async with tcp_broker, connect(URL) as conn, Producer(conn) as producer:
        for i in range(30):
            await producer.publish(b"%d" % i, routing_key="q")
    sleeps = answered_sleeps(leads)
    assert len(sleeps) >= 15
    assert all(n >= 1 for n in sleeps), sleeps


@pytest.mark.perf
async def test_polling_stops_after_a_slow_answer_and_resumes_after_a_quick_one(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """An answer that takes longer than POLL_AGAIN times ``busy_poll`` (a
    consumer whose messages come seldom, a slow RPC server) stops the
    polling: the next lead sleeps at once, and burns no CPU.  A quick
    answer starts it again."""
    busy_poll = 0.002
    async with tcp_broker, connect(URL, busy_poll=busy_poll) as conn, conn.channel() as channel:
        await channel.queue_declare("quick")
        tcp_broker.reply_delay = POLL_AGAIN * busy_poll * 5
        await channel.queue_declare("slow")
        tcp_broker.reply_delay = 0.0
        del leads[:]
        for i in range(6):
            await channel.queue_declare(f"q{i}")
    sleeps = answered_sleeps(leads)
    assert len(sleeps) >= 3, sleeps
    assert sleeps[0] >= 1  # not polled: it slept on the socket
    assert sum(1 for n in sleeps[1:] if n) <= 1, sleeps  # polled again


@pytest.mark.perf
async def test_a_wait_that_times_out_stops_the_polling(
    tcp_broker: FakeBroker, leads: list[Lead], anyio_backend: str
) -> None:
    """A loop of short timeouts on a queue where nothing comes: the first
    wait polls for nothing, and stops the polling for the next ones, which
    sleep at once."""
    busy_poll = 0.002
    async with (
        tcp_broker,
        connect(URL, busy_poll=busy_poll) as conn,
        Consumer(conn, queues=[Queue("idle")]) as consumer,
        conn.channel() as channel,
    ):
        await channel.queue_declare("quick")  # a quick answer: polling is on
        del leads[:]
        for _ in range(5):
            with anyio.move_on_after(busy_poll * 3):
                await consumer.__anext__()
        assert leads and not any(lead.woken for lead in leads)
        # The first polled (1.5 of its 3 * busy_poll); the others slept at once.
        assert all(lead.sleeps == 1 for lead in leads)
        assert not conn._pump._polling
