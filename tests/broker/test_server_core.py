"""The embedded broker's protocol core, sans IO: bytes in, bytes out.

Whatever a client sends, ``receive_data`` never raises: a malformed frame
ends in ``connection.close`` (or, during the handshake, a dropped socket),
as RabbitMQ does.  And a stream cut anywhere gives the same answer as the
stream whole.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands as C

from trio_msg._broker.model import Broker
from trio_msg._broker.server import ServerConnection
from trio_msg._protocol import frames as fr

CAPABILITIES = {
    "capabilities": {"consumer_cancel_notify": True, "authentication_failure_close": True}
}


def handshake() -> bytes:
    return b"".join(
        (
            fr.PROTOCOL_HEADER,
            fr.encode_method(
                0,
                C.Connection.StartOk(
                    client_properties=CAPABILITIES,
                    mechanism="PLAIN",
                    response="\0guest\0guest",
                    locale="en_US",
                ),
            ),
            fr.encode_method(
                0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0)
            ),
            fr.encode_method(0, C.Connection.Open(virtual_host="/")),
        )
    )


def conversation() -> bytes:
    """A channel that declares a queue, publishes to it with confirms and gets
    the message back."""
    publish = fr.encode_publish(
        1, "", "q", b"hello", fr.BasicProperties(content_type="text/plain"), 131072
    )
    return handshake() + b"".join(
        (
            fr.encode_method(1, C.Channel.Open()),
            fr.encode_method(1, fr.make_method(C.Queue.Declare, queue="q")),
            fr.encode_method(1, C.Confirm.Select()),
            *(bytes(b) for b in publish),
            fr.encode_method(1, fr.make_method(C.Basic.Get, queue="q", no_ack=True)),
        )
    )


def run(chunks: list[bytes]) -> tuple[bytes, bool]:
    server = ServerConnection(Broker(name="core"), now=0.0)
    out = []
    for chunk in chunks:
        server.receive_data(chunk, 0.0)
        out.append(server.data_to_send())
    return b"".join(out), server.closed


def methods(data: bytes) -> list[str]:
    """The names of the method frames in what the broker sent (after its
    protocol header-less stream)."""
    reader = fr.FrameReader(131072)
    reader.feed(data)
    return [
        fr.decode_method(payload).name
        for kind, _channel, payload in reader.frames()
        if kind == fr.FRAME_METHOD
    ]


def test_a_conversation_gets_its_answers() -> None:
    data, closed = run([conversation()])
    assert not closed
    assert methods(data) == [
        "Connection.Start",
        "Connection.Tune",
        "Connection.OpenOk",
        "Channel.OpenOk",
        "Queue.DeclareOk",
        "Confirm.SelectOk",
        "Basic.Ack",
        "Basic.GetOk",
    ]


@given(st.data())
@settings(max_examples=200)
def test_cut_anywhere_the_answers_are_the_same(data: st.DataObject) -> None:
    whole = conversation()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(whole) - 1), max_size=12)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    assert run(pieces) == run([whole])


@given(garbage=st.binary(min_size=1, max_size=200), split=st.integers(0, 200))
@settings(max_examples=300)
def test_hostile_bytes_after_the_handshake_never_raise(garbage: bytes, split: int) -> None:
    data, closed = run([handshake(), garbage[:split], garbage[split:]])
    names = methods(data)  # whole frames only, each one decodable
    assert names[:3] == ["Connection.Start", "Connection.Tune", "Connection.OpenOk"]
    if closed:  # ended by the broker: it said why first
        assert names[-1] == "Connection.Close"


@given(garbage=st.binary(min_size=1, max_size=100))
@settings(max_examples=200)
def test_hostile_bytes_in_the_handshake_never_raise(garbage: bytes) -> None:
    run([fr.PROTOCOL_HEADER, garbage])
    run([garbage])


def test_a_truncated_publish_is_a_frame_error() -> None:
    whole = fr.encode_method(1, fr.make_method(C.Basic.Publish, exchange="", routing_key="q"))
    payload = whole[7:-1][:-2]  # the routing key cut short, the frame's size fixed
    frame = fr.FRAME_METHOD.to_bytes(1, "big") + (1).to_bytes(2, "big")
    frame += len(payload).to_bytes(4, "big") + payload + b"\xce"
    data, _ = run([handshake(), fr.encode_method(1, C.Channel.Open()), frame])
    reader = fr.FrameReader(131072)
    reader.feed(data)
    close = [fr.decode_method(p) for k, _c, p in reader.frames() if k == fr.FRAME_METHOD][-1]
    assert close.name == "Connection.Close"
    assert close.reply_code == 501
    assert "Basic.Publish" in close.reply_text


def consuming() -> bytes:
    """Three messages published, consumed with a prefetch of two, acked
    one by one (the hand-written publish and ack paths when whole)."""
    props = fr.BasicProperties(content_type="text/plain", delivery_mode=2)
    publishes = b"".join(
        bytes(b) for i in range(3) for b in fr.encode_publish(1, "", "q", b"m%d" % i, props, 131072)
    )
    return handshake() + b"".join(
        (
            fr.encode_method(1, C.Channel.Open()),
            fr.encode_method(1, fr.make_method(C.Queue.Declare, queue="q")),
            publishes,
            fr.encode_method(1, C.Basic.Qos(prefetch_count=2)),
            fr.encode_method(1, fr.make_method(C.Basic.Consume, queue="q", consumer_tag="c")),
            fr.encode_ack(1, 80, 1, 0),
            fr.encode_ack(1, 80, 2, 0),
            fr.encode_ack(1, 80, 3, 0),
            fr.encode_ack(1, 80, 3, 0),  # twice: 406, the channel closes
        )
    )


@given(st.data())
@settings(max_examples=200)
def test_consume_and_ack_cut_anywhere_the_answers_are_the_same(data: st.DataObject) -> None:
    whole = consuming()
    cuts = sorted(data.draw(st.sets(st.integers(1, len(whole) - 1), max_size=12)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    out, closed = run([whole])
    assert run(pieces) == (out, closed)
    assert methods(out)[-4:] == ["Basic.Deliver", "Basic.Deliver", "Basic.Deliver", "Channel.Close"]


_NAMES = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 255)


@given(
    tag=_NAMES.filter(bool),
    queue=_NAMES.filter(lambda s: bool(s) and not s.startswith("amq.")),
    body=st.one_of(st.binary(max_size=200), st.integers(0, 300_000).map(lambda n: b"x" * n)),
    props=st.builds(
        fr.BasicProperties,
        content_type=st.none() | _NAMES,
        delivery_mode=st.none() | st.sampled_from([1, 2]),
        correlation_id=st.none() | _NAMES,
        headers=st.none() | st.dictionaries(_NAMES.filter(bool), st.integers(0, 9), max_size=3),
        priority=st.none() | st.integers(0, 9),
    ),
    frame_max=st.sampled_from([4096, 131072]),
)
@settings(max_examples=100, deadline=None)
def test_a_delivery_is_the_codecs_frames(
    tag: str, queue: str, body: bytes, props: fr.BasicProperties, frame_max: int
) -> None:
    # basic.deliver and its content are written by hand: byte for byte what
    # the codec writes, first delivery and redelivery alike.
    start = handshake().replace(
        fr.encode_method(0, C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0)),
        fr.encode_method(
            0, C.Connection.TuneOk(channel_max=2047, frame_max=frame_max, heartbeat=0)
        ),
    )
    server = ServerConnection(Broker(name="codec"), now=0.0)
    server.receive_data(
        start
        + fr.encode_method(1, C.Channel.Open())
        + fr.encode_method(1, fr.make_method(C.Queue.Declare, queue=queue))
        + fr.encode_method(1, fr.make_method(C.Basic.Consume, queue=queue, consumer_tag=tag))
    )
    server.data_to_send()
    server.receive_data(
        b"".join(bytes(b) for b in fr.encode_publish(1, "", queue, body, props, frame_max))
    )
    server.receive_data(fr.encode_ack(1, 120, 1, 2))  # nack, requeue: delivered again
    expected = b"".join(
        fr.encode_method(
            1,
            fr.make_method(
                C.Basic.Deliver,
                consumer_tag=tag,
                delivery_tag=n,
                redelivered=n == 2,
                exchange="",
                routing_key=queue,
            ),
        )
        + b"".join(bytes(b) for b in fr.encode_content(1, body, props, frame_max))
        for n in (1, 2)
    )
    assert server.data_to_send() == expected
