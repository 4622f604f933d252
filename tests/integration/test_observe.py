"""Watching a connection against the real broker: the log lines of opening,
closing, forced closes, cuts, revivals and server-sent cancels (never the
password, never one per message), the event stream of a cut, and
``statistics()`` against what the broker holds."""

from __future__ import annotations

import logging
import uuid

import anyio
import anyio.abc
import pytest
from _broker import BROKER_HOST, BROKER_PORT, close_connection_by_name, rabbitmqctl
from _proxy import TcpProxy

import trio_msg
from trio_msg import Closed, ConnectionEvent, Consumer, Lost, Producer, Queue, Revived, Reviving
from trio_msg.errors import (
    ConnectionForced,
    ConnectionLost,
    ConsumerCancelled,
    MessageNacked,
    Unroutable,
)

pytestmark = pytest.mark.anyio

FAST = trio_msg.RetryPolicy(interval_start=0.05, interval_step=0.05, interval_max=0.2)


def messages(caplog: pytest.LogCaptureFixture, level: int, logger: str = "") -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and r.name.startswith(logger or "trio_msg")
    ]


def one(lines: list[str], *parts: str) -> str:
    """The one line that holds every one of *parts*."""
    found = [line for line in lines if all(part in line for part in parts)]
    assert len(found) == 1, (parts, lines)
    return found[0]


async def _force_close(name: str) -> None:
    await anyio.to_thread.run_sync(close_connection_by_name, name, "observe test")


def _ctl(*args: str) -> None:
    rabbitmqctl(*args, timeout=30)


class Recorder:
    """A task that reads a connection's events until they end."""

    def __init__(self) -> None:
        self.events: list[ConnectionEvent] = []
        self.revived = anyio.Event()

    async def run(
        self,
        conn: trio_msg.Connection,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with conn.watch() as events:
            task_status.started()
            async for event in events:
                self.events.append(event)
                if isinstance(event, Revived):
                    self.revived.set()


async def test_open_forced_close_revive_and_close_are_logged_without_the_password(
    broker_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A user of its own, so the password is one that nothing else says."""
    caplog.set_level(logging.DEBUG, logger="trio_msg")
    user = unique_name.replace(".", "_")[-60:]
    password = "pw-" + uuid.uuid4().hex
    await anyio.to_thread.run_sync(_ctl, "add_user", user, password)
    try:
        await anyio.to_thread.run_sync(_ctl, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
        url = f"amqp://{user}:{password}@{BROKER_HOST}:{BROKER_PORT}//"
        recorder = Recorder()
        with anyio.fail_after(30):
            async with (
                anyio.create_task_group() as tg,
                trio_msg.connect(url, connection_name=unique_name, revive=FAST) as conn,
            ):
                await tg.start(recorder.run, conn)
                await _force_close(unique_name)
                await recorder.revived.wait()
                stats = conn.statistics()
    finally:
        await anyio.to_thread.run_sync(_ctl, "delete_user", user)

    where = f"vhost '/' ('{unique_name}')"
    info = messages(caplog, logging.INFO)
    opened = one(info, "connected to", where, "(incarnation 1)")
    assert "heartbeat 60 s, frame_max 131072, channel_max 2047" in opened
    one(info, "connected to", where, "(incarnation 2)")
    one(info, "reviving the connection")
    one(info, f"{where} revived after 1 attempt in ")
    one(info, f"{where} closed")
    (lost,) = messages(caplog, logging.WARNING)
    assert "lost (reviving): ConnectionForced: " in lost
    assert "observe test" in lost  # the reason given to rabbitmqctl

    lost_event, reviving, revived, closed = recorder.events
    assert isinstance(lost_event, Lost) and lost_event.reviving
    assert isinstance(lost_event.error, ConnectionForced)
    assert reviving == Reviving(1, 0.05, lost_event.error)
    assert isinstance(revived, Revived) and (revived.incarnation, revived.attempts) == (2, 1)
    assert closed == Closed(None)
    assert (stats.incarnation, stats.reconnects, stats.reconnect_attempts) == (2, 1, 1)
    assert stats.last_error is lost_event.error

    for record in caplog.records:
        assert password not in record.getMessage()
    assert password not in caplog.text


async def test_a_proxy_cut_is_lost_reviving_revived_in_the_events(
    proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_msg")
    recorder = Recorder()
    with anyio.fail_after(30):
        async with (
            anyio.create_task_group() as tg,
            trio_msg.connect(f"amqp://guest:guest@127.0.0.1:{proxy.port}//", revive=FAST) as conn,
        ):
            await tg.start(recorder.run, conn)
            assert proxy.cut() == 1
            await recorder.revived.wait()
            assert conn.statistics().state == "open"
    lost, *reviving, revived, closed = recorder.events
    assert isinstance(lost, Lost) and lost.reviving
    assert isinstance(lost.error, ConnectionLost)
    assert [event.attempt for event in reviving if isinstance(event, Reviving)] == list(
        range(1, len(reviving) + 1)
    )
    assert isinstance(revived, Revived) and revived.attempts == len(reviving)
    assert closed == Closed(None)
    (warning,) = messages(caplog, logging.WARNING)
    assert "lost (reviving): ConnectionLost: connection to the broker lost" in warning


async def test_a_forced_close_without_revive_is_a_warning(
    broker_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_msg")
    with anyio.fail_after(30), pytest.raises(ConnectionForced) as info:
        async with trio_msg.connect(broker_url, connection_name=unique_name, revive=False) as conn:
            await _force_close(unique_name)
            while conn.is_open:
                await anyio.sleep(0.01)
    (warning,) = messages(caplog, logging.WARNING)
    assert f"vhost '/' ('{unique_name}') lost (not reviving): ConnectionForced: " in warning
    assert conn.statistics().state == "closed"
    assert conn.statistics().last_error is info.value


async def test_a_consumer_cancelled_by_the_broker_is_a_warning(
    broker_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_msg")
    queue = Queue(unique_name, durable=False)
    async with trio_msg.connect(broker_url, revive=False) as conn:
        with pytest.raises(ConsumerCancelled):
            async with Consumer(conn, queues=[queue]) as consumer:
                async with trio_msg.connect(broker_url) as other, other.channel() as ch:
                    await ch.queue_delete(unique_name)
                with anyio.fail_after(10):
                    async for message in consumer:
                        pytest.fail(f"unexpected {message!r}")
        assert conn.is_open
    (warning,) = messages(caplog, logging.WARNING)
    assert warning.startswith("the broker cancelled consumer 'amq.ctag-")
    assert f"of queue {unique_name!r}" in warning


async def test_statistics_match_the_broker_and_nothing_is_logged_per_message(
    broker_url: str, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """50 published and confirmed, 3 returned (and confirmed), 2 nacked by a
    full queue; 30 delivered to a consumer with prefetch 30, 20 of them
    acked (10 one by one, 10 with one ack of multiple), 5 rejected and 5
    requeued: the queue keeps 50 - 20 - 5.  No INFO line for any of it."""
    caplog.set_level(logging.DEBUG, logger="trio_msg")
    queue = Queue(unique_name, durable=False)
    full = Queue(
        unique_name + ".full",
        durable=False,
        max_length=1,
        queue_arguments={"x-overflow": "reject-publish"},
    )
    try:
        async with trio_msg.connect(broker_url, revive=False) as conn:
            async with conn.channel() as ch:
                await queue.declare(channel=ch)
                await full.declare(channel=ch)
            async with Producer(conn) as producer:
                before = len(caplog.records)
                for i in range(50):
                    await producer.publish(i, routing_key=queue.name)
                for _ in range(3):
                    with pytest.raises(Unroutable):
                        await producer.publish(
                            "x", routing_key=unique_name + ".nowhere", mandatory=True
                        )
                await producer.publish("fits", routing_key=full.name)
                for _ in range(2):
                    with pytest.raises(MessageNacked):
                        await producer.publish("too many", routing_key=full.name)

            async with Consumer(conn, queues=[queue], prefetch_count=30) as consumer:
                with anyio.fail_after(10):
                    got = [await anext(consumer) for _ in range(30)]
                delivered = conn.statistics().delivered  # none settled: no more can come
                for message in got[:10]:
                    await message.ack()
                await got[19].ack(multiple=True)
                for message in got[20:25]:
                    await message.reject(requeue=False)
                for message in got[25:]:
                    await message.requeue()
            per_message = [r for r in caplog.records[before:] if r.levelno >= logging.INFO]
            debug = [r for r in caplog.records[before:] if r.levelno == logging.DEBUG]
            stats = conn.statistics()

            async with conn.channel() as ch:
                left = (await ch.queue_declare(queue.name, passive=True)).message_count
    finally:
        async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
            await ch.queue_delete(queue.name)
            await ch.queue_delete(full.name)

    assert left == 25
    assert delivered == 30
    assert (stats.published, stats.confirmed, stats.nacked, stats.unknown) == (56, 54, 2, 0)
    assert stats.returned == 3
    assert stats.acked == 20
    # Every delivery was settled: the 30, and whatever the broker sent once
    # the window opened, given back as the consumer left.
    assert stats.delivered >= 30
    assert stats.delivered == stats.acked + stats.rejected
    assert per_message == []
    assert len(debug) < 10  # channels opened and closed, not messages
