"""Producers and Consumers outlive channel errors, with the fake broker
choosing when a channel closes and over what: which publishes are refused,
which are unknown, what a new channel replays, and cancelled reopens."""

from __future__ import annotations

import anyio
import pytest

from trio_msg import Consumer, Outcome, Producer, Queue, RetryPolicy
from trio_msg.connection import connect
from trio_msg.errors import (
    MessageOutcomeUnknown,
    MessageStateError,
    NotFound,
    PreconditionFailed,
)

from .fake_broker import URL, FakeBroker

ACK, NACK, UNKNOWN = Outcome.ACK, Outcome.NACK, Outcome.UNKNOWN
PUBLISH = {"class_id": 60, "method_id": 40}  # the close names basic.publish
FAST = RetryPolicy(interval_start=0.01, interval_step=0.01, interval_max=0.05)


async def consumer_on_another_channel(broker: FakeBroker, old: int) -> str:
    """The tag of the consumer the broker registered on a channel other than
    *old* (it registers it just after the Basic.Consume frame is recorded)."""
    while True:
        for tag, (channel, _queue) in broker.consumers.items():
            if channel != old:
                return tag
        await anyio.wait_all_tasks_blocked()  # the broker has read what was sent


@pytest.mark.anyio
@pytest.mark.parametrize("revive", [False, True], ids=["plain", "revive"])
async def test_a_refused_publish_raises_then_a_new_channel_carries_on(
    broker: FakeBroker, revive: bool
) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL, revive=FAST if revive else False) as conn:
        async with Producer(conn) as producer:
            old = producer.channel.channel_id

            async def refuse() -> None:
                await broker.wait_published(1)
                await broker.close_channel(
                    old, 404, "NOT_FOUND - no exchange 'x' in vhost '/'", **PUBLISH
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(refuse)
                with anyio.fail_after(5), pytest.raises(NotFound):
                    await producer.publish(b"refused", exchange="x", routing_key="q")
            broker.auto_confirm = True
            with anyio.fail_after(5):
                result = await producer.publish(b"next", routing_key="q")
            assert result is not None and result.outcome is ACK
            new = producer.channel.channel_id
            assert new != old
            # The new channel was set up as the first: confirms on.
            assert [r.name for r in broker.received if r.channel == new][:2] == [
                "Channel.Open",
                "Confirm.Select",
            ]
            assert broker.published[-1].channel == new
        assert conn.is_open and conn.incarnation == 1


@pytest.mark.anyio
async def test_only_the_publishes_to_the_missing_exchange_are_refused(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, conn.channel() as ch:
        await ch.confirm_select()
        results = []
        for exchange in ["", "gone", "", "gone"]:
            result = await ch.basic_publish(b"m", exchange, "q")
            assert result is not None
            results.append(result)
        await broker.wait_published(4)
        await broker.confirm(ch.channel_id, 1)
        await broker.close_channel(
            ch.channel_id, 404, "NOT_FOUND - no exchange 'gone' in vhost '/'", **PUBLISH
        )
        with anyio.fail_after(5):
            for r in results:
                await r.wait()
        assert [r.outcome for r in results] == [ACK, NACK, UNKNOWN, NACK]
        assert all(isinstance(r.reason, NotFound) for r in results[1:])


@pytest.mark.anyio
async def test_several_unconfirmed_publishes_and_no_exchange_named_are_all_unknown(
    broker: FakeBroker,
) -> None:
    """A 406 over one of several publishes (which one, the broker does not
    say): none is claimed refused, none is retried."""
    broker.auto_confirm = False
    async with broker, connect(URL, revive=FAST) as conn, Producer(conn) as producer:
        cid = producer.channel.channel_id
        async with producer.pipeline(raise_on_failure=False) as pipe:
            for _ in range(3):
                await pipe.publish(b"m", routing_key="q", retry=True)
            await broker.wait_published(3)
            await broker.close_channel(
                cid, 406, "PRECONDITION_FAILED - invalid expiration", **PUBLISH
            )
        assert (pipe.unknown, pipe.republished) == (3, 0)
        assert all(isinstance(r.reason, PreconditionFailed) for r in pipe.failures)


@pytest.mark.anyio
@pytest.mark.parametrize("revive", [False, True], ids=["plain", "revive"])
async def test_a_pipelines_pending_confirms_resolve_when_its_channel_closes(
    broker: FakeBroker, revive: bool
) -> None:
    broker.auto_confirm = False
    async with (
        broker,
        connect(URL, revive=FAST if revive else False) as conn,
        Producer(conn) as producer,
    ):
        cid = producer.channel.channel_id
        with anyio.fail_after(5):
            async with producer.pipeline(100, raise_on_failure=False) as pipe:
                results = [await pipe.publish(b"m", routing_key="q") for _ in range(10)]
                await broker.wait_published(10)
                await broker.confirm(cid, 4, multiple=True)
                await broker.close_channel(cid, 406, "PRECONDITION_FAILED - something")
        assert [r.outcome for r in results] == [ACK] * 4 + [UNKNOWN] * 6
        assert (pipe.acked, pipe.unknown) == (4, 6)
        # The next pipeline publish goes out on a new channel.
        broker.auto_confirm = True
        with anyio.fail_after(5):
            async with producer.pipeline() as pipe:
                await pipe.publish(b"after", routing_key="q")
        assert pipe.acked == 1
        assert producer.channel.channel_id != cid


@pytest.mark.anyio
async def test_a_cancelled_reopen_leaves_the_producer_usable(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        old = producer.channel.channel_id
        async with anyio.create_task_group() as tg:

            async def refuse() -> None:
                await broker.wait_published(1)
                await broker.close_channel(old, 404, "NOT_FOUND - no exchange 'x'", **PUBLISH)

            tg.start_soon(refuse)
            with anyio.fail_after(5), pytest.raises(NotFound):
                await producer.publish(b"refused", exchange="x")
        broker.auto_confirm = True
        broker.hold.add("Channel.Open")
        opens, closes = broker.count("Channel.Open"), broker.count("Channel.Close")
        async with anyio.create_task_group() as tg:
            with anyio.move_on_after(5) as scope:

                async def cancel_once_opening() -> None:
                    await broker.wait_for("Channel.Open", opens + 1)
                    scope.cancel()
                    # The new channel is closed again: let the broker answer.
                    await broker.wait_for("Channel.Close", closes + 1)
                    broker.hold.clear()
                    await broker.release()

                tg.start_soon(cancel_once_opening)
                await producer.publish(b"cancelled", routing_key="q")
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            result = await producer.publish(b"next", routing_key="q")
        assert result is not None and result.outcome is ACK
        assert [p.body for p in broker.published] == [b"refused", b"next"]


@pytest.mark.anyio
async def test_a_consumer_raises_the_error_then_consumes_on_a_new_channel(
    broker: FakeBroker,
) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        (tag,) = broker.consumers
        old, _queue = broker.consumers[tag]
        await broker.deliver(tag, b"one")
        with anyio.fail_after(5):
            message = await consumer.__anext__()
        await broker.close_channel(old, 406, "PRECONDITION_FAILED - unknown delivery tag 9")
        with pytest.raises(PreconditionFailed), anyio.fail_after(5):
            await consumer.__anext__()
        with pytest.raises(MessageStateError):
            await message.ack()  # its tag died with the old channel
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def deliver_on_the_new_consumer() -> None:
                    new_tag = await consumer_on_another_channel(broker, old)
                    await broker.deliver(new_tag, b"one", redelivered=True)

                tg.start_soon(deliver_on_the_new_consumer)
                again = await consumer.__anext__()
        assert again.body == b"one" and again.delivery_info["redelivered"]
        new = consumer.channel.channel_id
        assert new != old
        names = [r.name for r in broker.received if r.channel == new]
        assert names[:4] == ["Channel.Open", "Queue.Declare", "Basic.Qos", "Basic.Consume"]
        assert broker.frames("Basic.Qos")[-1].prefetch_count == 10
        await again.ack()
        await broker.wait_for("Basic.Ack")
        assert broker.acked(new) == [1]
        assert conn.is_open


@pytest.mark.anyio
async def test_a_cancelled_consumer_reopen_is_taken_up_by_the_next_iteration(
    broker: FakeBroker,
) -> None:
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=10) as consumer,
    ):
        (tag,) = broker.consumers
        old, _queue = broker.consumers[tag]
        await broker.close_channel(old, 404, "NOT_FOUND - no queue 'q'", class_id=60, method_id=20)
        with pytest.raises(NotFound), anyio.fail_after(5):
            await consumer.__anext__()
        broker.hold.add("Basic.Consume")
        closes = broker.count("Channel.Close")
        async with anyio.create_task_group() as tg:
            with anyio.move_on_after(5) as scope:

                async def cancel_once_consuming() -> None:
                    await broker.wait_for("Basic.Consume", 2)
                    scope.cancel()
                    # The new channel is closed again: let the broker answer.
                    await broker.wait_for("Channel.Close", closes + 1)
                    broker.hold.clear()
                    await broker.release()

                tg.start_soon(cancel_once_consuming)
                await consumer.__anext__()
        assert scope.cancelled_caught
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def deliver_when_consuming() -> None:
                    await broker.wait_for("Basic.Consume", 3)
                    new_tag = await consumer_on_another_channel(broker, old)
                    await broker.deliver(new_tag, b"later")

                tg.start_soon(deliver_when_consuming)
                message = await consumer.__anext__()
        assert message.body == b"later"
        assert conn.is_open


@pytest.mark.anyio
async def test_a_bystanders_unknown_outcome_is_retried_on_a_new_channel(
    broker: FakeBroker,
) -> None:
    """Another task's redeclare closes the channel under a publish waiting
    for its confirm: with retry=True it is published again on a new one."""
    broker.auto_confirm = False
    async with broker, connect(URL, revive=FAST) as conn, Producer(conn) as producer:
        cid = producer.channel.channel_id
        async with anyio.create_task_group() as tg:

            async def close_over_a_declare() -> None:
                await broker.wait_published(1)
                broker.auto_confirm = True
                await broker.close_channel(
                    cid, 406, "PRECONDITION_FAILED - inequivalent arg", class_id=50, method_id=10
                )

            tg.start_soon(close_over_a_declare)
            with anyio.fail_after(5):
                result = await producer.publish(b"m", routing_key="q", retry=True)
        assert result is not None and result.outcome is ACK
        assert [p.channel for p in broker.published] == [cid, producer.channel.channel_id]
        assert producer.channel.channel_id != cid
        # Without retry, the same is unknown.
        broker.auto_confirm = False
        cid = producer.channel.channel_id
        async with anyio.create_task_group() as tg:

            async def close_again() -> None:
                await broker.wait_published(3)
                await broker.close_channel(
                    cid, 406, "PRECONDITION_FAILED", class_id=50, method_id=10
                )

            tg.start_soon(close_again)
            with anyio.fail_after(5), pytest.raises(MessageOutcomeUnknown) as info:
                await producer.publish(b"m", routing_key="q")
        assert isinstance(info.value.reason, PreconditionFailed)


@pytest.mark.anyio
async def test_a_consumer_on_a_callers_channel_keeps_raising_until_revived(
    broker: FakeBroker,
) -> None:
    async with broker, connect(URL) as conn:
        ch = await conn.open_channel()
        async with Consumer(ch, queues=[Queue("q")]) as consumer:
            await broker.close_channel(ch.channel_id, 406, "PRECONDITION_FAILED")
            for _ in range(2):  # the channel is the caller's: no new one
                with pytest.raises(PreconditionFailed), anyio.fail_after(5):
                    await consumer.__anext__()
            assert consumer.channel is ch
            assert broker.count("Channel.Open") == 1
            fresh = await conn.open_channel()
            await consumer.revive(fresh)
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:

                    async def deliver() -> None:
                        tag = await consumer_on_another_channel(broker, ch.channel_id)
                        await broker.deliver(tag, b"again")

                    tg.start_soon(deliver)
                    message = await consumer.__anext__()
            assert message.body == b"again"
            await fresh.aclose()
