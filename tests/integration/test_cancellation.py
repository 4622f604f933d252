"""Cancellation of every request, against the real broker, on trio and asyncio.

For each request: cancelled at its first checkpoint it sends nothing; cancelled
while waiting for its reply (the proxy holds the bytes) it leaves the channel
open, its late reply is discarded, and the next request gets its own reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from _broker import list_connections
from _proxy import TcpProxy

from trio_msg._protocol.events import Delivery, Outcome
from trio_msg.channel import Channel, PublishResult
from trio_msg.connection import Connection, connect
from trio_msg.errors import ChannelClosed, ConnectionClosed, NotFound

MODES = ["first_checkpoint", "waiting_for_reply"]


@pytest.fixture
async def conn(proxy: TcpProxy) -> AsyncIterator[Connection]:
    async with connect(f"amqp://guest:guest@{proxy.host}:{proxy.port}//") as c:
        yield c


@pytest.fixture
async def ch(conn: Connection) -> AsyncIterator[Channel]:
    async with conn.channel() as c:
        yield c


async def cancel_at_first_checkpoint(call: Callable[[], Awaitable[Any]]) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await call()
        pytest.fail("the call did not raise at its first checkpoint")
    assert scope.cancelled_caught


async def cancel_while_waiting(proxy: TcpProxy, call: Callable[[], Awaitable[Any]]) -> None:
    """Call with the link stalled, give up after 0.2 s, then let the held
    bytes (the request, and later its reply) flow."""
    proxy.stall()
    try:
        with anyio.move_on_after(0.2) as scope:
            await call()
            pytest.fail("the call completed through a stalled link")
        assert scope.cancelled_caught
    finally:
        proxy.resume()


async def cancel(mode: str, proxy: TcpProxy, call: Callable[[], Awaitable[Any]]) -> None:
    if mode == "first_checkpoint":
        await cancel_at_first_checkpoint(call)
    else:
        await cancel_while_waiting(proxy, call)


async def next_request_gets_its_own_reply(ch: Channel, name: str) -> None:
    with anyio.fail_after(5):
        ok = await ch.queue_declare(f"{name}.next", exclusive=True)
    assert ok.queue == f"{name}.next"
    assert ch.is_open
    # nothing of the abandoned request is left in the way: the one after
    # gets its own reply too
    with anyio.fail_after(5):
        ok = await ch.queue_declare(f"{name}.after", exclusive=True)
    assert ok.queue == f"{name}.after"


async def queue_info(conn: Connection, queue: str) -> tuple[int, int] | None:
    """(messages, consumers), or None when the queue does not exist."""
    async with conn.channel() as c:
        try:
            ok = await c.queue_declare(queue, passive=True)
        except NotFound:
            return None
        return ok.message_count, ok.consumer_count


async def exchange_exists(conn: Connection, exchange: str) -> bool:
    async with conn.channel() as c:
        try:
            await c.exchange_declare(exchange, passive=True)
        except NotFound:
            return False
        return True


async def confirmed(ch: Channel, body: bytes, exchange: str, routing_key: str) -> None:
    async with ch.connection.channel() as c:
        await c.confirm_select()
        result = await c.basic_publish(body, exchange, routing_key)
        assert result is not None
        with anyio.fail_after(5):
            assert await result.wait() is Outcome.ACK


# ------------------------------------------------------------------ requests


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_queue_declare(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    await cancel(mode, proxy, lambda: ch.queue_declare(unique_name, exclusive=True))
    await next_request_gets_its_own_reply(ch, unique_name)
    info = await queue_info(conn, unique_name)
    if mode == "first_checkpoint":
        assert info is None  # nothing was sent
    else:
        assert info == (0, 0)  # it was sent; only its reply was dropped


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_exchange_declare(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    try:
        await cancel(mode, proxy, lambda: ch.exchange_declare(unique_name, durable=False))
        await next_request_gets_its_own_reply(ch, unique_name)
        assert await exchange_exists(conn, unique_name) is (mode == "waiting_for_reply")
    finally:
        await ch.exchange_delete(unique_name)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_queue_bind(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.queue_declare(unique_name, exclusive=True)
    await cancel(mode, proxy, lambda: ch.queue_bind(unique_name, "amq.direct", unique_name))
    await next_request_gets_its_own_reply(ch, unique_name)
    await confirmed(ch, b"routed?", "amq.direct", unique_name)
    bound = mode == "waiting_for_reply"
    assert await queue_info(conn, unique_name) == (int(bound), 0)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_basic_get(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.queue_declare(unique_name, exclusive=True)
    await confirmed(ch, b"the one", "", unique_name)
    await cancel(mode, proxy, lambda: ch.basic_get(unique_name))
    # The next request is a basic.get too: it must get the message (an
    # abandoned get's message is requeued), not be handed the abandoned reply.
    with anyio.fail_after(5):
        msg = await ch.basic_get(unique_name)
    assert msg is not None
    assert msg.body == b"the one"
    assert msg.redelivered is (mode == "waiting_for_reply")
    await msg.ack()
    await next_request_gets_its_own_reply(ch, unique_name)
    assert await queue_info(conn, unique_name) == (0, 0)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_basic_consume(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.queue_declare(unique_name, exclusive=True)
    send, receive = anyio.create_memory_object_stream[Delivery](10)
    await cancel(mode, proxy, lambda: ch.basic_consume(unique_name, send))
    await next_request_gets_its_own_reply(ch, unique_name)
    await anyio.sleep(0.1)
    # No consumer is left behind on the broker, and a message stays queued.
    assert await queue_info(conn, unique_name) == (0, 0)
    await confirmed(ch, b"for nobody", "", unique_name)
    await anyio.sleep(0.1)
    assert await queue_info(conn, unique_name) == (1, 0)
    with pytest.raises(anyio.WouldBlock):
        receive.receive_nowait()
    # and the channel has no consumer left to route a delivery to: a
    # consumer of its own on it gets the message
    sink, got = anyio.create_memory_object_stream[Delivery](10)
    await ch.basic_consume(unique_name, sink)
    with anyio.fail_after(5):
        assert (await got.receive()).body == b"for nobody"
    with pytest.raises(anyio.WouldBlock):
        receive.receive_nowait()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_basic_cancel(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.queue_declare(unique_name, exclusive=True)
    send, receive = anyio.create_memory_object_stream[Delivery](10)
    tag = await ch.basic_consume(unique_name, send, no_ack=True)
    await cancel(mode, proxy, lambda: ch.basic_cancel(tag))
    await next_request_gets_its_own_reply(ch, unique_name)
    if mode == "first_checkpoint":
        # nothing was sent: the consumer still consumes, into the same sink
        assert await queue_info(conn, unique_name) == (0, 1)
        await confirmed(ch, b"still mine", "", unique_name)
        with anyio.fail_after(5):
            delivery = await receive.receive()
        assert delivery.body == b"still mine"
        await ch.basic_cancel(tag)
    # the cancel reached the broker, and the sink was closed
    assert await queue_info(conn, unique_name) == (0, 0)
    with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
        await receive.receive()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_confirm_select(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.queue_declare(unique_name, exclusive=True)
    await cancel(mode, proxy, ch.confirm_select)
    await next_request_gets_its_own_reply(ch, unique_name)
    result = await ch.basic_publish(b"x", "", unique_name)
    if mode == "first_checkpoint":
        assert not ch.confirming
        assert result is None
    else:  # the select went out: the channel is in confirm mode
        assert ch.confirming
        assert isinstance(result, PublishResult)
        assert result.delivery_tag == 1
        with anyio.fail_after(5):
            assert await result.wait() is Outcome.ACK
    await ch.confirm_select()
    assert ch.confirming


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_open_channel(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    if mode == "first_checkpoint":
        await cancel_at_first_checkpoint(conn.open_channel)
    else:
        # The abandoned channel is closed again, shielded, waiting for the
        # broker's close-ok: let the link flow again while it waits.
        async with anyio.create_task_group() as tg:
            proxy.stall()

            async def resume_later() -> None:
                await anyio.sleep(0.5)
                proxy.resume()

            tg.start_soon(resume_later)
            start = anyio.current_time()
            with anyio.move_on_after(0.2) as scope:
                await conn.open_channel()
            assert scope.cancelled_caught
            assert anyio.current_time() - start < 3
    await next_request_gets_its_own_reply(ch, unique_name)
    # the number is free on the broker too: opening it again works
    async with conn.channel() as again:
        assert again.channel_id == ch.channel_id + 1
        await again.queue_declare("", exclusive=True)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_publish_result_wait(
    mode: str, proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.queue_declare(unique_name, exclusive=True)
    await ch.confirm_select()
    if mode == "first_checkpoint":
        result = await ch.basic_publish(b"one", "", unique_name)
        assert result is not None
        await cancel_at_first_checkpoint(result.wait)
    else:
        proxy.stall()
        result = await ch.basic_publish(b"one", "", unique_name)
        assert result is not None
        await cancel_while_waiting(proxy, result.wait)
    with anyio.fail_after(5):
        assert await result.wait() is Outcome.ACK
    # cancelled again once the outcome is known: still a checkpoint
    await cancel_at_first_checkpoint(result.wait)
    nxt = await ch.basic_publish(b"two", "", unique_name)
    assert nxt is not None and nxt.delivery_tag == 2
    with anyio.fail_after(5):
        assert await nxt.wait() is Outcome.ACK
    assert await queue_info(conn, unique_name) == (2, 0)


@pytest.mark.anyio
async def test_basic_publish_at_first_checkpoint(
    proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    await ch.queue_declare(unique_name, exclusive=True)
    await ch.confirm_select()
    await cancel_at_first_checkpoint(lambda: ch.basic_publish(b"never", "", unique_name))
    result = await ch.basic_publish(b"sent", "", unique_name)
    assert result is not None
    assert result.delivery_tag == 1  # the cancelled publish took no sequence number
    with anyio.fail_after(5):
        assert await result.wait() is Outcome.ACK
    msg = await ch.basic_get(unique_name, no_ack=True)
    assert msg is not None and msg.body == b"sent"
    assert await ch.basic_get(unique_name) is None


@pytest.mark.anyio
async def test_basic_publish_while_waiting_for_room(
    proxy: TcpProxy, conn: Connection, ch: Channel, unique_name: str
) -> None:
    """A publish waiting for the outbound buffer to drain (the link is stalled)
    queues nothing when cancelled; every publish that returned is delivered."""
    await ch.queue_declare(unique_name, exclusive=True)
    await ch.confirm_select()
    body = b"\x00" * (1024 * 1024)
    results: list[PublishResult] = []
    proxy.stall()
    try:
        for _ in range(64):
            with anyio.move_on_after(0.2) as scope:
                result = await ch.basic_publish(body, "", unique_name)
                assert result is not None
                results.append(result)
            if scope.cancelled_caught:
                break
        else:
            pytest.fail("64 MiB went into a stalled link without waiting")
    finally:
        proxy.resume()
    assert results
    with anyio.fail_after(20):
        for result in results:
            assert await result.wait() is Outcome.ACK
    nxt = await ch.basic_publish(b"next", "", unique_name)
    assert nxt is not None and nxt.delivery_tag == len(results) + 1
    with anyio.fail_after(5):
        assert await nxt.wait() is Outcome.ACK
    assert await queue_info(conn, unique_name) == (len(results) + 1, 0)
    await ch.queue_purge(unique_name)


# ------------------------------------------------------------------- closing


@pytest.mark.anyio
async def test_connection_aclose_in_a_cancelled_scope(broker_url: str, unique_name: str) -> None:
    with anyio.CancelScope() as outer:
        async with connect(broker_url, connection_name=unique_name) as conn:
            await conn.open_channel()
            outer.cancel()
            start = anyio.current_time()
            try:
                await conn.aclose()
            finally:
                elapsed = anyio.current_time() - start
                closed = conn.error
            pytest.fail("aclose() in a cancelled scope did not deliver the cancellation")
    assert outer.cancelled_caught
    assert elapsed < 2
    # a clean close: ours, answered by the broker's close-ok
    assert isinstance(closed, ConnectionClosed)
    assert closed.reply_code == 200
    assert not closed.by_peer
    assert not conn.is_open
    with anyio.fail_after(10):
        while True:
            names = [c["connection_name"] for c in await anyio.to_thread.run_sync(list_connections)]
            if unique_name not in names:
                break
            await anyio.sleep(0.2)


@pytest.mark.anyio
async def test_channel_aclose_in_a_cancelled_scope(conn: Connection, unique_name: str) -> None:
    ch = await conn.open_channel()
    number = ch.channel_id
    with anyio.CancelScope() as scope:
        scope.cancel()
        await ch.aclose()
        pytest.fail("aclose() in a cancelled scope did not deliver the cancellation")
    assert scope.cancelled_caught
    assert not ch.is_open
    assert isinstance(ch.error, ChannelClosed)
    assert ch.error.reply_code == 200  # close-ok came
    # the broker closed it too: the same number opens again
    async with conn.channel() as again:
        assert again.channel_id == number
        await again.queue_declare(f"{unique_name}.q", exclusive=True)


@pytest.mark.anyio
async def test_cancelled_connect_leaves_nothing_open(proxy: TcpProxy) -> None:
    proxy.stall()
    with anyio.move_on_after(0.3) as scope:
        async with connect(f"amqp://guest:guest@{proxy.host}:{proxy.port}//"):
            pytest.fail("connected through a stalled link")
    assert scope.cancelled_caught
    # (a stalled proxy does not notice the client hanging up: let it flow)
    proxy.resume()
    await proxy.wait_connections(0, timeout=3)


@pytest.mark.anyio
async def test_timeout_around_the_connection_closes_it_cleanly(
    broker_url: str,
) -> None:
    start = anyio.current_time()
    with anyio.move_on_after(0.3) as scope:
        async with connect(broker_url) as conn, conn.channel() as ch:
            await ch.queue_declare("", exclusive=True)
            await anyio.sleep(10)
    assert scope.cancelled_caught
    assert anyio.current_time() - start < 2
    assert isinstance(conn.error, ConnectionClosed)
    assert conn.error.reply_code == 200 and not conn.error.by_peer


# --------------------------------------------------------- trio checkpoints


@pytest.mark.trio
async def test_every_public_method_is_a_checkpoint(broker_url: str, unique_name: str) -> None:
    assert_checkpoints = trio.testing.assert_checkpoints
    async with connect(broker_url) as conn:
        with assert_checkpoints():
            ch = await conn.open_channel()
        with assert_checkpoints():
            q = (await ch.queue_declare(unique_name, exclusive=True)).queue
        with assert_checkpoints():
            await ch.exchange_declare(unique_name, durable=False, auto_delete=True)
        with assert_checkpoints():
            await ch.queue_bind(q, unique_name, "k")
        with assert_checkpoints():
            await ch.queue_unbind(q, unique_name, "k")
        with assert_checkpoints():
            await ch.exchange_delete(unique_name)
        with assert_checkpoints():
            await ch.basic_qos(prefetch_count=3)
        with assert_checkpoints():
            assert await ch.basic_get(q) is None
        with assert_checkpoints():
            assert await ch.basic_publish(b"plain", "", q) is None
        with assert_checkpoints():
            await ch.confirm_select()
        with assert_checkpoints():
            await ch.confirm_select()  # already on: no request, still a checkpoint
        with assert_checkpoints():
            result = await ch.basic_publish(b"confirmed", "", q)
        assert result is not None
        with assert_checkpoints():
            assert await result.wait() is Outcome.ACK
        with assert_checkpoints():
            assert await result.wait() is Outcome.ACK  # already known
        with assert_checkpoints():
            msg = await ch.basic_get(q)
        assert msg is not None
        with assert_checkpoints():
            await msg.ack()
        with assert_checkpoints():
            assert await ch.queue_purge(q) == 1
        with assert_checkpoints():
            await ch.queue_delete(q)
        with assert_checkpoints():
            await ch.aclose()
        with assert_checkpoints():
            await ch.aclose()  # already closed
        with assert_checkpoints():
            await conn.aclose()
        with assert_checkpoints():
            await conn.aclose()  # already closed


@pytest.mark.trio
async def test_consume_and_cancel_are_checkpoints(broker_url: str) -> None:
    async with connect(broker_url) as conn, conn.channel() as ch:
        q = (await ch.queue_declare("", exclusive=True)).queue
        send, _receive = anyio.create_memory_object_stream[Delivery](10)
        with trio.testing.assert_checkpoints():
            tag = await ch.basic_consume(q, send, no_ack=True)
        with trio.testing.assert_checkpoints():
            await ch.basic_cancel(tag)
        with trio.testing.assert_checkpoints():
            await ch.tx_select()
        with trio.testing.assert_checkpoints():
            await ch.tx_commit()
        with trio.testing.assert_checkpoints():
            await ch.tx_rollback()


@pytest.mark.trio
async def test_a_stalled_request_is_a_checkpoint_and_cancellable(
    trio_proxy: TcpProxy, unique_name: str
) -> None:
    """With the link stalled a request waits; it is cancellable there too."""
    url = f"amqp://guest:guest@{trio_proxy.host}:{trio_proxy.port}//"
    async with connect(url) as conn, conn.channel() as ch:
        trio_proxy.stall()
        with trio.move_on_after(0.2) as scope, trio.testing.assert_checkpoints():
            await ch.queue_declare(unique_name, exclusive=True)
        assert scope.cancelled_caught
        trio_proxy.resume()
        await next_request_gets_its_own_reply(ch, unique_name)
