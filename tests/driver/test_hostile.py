"""Bad input from the broker: the connection fails with a clear protocol
error (a TrioMsgError), every waiting task gets that same error, the client
tells the broker why (``connection.close`` with the reply code), and nothing
hangs.  Oversized messages close only their channel."""

from __future__ import annotations

import struct
from typing import Any

import anyio
import pytest
from pamqp import commands as C
from pamqp import frame
from protocol.peer import build, content_frames, raw_content_header, raw_frame

from trio_msg import Consumer, Queue
from trio_msg.connection import connect
from trio_msg.errors import (
    ChannelClosed,
    ConnectionFailed,
    ConnectionLost,
    FrameError,
    ProtocolError,
    RemoteProtocolError,
    TrioMsgError,
)

from .fake_broker import URL, FakeBroker, Received


def method_frame(channel: int, method: Any) -> bytes:
    return bytes(frame.marshal(method, channel))


def deliver_method(tag: int = 1) -> object:
    return build(
        C.Basic.Deliver,
        consumer_tag="c",
        delivery_tag=tag,
        redelivered=False,
        exchange="",
        routing_key="q",
    )


#: name -> (bytes sent on an open connection whose channel 1 is open, the
#: expected error class, the reply code the client closes with).
HOSTILE: dict[str, tuple[bytes, type[RemoteProtocolError], int]] = {
    "bad frame end": (
        method_frame(1, C.Queue.DeclareOk("q", 0, 0))[:-1] + b"\x00",
        FrameError,
        501,
    ),
    # Only the 7-byte header of a 2 GiB frame: refused without waiting for the rest.
    "oversized frame": (struct.pack(">BHI", 1, 1, 2**31), FrameError, 501),
    "frame just over frame_max": (
        raw_frame(3, 1, b"x" * (131072 - 8 + 1)),
        FrameError,
        501,
    ),
    "unknown frame type": (raw_frame(9, 0, b""), FrameError, 501),
    "undecodable method": (raw_frame(1, 1, b"\xff\xff\xff\xff"), FrameError, 501),
    "truncated method": (raw_frame(1, 1, b"\x00\x32"), FrameError, 501),
    "method on a channel not open": (
        method_frame(77, C.Channel.CloseOk()),
        RemoteProtocolError,
        504,
    ),
    "reply nobody asked for": (
        method_frame(1, C.Queue.PurgeOk(message_count=0)),
        RemoteProtocolError,
        505,
    ),
    "body without header": (raw_frame(3, 1, b"stray"), RemoteProtocolError, 505),
    "header without method": (raw_content_header(1, 5), RemoteProtocolError, 505),
    "content frame on channel 0": (raw_frame(3, 0, b"x"), RemoteProtocolError, 505),
    "body longer than its header said": (
        b"".join(content_frames(1, deliver_method(), b"12345")[:2]) + raw_frame(3, 1, b"123456"),
        RemoteProtocolError,
        505,
    ),
    "http response": (b"HTTP/1.1 400 Bad Request\r\n\r\n", FrameError, 501),
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", HOSTILE)
async def test_bad_bytes_fail_the_connection_and_every_waiter(
    broker: FakeBroker, name: str
) -> None:
    data, expected, reply_code = HOSTILE[name]
    broker.hold.add("Queue.Declare")
    errors: list[BaseException] = []
    async with broker:
        with pytest.raises(TrioMsgError) as info, anyio.fail_after(5):
            async with connect(URL) as conn, conn.channel() as ch:
                assert ch.channel_id == 1
                send, _ = anyio.create_memory_object_stream[object](5)
                await ch.basic_consume("q", send, consumer_tag="c")

                async def declare() -> None:
                    try:
                        await ch.queue_declare("q")
                    except TrioMsgError as exc:
                        errors.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(declare)
                    await broker.wait_for("Queue.Declare")
                    await broker.send_raw(data)
        error = info.value
        assert isinstance(error, expected), repr(error)
        assert isinstance(error, ProtocolError)
        assert str(error)  # says what was wrong
        assert errors == [error]
        # The client said why before hanging up.
        with anyio.fail_after(5):
            await broker.wait_closed()
    closes = broker.frames("Connection.Close")
    assert [c.reply_code for c in closes] == [reply_code]
    assert error.reply_code == reply_code


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # "I speak another version": RabbitMQ's answer
        (b"AMQP\x00\x00\x08\x00", ConnectionFailed),
        # not a broker at all: the first bytes are quoted (test_a_server_that_does_not_speak_amqp)
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", ConnectionFailed),
        (b"\x01\x00\x00\x00\x00\x00\x01", ConnectionLost),  # a frame header cut short, then EOF
    ],
)
async def test_garbage_instead_of_connection_start(
    broker: FakeBroker, answer: bytes, expected: type[TrioMsgError]
) -> None:
    async def garbage(b: FakeBroker, rec: Received) -> None:
        await b.send_raw(answer)
        await b.hang_up()

    broker.handlers["ProtocolHeader"] = garbage
    async with broker:
        with pytest.raises(TrioMsgError) as info, anyio.fail_after(5):
            async with connect(URL, connection_timeout=60):
                pytest.fail("connected to garbage")
    assert type(info.value) is expected, repr(info.value)
    assert str(info.value)


@pytest.mark.anyio
async def test_wrong_amqp_version_is_named(broker: FakeBroker) -> None:
    async def other_version(b: FakeBroker, rec: Received) -> None:
        await b.send_raw(b"AMQP\x00\x00\x08\x00")
        await b.hang_up()

    broker.handlers["ProtocolHeader"] = other_version
    async with broker:
        with pytest.raises(TrioMsgError) as info, anyio.fail_after(5):
            async with connect(URL, connection_timeout=60):
                pass
    assert "0-9-1" in str(info.value)


@pytest.mark.anyio
async def test_message_over_max_body_size_closes_only_its_channel(broker: FakeBroker) -> None:
    async with (
        broker,
        connect(URL, max_body_size=1000) as conn,
        Consumer(conn, queues=[Queue("q")], prefetch_count=5) as consumer,
    ):
        (tag,) = broker.consumers
        await broker.deliver(tag, b"x" * 1001)
        with pytest.raises(ChannelClosed) as info, anyio.fail_after(5):
            await consumer.__anext__()
        assert info.value.reply_code == 311
        assert not info.value.by_peer
        assert "max_body_size" in str(info.value)
        closes = broker.frames("Channel.Close")
        assert [c.reply_code for c in closes] == [311]
        assert conn.is_open
        async with conn.channel() as ch:
            assert (await ch.queue_declare("fine")).queue == "fine"
    assert broker.count("Basic.Ack") == 0  # the broker keeps the message
