"""Framing: cutting the inbound byte stream into frames, and building frames.

:class:`FrameReader` reads the 7-byte frame header itself, so that every limit
(frame size, frame type, channel number) is enforced *before* the payload is
buffered, and pamqp is only asked to decode a payload known to be complete.

The hot frames (``basic.publish``, content headers and bodies, acks) are
encoded here directly with :mod:`struct`; every other method goes through
pamqp.  ``tests/protocol/test_codec.py`` proves the two byte-identical.

Properties have their own codec (:func:`encode_properties`,
:func:`decode_properties`): it is faster than pamqp's generic one and it does
not fail on timestamps that :class:`datetime.datetime` cannot hold (other
clients send milliseconds, or garbage): those are delivered as the raw
integer instead of poisoning the connection.
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

from .errors import CHANNEL_ERROR, FRAME_ERROR, FrameError, LocalProtocolError

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
    "check_shortstr",
    "decode_method",
    "decode_properties",
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

_KNOWN_FRAME_TYPES = frozenset((FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT))

Frame: TypeAlias = tuple[int, int, bytes]
"""(frame type, channel number, payload)"""


class FrameReader:
    """An incremental buffer that yields complete, checked frames.

    Limits are checked on the 7-byte header, before the payload is buffered:

    - a frame larger than ``frame_max`` (4096 until tuning is done): 501;
    - an unknown frame type: 501;
    - a heartbeat on a non-zero channel: 501;
    - a channel number above ``channel_max``: 504;
    - a frame whose last octet is not 0xCE: 501.

    ``frame_max`` and ``channel_max`` may be changed between calls (after
    ``connection.tune``).
    """

    __slots__ = ("_buf", "_pos", "channel_max", "frame_max")

    def __init__(self, frame_max: int = FRAME_MIN_SIZE, channel_max: int = 65535) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.frame_max = frame_max
        self.channel_max = channel_max

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """How many bytes are held that do not yet form a whole frame."""
        return len(self._buf) - self._pos

    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame in the buffer.

        :raises FrameError: on any malformed frame (the reader is then useless).
        """
        buf = self._buf
        pos = self._pos
        end = len(buf)
        frame_max = self.frame_max
        channel_max = self.channel_max
        try:
            while end - pos >= 7:
                frame_type, channel, size = _FRAME_HEADER.unpack_from(buf, pos)
                if frame_type not in _KNOWN_FRAME_TYPES:
                    if buf[pos : pos + 4] == b"AMQP":
                        raise FrameError(
                            "the server does not speak AMQP 0-9-1: it answered with "
                            f"protocol header {bytes(buf[pos : pos + 8])!r}"
                        )
                    raise FrameError(f"unknown frame type {frame_type}")
                if size + FRAME_OVERHEAD > frame_max:
                    raise FrameError(
                        f"frame of {size + FRAME_OVERHEAD} bytes exceeds frame_max {frame_max}"
                    )
                if frame_type == FRAME_HEARTBEAT and channel != 0:
                    raise FrameError(f"heartbeat frame on channel {channel}")
                if channel > channel_max:
                    raise FrameError(
                        f"frame on channel {channel} exceeds channel_max {channel_max}",
                        CHANNEL_ERROR,
                    )
                stop = pos + 7 + size
                if stop >= end:  # payload or frame-end octet not here yet
                    break
                if buf[stop] != FRAME_END:
                    raise FrameError(f"bad frame-end octet {buf[stop]:#04x}")
                payload = bytes(buf[pos + 7 : stop])
                pos = stop + 1
                yield frame_type, channel, payload
        finally:
            if pos:
                del buf[:pos]
                pos = 0
            self._pos = pos


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


def decode_method(payload: bytes) -> _pbase.Frame:
    """Decode a method frame's payload.

    :raises FrameError: unknown method or undecodable arguments.
    """
    if len(payload) < 4:
        raise FrameError("method frame shorter than its method id")
    index = _METHOD_ID.unpack_from(payload)[0]
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
    """Return (property flags, encoded property list)."""
    flags = 0
    parts: list[bytes] = []
    for name, bit, kind in _PROPERTY_FIELDS:
        value = getattr(props, name)
        if value is None:
            continue
        flags |= bit
        if kind == "s":
            parts.append(_shortstr(value))
        elif kind == "o":
            if not 0 <= value <= 255:
                raise LocalProtocolError(f"{name} must be 0..255, not {value!r}")
            parts.append(_U8.pack(value))
        elif kind == "F":
            try:
                parts.append(_pencode.field_table(_bytes_as_bytearray(value)))
            except (TypeError, ValueError, struct.error) as exc:
                raise LocalProtocolError(f"cannot encode headers: {exc}") from None
        else:  # timestamp
            if isinstance(value, datetime.datetime):
                if value.tzinfo is None:
                    value = value.replace(tzinfo=datetime.UTC)
                value = int(value.timestamp())
            try:
                parts.append(_U64.pack(value))
            except struct.error:  # before 1970, or beyond 64 bits
                raise LocalProtocolError(
                    f"timestamp {value!r} does not fit an AMQP timestamp"
                ) from None
    return flags, b"".join(parts)


def _timestamp(raw: int) -> datetime.datetime | int:
    try:
        return datetime.datetime.fromtimestamp(raw, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return raw


def decode_properties(flags: int, data: bytes, offset: int = 0) -> BasicProperties:
    """Decode a property list.  Raises ``ValueError``/``struct.error``/
    ``IndexError`` on garbage (the caller maps them to a frame error)."""
    if not flags:
        return EMPTY_PROPERTIES
    values: dict[str, Any] = {}
    for name, bit, kind in _PROPERTY_FIELDS:
        if not flags & bit:
            continue
        if kind == "s":
            n = data[offset]
            values[name] = data[offset + 1 : offset + 1 + n].decode("utf-8")
            offset += 1 + n
            if offset > len(data):
                raise ValueError("truncated property")
        elif kind == "o":
            values[name] = data[offset]
            offset += 1
        elif kind == "F":
            values[name], offset = _decode_table(data, offset)
        else:
            values[name] = _timestamp(_U64.unpack_from(data, offset)[0])
            offset += 8
    return BasicProperties(**values)


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
    0x4C: _U64,  # L
    0x66: _F32,  # f
    0x64: _F64,  # d
}


def _decode_value(data: bytes, offset: int) -> tuple[Any, int]:
    kind = data[offset]
    offset += 1
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed.unpack_from(data, offset)[0], offset + fixed.size
    if kind == 0x53 or kind == 0x78:  # S longstr, x byte array
        n = _U32.unpack_from(data, offset)[0]
        offset += 4
        raw = data[offset : offset + n]
        if len(raw) != n:
            raise ValueError("truncated long string")
        if kind == 0x78:
            return raw, offset + n
        try:
            return raw.decode("utf-8"), offset + n
        except UnicodeDecodeError:
            return raw, offset + n
    if kind == 0x74:  # t
        return bool(data[offset]), offset + 1
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
        return items, offset
    if kind == 0x54:  # T
        return _timestamp(_U64.unpack_from(data, offset)[0]), offset + 8
    if kind == 0x44:  # D decimal
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
        klen = data[offset]
        key = data[offset + 1 : offset + 1 + klen].decode("utf-8")
        offset += 1 + klen
        table[key], offset = _decode_value(data, offset)
    if offset != stop:
        raise ValueError("table overruns its length")
    return table, offset


def decode_content_header(payload: bytes) -> tuple[int, int, BasicProperties]:
    """Return (class id, body size, properties) of a content header frame.

    :raises FrameError: when the payload cannot be decoded.
    """
    try:
        class_id, _weight, body_size, flags = _CONTENT_HEADER.unpack_from(payload)
        offset = 14
        while flags & 1:  # continuation flag words (never used by basic)
            flags &= ~1
            offset += 2
        props = decode_properties(flags, payload, offset)
    except (ValueError, struct.error, IndexError, TypeError, RecursionError) as exc:
        # RecursionError: tables or arrays nested thousands deep
        raise FrameError(f"cannot decode content header: {exc!r}", FRAME_ERROR) from None
    return class_id, body_size, props


# --- content ------------------------------------------------------------------

_PUBLISH_ID = _U32.pack(0x003C0028)  # basic.publish
_BASIC_CLASS = 60


def encode_publish(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    props: BasicProperties,
    frame_max: int,
    mandatory: bool = False,
    immediate: bool = False,
) -> list[bytes]:
    """``basic.publish`` + content header + body frames, bodies cut to
    ``frame_max - 8``, as a list of byte strings to write in order."""
    method = b"".join(
        (
            _PUBLISH_ID,
            b"\x00\x00",  # ticket
            _shortstr(exchange),
            _shortstr(routing_key),
            _U8.pack(mandatory | (immediate << 1)),
        )
    )
    out = [_FRAME_HEADER.pack(FRAME_METHOD, channel, len(method)), method, FRAME_END_BYTE]
    out.extend(encode_content(channel, body, props, frame_max))
    return out


def encode_content(
    channel: int, body: bytes, props: BasicProperties, frame_max: int
) -> list[bytes]:
    """Content header + body frames."""
    flags, encoded = encode_properties(props)
    size = len(body)
    header = _CONTENT_HEADER.pack(_BASIC_CLASS, 0, size, flags) + encoded
    out = [_FRAME_HEADER.pack(FRAME_HEADER, channel, len(header)), header, FRAME_END_BYTE]
    chunk = frame_max - FRAME_OVERHEAD
    if size <= chunk:
        if size:
            out += (_FRAME_HEADER.pack(FRAME_BODY, channel, size), body, FRAME_END_BYTE)
        return out
    view = memoryview(body)
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        out += (_FRAME_HEADER.pack(FRAME_BODY, channel, len(piece)), bytes(piece), FRAME_END_BYTE)
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
