"""Whole, byte by byte or in random splits: the same events, the same bytes out."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import frame as pframe
from pamqp import heartbeat as pheartbeat
from pamqp.commands import Basic, Channel, Confirm, Connection

from trio_msg._protocol import AMQPConnection

from .peer import build, content_frames, normalize, raw_content_header, raw_frame

Command = Callable[[AMQPConnection], None]


@dataclass
class Script:
    """Alternating client commands and server byte segments."""

    steps: list[tuple[str, Any]] = field(default_factory=list)

    def cmd(self, fn: Command) -> None:
        self.steps.append(("cmd", fn))

    def data(self, *parts: bytes) -> None:
        self.steps.append(("data", b"".join(parts)))

    @property
    def segments(self) -> list[bytes]:
        return [v for k, v in self.steps if k == "data"]


def m(channel: int, method: Any) -> bytes:
    return bytes(pframe.marshal(method, channel))


def make_script(bodies: list[bytes], chunk: int) -> Script:
    s = Script()
    s.cmd(lambda c: c.initiate())
    s.data(
        m(
            0,
            Connection.Start(
                server_properties={"product": "RabbitMQ"}, mechanisms="PLAIN AMQPLAIN"
            ),
        ),
        m(0, Connection.Tune(channel_max=100, frame_max=8192, heartbeat=30)),
        m(0, Connection.OpenOk()),
    )

    def open_channels(c: AMQPConnection) -> None:
        c.open_channel()
        c.open_channel()

    s.cmd(open_channels)
    s.data(m(1, Channel.OpenOk()), m(2, Channel.OpenOk()))

    def requests(c: AMQPConnection) -> None:
        one, two = c.channels[1], c.channels[2]
        one.confirm_select()
        one.basic_consume("q", "c1")
        two.basic_consume("q", "c2", no_ack=True)
        two.basic_get("q")
        for i, b in enumerate(bodies):
            one.publish("ex", f"rk{i % 2}", b, mandatory=True)

    s.cmd(requests)

    def deliver(channel: int, tag: str, n: int, body: bytes) -> bytes:
        method = build(
            Basic.Deliver,
            consumer_tag=tag,
            delivery_tag=n,
            redelivered=bool(n % 2),
            exchange="ex",
            routing_key="rk",
        )
        props = Basic.Properties(content_type="text/plain", headers={"n": n, "s": "x" * n})
        return b"".join(content_frames(channel, method, body, props, chunk))

    hb = pframe.marshal(pheartbeat.Heartbeat(), 0)
    parts = [
        m(1, Confirm.SelectOk()),
        m(2, build(Basic.ConsumeOk, consumer_tag="c2")),
        hb,
        m(1, build(Basic.ConsumeOk, consumer_tag="c1")),
    ]
    for n, b in enumerate(bodies, start=1):
        parts.append(deliver(1 if n % 2 else 2, "c1" if n % 2 else "c2", n, b))
    get_ok = build(
        Basic.GetOk,
        delivery_tag=99,
        redelivered=False,
        exchange="",
        routing_key="q",
        message_count=0,
    )
    parts.append(b"".join(content_frames(2, get_ok, b"got", None, chunk)))
    if bodies:
        ret = build(
            Basic.Return, reply_code=312, reply_text="NO_ROUTE", exchange="ex", routing_key="rk0"
        )
        parts.append(b"".join(content_frames(1, ret, bodies[0], None, chunk)))
    parts += [
        m(0, Connection.Blocked(reason="memory")),
        m(1, Basic.Nack(delivery_tag=2, multiple=False)) if len(bodies) >= 2 else hb,
        m(1, Basic.Ack(delivery_tag=len(bodies), multiple=True)) if bodies else hb,
        m(0, Connection.Unblocked()),
        m(2, Channel.Flow(active=False)),
        # a zero-length message: method and header only
        m(
            1,
            build(
                Basic.Deliver,
                consumer_tag="c1",
                delivery_tag=1000,
                redelivered=False,
                exchange="",
                routing_key="",
            ),
        ),
        raw_content_header(1, 0),
        m(2, build(Basic.Cancel, consumer_tag="c2", nowait=False)),
        m(
            2,
            Channel.Close(
                reply_code=406, reply_text="PRECONDITION_FAILED", class_id=60, method_id=80
            ),
        ),
        m(
            0,
            Connection.Close(
                reply_code=320, reply_text="CONNECTION_FORCED", class_id=0, method_id=0
            ),
        ),
        raw_frame(3, 1, b"ignored after close"),
    ]
    s.data(*parts)
    return s


def run(script: Script, splitter: Callable[[int, bytes], list[bytes]]) -> tuple[list[Any], bytes]:
    conn = AMQPConnection(heartbeat=None)
    evs: list[Any] = []
    out = []
    seg = 0
    for kind, value in script.steps:
        if kind == "cmd":
            value(conn)
        else:
            for piece in splitter(seg, value):
                conn.receive_data(piece)
                evs += conn.next_events()
                out.append(conn.data_to_send())
            seg += 1
        evs += conn.next_events()
        out.append(conn.data_to_send())
    return normalize(evs), b"".join(out)


def whole(_: int, data: bytes) -> list[bytes]:
    return [data]


def bytewise(_: int, data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


bodies_st = st.lists(st.binary(max_size=3000), max_size=6)


def test_script_is_meaningful() -> None:
    evs, out = run(make_script([b"a" * 5000, b"", b"xyz"], 1000), whole)
    kinds = [e[0] if isinstance(e, tuple) else type(e).__name__ for e in evs]
    for expected in (
        "ConnectionOpened",
        "ChannelOpened",
        "RpcReply",
        "Delivery",
        "Returned",
        "Confirmation",
        "ConnectionBlocked",
        "ConnectionUnblocked",
        "ChannelFlow",
        "ConsumerCancelled",
        "ChannelClosed",
        "ConnectionTerminated",
    ):
        assert expected in kinds, expected
    assert kinds[-1] == "ConnectionTerminated"
    assert out.startswith(b"AMQP\x00\x00\x09\x01")


def test_byte_by_byte_equals_whole() -> None:
    script = make_script([b"a" * 9000, b"", b"xyz", bytes(range(256))], 1000)
    assert run(script, bytewise) == run(script, whole)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=bodies_st, chunk=st.integers(1, 8184), data=st.data())
def test_random_splits_equal_whole(bodies: list[bytes], chunk: int, data: st.DataObject) -> None:
    script = make_script(bodies, chunk)
    cuts = [
        sorted(data.draw(st.sets(st.integers(1, max(1, len(seg) - 1)), max_size=40)))
        for seg in script.segments
    ]

    def random_split(i: int, seg: bytes) -> list[bytes]:
        points = [0, *cuts[i], len(seg)]
        return [seg[a:b] for a, b in itertools.pairwise(points)]

    assert run(script, random_split) == run(script, whole)
