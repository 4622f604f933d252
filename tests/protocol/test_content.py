"""Content assembly and splitting, body limits, timestamps, confirms and returns."""

from __future__ import annotations

import datetime
import struct
from typing import Any

import pytest
from pamqp import frame as pframe
from pamqp.commands import Basic, Channel, Confirm

from trio_msg._protocol import BasicProperties, ChannelState, Outcome, events
from trio_msg._protocol.errors import LocalProtocolError, MessageStateError, NotFound

from .peer import Peer, build, connected, raw_content_header, raw_frame, seq

UTC = datetime.UTC


def _deliver(channel: int, tag: int, consumer_tag: str = "ct") -> bytes:
    method = build(
        Basic.Deliver,
        consumer_tag=consumer_tag,
        delivery_tag=tag,
        redelivered=False,
        exchange="ex",
        routing_key="rk",
    )
    return bytes(pframe.marshal(method, channel))


# --- assembly ---------------------------------------------------------------------


def test_delivery_with_properties() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    stamp = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    props = Basic.Properties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"a": 1, "b": "two", "nested": {"x": [1, "y", True]}},
        delivery_mode=2,
        priority=5,
        correlation_id="corr",
        reply_to="amq.rabbitmq.reply-to",
        expiration="60000",
        message_id="id-1",
        timestamp=stamp,
        message_type="kind",
        user_id="guest",
        app_id="app",
    )
    (delivery,) = peer.deliver(ch.id, "ct", 42, b'{"k": 1}', props, redelivered=True)
    assert delivery == events.Delivery(
        ch.id,
        "ct",
        42,
        True,
        "ex",
        "rk",
        BasicProperties(
            content_type="application/json",
            content_encoding="utf-8",
            headers={"a": 1, "b": "two", "nested": {"x": [1, "y", True]}},
            delivery_mode=2,
            priority=5,
            correlation_id="corr",
            reply_to="amq.rabbitmq.reply-to",
            expiration="60000",
            message_id="id-1",
            timestamp=stamp,
            type="kind",
            user_id="guest",
            app_id="app",
        ),
        b'{"k": 1}',
    )
    assert ch.is_unsettled(42)


@pytest.mark.parametrize("chunk", [1, 7, 100, 4088])
def test_body_split_across_many_frames(chunk: int) -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    body = bytes(range(256)) * 40
    (delivery,) = peer.deliver(ch.id, "ct", 1, body, chunk=chunk)
    assert delivery.body == body


def test_zero_length_body_has_no_body_frame() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    data = _deliver(ch.id, 1) + raw_content_header(ch.id, 0)
    (delivery,) = peer.feed(data)
    assert delivery.body == b""
    assert delivery.properties == BasicProperties()
    # and the next message starts cleanly
    (delivery,) = peer.deliver(ch.id, "ct", 2, b"next")
    assert delivery.body == b"next"


def test_interleaved_channels() -> None:
    peer = connected()
    a = peer.open_channel()
    b = peer.open_channel()
    peer.consume(a, "ca")
    peer.consume(b, "cb")
    frames = [
        _deliver(a.id, 1, "ca"),
        _deliver(b.id, 1, "cb"),
        raw_content_header(b.id, 4),
        raw_content_header(a.id, 6),
        raw_frame(3, a.id, b"aaa"),
        raw_frame(3, b.id, b"bb"),
        b"\x08\x00\x00\x00\x00\x00\x00\xce",
        raw_frame(3, b.id, b"BB"),
        raw_frame(3, a.id, b"AAA"),
    ]
    evs = peer.feed(b"".join(frames))
    assert [(e.channel_id, e.consumer_tag, e.body) for e in evs] == [
        (b.id, "cb", b"bbBB"),
        (a.id, "ca", b"aaaAAA"),
    ]


def test_return_assembly() -> None:
    peer = connected()
    ch = peer.open_channel()
    ch.publish("ex", "nowhere", b"data", mandatory=True)
    peer.received()
    (returned,) = peer.returned(ch.id, "ex", "nowhere", b"data")
    assert returned == events.Returned(
        ch.id, None, 312, "NO_ROUTE", "ex", "nowhere", BasicProperties(), b"data"
    )


# --- splitting ------------------------------------------------------------------------


@pytest.mark.parametrize("frame_max", [4096, 8192, 131072])
@pytest.mark.parametrize("size", [0, 1, 4087, 4088, 4089, 8184, 8185, 300_001])
def test_outgoing_bodies_cut_to_frame_max_minus_8(frame_max: int, size: int) -> None:
    peer = Peer(frame_max=frame_max)
    peer.handshake()
    ch = peer.open_channel()
    body = bytes(i % 251 for i in range(size))
    props = BasicProperties(content_type="text/plain", delivery_mode=2)
    assert ch.publish("ex", "rk", body, props, mandatory=True) is None
    sent = peer.received()
    assert [s.channel for s in sent] == [ch.id] * len(sent)
    method, header, *bodies = sent
    assert method.name == "Basic.Publish"
    assert (method.frame.exchange, method.frame.routing_key, method.frame.mandatory) == (
        "ex",
        "rk",
        True,
    )
    assert header.name == "ContentHeader"
    assert header.frame.body_size == size
    assert header.frame.properties.content_type == "text/plain"
    assert header.frame.properties.delivery_mode == 2
    chunk = frame_max - 8
    assert [len(b.frame.value) for b in bodies] == [
        min(chunk, size - start) for start in range(0, size, chunk)
    ]
    assert b"".join(b.frame.value for b in bodies) == body


# --- body size limit ------------------------------------------------------------------------


def test_incoming_body_above_max_body_size_closes_the_channel() -> None:
    peer = Peer(max_body_size=1000)
    peer.handshake()
    ch = peer.open_channel()
    other = peer.open_channel()
    peer.consume(ch, "ct")
    # the header alone decides: the channel is closed before any body arrives
    assert peer.feed(_deliver(ch.id, 1) + raw_content_header(ch.id, 5000)) == []
    sent = peer.received()
    assert [(s.channel, s.name) for s in sent] == [(ch.id, "Channel.Close")]
    assert sent[0].frame.reply_code == 311
    assert ch.state is ChannelState.CLOSING
    # the body frames that follow are discarded
    for _ in range(5):
        assert peer.feed(raw_frame(3, ch.id, b"x" * 1000)) == []
    (closed,) = peer.send(ch.id, Channel.CloseOk())
    assert isinstance(closed, events.ChannelClosed)
    assert getattr(closed.error, "reply_code", None) == 311
    assert "broker keeps the message" in str(closed.error)
    # the connection and the other channels are fine
    assert peer.conn.is_open
    assert other.is_open
    peer.consume(other, "c2")
    (delivery,) = peer.deliver(other.id, "c2", 1, b"y" * 1000)
    assert delivery.body == b"y" * 1000


def test_outgoing_body_above_max_body_size() -> None:
    peer = Peer(max_body_size=10)
    peer.handshake()
    ch = peer.open_channel()
    with pytest.raises(LocalProtocolError) as info:
        ch.publish("", "q", b"x" * 11)
    assert info.value.reply_code == 311
    assert peer.received() == []
    ch.publish("", "q", b"x" * 10)
    assert len(peer.received()) == 3


# --- odd timestamps ------------------------------------------------------------------------


def _table(entries: bytes) -> bytes:
    return struct.pack(">I", len(entries)) + entries


@pytest.mark.parametrize("raw", [2**63 - 1, 2**64 - 1, 1_700_000_000_000, 253402300800])
def test_timestamp_beyond_year_9999_is_the_raw_integer(raw: int) -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    stamp = struct.pack(">Q", raw)
    headers = _table(
        b"\x02tsT" + stamp + b"\x03arrA" + _table(b"T" + stamp + b"T" + struct.pack(">Q", 0))
    )
    flags = 0x8000 | 0x2000 | 0x0040
    props = b"\x04text" + headers + stamp
    data = (
        _deliver(ch.id, 1) + raw_content_header(ch.id, 2, flags, props) + raw_frame(3, ch.id, b"ok")
    )
    (delivery,) = peer.feed(data)
    assert delivery.properties.content_type == "text"
    assert delivery.properties.timestamp == raw
    assert delivery.properties.headers == {
        "ts": raw,
        "arr": [raw, datetime.datetime(1970, 1, 1, tzinfo=UTC)],
    }
    assert delivery.body == b"ok"
    assert peer.conn.is_open


def test_ordinary_timestamp_is_a_datetime() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    flags = 0x0040
    data = _deliver(ch.id, 1) + raw_content_header(
        ch.id, 0, flags, struct.pack(">Q", 1_700_000_000)
    )
    (delivery,) = peer.feed(data)
    assert delivery.properties.timestamp == datetime.datetime.fromtimestamp(1_700_000_000, UTC)


def test_raw_integer_timestamp_can_be_published_back() -> None:
    peer = connected()
    ch = peer.open_channel()
    ch.publish("", "q", b"", BasicProperties(timestamp=2**63 - 1))
    data = peer.conn.data_to_send()
    # the content header carries the same 8 bytes
    assert struct.pack(">HQ", 0x0040, 2**63 - 1) in data


# --- confirms -----------------------------------------------------------------------------


def test_sequence_numbers_start_at_one_after_confirm_select() -> None:
    peer = connected()
    ch = peer.open_channel()
    assert ch.publish("", "q", b"before") is None
    token = ch.confirm_select()
    assert ch.publish("", "q", b"a") == 1  # may be sent before select-ok
    (reply,) = peer.send(ch.id, Confirm.SelectOk())
    assert reply.token == token
    assert [ch.publish("", "q", b"x") for _ in range(3)] == [2, 3, 4]
    assert ch.unconfirmed == 4


def _confirm_channel(n: int) -> tuple[Peer, int, list[int]]:
    peer = connected()
    ch = peer.confirm_channel()
    tags = [seq(ch.publish("", "q", str(i).encode())) for i in range(n)]
    peer.received()
    assert tags == list(range(1, n + 1))
    return peer, ch.id, tags


def test_acks_and_nacks_multiple_and_out_of_order() -> None:
    peer, cid, _ = _confirm_channel(10)
    ch = peer.conn.channels[cid]
    script: list[tuple[Any, list[tuple[tuple[int, ...], Outcome]]]] = [
        (Basic.Ack(delivery_tag=3), [((3,), Outcome.ACK)]),
        (Basic.Nack(delivery_tag=5, multiple=False), [((5,), Outcome.NACK)]),
        (Basic.Ack(delivery_tag=4, multiple=True), [((1, 2, 4), Outcome.ACK)]),
        (Basic.Ack(delivery_tag=4, multiple=True), []),  # nothing left up to 4
        (Basic.Ack(delivery_tag=3), []),  # already resolved
        (Basic.Ack(delivery_tag=9), [((9,), Outcome.ACK)]),
        (Basic.Nack(delivery_tag=8, multiple=True), [((6, 7, 8), Outcome.NACK)]),
        (Basic.Ack(delivery_tag=10, multiple=True), [((10,), Outcome.ACK)]),
    ]
    expected: list[tuple[tuple[int, ...], Outcome]]
    for method, expected in script:
        evs = peer.send(cid, method)
        assert evs == [events.Confirmation(cid, tags, outcome) for tags, outcome in expected]
    assert ch.unconfirmed == 0


def test_multiple_ack_beyond_the_last_publish_does_not_hang() -> None:
    peer, cid, _ = _confirm_channel(3)
    # a hostile broker: the tag is far beyond anything published
    evs = peer.send(cid, Basic.Ack(delivery_tag=2**63 - 1, multiple=True))
    assert evs == [events.Confirmation(cid, (1, 2, 3), Outcome.ACK)]
    ch = peer.conn.channels[cid]
    assert ch.publish("", "q", b"x") == 4
    assert peer.send(cid, Basic.Nack(delivery_tag=4)) == [
        events.Confirmation(cid, (4,), Outcome.NACK)
    ]


def test_unconfirmed_at_server_channel_close_are_unknown() -> None:
    peer, cid, _ = _confirm_channel(4)
    peer.send(cid, Basic.Ack(delivery_tag=2))
    evs = peer.send(
        cid, Channel.Close(reply_code=404, reply_text="NOT_FOUND", class_id=60, method_id=40)
    )
    assert evs[0] == events.Confirmation(cid, (1, 3, 4), Outcome.UNKNOWN)
    assert isinstance(evs[1].error, NotFound)


def test_unconfirmed_at_connection_loss_are_unknown() -> None:
    peer, cid, _ = _confirm_channel(3)
    peer.send(cid, Basic.Nack(delivery_tag=3))
    peer.conn.connection_lost()
    evs = peer.events()
    assert evs[0] == events.Confirmation(cid, (1, 2), Outcome.UNKNOWN)


def test_return_is_paired_with_its_publish() -> None:
    peer = connected()
    ch = peer.confirm_channel()
    t1 = seq(ch.publish("ex", "a", b"1", mandatory=True))
    t2 = seq(ch.publish("ex", "b", b"2", mandatory=False))
    t3 = seq(ch.publish("ex", "b", b"3", mandatory=True))
    t4 = seq(ch.publish("ex", "a", b"4", mandatory=True))
    peer.received()
    # returns arrive before the publish's ack
    (r,) = peer.returned(ch.id, "ex", "b", b"3")
    assert r.publish_tag == t3
    (r,) = peer.returned(ch.id, "ex", "a", b"1")
    assert r.publish_tag == t1
    assert peer.send(ch.id, Basic.Ack(delivery_tag=t3, multiple=True)) == [
        events.Confirmation(ch.id, (t1, t2, t3), Outcome.ACK)
    ]
    (r,) = peer.returned(ch.id, "ex", "a", b"4")
    assert r.publish_tag == t4
    peer.send(ch.id, Basic.Ack(delivery_tag=t4))
    # a return nothing unconfirmed matches
    (r,) = peer.returned(ch.id, "ex", "a", b"5")
    assert r.publish_tag is None


def test_confirms_never_settle_deliveries() -> None:
    peer = connected()
    ch = peer.confirm_channel()
    peer.consume(ch, "ct")
    peer.deliver(ch.id, "ct", 1)
    ch.publish("", "q", b"x")
    peer.received()
    peer.send(ch.id, Basic.Ack(delivery_tag=1))
    assert ch.is_unsettled(1)
    ch.ack(1)
    with pytest.raises(MessageStateError):
        ch.ack(1)


def test_received_headers_can_be_published_again() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    entries = (
        b"\x03binx"
        + struct.pack(">I", 3)
        + b"\x00\xff\x01"  # a byte array
        + b"\x03badS"
        + struct.pack(">I", 2)
        + b"\xff\xfe"  # a long string that is not UTF-8
        + b"\x04listA"
        + struct.pack(">I", 8)
        + b"x"
        + struct.pack(">I", 3)
        + b"abc"
    )
    data = _deliver(ch.id, 1) + raw_content_header(ch.id, 0, 0x2000, _table(entries))
    (delivery,) = peer.feed(data)
    headers = delivery.properties.headers
    assert headers == {"bin": b"\x00\xff\x01", "bad": b"\xff\xfe", "list": [b"abc"]}
    # forwarding the message as received must not fail
    ch.publish("", "elsewhere", delivery.body, delivery.properties)
    _, header = peer.received()
    assert header.frame.properties.headers == {
        "bin": bytearray(b"\x00\xff\x01"),
        "bad": bytearray(b"\xff\xfe"),
        "list": [bytearray(b"abc")],
    }


def test_user_bytes_in_headers_are_byte_arrays() -> None:
    peer = connected()
    ch = peer.open_channel()
    ch.publish("", "q", b"", BasicProperties(headers={"raw": b"\x01\x02", "nested": {"r": [b"z"]}}))
    _, header = peer.received()
    assert header.frame.properties.headers == {"raw": b"\x01\x02", "nested": {"r": [b"z"]}}


def test_timestamp_before_1970_is_a_local_error() -> None:
    peer = connected()
    ch = peer.open_channel()
    with pytest.raises(LocalProtocolError):
        ch.publish(
            "", "q", b"", BasicProperties(timestamp=datetime.datetime(1960, 1, 1, tzinfo=UTC))
        )
    assert peer.received() == []
    assert ch.is_open
