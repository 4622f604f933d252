"""Hostile bytes after a completed handshake: consumed, or a ProtocolError.

Never another exception, never a hang, and the reader never holds more than
one frame's worth of bytes.
"""

from __future__ import annotations

import itertools
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import frame as pframe
from pamqp.commands import Basic, Channel, Connection

from trio_msg._protocol import ConnectionState
from trio_msg._protocol.errors import FrameError, ProtocolError

from .peer import Peer, build, content_frames, raw_content_header, raw_frame

FRAME_MAX = 8192


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so nothing in the core can swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"receive_data took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def ready_peer() -> Peer:
    """Handshake done, a confirm channel with a consumer, publishes and a
    request in flight: as many code paths reachable as possible."""
    peer = Peer(heartbeat=0)
    peer.handshake(frame_max=FRAME_MAX)
    ch = peer.confirm_channel(1)
    peer.consume(ch, "ct")
    for _ in range(3):
        ch.publish("ex", "rk", b"x", mandatory=True)
    ch.basic_get("q")
    peer.received()
    peer.open_channel(2)
    return peer


def m(channel: int, method: object) -> bytes:
    return bytes(pframe.marshal(method, channel))


_deliver = build(
    Basic.Deliver, consumer_tag="ct", delivery_tag=1, redelivered=False, exchange="", routing_key=""
)
VALID = [
    m(1, Basic.Ack(delivery_tag=2, multiple=True)),
    m(1, Basic.Nack(delivery_tag=2**62, multiple=True)),
    b"".join(content_frames(1, _deliver, b"hello" * 10, None, 7)),
    b"".join(
        content_frames(
            1,
            build(
                Basic.GetOk,
                delivery_tag=5,
                redelivered=False,
                exchange="",
                routing_key="",
                message_count=0,
            ),
            b"got",
        )
    ),
    b"".join(
        content_frames(
            1,
            build(
                Basic.Return, reply_code=312, reply_text="NO_ROUTE", exchange="ex", routing_key="rk"
            ),
            b"r",
        )
    ),
    m(1, Channel.Flow(active=False)),
    m(1, build(Basic.Cancel, consumer_tag="ct", nowait=False)),
    m(2, Channel.Close(reply_code=406, reply_text="x", class_id=0, method_id=0)),
    m(0, Connection.Blocked(reason="r")),
    m(0, Connection.Unblocked()),
    b"\x08\x00\x00\x00\x00\x00\x00\xce",
]

frame_types = st.one_of(st.sampled_from([1, 2, 3, 8]), st.integers(0, 255))
channels = st.one_of(st.sampled_from([0, 1, 2]), st.integers(0, 65535))


@st.composite
def random_frame(draw: st.DrawFn) -> bytes:
    payload = draw(st.binary(max_size=64))
    size = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32 - 1)))
    end = draw(st.one_of(st.just(b"\xce"), st.binary(min_size=1, max_size=1)))
    return struct.pack(">BHI", draw(frame_types), draw(channels), size) + payload + end


@st.composite
def method_with_garbage(draw: st.DrawFn) -> bytes:
    """A method frame on channel 0/1/2: a real method id, random arguments."""
    index = draw(
        st.sampled_from(
            [
                0x003C0050,
                0x003C0078,
                0x003C003C,
                0x003C0047,
                0x003C0032,
                0x003C001E,
                0x00140014,
                0x00140028,
                0x00140029,
                0x000A0032,
                0x000A003C,
                0x000A001E,
                0x0032000B,
                0x003C0015,
            ]
        )
    )
    args = draw(st.binary(max_size=40))
    return raw_frame(1, draw(st.sampled_from([0, 1, 2])), struct.pack(">I", index) + args)


@st.composite
def content_header_with_garbage(draw: st.DrawFn) -> bytes:
    size = draw(st.integers(0, 2**64 - 1))
    flags = draw(st.integers(0, 0xFFFF))
    props = draw(st.binary(max_size=60))
    return m(1, _deliver) + raw_content_header(1, size, flags, props)


chunks = st.one_of(
    st.binary(max_size=200),
    random_frame(),
    method_with_garbage(),
    content_header_with_garbage(),
    st.sampled_from(VALID),
    st.sampled_from(VALID).flatmap(
        lambda f: st.integers(0, len(f)).map(lambda n: f[:n])
    ),  # truncated
    st.just(struct.pack(">BHI", 3, 1, 0xFFFFFFFF)),  # a 4 GiB frame
    st.sampled_from(VALID).map(lambda f: f[:-1] + b"\x00"),  # bad frame end
    st.integers(9, 255).map(lambda t: struct.pack(">BHI", t, 0, 0) + b"\xce"),  # unknown type
)


def feed_hostile(peer: Peer, pieces: list[bytes]) -> None:
    conn = peer.conn
    failed: ProtocolError | None = None
    for piece in pieces:
        try:
            with time_limit(5):
                conn.receive_data(piece)
        except ProtocolError as exc:
            failed = exc
        conn.next_events()
        conn.data_to_send()
        if failed is not None:
            break
        assert conn._reader.buffered <= conn.frame_max + 8
    if failed is not None:
        assert conn.state is ConnectionState.ERROR
        size = conn._reader.buffered
        for _ in range(3):  # poisoned: raises again, buffers nothing more
            with pytest.raises(ProtocolError):
                conn.receive_data(b"\x08\x00\x00\x00\x00\x00\x00\xce" * 100)
            assert conn._reader.buffered == size


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(chunks, min_size=1, max_size=8), data=st.data())
def test_hostile_input(parts: list[bytes], data: st.DataObject) -> None:
    peer = ready_peer()
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=6)))
    points = [0, *cuts, len(stream)]
    feed_hostile(peer, [stream[a:b] for a, b in itertools.pairwise(points)])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noise=st.binary(min_size=1, max_size=5000))
def test_random_bytes(noise: bytes) -> None:
    feed_hostile(ready_peer(), [noise])


def test_deeply_nested_headers_are_a_frame_error() -> None:
    peer = ready_peer()
    table = struct.pack(">I", 0)
    for _ in range(1000):  # deeper than the interpreter's recursion limit allows
        entry = b"\x01kF" + table
        table = struct.pack(">I", len(entry)) + entry
    assert len(table) < FRAME_MAX - 100
    data = m(1, _deliver) + raw_content_header(1, 0, 0x2000, table)
    with pytest.raises(FrameError) as info:
        peer.conn.receive_data(data)
    assert info.value.reply_code == 501


def test_deeply_nested_arrays_are_a_frame_error() -> None:
    peer = ready_peer()
    value = b"V"
    for _ in range(1200):
        value = b"A" + struct.pack(">I", len(value)) + value
    entry = b"\x01k" + value
    table = struct.pack(">I", len(entry)) + entry
    data = m(1, _deliver) + raw_content_header(1, 0, 0x2000, table)
    with pytest.raises(FrameError):
        peer.conn.receive_data(data)


def test_huge_multiple_nack_is_quick() -> None:
    peer = ready_peer()
    with time_limit(2):
        peer.conn.receive_data(m(1, Basic.Nack(delivery_tag=2**63 - 1, multiple=True)))
    assert peer.conn.channels[1].unconfirmed == 0


def test_4gib_length_header_is_refused_before_buffering() -> None:
    peer = ready_peer()
    with pytest.raises(FrameError):
        peer.conn.receive_data(struct.pack(">BHI", 3, 1, 0xFFFFFFFF))
    assert peer.conn._reader.buffered <= 7
