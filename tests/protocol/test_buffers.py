"""``AMQPConnection.buffers_to_send``: the same bytes as ``data_to_send``,
with a large body left as it is (views of it, not copies).

The driver writes the buffers with one ``sendmsg``; if they held other
bytes than ``data_to_send``, or in another order, the broker would read a
different stream.  A copy of a 1 MiB body per message was what made
trio_msg publish large messages at half asyncio's rate on trio.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_msg._protocol import frames as fr
from trio_msg._protocol.connection import VECTOR_MIN, AMQPChannel

from .peer import Peer, connected, decode_client_bytes

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Body sizes around the thresholds: joined with its frames (under 4 KiB),
#: one body frame, a VECTOR_MIN piece, several frames at the frame size.
sizes = st.one_of(
    st.integers(0, 5000),
    st.integers(VECTOR_MIN - 2, VECTOR_MIN + 2),
    st.integers(4080, 70_000),
    st.sampled_from([131072 - 8, 131072 - 7, 3 * 131072, 1 << 20]),
)

#: One step: publish a body of some size, or take the output.
steps = st.lists(
    st.one_of(st.tuples(st.just("publish"), sizes), st.tuples(st.just("take"), st.none())),
    max_size=25,
)


def body_of(size: int, salt: int) -> bytes:
    return bytes((i * 7 + salt) & 0xFF for i in range(256)) * (size // 256) + bytes(size % 256)


def run(peer: Peer, ch: AMQPChannel, plan: list[tuple[str, Any]], take: Any) -> bytes:
    out = bytearray()
    for n, (what, arg) in enumerate(plan):
        if what == "publish":
            ch.publish("ex", "rk", body_of(arg, n), fr.BasicProperties(message_id=str(n)))
        else:
            out += take(peer.conn)
    out += take(peer.conn)
    return bytes(out)


def two_channels(frame_max: int) -> tuple[Peer, AMQPChannel, Peer, AMQPChannel]:
    a, b = Peer(), Peer()
    a.handshake(frame_max=frame_max)
    b.handshake(frame_max=frame_max)
    assert a.conn.frame_max == frame_max
    return a, a.open_channel(), b, b.open_channel()


@SETTINGS
@given(plan=steps, frame_max=st.sampled_from([4096, 8192, 131072]))
def test_buffers_hold_the_bytes_data_to_send_gives(
    plan: list[tuple[str, Any]], frame_max: int
) -> None:
    a, ch_a, b, ch_b = two_channels(frame_max)
    joined = run(a, ch_a, plan, lambda conn: conn.data_to_send())

    def vectored(conn: Any) -> bytes:
        size = conn.outbound_size
        buffers = conn.buffers_to_send()
        assert all(len(piece) for piece in buffers)  # nothing empty for sendmsg
        assert sum(map(len, buffers)) == size and conn.outbound_size == 0
        return b"".join(buffers)

    assert run(b, ch_b, plan, vectored) == joined


def test_a_large_body_is_sent_from_the_callers_bytes_not_a_copy() -> None:
    peer = connected()
    ch = peer.open_channel()
    body = body_of(1 << 20, 1)
    ch.publish("", "q", body)
    buffers = peer.conn.buffers_to_send()
    views = [piece for piece in buffers if isinstance(piece, memoryview)]
    # Nine body frames: the first eight (128 KiB less 8) are views of the
    # body, none a copy; the ninth's 64 bytes are joined with their frame.
    assert len(views) == 8 and all(view.obj is body for view in views)
    assert sum(map(len, views)) == len(body) - 64
    # The small pieces between them are joined: a frame end and the next
    # frame's header, one buffer.
    assert len(buffers) == 2 * len(views) + 1
    sent = decode_client_bytes(b"".join(buffers))
    assert [s.name for s in sent] == ["Basic.Publish", "ContentHeader"] + ["ContentBody"] * 9


def test_small_messages_come_as_one_buffer() -> None:
    peer = connected()
    ch = peer.open_channel()
    for n in range(50):
        ch.publish("", "q", body_of(100, n))
    buffers = peer.conn.buffers_to_send()
    assert len(buffers) == 1 and type(buffers[0]) is bytes
    assert peer.conn.buffers_to_send() == []


def test_a_bytearray_body_changed_after_publish_is_sent_as_it_was() -> None:
    """The core keeps a reference to a body until it is written; a caller's
    bytearray is copied, so changing (or resizing) it later is harmless."""
    peer = connected()
    ch = peer.open_channel()
    body = bytearray(body_of(300_000, 3))
    ch.publish("", "q", body)  # type: ignore[arg-type]  # a caller ignoring the types
    original = bytes(body)
    body[:10] = b"X" * 10
    body.clear()  # no view of it is held: resizing works
    sent = decode_client_bytes(b"".join(peer.conn.buffers_to_send()))
    assert b"".join(s.frame.value for s in sent if s.name == "ContentBody") == original
