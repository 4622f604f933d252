"""SimpleQueue and SimpleBuffer (kombu's simple interface) against the real broker."""

from __future__ import annotations

import queue as stdlib_queue
from collections.abc import AsyncIterator

import anyio
import pytest

import trio_msg
from trio_msg import Exchange, Queue, SimpleBuffer, SimpleQueue
from trio_msg.errors import Empty, NotFound, ResourceLocked

pytestmark = pytest.mark.anyio

TIMEOUT = 5  # seconds for anything the broker should do at once
QUIET = 0.3  # how long "nothing arrives" is watched for


@pytest.fixture
async def conn(broker_url: str) -> AsyncIterator[trio_msg.Connection]:
    async with trio_msg.connect(broker_url) as connection:
        yield connection


@pytest.fixture
async def name(broker_url: str, unique_name: str) -> AsyncIterator[str]:
    """A queue (and exchange) name, both deleted after the test."""
    yield unique_name
    with anyio.fail_after(TIMEOUT):
        async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
            await ch.queue_delete(unique_name)
            await ch.exchange_delete(unique_name)


async def ready_count(conn: trio_msg.Connection, name: str) -> int:
    """How many messages are ready in the queue, as the broker says."""
    async with conn.channel() as ch:
        return (await ch.queue_declare(name, passive=True)).message_count


async def test_put_get_round_trip(conn: trio_msg.Connection, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(name) as queue:
            assert isinstance(queue, SimpleQueue)
            await queue.put({"Hello": "World"}, headers={"k1": "v1"})
            assert await ready_count(conn, name) == 1  # confirmed: it is in the queue
            message = await queue.get(timeout=TIMEOUT)
            assert message.payload == {"Hello": "World"}
            assert message.content_type == "application/json"
            assert message.content_encoding == "utf-8"
            assert message.headers == {"k1": "v1"}
            # Through the exchange named like the queue, with its name as key.
            assert message.exchange == name
            assert message.routing_key == name
            await message.ack()
        # Acked, then closed: nothing comes back.
        assert await ready_count(conn, name) == 0
        # kombu's defaults: a durable queue on a durable direct exchange.
        async with conn.channel() as ch:
            await ch.queue_declare(name, passive=True)
            await ch.exchange_declare(name, "direct", passive=True)


async def test_unsettled_messages_go_back_on_close(conn: trio_msg.Connection, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(name) as queue:
            for n in range(3):
                await queue.put(n)
            first = await queue.get(timeout=TIMEOUT)
            assert first.payload == 0
            assert not first.redelivered
        # Never acked (and the two delivered ahead): all three back.
        assert await ready_count(conn, name) == 3
        async with conn.SimpleQueue(name) as queue:
            again = await queue.get(timeout=TIMEOUT)
            assert again.payload == 0
            assert again.redelivered
            await again.ack()


async def test_get_times_out_with_empty(conn: trio_msg.Connection, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(name) as queue:
            with pytest.raises(Empty) as caught:
                await queue.get(timeout=QUIET)
            # kombu raises queue.Empty, and offers it as an attribute.
            assert isinstance(caught.value, stdlib_queue.Empty)
            assert isinstance(caught.value, trio_msg.TrioMsgError)
            assert queue.Empty is Empty
            with pytest.raises(Empty):
                await queue.get(block=True, timeout=0)
            # A message that arrives later is still got.
            await queue.put("late")
            message = await queue.get(timeout=TIMEOUT)
            assert message.payload == "late"
            await message.ack()


async def test_cancelled_get_loses_nothing(conn: trio_msg.Connection, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(name) as queue:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await queue.get()
            assert scope.cancelled_caught
            await queue.put("kept")
            message = await queue.get(timeout=TIMEOUT)
            assert message.payload == "kept"
            await message.ack()


async def test_get_nowait(conn: trio_msg.Connection, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(name) as queue:
            with pytest.raises(Empty):
                await queue.get_nowait()
            with pytest.raises(Empty):
                await queue.get(block=False)
            await queue.put("a")
            await queue.put("b")
            # Not consuming yet: basic.get takes them from the queue, in order.
            message = await queue.get_nowait()
            assert message.payload == "a"
            await message.ack()
            assert await ready_count(conn, name) == 1
            message = await queue.get(block=False)
            assert message.payload == "b"
            await message.ack()
            with pytest.raises(Empty):
                await queue.get_nowait()
        assert await ready_count(conn, name) == 0


async def test_qsize_and_clear(conn: trio_msg.Connection, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(name) as queue:
            assert await queue.qsize() == 0
            for n in range(5):
                await queue.put(n)
            assert await queue.qsize() == 5
            assert queue  # kombu: always true, whatever its size
            with pytest.raises(TypeError, match="qsize"):
                len(queue)
            assert await queue.clear() == 5
            assert await queue.qsize() == 0
            assert await ready_count(conn, name) == 0


async def test_serializer_and_compression(conn: trio_msg.Connection, name: str) -> None:
    body = {"text": "x" * 1000, "n": [1, 2, 3]}
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(
            name, serializer="msgpack", compression="zlib", accept=["msgpack", "json"]
        ) as queue:
            await queue.put(body)
            await queue.put(body, serializer="json", compression=None)
            first = await queue.get(timeout=TIMEOUT)
            assert first.content_type == "application/x-msgpack"
            assert first.headers["compression"] == "application/x-gzip"
            assert len(first.body) < 200  # compressed on the wire
            assert first.payload == body
            second = await queue.get(timeout=TIMEOUT)
            assert second.content_type == "application/json"
            assert second.payload == body
            await second.ack(multiple=True)


async def test_accept_list_refuses_other_content(conn: trio_msg.Connection, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(name, accept=["json"]) as queue:
            await queue.put({"a": 1}, serializer="msgpack")
            message = await queue.get(timeout=TIMEOUT)
            with pytest.raises(trio_msg.errors.ContentDisallowed):
                message.decode()
            await message.ack()


async def test_queue_entity_and_options(conn: trio_msg.Connection, name: str) -> None:
    """A Queue object brings its own exchange and routing key; queue_opts and
    queue_args reach the declaration of a queue made from a name."""
    exchange = Exchange(name, type="topic", durable=False, auto_delete=True)
    entity = Queue(f"{name}.q", exchange, routing_key="jobs.#", durable=False, auto_delete=True)
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(entity) as queue:
            await queue.put("routed", routing_key="jobs.one")
            message = await queue.get(timeout=TIMEOUT)
            assert message.payload == "routed"
            assert message.routing_key == "jobs.one"
            await message.ack()
        async with conn.SimpleQueue(
            f"{name}.p", queue_opts={"durable": False}, queue_args={"x-max-priority": 10}
        ) as queue:
            for priority in (1, 9, 5):
                await queue.put(priority, priority=priority)
            got = []
            for _ in range(3):
                message = await queue.get(timeout=TIMEOUT)
                got.append(message.payload)
                await message.ack()
            assert got == [9, 5, 1]  # the broker ordered them: x-max-priority was set
        async with conn.channel() as ch:
            await ch.queue_delete(f"{name}.p")
            await ch.exchange_delete(f"{name}.p")


async def test_on_a_channel(conn: trio_msg.Connection, name: str) -> None:
    """kombu's channel= argument: the queue uses that channel and leaves it open."""
    with anyio.fail_after(TIMEOUT):
        async with conn.channel() as ch:
            async with conn.SimpleQueue(name, channel=ch) as queue:
                assert queue.channel is ch
                await queue.put("on the channel")
                message = await queue.get(timeout=TIMEOUT)
                assert message.channel is ch
                await message.ack()
            assert ch.is_open


async def test_prefetch_window_explains_empty(conn: trio_msg.Connection, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleQueue(name, prefetch_count=2) as queue:
            for n in range(3):
                await queue.put(n)
            held = [await queue.get(timeout=TIMEOUT) for _ in range(2)]
            with pytest.raises(Empty, match="prefetch_count=2"):
                await queue.get(timeout=QUIET)
            await held[0].ack()
            third = await queue.get(timeout=TIMEOUT)
            assert third.payload == 2
            await held[1].ack()
            await third.ack()


async def test_simple_buffer(conn: trio_msg.Connection, broker_url: str, name: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with conn.SimpleBuffer(name) as buf:
            assert isinstance(buf, SimpleBuffer)
            await buf.put({"Hello": "World"}, headers={"k1": "v1"})
            message = await buf.get(timeout=TIMEOUT)
            assert message.payload == {"Hello": "World"}
            assert message.headers == {"k1": "v1"}
            assert message.properties["delivery_mode"] == 1  # transient
            assert message.acknowledged  # no_ack: settled as delivered
            # Exclusive: another connection may not use it.
            async with trio_msg.connect(broker_url) as other, other.channel() as ch:
                with pytest.raises(ResourceLocked):
                    await ch.queue_declare(name, passive=True)
        # Auto-delete: gone once its consumer is.
        async with conn.channel() as ch:
            with pytest.raises(NotFound):
                await ch.queue_declare(name, passive=True)


async def test_must_be_entered(conn: trio_msg.Connection, name: str) -> None:
    queue = conn.SimpleQueue(name)
    with pytest.raises(RuntimeError, match="async with"):
        await queue.put("x")
    async with queue:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await queue.get(timeout=0)
