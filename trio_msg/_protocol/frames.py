"""Framing: cutting the inbound byte stream into frames, and building frames.

Every limit (frame size, frame type, channel number) is checked on the 7-byte
frame header *before* the payload is buffered (:func:`check_frame_header`),
and a payload is only decoded once it is known to be complete.
:class:`FrameReader` holds the bytes of a frame not yet complete.

The hot frames are encoded and decoded here directly with :mod:`struct`:
``basic.publish``, content headers and bodies and acks on the way out;
``basic.deliver``, ``basic.ack`` / ``nack``, ``basic.return``,
``basic.get-ok`` and content headers on the way in.  Every other method goes
through pamqp.  ``tests/protocol/test_codec.py`` proves the encoders
byte-identical to pamqp, and ``tests/protocol/test_decode.py`` proves the
decoders equal to pamqp's on everything pamqp can marshal.  Where the two
legitimately differ (a 64-bit delivery tag beyond ``2**63``, which pamqp
reads as negative, a negative decimal, which pamqp reads as unsigned, odd
timestamps) the tests say why.  The hand-written method decoders are also
stricter than pamqp: a truncated field or a frame longer than its arguments
is a :class:`~.errors.FrameError`, not a silently shortened string.

Properties have their own codec (:func:`encode_properties`,
:func:`decode_properties`): it is faster than pamqp's generic one and it does
not fail on timestamps that :class:`datetime.datetime` cannot hold (other
clients send milliseconds, or garbage): those are delivered as the raw
integer instead of poisoning the connection.  Decoded property lists are
remembered per connection (:func:`cached_properties`), since a stream of
messages usually repeats the same few.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from pamqp import base as _pbase
from pamqp import commands as _pcommands
from pamqp import encode as _pencode

from ._build import fast_constructor
from .errors import CHANNEL_ERROR, FRAME_ERROR, FrameError, LocalProtocolError, WrongProtocol

__all__ = [
    "FRAME_BODY",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "FRAME_MIN_SIZE",
    "PROTOCOL_HEADER",
    "BasicProperties",
    "FrameReader",
    "cached_properties",
    "check_frame_header",
    "check_shortstr",
    "decode_method",
    "decode_properties",
    "deliver_fields",
    "encode_content",
    "encode_method",
    "encode_properties",
    "make_method",
]

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_MIN_SIZE = 4096
FRAME_OVERHEAD = 8  # 7-byte header + frame-end octet
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

_FRAME_HEADER = struct.Struct(">BHI")
_METHOD_ID = struct.Struct(">I")
_CONTENT_HEADER = struct.Struct(">HHQH")  # class, weight, body size, flags
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_QB = struct.Struct(">QB")  # a delivery tag and its bits
_QBB = struct.Struct(">QBB")  # ... and the length of the short string after them

_KNOWN_FRAME_TYPES = frozenset((FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT))

Frame: TypeAlias = tuple[int, int, bytes]
"""(frame type, channel number, payload)"""
#: A piece of outbound bytes: a view is a slice of a large body, not a copy.
Buffer: TypeAlias = bytes | memoryview


def check_frame_header(
    data: bytes | bytearray,
    pos: int,
    frame_type: int,
    channel: int,
    size: int,
    frame_max: int,
    channel_max: int,
) -> None:
    """Raise the :class:`~.errors.FrameError` that the frame header at
    ``data[pos:]`` deserves, or return if it is acceptable:

    - an unknown frame type: 501 (naming the protocol the server offered if
      it answered with a protocol header);
    - a frame larger than ``frame_max``: 501;
    - a heartbeat on a non-zero channel: 501;
    - a channel number above ``channel_max``: 504.
    """
    if frame_type not in _KNOWN_FRAME_TYPES:
        if data[pos : pos + 4] == b"AMQP":
            raise WrongProtocol(
                "the server does not speak AMQP 0-9-1: it answered with "
                f"protocol header {bytes(data[pos : pos + 8])!r}"
            )
        raise FrameError(f"unknown frame type {frame_type}")
    if size + FRAME_OVERHEAD > frame_max:
        raise FrameError(f"frame of {size + FRAME_OVERHEAD} bytes exceeds frame_max {frame_max}")
    if frame_type == FRAME_HEARTBEAT and channel != 0:
        raise FrameError(f"heartbeat frame on channel {channel}")
    if channel > channel_max:
        raise FrameError(
            f"frame on channel {channel} exceeds channel_max {channel_max}", CHANNEL_ERROR
        )


def bad_frame_end(octet: int) -> FrameError:
    return FrameError(f"bad frame-end octet {octet:#04x}")


class FrameReader:
    """An incremental buffer that yields complete, checked frames.

    Limits are checked on the 7-byte header, before the payload is buffered
    (see :func:`check_frame_header`); a frame whose last octet is not 0xCE is
    a 501 as well.  ``frame_max`` (4096 until tuning is done) and
    ``channel_max`` may be changed between calls (after ``connection.tune``).

    Two ways to use it: :meth:`feed` and :meth:`frames`, or, for a receive
    loop that cuts frames itself, :meth:`take` and :meth:`keep`, which hand
    over whole byte strings (payloads are then slices of them, copied once)
    and do not touch the bytes again until a held frame can be complete.
    """

    __slots__ = ("_buf", "_need", "channel_max", "frame_max")

    def __init__(self, frame_max: int = FRAME_MIN_SIZE, channel_max: int = 65535) -> None:
        self._buf = bytearray()
        self._need = 0  # how many bytes must be held before looking again
        self.frame_max = frame_max
        self.channel_max = channel_max

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def frame_in_progress(self) -> int:
        """The size of the incomplete frame held, once its header is in
        (0 when nothing or less than a header is held).  Kept by
        :meth:`take` and :meth:`keep`, the receive loop's way in."""
        return self._need if len(self._buf) >= 7 else 0

    @property
    def buffered(self) -> int:
        """How many bytes are held that do not yet form a whole frame."""
        return len(self._buf)

    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame in the buffer.

        :raises FrameError: on any malformed frame (the reader is then useless).
        """
        data = bytes(self._buf)
        self._buf.clear()
        pos = 0
        end = len(data)
        frame_max = self.frame_max
        channel_max = self.channel_max
        try:
            while end - pos >= 7:
                frame_type, channel, size = _FRAME_HEADER.unpack_from(data, pos)
                check_frame_header(data, pos, frame_type, channel, size, frame_max, channel_max)
                stop = pos + 7 + size
                if stop >= end:  # payload or frame-end octet not here yet
                    break
                if data[stop] != FRAME_END:
                    raise bad_frame_end(data[stop])
                payload = data[pos + 7 : stop]
                pos = stop + 1
                yield frame_type, channel, payload
        finally:
            self._buf[:0] = data[pos:]

    def take(self, data: bytes) -> bytes | None:
        """Append ``data`` to what is held and return it all as one byte
        string to cut frames from, or ``None`` (keeping ``data``) while the
        frame held cannot be complete yet.  Whatever the caller does not
        consume it must hand back with :meth:`keep`."""
        buf = self._buf
        if not buf:
            return data
        if len(buf) + len(data) < self._need:
            buf += data
            return None
        whole = b"".join((buf, data))  # one copy of each
        buf.clear()
        return whole

    def keep(self, data: bytes, pos: int) -> None:
        """Hold ``data[pos:]``, the beginning of a frame not yet complete
        (its header, if all there, already checked)."""
        rest = len(data) - pos
        if rest <= 0:
            return
        self._buf += data[pos:]
        self._need = 7 if rest < 7 else _U32.unpack_from(data, pos + 3)[0] + FRAME_OVERHEAD


# --- methods --------------------------------------------------------------


def _no_validate(self: object) -> None:
    """pamqp validates names against a stricter pattern than RabbitMQ."""


_UNCHECKED: dict[type[_pbase.Frame], type[_pbase.Frame]] = {}


def _unchecked(cls: type[_pbase.Frame]) -> type[_pbase.Frame]:
    # A subclass without __slots__ keeps the parent's __slots__ visible to
    # pamqp's marshal loop; only validation is switched off.
    sub = _UNCHECKED.get(cls)
    if sub is None:
        sub = _UNCHECKED[cls] = type(cls.__name__, (cls,), {"validate": _no_validate})
    return sub


def check_shortstr(value: str, what: str) -> str:
    """RabbitMQ accepts any UTF-8 short string (at most 255 bytes) as a name."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if len(value.encode("utf-8")) > 255:
        raise LocalProtocolError(f"{what} is longer than 255 bytes of UTF-8: {value[:40]!r}...")
    return value


def make_method(cls: type[_pbase.Frame], **fields: Any) -> _pbase.Frame:
    """Build a pamqp method without pamqp's name validation (RabbitMQ is more
    permissive than pamqp: any UTF-8 short string is a valid name)."""
    return _unchecked(cls)(**fields)


def encode_method(channel: int, method: _pbase.Frame) -> bytes:
    """A whole method frame."""
    try:
        payload = _METHOD_ID.pack(method.index) + bytes(method.marshal())
    except (TypeError, ValueError, struct.error) as exc:
        raise LocalProtocolError(f"cannot encode {method.name}: {exc}") from None
    return _FRAME_HEADER.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE


# --- decoding the hot methods ---------------------------------------------------
#
# Each takes the whole payload of a method frame (method id included) and
# raises ValueError, IndexError or struct.error when it is malformed;
# decode_method turns those into a FrameError.  Strings are read at the
# offsets the length octets give and the final offset must land exactly on
# the end of the frame: a string running past its frame cannot go unnoticed.

_new = object.__new__
_Basic = _pcommands.Basic


def deliver_fields(data: bytes, pos: int, end: int) -> tuple[str, int, bool, str, str]:
    """The arguments of a ``basic.deliver`` at ``data[pos:end]`` (after the
    method id): consumer tag, delivery tag, redelivered, exchange, routing key."""
    n = data[pos]
    p = pos + 1 + n
    consumer_tag = data[pos + 1 : p].decode()
    delivery_tag, bits, n = _QBB.unpack_from(data, p)
    p += 10
    q = p + n
    exchange = data[p:q].decode()
    n = data[q]
    p = q + 1 + n
    routing_key = data[q + 1 : p].decode()
    if p != end:
        raise ValueError("arguments do not fill the frame")
    return consumer_tag, delivery_tag, (bits & 1) == 1, exchange, routing_key


def _decode_deliver(data: bytes) -> _pbase.Frame:
    m = _new(_Basic.Deliver)
    (m.consumer_tag, m.delivery_tag, m.redelivered, m.exchange, m.routing_key) = deliver_fields(
        data, 4, len(data)
    )
    return m


def _decode_ack(data: bytes) -> _pbase.Frame:
    if len(data) != 13:
        raise ValueError("basic.ack is 13 bytes")
    m = _new(_Basic.Ack)
    m.delivery_tag, bits = _QB.unpack_from(data, 4)
    m.multiple = (bits & 1) == 1
    return m


def _decode_nack(data: bytes) -> _pbase.Frame:
    if len(data) != 13:
        raise ValueError("basic.nack is 13 bytes")
    m = _new(_Basic.Nack)
    m.delivery_tag, bits = _QB.unpack_from(data, 4)
    m.multiple = (bits & 1) == 1
    m.requeue = (bits & 2) == 2
    return m


def _decode_return(data: bytes) -> _pbase.Frame:
    reply_code = _U16.unpack_from(data, 4)[0]
    n = data[6]
    p = 7 + n
    reply_text = data[7:p].decode()
    n = data[p]
    q = p + 1 + n
    exchange = data[p + 1 : q].decode()
    n = data[q]
    p = q + 1 + n
    routing_key = data[q + 1 : p].decode()
    if p != len(data):
        raise ValueError("arguments do not fill the frame")
    m = _new(_Basic.Return)
    m.reply_code = reply_code
    m.reply_text = reply_text
    m.exchange = exchange
    m.routing_key = routing_key
    return m


def _decode_get_ok(data: bytes) -> _pbase.Frame:
    delivery_tag, bits, n = _QBB.unpack_from(data, 4)
    p = 14
    q = p + n
    exchange = data[p:q].decode()
    n = data[q]
    p = q + 1 + n
    routing_key = data[q + 1 : p].decode()
    message_count = _U32.unpack_from(data, p)[0]
    if p + 4 != len(data):
        raise ValueError("arguments do not fill the frame")
    m = _new(_Basic.GetOk)
    m.delivery_tag = delivery_tag
    m.redelivered = (bits & 1) == 1
    m.exchange = exchange
    m.routing_key = routing_key
    m.message_count = message_count
    return m


_HOT_DECODERS = {
    _Basic.Deliver.index: _decode_deliver,
    _Basic.Ack.index: _decode_ack,
    _Basic.Nack.index: _decode_nack,
    _Basic.Return.index: _decode_return,
    _Basic.GetOk.index: _decode_get_ok,
}


def decode_method(payload: bytes) -> _pbase.Frame:
    """Decode a method frame's payload into pamqp's method object: by hand
    for the hot methods, by pamqp for the others.

    :raises FrameError: unknown method or undecodable arguments.
    """
    if len(payload) < 4:
        raise FrameError("method frame shorter than its method id")
    index = _METHOD_ID.unpack_from(payload)[0]
    hot = _HOT_DECODERS.get(index)
    if hot is not None:
        try:
            return hot(payload)
        except (ValueError, IndexError, struct.error) as exc:
            name = _pcommands.INDEX_MAPPING[index].name
            raise FrameError(f"cannot decode {name}: {exc!r}") from None
    cls = _pcommands.INDEX_MAPPING.get(index)
    if cls is None:
        raise FrameError(f"unknown method id {index >> 16}.{index & 0xFFFF}")
    method = cls.__new__(cls)  # unmarshal sets every field; no validation
    try:
        method.unmarshal(payload[4:])
    except Exception as exc:  # pamqp raises struct.error, ValueError, KeyError, ...
        raise FrameError(f"cannot decode {cls.name}: {exc!r}") from None
    return method


# --- properties --------------------------------------------------------------

Table: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class BasicProperties:
    """AMQP ``basic`` content properties.  ``None`` means absent.

    ``timestamp`` is a timezone-aware :class:`datetime.datetime`, or the raw
    integer when the value sent cannot be a datetime (e.g. beyond year 9999).
    """

    content_type: str | None = None
    content_encoding: str | None = None
    headers: Table | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime.datetime | int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


_PROPERTY_FIELDS = (
    ("content_type", 0x8000, "s"),
    ("content_encoding", 0x4000, "s"),
    ("headers", 0x2000, "F"),
    ("delivery_mode", 0x1000, "o"),
    ("priority", 0x0800, "o"),
    ("correlation_id", 0x0400, "s"),
    ("reply_to", 0x0200, "s"),
    ("expiration", 0x0100, "s"),
    ("message_id", 0x0080, "s"),
    ("timestamp", 0x0040, "T"),
    ("type", 0x0020, "s"),
    ("user_id", 0x0010, "s"),
    ("app_id", 0x0008, "s"),
    ("cluster_id", 0x0004, "s"),
)

EMPTY_PROPERTIES = BasicProperties()


def _shortstr(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise LocalProtocolError(f"short string longer than 255 bytes: {value[:40]!r}...")
    return _U8.pack(len(raw)) + raw


def _bytes_as_bytearray(value: Any) -> Any:
    """pamqp encodes only ``bytearray`` as a byte array (``x``), but the
    decoder below (and users) produce ``bytes``: convert, so that received
    headers can be published again."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {k: _bytes_as_bytearray(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bytes_as_bytearray(v) for v in value]
    return value


def encode_properties(props: BasicProperties) -> tuple[int, bytes]:
    """Return (property flags, encoded property list), as pamqp encodes them
    (except that an empty string is sent, where pamqp drops it)."""
    if props is EMPTY_PROPERTIES:
        return 0, b""
    flags = 0
    parts: list[bytes] = []
    value: Any = props.content_type
    if value is not None:
        flags = 0x8000
        parts.append(_shortstr(value))
    value = props.content_encoding
    if value is not None:
        flags |= 0x4000
        parts.append(_shortstr(value))
    value = props.headers
    if value is not None:
        flags |= 0x2000
        parts.append(encode_table(value))
    value = props.delivery_mode
    if value is not None:
        flags |= 0x1000
        parts.append(_octet("delivery_mode", value))
    value = props.priority
    if value is not None:
        flags |= 0x0800
        parts.append(_octet("priority", value))
    value = props.correlation_id
    if value is not None:
        flags |= 0x0400
        parts.append(_shortstr(value))
    value = props.reply_to
    if value is not None:
        flags |= 0x0200
        parts.append(_shortstr(value))
    value = props.expiration
    if value is not None:
        flags |= 0x0100
        parts.append(_shortstr(value))
    value = props.message_id
    if value is not None:
        flags |= 0x0080
        parts.append(_shortstr(value))
    value = props.timestamp
    if value is not None:
        flags |= 0x0040
        parts.append(_encode_timestamp(value))
    value = props.type
    if value is not None:
        flags |= 0x0020
        parts.append(_shortstr(value))
    value = props.user_id
    if value is not None:
        flags |= 0x0010
        parts.append(_shortstr(value))
    value = props.app_id
    if value is not None:
        flags |= 0x0008
        parts.append(_shortstr(value))
    value = props.cluster_id
    if value is not None:
        flags |= 0x0004
        parts.append(_shortstr(value))
    return flags, b"".join(parts)


_OCTETS = [_U8.pack(i) for i in range(256)]


def _octet(name: str, value: int) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 255:
        raise LocalProtocolError(f"{name} must be an integer 0..255, not {value!r}")
    return _OCTETS[value]


def _encode_timestamp(value: datetime.datetime | int) -> bytes:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        value = int(value.timestamp())
    try:
        return _U64.pack(value)
    except struct.error:  # before 1970, or beyond 64 bits
        raise LocalProtocolError(f"timestamp {value!r} does not fit an AMQP timestamp") from None


class _LeaveToPamqp(Exception):
    """A table value the fast encoder does not handle itself."""


def encode_table(table: Table) -> bytes:
    """A field table, byte for byte as pamqp's ``encode.field_table`` encodes
    it (``bytes`` values as byte arrays, like ``bytearray``).

    The common value types are encoded here; anything else (a subclass of
    a builtin, ``Decimal``, a key longer than 128 bytes, which pamqp
    truncates, pamqp's deprecated-RabbitMQ mode ...), and anything that
    fails, goes to pamqp itself, so its behaviour, errors included, is
    pamqp's.  ``tests/protocol/test_codec.py`` compares the two.
    """
    if not _pencode.DEPRECATED_RABBITMQ_SUPPORT:
        try:
            return _fast_table(table)
        except Exception:  # pamqp decides, and raises its own error
            pass
    try:
        return bytes(_pencode.field_table(_bytes_as_bytearray(table)))
    except (TypeError, ValueError, struct.error, OverflowError, AttributeError) as exc:
        raise LocalProtocolError(f"cannot encode headers: {exc}") from None


def _fast_table(table: Table) -> bytes:
    if not table:
        return b"\x00\x00\x00\x00"
    parts = []
    for key in sorted(table):
        raw = key.encode()
        if len(raw) > 128:
            raise _LeaveToPamqp
        parts.append(_OCTETS[len(raw)])
        parts.append(raw)
        parts.append(_fast_value(table[key]))
    data = b"".join(parts)
    return _U32.pack(len(data)) + data


def _fast_array(items: list[Any]) -> bytes:
    data = b"".join([_fast_value(item) for item in items])
    return _U32.pack(len(data)) + data


_TAG_S8 = struct.Struct(">cb")
_TAG_S16 = struct.Struct(">ch")
_TAG_U16 = struct.Struct(">cH")
_TAG_S32 = struct.Struct(">ci")
_TAG_U32 = struct.Struct(">cI")
_TAG_S64 = struct.Struct(">cq")
_TAG_F32 = struct.Struct(">cf")
_TAG_U64 = struct.Struct(">cQ")


def _fast_value(value: Any) -> bytes:
    kind = value.__class__
    if kind is str:
        raw: bytes = value.encode()
        return _TAG_U32.pack(b"S", len(raw)) + raw
    if kind is int:  # the smallest type that holds it, as pamqp picks
        if -128 <= value <= 127:
            return _TAG_S8.pack(b"b", value)
        if -32768 <= value <= 32767:
            return _TAG_S16.pack(b"s", value)
        if 0 <= value <= 65535:
            return _TAG_U16.pack(b"u", value)
        if -2147483648 <= value <= 2147483647:
            return _TAG_S32.pack(b"I", value)
        if 0 <= value <= 4294967295:
            return _TAG_U32.pack(b"i", value)
        return _TAG_S64.pack(b"l", value)  # struct.error beyond 64 bits: pamqp decides
    if kind is bool:
        return b"t\x01" if value else b"t\x00"
    if kind is dict:
        return b"F" + _fast_table(value)
    if kind is list:
        return b"A" + _fast_array(value)
    if kind is float:
        return _TAG_F32.pack(b"f", value)  # pamqp sends floats as 32 bits
    if kind is bytes or kind is bytearray:
        encoded: bytes = _TAG_U32.pack(b"x", len(value)) + value
        return encoded
    if value is None:
        return b"V"
    if kind is datetime.datetime:
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            value = value.replace(tzinfo=datetime.UTC)
        return _TAG_U64.pack(b"T", int(value.timestamp()))
    raise _LeaveToPamqp


_new_properties = fast_constructor(BasicProperties)
#: ``BasicProperties(*every_field_in_order)``, without the frozen dataclass's
#: ``object.__setattr__`` per field: for the publish path.
new_properties = _new_properties


def _timestamp(raw: int) -> datetime.datetime | int:
    try:
        return datetime.datetime.fromtimestamp(raw, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return raw


def decode_properties(flags: int, data: bytes, offset: int = 0) -> BasicProperties:
    """Decode the property list at ``data[offset:]`` announced by ``flags``
    (the first flag word).  Raises ``ValueError``/``struct.error``/
    ``IndexError`` on garbage (the caller maps them to a frame error)."""
    if not flags & 0xFFFC:
        return EMPTY_PROPERTIES
    content_type: str | None = None
    content_encoding: str | None = None
    headers: Table | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime.datetime | int | None = None
    type_: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None
    # Short strings: the length octet, then the bytes; reading past the end
    # yields a short slice, which the final check below catches.
    if flags & 0x8000:
        n = data[offset]
        offset += 1 + n
        content_type = data[offset - n : offset].decode()
    if flags & 0x4000:
        n = data[offset]
        offset += 1 + n
        content_encoding = data[offset - n : offset].decode()
    if flags & 0x2000:
        headers, offset = _decode_table(data, offset)
    if flags & 0x1000:
        delivery_mode = data[offset]
        offset += 1
    if flags & 0x0800:
        priority = data[offset]
        offset += 1
    if flags & 0x07FC:  # the rarer ones
        if flags & 0x0400:
            n = data[offset]
            offset += 1 + n
            correlation_id = data[offset - n : offset].decode()
        if flags & 0x0200:
            n = data[offset]
            offset += 1 + n
            reply_to = data[offset - n : offset].decode()
        if flags & 0x0100:
            n = data[offset]
            offset += 1 + n
            expiration = data[offset - n : offset].decode()
        if flags & 0x0080:
            n = data[offset]
            offset += 1 + n
            message_id = data[offset - n : offset].decode()
        if flags & 0x0040:
            timestamp = _timestamp(_U64.unpack_from(data, offset)[0])
            offset += 8
        if flags & 0x0020:
            n = data[offset]
            offset += 1 + n
            type_ = data[offset - n : offset].decode()
        if flags & 0x0010:
            n = data[offset]
            offset += 1 + n
            user_id = data[offset - n : offset].decode()
        if flags & 0x0008:
            n = data[offset]
            offset += 1 + n
            app_id = data[offset - n : offset].decode()
        if flags & 0x0004:
            n = data[offset]
            offset += 1 + n
            cluster_id = data[offset - n : offset].decode()
    if offset > len(data):
        raise ValueError("truncated property list")
    return _new_properties(
        content_type,
        content_encoding,
        headers,
        delivery_mode,
        priority,
        correlation_id,
        reply_to,
        expiration,
        message_id,
        timestamp,
        type_,
        user_id,
        app_id,
        cluster_id,
    )


_CACHE_ENTRIES = 256  # property lists remembered per connection
_CACHE_KEY_MAX = 1024  # longer ones are decoded every time


def _copy_properties(template: BasicProperties, headers: Table | None) -> BasicProperties:
    t = template
    return _new_properties(
        t.content_type,
        t.content_encoding,
        headers,
        t.delivery_mode,
        t.priority,
        t.correlation_id,
        t.reply_to,
        t.expiration,
        t.message_id,
        t.timestamp,
        t.type,
        t.user_id,
        t.app_id,
        t.cluster_id,
    )


def cached_properties(raw: bytes, cache: dict[bytes, Any]) -> BasicProperties:
    """The properties encoded in ``raw``, a content header's first flag word
    and property list (without continuation words), remembered in ``cache``.

    Every value a property list decodes to is immutable except the headers
    table and the tables and arrays in it.  So a cached result without
    headers is handed out again as it is (it is frozen); one whose headers
    hold only immutable values is handed out as a new object with a fresh
    copy of the headers dict, so no two messages ever share a mutable
    object; one with nested tables or arrays is not cached.  Nor is one with
    a message id, a correlation id or a timestamp: those differ, by design,
    from one message to the next.  The cache is emptied when full (a stream
    whose properties never repeat otherwise costs one dictionary lookup and
    insertion per message).
    """
    if raw[0] & 0x04 or raw[1] & 0xC0:  # correlation-id (0x0400), message-id, timestamp
        return decode_properties(_U16.unpack_from(raw)[0], raw, 2)
    hit = cache.get(raw)
    if hit is not None:
        if hit.__class__ is BasicProperties:
            return hit
        template, headers = hit
        return _copy_properties(template, dict(headers))
    props = decode_properties(_U16.unpack_from(raw)[0], raw, 2)
    if len(raw) <= _CACHE_KEY_MAX:
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()
        headers = props.headers
        if headers is None:
            cache[raw] = props
        else:
            for value in headers.values():
                if value.__class__ is dict or value.__class__ is list:
                    break
            else:
                # the other values are immutable; the headers get a copy of their own
                cache[raw] = (props, dict(headers))
    return props


_S8 = struct.Struct(">b")
_S16 = struct.Struct(">h")
_S32 = struct.Struct(">i")
_S64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_FIXED = {
    0x62: _S8,  # b
    0x42: _U8,  # B
    0x73: _S16,  # s
    0x75: _U16,  # u
    0x49: _S32,  # I
    0x69: _U32,  # i
    0x6C: _S64,  # l
    0x4C: _S64,  # L: signed, as pamqp and py-amqp (kombu) read and write it
    0x66: _F32,  # f
    0x64: _F64,  # d
}


def _decode_value(data: bytes, offset: int) -> tuple[Any, int]:
    kind = data[offset]
    offset += 1
    if kind == 0x53 or kind == 0x78:  # S long string, x byte array
        n = _U32.unpack_from(data, offset)[0]
        offset += 4 + n
        if offset > len(data):
            raise ValueError("truncated long string")
        raw = data[offset - n : offset]
        if kind == 0x78:
            return raw, offset
        try:
            return raw.decode(), offset
        except UnicodeDecodeError:
            return raw, offset
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed.unpack_from(data, offset)[0], offset + fixed.size
    if kind == 0x74:  # t
        return data[offset] != 0, offset + 1
    if kind == 0x46:  # F
        return _decode_table(data, offset)
    if kind == 0x41:  # A
        n = _U32.unpack_from(data, offset)[0]
        offset += 4
        stop = offset + n
        if stop > len(data):
            raise ValueError("truncated array")
        items = []
        while offset < stop:
            item, offset = _decode_value(data, offset)
            items.append(item)
        if offset != stop:
            raise ValueError("array overruns its length")
        return items, offset
    if kind == 0x54:  # T
        return _timestamp(_U64.unpack_from(data, offset)[0]), offset + 8
    if kind == 0x44:  # D decimal: a scale and a signed mantissa (as pamqp writes it)
        places = data[offset]
        value = _S32.unpack_from(data, offset + 1)[0]
        return decimal.Decimal(value).scaleb(-places), offset + 5
    if kind == 0x56 or kind == 0x00:  # V void
        return None, offset
    raise ValueError(f"unknown field type {kind:#04x}")


def _decode_table(data: bytes, offset: int) -> tuple[Table, int]:
    n = _U32.unpack_from(data, offset)[0]
    offset += 4
    stop = offset + n
    if stop > len(data):
        raise ValueError("truncated table")
    table: Table = {}
    while offset < stop:
        n = data[offset]
        offset += 1 + n
        key = data[offset - n : offset].decode()
        kind = data[offset]
        if kind == 0x53:  # S, the most common value, inline
            n = _U32.unpack_from(data, offset + 1)[0]
            offset += 5 + n
            if offset > stop:
                raise ValueError("truncated long string")
            raw = data[offset - n : offset]
            try:
                table[key] = raw.decode()
            except UnicodeDecodeError:
                table[key] = raw
            continue
        fixed = _FIXED.get(kind)  # numbers, inline too
        if fixed is not None:
            table[key] = fixed.unpack_from(data, offset + 1)[0]
            offset += 1 + fixed.size
        else:
            table[key], offset = _decode_value(data, offset)
    if offset != stop:
        raise ValueError("table overruns its length")
    return table, offset


def decode_content_header(
    payload: bytes, cache: dict[bytes, Any] | None = None
) -> tuple[int, int, BasicProperties]:
    """Return (class id, body size, properties) of a content header frame,
    through ``cache`` (see :func:`cached_properties`) if one is given.

    :raises FrameError: when the payload cannot be decoded.
    """
    try:
        class_id, _weight, body_size, flags = _CONTENT_HEADER.unpack_from(payload)
        if flags & 1:
            # Continuation flag words: basic has only 14 properties, all in
            # the first word, so the others are skipped (as pamqp does).
            offset = 14
            word = flags
            while word & 1:
                word = _U16.unpack_from(payload, offset)[0]
                offset += 2
            props = decode_properties(flags, payload, offset)
        elif cache is not None:
            props = cached_properties(payload[12:], cache)
        else:
            props = decode_properties(flags, payload, 14)
    except (ValueError, struct.error, IndexError, TypeError, RecursionError) as exc:
        # RecursionError: tables or arrays nested thousands deep
        raise FrameError(f"cannot decode content header: {exc!r}", FRAME_ERROR) from None
    return class_id, body_size, props


# --- content ------------------------------------------------------------------

_PUBLISH_ID = _U32.pack(0x003C0028)  # basic.publish
_BASIC_CLASS = 60


# basic.publish's method frame up to the exchange name: frame header,
# method id, ticket, exchange length
_PUBLISH_HEAD = struct.Struct(">BHIIHB")
# from the publish bits to the content header's weight: bits, frame end,
# header frame header, class, weight (the body size and flags follow)
_PUBLISH_TAIL = struct.Struct(">BBBHIHH")
# the header frame's end and the body frame's header
_BODY_HEAD = struct.Struct(">BBHI")
_JOIN_UNDER = 4096  # smaller bodies are copied into one byte string with their frames


#: Publish heads by (channel, exchange, routing key, id(properties), bits):
#: the properties object itself, the frames before the body size, and the
#: properties after it.  The entry holds the object, so no other object can
#: have its id while the entry is there.
_HEADS: dict[tuple[int, str, str, int, int], tuple[BasicProperties, bytes, bytes]] = {}
_HEADS_MAX = 256


def _publish_head(
    channel: int, exchange: str, routing_key: str, props: BasicProperties, bits: int
) -> tuple[BasicProperties, bytes, bytes]:
    ex = exchange.encode()
    rk = routing_key.encode()
    if len(ex) > 255:
        _shortstr(exchange)  # raises
    if len(rk) > 255:
        _shortstr(routing_key)
    flags, encoded = encode_properties(props)
    head = b"".join(
        (
            _PUBLISH_HEAD.pack(
                FRAME_METHOD, channel, 9 + len(ex) + len(rk), 0x003C0028, 0, len(ex)
            ),
            ex,
            _OCTETS[len(rk)],
            rk,
            _PUBLISH_TAIL.pack(
                bits, FRAME_END, FRAME_HEADER, channel, 14 + len(encoded), _BASIC_CLASS, 0
            ),
        )
    )
    return props, head, _U16.pack(flags) + encoded


def encode_publish(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    props: BasicProperties,
    frame_max: int,
    mandatory: bool = False,
    immediate: bool = False,
) -> list[Buffer]:
    """``basic.publish`` + content header + body frames, bodies cut to
    ``frame_max - 8``, as a list of buffers to write in order (the frames
    of a body cut in several are views of it).

    Everything but the body size is the same for every message a producer
    sends with the same properties object to the same place: it is encoded
    once and kept (a few hundred entries at most; ``BasicProperties`` is
    frozen, and an entry is used only for the very object it was made from,
    so what is sent never depends on the cache).  Properties with a
    correlation id, a message id or a timestamp are not kept: those differ,
    by design, from one message to the next (as in :func:`cached_properties`),
    and an RPC client's entries would only hold its finished calls' ids."""
    bits = mandatory | (immediate << 1)
    if props.correlation_id is None and props.message_id is None and props.timestamp is None:
        key = (channel, exchange, routing_key, id(props), bits)
        entry = _HEADS.get(key)
        if entry is None:
            entry = _publish_head(channel, exchange, routing_key, props, bits)
            if len(_HEADS) >= _HEADS_MAX:
                _HEADS.clear()
            _HEADS[key] = entry
    else:
        entry = _publish_head(channel, exchange, routing_key, props, bits)
    if type(body) is not bytes:
        body = bytes(body)  # a caller's bytearray may change after this returns
    size = len(body)
    if size < _JOIN_UNDER and size <= frame_max - FRAME_OVERHEAD:
        if size:
            return [
                b"".join(
                    (
                        entry[1],
                        _U64.pack(size),
                        entry[2],
                        _BODY_HEAD.pack(FRAME_END, FRAME_BODY, channel, size),
                        body,
                        FRAME_END_BYTE,
                    )
                )
            ]
        return [b"".join((entry[1], _U64.pack(0), entry[2], FRAME_END_BYTE))]
    out: list[Buffer] = [b"".join((entry[1], _U64.pack(size), entry[2], FRAME_END_BYTE))]
    out += _body_frames(channel, body, frame_max)
    return out


def _body_frames(channel: int, body: bytes, frame_max: int) -> list[Buffer]:
    """The body frames of *body*, a ``bytes``.  The pieces of a body cut
    into several frames are views of it, not copies: written with
    ``sendmsg``, a large body goes to the socket without being copied once
    in user space (see :meth:`AMQPConnection.buffers_to_send`)."""
    size = len(body)
    if not size:
        return []
    chunk = frame_max - FRAME_OVERHEAD
    if size <= chunk:
        return [_FRAME_HEADER.pack(FRAME_BODY, channel, size), body, FRAME_END_BYTE]
    view = memoryview(body)
    out: list[Buffer] = []
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        out += (_FRAME_HEADER.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END_BYTE)
    return out


def encode_content(
    channel: int, body: bytes, props: BasicProperties, frame_max: int
) -> list[Buffer]:
    """Content header + body frames."""
    if type(body) is not bytes:
        body = bytes(body)
    flags, encoded = encode_properties(props)
    header = _CONTENT_HEADER.pack(_BASIC_CLASS, 0, len(body), flags) + encoded
    out: list[Buffer] = [
        _FRAME_HEADER.pack(FRAME_HEADER, channel, len(header)),
        header,
        FRAME_END_BYTE,
    ]
    out += _body_frames(channel, body, frame_max)
    return out


_ACK = struct.Struct(">BHIIQBB")  # frame header, method id, tag, bits, frame end
_ACK_SIZE = 4 + 8 + 1


def encode_ack(channel: int, method_id: int, delivery_tag: int, bits: int) -> bytes:
    """``basic.ack`` (80), ``basic.nack`` (120) or ``basic.reject`` (90):
    all three are a delivery tag and one octet of bits."""
    return _ACK.pack(
        FRAME_METHOD,
        channel,
        _ACK_SIZE,
        (_BASIC_CLASS << 16) | method_id,
        delivery_tag,
        bits,
        FRAME_END,
    )
