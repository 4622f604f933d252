"""Channel operations against the real broker, on trio and asyncio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from trio_msg._protocol.events import Delivery, Outcome, Returned
from trio_msg._protocol.frames import BasicProperties
from trio_msg.channel import Channel, PublishResult
from trio_msg.connection import Connection, connect
from trio_msg.errors import (
    ChannelClosed,
    LocalProtocolError,
    NotFound,
    NotSupported,
    PreconditionFailed,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def conn(broker_url: str, anyio_backend: str) -> AsyncIterator[Connection]:
    async with connect(broker_url) as c:
        yield c


@pytest.fixture
async def ch(conn: Connection) -> AsyncIterator[Channel]:
    async with conn.channel() as c:
        yield c


async def _count(conn: Connection, queue: str) -> tuple[int, int]:
    """(messages, consumers) of ``queue``, asked on a fresh channel."""
    async with conn.channel() as c:
        ok = await c.queue_declare(queue, passive=True)
        return ok.message_count, ok.consumer_count


def _blocked(conn: Connection) -> bool:
    return conn.blocked


async def _publish_confirmed(
    ch: Channel, body: bytes, exchange: str = "", routing_key: str = "", **kw: Any
) -> PublishResult:
    await ch.confirm_select()
    result = await ch.basic_publish(body, exchange, routing_key, **kw)
    assert isinstance(result, PublishResult)
    with anyio.fail_after(5):
        assert await result.wait() is Outcome.ACK
    return result


# --------------------------------------------------------------- topology


async def test_queue_and_exchange_lifecycle(
    conn: Connection, ch: Channel, unique_name: str
) -> None:
    q, ex = f"{unique_name}.q", f"{unique_name}.x"
    ok = await ch.queue_declare(q, durable=False)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    await ch.exchange_declare(ex, "direct", durable=False)
    try:
        await ch.exchange_declare(ex, "direct", durable=False, passive=True)
        await ch.queue_bind(q, ex, "rk")
        await _publish_confirmed(ch, b"one", ex, "rk")
        await _publish_confirmed(ch, b"other key", ex, "nope")
        assert await _count(conn, q) == (1, 0)

        await ch.queue_unbind(q, ex, "rk")
        await _publish_confirmed(ch, b"after unbind", ex, "rk")
        assert await _count(conn, q) == (1, 0)

        await _publish_confirmed(ch, b"two", "", q)
        assert await ch.queue_purge(q) == 2
        assert await _count(conn, q) == (0, 0)
        await _publish_confirmed(ch, b"three", "", q)
    finally:
        await ch.exchange_delete(ex)
        assert await ch.queue_delete(q) == 1
    async with conn.channel() as c:
        with pytest.raises(NotFound):
            await c.exchange_declare(ex, passive=True)
    async with conn.channel() as c:
        with pytest.raises(NotFound):
            await c.queue_declare(q, passive=True)


async def test_exchange_to_exchange_binding(
    conn: Connection, ch: Channel, unique_name: str
) -> None:
    src, dst = f"{unique_name}.src", f"{unique_name}.dst"
    q = (await ch.queue_declare("", exclusive=True)).queue
    await ch.exchange_declare(src, "fanout", durable=False)
    await ch.exchange_declare(dst, "direct", durable=False)
    try:
        await ch.queue_bind(q, dst, "k")
        await ch.exchange_bind(dst, src, "ignored by fanout")
        await _publish_confirmed(ch, b"via src", src, "k")
        assert await _count(conn, q) == (1, 0)
        msg = await ch.basic_get(q, no_ack=True)
        assert msg is not None
        assert msg.body == b"via src"
        assert msg.exchange == src

        await ch.exchange_unbind(dst, src, "ignored by fanout")
        await _publish_confirmed(ch, b"not routed", src, "k")
        assert await _count(conn, q) == (0, 0)
    finally:
        await ch.exchange_delete(src)
        await ch.exchange_delete(dst)


async def test_server_named_queue(ch: Channel) -> None:
    ok = await ch.queue_declare("", exclusive=True, durable=False)
    assert ok.queue.startswith("amq.gen-")
    again = await ch.queue_declare(ok.queue, passive=True)
    assert again.queue == ok.queue


async def test_unicode_and_spaces_in_names(conn: Connection, ch: Channel, unique_name: str) -> None:
    q = f"{unique_name} quëue ☃ 名前"
    ex = f"{unique_name} exchänge ✉"
    key = "routing key ✓ with spaces"
    await ch.queue_declare(q, durable=False, auto_delete=True)
    await ch.exchange_declare(ex, "direct", durable=False, auto_delete=True)
    try:
        await ch.queue_bind(q, ex, key)
        await _publish_confirmed(ch, "bödy ☃".encode(), ex, key)
        msg = await ch.basic_get(q, no_ack=True)
        assert msg is not None
        assert msg.body.decode() == "bödy ☃"
        assert msg.routing_key == key
        assert msg.exchange == ex
    finally:
        await ch.exchange_delete(ex)
        await ch.queue_delete(q)


async def test_passive_declare_of_a_missing_queue(
    conn: Connection, ch: Channel, unique_name: str
) -> None:
    with pytest.raises(NotFound) as info:
        await ch.queue_declare(unique_name, passive=True)
    exc = info.value
    assert exc.reply_code == 404
    assert exc.by_peer
    assert unique_name in exc.reply_text
    assert not ch.is_open
    assert ch.error is exc
    # the closed channel keeps saying why
    with pytest.raises(NotFound):
        await ch.queue_declare("", exclusive=True)
    with pytest.raises(NotFound):
        await ch.basic_publish(b"x", "", "anything")
    # ... and the connection is unharmed
    assert conn.is_open
    async with conn.channel() as other:
        ok = await other.queue_declare("", exclusive=True)
        assert ok.message_count == 0


async def test_redeclare_with_different_arguments(conn: Connection, unique_name: str) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare(unique_name, durable=False, auto_delete=True)
        with pytest.raises(PreconditionFailed) as info:
            await ch.queue_declare(
                unique_name, durable=False, auto_delete=True, arguments={"x-max-length": 10}
            )
        assert info.value.reply_code == 406
        assert not ch.is_open
    async with conn.channel() as ch:
        await ch.exchange_declare(unique_name, "direct", durable=False, auto_delete=True)
        with pytest.raises(PreconditionFailed):
            await ch.exchange_declare(unique_name, "fanout", durable=False, auto_delete=True)
    async with conn.channel() as ch:
        await ch.exchange_delete(unique_name)
        await ch.queue_delete(unique_name)


# ---------------------------------------------------------------- getting


async def test_basic_get(conn: Connection, ch: Channel) -> None:
    q = (await ch.queue_declare("", exclusive=True)).queue
    assert await ch.basic_get(q) is None
    props = BasicProperties(
        content_type="text/plain",
        headers={"k": "v", "n": 3},
        message_id="m-1",
        delivery_mode=2,
    )
    await _publish_confirmed(ch, b"first", "", q, properties=props)
    await _publish_confirmed(ch, b"second", "", q)

    msg = await ch.basic_get(q)
    assert msg is not None
    assert msg.body == b"first"
    assert msg.content_type == "text/plain"
    assert msg.headers == {"k": "v", "n": 3}
    assert msg.properties["message_id"] == "m-1"
    assert msg.routing_key == q
    assert not msg.redelivered
    await msg.reject(requeue=True)

    again = await ch.basic_get(q)
    assert again is not None
    assert again.body == b"first"
    assert again.redelivered
    await again.ack()
    second = await ch.basic_get(q, no_ack=True)
    assert second is not None and second.body == b"second"
    assert await ch.basic_get(q) is None
    assert await _count(conn, q) == (0, 0)


async def test_basic_qos_and_unsupported_options(ch: Channel) -> None:
    await ch.basic_qos(prefetch_count=5)
    await ch.basic_qos(prefetch_count=0, global_=True)
    with pytest.raises(NotSupported):
        await ch.basic_qos(prefetch_size=1)
    with pytest.raises(NotSupported):
        await ch.flow(False)
    with pytest.raises(NotSupported):
        await ch.basic_publish(b"x", "", "q", immediate=True)
    with pytest.raises(NotSupported):
        await ch.basic_recover(requeue=False)
    # none of these reached the broker: the channel is fine
    assert ch.is_open
    await ch.flow(True)
    await ch.basic_recover(requeue=True)
    await ch.queue_declare("", exclusive=True)


async def test_consume_and_cancel(conn: Connection, ch: Channel) -> None:
    q = (await ch.queue_declare("", exclusive=True)).queue
    send, receive = anyio.create_memory_object_stream[Delivery](10)
    tag = await ch.basic_consume(q, send, no_ack=True, consumer_tag="my-consumer ☃")
    assert tag == "my-consumer ☃"
    assert await _count(conn, q) == (0, 1)
    for i in range(3):
        await ch.basic_publish(f"m{i}".encode(), "", q)
    with anyio.fail_after(5):
        got = [await receive.receive() for _ in range(3)]
    assert [d.body for d in got] == [b"m0", b"m1", b"m2"]
    assert all(d.consumer_tag == tag for d in got)
    await ch.basic_cancel(tag)
    with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
        await receive.receive()  # the sink is closed by the cancel
    assert await _count(conn, q) == (0, 0)


async def test_server_cancels_a_consumer_when_its_queue_goes(
    conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.queue_declare(unique_name, durable=False, auto_delete=False)
    send, receive = anyio.create_memory_object_stream[Delivery](10)
    errors: list[Exception] = []
    await ch.basic_consume(unique_name, send, on_cancel=errors.append)
    async with conn.channel() as other:
        await other.queue_delete(unique_name)
    with anyio.fail_after(5):
        async for _ in receive:
            pytest.fail("no message was published")
    assert len(errors) == 1
    assert ch.is_open
    await ch.queue_declare("", exclusive=True)


# ------------------------------------------------------------- publishing


async def test_confirm_select_and_publish_ack(conn: Connection, ch: Channel) -> None:
    q = (await ch.queue_declare("", exclusive=True)).queue
    was_confirming = ch.confirming
    assert not was_confirming
    assert await ch.basic_publish(b"unconfirmed", "", q) is None
    await ch.confirm_select()
    assert ch.confirming
    await ch.confirm_select()  # idempotent
    results = [await ch.basic_publish(f"{i}".encode(), "", q) for i in range(5)]
    assert all(isinstance(r, PublishResult) for r in results)
    assert [r.delivery_tag for r in results if r] == [1, 2, 3, 4, 5]
    with anyio.fail_after(5):
        for r in results:
            assert r is not None
            assert await r.wait() is Outcome.ACK
            assert r.done and r.returned is None
            assert await r.wait() is Outcome.ACK  # again: already known
    assert await _count(conn, q) == (6, 0)
    with pytest.raises(LocalProtocolError):
        await ch.tx_select()  # confirm mode and transactions exclude each other


async def test_publish_to_a_missing_exchange_in_confirm_mode(
    conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.confirm_select()
    result = await ch.basic_publish(b"lost", unique_name, "rk")
    assert result is not None
    with anyio.fail_after(5):
        # Refused by closing the channel over it: known not routed.
        assert await result.wait() is Outcome.NACK
    assert result.reason is ch.error
    assert not ch.is_open
    assert isinstance(ch.error, NotFound)
    assert unique_name in ch.error.reply_text
    async with conn.channel() as other:
        await other.queue_declare("", exclusive=True)


async def test_mandatory_unroutable_publish(
    conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.exchange_declare(unique_name, "direct", durable=False, auto_delete=True)
    try:
        await ch.confirm_select()
        result = await ch.basic_publish(b"nobody home", unique_name, "no.route", mandatory=True)
        assert result is not None
        routed = await ch.basic_publish(b"not mandatory", unique_name, "no.route")
        assert routed is not None
        with anyio.fail_after(5):
            assert await result.wait() is Outcome.ACK
            assert await routed.wait() is Outcome.ACK
        returned = result.returned
        assert isinstance(returned, Returned)
        assert returned.reply_code == 312
        assert returned.body == b"nobody home"
        assert returned.exchange == unique_name
        assert returned.routing_key == "no.route"
        assert routed.returned is None
        assert ch.is_open
    finally:
        await ch.exchange_delete(unique_name)


async def test_mandatory_return_without_confirms(conn: Connection, ch: Channel) -> None:
    seen: list[Returned] = []
    await ch.basic_publish(b"a", "", "no such queue ☃", mandatory=True)
    await ch.queue_declare("", exclusive=True)  # the return comes before this reply
    [first] = list(ch.returns)
    assert first.publish_tag is None
    assert first.routing_key == "no such queue ☃"
    ch.on_return = seen.append
    await ch.basic_publish(b"b", "", "no such queue ☃", mandatory=True)
    await ch.queue_declare("", exclusive=True)
    assert [r.body for r in seen] == [b"b"]
    assert len(ch.returns) == 1


async def test_transactions(conn: Connection, ch: Channel) -> None:
    q = (await ch.queue_declare("", exclusive=True)).queue
    await ch.tx_select()
    await ch.basic_publish(b"committed", "", q)
    await ch.tx_commit()
    assert await _count(conn, q) == (1, 0)
    await ch.basic_publish(b"rolled back", "", q)
    await ch.tx_rollback()
    await ch.basic_publish(b"committed too", "", q)
    await ch.tx_commit()
    bodies = []
    while (msg := await ch.basic_get(q, no_ack=True)) is not None:
        bodies.append(msg.body)
    assert bodies == [b"committed", b"committed too"]
    with pytest.raises(LocalProtocolError):
        await ch.confirm_select()
    assert ch.is_open


async def test_large_body_round_trip(conn: Connection, ch: Channel) -> None:
    q = (await ch.queue_declare("", exclusive=True)).queue
    body = bytes(range(256)) * (5 * 1024 * 4) + b"tail"  # 5 MiB + 4
    assert len(body) > 40 * conn.frame_max
    await _publish_confirmed(ch, body, "", q, properties=BasicProperties(message_id="big"))
    with anyio.fail_after(10):
        msg = await ch.basic_get(q, no_ack=True)
    assert msg is not None
    assert msg.properties["message_id"] == "big"
    assert len(msg.body) == len(body)
    assert msg.body == body
    # and through a consumer
    await _publish_confirmed(ch, body, "", q)
    send, receive = anyio.create_memory_object_stream[Delivery](1)
    await ch.basic_consume(q, send, no_ack=True)
    with anyio.fail_after(10):
        delivery = await receive.receive()
    assert delivery.body == body


async def test_empty_body(ch: Channel) -> None:
    q = (await ch.queue_declare("", exclusive=True)).queue
    await _publish_confirmed(ch, b"", "", q)
    msg = await ch.basic_get(q, no_ack=True)
    assert msg is not None and msg.body == b""


async def test_channel_close_and_reopen(conn: Connection) -> None:
    ch = await conn.open_channel()
    number = ch.channel_id
    await ch.aclose()
    assert not ch.is_open
    assert isinstance(ch.error, ChannelClosed)
    assert ch.error.reply_code == 200
    assert not ch.error.by_peer
    await ch.aclose()  # idempotent
    async with conn.channel() as again:
        assert again.channel_id == number  # the broker freed the number too
        await again.queue_declare("", exclusive=True)


async def test_many_channels(conn: Connection) -> None:
    async with anyio.create_task_group() as tg:
        results: list[str] = []

        async def work(i: int) -> None:
            async with conn.channel() as c:
                ok = await c.queue_declare("", exclusive=True)
                await _publish_confirmed(c, f"{i}".encode(), "", ok.queue)
                msg = await c.basic_get(ok.queue, no_ack=True)
                assert msg is not None
                results.append(msg.body.decode())

        for i in range(20):
            tg.start_soon(work, i)
    assert sorted(results, key=int) == [str(i) for i in range(20)]
