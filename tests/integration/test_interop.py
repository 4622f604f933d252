"""trio_msg, kombu (py-amqp) and pika read each other's messages, on trio and asyncio.

kombu and pika are synchronous: they run in worker threads
(``anyio.to_thread.run_sync``) while the test's event loop runs trio_msg.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import kombu
import kombu.compression
import pika
import pytest
from _broker import BROKER_URL

import trio_msg
from trio_msg import Consumer, Producer, Queue

pytestmark = pytest.mark.anyio

TIMEOUT = 5

KOMBU_URL = BROKER_URL  # "amqp://guest:guest@host:port//": kombu's own syntax
PIKA_URL = BROKER_URL[:-2] + "/%2F" if BROKER_URL.endswith("//") else BROKER_URL

WHEN = datetime.datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=datetime.UTC)
RICH = {
    "when": WHEN,
    "day": datetime.date(2024, 5, 17),
    "amount": decimal.Decimal("12.34"),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "list": [1, 2.5, "three", None, True],
    "nested": {"ünï": "cödé"},
}
HEADERS = {
    "string": "värde",
    "int": 42,
    "negative": -7,
    "big": 2**40,
    "bool": True,
    "list": [1, "two"],
    "nested": {"a": {"b": "c"}},
}

#: kombu's compression methods in this environment, by the name both libraries know.
_KOMBU_TYPES = set(kombu.compression.encoders())
KOMBU_COMPRESSION = [
    name
    for name in ("zlib", "bzip2", "lzma", "brotli", "zstd")
    if kombu.compression._aliases.get(name) in _KOMBU_TYPES
]


# ------------------------------------------------------------------ fixtures


def _pika_connection() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(PIKA_URL))


def _declare(name: str) -> None:
    connection = _pika_connection()
    try:
        connection.channel().queue_declare(name, durable=True)
    finally:
        connection.close()


def _delete(name: str) -> None:
    connection = _pika_connection()
    try:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)
    finally:
        connection.close()


@pytest.fixture
async def queue_name(unique_name: str) -> AsyncIterator[str]:
    """A durable queue (kombu's and trio_msg's default declaration) that is
    deleted, with any exchange of the same name, after the test.  (pika runs
    in a worker thread, as in the tests: the event loop may be serving the
    broker, see tests/_support/_embedded.py.)"""
    await in_thread(_declare, unique_name)
    yield unique_name
    await in_thread(_delete, unique_name)


# ------------------------------------------------------------ the peers, sync


def kombu_publish(queue: str, body: Any, **kwargs: Any) -> None:
    with kombu.Connection(KOMBU_URL) as connection:
        producer = connection.Producer()
        producer.publish(body, exchange="", routing_key=queue, **kwargs)


def kombu_consume(queue: str, accept: list[str], n: int = 1) -> list[kombu.Message]:
    """``n`` messages from kombu's Consumer, acked, with their payloads decoded."""
    received: list[kombu.Message] = []

    def on_message(body: Any, message: kombu.Message) -> None:
        received.append(message)
        message.ack()

    with (
        kombu.Connection(KOMBU_URL) as connection,
        connection.Consumer(
            kombu.Queue(queue, no_declare=True), callbacks=[on_message], accept=accept
        ),
    ):
        while len(received) < n:
            connection.drain_events(timeout=TIMEOUT)
    return received


def kombu_simple_get(queue: str, accept: list[str]) -> kombu.Message:
    with kombu.Connection(KOMBU_URL) as connection:
        simple = connection.SimpleQueue(kombu.Queue(queue, no_declare=True), accept=accept)
        try:
            message = simple.get(block=True, timeout=TIMEOUT)
            message.ack()
            _ = message.payload  # decoded while the connection lives
            return message
        finally:
            simple.close()


def pika_get(queue: str) -> tuple[Any, pika.BasicProperties, bytes]:
    connection = _pika_connection()
    try:
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None, "the queue was empty"
    return method, properties, body


def pika_publish(queue: str, body: bytes, properties: pika.BasicProperties) -> None:
    connection = _pika_connection()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, body, properties, mandatory=True)
    finally:
        connection.close()


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with anyio.fail_after(TIMEOUT * 2):
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


# ----------------------------------------------------------- trio_msg helpers


async def trio_receive(queue: str, accept: list[str] | None = None) -> trio_msg.Message:
    async with (
        trio_msg.connect(BROKER_URL) as conn,
        Consumer(conn, [Queue(queue, no_declare=True)], accept=accept) as consumer,
    ):
        with anyio.fail_after(TIMEOUT):
            message = await consumer.__anext__()
        message.decode()
        await message.ack()
    return message


async def trio_publish(queue: str, body: Any, **kwargs: Any) -> None:
    async with trio_msg.connect(BROKER_URL) as conn, Producer(conn) as producer:
        result = await producer.publish(body, routing_key=queue, **kwargs)
        assert result is not None
        assert result.outcome is trio_msg.Outcome.ACK


def _utc(value: datetime.datetime | int) -> datetime.datetime:
    if isinstance(value, int):
        return datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value


# ============================================================ kombu -> trio_msg


async def test_kombu_json_default_serializer(queue_name: str) -> None:
    await in_thread(kombu_publish, queue_name, RICH)
    message = await trio_receive(queue_name)
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.payload == RICH
    assert message.payload["when"].tzinfo is not None


@pytest.mark.parametrize(
    ("serializer", "body", "content_type", "content_encoding"),
    [
        ("msgpack", {"n": 1, "list": [1, 2, 3], "s": "ünïcode"}, "application/x-msgpack", "binary"),
        ("yaml", {"n": 1, "list": [1, 2, 3], "s": "ünïcode"}, "application/x-yaml", "utf-8"),
        ("json", ["a", 1, None], "application/json", "utf-8"),
    ],
)  # fmt: skip
async def test_kombu_serializers(
    queue_name: str, serializer: str, body: Any, content_type: str, content_encoding: str
) -> None:
    await in_thread(kombu_publish, queue_name, body, serializer=serializer)
    message = await trio_receive(queue_name, accept=[serializer])
    assert message.content_type == content_type
    assert message.content_encoding == content_encoding
    assert message.payload == body


async def test_kombu_text_and_bytes(queue_name: str) -> None:
    await in_thread(
        kombu_publish,
        queue_name,
        "plain ünïcode",
        content_type="text/plain",
        content_encoding="utf-8",
    )
    await in_thread(
        kombu_publish,
        queue_name,
        b"\x00\x01\xff",
        content_type="application/data",
        content_encoding="binary",
    )
    async with (
        trio_msg.connect(BROKER_URL) as conn,
        Consumer(conn, [Queue(queue_name, no_declare=True)]) as consumer,
    ):
        with anyio.fail_after(TIMEOUT):
            text = await consumer.__anext__()
            raw = await consumer.__anext__()
        assert (text.content_type, text.content_encoding) == ("text/plain", "utf-8")
        assert text.payload == "plain ünïcode"
        assert (raw.content_type, raw.content_encoding) == ("application/data", "binary")
        assert raw.payload == raw.body == b"\x00\x01\xff"
        await raw.ack(multiple=True)


@pytest.mark.parametrize("method", KOMBU_COMPRESSION)
async def test_kombu_compression(queue_name: str, method: str) -> None:
    body = {"text": "compress me " * 100, "when": WHEN}
    await in_thread(kombu_publish, queue_name, body, compression=method, headers={"keep": 1})
    message = await trio_receive(queue_name)
    assert message.headers["compression"] == kombu.compression._aliases[method]
    assert message.headers["keep"] == 1
    assert message.content_type == "application/json"
    assert message.payload == body


async def test_kombu_properties(queue_name: str) -> None:
    await in_thread(
        kombu_publish,
        queue_name,
        {"x": 1},
        headers=HEADERS,
        priority=4,
        delivery_mode=2,
        expiration=30,
        correlation_id="corr-1",
        reply_to="reply.here",
        message_id="msg-1",
        timestamp=int(WHEN.timestamp()),  # py-amqp only takes an int
        type="a.type",
        app_id="kombu-app",
        user_id="guest",
    )
    message = await trio_receive(queue_name)
    props = message.properties
    assert message.payload == {"x": 1}
    assert message.headers == HEADERS
    assert props["priority"] == 4
    assert props["delivery_mode"] == 2
    assert props["expiration"] == "30000"
    assert props["correlation_id"] == "corr-1"
    assert props["reply_to"] == "reply.here"
    assert props["message_id"] == "msg-1"
    assert _utc(props["timestamp"]) == WHEN.replace(microsecond=0)
    assert props["type"] == "a.type"
    assert props["app_id"] == "kombu-app"
    assert props["user_id"] == "guest"
    assert message.routing_key == queue_name
    assert message.exchange == ""
    assert not message.redelivered


async def test_kombu_pickle_is_refused_unless_accepted(queue_name: str) -> None:
    await in_thread(kombu_publish, queue_name, {"x": {1, 2}}, serializer="pickle")
    async with (
        trio_msg.connect(BROKER_URL) as conn,
        Consumer(conn, [Queue(queue_name, no_declare=True)]) as consumer,
    ):
        with anyio.fail_after(TIMEOUT):
            message = await consumer.__anext__()
        with pytest.raises(trio_msg.errors.ContentDisallowed):
            _ = message.payload
        await message.requeue()
    message = await trio_receive(queue_name, accept=["pickle"])
    assert message.payload == {"x": {1, 2}}


# ============================================================ trio_msg -> kombu


async def test_trio_msg_json_to_kombu_consumer(queue_name: str) -> None:
    await trio_publish(queue_name, RICH)
    [message] = await in_thread(kombu_consume, queue_name, ["json"])
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.payload == RICH


@pytest.mark.parametrize(
    ("serializer", "body"),
    [
        ("json", {"n": 1, "list": [1, 2.5, "x"]}),
        ("msgpack", {"n": 1, "list": [1, 2, 3], "s": "ünïcode"}),
        ("yaml", {"n": 1, "list": [1, 2, 3], "s": "ünïcode"}),
        ("pickle", {"set": {1, 2}}),
    ],
)
async def test_trio_msg_serializers_to_kombu_simple_queue(
    queue_name: str, serializer: str, body: Any
) -> None:
    await trio_publish(queue_name, body, serializer=serializer)
    message = await in_thread(kombu_simple_get, queue_name, [serializer])
    assert message.content_type == trio_msg.serialization.registry.content_type_of(serializer)
    assert message.payload == body


async def test_trio_msg_text_and_bytes_to_kombu(queue_name: str) -> None:
    await trio_publish(queue_name, "plain ünïcode")
    await trio_publish(queue_name, b"\x00\x01\xff")
    text, raw = await in_thread(kombu_consume, queue_name, ["text/plain", "application/data"], 2)
    assert (text.content_type, text.content_encoding) == ("text/plain", "utf-8")
    assert text.payload == "plain ünïcode"
    assert (raw.content_type, raw.content_encoding) == ("application/data", "binary")
    assert raw.payload == raw.body == b"\x00\x01\xff"


@pytest.mark.parametrize("method", KOMBU_COMPRESSION)
async def test_trio_msg_compression_to_kombu(queue_name: str, method: str) -> None:
    body = {"text": "compress me " * 100, "when": WHEN}
    await trio_publish(queue_name, body, compression=method, headers={"keep": 1})
    [message] = await in_thread(kombu_consume, queue_name, ["json"])
    assert message.headers["compression"] == kombu.compression._aliases[method]
    assert message.headers["keep"] == 1
    assert message.payload == body


async def test_trio_msg_properties_to_kombu(queue_name: str) -> None:
    await trio_publish(
        queue_name,
        {"x": 1},
        headers=HEADERS,
        priority=4,
        delivery_mode=2,
        expiration=30,
        correlation_id="corr-1",
        reply_to="reply.here",
        message_id="msg-1",
        timestamp=WHEN.replace(microsecond=0),
        type="a.type",
        app_id="trio-app",
        user_id="guest",
    )
    [message] = await in_thread(kombu_consume, queue_name, ["json"])
    props = message.properties
    assert message.payload == {"x": 1}
    assert message.headers == HEADERS
    assert props["priority"] == 4
    assert props["delivery_mode"] == 2
    assert props["expiration"] == "30000"
    assert props["correlation_id"] == "corr-1"
    assert props["reply_to"] == "reply.here"
    assert props["message_id"] == "msg-1"
    assert _utc(props["timestamp"]) == WHEN.replace(microsecond=0)
    assert props["type"] == "a.type"
    assert props["app_id"] == "trio-app"
    assert props["user_id"] == "guest"
    assert message.delivery_info["routing_key"] == queue_name


# ============================================================ trio_msg <-> pika


async def test_trio_msg_to_pika_basic_get(queue_name: str) -> None:
    await trio_publish(
        queue_name,
        {"x": "ünï"},
        headers=HEADERS,
        priority=4,
        delivery_mode=2,
        expiration=30,
        correlation_id="corr-1",
        reply_to="reply.here",
        message_id="msg-1",
        timestamp=WHEN.replace(microsecond=0),
        type="a.type",
        app_id="trio-app",
        user_id="guest",
        compression="zlib",
    )
    method, props, body = await in_thread(pika_get, queue_name)
    assert method.routing_key == queue_name
    assert props.content_type == "application/json"
    assert props.content_encoding == "utf-8"
    headers = dict(props.headers)
    assert headers.pop("compression") == "application/x-gzip"
    # pika decodes table strings as str and long ints as int
    assert headers == HEADERS
    assert trio_msg.compression.decompress(body, "application/x-gzip") == '{"x":"ünï"}'.encode()
    assert props.priority == 4
    assert props.delivery_mode == 2
    assert props.expiration == "30000"
    assert props.correlation_id == "corr-1"
    assert props.reply_to == "reply.here"
    assert props.message_id == "msg-1"
    assert _utc(props.timestamp) == WHEN.replace(microsecond=0)
    assert props.type == "a.type"
    assert props.app_id == "trio-app"
    assert props.user_id == "guest"


async def test_trio_msg_bytes_to_pika(queue_name: str) -> None:
    payload = bytes(range(256)) * 1000  # bigger than one frame
    await trio_publish(queue_name, payload)
    _, props, body = await in_thread(pika_get, queue_name)
    assert body == payload
    assert (props.content_type, props.content_encoding) == ("application/data", "binary")


async def test_pika_to_trio_msg(queue_name: str) -> None:
    properties = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=HEADERS,
        delivery_mode=2,
        priority=3,
        correlation_id="corr-1",
        reply_to="reply.here",
        expiration="5000",
        message_id="msg-1",
        timestamp=int(WHEN.timestamp()),
        type="a.type",
        user_id="guest",
        app_id="pika-app",
    )
    await in_thread(pika_publish, queue_name, b'{"from":"pika"}', properties)
    message = await trio_receive(queue_name)
    assert message.payload == {"from": "pika"}
    assert message.headers == HEADERS
    props = message.properties
    assert props["delivery_mode"] == 2
    assert props["priority"] == 3
    assert props["correlation_id"] == "corr-1"
    assert props["reply_to"] == "reply.here"
    assert props["expiration"] == "5000"
    assert props["message_id"] == "msg-1"
    assert _utc(props["timestamp"]) == WHEN.replace(microsecond=0)
    assert props["type"] == "a.type"
    assert props["user_id"] == "guest"
    assert props["app_id"] == "pika-app"
