"""The hand-written hot-path codec in ``frames`` is byte-identical to pamqp.

Where bytes legitimately differ, decoded values are compared instead:

- pamqp treats an empty string property as absent (flag cleared); trio_msg
  sends it (flag set, zero-length string), so the receiver gets ``""`` back
  rather than ``None``.  Byte identity is therefore proved over non-empty
  strings, and empty strings by a round trip.
- pamqp refuses ``cluster_id`` and delivery modes other than 1/2 at
  construction; the comparison builds pamqp's properties without that
  validation (RabbitMQ accepts any octet and ignores cluster_id).
- pamqp reads timestamps above 2**32 as milliseconds; trio_msg keeps any
  value that is no datetime as the raw integer.  Compared timestamps stay
  below 2**32 (year 2106).
- header tables: trio_msg encodes the common value types itself and leaves
  the rest to pamqp; both are compared with pamqp's encoder on every type
  pamqp accepts, and on values it refuses (then both refuse).  ``bytes``
  values are sent as byte arrays, as pamqp sends ``bytearray``.
"""

from __future__ import annotations

import collections
import datetime
import enum
import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import decode as pdecode
from pamqp import encode as pencode
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp.commands import Basic, Exchange, Queue

from trio_msg._protocol import frames as fr
from trio_msg._protocol.errors import LocalProtocolError
from trio_msg._protocol.frames import BasicProperties

from .peer import _lenient, build, decode_client_bytes

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UTC = datetime.UTC

shortstr = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
nonempty_shortstr = shortstr.filter(bool)
stamps = st.integers(0, 0xFFFFFFFF).map(lambda t: datetime.datetime.fromtimestamp(t, UTC))

leaves = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=30),
    st.binary(max_size=30).map(bytearray),
    st.floats(width=32, allow_nan=False),
    stamps,
    st.none(),
)
table_keys = st.text(min_size=1, max_size=12).filter(lambda k: len(k.encode()) <= 128)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(table_keys, children, max_size=4)
    ),
    max_leaves=20,
)
tables = st.dictionaries(table_keys, values, max_size=6)

PROPERTY_NAMES = [
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
]


@st.composite
def properties(
    draw: st.DrawFn, strings: st.SearchStrategy[str] = nonempty_shortstr
) -> BasicProperties:
    fields: dict[str, Any] = {}
    for name in PROPERTY_NAMES:
        if not draw(st.booleans()):
            continue
        if name == "headers":
            fields[name] = draw(tables)
        elif name in ("delivery_mode", "priority"):
            fields[name] = draw(st.integers(0, 255))
        elif name == "timestamp":
            fields[name] = draw(stamps)
        else:
            fields[name] = draw(strings)
    return BasicProperties(**fields)


def pamqp_properties(props: BasicProperties) -> Basic.Properties:
    cls = _lenient(Basic.Properties)
    kwargs = {("message_type" if k == "type" else k): getattr(props, k) for k in PROPERTY_NAMES}
    if kwargs["cluster_id"] is None:
        kwargs["cluster_id"] = ""
    props_obj: Basic.Properties = cls(**kwargs)
    return props_obj


def pamqp_content(channel: int, body: bytes, props: BasicProperties, frame_max: int) -> bytes:
    out = [pframe.marshal(pheader.ContentHeader(0, len(body), pamqp_properties(props)), channel)]
    step = frame_max - 8
    out += [
        pframe.marshal(pbody.ContentBody(body[i : i + step]), channel)
        for i in range(0, len(body), step)
    ]
    return b"".join(out)


# --- encoders ------------------------------------------------------------------------


@SETTINGS
@given(
    channel=st.integers(1, 65535),
    exchange=shortstr,
    routing_key=shortstr,
    body=st.binary(max_size=20000),
    props=properties(),
    frame_max=st.integers(4096, 20000),
    mandatory=st.booleans(),
    immediate=st.booleans(),
)
def test_encode_publish_matches_pamqp(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    props: BasicProperties,
    frame_max: int,
    mandatory: bool,
    immediate: bool,
) -> None:
    ours = b"".join(
        fr.encode_publish(
            channel, exchange, routing_key, body, props, frame_max, mandatory, immediate
        )
    )
    assert ours == pamqp_publish(
        channel, exchange, routing_key, body, props, frame_max, mandatory, immediate
    )


def pamqp_publish(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    props: BasicProperties,
    frame_max: int,
    mandatory: bool = False,
    immediate: bool = False,
) -> bytes:
    method = build(
        Basic.Publish,
        exchange=exchange,
        routing_key=routing_key,
        mandatory=mandatory,
        immediate=immediate,
    )
    return pframe.marshal(method, channel) + pamqp_content(channel, body, props, frame_max)


@SETTINGS
@given(
    props=properties(),
    bodies=st.lists(st.binary(max_size=6000), min_size=2, max_size=5),
    frame_max=st.sampled_from([4096, 5000, 131072]),
    mandatory=st.booleans(),
)
def test_encode_publish_again_with_the_same_properties_matches_pamqp(
    props: BasicProperties, bodies: list[bytes], frame_max: int, mandatory: bool
) -> None:
    # The second and later messages use the head kept from the first.
    for body in bodies:
        ours = b"".join(fr.encode_publish(7, "ex", "rk", body, props, frame_max, mandatory))
        assert ours == pamqp_publish(7, "ex", "rk", body, props, frame_max, mandatory)


def test_encode_publish_never_reuses_the_head_of_a_properties_object_gone() -> None:
    # Objects made and dropped in turn often get the same id(): the head
    # kept for one must not be sent for the next (the cache keeps each object
    # alive while it keeps its head, past a clear too: 300 > _HEADS_MAX).
    for i in range(300):
        props = BasicProperties(content_type=f"type/{i}", priority=i % 10)
        ours = b"".join(fr.encode_publish(1, "", "q", b"body", props, 131072))
        assert ours == pamqp_publish(1, "", "q", b"body", props, 131072)
        del props


@pytest.mark.parametrize(
    "unique",
    [
        {"correlation_id": "call-{i}", "reply_to": "amq.gen-replies"},
        {"message_id": "m-{i}"},
        {"timestamp": "{i}"},
    ],
)
def test_encode_publish_keeps_no_head_for_properties_unique_to_a_message(
    unique: dict[str, str],
) -> None:
    # An RPC client's correlation ids (or message ids, or timestamps) never
    # repeat: keeping their heads would only hold up to _HEADS_MAX finished
    # calls' properties in memory.
    fr._HEADS.clear()
    shared = BasicProperties(content_type="application/data")
    for i in range(20):
        values: dict[str, Any] = {k: v.format(i=i) for k, v in unique.items()}
        if "timestamp" in values:
            values["timestamp"] = datetime.datetime.fromtimestamp(1e9 + i, tz=datetime.UTC)
        props = BasicProperties(content_type="application/data", **values)
        ours = b"".join(fr.encode_publish(1, "", "q", b"body", props, 131072))
        assert ours == pamqp_publish(1, "", "q", b"body", props, 131072)
        fr.encode_publish(1, "", "q", b"body", shared, 131072)
    assert list(fr._HEADS) == [(1, "", "q", id(shared), 0)]


@SETTINGS
@given(
    channel=st.integers(0, 65535),
    body=st.binary(max_size=9000),
    props=properties(),
    frame_max=st.sampled_from([4096, 4097, 5000, 8192, 131072]),
)
def test_encode_content_matches_pamqp(
    channel: int, body: bytes, props: BasicProperties, frame_max: int
) -> None:
    assert b"".join(fr.encode_content(channel, body, props, frame_max)) == pamqp_content(
        channel, body, props, frame_max
    )


@SETTINGS
@given(props=properties())
def test_encode_properties_matches_pamqp(props: BasicProperties) -> None:
    flags, encoded = fr.encode_properties(props)
    assert struct.pack(">H", flags) + encoded == pamqp_properties(props).marshal()


@SETTINGS
@given(
    channel=st.integers(0, 65535),
    tag=st.integers(0, 2**63 - 1),
    multiple=st.booleans(),
    requeue=st.booleans(),
)
def test_encode_ack_nack_reject_match_pamqp(
    channel: int, tag: int, multiple: bool, requeue: bool
) -> None:
    assert fr.encode_ack(channel, 80, tag, multiple) == pframe.marshal(
        Basic.Ack(delivery_tag=tag, multiple=multiple), channel
    )
    assert fr.encode_ack(channel, 120, tag, multiple | (requeue << 1)) == pframe.marshal(
        Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue), channel
    )
    assert fr.encode_ack(channel, 90, tag, requeue) == pframe.marshal(
        Basic.Reject(delivery_tag=tag, requeue=requeue), channel
    )


@SETTINGS
@given(channel=st.integers(1, 65535), name=shortstr, other=shortstr, args=tables)
def test_encode_method_matches_pamqp_with_rabbitmq_names(
    channel: int, name: str, other: str, args: dict[str, Any]
) -> None:
    cases: list[tuple[Any, dict[str, Any]]] = [
        (Queue.Declare, {"queue": name, "durable": True, "arguments": args}),
        (Exchange.Declare, {"exchange": name, "exchange_type": other, "arguments": args}),
        (Queue.Bind, {"queue": name, "exchange": other, "routing_key": name, "arguments": args}),
        (Basic.Consume, {"queue": name, "consumer_tag": other, "arguments": args}),
    ]
    for cls, fields in cases:
        ours = fr.encode_method(channel, fr.make_method(cls, **fields))
        assert ours == pframe.marshal(build(cls, **fields), channel)
        # and pamqp's own decoder reads it back
        (sent,) = decode_client_bytes(ours)
        assert all(getattr(sent.frame, k) == v for k, v in fields.items())


# --- decoders ------------------------------------------------------------------------------


@SETTINGS
@given(props=properties(), body_size=st.integers(0, 2**63 - 1))
def test_decode_properties_matches_pamqp(props: BasicProperties, body_size: int) -> None:
    payload = pheader.ContentHeader(0, body_size, pamqp_properties(props)).marshal()
    class_id, size, ours = fr.decode_content_header(payload)
    theirs = pheader.ContentHeader()
    theirs.unmarshal(payload)
    assert (class_id, size) == (60, body_size)
    for name in PROPERTY_NAMES:
        expected = getattr(theirs.properties, "message_type" if name == "type" else name)
        if name == "cluster_id" and expected == "":
            expected = None  # pamqp's default for absent
        assert getattr(ours, name) == expected, name
    # and ours round-trips to the value we started from (floats aside)
    flags, encoded = fr.encode_properties(props)
    again = fr.decode_properties(flags, encoded)
    assert fr.encode_properties(again) == (flags, encoded)


@SETTINGS
@given(table=tables)
def test_decode_table_matches_pamqp(table: dict[str, Any]) -> None:
    flags, encoded = fr.encode_properties(BasicProperties(headers=table))
    ours = fr.decode_properties(flags, encoded).headers
    _, theirs = pdecode.field_table(encoded)
    assert ours == theirs  # bytes vs bytearray compare equal


@SETTINGS
@given(props=properties(strings=shortstr))
def test_empty_strings_round_trip(props: BasicProperties) -> None:
    flags, encoded = fr.encode_properties(props)
    again = fr.decode_properties(flags, encoded)
    for name in PROPERTY_NAMES:
        if name == "headers":
            continue
        assert getattr(again, name) == getattr(props, name), name


class Colour(enum.IntEnum):
    RED = 1
    BIG = 2**40


class Name(str):
    pass


exotic_leaves = st.one_of(
    leaves,
    st.integers(),  # beyond 64 bits too: refused
    st.floats(),  # nan, inf, and doubles that overflow 32 bits
    st.binary(max_size=20),
    st.decimals(allow_nan=True),
    st.decimals(min_value=-(10**6), max_value=10**6, places=2),
    st.datetimes(timezones=st.sampled_from([None, UTC]), min_value=datetime.datetime(1971, 1, 1)),
    st.datetimes(timezones=st.none(), max_value=datetime.datetime(1969, 1, 1)),  # refused
    st.just(time.gmtime(1_700_000_000)),
    st.sampled_from([Colour.RED, Colour.BIG, Name("sub"), 1j, object()]),
    st.text(max_size=300),
)
exotic_values = st.recursive(
    exotic_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(table_keys, children, max_size=4)
        | st.dictionaries(table_keys, children, max_size=2).map(collections.OrderedDict)
    ),
    max_leaves=12,
)
exotic_keys = st.one_of(table_keys, st.text(min_size=40, max_size=80))  # > 128 bytes: truncated


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=st.dictionaries(exotic_keys, exotic_values, max_size=6))
def test_encode_table_matches_pamqp_on_every_type(table: dict[str, Any]) -> None:
    try:
        theirs: bytes | None = pencode.field_table(fr._bytes_as_bytearray(table))
    except (TypeError, ValueError, struct.error, OverflowError, AttributeError):
        theirs = None
    if theirs is None:
        with pytest.raises(LocalProtocolError):
            fr.encode_table(table)
    else:
        assert fr.encode_table(table) == theirs


@pytest.mark.parametrize(
    "table",
    [{}, {"k": "v"}, {"b": b"\x00"}, {"n": {"deep": [1, {"x": None}]}}, {"k" * 200: 1}],
)
def test_encode_table_in_pamqps_deprecated_mode(table: dict[str, Any]) -> None:
    pencode.support_deprecated_rabbitmq(True)
    try:
        assert fr.encode_table(table) == pencode.field_table(fr._bytes_as_bytearray(table))
        assert fr.encode_table({"u": 40000}) == b"\x00\x00\x00\x07\x01uI\x00\x00\x9c\x40"
    finally:
        pencode.support_deprecated_rabbitmq(False)


@pytest.mark.parametrize("field", ["priority", "delivery_mode"])
@pytest.mark.parametrize("value", [256, -1, 1.0, "1", None.__class__])
def test_an_octet_property_out_of_range_or_not_an_integer_is_refused_clearly(
    field: str, value: Any
) -> None:
    with pytest.raises(LocalProtocolError, match=f"{field} must be an integer 0..255"):
        fr.encode_properties(BasicProperties(**{field: value}))


def test_encode_table_refuses_what_pamqp_cannot_encode() -> None:
    for bad in ({"x": object()}, {"n": 2**64}, {"f": 1e300}, {1: "int key"}, {"s": "\ud800"}):
        with pytest.raises(LocalProtocolError):
            fr.encode_table(bad)  # type: ignore[arg-type]
