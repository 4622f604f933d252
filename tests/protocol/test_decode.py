"""The hand-written decoders of the receive path are equal to pamqp's.

Frames are generated with pamqp's marshal (or, for values pamqp cannot
encode, by hand) and decoded both by trio_msg and by pamqp; the results are
compared field by field.  Where they legitimately differ, the tests say so
and check trio_msg's own rule instead:

- a delivery tag at or above 2**63: pamqp reads the ``longlong`` domain as
  signed (and cannot encode such a tag); trio_msg reads it unsigned, as the
  spec says and as its own ack encoder writes it back;
- a decimal (``D``) whose mantissa has the top bit set: pamqp's encoder
  writes the mantissa signed, its decoder reads it unsigned (so pamqp cannot
  read back its own negative decimals); trio_msg reads it signed, like
  pamqp's encoder, the Java client and py-amqp;
- a timestamp above 2**32: pamqp reads it as milliseconds; trio_msg keeps
  seconds, and a value that is no datetime (beyond year 9999) stays the raw
  integer, as ``test_content`` documents;
- ``x`` byte arrays and non-UTF-8 long strings: pamqp gives ``bytearray``
  and ``bytes``, trio_msg ``bytes`` for both (equal values).

Besides the decoders themselves, the receive loop's fast path (deliver +
header + body cut from one buffer) is compared with the frame-by-frame path
(the same bytes fed one at a time) and with pamqp's decoding of every frame.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import itertools
import math
import pickle
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as pcommands
from pamqp import decode as pdecode
from pamqp import frame as pframe
from pamqp import header as pheader
from pamqp.commands import Basic

from trio_msg._protocol import BasicProperties, ChannelState, events
from trio_msg._protocol import frames as fr
from trio_msg._protocol._build import fast_constructor, field_names
from trio_msg._protocol.errors import FrameError, ProtocolError

from .peer import Peer, build, content_frames, normalize, raw_frame
from .test_codec import PROPERTY_NAMES, pamqp_properties, properties

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UTC = datetime.UTC

shortstr = st.one_of(
    st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255),
    st.sampled_from(["x" * 255, "\u00e9" * 127, "\U0001f600" * 63]),
)
tags = st.integers(0, 2**63 - 1)


def payload_of(frame: bytes) -> bytes:
    """The payload of one marshalled frame."""
    size = struct.unpack_from(">I", frame, 3)[0]
    assert len(frame) == size + 8 and frame[-1] == 0xCE
    return frame[7:-1]


def pamqp_decode(payload: bytes) -> Any:
    cls = pcommands.INDEX_MAPPING[struct.unpack_from(">I", payload)[0]]
    method = cls.__new__(cls)
    method.unmarshal(payload[4:])
    return method


def assert_same_method(ours: Any, theirs: Any) -> None:
    assert type(ours) is type(theirs)
    for name in type(theirs).__slots__:
        mine, other = getattr(ours, name), getattr(theirs, name)
        assert mine == other, name
        assert type(mine) is type(other), name


# --- method frames ----------------------------------------------------------------------

hot_methods = st.one_of(
    st.builds(
        lambda ct, t, r, e, rk: build(
            Basic.Deliver,
            consumer_tag=ct,
            delivery_tag=t,
            redelivered=r,
            exchange=e,
            routing_key=rk,
        ),
        shortstr,
        tags,
        st.booleans(),
        shortstr,
        shortstr,
    ),
    st.builds(lambda t, m: build(Basic.Ack, delivery_tag=t, multiple=m), tags, st.booleans()),
    st.builds(
        lambda t, m, r: build(Basic.Nack, delivery_tag=t, multiple=m, requeue=r),
        tags,
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        lambda c, t, e, rk: build(
            Basic.Return, reply_code=c, reply_text=t, exchange=e, routing_key=rk
        ),
        st.integers(0, 65535),
        shortstr,
        shortstr,
        shortstr,
    ),
    st.builds(
        lambda t, r, e, rk, n: build(
            Basic.GetOk,
            delivery_tag=t,
            redelivered=r,
            exchange=e,
            routing_key=rk,
            message_count=n,
        ),
        tags,
        st.booleans(),
        shortstr,
        shortstr,
        st.integers(0, 2**32 - 1),
    ),
)


def test_every_hot_method_is_hand_decoded() -> None:
    hot = {Basic.Deliver, Basic.Ack, Basic.Nack, Basic.Return, Basic.GetOk}
    assert {pcommands.INDEX_MAPPING[i] for i in fr._HOT_DECODERS} == hot


@SETTINGS
@given(method=hot_methods, channel=st.integers(0, 65535))
def test_hot_methods_decode_like_pamqp(method: Any, channel: int) -> None:
    payload = payload_of(pframe.marshal(method, channel))
    assert_same_method(fr.decode_method(payload), pamqp_decode(payload))


@SETTINGS
@given(method=hot_methods, data=st.data())
def test_truncated_or_padded_hot_methods_are_frame_errors(method: Any, data: st.DataObject) -> None:
    payload = payload_of(pframe.marshal(method, 1))
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(FrameError):
        fr.decode_method(payload[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=20))
    with pytest.raises(FrameError):
        fr.decode_method(payload + extra)


@SETTINGS
@given(
    ct=shortstr,
    tag=tags,
    redelivered=st.booleans(),
    exchange=shortstr,
    rk=shortstr,
    before=st.binary(max_size=20),
    after=st.binary(max_size=20),
)
def test_deliver_fields_inside_a_larger_buffer(
    ct: str, tag: int, redelivered: bool, exchange: str, rk: str, before: bytes, after: bytes
) -> None:
    method = build(
        Basic.Deliver,
        consumer_tag=ct,
        delivery_tag=tag,
        redelivered=redelivered,
        exchange=exchange,
        routing_key=rk,
    )
    args = payload_of(pframe.marshal(method, 1))[4:]
    data = before + args + after
    start, end = len(before), len(before) + len(args)
    assert fr.deliver_fields(data, start, end) == (ct, tag, redelivered, exchange, rk)
    # the frame must end where its arguments end, whatever follows in the buffer
    for wrong_end in (end - 1, end + 1):
        with pytest.raises((ValueError, IndexError, struct.error)):
            fr.deliver_fields(data, start, wrong_end)


def test_delivery_tags_are_unsigned() -> None:
    # pamqp cannot encode a tag >= 2**63 and would read it as negative.
    for tag in (2**63, 2**64 - 1):
        deliver = (
            struct.pack(">I", Basic.Deliver.index)
            + b"\x02ct"
            + struct.pack(">QB", tag, 1)
            + b"\x00\x00"
        )
        m = fr.decode_method(deliver)
        assert m.delivery_tag == tag and m.redelivered is True
        ack = struct.pack(">IQB", Basic.Ack.index, tag, 0)
        assert fr.decode_method(ack).delivery_tag == tag
        nack = struct.pack(">IQB", Basic.Nack.index, tag, 3)
        m = fr.decode_method(nack)
        assert (m.delivery_tag, m.multiple, m.requeue) == (tag, True, True)


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack(">I", Basic.Deliver.index) + b"\x02\xff\xfe" + bytes(9) + b"\x00\x00",
        struct.pack(">IH", Basic.Return.index, 312) + b"\x01\x80\x00\x00",
        struct.pack(">IQB", Basic.GetOk.index, 1, 0) + b"\x00\x01\xc3" + bytes(4),
    ],
)
def test_invalid_utf8_in_hot_methods_is_a_frame_error(payload: bytes) -> None:
    with pytest.raises(FrameError):
        fr.decode_method(payload)


# --- field values and tables -------------------------------------------------------------


def _raw(kind: bytes, body: bytes) -> bytes:
    return kind + body


def _long(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def fixed(kind: str, fmt: str) -> st.SearchStrategy[bytes]:
    size = struct.calcsize(fmt)
    return st.binary(min_size=size, max_size=size).map(lambda b: kind.encode() + b)


utf8_or_not = st.one_of(st.text(max_size=20).map(str.encode), st.binary(max_size=20))
field_leaves = st.one_of(
    st.binary(min_size=1, max_size=1).map(lambda b: b"t" + b),
    fixed("b", ">b"),
    fixed("B", ">B"),
    fixed("s", ">h"),
    fixed("u", ">H"),
    fixed("I", ">i"),
    fixed("i", ">I"),
    fixed("l", ">q"),
    fixed("L", ">q"),
    fixed("f", ">f"),
    fixed("d", ">d"),
    # pamqp reads the mantissa unsigned: compared where both readings agree
    st.builds(
        lambda s, m: struct.pack(">cBI", b"D", s, m), st.integers(0, 255), st.integers(0, 2**31 - 1)
    ),
    utf8_or_not.map(lambda b: b"S" + _long(b)),
    st.binary(max_size=20).map(lambda b: b"x" + _long(b)),
    # pamqp reads a timestamp above 2**32 as milliseconds: compared below that
    st.integers(0, 2**32 - 1).map(lambda t: struct.pack(">cQ", b"T", t)),
    st.sampled_from([b"V", b"\x00"]),
)
table_key = st.text(max_size=12).map(str.encode).filter(lambda k: len(k) <= 128)


def raw_table(entries: list[tuple[bytes, bytes]]) -> bytes:
    return _long(b"".join(struct.pack(">B", len(k)) + k + v for k, v in entries))


field_values = st.recursive(
    field_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: b"A" + _long(b"".join(items))),
        st.lists(st.tuples(table_key, children), max_size=4).map(lambda e: b"F" + raw_table(e)),
    ),
    max_leaves=25,
)
raw_tables = st.lists(st.tuples(table_key, field_values), max_size=6).map(raw_table)


def same_value(ours: Any, theirs: Any) -> bool:
    """Equal, NaN equal to NaN, bytearray as bytes."""
    if isinstance(theirs, float):
        return isinstance(ours, float) and (
            ours == theirs or (math.isnan(ours) and math.isnan(theirs))
        )
    if isinstance(theirs, bytearray):
        return type(ours) is bytes and ours == theirs
    if isinstance(theirs, dict):
        return (
            type(ours) is dict
            and list(ours) == list(theirs)
            and all(same_value(ours[k], theirs[k]) for k in theirs)
        )
    if isinstance(theirs, list):
        return (
            type(ours) is list and len(ours) == len(theirs) and all(map(same_value, ours, theirs))
        )
    return type(ours) is type(theirs) and ours == theirs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=raw_tables)
def test_every_field_type_decodes_like_pamqp(table: bytes) -> None:
    ours, offset = fr._decode_table(table, 0)
    consumed, theirs = pdecode.field_table(table)
    assert offset == consumed == len(table)
    assert same_value(ours, theirs)


@SETTINGS
@given(table=st.dictionaries(table_key.map(bytes.decode), st.integers(-(2**63), 2**63 - 1)))
def test_tables_from_py_amqp_read_back(table: dict[str, int]) -> None:
    """kombu's py-amqp sends big integers as 'L', signed (as pamqp reads it)."""
    serialization = pytest.importorskip("amqp.serialization")
    raw = serialization.dumps("F", [table])
    assert fr._decode_table(raw, 0) == (table, len(raw))


@SETTINGS
@given(scale=st.integers(0, 255), mantissa=st.integers(-(2**31), 2**31 - 1))
def test_decimals_read_back_what_pamqp_writes(scale: int, mantissa: int) -> None:
    value = decimal.Decimal(mantissa).scaleb(-scale)
    from pamqp import encode as pencode

    raw = pencode.encode_table_value(value)
    ours, _ = fr._decode_value(raw, 0)
    assert ours == value
    if mantissa >= 0:
        assert pdecode.embedded_value(raw)[1] == ours


@pytest.mark.parametrize("raw", [2**32, 1_700_000_000_000, 253402300799, 253402300800, 2**64 - 1])
def test_big_timestamps_in_tables_follow_the_property_rule(raw: int) -> None:
    value, _ = fr._decode_value(struct.pack(">cQ", b"T", raw), 0)
    assert value == fr._timestamp(raw)
    if raw <= 253402300799:
        assert value == datetime.datetime.fromtimestamp(raw, UTC)
    else:
        assert value == raw


@SETTINGS
@given(table=raw_tables, data=st.data())
def test_truncated_tables_never_leak_other_errors(table: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(table) - 1))
    with pytest.raises((ValueError, IndexError, struct.error)):
        fr._decode_table(table[:cut], 0)


# --- content headers ----------------------------------------------------------------------


def pamqp_header(payload: bytes) -> pheader.ContentHeader:
    theirs = pheader.ContentHeader()
    theirs.unmarshal(payload)
    return theirs


def assert_props_like_pamqp(ours: BasicProperties, theirs: Any) -> None:
    for name in PROPERTY_NAMES:
        expected = getattr(theirs, "message_type" if name == "type" else name)
        mine = getattr(ours, name)
        if name == "cluster_id" and expected == "":
            # pamqp's default for absent, so absent and empty look alike there
            assert mine in (None, "")
            continue
        assert mine is expected is None or same_value(mine, expected), name


def decode_three_ways(payload: bytes) -> list[tuple[int, int, BasicProperties]]:
    """Uncached, cached (a miss), cached again (a hit)."""
    cache: dict[bytes, Any] = {}
    return [
        fr.decode_content_header(payload),
        fr.decode_content_header(payload, cache),
        fr.decode_content_header(payload, cache),
    ]


@SETTINGS
@given(props=properties(), body_size=st.integers(0, 2**63 - 1))
def test_content_headers_decode_like_pamqp(props: BasicProperties, body_size: int) -> None:
    payload = pheader.ContentHeader(0, body_size, pamqp_properties(props)).marshal()
    theirs = pamqp_header(payload)
    for class_id, size, ours in decode_three_ways(payload):
        assert (class_id, size) == (theirs.class_id, theirs.body_size) == (60, body_size)
        assert_props_like_pamqp(ours, theirs.properties)


raw_shortstr = st.text(max_size=30).map(str.encode).map(lambda b: struct.pack(">B", len(b)) + b)
RAW_PROPERTY = {
    "s": raw_shortstr,
    "F": raw_tables,
    "o": st.integers(0, 255).map(lambda n: struct.pack(">B", n)),
    "T": st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">Q", n)),
}


@st.composite
def raw_property_lists(draw: st.DrawFn) -> tuple[int, bytes]:
    """Flags and a property list built by hand, with every field type in
    the headers (including those pamqp cannot encode)."""
    flags = 0
    parts = []
    for _name, bit, kind in fr._PROPERTY_FIELDS:
        if draw(st.booleans()):
            flags |= bit
            parts.append(draw(RAW_PROPERTY[kind]))
    return flags, b"".join(parts)


@SETTINGS
@given(props=raw_property_lists(), continuation=st.lists(st.integers(0, 0x7FFF), max_size=3))
def test_hand_built_content_headers_decode_like_pamqp(
    props: tuple[int, bytes], continuation: list[int]
) -> None:
    flags, raw = props
    words = [flags | bool(continuation)]
    for i, word in enumerate(continuation):  # continuation words (basic uses none)
        words.append((word << 1) | (i < len(continuation) - 1))
    payload = struct.pack(">HHQ", 60, 0, 7) + b"".join(struct.pack(">H", w) for w in words) + raw
    theirs = pamqp_header(payload)
    for _class_id, size, ours in decode_three_ways(payload):
        assert size == 7
        assert_props_like_pamqp(ours, theirs.properties)


@SETTINGS
@given(props=raw_property_lists(), data=st.data())
def test_truncated_content_headers_are_frame_errors(
    props: tuple[int, bytes], data: st.DataObject
) -> None:
    flags, raw = props
    payload = struct.pack(">HHQH", 60, 0, 7, flags) + raw
    cut = data.draw(st.integers(0, len(payload) - 1))
    if cut >= 14 and not flags & 0xFFFC:
        return  # nothing announced, nothing to truncate
    with pytest.raises(FrameError):
        fr.decode_content_header(payload[:cut])
    with pytest.raises(FrameError):
        fr.decode_content_header(payload[:cut], {})


# --- the properties cache ------------------------------------------------------------------


def _header_payload(props: BasicProperties) -> bytes:
    flags, encoded = fr.encode_properties(props)
    return struct.pack(">HHQH", 60, 0, 0, flags) + encoded


def test_cached_headers_are_never_shared() -> None:
    cache: dict[bytes, Any] = {}
    payload = _header_payload(BasicProperties(content_type="a", headers={"k": "v", "n": 1}))
    first = fr.decode_content_header(payload, cache)[2]
    second = fr.decode_content_header(payload, cache)[2]
    third = fr.decode_content_header(payload, cache)[2]
    assert first == second == third
    assert first.headers is not second.headers and second.headers is not third.headers
    assert second.headers is not None
    second.headers["k"] = "changed"
    assert fr.decode_content_header(payload, cache)[2].headers == {"k": "v", "n": 1}


def test_nested_headers_are_not_cached() -> None:
    cache: dict[bytes, Any] = {}
    payload = _header_payload(BasicProperties(headers={"t": {"x": 1}, "a": [1]}))
    one = fr.decode_content_header(payload, cache)[2]
    two = fr.decode_content_header(payload, cache)[2]
    assert one == two and not cache
    assert one.headers is not None and two.headers is not None
    assert one.headers["t"] is not two.headers["t"] and one.headers["a"] is not two.headers["a"]


def test_properties_without_headers_are_shared_frozen() -> None:
    cache: dict[bytes, Any] = {}
    payload = _header_payload(BasicProperties(content_type="a", delivery_mode=2))
    one = fr.decode_content_header(payload, cache)[2]
    assert fr.decode_content_header(payload, cache)[2] is one
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.content_type = "b"  # type: ignore[misc]


def test_the_cache_is_bounded() -> None:
    cache: dict[bytes, Any] = {}
    for i in range(3 * fr._CACHE_ENTRIES):
        fr.decode_content_header(_header_payload(BasicProperties(content_type=str(i))), cache)
        assert 0 < len(cache) <= fr._CACHE_ENTRIES
    long_one = _header_payload(BasicProperties(headers={"k": "x" * fr._CACHE_KEY_MAX}))
    cache.clear()
    fr.decode_content_header(long_one, cache)
    assert not cache


@pytest.mark.parametrize(
    "unique",
    [
        {"message_id": "m-1"},
        {"correlation_id": "c-1"},
        {"timestamp": datetime.datetime(2025, 1, 1, tzinfo=UTC)},
    ],
)
def test_properties_unique_by_design_are_not_cached(unique: dict[str, Any]) -> None:
    cache: dict[bytes, Any] = {}
    props = BasicProperties(content_type="a", headers={"k": "v"}, **unique)
    payload = _header_payload(props)
    assert fr.decode_content_header(payload, cache)[2] == props
    assert fr.decode_content_header(payload, cache)[2] == props
    assert not cache


# --- fast constructors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [events.Delivery, events.Returned, events.Confirmation, BasicProperties]
)
def test_fast_constructors_build_the_real_thing(cls: type[Any]) -> None:
    make = fast_constructor(cls)
    assert make is not cls  # the fast way works on this interpreter
    names = field_names(cls)
    values = [f"v{i}" for i in range(len(names))]
    fast, slow = make(*values), cls(*values)
    assert type(fast) is cls
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert tuple(getattr(fast, name) for name in names) == tuple(values)
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert cls("x", *values[1:]) != slow and cls(*values[:-1], "x") != slow
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(fast, names[0], "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(fast, names[-1])
    assert not hasattr(fast, "__dict__")


def test_fast_constructor_falls_back_when_layouts_differ() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    assert fast_constructor(NoSlots) is NoSlots


# --- the receive loop: fast path against frame by frame and against pamqp ----------------

FRAME_MAX = 4096


@st.composite
def delivery_streams(draw: st.DrawFn) -> list[tuple[Any, BasicProperties, bytes]]:
    out = []
    for _ in range(draw(st.integers(1, 6))):
        method = build(
            Basic.Deliver,
            consumer_tag=draw(st.sampled_from(["ack", "noack", "other"])),
            delivery_tag=draw(tags),
            redelivered=draw(st.booleans()),
            exchange=draw(shortstr),
            routing_key=draw(shortstr),
        )
        props = draw(st.one_of(st.just(BasicProperties()), properties()))
        body = draw(st.one_of(st.binary(max_size=300), st.binary(min_size=4000, max_size=6000)))
        out.append((method, props, body))
    return out


def consuming_peer() -> tuple[Peer, int]:
    peer = Peer(heartbeat=0)
    peer.handshake(frame_max=FRAME_MAX)
    ch = peer.open_channel(3)
    peer.consume(ch, "ack")
    peer.consume(ch, "noack", no_ack=True)
    peer.consume(ch, "other")
    peer.received()
    return peer, ch.id


def pamqp_reference(data: bytes, channel: int) -> list[events.Delivery]:
    """Deliveries as pamqp decodes the same frames."""
    out = []
    method: Any = None
    header: Any = None
    chunks: list[bytes] = []
    while data:
        consumed, _ch, frame = pframe.unmarshal(data)
        data = data[consumed:]
        if isinstance(frame, Basic.Deliver):
            method, header, chunks = frame, None, []
        elif isinstance(frame, pheader.ContentHeader):
            header = frame
        else:
            chunks.append(frame.value)
        if header is not None and sum(map(len, chunks)) == header.body_size:
            p = header.properties
            fields = {
                name: getattr(p, "message_type" if name == "type" else name)
                for name in PROPERTY_NAMES
            }
            fields["cluster_id"] = fields["cluster_id"] or None  # pamqp: "" for absent
            props = BasicProperties(**fields)
            out.append(
                events.Delivery(
                    channel,
                    method.consumer_tag,
                    method.delivery_tag,
                    method.redelivered,
                    method.exchange,
                    method.routing_key,
                    props,
                    b"".join(chunks),
                )
            )
            header = None
    return out


def feed(peer: Peer, pieces: list[bytes]) -> list[Any]:
    evs: list[Any] = []
    for piece in pieces:
        peer.conn.receive_data(piece)
        evs += peer.conn.next_events()
    return evs


def count_fast(peer: Peer) -> list[int]:
    """Wrap the connection's fast path to count the messages it took."""
    taken = [0]
    real = peer.conn._fast_deliver

    def spy(*args: Any) -> int:
        after = real(*args)
        taken[0] += after > 0
        return after

    peer.conn._fast_deliver = spy  # type: ignore[method-assign,assignment]
    return taken


@FEW
@given(stream=delivery_streams(), data=st.data())
def test_fast_path_equals_frame_by_frame_and_pamqp(
    stream: list[tuple[Any, BasicProperties, bytes]], data: st.DataObject
) -> None:
    results = []
    for how in ("whole", "bytewise", "random"):
        peer, channel = consuming_peer()
        frames = b"".join(
            b"".join(content_frames(channel, method, body, pamqp_properties(props), FRAME_MAX - 8))
            for method, props, body in stream
        )
        if how == "whole":
            pieces = [frames]
        elif how == "bytewise":
            pieces = [frames[i : i + 1] for i in range(len(frames))]
        else:
            cuts = sorted(data.draw(st.sets(st.integers(1, len(frames) - 1), max_size=10)))
            pieces = [frames[a:b] for a, b in itertools.pairwise([0, *cuts, len(frames)])]
        taken = count_fast(peer)
        evs = feed(peer, pieces)
        ch = peer.conn.channels[channel]
        results.append((evs, list(ch._unsettled), peer.received()))
        if how == "whole":
            small = sum(1 for _m, _p, body in stream if len(body) <= FRAME_MAX - 8)
            assert taken[0] == small  # every single-frame message went the fast way
            assert evs == pamqp_reference(frames, channel)
            for e, (method, props, body) in zip(evs, stream, strict=True):
                assert (e.consumer_tag, e.delivery_tag, e.body) == (
                    method.consumer_tag,
                    method.delivery_tag,
                    body,
                )
                assert e.properties == props
        elif how == "bytewise":
            assert taken[0] == 0
    assert results[0] == results[1] == results[2]
    evs, unsettled, _sent = results[0]
    assert set(unsettled) == {e.delivery_tag for e in evs if e.consumer_tag == "ack"} | {
        e.delivery_tag for e in evs if e.consumer_tag == "other"
    }


def _deliver_frame(channel: int, tag: int = 1, consumer_tag: str = "ack") -> bytes:
    return bytes(
        pframe.marshal(
            build(
                Basic.Deliver,
                consumer_tag=consumer_tag,
                delivery_tag=tag,
                redelivered=False,
                exchange="e",
                routing_key="r",
            ),
            channel,
        )
    )


def _header(
    channel: int, size: int, class_id: int = 60, flags: int = 0, props: bytes = b""
) -> bytes:
    return raw_frame(2, channel, struct.pack(">HHQH", class_id, 0, size, flags) + props)


UNUSUAL: list[Callable[[int], bytes]] = [
    lambda c: _deliver_frame(c) + _header(c, 3) + raw_frame(3, c, b"abc"),  # the usual
    lambda c: _deliver_frame(c) + _header(c, 0),  # empty body
    lambda c: _deliver_frame(c) + _header(c, 3) + raw_frame(3, c, b"abcd"),  # body too long
    lambda c: _deliver_frame(c) + _header(c, 4) + raw_frame(3, c, b"ab") + raw_frame(3, c, b"cd"),
    lambda c: _deliver_frame(c) + _header(c, 3) + raw_frame(3, 1, b"abc"),  # body elsewhere
    lambda c: _deliver_frame(c) + _header(1, 3) + raw_frame(3, c, b"abc"),  # header elsewhere
    lambda c: _deliver_frame(c) + _header(c, 3, class_id=61) + raw_frame(3, c, b"abc"),
    lambda c: _deliver_frame(c) + _header(c, 2**40) + raw_frame(3, c, b"abc"),  # > max body
    lambda c: (
        _deliver_frame(c) + _header(c, 3, flags=0x8000, props=b"\x09ab") + raw_frame(3, c, b"abc")
    ),
    lambda c: (
        _deliver_frame(c)
        + _header(c, 3, flags=0x8001, props=b"\x00\x00\x02ab")
        + raw_frame(3, c, b"abc")
    ),  # a continuation flag word
    lambda c: _deliver_frame(c) + _header(c, 3)[:-1] + b"\x00" + raw_frame(3, c, b"abc"),
    lambda c: _deliver_frame(c) + _header(c, 3) + raw_frame(3, c, b"abc")[:-1] + b"\x01",
    lambda c: _deliver_frame(c) + raw_frame(1, c, b"\x00\x3c\x00\x50" + bytes(9)),  # a method
    lambda c: _deliver_frame(c) + _header(c, 3) + raw_frame(8, 0, b"") + raw_frame(3, c, b"abc"),
    lambda c: _deliver_frame(c)[:-2] + b"\x00\xce" + _header(c, 1) + raw_frame(3, c, b"a"),
    lambda c: _deliver_frame(c) + _header(c, 5000) + raw_frame(3, c, b"x" * 5000),  # > frame_max
    lambda c: _deliver_frame(c, consumer_tag="unknown") + _header(c, 1) + raw_frame(3, c, b"a"),
    lambda c: _deliver_frame(c, consumer_tag="noack") + _header(c, 1) + raw_frame(3, c, b"a"),
    lambda c: _deliver_frame(7) + _header(7, 1) + raw_frame(3, 7, b"a"),  # a closed channel
]


def outcome(peer: Peer, pieces: list[bytes]) -> tuple[Any, ...]:
    error = None
    evs: list[Any] = []
    for piece in pieces:
        try:
            peer.conn.receive_data(piece)
        except ProtocolError as exc:
            error = (type(exc), exc.reply_code, str(exc))
            break
        finally:
            evs += peer.conn.next_events()
    ch = peer.conn.channels.get(3)
    state = None if ch is None else (ch.state, list(ch._unsettled), ch._content_method is None)
    return normalize(evs), error, state, peer.conn.state, peer.conn.data_to_send()


@pytest.mark.parametrize("make", UNUSUAL)
def test_unusual_sequences_give_the_same_outcome_whole_or_bytewise(
    make: Callable[[int], bytes],
) -> None:
    data = make(3) + _deliver_frame(3, 99) + _header(3, 1) + raw_frame(3, 3, b"z")
    whole_peer, _ = consuming_peer()
    byte_peer, _ = consuming_peer()
    whole = outcome(whole_peer, [data])
    bytewise = outcome(byte_peer, [data[i : i + 1] for i in range(len(data))])
    assert whole == bytewise


@st.composite
def corrupted_streams(draw: st.DrawFn) -> bytes:
    """One to three deliveries on channel 3, then one corruption: a byte
    changed, bytes removed, or bytes inserted."""
    parts = []
    for tag in range(1, draw(st.integers(1, 3)) + 1):
        props = draw(st.one_of(st.just(BasicProperties()), properties()))
        body = draw(st.binary(max_size=40))
        method = build(
            Basic.Deliver,
            consumer_tag=draw(st.sampled_from(["ack", "noack"])),
            delivery_tag=tag,
            redelivered=False,
            exchange="e",
            routing_key="r",
        )
        parts += content_frames(3, method, body, pamqp_properties(props), FRAME_MAX - 8)
    data = bytearray(b"".join(parts))
    at = draw(st.integers(0, len(data) - 1))
    how = draw(st.sampled_from(["change", "remove", "insert"]))
    if how == "change":
        data[at] = draw(st.integers(0, 255))
    elif how == "remove":
        del data[at : at + draw(st.integers(1, 8))]
    else:
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=corrupted_streams())
def test_corrupted_streams_give_the_same_outcome_whole_or_bytewise(data: bytes) -> None:
    whole_peer, _ = consuming_peer()
    byte_peer, _ = consuming_peer()
    whole = outcome(whole_peer, [data])
    assert whole == outcome(byte_peer, [data[i : i + 1] for i in range(len(data))])


def test_the_usual_sequence_is_a_delivery() -> None:
    peer, channel = consuming_peer()
    (delivery,) = feed(peer, [UNUSUAL[0](channel)])
    assert delivery == events.Delivery(
        channel, "ack", 1, False, "e", "r", BasicProperties(), b"abc"
    )
    assert peer.conn.channels[channel].state is ChannelState.OPEN


def test_confirms_fast_and_slow_agree() -> None:
    def run(bytewise: bool) -> tuple[Any, ...]:
        peer = Peer(heartbeat=0)
        peer.handshake()
        ch = peer.confirm_channel(1)
        for _ in range(10):
            ch.publish("ex", "rk", b"x")
        peer.received()
        data = b"".join(
            [
                pframe.marshal(Basic.Ack(delivery_tag=2, multiple=True), 1),
                pframe.marshal(Basic.Nack(delivery_tag=3, multiple=False, requeue=True), 1),
                pframe.marshal(Basic.Ack(delivery_tag=3, multiple=False), 1),  # resolved already
                pframe.marshal(Basic.Ack(delivery_tag=5, multiple=False), 1),
                pframe.marshal(Basic.Nack(delivery_tag=0, multiple=True, requeue=False), 1),
            ]
        )
        pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
        return tuple(feed(peer, pieces)), ch.unconfirmed

    evs, left = run(False)
    assert (evs, left) == run(True)
    assert evs == (
        events.Confirmation(1, (1, 2), events.Outcome.ACK),
        events.Confirmation(1, (3,), events.Outcome.NACK),
        events.Confirmation(1, (5,), events.Outcome.ACK),
        events.Confirmation(1, (4, 6, 7, 8, 9, 10), events.Outcome.NACK),
    )
    assert left == 0


def test_reader_looks_at_a_big_frame_fed_in_pieces_only_when_it_can_be_whole() -> None:
    reader = fr.FrameReader(1 << 20, 10)
    frame = raw_frame(3, 1, b"y" * 100_000)
    looks = 0
    got = None
    for i in range(0, len(frame), 1000):
        data = reader.take(frame[i : i + 1000])
        assert reader.buffered < len(frame)
        if data is None:
            continue
        looks += 1
        if len(data) == len(frame):
            got = data
            break
        reader.keep(data, 0)  # what the receive loop does with an incomplete frame
    assert got == frame
    assert looks == 2  # the first piece (its header), then only once it is whole
    assert reader.buffered == 0


def test_frame_in_progress_is_the_size_of_the_frame_held_once_its_header_is_in() -> None:
    """What the driver sizes its reads by: the size of a frame half in."""
    frame_max = 1 << 17
    peer = Peer(heartbeat=0)
    peer.handshake(frame_max=frame_max)
    ch = peer.open_channel(3)
    peer.consume(ch, "ack")
    body = b"y" * 100_000
    deliver = build(
        Basic.Deliver,
        consumer_tag="ack",
        delivery_tag=1,
        redelivered=False,
        exchange="",
        routing_key="q",
    )
    data = peer.content(3, deliver, body)
    body_frame = len(body) + 8
    for piece, held in (
        (data[:5], 0),  # not even a header
        (data[5:-900], body_frame),  # the deliver and header done, the body half in
        (data[-900:-1], body_frame),
        (data[-1:], 0),  # all in: nothing held
    ):
        peer.conn.receive_data(piece)
        assert peer.conn.frame_in_progress == held
    assert [type(e).__name__ for e in peer.conn.next_events()][-1] == "Delivery"
