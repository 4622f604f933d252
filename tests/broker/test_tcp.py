"""The embedded broker on a TCP port, used by other AMQP clients (pika, kombu)
exactly as they use RabbitMQ."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pika
import pytest
import trio
from kombu import Connection as KombuConnection

import trio_msg
from trio_msg._broker import BrokerServer


@pytest.fixture(scope="module")
def broker_port() -> Iterator[int]:
    """A broker serving TCP on a free port, in a thread with its own trio loop."""
    ready = threading.Event()
    state: dict[str, object] = {}

    async def serve() -> None:
        with trio.CancelScope() as scope:
            state["scope"] = scope
            state["token"] = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                state["port"] = await nursery.start(BrokerServer().serve_tcp, 0)
                ready.set()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10), "the broker did not start"
    yield int(state["port"])  # type: ignore[call-overload]
    token = state["token"]
    token.run_sync_soon(state["scope"].cancel)  # type: ignore[attr-defined]
    thread.join(10)
    assert not thread.is_alive()


def test_pika_publishes_with_confirms_and_gets(broker_port: int) -> None:
    params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{broker_port}/%2F")
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("pika.q", durable=False)
        for i in range(3):
            channel.basic_publish(
                "", "pika.q", f"m{i}".encode(), pika.BasicProperties(headers={"i": i})
            )
        got = []
        for _ in range(3):
            method, props, body = channel.basic_get("pika.q", auto_ack=True)
            assert method is not None
            got.append((body, props.headers))
        assert got == [(f"m{i}".encode(), {"i": i}) for i in range(3)]
        assert channel.basic_get("pika.q")[0] is None
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            channel.queue_declare("missing", passive=True)
        assert info.value.reply_code == 404
    finally:
        connection.close()


def test_pika_consumes_with_prefetch(broker_port: int) -> None:
    params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{broker_port}/%2F")
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.queue_declare("pika.c", durable=False)
        for i in range(5):
            channel.basic_publish("", "pika.c", str(i).encode())
        channel.basic_qos(prefetch_count=2)
        bodies = []
        for method, _props, body in channel.consume("pika.c", inactivity_timeout=5):
            assert method is not None, "a delivery did not come"
            bodies.append(body)
            channel.basic_ack(method.delivery_tag)
            if len(bodies) == 5:
                break
        channel.cancel()
        assert bodies == [str(i).encode() for i in range(5)]
    finally:
        connection.close()


def test_kombu_simple_queue(broker_port: int) -> None:
    with KombuConnection(f"amqp://guest:guest@127.0.0.1:{broker_port}//") as conn:
        queue = conn.SimpleQueue("kombu.q", queue_opts={"durable": False})
        queue.put({"hello": "kombu"})
        message = queue.get(timeout=5)
        assert message.payload == {"hello": "kombu"}
        message.ack()
        queue.close()


@pytest.mark.anyio
async def test_trio_msg_and_pika_meet_on_it(broker_port: int) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{broker_port}//"
    queue = trio_msg.Queue("cross", durable=False)
    async with (
        trio_msg.connect(url, revive=False) as conn,
        trio_msg.Producer(conn, serializer="json") as producer,
    ):
        await producer.publish({"from": "trio_msg"}, routing_key="cross", declare=[queue])
    params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{broker_port}/%2F")
    connection = pika.BlockingConnection(params)
    try:
        method, props, body = connection.channel().basic_get("cross", auto_ack=True)
        assert method is not None
        assert props.content_type == "application/json"
        assert json.loads(body) == {"from": "trio_msg"}
    finally:
        connection.close()
