"""kombu code ports unchanged (issue 19): what a kombu program does, the
ported program does too, against the real broker, on trio and asyncio.

Each test is a kombu idiom whose trio_msg port once quietly did something
else: messages published transient, acks from plain callbacks never sent,
a revived consumer's old consumer still taking messages, kombu's ``ssl``
dict ignored, ``publish(retry=True)`` refused on a plain ``connect(url)``.
"""

from __future__ import annotations

import gc
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import kombu
import pytest
import trustme
from _broker import BROKER_HOST, BROKER_PORT, BROKER_URL
from _proxy import TcpProxy
from anyio.streams.tls import TLSListener

import trio_msg
from trio_msg import Consumer, Exchange, Message, Producer, Queue
from trio_msg.errors import ConnectionFailed, MessageStateError

pytestmark = pytest.mark.anyio

TIMEOUT = 10  # seconds for anything the broker should do at once


@pytest.fixture
async def conn(broker_url: str) -> AsyncIterator[trio_msg.Connection]:
    async with trio_msg.connect(broker_url) as connection:
        yield connection


@pytest.fixture
async def queue(conn: trio_msg.Connection, unique_name: str) -> AsyncIterator[Queue]:
    q = Queue(unique_name, durable=False, expires=120)
    yield q
    with anyio.fail_after(TIMEOUT):
        async with conn.channel() as ch:
            await ch.queue_delete(q.name)


async def counts(conn: trio_msg.Connection, name: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue, by a passive declare."""
    async with conn.channel() as ch:
        ok = await ch.queue_declare(name, passive=True)
    return ok.message_count, ok.consumer_count


async def get(conn: trio_msg.Connection, name: str) -> Message:
    """One message from the queue (``basic.get``), waiting for it to arrive."""
    async with conn.channel() as ch:
        with anyio.fail_after(TIMEOUT):
            while True:
                message = await ch.basic_get(name, no_ack=True)
                if message is not None:
                    return message
                await anyio.sleep(0.01)


# ------------------------------------------------------------------ persistence


async def test_published_persistent_unless_told(conn: trio_msg.Connection, queue: Queue) -> None:
    """kombu's Producer.publish sends delivery_mode 2 unless the call or an
    Exchange says otherwise; the broker receives what was asked."""
    transient_x = Exchange("amq.direct", delivery_mode="transient")
    async with Producer(conn) as producer:
        await producer.publish("default", routing_key=queue.name, declare=[queue])
        assert (await get(conn, queue.name)).properties["delivery_mode"] == 2
        await producer.publish("asked", routing_key=queue.name, delivery_mode="transient")
        assert (await get(conn, queue.name)).properties["delivery_mode"] == 1
        await producer.publish("asked", routing_key=queue.name, delivery_mode=1)
        assert (await get(conn, queue.name)).properties["delivery_mode"] == 1
        # publish(exchange=Exchange(...)): that exchange's delivery_mode.
        async with conn.channel() as ch:
            await ch.queue_bind(queue.name, "amq.direct", routing_key=queue.name)
        await producer.publish("x", routing_key=queue.name, exchange=transient_x)
        assert (await get(conn, queue.name)).properties["delivery_mode"] == 1
    async with Producer(conn, exchange=transient_x) as producer:
        # The producer's exchange, also for an exchange given by name.
        await producer.publish("x", routing_key=queue.name)
        assert (await get(conn, queue.name)).properties["delivery_mode"] == 1
        await producer.publish("x", routing_key=queue.name, exchange="amq.direct")
        assert (await get(conn, queue.name)).properties["delivery_mode"] == 1
        # An explicit delivery_mode wins over the exchange's.
        await producer.publish("x", routing_key=queue.name, delivery_mode="persistent")
        assert (await get(conn, queue.name)).properties["delivery_mode"] == 2


def _kombu_publish_all(url: str, queue: str, cases: list[dict[str, Any]]) -> None:
    """kombu itself publishes one message per case (its own Producer)."""
    with kombu.Connection(url) as connection:
        for case in cases:
            kwargs = dict(case)
            exchange = kwargs.pop("producer_exchange", None)
            producer = connection.Producer(
                exchange=kombu.Exchange(**exchange) if exchange else None, auto_declare=False
            )
            if isinstance(kwargs.get("exchange"), dict):
                kwargs["exchange"] = kombu.Exchange(**kwargs["exchange"])
            producer.publish("k", routing_key=queue, **kwargs)


async def test_delivery_mode_as_kombu_sets_it(conn: trio_msg.Connection, queue: Queue) -> None:
    """The same publish calls, by kombu and by trio_msg: the broker receives
    the same delivery modes."""
    cases: list[dict[str, Any]] = [
        {},
        {"delivery_mode": "transient"},
        {"delivery_mode": 2},
        {"exchange": {"name": "", "delivery_mode": "transient"}},
        {"producer_exchange": {"name": "", "delivery_mode": "transient"}},
        {"producer_exchange": {"name": "", "delivery_mode": 1}, "delivery_mode": "persistent"},
    ]
    async with conn.channel() as ch:
        await ch.queue_declare(queue.name, durable=False, arguments={"x-expires": 120_000})
    # (kombu over TCP: its own memory:// is a transport of its own)
    await anyio.to_thread.run_sync(_kombu_publish_all, BROKER_URL, queue.name, cases)
    theirs = [(await get(conn, queue.name)).properties.get("delivery_mode") for _ in cases]
    for case in cases:
        kwargs = dict(case)
        exchange = kwargs.pop("producer_exchange", None)
        if isinstance(kwargs.get("exchange"), dict):
            kwargs["exchange"] = Exchange(**kwargs["exchange"])
        async with Producer(
            conn, exchange=Exchange(**exchange) if exchange else None, auto_declare=False
        ) as producer:
            await producer.publish("t", routing_key=queue.name, **kwargs)
    ours = [(await get(conn, queue.name)).properties.get("delivery_mode") for _ in cases]
    assert theirs == [2, 1, 2, 1, 1, 2]
    assert ours == theirs


async def test_pipeline_publishes_persistent_by_default(
    conn: trio_msg.Connection, queue: Queue
) -> None:
    async with Producer(conn) as producer:
        async with producer.pipeline(10) as pipe:
            await pipe.publish("x", routing_key=queue.name, declare=[queue])
        assert pipe.acked == 1
    assert (await get(conn, queue.name)).properties["delivery_mode"] == 2


# ------------------------------------------------------------- plain callbacks


def _no_runtime_warnings(caught: list[warnings.WarningMessage]) -> None:
    gc.collect()  # a coroutine never awaited warns when it is collected
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not runtime, [str(w.message) for w in runtime]


@pytest.mark.filterwarnings("error")
async def test_plain_callback_acks(conn: trio_msg.Connection, queue: Queue) -> None:
    """``def on_message(body, message): message.ack()``, kombu's most common
    consumer, acks: nothing is left unacknowledged or comes back."""
    bodies: list[Any] = []

    def on_message(body: Any, message: Message) -> None:
        bodies.append(body)
        message.ack()

    async with Producer(conn) as producer:
        for i in range(3):
            await producer.publish(i, routing_key=queue.name, declare=[queue])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Consumer(conn, [queue], callbacks=[on_message], prefetch_count=1) as consumer:
            with anyio.fail_after(TIMEOUT):
                await consumer.run(limit=3)
        _no_runtime_warnings(caught)
    assert bodies == [0, 1, 2]
    # The consumer's channel is closed: unacked messages would be back.
    assert await counts(conn, queue.name) == (0, 0)


@pytest.mark.filterwarnings("error")
async def test_plain_on_message_rejects_and_requeues(
    conn: trio_msg.Connection, queue: Queue
) -> None:
    seen: list[bytes] = []

    def on_message(message: Message) -> None:
        seen.append(message.body)
        if message.body == b"drop":  # (a str body is sent as text/plain)
            message.reject()
        elif message.body == b"again" and not message.redelivered:
            message.requeue()
        else:
            message.ack()

    async with Producer(conn) as producer:
        await producer.publish("drop", routing_key=queue.name, declare=[queue])
        await producer.publish("again", routing_key=queue.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Consumer(conn, [queue], on_message=on_message) as consumer:
            with anyio.fail_after(TIMEOUT):
                await consumer.run(limit=3)
        _no_runtime_warnings(caught)
    assert seen == [b"drop", b"again", b"again"]
    assert await counts(conn, queue.name) == (0, 0)


async def test_awaited_ack_still_works_and_twice_is_an_error(
    conn: trio_msg.Connection, queue: Queue
) -> None:
    async with Producer(conn) as producer:
        await producer.publish("x", routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue]) as consumer:
        with anyio.fail_after(TIMEOUT):
            message = await consumer.__anext__()
        await message.ack()
        with pytest.raises(MessageStateError):
            message.ack()
        with pytest.raises(MessageStateError):
            await message.reject()
    assert await counts(conn, queue.name) == (0, 0)


async def test_ack_of_a_no_ack_message_is_quiet(conn: trio_msg.Connection, queue: Queue) -> None:
    async with Producer(conn) as producer:
        await producer.publish("x", routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue], no_ack=True) as consumer:
        with anyio.fail_after(TIMEOUT):
            message = await consumer.__anext__()
        message.ack()
        await message.ack()  # as in kombu: nothing to do, however often
        assert consumer.channel.is_open
        async with Producer(conn) as producer:  # the channel still works
            await producer.publish("y", routing_key=queue.name)
        with anyio.fail_after(TIMEOUT):
            assert (await consumer.__anext__()).payload == "y"
    assert await counts(conn, queue.name) == (0, 0)


# ------------------------------------------------------------------- consumers


async def test_add_queue_declares_it(conn: trio_msg.Connection, unique_name: str) -> None:
    """kombu's add_queue declares at once (auto_declare): a producer can
    route to it before consume() is called."""
    first = Queue(unique_name + ".1", durable=False, expires=120)
    second = Queue(unique_name + ".2", durable=False, expires=120)
    try:
        async with Consumer(conn, [first]) as consumer:
            assert await consumer.add_queue(second) is second
            assert await counts(conn, second.name) == (0, 0)  # declared; not consumed yet
            assert not consumer.consuming_from(second)
            async with Producer(conn) as producer:
                await producer.publish("two", routing_key=second.name)
            await consumer.consume()
            with anyio.fail_after(TIMEOUT):
                message = await consumer.__anext__()
            assert message.payload == "two"
            message.ack()
    finally:
        async with conn.channel() as ch:
            await ch.queue_delete(first.name)
            await ch.queue_delete(second.name)


async def test_revive_cancels_the_consumer_on_the_old_channel(
    conn: trio_msg.Connection, queue: Queue
) -> None:
    """revive(new_channel) while the old one is open: the broker has one
    consumer, and every message published afterwards reaches it."""
    async with conn.channel() as old, conn.channel() as new:
        async with Consumer(old, [queue]) as consumer:
            await consumer.revive(new)
            assert consumer.channel is new
            assert old.is_open
            assert await counts(conn, queue.name) == (0, 1)
            async with Producer(conn) as producer:
                for i in range(4):
                    await producer.publish(i, routing_key=queue.name)
            got = []
            with anyio.fail_after(TIMEOUT):
                async for message in consumer:
                    got.append(message.payload)
                    message.ack()
                    if len(got) == 4:
                        break
            assert got == [0, 1, 2, 3]
        assert await counts(conn, queue.name) == (0, 0)


async def test_consumer_close_is_cancel(conn: trio_msg.Connection, queue: Queue) -> None:
    """kombu's Consumer.close() cancels: the broker sends no more, and what
    was delivered can still be acked."""
    async with Producer(conn) as producer:
        await producer.publish("x", routing_key=queue.name, declare=[queue])
    async with Consumer(conn, [queue]) as consumer:
        with anyio.fail_after(TIMEOUT):
            message = await consumer.__anext__()
        await consumer.close()
        assert await counts(conn, queue.name) == (0, 0)
        await message.ack()
    assert await counts(conn, queue.name) == (0, 0)


# ------------------------------------------------------------------- producers


async def test_declare_none_and_maybe_declare(
    conn: trio_msg.Connection, queue: Queue, unique_name: str
) -> None:
    exchange = Exchange(unique_name + ".x", durable=False)
    try:
        async with Producer(conn) as producer:
            await producer.publish("x", routing_key=queue.name, declare=None)  # kombu's default
            assert await producer.maybe_declare(exchange) is True
            assert await producer.maybe_declare(exchange) is False  # cached on the connection
            assert await producer.maybe_declare(None) is False
            # A queue that may expire is declared every time, never cached.
            assert await producer.maybe_declare(queue, retry=True) is True
            await producer.publish("y", routing_key=queue.name, declare=None)
        assert (await get(conn, queue.name)).payload == "y"  # "x" went nowhere
    finally:
        async with conn.channel() as ch:
            await ch.exchange_delete(exchange.name)


async def test_producer_close_and_release(conn: trio_msg.Connection, queue: Queue) -> None:
    async with Producer(conn) as producer:
        await producer.publish("x", routing_key=queue.name, declare=[queue])
        channel = producer.channel
        await producer.release()
        assert not channel.is_open
        with pytest.raises(trio_msg.errors.TrioMsgError):
            await producer.publish("after close", routing_key=queue.name)
        await producer.close()  # again: nothing to do
    assert await counts(conn, queue.name) == (1, 0)


async def test_publish_timeouts_when_all_goes_well(conn: trio_msg.Connection, queue: Queue) -> None:
    async with Producer(conn) as producer:
        await producer.publish(
            "x", routing_key=queue.name, declare=[queue], timeout=TIMEOUT, confirm_timeout=TIMEOUT
        )
    assert (await get(conn, queue.name)).payload == "x"


# ---------------------------------------------------------------------- retry


async def test_retry_on_a_default_connect_survives_a_cut(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    """kombu's ``publish(retry=True)`` works on what the README's
    ``connect(url)`` gives: it revives by default."""
    queue = Queue(unique_name, durable=False, expires=120)
    async with trio_msg.connect(f"amqp://guest:guest@127.0.0.1:{proxy.port}//") as conn:
        assert conn.reviving
        async with Producer(conn) as producer:
            await producer.publish("before", routing_key=queue.name, declare=[queue])
            assert proxy.cut() == 1
            with anyio.fail_after(TIMEOUT):
                await producer.publish(
                    "after",
                    routing_key=queue.name,
                    retry=True,
                    retry_policy={"interval_start": 0, "interval_step": 0.1, "max_retries": 20},
                )
        assert conn.incarnation > 1
    async with trio_msg.connect(broker_url) as direct:
        assert (await get(direct, queue.name)).payload == "before"
        assert (await get(direct, queue.name)).payload == "after"
        async with direct.channel() as ch:
            await ch.queue_delete(queue.name)


async def test_retry_moves_a_producer_given_a_channel_to_a_channel_of_its_own(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    """kombu's ``ensure()`` moves a producer whose channel died with the
    connection to the default channel; here it gets a channel of its own on
    the revived connection, and the caller's channel stays closed."""
    queue = Queue(unique_name, durable=False, expires=120)
    async with trio_msg.connect(f"amqp://guest:guest@127.0.0.1:{proxy.port}//") as conn:
        async with conn.channel() as given:
            producer = Producer(given)
            async with producer:
                await producer.publish("before", routing_key=queue.name, declare=[queue])
                assert proxy.cut() == 1
                with anyio.fail_after(TIMEOUT):
                    await producer.publish(
                        "after",
                        routing_key=queue.name,
                        retry=True,
                        retry_policy={"interval_start": 0, "interval_step": 0.1, "max_retries": 20},
                    )
                assert producer.channel is not given
                assert not given.is_open
        assert conn.incarnation > 1
    async with trio_msg.connect(broker_url) as direct:
        assert (await get(direct, queue.name)).payload == "before"
        assert (await get(direct, queue.name)).payload == "after"
        async with direct.channel() as ch:
            await ch.queue_delete(queue.name)


# ------------------------------------------------------------------------ TLS


@asynccontextmanager
async def tls_proxy(ca: trustme.CA) -> AsyncIterator[int]:
    """A TLS endpoint on 127.0.0.1 (certificate for "localhost", signed by
    *ca*) in front of the plain broker: TLS in, the bytes passed on."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = multi.extra(anyio.abc.SocketAttribute.local_port)
    listener = TLSListener(multi, server_ctx, standard_compatible=False)

    async def pump(src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in src:
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, ssl.SSLError):
            pass
        finally:
            await dst.aclose()

    async def handle(client: anyio.abc.ByteStream) -> None:
        async with (
            client,
            await anyio.connect_tcp(BROKER_HOST, BROKER_PORT) as upstream,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(pump, client, upstream)
            tg.start_soon(pump, upstream, client)

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


async def test_kombu_ssl_dict_is_honoured(
    tls_ca: trustme.CA, tmp_path: Path, unique_name: str
) -> None:
    """``ssl={"ca_certs": ..., ...}`` as kombu takes it: the right CA
    connects, a wrong one fails verification (it was once ignored, and the
    system's default context used instead), and ``cert_reqs=CERT_NONE``
    turns verification off."""
    right, wrong = tmp_path / "ca.pem", tmp_path / "other-ca.pem"
    tls_ca.cert_pem.write_to_path(str(right))
    trustme.CA().cert_pem.write_to_path(str(wrong))
    async with tls_proxy(tls_ca) as port:
        url = f"amqp://guest:guest@127.0.0.1:{port}//"
        options = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "localhost"}
        with anyio.fail_after(TIMEOUT):
            async with (
                trio_msg.connect(url, ssl={"ca_certs": str(right), **options}) as conn,
                conn.channel() as ch,
            ):
                ok = await ch.queue_declare(unique_name, exclusive=True)
                assert ok.queue == unique_name
            with pytest.raises(ConnectionFailed, match=r"(?i)certificate"):
                async with trio_msg.connect(url, ssl={"ca_certs": str(wrong), **options}):
                    pytest.fail("TLS accepted a certificate from a CA it was not given")
            async with trio_msg.connect(
                url, ssl={"ca_certs": str(wrong), "cert_reqs": ssl.CERT_NONE}
            ) as conn:
                assert conn.is_open
