"""Publisher confirms, with the fake broker choosing when and how to answer:
out of order, ``multiple``, nacks, returns, and channels or connections that
go away first (the outcome is then unknown)."""

from __future__ import annotations

import anyio
import pytest
from pamqp import commands as C
from protocol.peer import build, content_frames

from trio_msg import Outcome, Producer
from trio_msg.channel import Channel, PublishResult
from trio_msg.connection import connect
from trio_msg.errors import (
    ConnectionLost,
    MessageNacked,
    MessageOutcomeUnknown,
    NotFound,
    PipelineFailed,
    Unroutable,
)

from .fake_broker import URL, FakeBroker


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


async def publish_n(ch: Channel, n: int) -> list[PublishResult]:
    results = []
    for i in range(n):
        result = await ch.basic_publish(b"m%d" % i, "", "q")
        assert result is not None
        results.append(result)
    return results


def outcomes(results: list[PublishResult]) -> list[Outcome | None]:
    return [r.outcome for r in results]


ACK, NACK, UNKNOWN = Outcome.ACK, Outcome.NACK, Outcome.UNKNOWN


@pytest.mark.anyio
async def test_out_of_order_acks_resolve_each_publish(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, conn.channel() as ch:
        await ch.confirm_select()
        results = await publish_n(ch, 4)
        await broker.wait_published(4)
        assert [p.tag for p in broker.published] == [1, 2, 3, 4]
        assert [r.delivery_tag for r in results] == [1, 2, 3, 4]
        cid = ch.channel_id
        await broker.confirm(cid, 3)
        with anyio.fail_after(5):
            assert await results[2].wait() is ACK
        assert outcomes(results) == [None, None, ACK, None]
        await broker.confirm(cid, 1, nack=True)
        with anyio.fail_after(5):
            assert await results[0].wait() is NACK
        await broker.confirm(cid, 4)
        await broker.confirm(cid, 2)
        with anyio.fail_after(5):
            assert await results[1].wait() is ACK
        assert outcomes(results) == [NACK, ACK, ACK, ACK]


@pytest.mark.anyio
async def test_multiple_acks_resolve_everything_up_to_the_tag(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, conn.channel() as ch:
        await ch.confirm_select()
        results = await publish_n(ch, 6)
        await broker.wait_published(6)
        cid = ch.channel_id
        await broker.confirm(cid, 2)  # one out of order first
        await broker.confirm(cid, 4, multiple=True)
        with anyio.fail_after(5):
            await results[3].wait()
        assert outcomes(results) == [ACK, ACK, ACK, ACK, None, None]
        await broker.confirm(cid, 6, multiple=True, nack=True)
        with anyio.fail_after(5):
            await results[5].wait()
        assert outcomes(results) == [ACK, ACK, ACK, ACK, NACK, NACK]


@pytest.mark.anyio
async def test_nack_raises_message_nacked(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        cid = producer.channel.channel_id
        async with anyio.create_task_group() as tg:

            async def nack_it() -> None:
                await broker.wait_published(1)
                await broker.confirm(cid, 1, nack=True)

            tg.start_soon(nack_it)
            with pytest.raises(MessageNacked), anyio.fail_after(5):
                await producer.publish(b"refused", routing_key="q")
        # The channel is still good for the next one.
        broker.auto_confirm = True
        result = await producer.publish(b"fine", routing_key="q")
        assert result is not None and result.outcome is ACK


@pytest.mark.anyio
async def test_channel_closed_before_the_confirm_is_unknown(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn:
        async with Producer(conn) as producer:
            cid = producer.channel.channel_id
            async with anyio.create_task_group() as tg:

                async def close_it() -> None:
                    await broker.wait_published(1)
                    await broker.close_channel(cid, 404, "NOT_FOUND - no exchange 'x'")

                tg.start_soon(close_it)
                with pytest.raises(MessageOutcomeUnknown) as info, anyio.fail_after(5):
                    await producer.publish(b"lost", exchange="x", routing_key="q")
            assert "NOT_FOUND" in str(info.value)
            assert isinstance(producer.channel.error, NotFound)
        assert conn.is_open


@pytest.mark.anyio
async def test_plain_results_resolve_unknown_when_the_channel_closes(
    broker: FakeBroker,
) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn:
        ch = await conn.open_channel()
        await ch.confirm_select()
        results = await publish_n(ch, 3)
        await broker.wait_published(3)
        await broker.confirm(ch.channel_id, 1)
        await broker.close_channel(ch.channel_id, 406, "PRECONDITION_FAILED")
        with anyio.fail_after(5):
            for r in results:
                await r.wait()
        assert outcomes(results) == [ACK, UNKNOWN, UNKNOWN]


@pytest.mark.anyio
async def test_connection_lost_before_the_confirm_is_unknown(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    errors: list[BaseException] = []
    async with broker:
        with pytest.raises(ConnectionLost) as info:
            async with connect(URL, revive=False) as conn, Producer(conn) as producer:

                async def publish() -> None:
                    try:
                        await producer.publish(b"lost", routing_key="q")
                    except MessageOutcomeUnknown as exc:
                        errors.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(publish)
                    await broker.wait_published(1)
                    await broker.hang_up()
    assert type(info.value) is ConnectionLost
    assert len(errors) == 1


@pytest.mark.anyio
async def test_return_before_ack_raises_unroutable(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        cid = producer.channel.channel_id

        async def answer() -> None:
            await broker.wait_published(1)
            published = broker.published[0]
            method = build(
                C.Basic.Return,
                reply_code=312,
                reply_text="NO_ROUTE",
                exchange=published.method.exchange,
                routing_key=published.method.routing_key,
            )
            await broker.send_raw(b"".join(content_frames(cid, method, published.body)))
            await broker.confirm(cid, 1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            with pytest.raises(Unroutable) as info, anyio.fail_after(5):
                await producer.publish(b"nowhere", routing_key="nobody", mandatory=True)
        error = info.value
        assert error.reply_code == 312 and error.routing_key == "nobody"
        assert error.message is not None and error.message.body == b"nowhere"


# --- the pipeline window ---------------------------------------------------------------


@pytest.mark.anyio
async def test_pipeline_waits_while_the_window_is_full(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        cid = producer.channel.channel_id
        async with producer.pipeline(max_unconfirmed=3, raise_on_failure=False) as pipe:
            for i in range(3):
                await pipe.publish(b"%d" % i, routing_key="q")
            assert pipe.pending == 3
            queued: list[int] = []

            async def fourth() -> None:
                await pipe.publish(b"3", routing_key="q")
                queued.append(3)

            async with anyio.create_task_group() as tg:
                tg.start_soon(fourth)
                await broker.wait_published(3)
                await settle()
                assert queued == []
                assert len(broker.published) == 3
                await broker.confirm(cid, 1)
            assert queued == [3]
            await broker.wait_published(4)
            await broker.confirm(cid, 2, nack=True)
            await broker.confirm(cid, 4, multiple=True)
        assert (pipe.acked, pipe.nacked, pipe.unknown) == (3, 1, 0)
        assert [r.delivery_tag for r in pipe.failures] == [2]


@pytest.mark.anyio
async def test_pipeline_publish_waiting_for_room_is_cancellable(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        cid = producer.channel.channel_id
        async with producer.pipeline(max_unconfirmed=2) as pipe:
            await pipe.publish(b"0", routing_key="q")
            await pipe.publish(b"1", routing_key="q")
            with anyio.move_on_after(0.05) as scope:
                await pipe.publish(b"cancelled", routing_key="q")
            assert scope.cancelled_caught
            assert pipe.pending == 2
            await broker.confirm(cid, 2, multiple=True)
            await pipe.publish(b"2", routing_key="q")
            await broker.wait_published(3)
            await broker.confirm(cid, 3)
        assert pipe.acked == 3
    assert [p.body for p in broker.published] == [b"0", b"1", b"2"]


@pytest.mark.anyio
async def test_pipeline_counts_unknown_outcomes(broker: FakeBroker) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        cid = producer.channel.channel_id
        async with producer.pipeline(max_unconfirmed=10, raise_on_failure=False) as pipe:
            for i in range(4):
                await pipe.publish(b"%d" % i, routing_key="q")
            await broker.wait_published(4)
            await broker.confirm(cid, 1)
            await broker.close_channel(cid, 406, "PRECONDITION_FAILED")
        assert (pipe.acked, pipe.nacked, pipe.unknown) == (1, 0, 3)


@pytest.mark.anyio
async def test_leaving_a_pipeline_with_a_nacked_message_raises(broker: FakeBroker) -> None:
    """No nack goes unnoticed: the block raises PipelineFailed, with the
    failed results and the counts; the acked ones are not in it."""
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        cid = producer.channel.channel_id
        with pytest.raises(PipelineFailed, match=r"1 of 3 .* 1 nacked") as info:
            async with producer.pipeline(max_unconfirmed=10) as pipe:
                results = [await pipe.publish(b"%d" % i, routing_key="q") for i in range(3)]
                await broker.wait_published(3)
                await broker.confirm(cid, 1)
                await broker.confirm(cid, 2, nack=True)
                await broker.confirm(cid, 3)
        error = info.value
        assert error.failures == [results[1]]
        assert results[1].outcome is Outcome.NACK
        assert (error.acked, error.nacked, error.unknown, error.returned) == (2, 1, 0, 0)
        # The producer goes on.
        broker.auto_confirm = True
        async with producer.pipeline() as pipe:
            await pipe.publish(b"after", routing_key="q")
        assert pipe.acked == 1
