"""memory://: the embedded broker through the whole client stack, frames included.

Each test gets a broker of its own (a unique name); what is checked is what
a client sees, with RabbitMQ's behaviour as the specification (the reply
codes and texts below are the ones RabbitMQ 3.10 sends).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

import trio_msg
from trio_msg import Consumer, Exchange, Producer, Queue
from trio_msg._broker import attach, drop_broker
from trio_msg.errors import (
    AccessRefused,
    ConsumerCancelled,
    NotFound,
    NotImplementedByBroker,
    PreconditionFailed,
    ResourceLocked,
    Unroutable,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 5


@pytest.fixture
def url() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield f"memory://{name}"
    drop_broker(name)


@pytest.fixture
async def conn(url: str) -> AsyncIterator[trio_msg.Connection]:
    async with trio_msg.connect(url, revive=False) as connection:
        yield connection


async def receive(consumer: Consumer, n: int) -> list[trio_msg.Message]:
    out = []
    with anyio.fail_after(TIMEOUT):
        async for message in consumer:
            out.append(message)
            if len(out) == n:
                break
    return out


async def publish_all(conn: trio_msg.Connection, queue: Queue, bodies: list[str]) -> None:
    async with Producer(conn) as producer:
        for body in bodies:
            await producer.publish(body, routing_key=queue.name, declare=[queue])


async def test_publish_consume_and_confirm(conn: trio_msg.Connection) -> None:
    queue = Queue("q", durable=False)
    async with Producer(conn, serializer="json") as producer:
        for i in range(20):
            result = await producer.publish({"i": i}, routing_key="q", declare=[queue])
            assert result is not None and result.outcome is trio_msg.Outcome.ACK
    messages = []
    async with Consumer(conn, [queue], prefetch_count=3) as consumer:
        with anyio.fail_after(TIMEOUT):
            async for m in consumer:
                messages.append(m)
                await m.ack()
                if len(messages) == 20:
                    break
    assert [m.payload for m in messages] == [{"i": i} for i in range(20)]
    assert not any(m.redelivered for m in messages)


async def test_connections_to_one_name_share_a_broker_and_names_are_separate(url: str) -> None:
    queue = Queue("shared", durable=False)
    async with trio_msg.connect(url, revive=False) as a:
        await publish_all(a, queue, ["x"])
    async with trio_msg.connect(url, revive=False) as b, b.channel() as ch:
        assert (await ch.queue_declare("shared", passive=True)).message_count == 1
    other = f"{url}-other"
    try:
        async with trio_msg.connect(other, revive=False) as c, c.channel() as ch:
            with pytest.raises(NotFound, match="no queue 'shared' in vhost '/'"):
                await ch.queue_declare("shared", passive=True)
    finally:
        drop_broker(other.removeprefix("memory://"))


async def test_requeued_messages_go_back_in_order_flagged_redelivered(
    conn: trio_msg.Connection,
) -> None:
    queue = Queue("order", durable=False)
    await publish_all(conn, queue, [str(i) for i in range(6)])
    async with conn.channel() as ch:
        first = [await ch.basic_get("order") for _ in range(4)]
        assert all(m is not None for m in first)
        # reject 2 and then 0, ack the others
        await first[2].reject(requeue=True)  # type: ignore[union-attr]
        await first[0].reject(requeue=True)  # type: ignore[union-attr]
        await first[1].ack()  # type: ignore[union-attr]
        await first[3].ack()  # type: ignore[union-attr]
    async with Consumer(conn, [queue], prefetch_count=4) as consumer:
        rest = await receive(consumer, 4)
        for m in rest:
            await m.ack()
    # RabbitMQ puts requeued messages back where they were: 0 and 2 come
    # before 4 and 5, in their original order.
    assert [m.payload for m in rest] == ["0", "2", "4", "5"]
    assert [m.redelivered for m in rest] == [True, True, False, False]


async def test_unacked_messages_return_when_the_channel_closes(
    conn: trio_msg.Connection,
) -> None:
    queue = Queue("back", durable=False)
    await publish_all(conn, queue, ["a", "b"])
    async with Consumer(conn, [queue], prefetch_count=10) as consumer:
        await receive(consumer, 2)
    async with conn.channel() as ch:
        got = await ch.basic_get("back")
        assert got is not None and got.payload == "a" and got.redelivered
        await got.ack()


async def test_prefetch_bounds_what_is_in_flight(conn: trio_msg.Connection) -> None:
    queue = Queue("pf", durable=False)
    await publish_all(conn, queue, [str(i) for i in range(5)])
    async with Consumer(conn, [queue], prefetch_count=2) as consumer:
        first = await receive(consumer, 2)
        async with conn.channel() as ch:
            # two delivered and unacked, three still ready in the queue
            assert (await ch.queue_declare("pf", passive=True)).message_count == 3
        await first[0].ack()
        await first[1].ack()
        for _ in range(3):
            [m] = await receive(consumer, 1)
            await m.ack()
        async with conn.channel() as ch:
            assert (await ch.queue_declare("pf", passive=True)).message_count == 0


@pytest.mark.parametrize(
    ("type", "bind_key", "arguments", "key", "headers", "routed"),
    [
        ("direct", "a", None, "a", None, True),
        ("direct", "a", None, "b", None, False),
        ("fanout", "", None, "anything", None, True),
        ("topic", "a.*.c", None, "a.b.c", None, True),
        ("topic", "a.#", None, "a", None, True),
        ("topic", "a.*", None, "a", None, False),
        ("headers", "", {"x-match": "all", "k": "v", "n": 1}, "", {"k": "v", "n": 1}, True),
        ("headers", "", {"x-match": "all", "k": "v", "n": 1}, "", {"k": "v"}, False),
        ("headers", "", {"x-match": "any", "k": "v", "n": 1}, "", {"k": "v"}, True),
    ],
)
async def test_exchange_types_route_as_rabbitmq(
    conn: trio_msg.Connection,
    type: str,
    bind_key: str,
    arguments: dict[str, object] | None,
    key: str,
    headers: dict[str, object] | None,
    routed: bool,
) -> None:
    async with conn.channel() as ch:
        await ch.exchange_declare("x", type, durable=False)
        await ch.queue_declare("q", durable=False)
        await ch.queue_bind("q", "x", bind_key, arguments)
    async with Producer(conn, exchange="x", auto_declare=False) as producer:
        if routed:
            await producer.publish(b"m", routing_key=key, headers=headers, mandatory=True)
        else:
            with pytest.raises(Unroutable):
                await producer.publish(b"m", routing_key=key, headers=headers, mandatory=True)
    async with conn.channel() as ch:
        assert (await ch.queue_declare("q", passive=True)).message_count == int(routed)


async def test_exchange_to_exchange_bindings_and_cycles(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        await ch.exchange_declare("a", "fanout", durable=False)
        await ch.exchange_declare("b", "fanout", durable=False)
        await ch.exchange_bind("b", "a")
        await ch.exchange_bind("a", "b")  # a cycle: each queue still gets one copy
        await ch.queue_declare("qa", durable=False)
        await ch.queue_declare("qb", durable=False)
        await ch.queue_bind("qa", "a")
        await ch.queue_bind("qb", "b")
    async with Producer(conn, exchange="a", auto_declare=False) as producer:
        await producer.publish(b"m")
    async with conn.channel() as ch:
        assert (await ch.queue_declare("qa", passive=True)).message_count == 1
        assert (await ch.queue_declare("qb", passive=True)).message_count == 1


async def test_errors_carry_rabbitmqs_codes_and_texts(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("q", durable=False)
    cases: list[tuple[type[Exception], str, object]] = [
        (
            NotFound,
            "NOT_FOUND - no queue 'nope' in vhost '/'",
            lambda c: c.queue_declare("nope", passive=True),
        ),
        (
            NotFound,
            "NOT_FOUND - no exchange 'nope' in vhost '/'",
            lambda c: c.queue_bind("q", "nope"),
        ),
        (
            PreconditionFailed,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': "
            "received 'true' but current is 'false'",
            lambda c: c.queue_declare("q", durable=True),
        ),
        (
            AccessRefused,
            "ACCESS_REFUSED - queue name 'amq.q' contains reserved prefix 'amq.*'",
            lambda c: c.queue_declare("amq.q"),
        ),
        (
            AccessRefused,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
            lambda c: c.exchange_delete(""),
        ),
        (
            PreconditionFailed,
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/'",
            lambda c: c.exchange_declare("amq.direct", "fanout"),
        ),
        (
            AccessRefused,
            "ACCESS_REFUSED - exchange name 'amq.new' contains reserved prefix 'amq.*'",
            lambda c: c.exchange_declare("amq.new", "fanout"),
        ),
    ]
    for error, text, call in cases:
        async with conn.channel() as ch:
            with pytest.raises(error) as info:
                await call(ch)  # type: ignore[operator]
            assert text in str(info.value)
    # the connection outlived every channel error
    async with conn.channel() as ch:
        assert (await ch.queue_declare("q", passive=True)).message_count == 0


async def test_exclusive_queues_belong_to_their_connection(url: str) -> None:
    async with trio_msg.connect(url, revive=False) as a:
        async with a.channel() as ch:
            name = (await ch.queue_declare("", exclusive=True, durable=False)).queue
        assert name.startswith("amq.gen-")
        async with trio_msg.connect(url, revive=False) as b, b.channel() as ch:
            with pytest.raises(ResourceLocked, match="cannot obtain exclusive access"):
                await ch.queue_declare(name, passive=True)
    # gone with its connection
    async with trio_msg.connect(url, revive=False) as c, c.channel() as ch:
        with pytest.raises(NotFound):
            await ch.queue_declare(name, passive=True)


async def test_a_reply_text_too_long_for_a_short_string_is_cut_as_rabbitmq_cuts_it(
    url: str,
) -> None:
    """RabbitMQ (checked on 3.10) keeps the first 252 bytes and adds "...";
    the channel closes as usual and the connection goes on."""
    name = "q" * 200
    async with trio_msg.connect(url, revive=False) as a, a.channel() as ch:
        await ch.queue_declare(name, exclusive=True, durable=False)
        async with trio_msg.connect(url, revive=False) as b:
            async with b.channel() as other:
                with pytest.raises(ResourceLocked) as info:
                    await other.queue_declare(name, passive=True)
            text = info.value.reply_text
            assert len(text.encode()) == 255
            assert text.startswith(
                f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name[:100]}"
            )
            assert text.endswith("...")
            assert b.is_open


async def test_deleting_a_queue_cancels_its_consumers(url: str) -> None:
    queue = Queue("doomed", durable=False)
    async with trio_msg.connect(url, revive=False) as conn, Consumer(conn, [queue]) as consumer:
        async with trio_msg.connect(url, revive=False) as other, other.channel() as ch:
            await ch.queue_delete("doomed")
        with pytest.raises(ConsumerCancelled), anyio.fail_after(TIMEOUT):
            async for _ in consumer:
                pass


async def test_delete_if_unused_and_if_empty(conn: trio_msg.Connection) -> None:
    queue = Queue("d", durable=False)
    await publish_all(conn, queue, ["x"])
    async with conn.channel() as ch:
        with pytest.raises(PreconditionFailed, match="queue 'd' in vhost '/' not empty"):
            await ch.queue_delete("d", if_empty=True)
    async with Consumer(conn, [queue], prefetch_count=1) as consumer:
        async with conn.channel() as ch:
            with pytest.raises(PreconditionFailed, match="queue 'd' in vhost '/' in use"):
                await ch.queue_delete("d", if_unused=True)
        [m] = await receive(consumer, 1)
        await m.ack()
    async with conn.channel() as ch:
        assert await ch.queue_delete("d", if_empty=True, if_unused=True) == 0


async def test_message_ttl_expires_messages(conn: trio_msg.Connection) -> None:
    queue = Queue("ttl", durable=False)
    async with Producer(conn) as producer:
        await producer.publish("gone", routing_key="ttl", declare=[queue], expiration=0.01)
        await producer.publish("kept", routing_key="ttl")
    await anyio.sleep(0.05)  # the broker's clock is real time: let 10 ms pass
    async with conn.channel() as ch:
        got = await ch.basic_get("ttl")
        assert got is not None and got.payload == "kept"
        assert await ch.basic_get("ttl") is None


async def test_transactions_commit_and_roll_back(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("tx", durable=False)
        await ch.tx_select()
        await ch.basic_publish(b"rolled back", routing_key="tx")
        await ch.tx_rollback()
        await ch.basic_publish(b"committed", routing_key="tx")
        assert (await ch.queue_declare("tx", passive=True)).message_count == 0
        await ch.tx_commit()
        assert (await ch.queue_declare("tx", passive=True)).message_count == 1


async def test_what_it_does_not_implement_is_refused_with_540(url: str) -> None:
    # 540 is a connection error, as in RabbitMQ: the connection ends with it.
    with pytest.raises(NotImplementedByBroker, match="queue type 'quorum'"):
        async with trio_msg.connect(url, revive=False) as conn, conn.channel() as ch:
            await ch.queue_declare("qq", arguments={"x-queue-type": "quorum"})


async def test_wrong_password_is_refused(url: str) -> None:
    with pytest.raises(trio_msg.errors.AuthenticationError):
        async with trio_msg.connect(url, password="nope", revive=False):
            pass


async def test_unknown_vhost_is_refused(url: str) -> None:
    with pytest.raises(trio_msg.errors.NotAllowed, match="vhost other not found"):
        async with trio_msg.connect(url, vhost="other", revive=False):
            pass


async def test_exchange_publish_with_a_default_exchange_entity(conn: trio_msg.Connection) -> None:
    exchange = Exchange("fan", "fanout", durable=False)
    q1, q2 = Queue("q1", exchange, durable=False), Queue("q2", exchange, durable=False)
    async with Producer(conn, exchange=exchange) as producer:
        await producer.publish("both", declare=[q1, q2])
    async with conn.channel() as ch:
        assert (await ch.queue_declare("q1", passive=True)).message_count == 1
        assert (await ch.queue_declare("q2", passive=True)).message_count == 1


async def get_all(conn: trio_msg.Connection, name: str) -> list[trio_msg.Message]:
    out = []
    async with conn.channel() as ch:
        while (m := await ch.basic_get(name, no_ack=True)) is not None:
            out.append(m)
    return out


async def test_dead_lettering_records_x_death(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        await ch.exchange_declare("dlx", "fanout", durable=False)
        await ch.queue_declare("dead", durable=False)
        await ch.queue_bind("dead", "dlx")
        await ch.queue_declare(
            "work",
            durable=False,
            arguments={"x-dead-letter-exchange": "dlx", "x-max-length": 2},
        )
    async with Producer(conn) as producer:
        for body in ("a", "b", "c"):  # "a" is dropped from the head: maxlen
            await producer.publish(body, routing_key="work")
    async with conn.channel() as ch:
        b = await ch.basic_get("work")
        assert b is not None and b.payload == "b"
        await b.reject(requeue=False)  # rejected
    dead = await get_all(conn, "dead")
    assert [m.payload for m in dead] == ["a", "b"]
    assert [m.exchange for m in dead] == ["dlx", "dlx"]
    first, second = (m.headers["x-death"][0] for m in dead)
    assert first["reason"] == "maxlen" and second["reason"] == "rejected"
    for death in (first, second):
        assert death["queue"] == "work"
        assert death["count"] == 1
        assert death["exchange"] == ""
        assert death["routing-keys"] == ["work"]
    assert dead[0].headers["x-first-death-reason"] == "maxlen"


async def test_expired_messages_are_dead_lettered_without_their_expiration(
    conn: trio_msg.Connection,
) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("dead", durable=False)
        await ch.queue_declare(
            "ttl",
            durable=False,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"},
        )
    async with Producer(conn) as producer:
        await producer.publish("late", routing_key="ttl", expiration=0.001)
    await anyio.sleep(0.02)  # the broker's clock is real time
    assert await get_all(conn, "ttl") == []
    [dead] = await get_all(conn, "dead")
    death = dead.headers["x-death"][0]
    assert death["reason"] == "expired"
    assert death["original-expiration"] == "1"
    assert dead.properties.get("expiration") is None
    assert dead.routing_key == "dead"


async def test_reject_publish_overflow_nacks_the_publisher(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare(
            "full", durable=False, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
    async with Producer(conn) as producer:
        await producer.publish("fits", routing_key="full")
        with pytest.raises(trio_msg.errors.MessageNacked):
            await producer.publish("refused", routing_key="full")
    assert [m.payload for m in await get_all(conn, "full")] == ["fits"]


async def test_priority_queue_delivers_highest_first(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("prio", durable=False, arguments={"x-max-priority": 5})
    async with Producer(conn) as producer:
        for body, priority in (("low", 1), ("none", 0), ("high", 9), ("mid", 3), ("low2", 1)):
            await producer.publish(body, routing_key="prio", priority=priority)
    # 9 is capped to the queue's 5; within a priority, first in first out
    assert [m.payload for m in await get_all(conn, "prio")] == [
        "high",
        "mid",
        "low",
        "low2",
        "none",
    ]


async def test_single_active_consumer_gets_everything(url: str) -> None:
    async with trio_msg.connect(url, revive=False) as conn:
        async with conn.channel() as ch:
            await ch.queue_declare(
                "sac", durable=False, arguments={"x-single-active-consumer": True}
            )
        sac = Queue("sac", durable=False, queue_arguments={"x-single-active-consumer": True})
        async with (
            Consumer(conn, [sac], prefetch_count=10) as first,
            Consumer(conn, [sac], prefetch_count=10) as second,
        ):
            await publish_all(conn, sac, ["1", "2", "3"])
            got = await receive(first, 3)  # all to the first, the active one
            assert [m.payload for m in got] == ["1", "2", "3"]
            for m in got:
                await m.ack()
            with anyio.move_on_after(0.1) as quiet:
                await receive(second, 1)
            assert quiet.cancelled_caught


async def test_direct_reply_to(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("rpc", durable=False)
    replies = Queue("amq.rabbitmq.reply-to", no_declare=True)
    async with Consumer(conn, [replies], no_ack=True, auto_declare=False) as consumer:
        async with Producer(consumer.channel) as producer:
            await producer.publish("ping", routing_key="rpc", reply_to="amq.rabbitmq.reply-to")
        [request] = await get_all(conn, "rpc")
        reply_to = request.properties["reply_to"]
        assert reply_to.startswith("amq.rabbitmq.reply-to.")
        async with Producer(conn) as server:
            await server.publish("pong", routing_key=reply_to)
        [reply] = await receive(consumer, 1)
        assert reply.payload == "pong"


async def test_cc_and_bcc_headers_add_routing_keys(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        for name in ("to", "cc", "bcc"):
            await ch.queue_declare(name, durable=False)
    async with Producer(conn) as producer:
        await producer.publish("m", routing_key="to", headers={"CC": ["cc"], "BCC": ["bcc"]})
    for name in ("to", "cc", "bcc"):
        [m] = await get_all(conn, name)
        assert m.headers.get("CC") == ["cc"]
        assert "BCC" not in m.headers


async def test_higher_priority_consumers_get_messages_first(conn: trio_msg.Connection) -> None:
    queue = Queue("cp", durable=False)
    await publish_all(conn, queue, [])
    high = Consumer(
        conn, [Queue("cp", durable=False, consumer_arguments={"x-priority": 10})], prefetch_count=2
    )
    async with high, Consumer(conn, [Queue("cp", durable=False)], prefetch_count=10) as low:
        await publish_all(conn, queue, [str(i) for i in range(5)])
        # the high-priority consumer takes what its prefetch allows, the rest
        # goes to the low one
        got_high = await receive(high, 2)
        got_low = await receive(low, 3)
        assert [m.payload for m in got_high] == ["0", "1"]
        assert [m.payload for m in got_low] == ["2", "3", "4"]


async def test_an_exclusive_consumer_has_the_queue_to_itself(conn: trio_msg.Connection) -> None:
    async with conn.channel() as ch:
        await ch.queue_declare("ex", durable=False)
    async with conn.channel() as ch, conn.channel() as other:
        tag = await ch.basic_consume("ex", _Sink(), exclusive=True)
        assert tag.startswith("amq.ctag-")
        with pytest.raises(AccessRefused, match="queue 'ex' in vhost '/' in exclusive use"):
            await other.basic_consume("ex", _Sink())


class _Sink:
    def send_nowait(self, item: object) -> None:
        pass

    async def send(self, item: object) -> None:
        pass

    def close(self) -> None:
        pass


async def test_leaving_a_consumer_with_deliveries_buffered_returns_them(
    conn: trio_msg.Connection,
) -> None:
    # The consumer rejects what it holds as it leaves and the broker, which
    # answers at once, hands those messages straight back while the consumer
    # is still there: leaving must still end, and every message stays.
    queue = Queue("leave", durable=False)
    await publish_all(conn, queue, [f"m{i}" for i in range(20)])
    with anyio.fail_after(TIMEOUT):
        for _ in range(3):
            async with Consumer(conn, [queue], prefetch_count=10) as consumer:
                [first] = await receive(consumer, 1)
                await first.ack()
    async with conn.channel() as ch:
        assert (await ch.queue_declare("leave", passive=True)).message_count == 17


async def test_a_consumer_with_deliveries_in_flight_still_gets_the_next_one(url: str) -> None:
    # A delivery to a consumer that has others unacknowledged wakes its
    # connection's reader lazily (memory:// moderates its wake-ups); the
    # consumer, waiting for it, still gets it.
    queue = Queue("inflight", durable=False)
    async with (
        trio_msg.connect(url, revive=False) as consumer_conn,
        trio_msg.connect(url, revive=False) as publisher_conn,
    ):
        await publish_all(publisher_conn, queue, ["m0", "m1", "m2"])
        async with Consumer(consumer_conn, [queue], prefetch_count=10) as consumer:
            held = await receive(consumer, 3)  # three in flight, none acked
            for i in range(3, 6):
                await publish_all(publisher_conn, queue, [f"m{i}"])
                [message] = await receive(consumer, 1)
                assert message.body == f"m{i}".encode()
                held.append(message)
            for message in held:
                await message.ack()


@pytest.mark.anyio
async def test_the_memory_stream_keeps_to_max_bytes_and_loses_nothing_when_cancelled() -> None:
    """``memory://``'s client end as an anyio byte stream: a read returns at
    most ``max_bytes`` (the rest comes next), and a read cancelled before
    it returns takes nothing."""
    name = f"stream-{uuid.uuid4().hex[:8]}"
    stream, serve = attach(name)
    try:
        # (bytes lost to the cancelled read would be a hang: a failure here)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                await stream.send(b"AMQP\x00\x00\x09\x01")  # the broker answers connection.start
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await stream.receive(4)  # cancelled at once: takes nothing
                got = b""
                while len(got) < 7 or len(got) < 8 + int.from_bytes(got[3:7], "big"):
                    piece = await stream.receive(4)
                    assert 0 < len(piece) <= 4
                    got += piece
                assert got[:3] == b"\x01\x00\x00"  # a method frame on channel 0, read whole
                await stream.aclose()
                tg.cancel_scope.cancel()
    finally:
        drop_broker(name)
