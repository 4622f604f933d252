"""Watching a connection, against the fake broker: the events a watcher
reads (lost, reviving, revived, blocked, unblocked, closed, and what a slow
watcher misses), the log lines that go with them (and never the password),
and ``statistics()`` against what the broker saw.  The real-broker side is
tests/integration/test_observe.py."""

from __future__ import annotations

import logging

import anyio
import anyio.abc
import pytest
from pamqp import commands as C
from protocol.peer import build, content_frames

import trio_msg
from trio_msg import (
    Blocked,
    Closed,
    ConnectionEvent,
    Consumer,
    Lost,
    Missed,
    Producer,
    Queue,
    Revived,
    Reviving,
    Unblocked,
)
from trio_msg._retry import RetryPolicy
from trio_msg.connection import Connection, connect
from trio_msg.errors import ConnectionFailed, ConnectionForced, ConnectionLost

from .fake_broker import URL, FakeBroker

PASSWORD = "Pw-of-observe-7f3a"
URL_WITH_PASSWORD = f"amqp://guest:{PASSWORD}@fake-broker.invalid//"
FAST = RetryPolicy(max_retries=10, interval_start=0.01, interval_step=0.01, interval_max=0.05)

pytestmark = pytest.mark.anyio


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def assert_no_password(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records  # something was logged
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
    assert PASSWORD not in caplog.text  # formatted, with any traceback


async def next_event(events: trio_msg.Watcher) -> ConnectionEvent:
    with anyio.fail_after(5):
        return await anext(events)


class Recorder:
    """A task that reads a connection's events until they end."""

    def __init__(self) -> None:
        self.events: list[ConnectionEvent] = []
        self.revived = anyio.Event()

    async def run(
        self,
        conn: Connection,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with conn.watch() as events:
            task_status.started()
            async for event in events:
                self.events.append(event)
                if isinstance(event, Revived):
                    self.revived.set()


# --- the event stream -------------------------------------------------------------


async def test_blocked_and_unblocked(broker: FakeBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_msg")
    async with broker, connect(URL) as conn, conn.watch() as events:
        await broker.send(0, C.Connection.Blocked(reason="low on memory"))
        assert await next_event(events) == Blocked("low on memory")
        assert conn.statistics().blocked
        await broker.send(0, C.Connection.Unblocked())
        assert await next_event(events) == Unblocked()
        assert not conn.statistics().blocked
    assert records(caplog, logging.WARNING) == ["the broker blocked the connection: low on memory"]
    assert "the broker unblocked the connection" in records(caplog, logging.INFO)


async def test_a_revival_is_lost_reviving_revived_and_the_end_closed(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_msg")
    broker.serve_again = True
    recorder = Recorder()
    async with (
        broker,
        anyio.create_task_group() as tg,
        connect(URL_WITH_PASSWORD, revive=FAST, connection_name="watched") as conn,
    ):
        await tg.start(recorder.run, conn)
        broker.refuse = 1
        await broker.hang_up()
        with anyio.fail_after(10):
            await recorder.revived.wait()
        stats = conn.statistics()
        tune = f"heartbeat {conn.heartbeat} s, frame_max 131072, channel_max 2047"
    lost, first, second, revived, closed = recorder.events
    assert lost == Lost(lost.error, reviving=True)
    assert isinstance(lost.error, ConnectionLost)
    assert (first.attempt, first.delay, first.error) == (1, 0.01, lost.error)
    assert isinstance(second, Reviving) and second.attempt == 2 and second.delay == 0.02
    assert isinstance(second.error, ConnectionFailed)  # the first attempt was refused
    assert isinstance(revived, Revived) and (revived.incarnation, revived.attempts) == (2, 2)
    assert revived.downtime >= 0.03  # the two waits, at least
    assert closed == Closed(None)

    assert (stats.state, stats.incarnation, stats.reconnects, stats.reconnect_attempts) == (
        "open",
        2,
        1,
        2,
    )
    assert stats.last_error is second.error
    assert stats.connected_for is not None

    info = records(caplog, logging.INFO)
    warnings = records(caplog, logging.WARNING)
    where = "fake-broker.invalid:5672 vhost '/' ('watched')"
    assert warnings == [
        f"connection to {where} lost (reviving): ConnectionLost: "
        "connection to the broker lost: the broker closed the socket"
    ]
    assert [line for line in info if not line.startswith("revive attempt")] == [
        f"connected to {where} (incarnation 1): {tune}",
        f"reviving the connection to {where} (first attempt in 0.01 s)",
        f"connected to {where} (incarnation 2): {tune}",
        line_starting(info, f"connection to {where} revived after 2 attempts in "),
        f"connection to {where} closed",
    ]
    assert line_starting(info, "revive attempt 1 failed: ConnectionFailed: cannot connect")
    assert_no_password(caplog)


def line_starting(lines: list[str], prefix: str) -> str:
    (line,) = [line for line in lines if line.startswith(prefix)]
    return line


async def test_giving_up_reviving_is_a_warning_and_closed(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_msg")
    broker.serve_again = True
    recorder = Recorder()
    policy = RetryPolicy(max_retries=2, interval_start=0.01, interval_step=0.01)
    async with broker, anyio.create_task_group() as tg:
        with pytest.raises(ConnectionFailed) as info:
            async with connect(URL, revive=policy) as conn:
                await tg.start(recorder.run, conn)
                broker.refuse = 100
                await broker.hang_up()
                with anyio.fail_after(10), pytest.raises(ConnectionFailed):
                    await conn.wait_connected()
    lost, first, second, closed = recorder.events
    assert isinstance(lost, Lost) and lost.reviving
    assert isinstance(first, Reviving) and isinstance(second, Reviving)
    assert [first.attempt, second.attempt] == [1, 2]
    assert closed == Closed(info.value)
    assert conn.statistics().state == "closed"
    assert conn.statistics().reconnect_attempts == 2
    lost_line, gave_up = records(caplog, logging.WARNING)
    assert "lost (reviving)" in lost_line
    assert gave_up.startswith("gave up reviving the connection to fake-broker.invalid:5672")
    assert "gave up reconnecting after 2 attempts" in gave_up


async def test_a_loss_without_revive_is_lost_then_closed(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker's reply text quotes the URL, password and all: the log
    line says it without the password."""
    caplog.set_level(logging.DEBUG, logger="trio_msg")
    got: list[ConnectionEvent] = []
    async with broker:
        with pytest.raises(ConnectionForced):
            async with connect(URL_WITH_PASSWORD, revive=False) as conn, conn.watch() as events:
                await broker.close_connection(320, f"kicked out {URL_WITH_PASSWORD}")
                # (shielded: the loss may end the block's body too)
                with anyio.CancelScope(shield=True), anyio.fail_after(5):
                    got = [event async for event in events]
    lost, closed = got
    assert isinstance(lost, Lost) and isinstance(lost.error, ConnectionForced)
    assert not lost.reviving
    assert closed == Closed(lost.error)
    assert conn.statistics().state == "closed"
    assert conn.statistics().last_error is lost.error
    (warning,) = records(caplog, logging.WARNING)
    assert warning.startswith(
        "connection to fake-broker.invalid:5672 vhost '/' lost (not reviving)"
    )
    assert "kicked out amqp://guest:***@fake-broker.invalid//" in warning
    assert_no_password(caplog)


async def test_a_slow_watcher_misses_the_oldest_and_is_told(broker: FakeBroker) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Producer(conn) as producer,
        conn.watch(buffer_size=2) as events,
    ):
        for i in range(3):
            await broker.send(0, C.Connection.Blocked(reason=f"alarm {i}"))
            await broker.send(0, C.Connection.Unblocked())
        # The connection went on without the watcher: a publish passes.
        with anyio.fail_after(5):
            await producer.publish(b"not held up", routing_key="q")
        assert await next_event(events) == Missed(4)
        assert await next_event(events) == Blocked("alarm 2")
        assert await next_event(events) == Unblocked()
        with anyio.move_on_after(0.05) as scope:
            await anext(events)
        assert scope.cancelled_caught  # nothing more
    assert [p.body for p in broker.published] == [b"not held up"]


async def test_a_cancelled_wait_loses_no_event(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn, conn.watch() as events:
        with anyio.move_on_after(0.01) as scope:
            await anext(events)
        assert scope.cancelled_caught
        await broker.send(0, C.Connection.Blocked(reason="disk"))
        assert await next_event(events) == Blocked("disk")


async def test_watching_a_closed_connection_yields_closed_and_ends(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn:
        pass
    async with conn.watch() as events:
        with anyio.fail_after(5):
            assert [event async for event in events] == [Closed(None)]


async def test_watch_refuses_a_bad_buffer_size_and_iteration_outside_its_block(
    broker: FakeBroker,
) -> None:
    async with broker, connect(URL) as conn:
        with pytest.raises(ValueError, match="buffer_size"):
            conn.watch(buffer_size=0)
        watcher = conn.watch()
        with pytest.raises(RuntimeError, match="async with"):
            await anext(watcher)  # it would never see an event


# --- statistics -------------------------------------------------------------------


async def test_statistics_count_what_the_broker_saw(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn:
        # 5 published and confirmed.
        async with Producer(conn) as producer:
            for i in range(5):
                await producer.publish(b"%d" % i, routing_key="q")

        # 3 nacked (one multiple nack), 2 left unknown by a channel closed
        # under them, 1 returned (and then confirmed).
        broker.auto_confirm = False
        async with conn.channel() as ch:
            await ch.confirm_select()
            nacked = [await ch.basic_publish(b"n", "", "q") for _ in range(3)]
            await broker.wait_published(8)
            await broker.confirm(ch.channel_id, 3, multiple=True, nack=True)
            with anyio.fail_after(5):
                assert {await r.wait() for r in nacked if r} == {trio_msg.Outcome.NACK}
            returned = await ch.basic_publish(b"r", "", "nowhere", mandatory=True)
            await broker.wait_published(9)
            method = build(
                C.Basic.Return,
                reply_code=312,
                reply_text="NO_ROUTE",
                exchange="",
                routing_key="nowhere",
            )
            await broker.send_raw(b"".join(content_frames(ch.channel_id, method, b"r")))
            await broker.confirm(ch.channel_id, 4)
            assert returned is not None
            with anyio.fail_after(5):
                assert await returned.wait() is trio_msg.Outcome.ACK
            assert returned.returned is not None
        async with conn.channel() as ch:
            await ch.confirm_select()
            lost = [await ch.basic_publish(b"u", "", "q") for _ in range(2)]
            await broker.wait_published(11)
            await broker.close_channel(ch.channel_id, 406, "PRECONDITION_FAILED")
            with anyio.fail_after(5):
                assert {await r.wait() for r in lost if r} == {trio_msg.Outcome.UNKNOWN}

        # 7 delivered (6 to a consumer, 1 by basic.get): 4 acked (two
        # singly, then two at once with multiple), 1 rejected, 1 nacked;
        # the broker takes back the one left unsettled when the channel closes.
        broker.get_queue.append(b"got")
        async with Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer:
            (tag,) = broker.consumers
            for i in range(6):
                await broker.deliver(tag, b"%d" % i)
            with anyio.fail_after(5):
                messages = [await anext(consumer) for _ in range(6)]
            await messages[0].ack()
            await messages[1].ack()
            await messages[3].ack(multiple=True)  # 2 and 3
            await messages[4].reject(requeue=False)
            await messages[5].nack(requeue=True)
            got = await consumer.channel.basic_get("q")
            assert got is not None
            await consumer.channel.queue_declare("sync")  # the settlements are out

        stats = conn.statistics()
    assert (stats.published, stats.confirmed, stats.nacked, stats.unknown) == (11, 6, 3, 2)
    assert len(broker.published) == stats.published
    assert stats.returned == 1
    assert stats.delivered == 7
    assert stats.acked == len(broker.acked()) == 4
    assert stats.rejected == 2
    assert broker.count("Basic.Reject") + broker.count("Basic.Nack") == stats.rejected
    assert (stats.state, stats.incarnation, stats.reconnects, stats.blocked) == (
        "open",
        1,
        0,
        False,
    )
    assert conn.statistics().state == "closed"


async def test_no_log_line_per_message(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_msg")
    async with broker, connect(URL) as conn:
        async with (
            Producer(conn) as producer,
            Consumer(conn, queues=[Queue("q")], prefetch_count=50) as consumer,
        ):
            before = len(caplog.records)
            (tag,) = broker.consumers
            for i in range(200):
                await producer.publish(b"%d" % i, routing_key="q")
                await broker.deliver(tag, b"%d" % i)
                message = await anext(consumer)
                await message.ack()
            assert len(caplog.records) == before
        assert conn.statistics().delivered == 200


async def test_channel_detail_is_debug(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_msg")
    async with broker, connect(URL) as conn:
        ch = await conn.open_channel()
        await broker.send(ch.channel_id, C.Channel.Flow(active=False))
        await broker.send(ch.channel_id, C.Channel.Flow(active=True))
        await broker.close_channel(ch.channel_id, 406, "PRECONDITION_FAILED - nope")
        with anyio.fail_after(5):
            while ch.is_open:
                await anyio.wait_all_tasks_blocked()  # the close is read
    channel_lines = [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "trio_msg.channel"
    ]
    assert channel_lines == [
        (logging.DEBUG, f"channel {ch.channel_id} opened"),
        (logging.DEBUG, f"the broker paused publishing on channel {ch.channel_id}"),
        (logging.DEBUG, f"the broker resumed publishing on channel {ch.channel_id}"),
        (
            logging.DEBUG,
            f"channel {ch.channel_id} closed: PreconditionFailed: "
            "(406) PRECONDITION_FAILED - nope [closed by broker]",
        ),
    ]
