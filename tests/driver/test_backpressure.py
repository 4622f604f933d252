"""Back-pressure on publishers: a full outbound buffer (the broker stopped
reading), ``connection.blocked`` and ``channel.flow`` make ``basic_publish``
wait, cancellably; a cancelled publish queues nothing."""

from __future__ import annotations

import anyio
import pytest
from pamqp import commands as C

from trio_msg import Producer
from trio_msg._pump import HIGH_WATER
from trio_msg.channel import Channel
from trio_msg.connection import connect
from trio_msg.errors import ConnectionForced

from .fake_broker import URL, FakeBroker

BODY = 64 * 1024


def body(i: int) -> bytes:
    return b"%06d" % i + b"." * (BODY - 6)


def numbers(broker: FakeBroker) -> list[int]:
    return [int(p.body[:6]) for p in broker.published]


async def settle() -> None:
    """Let every task run until it waits on something outside it."""
    await anyio.wait_all_tasks_blocked()


class Publisher:
    """Publishes numbered messages in a task and counts those queued."""

    def __init__(self, ch: Channel, total: int) -> None:
        self.ch = ch
        self.total = total
        self.queued = 0
        self.done = anyio.Event()

    async def run(self) -> None:
        for i in range(self.total):
            await self.ch.basic_publish(body(i), "", "q")
            self.queued += 1
        self.done.set()


async def wait_writable_again(ch: Channel) -> None:
    with anyio.fail_after(5):
        await ch.wait_for_room()  # the port a Producer waits on


@pytest.mark.anyio
async def test_publisher_waits_above_high_water_and_resumes(broker: FakeBroker) -> None:
    total = 3 * HIGH_WATER // BODY
    async with broker, connect(URL) as conn, conn.channel() as ch:
        broker.pause_reading()
        publisher = Publisher(ch, total)
        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher.run)
            await settle()
            assert not publisher.done.is_set()
            # It stopped at the mark, not before: what the broker has not
            # read is over HIGH_WATER.
            stalled_at = publisher.queued
            assert HIGH_WATER // BODY < stalled_at < total
            assert not ch.has_room()
            await settle()
            assert publisher.queued == stalled_at  # really waiting, not slow

            broker.resume_reading()
            with anyio.fail_after(5):
                await publisher.done.wait()
            await broker.wait_published(total)
    assert numbers(broker) == list(range(total))


@pytest.mark.anyio
async def test_several_waiting_publishers_all_resume(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn, conn.channel() as ch:
        broker.pause_reading()
        filler = Publisher(ch, 2 * HIGH_WATER // BODY)
        async with anyio.create_task_group() as tg:
            tg.start_soon(filler.run)
            await settle()
            assert not filler.done.is_set()
            resumed: list[int] = []

            async def one(i: int) -> None:
                await ch.basic_publish(body(1000 + i), "", "q")
                resumed.append(i)

            for i in range(5):
                tg.start_soon(one, i)
            await settle()
            assert resumed == []
            broker.resume_reading()
        assert sorted(resumed) == list(range(5))
        assert filler.done.is_set()
    assert sorted(numbers(broker))[-5:] == [1000, 1001, 1002, 1003, 1004]


@pytest.mark.anyio
async def test_cancelled_waiting_publisher_queues_nothing(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn, conn.channel() as ch:
        broker.pause_reading()
        filler = Publisher(ch, 2 * HIGH_WATER // BODY)
        async with anyio.create_task_group() as tg:
            tg.start_soon(filler.run)
            await settle()
            queued = filler.queued
            assert not ch.has_room()

            with anyio.move_on_after(0.05) as scope:
                await ch.basic_publish(body(999_999), "", "q")
                pytest.fail("published over the high-water mark")
            assert scope.cancelled_caught  # (and never reaches the broker: below)
            tg.cancel_scope.cancel()  # the filler too, while it waits
        assert filler.queued == queued

        broker.resume_reading()
        await wait_writable_again(ch)
        await ch.basic_publish(body(424_242), "", "q")
        await ch.queue_declare("sync")  # after every publish on the wire
        assert ch.is_open
    # Exactly the publishes that returned, in order, then the one after.
    assert numbers(broker) == [*range(queued), 424_242]


# --- connection.blocked --------------------------------------------------------------


@pytest.mark.anyio
async def test_connection_blocked_holds_publishers_until_unblocked(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn:
        producer_channel = await conn.open_channel()
        async with conn.channel() as ch, Producer(producer_channel) as producer:
            await broker.send(0, C.Connection.Blocked(reason="low on memory"))
            await settle()
            assert conn.blocked
            done: list[str] = []

            async def plain() -> None:
                await ch.basic_publish(b"plain", "", "q")
                done.append("plain")

            async def confirmed() -> None:
                await producer.publish(b"confirmed", routing_key="q")
                done.append("confirmed")

            async with anyio.create_task_group() as tg:
                tg.start_soon(plain)
                tg.start_soon(confirmed)
                await settle()
                assert done == []
                assert broker.published == []
                await broker.send(0, C.Connection.Unblocked())
            assert sorted(done) == ["confirmed", "plain"]
            assert not conn.blocked
        await producer_channel.aclose()
    assert sorted(p.body for p in broker.published) == [b"confirmed", b"plain"]


@pytest.mark.anyio
async def test_blocked_publisher_is_cancellable(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn, conn.channel() as ch:
        await broker.send(0, C.Connection.Blocked(reason="disk"))
        await settle()
        with anyio.move_on_after(0.05) as scope:
            await ch.basic_publish(b"cancelled", "", "q")
        assert scope.cancelled_caught
        await broker.send(0, C.Connection.Unblocked())
        await settle()
        await ch.basic_publish(b"after", "", "q")
        await ch.queue_declare("sync")
    assert [p.body for p in broker.published] == [b"after"]


@pytest.mark.anyio
async def test_connection_closed_while_blocked_fails_the_publisher(broker: FakeBroker) -> None:
    errors: list[BaseException] = []
    async with broker:
        with pytest.raises(ConnectionForced) as info:
            async with connect(URL, revive=False) as conn, conn.channel() as ch:
                await broker.send(0, C.Connection.Blocked(reason="memory"))
                await settle()

                async def publish() -> None:
                    try:
                        await ch.basic_publish(b"never", "", "q")
                    except ConnectionForced as exc:
                        errors.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(publish)
                    await settle()
                    with anyio.fail_after(5):
                        await broker.close_connection(320, "operator says no")
    assert errors == [info.value]
    assert broker.published == []
    assert "Connection.CloseOk" in broker.names()


# --- channel.flow --------------------------------------------------------------------


@pytest.mark.anyio
async def test_channel_flow_pauses_publishing_on_that_channel(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn, conn.channel() as paused, conn.channel() as other:
        await broker.send(paused.channel_id, C.Channel.Flow(active=False))
        await settle()
        done = anyio.Event()

        async def publish() -> None:
            await paused.basic_publish(b"paused", "", "q")
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish)
            await settle()
            assert not done.is_set()
            await other.basic_publish(b"other", "", "q")  # not affected
            await broker.wait_published(1)
            await broker.send(paused.channel_id, C.Channel.Flow(active=True))
        assert done.is_set()
        await broker.wait_published(2)
    assert [p.body for p in broker.published] == [b"other", b"paused"]
    flow_oks = broker.frames("Channel.FlowOk")
    assert [f.active for f in flow_oks] == [False, True]
