"""Producer, Consumer and Message end to end against the real broker, on trio and asyncio."""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import trio_msg
from trio_msg import Consumer, Exchange, MessageState, Outcome, Producer, Queue, binding
from trio_msg.errors import (
    ConsumerCancelled,
    ContentDisallowed,
    DecodeError,
    MessageStateError,
    NotSupported,
    PipelineFailed,
    SerializerNotInstalled,
    Unroutable,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 5  # seconds for anything the broker should do at once
QUIET = 0.3  # how long "nothing more arrives" is watched for


# --------------------------------------------------------------------- fixtures


class Topology:
    """Makes uniquely named queues and exchanges, deleted after the test."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.queues: list[Queue] = []
        self.exchanges: list[Exchange] = []

    def queue(self, suffix: str = "", **kwargs: Any) -> Queue:
        kwargs.setdefault("durable", False)
        kwargs.setdefault("expires", 120)  # a safety net if the teardown never runs
        queue = Queue(f"{self.base}.{suffix}" if suffix else self.base, **kwargs)
        self.queues.append(queue)
        return queue

    def exchange(self, suffix: str, type: str = "direct", **kwargs: Any) -> Exchange:
        kwargs.setdefault("durable", False)
        exchange = Exchange(f"{self.base}.x.{suffix}", type, **kwargs)
        self.exchanges.append(exchange)
        return exchange

    async def cleanup(self, url: str) -> None:
        async with trio_msg.connect(url) as conn, conn.channel() as ch:
            for queue in self.queues:
                if queue.name:
                    await ch.queue_delete(queue.name)
            for exchange in self.exchanges:
                await ch.exchange_delete(exchange.name)


@pytest.fixture
async def topo(broker_url: str, unique_name: str) -> AsyncIterator[Topology]:
    topology = Topology(unique_name)
    yield topology
    with anyio.fail_after(TIMEOUT):
        await topology.cleanup(broker_url)


@pytest.fixture
async def conn(broker_url: str) -> AsyncIterator[trio_msg.Connection]:
    async with trio_msg.connect(broker_url) as connection:
        yield connection


# ---------------------------------------------------------------------- helpers


async def receive(consumer: Consumer, n: int = 1) -> list[trio_msg.Message]:
    """The next ``n`` messages (failing after TIMEOUT)."""
    out: list[trio_msg.Message] = []
    with anyio.fail_after(TIMEOUT):
        async for message in consumer:
            out.append(message)
            if len(out) == n:
                break
    return out


async def assert_quiet(consumer: Consumer) -> None:
    """Nothing more is delivered to ``consumer`` for a little while."""
    with anyio.move_on_after(QUIET):
        try:
            message = await consumer.__anext__()
        except StopAsyncIteration:
            return
        pytest.fail(f"unexpected message {message!r}: {message.body!r}")


async def ready_count(conn: trio_msg.Connection, queue: Queue) -> int:
    """Messages ready in ``queue`` (a passive declare)."""
    async with conn.channel() as ch:
        ok = await ch.queue_declare(queue.name, passive=True)
    return ok.message_count


async def get_all(conn: trio_msg.Connection, queue: Queue) -> list[trio_msg.Message]:
    """Every ready message of ``queue``, by basic.get without acks."""
    out = []
    async with conn.channel() as ch:
        while (message := await ch.basic_get(queue.name, no_ack=True)) is not None:
            out.append(message)
    return out


# ----------------------------------------------------------------- serializers


BODIES: list[tuple[str | None, Any, str, str]] = [
    # serializer, body, content type, content encoding
    ("json", {"n": 1, "list": [1, 2.5, "three"], "none": None, "s": "ünïcode"}, "application/json", "utf-8"),
    ("text", "plain ünïcode text", "text/plain", "utf-8"),
    (None, "plain text, no serializer", "text/plain", "utf-8"),
    ("raw", b"\x00\x01\xffbytes", "application/data", "binary"),
    (None, b"\x00\x01\xffbytes, no serializer", "application/data", "binary"),
    ("msgpack", {"n": 1, "list": [1, 2, 3], "bin": b"\x00\xff"}, "application/x-msgpack", "binary"),
    ("yaml", {"n": 1, "list": [1, 2, 3], "s": "ünïcode"}, "application/x-yaml", "utf-8"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("serializer", "body", "content_type", "content_encoding"),
    BODIES,
    ids=[f"{b[0]}-{type(b[1]).__name__}" for b in BODIES],
)
async def test_serializer_round_trip(
    conn: trio_msg.Connection,
    topo: Topology,
    serializer: str | None,
    body: Any,
    content_type: str,
    content_encoding: str,
) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        result = await producer.publish(
            body, routing_key=queue.name, serializer=serializer, declare=[queue]
        )
    assert result is not None
    assert result.outcome is Outcome.ACK
    async with Consumer(conn, [queue], accept=["json", "text", "raw", "msgpack", "yaml"]) as c:
        [message] = await receive(c)
        assert message.content_type == content_type
        assert message.content_encoding == content_encoding
        assert message.payload == body
        assert message.decode() == body
        assert isinstance(message.body, bytes)
        await message.ack()
        assert message.state is MessageState.ACK


async def test_producer_default_serializer_and_exchange(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    exchange = topo.exchange("direct")
    queue = topo.queue(exchange=exchange, routing_key="rk")
    async with Consumer(conn, [queue], accept=["yaml", "json"]) as consumer:
        async with Producer(conn, exchange=exchange, routing_key="rk", serializer="yaml") as p:
            await p.publish({"a": 1})  # exchange and routing key from the producer
            await p.publish([1, 2], serializer="json")  # per-publish override
        first, second = await receive(consumer, 2)
        assert (first.content_type, first.payload) == ("application/x-yaml", {"a": 1})
        assert (second.content_type, second.payload) == ("application/json", [1, 2])
        assert first.exchange == exchange.name
        assert first.routing_key == "rk"
        await second.ack(multiple=True)


@pytest.mark.parametrize("method", ["zlib", "bz2", "lzma", "zstd", "brotli"])
async def test_compression_round_trip(
    conn: trio_msg.Connection, topo: Topology, method: str
) -> None:
    queue = topo.queue()
    body = {"text": "compress me " * 200, "n": list(range(50))}
    plain = json.dumps(body).encode()
    async with Producer(conn, compression=method if method != "zlib" else None) as producer:
        await producer.publish(
            body,
            routing_key=queue.name,
            declare=[queue],
            compression="zlib" if method == "zlib" else None,
            headers={"keep": "me"},
        )
    async with Consumer(conn, [queue]) as consumer:
        [message] = await receive(consumer)
        assert (
            message.headers["compression"] == trio_msg.compression.registry.get(method).content_type
        )
        assert message.headers["keep"] == "me"
        assert len(message.body) < len(plain) / 2
        assert message.content_type == "application/json"
        assert message.payload == body
        await message.ack()


# ------------------------------------------------------------------- publishing


async def test_publish_waits_for_the_confirm(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        assert producer.channel.confirming
        results = [
            await producer.publish(i, routing_key=queue.name, declare=[queue]) for i in range(3)
        ]
    for i, result in enumerate(results, 1):
        assert result is not None
        assert result.done
        assert result.outcome is Outcome.ACK
        assert result.delivery_tag == i
        assert result.returned is None
    assert await ready_count(conn, queue) == 3


async def test_publish_without_confirms(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn, confirm=False) as producer:
        assert not producer.channel.confirming
        assert await producer.publish("x", routing_key=queue.name, declare=[queue]) is None
        with pytest.raises(NotSupported):
            async with producer.pipeline():
                pass
    with anyio.fail_after(TIMEOUT):
        while await ready_count(conn, queue) != 1:
            await anyio.sleep(0.02)


async def test_pipeline_keeps_its_window(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    window = 50
    results = []
    async with Producer(conn) as producer:
        await trio_msg.maybe_declare(queue, producer.channel)
        async with producer.pipeline(max_unconfirmed=window) as pipe:
            for i in range(500):
                result = await pipe.publish({"i": i}, routing_key=queue.name)
                assert 1 <= pipe.pending <= window
                # every result outside the window is settled
                unsettled = [r for r in results if not r.done]
                assert len(unsettled) < window
                results.append(result)
        assert pipe.pending == 0
        assert pipe.acked == 500
        assert (pipe.nacked, pipe.unknown, pipe.failures) == (0, 0, [])
    assert [r.delivery_tag for r in results] == list(range(1, 501))
    assert all(r.outcome is Outcome.ACK for r in results)
    assert await ready_count(conn, queue) == 500


async def test_pipeline_rejects_a_zero_window(conn: trio_msg.Connection) -> None:
    async with Producer(conn) as producer:
        with pytest.raises(ValueError, match="max_unconfirmed"):
            async with producer.pipeline(max_unconfirmed=0):
                pass


async def test_mandatory_unroutable_raises(conn: trio_msg.Connection, unique_name: str) -> None:
    async with Producer(conn) as producer:
        with pytest.raises(Unroutable) as info:
            await producer.publish(
                {"lost": True}, routing_key=f"{unique_name}.nowhere", mandatory=True
            )
        assert info.value.reply_code == 312
        assert info.value.routing_key == f"{unique_name}.nowhere"
        assert info.value.exchange == ""
        assert info.value.message.payload == {"lost": True}
        # the channel is fine, and a routable mandatory publish goes through
        assert producer.channel.is_open
        await producer.publish("not mandatory", routing_key=f"{unique_name}.nowhere")


@pytest.mark.parametrize("async_callback", [False, True])
async def test_mandatory_unroutable_on_return(
    conn: trio_msg.Connection, unique_name: str, async_callback: bool
) -> None:
    returned: list[tuple[Any, ...]] = []

    def on_return(exc: Unroutable, exchange: str, routing_key: str, message: Any) -> None:
        returned.append((exc, exchange, routing_key, message))

    async def on_return_async(*args: Any) -> None:
        await anyio.sleep(0)
        on_return(*args)

    rk = f"{unique_name}.nowhere"
    callback = on_return_async if async_callback else on_return
    async with Producer(conn, on_return=callback) as producer:
        result = await producer.publish(b"payload", routing_key=rk, mandatory=True, priority=3)
    assert result is not None
    assert result.returned is not None
    assert result.outcome is Outcome.ACK  # RabbitMQ acks a returned message
    [(exc, exchange, routing_key, message)] = returned
    assert isinstance(exc, Unroutable)
    assert exc.reply_code == 312
    assert (exchange, routing_key) == ("", rk)
    assert message.body == b"payload"
    assert message.payload == b"payload"
    assert message.properties["priority"] == 3


async def test_mandatory_return_in_a_pipeline(
    conn: trio_msg.Connection, topo: Topology, unique_name: str
) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await trio_msg.maybe_declare(queue, producer.channel)
        # Leaving the pipeline says so: a returned message is not lost quietly.
        with pytest.raises(PipelineFailed, match=r"1 of 2 .* 1 returned unroutable") as info:
            async with producer.pipeline(10) as pipe:
                await pipe.publish("ok", routing_key=queue.name, mandatory=True)
                lost = await pipe.publish("lost", routing_key=f"{unique_name}.no", mandatory=True)
        # the broker acks a returned message too; it counts as returned, not acked
        assert (pipe.acked, pipe.returned) == (1, 1)
        assert pipe.failures == [lost] == info.value.failures
        assert (info.value.acked, info.value.returned) == (1, 1)
        assert lost.returned is not None
        assert lost.returned.body == b"lost"


async def test_immediate_is_not_supported(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await trio_msg.maybe_declare(queue, producer.channel)
        with pytest.raises(NotSupported, match="immediate"):
            await producer.publish("x", routing_key=queue.name, immediate=True)
        assert producer.channel.is_open
    assert await ready_count(conn, queue) == 0


async def test_unknown_serializer_publishes_nothing(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await trio_msg.maybe_declare(queue, producer.channel)
        with pytest.raises(SerializerNotInstalled):
            await producer.publish({"a": 1}, routing_key=queue.name, serializer="nope")
        with pytest.raises(SerializerNotInstalled):
            await producer.publish({"a": 1}, routing_key=queue.name, compression="nope")
        assert producer.channel.is_open
        # the next publish is #1: nothing was sent before it
        result = await producer.publish("after", routing_key=queue.name)
        assert result is not None
        assert result.delivery_tag == 1
    assert [m.payload for m in await get_all(conn, queue)] == ["after"]


async def test_unknown_property_is_refused(conn: trio_msg.Connection) -> None:
    async with Producer(conn) as producer:
        with pytest.raises(TypeError, match="bogus"):
            await producer.publish("x", routing_key="whatever", bogus=1)


# -------------------------------------------------------------------- consuming


async def test_consumer_prefetch_and_async_for(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        for i in range(5):
            await producer.publish(i, routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], prefetch_count=2) as consumer:
        first, second = await receive(consumer, 2)
        assert [first.payload, second.payload] == [0, 1]
        await assert_quiet(consumer)  # prefetch 2, none acked: nothing more
        await first.ack()
        [third] = await receive(consumer)
        assert third.payload == 2
        await second.ack()
        await third.ack()
        rest = await receive(consumer, 2)
        assert [m.payload for m in rest] == [3, 4]
        assert all(not m.redelivered for m in rest)
        for m in rest:
            await m.ack()


async def test_ack_reject_requeue_nack(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    names = ["ack", "reject", "requeue", "nack-drop", "nack-requeue"]
    async with Producer(conn) as producer:
        for name in names:
            await producer.publish(name, routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], prefetch_count=10) as consumer:
        messages = {m.payload: m for m in await receive(consumer, 5)}
        assert list(messages) == names
        await messages["ack"].ack()
        await messages["reject"].reject()
        await messages["requeue"].requeue()
        await messages["nack-drop"].nack(requeue=False)
        await messages["nack-requeue"].nack()
        assert messages["ack"].state is MessageState.ACK
        assert messages["reject"].state is MessageState.REJECTED
        assert messages["requeue"].state is MessageState.REQUEUED
        assert messages["nack-drop"].state is MessageState.REJECTED
        assert messages["nack-requeue"].state is MessageState.REQUEUED
        assert all(m.acknowledged for m in messages.values())
        again = await receive(consumer, 2)
        assert sorted(m.payload for m in again) == ["nack-requeue", "requeue"]
        assert all(m.redelivered for m in again)
        await again[0].ack()
        await again[1].ack()
        await assert_quiet(consumer)
    assert await ready_count(conn, queue) == 0


async def test_nack_multiple(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        for i in range(3):
            await producer.publish(i, routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], prefetch_count=10) as consumer:
        messages = await receive(consumer, 3)
        await messages[2].nack(multiple=True, requeue=False)
        await assert_quiet(consumer)
    assert await ready_count(conn, queue) == 0


async def test_acks_in_a_row_settle_exactly_what_was_acked(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    """Acks in a row go out merged (one ``basic.ack`` with ``multiple``); the
    broker must still hold every message that was not acked."""
    queue = topo.queue()
    async with Producer(conn) as producer:
        for i in range(40):
            await producer.publish(i, routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], prefetch_count=50) as consumer:
        messages = await receive(consumer, 40)
        held = [m for m in messages if m.payload % 5 == 2]
        for m in messages:
            if m not in held:
                await m.ack()
        await consumer.qos(prefetch_count=50)  # a round trip: the acks are in
        await assert_quiet(consumer)
        for m in held:
            await m.requeue()
        again = await receive(consumer, len(held))
        assert [m.payload for m in again] == [m.payload for m in held]
        assert all(m.redelivered for m in again)
        for m in again:
            await m.ack()
        await assert_quiet(consumer)
        assert consumer.channel.is_open
    assert await ready_count(conn, queue) == 0


async def test_double_ack_is_a_local_error(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await producer.publish("one", routing_key=queue.name, declare=[queue])
        await producer.publish("two", routing_key=queue.name)
    async with Consumer(conn, [queue], prefetch_count=10) as consumer:
        first, second = await receive(consumer, 2)
        await first.ack()
        with pytest.raises(MessageStateError):
            await first.ack()
        with pytest.raises(MessageStateError):
            await first.reject()
        with pytest.raises(MessageStateError):
            await first.requeue()
        with pytest.raises(MessageStateError):
            await first.nack()
        assert first.state is MessageState.ACK
        await second.reject(requeue=True)
        with pytest.raises(MessageStateError):
            await second.ack()
        # the broker saw no double ack: the channel is still open and works
        [again] = await receive(consumer)
        assert again.payload == "two"
        assert again.redelivered
        await again.ack()
        await consumer.qos(prefetch_count=5)  # a round trip on the same channel
        assert consumer.channel.is_open


async def test_no_ack_consumer(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await producer.publish("x", routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], no_ack=True) as consumer:
        [message] = await receive(consumer)
        assert message.payload == "x"
        assert message.acknowledged
        await message.ack()  # kombu: acking a no_ack message does nothing
        with pytest.raises(MessageStateError):
            await message.reject()
    assert await ready_count(conn, queue) == 0


async def _buffer_then_close(
    conn: trio_msg.Connection, topo: Topology, *, no_ack: bool
) -> tuple[list[Any], BaseException | None]:
    """Three messages reach a consumer's buffer, then its channel closes
    before they are read: what does iteration still hand over?"""
    queue = topo.queue()
    async with Producer(conn) as producer:
        await trio_msg.maybe_declare(queue, producer.channel)
        for n in range(3):
            await producer.publish(n, routing_key=queue.name)
    channel = await conn.open_channel()
    got: list[Any] = []
    ended: BaseException | None = None
    delivered = conn.statistics().delivered
    async with Consumer(channel, [queue], no_ack=no_ack, auto_declare=False) as consumer:
        with anyio.fail_after(5):
            while conn.statistics().delivered < delivered + 3:  # all three buffered
                await anyio.sleep(0.01)
        await channel.aclose()
        try:
            async for message in consumer:
                got.append(message.payload)
        except trio_msg.TrioMsgError as exc:
            ended = exc
    return got, ended


async def test_no_ack_messages_buffered_when_the_channel_closes_are_not_lost(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    # The broker counts no_ack messages as delivered: dropping them would lose them.
    got, ended = await _buffer_then_close(conn, topo, no_ack=True)
    assert got == [0, 1, 2]
    assert isinstance(ended, trio_msg.errors.ChannelClosed)


async def test_ack_mode_messages_buffered_when_the_channel_closes_are_redelivered(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    # Their delivery tags died with the channel: they are skipped, and the
    # broker still has them.
    got, ended = await _buffer_then_close(conn, topo, no_ack=False)
    assert got == []
    assert isinstance(ended, trio_msg.errors.ChannelClosed)
    assert await ready_count(conn, topo.queues[-1]) == 3


async def test_callbacks_run_in_order(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    seen: list[tuple[str, Any]] = []

    def plain(body: Any, message: trio_msg.Message) -> None:
        seen.append(("plain", body))

    async def asynchronous(body: Any, message: trio_msg.Message) -> None:
        await anyio.sleep(0.01)
        seen.append(("async", body))
        await message.ack()

    def last(body: Any, message: trio_msg.Message) -> None:
        assert message.acknowledged
        seen.append(("last", body))

    async with Producer(conn) as producer:
        for i in range(4):
            await producer.publish({"i": i}, routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], callbacks=[plain, asynchronous], prefetch_count=2) as c:
        c.register_callback(last)
        with anyio.fail_after(TIMEOUT):
            await c.run(limit=3)
        assert seen == [(name, {"i": i}) for i in range(3) for name in ("plain", "async", "last")]
        with anyio.fail_after(TIMEOUT):
            await c.drain_events(timeout=TIMEOUT)
        assert seen[-1] == ("last", {"i": 3})
        with pytest.raises(TimeoutError):
            await c.drain_events(timeout=QUIET)


async def test_receive_without_callbacks(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await producer.publish("x", routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue]) as consumer:
        [message] = await receive(consumer)
        with pytest.raises(NotImplementedError):
            await consumer.receive(message.payload, message)
        await message.requeue()
        with pytest.raises(NotImplementedError), anyio.fail_after(TIMEOUT):
            await consumer.run(limit=1)


async def test_on_message_replaces_callbacks(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    seen = []

    async def on_message(message: trio_msg.Message) -> None:
        seen.append(message.body)  # not decoded for us
        await message.ack()

    async with Producer(conn) as producer:
        await producer.publish(b"not json", content_type="application/json", routing_key=queue.name, declare=[queue])  # fmt: skip
    async with Consumer(conn, [queue], on_message=on_message, callbacks=[pytest.fail]) as c:
        with anyio.fail_after(TIMEOUT):
            await c.run(limit=1)
    assert seen == [b"not json"]


async def test_pickle_needs_accept(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    body = {"when": datetime.date(2024, 1, 2), "set": {1, 2}}
    async with Producer(conn) as producer:
        await producer.publish(body, routing_key=queue.name, serializer="pickle", declare=[queue])
    async with Consumer(conn, [queue]) as consumer:
        [message] = await receive(consumer)
        assert message.content_type == "application/x-python-serialize"
        with pytest.raises(ContentDisallowed):
            _ = message.payload
        await message.requeue()
    async with Consumer(conn, [queue], accept=["json"]) as consumer:
        [message] = await receive(consumer)
        with pytest.raises(ContentDisallowed):
            message.decode()
        await message.requeue()
    async with Consumer(conn, [queue], accept=["pickle"]) as consumer:
        [message] = await receive(consumer)
        assert message.redelivered
        assert message.payload == body
        await message.ack()


async def test_on_decode_error_keeps_consuming(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    errors: list[tuple[trio_msg.Message, Exception]] = []
    bodies: list[Any] = []

    async def on_decode_error(message: trio_msg.Message, exc: Exception) -> None:
        errors.append((message, exc))
        await message.reject()

    async def callback(body: Any, message: trio_msg.Message) -> None:
        bodies.append(body)
        await message.ack()

    async with Producer(conn) as producer:
        await producer.publish(b"{broken", content_type="application/json", routing_key=queue.name, declare=[queue])  # fmt: skip
        await producer.publish({"x": 1}, routing_key=queue.name, serializer="pickle")
        await producer.publish({"ok": True}, routing_key=queue.name)
    async with Consumer(
        conn, [queue], callbacks=[callback], on_decode_error=on_decode_error
    ) as consumer:
        with anyio.fail_after(TIMEOUT):
            await consumer.run(limit=3)
    assert bodies == [{"ok": True}]
    assert [type(exc) for _, exc in errors] == [DecodeError, ContentDisallowed]
    assert errors[0][0].body == b"{broken"
    assert all(m.state is MessageState.REJECTED for m, _ in errors)
    assert await ready_count(conn, queue) == 0


async def test_decode_error_without_handler_propagates(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await producer.publish(b"{broken", content_type="application/json", routing_key=queue.name, declare=[queue])  # fmt: skip
    async with Consumer(conn, [queue], callbacks=[pytest.fail]) as consumer:
        with pytest.raises(DecodeError), anyio.fail_after(TIMEOUT):
            await consumer.run()


async def test_cancel_by_queue_and_consuming_from(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    q1, q2 = topo.queue("one"), topo.queue("two")
    async with Consumer(conn, [q1, q2]) as consumer:
        assert consumer.consuming_from(q1)
        assert consumer.consuming_from(q2.name)
        assert not consumer.consuming_from("elsewhere")
        await consumer.cancel_by_queue(q1)
        assert not consumer.consuming_from(q1)
        assert consumer.consuming_from(q2)
        await consumer.cancel_by_queue("never-consumed")  # no-op
        async with Producer(conn) as producer:
            await producer.publish("to one", routing_key=q1.name)
            await producer.publish("to two", routing_key=q2.name)
        [message] = await receive(consumer)
        assert (message.payload, message.routing_key) == ("to two", q2.name)
        await message.ack()
        await assert_quiet(consumer)
        assert [m.payload for m in await get_all(conn, q1)] == ["to one"]
        # consume() starts consuming again from the queues not consumed from
        await consumer.consume()
        assert consumer.consuming_from(q1)
        await consumer.cancel()
        assert not consumer.consuming_from(q1)
        assert not consumer.consuming_from(q2)


async def test_cancel_ends_iteration_and_consume_resumes(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    q1, q2 = topo.queue("one"), topo.queue("two")
    async with Consumer(conn, [q1, q2], prefetch_count=5) as consumer:
        async with Producer(conn) as producer:
            delivered = conn.statistics().delivered
            await producer.publish("before", routing_key=q1.name)
            with anyio.fail_after(TIMEOUT):
                while conn.statistics().delivered == delivered:
                    await anyio.sleep(0.01)  # delivered, not yet received
            await consumer.cancel()
            # what was delivered before the cancel is still yielded, then iteration ends
            [before] = await receive(consumer)
            assert before.payload == "before"
            with anyio.fail_after(TIMEOUT):
                assert [m async for m in consumer] == []
            await consumer.consume()
            assert consumer.consuming_from(q1)
            assert consumer.consuming_from(q2)
            await producer.publish("after", routing_key=q2.name)
        [after] = await receive(consumer)
        assert after.payload == "after"
        assert not after.redelivered
        await after.ack(multiple=True)
        await assert_quiet(consumer)


async def test_add_queue_then_consume(conn: trio_msg.Connection, topo: Topology) -> None:
    q1, q2 = topo.queue("one"), topo.queue("two")
    async with Consumer(conn, [q1]) as consumer:
        await consumer.add_queue(q2)  # declares it (auto_declare), as kombu does
        await consumer.consume()
        assert consumer.consuming_from(q2)
        async with Producer(conn) as producer:
            await producer.publish("two", routing_key=q2.name)
        [message] = await receive(consumer)
        assert message.payload == "two"
        await message.ack()


async def test_purge(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        for i in range(4):
            await producer.publish(i, routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], prefetch_count=1) as consumer:
        [first] = await receive(consumer)
        assert await consumer.purge() == 3  # the unacked one is not ready
        await first.requeue()
        [again] = await receive(consumer)
        assert again.payload == first.payload == 0
        await again.ack()
        await assert_quiet(consumer)


async def test_qos(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        for i in range(3):
            await producer.publish(i, routing_key=queue.name, declare=[queue])
    async with Consumer(conn, []) as consumer:
        # RabbitMQ applies a per-consumer prefetch to the consumers started after it
        await consumer.qos(prefetch_count=2)
        await consumer.add_queue(queue)
        await consumer.consume()
        first, second = await receive(consumer, 2)
        await assert_quiet(consumer)
        await second.ack(multiple=True)
        [third] = await receive(consumer)
        assert [m.payload for m in (first, second, third)] == [0, 1, 2]
        with pytest.raises(NotSupported):
            await consumer.qos(prefetch_size=1024)
        await third.ack()
        assert consumer.channel.is_open


async def test_recover_redelivers(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await producer.publish("again", routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], prefetch_count=10) as consumer:
        [message] = await receive(consumer)
        assert not message.redelivered
        await consumer.recover(requeue=True)
        [again] = await receive(consumer)
        assert again.payload == "again"
        assert again.redelivered
        await again.ack()
        with pytest.raises(NotSupported):
            await consumer.recover(requeue=False)
        await assert_quiet(consumer)
        assert consumer.channel.is_open
    assert await ready_count(conn, queue) == 0


async def test_flow(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Consumer(conn, [queue]) as consumer:
        await consumer.flow(True)
        with pytest.raises(NotSupported):
            await consumer.flow(False)
        async with Producer(conn) as producer:
            await producer.publish("flowing", routing_key=queue.name)
        [message] = await receive(consumer)
        assert message.payload == "flowing"
        await message.ack()


async def test_consumer_revive(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Consumer(conn, [queue], prefetch_count=5) as consumer:
        old = consumer.channel
        async with conn.channel() as new:
            await consumer.revive(new)
            assert consumer.channel is new
            assert not old.is_open  # the channel the consumer opened itself is closed
            assert consumer.consuming_from(queue)
            async with Producer(conn) as producer:
                await producer.publish("revived", routing_key=queue.name)
            [message] = await receive(consumer)
            assert message.payload == "revived"
            assert message.channel is new
            await message.ack()
            await consumer.cancel()
            await assert_quiet(consumer)


async def test_producer_revive(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        old = producer.channel
        async with conn.channel() as new:
            await producer.revive(new)
            assert producer.channel is new
            assert not old.is_open
            assert new.confirming
            result = await producer.publish("revived", routing_key=queue.name, declare=[queue])
            assert result is not None
            assert result.outcome is Outcome.ACK
    assert [m.payload for m in await get_all(conn, queue)] == ["revived"]


async def test_server_cancel_ends_iteration(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await producer.publish("before", routing_key=queue.name, declare=[queue])
    with pytest.raises(ConsumerCancelled):
        async with Consumer(conn, [queue]) as consumer:
            [message] = await receive(consumer)
            assert message.payload == "before"
            await message.ack()
            async with conn.channel() as other:
                await other.queue_delete(queue.name)
            with anyio.fail_after(TIMEOUT):
                async for message in consumer:
                    pytest.fail(f"unexpected {message!r}")
    assert conn.is_open


async def test_unacked_messages_go_to_the_next_consumer(
    conn: trio_msg.Connection, topo: Topology
) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        for i in range(3):
            await producer.publish(i, routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], prefetch_count=10) as consumer:
        messages = await receive(consumer, 3)
        await messages[0].ack()
        # leave with two unacked (and a broken-off iteration)
    async with Consumer(conn, [queue], prefetch_count=10) as consumer:
        again = await receive(consumer, 2)
        assert [m.payload for m in again] == [1, 2]
        assert all(m.redelivered for m in again)
        for m in again:
            await m.ack()
        await assert_quiet(consumer)


async def test_consumer_exit_on_error_requeues(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with Producer(conn) as producer:
        await producer.publish("x", routing_key=queue.name, declare=[queue])
    with pytest.raises(RuntimeError, match="boom"):
        async with Consumer(conn, [queue]) as consumer:
            await receive(consumer)
            raise RuntimeError("boom")
    [message] = await get_all(conn, queue)
    assert message.redelivered


async def test_server_named_queue(conn: trio_msg.Connection, topo: Topology) -> None:
    exchange = topo.exchange("named", "direct")
    anonymous = Queue("", exclusive=True)
    bound = Queue("", exchange=exchange, routing_key="key", exclusive=True)
    async with Consumer(conn, [anonymous, bound]) as consumer:
        assert anonymous.name.startswith("amq.gen-")
        assert bound.name.startswith("amq.gen-")
        assert anonymous.name != bound.name
        async with Producer(conn) as producer:
            await producer.publish("direct", routing_key=anonymous.name)
            await producer.publish("via exchange", exchange=exchange, routing_key="key")
        messages = await receive(consumer, 2)
        got = {(m.routing_key, m.payload) for m in messages}
        assert got == {(anonymous.name, "direct"), ("key", "via exchange")}
        for m in messages:
            await m.ack()


async def test_priorities(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue(max_priority=10)
    async with Producer(conn) as producer:
        await trio_msg.maybe_declare(queue, producer.channel)
        for priority in (1, 5, 0, 9, 5, 10):
            await producer.publish({"p": priority}, routing_key=queue.name, priority=priority)
    async with Consumer(conn, [queue], prefetch_count=1) as consumer:
        order = []
        for _ in range(6):
            [message] = await receive(consumer)
            order.append(message.payload["p"])
            assert message.properties.get("priority", 0) == message.payload["p"]
            await message.ack()
    assert order == [10, 9, 5, 5, 1, 0]


async def test_message_properties_arrive_intact(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue(max_priority=10)
    when = datetime.datetime(2024, 5, 17, 12, 30, 45, tzinfo=datetime.UTC)
    headers = {
        "string": "värde",
        "int": 42,
        "negative": -7,
        "big": 2**40,
        "bool": True,
        "float": 1.5,
        "none": None,
        "list": [1, "two", [3]],
        "nested": {"a": {"b": "c"}},
        "bytes": b"\x00\xff",
    }
    async with Producer(conn) as producer:
        await producer.publish(
            {"body": 1},
            routing_key=queue.name,
            declare=[queue],
            correlation_id="corr-1",
            reply_to="reply.queue",
            message_id="msg-1",
            timestamp=when,
            type="my.type",
            app_id="trio_msg-tests",
            user_id="guest",
            expiration=60,
            headers=headers,
            priority=7,
            delivery_mode="persistent",
        )
        await producer.publish(
            "epoch",
            routing_key=queue.name,
            timestamp=when.timestamp(),
            delivery_mode=1,
            expiration=1.5,
        )
    async with Consumer(conn, [queue], prefetch_count=2) as consumer:
        full, epoch = await receive(consumer, 2)
        props = full.properties
        assert props["correlation_id"] == "corr-1"
        assert props["reply_to"] == "reply.queue"
        assert props["message_id"] == "msg-1"
        assert props["timestamp"].replace(tzinfo=datetime.UTC) == when
        assert props["type"] == "my.type"
        assert props["app_id"] == "trio_msg-tests"
        assert props["user_id"] == "guest"
        assert props["expiration"] == "60000"
        assert props["priority"] == 7
        assert props["delivery_mode"] == 2
        assert props["content_type"] == "application/json"
        assert props["content_encoding"] == "utf-8"
        assert "headers" not in props
        got = dict(full.headers)
        assert isinstance(got.pop("bytes"), bytes | bytearray | str)
        expected = dict(headers)
        del expected["bytes"]
        assert got == expected
        assert full.payload == {"body": 1}
        assert epoch.properties["timestamp"].replace(tzinfo=datetime.UTC) == when
        assert epoch.properties["delivery_mode"] == 1
        assert epoch.properties["expiration"] == "1500"
        assert epoch.headers == {}
        await epoch.ack(multiple=True)


async def test_invalid_delivery_mode_and_priority(conn: trio_msg.Connection) -> None:
    async with Producer(conn) as producer:
        with pytest.raises(ValueError, match="delivery_mode"):
            await producer.publish("x", routing_key="nowhere", delivery_mode=3)
        with pytest.raises(ValueError, match="priority"):
            await producer.publish("x", routing_key="nowhere", priority=256)
        assert producer.channel.is_open


async def test_exchange_delivery_mode_default(conn: trio_msg.Connection, topo: Topology) -> None:
    exchange = topo.exchange("transient", "direct", delivery_mode="transient")
    queue = topo.queue(exchange=exchange, routing_key="k")
    async with Consumer(conn, [queue]) as consumer:
        async with Producer(conn, exchange=exchange) as producer:
            await producer.publish("x", routing_key="k")
            await producer.publish("y", routing_key="k", delivery_mode=2)
        first, second = await receive(consumer, 2)
        assert first.properties["delivery_mode"] == 1
        assert second.properties["delivery_mode"] == 2
        await second.ack(multiple=True)


# --------------------------------------------------------------- exchange types


async def route(
    conn: trio_msg.Connection,
    exchange: Exchange,
    queues: dict[str, Queue],
    messages: list[tuple[str, dict[str, Any] | None]],
) -> dict[str, list[str]]:
    """Publish ``(routing_key, headers)`` pairs (the body is ``"rk|n"``) and
    return which bodies reached which queue."""
    async with Producer(conn, exchange=exchange) as producer:
        for name, queue in queues.items():
            await queue.declare(channel=producer.channel)
            assert name
        for i, (routing_key, headers) in enumerate(messages):
            await producer.publish(f"{routing_key}|{i}", routing_key=routing_key, headers=headers)
    return {name: [m.payload for m in await get_all(conn, q)] for name, q in queues.items()}


async def test_fanout_exchange(conn: trio_msg.Connection, topo: Topology) -> None:
    exchange = topo.exchange("fanout", "fanout")
    queues = {
        "a": topo.queue("a", exchange=exchange, routing_key="ignored"),
        "b": topo.queue("b", exchange=exchange),
    }
    got = await route(conn, exchange, queues, [("x", None), ("", None)])
    assert got == {"a": ["x|0", "|1"], "b": ["x|0", "|1"]}


async def test_topic_exchange(conn: trio_msg.Connection, topo: Topology) -> None:
    exchange = topo.exchange("topic", "topic")
    queues = {
        "star": topo.queue("star", exchange=exchange, routing_key="stock.*.nyse"),
        "hash": topo.queue("hash", exchange=exchange, routing_key="stock.#"),
        "both": topo.queue(
            "both",
            bindings=[binding(exchange, "*.usd.*"), binding(exchange, "weather.#")],
        ),
    }
    keys = ["stock.usd.nyse", "stock.eur.nyse", "stock.usd.nyse.extra", "weather", "other.usd.x"]
    got = await route(conn, exchange, queues, [(k, None) for k in keys])
    assert got == {
        "star": ["stock.usd.nyse|0", "stock.eur.nyse|1"],
        "hash": ["stock.usd.nyse|0", "stock.eur.nyse|1", "stock.usd.nyse.extra|2"],
        "both": ["stock.usd.nyse|0", "weather|3", "other.usd.x|4"],
    }


async def test_headers_exchange(conn: trio_msg.Connection, topo: Topology) -> None:
    exchange = topo.exchange("headers", "headers")
    queues = {
        "all": topo.queue(
            "all",
            exchange=exchange,
            binding_arguments={"x-match": "all", "format": "pdf", "type": "report"},
        ),
        "any": topo.queue(
            "any",
            bindings=[
                binding(exchange, arguments={"x-match": "any", "format": "zip", "type": "log"})
            ],
        ),
    }
    messages: list[tuple[str, dict[str, Any] | None]] = [
        ("", {"format": "pdf", "type": "report"}),
        ("", {"format": "pdf", "type": "log"}),
        ("", {"format": "zip"}),
        ("", {"format": "txt", "type": "memo"}),
        ("", None),
    ]
    got = await route(conn, exchange, queues, messages)
    assert got == {"all": ["|0"], "any": ["|1", "|2"]}


async def test_direct_exchange_routing(conn: trio_msg.Connection, topo: Topology) -> None:
    exchange = topo.exchange("direct", "direct")
    queues = {
        "red": topo.queue("red", exchange=exchange, routing_key="red"),
        "both": topo.queue("both", bindings=[binding(exchange, "red"), binding(exchange, "green")]),
    }
    got = await route(conn, exchange, queues, [("red", None), ("green", None), ("blue", None)])
    assert got == {"red": ["red|0"], "both": ["red|0", "green|1"]}


# ----------------------------------------------------------------- misc surface


async def test_consumer_on_a_shared_channel(conn: trio_msg.Connection, topo: Topology) -> None:
    queue = topo.queue()
    async with conn.channel() as ch:
        async with Producer(ch) as producer:
            await producer.publish("shared", routing_key=queue.name, declare=[queue])
        async with Consumer(ch, [queue]) as consumer:
            [message] = await receive(consumer)
            await message.ack()
        # neither closed the channel they were given
        assert ch.is_open
        await ch.queue_declare(queue.name, passive=True)


async def test_use_outside_context_is_an_error(conn: trio_msg.Connection) -> None:
    producer = Producer(conn)
    consumer = Consumer(conn)
    with pytest.raises(RuntimeError):
        _ = producer.channel
    with pytest.raises(RuntimeError):
        _ = consumer.channel
    with pytest.raises(RuntimeError):
        await consumer.__anext__()
    with pytest.raises(TypeError):
        async with Producer(object()):  # type: ignore[arg-type]
            pass


async def test_leaving_a_consumer_whose_full_buffer_holds_the_reader_is_prompt(
    broker_url: str, unique_name: str
) -> None:
    """Without a prefetch limit the broker sends all it has; with the
    consumer's buffer full the reader waits for room (TCP back-pressure).
    Leaving the consumer must not wait for a cancel reply the reader cannot
    read: it gives the buffer back at once, and nothing is lost."""
    queue = trio_msg.Queue(unique_name, durable=False)
    n = 300
    try:
        async with trio_msg.connect(broker_url) as conn:
            async with trio_msg.Producer(conn) as producer, producer.pipeline() as pipe:
                for i in range(n):
                    await pipe.publish(i, routing_key=queue.name, declare=[queue])
            async with conn.channel() as ch:
                async with trio_msg.Consumer(ch, queues=[queue], buffer_size=5) as consumer:
                    message = await consumer.__anext__()
                    await message.ack()
                    await anyio.sleep(0.2)  # the buffer fills; the reader waits
                    started = anyio.current_time()
                # The channel stays open and usable, nothing hangs.
                assert anyio.current_time() - started < 2
                await ch.queue_declare(queue.name, passive=True)
                assert ch.is_open
        # Every message but the acked one is back in the queue (the broker
        # requeues a closed connection's messages in its own time).
        with anyio.move_on_after(5):
            while await _depth(broker_url, queue.name) != n - 1:
                await anyio.sleep(0.05)
        assert await _depth(broker_url, queue.name) == n - 1
    finally:
        async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
            await ch.queue_delete(queue.name)


async def _depth(broker_url: str, name: str) -> int:
    async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
        return (await ch.queue_declare(name, passive=True)).message_count
