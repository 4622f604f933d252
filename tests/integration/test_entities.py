"""Exchange, Queue and binding bound to a channel, kombu's way, against the
real broker: ``queue(channel).declare()``, ``queue_bind``, ``get``, ``purge``,
``delete``, ``Exchange.publish``..."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

import trio_msg
from trio_msg import Exchange, Outcome, Producer, Queue, binding, maybe_declare
from trio_msg.errors import ContentDisallowed, NotBoundError, NotFound, NotSupported

pytestmark = pytest.mark.anyio

TIMEOUT = 5  # seconds for anything the broker should do at once


@pytest.fixture
async def conn(broker_url: str) -> AsyncIterator[trio_msg.Connection]:
    async with trio_msg.connect(broker_url, revive=False) as c:
        yield c


async def _get(queue: Queue, **kwargs: object) -> trio_msg.Message:
    """The next message of a bound queue (basic.get until one arrives, bounded)."""
    with anyio.fail_after(TIMEOUT):
        while True:
            message = await queue.get(**kwargs)  # type: ignore[arg-type]
            if message is not None:
                return message
            await anyio.sleep(0.01)


async def test_bound_queue_declare_publish_get_purge_delete(
    conn: trio_msg.Connection, unique_name: str
) -> None:
    async with conn.channel() as ch:
        exchange = Exchange(f"{unique_name}.ex", "direct", auto_delete=True)
        unbound = Queue(unique_name, exchange, "rk", durable=False)
        queue = unbound(ch)  # kombu's queue(channel)
        assert queue.is_bound and not unbound.is_bound
        assert queue == unbound
        assert queue.channel is ch
        assert queue.exchange is not None and queue.exchange.channel is ch  # when_bound
        assert await queue.declare() == unique_name

        # Exchange.publish / Exchange.Message through the bound exchange
        await queue.exchange.publish(queue.exchange.Message("héllo"), routing_key="rk")
        await queue.exchange.publish(b"raw", routing_key="rk")
        first = await _get(queue, no_ack=True)
        assert first.body == "héllo".encode()
        assert first.content_encoding == "utf-8"
        assert first.properties["delivery_mode"] == 2  # persistent, as kombu's default
        assert first.delivery_info["routing_key"] == "rk"
        second = await _get(queue)
        assert second.body == b"raw"
        await second.ack()

        for n in range(3):
            await queue.exchange.publish(f"m{n}", routing_key="rk")
        with anyio.fail_after(TIMEOUT):
            while (await queue.queue_declare(passive=True)).message_count < 3:
                await anyio.sleep(0.01)
        assert await queue.purge() == 3
        assert await queue.get() is None

        await queue.exchange.publish("left", routing_key="rk")
        with anyio.fail_after(TIMEOUT):
            while (await queue.queue_declare(passive=True)).message_count < 1:
                await anyio.sleep(0.01)
        assert await queue.delete(if_unused=True) == 1
        with pytest.raises(NotFound):
            await queue.queue_declare(passive=True)


async def test_queue_bind_and_unbind_on_a_bound_queue(
    conn: trio_msg.Connection, unique_name: str
) -> None:
    async with conn.channel() as ch:
        # not auto-delete: it would go with the last binding, at queue_unbind
        exchange = Exchange(f"{unique_name}.ex", "topic", durable=False).bind(ch)
        await exchange.declare()
        try:
            await _bind_and_unbind(ch, exchange, unique_name)
        finally:
            await exchange.delete()


async def _bind_and_unbind(ch: trio_msg.Channel, exchange: Exchange, unique_name: str) -> None:
    queue = Queue(unique_name, exchange, "a.*", exclusive=True).bind(ch)
    await queue.queue_declare()  # the queue only: nothing routes to it yet
    await exchange.publish("before", routing_key="a.b")
    assert await queue.get(no_ack=True) is None
    await queue.queue_bind()
    await exchange.publish("bound", routing_key="a.b")
    assert (await _get(queue, no_ack=True)).body == b"bound"
    await queue.queue_unbind()
    await exchange.publish("after", routing_key="a.b")
    # basic.get in between is a round trip: the publish was routed by then
    await ch.queue_declare(queue.name, passive=True)
    assert await queue.get(no_ack=True) is None
    # bind_to / unbind_from / binding.bind with the channel the queue is bound to
    await queue.bind_to(exchange, "x.#")
    await binding(exchange, "y.#").bind(queue)
    for key in ("x.1", "y.1"):
        await exchange.publish(key, routing_key=key)
    bodies = {(await _get(queue, no_ack=True)).body for _ in range(2)}
    assert bodies == {b"x.1", b"y.1"}
    await queue.unbind_from(exchange, "x.#")
    await binding(exchange, "y.#").unbind(queue)
    await exchange.publish("gone", routing_key="x.1")
    await exchange.publish("gone", routing_key="y.1")
    await ch.queue_declare(queue.name, passive=True)
    assert await queue.get(no_ack=True) is None


async def test_exchange_publish_on_a_confirm_channel(
    conn: trio_msg.Connection, unique_name: str
) -> None:
    async with conn.channel() as ch:
        await ch.confirm_select()
        queue = Queue(unique_name, exclusive=True)(ch)
        await queue.declare()
        default = Exchange("")(ch)
        result = await default.publish(
            default.Message(b"x", delivery_mode="transient", properties={"message_id": "m1"}),
            routing_key=unique_name,
        )
        assert result is not None
        assert await result.wait() is Outcome.ACK
        message = await _get(queue, no_ack=True)
        assert message.properties["delivery_mode"] == 1
        assert message.properties["message_id"] == "m1"
        with pytest.raises(NotSupported):
            await default.publish("x", routing_key=unique_name, immediate=True)


async def test_queue_get_honours_accept(conn: trio_msg.Connection, unique_name: str) -> None:
    async with conn.channel() as ch:
        queue = Queue(unique_name, exclusive=True).bind(ch)
        await queue.declare()
        async with Producer(ch, serializer="json") as producer:
            for n in range(3):
                await producer.publish({"n": n}, routing_key=unique_name)
        refused = await _get(queue, accept=["text/plain"])
        assert refused.content_type == "application/json"
        with pytest.raises(ContentDisallowed):
            refused.decode()
        await refused.ack()  # undecodable, but still a message to settle
        assert (await _get(queue, accept=["json"], no_ack=True)).payload == {"n": 1}
        assert (await _get(queue, no_ack=True)).payload == {"n": 2}  # None: no check


async def test_routing_key_without_exchange_binds_nothing(
    conn: trio_msg.Connection, unique_name: str
) -> None:
    """kombu's Queue(name, routing_key=...): declared without a bind to the
    default exchange (which the broker would refuse with 403)."""
    async with conn.channel() as ch:
        queue = Queue(unique_name, routing_key="elsewhere", exclusive=True)(ch)
        assert await queue.declare() == unique_name
        assert await maybe_declare(queue) is True  # exclusive: never cached
        await Exchange("")(ch).publish("by name", routing_key=unique_name)
        assert (await _get(queue, no_ack=True)).body == b"by name"
        with pytest.raises(ValueError, match="no exchange of its own"):
            await queue.queue_bind()


async def test_unbound_entities_say_so_and_revive_moves_them(
    conn: trio_msg.Connection, unique_name: str
) -> None:
    queue = Queue(unique_name, exclusive=True)
    with pytest.raises(NotBoundError):
        await queue.get()
    with pytest.raises(NotBoundError):
        await maybe_declare(queue)
    with pytest.raises(TypeError, match="open_channel"):
        queue.bind(conn)  # type: ignore[arg-type]
    async with conn.channel() as first, conn.channel() as second:
        bound = queue(first)
        await bound.declare()
        bound.revive(second)
        assert bound.channel is second
        await first.aclose()
        await Exchange("")(second).publish("x", routing_key=unique_name)
        assert (await _get(bound, no_ack=True)).body == b"x"
        with pytest.raises(NotSupported, match="Consumer"):
            await bound.consume()
