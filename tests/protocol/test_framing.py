"""Frame limits, checked by FrameReader and through the connection."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from pamqp import frame as pframe
from pamqp.commands import Basic, Channel, Connection

from trio_msg._protocol import ConnectionState, FrameReader, events
from trio_msg._protocol.errors import (
    FrameError,
    ProtocolError,
    RemoteProtocolError,
    UnexpectedFrame,
)

from .peer import Peer, build, connected, raw_content_header, raw_frame, seq

HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"


# --- FrameReader alone --------------------------------------------------------


def test_reader_yields_complete_frames_only() -> None:
    reader = FrameReader()
    data = raw_frame(1, 0, b"abc") + HEARTBEAT + raw_frame(3, 7, b"")
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        out = list(reader.frames())
        if i == 10:
            assert out == [(1, 0, b"abc")]
        elif i == 18:
            assert out == [(8, 0, b"")]
        elif i == 26:
            assert out == [(3, 7, b"")]
        else:
            assert out == []
    assert reader.buffered == 0


def test_reader_rejects_huge_frame_from_header_alone() -> None:
    reader = FrameReader()  # 4096 before tune
    reader.feed(struct.pack(">BHI", 1, 0, 0xFFFFFFFF))  # 7 bytes, no payload
    with pytest.raises(FrameError) as info:
        list(reader.frames())
    assert info.value.reply_code == 501


@pytest.mark.parametrize(("size", "ok"), [(4096 - 8, True), (4096 - 7, False)])
def test_reader_frame_max_boundary(size: int, ok: bool) -> None:
    reader = FrameReader()
    reader.feed(struct.pack(">BHI", 3, 1, size))
    if ok:
        assert list(reader.frames()) == []
        reader.feed(b"x" * size + b"\xce")
        assert list(reader.frames()) == [(3, 1, b"x" * size)]
    else:
        with pytest.raises(FrameError):
            list(reader.frames())


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (struct.pack(">BHI", 9, 0, 1), 501),  # unknown frame type
        (struct.pack(">BHI", 0, 0, 1), 501),
        (struct.pack(">BHI", 8, 1, 0), 501),  # heartbeat on a channel
        (struct.pack(">BHI", 1, 11, 4), 504),  # channel above channel_max
    ],
)
def test_reader_header_checks(header: bytes, code: int) -> None:
    reader = FrameReader(4096, 10)
    reader.feed(header)
    with pytest.raises(FrameError) as info:
        list(reader.frames())
    assert info.value.reply_code == code


def test_reader_bad_frame_end() -> None:
    reader = FrameReader()
    reader.feed(raw_frame(1, 0, b"abcd")[:-1] + b"\x00")
    with pytest.raises(FrameError) as info:
        list(reader.frames())
    assert info.value.reply_code == 501


def test_reader_protocol_header_answer() -> None:
    reader = FrameReader()
    reader.feed(b"AMQP\x00\x00\x09\x01")
    with pytest.raises(FrameError, match="does not speak AMQP 0-9-1"):
        list(reader.frames())


def test_reader_limits_can_change() -> None:
    reader = FrameReader(4096, 0)
    reader.feed(raw_frame(3, 1, b""))
    with pytest.raises(FrameError):
        list(reader.frames())
    reader = FrameReader(4096, 0)
    reader.channel_max = 1
    reader.frame_max = 10000
    reader.feed(raw_frame(3, 1, b"y" * 9000))
    assert list(reader.frames()) == [(3, 1, b"y" * 9000)]


# --- through the connection -----------------------------------------------------


def _assert_dead(peer: Peer, code: int, exc_type: type[RemoteProtocolError]) -> None:
    conn = peer.conn
    assert conn.state is ConnectionState.ERROR
    sent = peer.received()
    assert [s.name for s in sent] == ["Connection.Close"]
    assert sent[0].frame.reply_code == code
    evs: list[Any] = conn.next_events()
    assert isinstance(evs[-1], events.ConnectionTerminated)
    assert isinstance(evs[-1].error, exc_type)
    assert evs[-1].error.reply_code == code
    # the connection is poisoned: every later call raises again
    for data in (b"", HEARTBEAT):
        with pytest.raises(exc_type) as again:
            conn.receive_data(data)
        assert again.value.reply_code == code
    assert peer.received() == []


def test_huge_frame_before_tune_rejected_from_header() -> None:
    peer = Peer()
    peer.conn.initiate()
    peer.received()
    with pytest.raises(FrameError) as info:
        peer.conn.receive_data(struct.pack(">BHI", 1, 0, 5000))
    assert info.value.reply_code == 501
    assert peer.conn.state is ConnectionState.ERROR
    # before connection.start no method may be sent, not even close
    assert peer.received() == []


def test_frame_max_is_4096_until_tune() -> None:
    peer = Peer()
    peer.conn.initiate()
    peer.received()
    big = {"product": "RabbitMQ", "pad": "x" * 5000}
    with pytest.raises(FrameError):
        peer.start(server_properties=big)


@pytest.mark.parametrize("size", [131072 - 7, 0xFFFFFFFF])
def test_huge_frame_after_tune(size: int) -> None:
    peer = connected()
    with pytest.raises(FrameError):
        peer.conn.receive_data(struct.pack(">BHI", 3, 1, size))
    _assert_dead(peer, 501, FrameError)


@pytest.mark.parametrize(
    ("data", "code", "exc"),
    [
        (struct.pack(">BHI", 4, 0, 0) + b"\xce", 501, FrameError),
        (b"\x08\x00\x01\x00\x00\x00\x00\xce", 501, FrameError),
        (raw_frame(1, 2048, b"\x00\x14\x00\x0b\x00\x00\x00\x00"), 504, FrameError),
        (raw_frame(8, 0, b"")[:-1] + b"\xcf", 501, FrameError),
        (pframe.marshal(Channel.OpenOk(), 0)[:-1] + b"\x00", 501, FrameError),
        (raw_frame(1, 0, b"\x00\x0a"), 501, FrameError),  # shorter than a method id
        (raw_frame(1, 0, b"\x00\xff\x00\xff"), 501, FrameError),  # unknown method
        (raw_frame(1, 0, b"\x00\x0a\x00\x32\x01"), 501, FrameError),  # truncated close
        (raw_frame(2, 0, b"x" * 14), 505, UnexpectedFrame),  # content on channel 0
        (raw_frame(3, 0, b"x"), 505, UnexpectedFrame),
        (pframe.marshal(Connection.Tune(), 0), 505, UnexpectedFrame),
        (pframe.marshal(Basic.Ack(), 0), 505, UnexpectedFrame),
        (pframe.marshal(Channel.OpenOk(), 3), 504, RemoteProtocolError),  # not open
    ],
)
def test_protocol_errors_reply_codes(
    data: bytes, code: int, exc: type[RemoteProtocolError]
) -> None:
    peer = connected()
    with pytest.raises(exc) as info:
        peer.conn.receive_data(data)
    assert info.value.reply_code == code
    _assert_dead(peer, code, exc)


def test_protocol_error_closes_channels_and_resolves_confirms() -> None:
    peer = connected()
    ch = peer.confirm_channel()
    tag = seq(ch.publish("", "q", b"x"))
    peer.received()
    with pytest.raises(FrameError):
        peer.conn.receive_data(HEARTBEAT[:-1] + b"\x00")
    evs = peer.events()
    assert evs[0] == events.Confirmation(ch.id, (tag,), events.Outcome.UNKNOWN)
    assert isinstance(evs[1], events.ChannelClosed)
    assert isinstance(evs[1].error, FrameError)
    assert isinstance(evs[2], events.ConnectionTerminated)
    assert peer.received()[0].frame.reply_code == 501
    with pytest.raises(ProtocolError):
        ch.publish("", "q", b"x")


def test_unexpected_channel_methods() -> None:
    peer = connected()
    ch = peer.open_channel()
    with pytest.raises(UnexpectedFrame):
        peer.send(ch.id, Channel.OpenOk())  # already open
    _assert_dead(peer, 505, UnexpectedFrame)


def test_reply_without_request_is_unexpected() -> None:
    peer = connected()
    ch = peer.open_channel()
    with pytest.raises(UnexpectedFrame):
        peer.send(ch.id, build(Basic.ConsumeOk, consumer_tag="x"))
    _assert_dead(peer, 505, UnexpectedFrame)


def test_method_in_the_middle_of_a_message() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    deliver = build(
        Basic.Deliver,
        consumer_tag="ct",
        delivery_tag=1,
        redelivered=False,
        exchange="",
        routing_key="q",
    )
    data = pframe.marshal(deliver, ch.id) + raw_content_header(ch.id, 10)
    assert peer.feed(data) == []
    with pytest.raises(UnexpectedFrame):
        peer.send(ch.id, Basic.Ack(delivery_tag=1))
    _assert_dead(peer, 505, UnexpectedFrame)


def test_body_larger_than_header_said() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    deliver = build(
        Basic.Deliver,
        consumer_tag="ct",
        delivery_tag=1,
        redelivered=False,
        exchange="",
        routing_key="q",
    )
    data = (
        pframe.marshal(deliver, ch.id) + raw_content_header(ch.id, 3) + raw_frame(3, ch.id, b"abcd")
    )
    with pytest.raises(RemoteProtocolError) as info:
        peer.feed(data)
    assert info.value.reply_code == 505


def test_header_or_body_without_method() -> None:
    peer = connected()
    ch = peer.open_channel()
    with pytest.raises(UnexpectedFrame):
        peer.feed(raw_content_header(ch.id, 3))
    peer = connected()
    ch = peer.open_channel()
    with pytest.raises(UnexpectedFrame):
        peer.feed(raw_frame(3, ch.id, b"abc"))


def test_content_header_of_another_class() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    deliver = build(
        Basic.Deliver,
        consumer_tag="ct",
        delivery_tag=1,
        redelivered=False,
        exchange="",
        routing_key="q",
    )
    header = raw_frame(2, ch.id, struct.pack(">HHQH", 50, 0, 0, 0))
    with pytest.raises(UnexpectedFrame):
        peer.feed(pframe.marshal(deliver, ch.id) + header)


def test_wrong_protocol_version() -> None:
    peer = Peer()
    peer.conn.initiate()
    peer.received()
    start = Connection.Start(
        version_major=0, version_minor=8, server_properties={}, mechanisms="PLAIN"
    )
    with pytest.raises(RemoteProtocolError):
        peer.send(0, start)


def test_server_answers_with_another_protocol_header() -> None:
    peer = Peer()
    peer.conn.initiate()
    peer.received()
    with pytest.raises(FrameError, match="0-9-1"):
        peer.feed(b"AMQP\x00\x00\x08\x00")


def test_tune_with_frame_max_below_minimum() -> None:
    peer = Peer()
    peer.start()
    peer.received()
    with pytest.raises(RemoteProtocolError):
        peer.tune(frame_max=1024)


def test_secure_challenge_is_refused() -> None:
    peer = Peer()
    peer.start()
    peer.received()
    with pytest.raises(UnexpectedFrame):
        peer.send(0, Connection.Secure(challenge="x"))
    assert peer.received()[0].frame.reply_code == 505
