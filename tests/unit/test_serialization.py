"""The serializer registry: round trips, accept lists, errors, kombu interop."""

from __future__ import annotations

import json
import pickle
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import kombu.serialization as kser
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_msg import serialization as ser
from trio_msg.errors import (
    ContentDisallowed,
    DecodeError,
    EncodeError,
    SerializerNotInstalled,
)

PICKLE = "application/x-python-serialize"
ALL_SAFE = frozenset(
    {
        "application/json",
        "text/plain",
        "application/data",
        "application/x-msgpack",
        "application/x-yaml",
    }
)
EVERYTHING = ALL_SAFE | {PICKLE}

# --- strategies ------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)
# msgpack: ints are limited to 64 bits, and it distinguishes bytes from str.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)
fixed_offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# The types kombu's JSON encoder wraps in {"__type__": ..., "__value__": ...}.
kombu_json_extras = (
    st.datetimes()
    | st.datetimes(timezones=fixed_offsets)
    | st.dates()
    | st.times()
    | st.decimals(allow_nan=False)
    | st.uuids()
    | st.binary()
)


def roundtrip(value: Any, serializer: str | None = None, accept: Any = None) -> Any:
    ctype, enc, body = ser.dumps(value, serializer)
    assert isinstance(body, bytes)
    return ser.loads(body, ctype, enc, accept=accept)


# --- round trips -----------------------------------------------------------------------------


@given(json_values)
def test_json_roundtrip(value: Any) -> None:
    ctype, enc, body = ser.dumps(value, "json")
    assert (ctype, enc) == ("application/json", "utf-8")
    assert ser.loads(body, ctype, enc) == value
    # and it is plain JSON anyone can read
    assert json.loads(body) == value


@given(json_values.filter(lambda v: not isinstance(v, str)))
def test_json_is_the_default_for_non_text(value: Any) -> None:
    ctype, enc, body = ser.dumps(value)
    assert (ctype, enc) == ("application/json", "utf-8")
    assert ser.loads(body, ctype, enc) == value


@given(kombu_json_extras)
def test_json_extension_types_roundtrip(value: Any) -> None:
    out = roundtrip({"v": [value]}, "json")
    assert out == {"v": [value]}
    assert type(out["v"][0]) is type(value)


def test_json_extension_wire_format_matches_kombu() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    _, _, body = ser.dumps(
        {
            "dt": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            "d": date(2024, 1, 2),
            "t": time(3, 4, 5),
            "dec": Decimal("1.10"),
            "u": u,
            "b": b"hi",
            "b64": b"\xff\x00",
        },
        "json",
    )
    assert json.loads(body) == {
        "dt": {"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"},
        "d": {"__type__": "date", "__value__": "2024-01-02"},
        "t": {"__type__": "time", "__value__": "03:04:05"},
        "dec": {"__type__": "decimal", "__value__": "1.10"},
        "u": {"__type__": "uuid", "__value__": {"hex": u.hex}},
        "b": {"__type__": "bytes", "__value__": "hi"},
        "b64": {"__type__": "base64", "__value__": "/wA="},
    }


def test_json_unknown_envelope_stays_a_dict() -> None:
    value = {"__type__": "frobnicator", "__value__": 1}
    assert roundtrip(value, "json") == value
    # a dict with more keys than the envelope is never unwrapped
    value2 = {"__type__": "date", "__value__": "2024-01-02", "x": 1}
    assert roundtrip(value2, "json") == value2


def test_json_is_compact_utf8() -> None:
    _, _, body = ser.dumps({"a": [1, 2], "é": "ü"}, "json")
    assert body == '{"a":[1,2],"é":"ü"}'.encode()


@given(st.text())
def test_text_roundtrip(value: str) -> None:
    ctype, enc, body = ser.dumps(value)
    assert (ctype, enc, body) == ("text/plain", "utf-8", value.encode("utf-8"))
    assert ser.loads(body, ctype, enc) == value
    assert ser.dumps(value, "text") == (ctype, enc, body)


@given(st.binary())
def test_raw_roundtrip(value: bytes) -> None:
    ctype, enc, body = ser.dumps(value)
    assert (ctype, enc, body) == ("application/data", "binary", value)
    out = ser.loads(body, ctype, enc)
    assert out == value
    assert type(out) is bytes
    assert ser.dumps(bytearray(value)) == (ctype, enc, value)
    assert ser.dumps(memoryview(value), "raw") == (ctype, enc, value)


@given(msgpack_values)
def test_msgpack_roundtrip(value: Any) -> None:
    ctype, enc, body = ser.dumps(value, "msgpack")
    assert (ctype, enc) == ("application/x-msgpack", "binary")
    assert ser.loads(body, ctype, enc) == value


@given(json_values)
def test_yaml_roundtrip(value: Any) -> None:
    ctype, enc, body = ser.dumps(value, "yaml")
    assert (ctype, enc) == ("application/x-yaml", "utf-8")
    assert ser.loads(body, ctype, enc) == value


@given(msgpack_values | kombu_json_extras)
def test_pickle_roundtrip_when_accepted(value: Any) -> None:
    ctype, enc, body = ser.dumps(value, "pickle")
    assert (ctype, enc) == (PICKLE, "binary")
    assert ser.loads(body, ctype, enc, accept=ser.prepare_accept_content(["pickle"])) == value


def test_dumps_accepts_a_named_serializer_for_str_and_bytes() -> None:
    assert ser.dumps("x", "json") == ("application/json", "utf-8", b'"x"')
    assert ser.dumps(b"x", "json")[2] == b'{"__type__":"bytes","__value__":"x"}'


# --- accept lists ----------------------------------------------------------------------------


def test_default_accept() -> None:
    assert frozenset({"application/json", "text/plain", "application/data"}) == ser.DEFAULT_ACCEPT
    assert ser.prepare_accept_content(None) == ser.DEFAULT_ACCEPT
    for value in ({"a": 1}, "text", b"bytes"):
        assert roundtrip(value, accept=ser.DEFAULT_ACCEPT) == value


def test_prepare_accept_content_by_name_and_type() -> None:
    assert ser.prepare_accept_content(["json", "application/x-msgpack", "Text/Plain"]) == {
        "application/json",
        "application/x-msgpack",
        "text/plain",
    }
    # unregistered content types are allowed: they are just strings to match
    assert ser.prepare_accept_content(["application/x-custom"]) == {"application/x-custom"}
    # a lone string is one item, not a sequence of characters
    assert ser.prepare_accept_content("yaml") == {"application/x-yaml"}
    assert ser.prepare_accept_content([]) == frozenset()


def test_prepare_accept_content_unknown_name() -> None:
    with pytest.raises(SerializerNotInstalled, match="nosuch"):
        ser.prepare_accept_content(["json", "nosuch"])


def test_pickle_refused_by_default() -> None:
    ctype, enc, body = ser.dumps({"a": 1}, "pickle")
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        ser.loads(body, ctype, enc)  # accept=None still refuses unsafe types
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        ser.loads(body, ctype, enc, accept=ser.DEFAULT_ACCEPT)
    with pytest.raises(ContentDisallowed):
        ser.loads(body, ctype, enc, accept=ALL_SAFE)


@pytest.mark.parametrize("listed", ["pickle", PICKLE])
def test_pickle_accepted_when_listed(listed: str) -> None:
    ctype, enc, body = ser.dumps({"a": (1, 2)}, "pickle")
    accept = ser.prepare_accept_content(["json", listed])
    assert ser.loads(body, ctype, enc, accept=accept) == {"a": (1, 2)}


def test_content_disallowed_message_names_type_and_accept_list() -> None:
    ctype, enc, body = ser.dumps([1], "msgpack")
    accept = ser.prepare_accept_content(["json", "text"])
    with pytest.raises(ContentDisallowed) as info:
        ser.loads(body, ctype, enc, accept=accept)
    msg = str(info.value)
    assert "application/x-msgpack" in msg
    assert "msgpack" in msg
    assert "application/json" in msg
    assert "text/plain" in msg


@pytest.mark.parametrize(
    ("accept_by", "serializer", "value"),
    [
        ("json", "json", {"a": [1]}),
        ("application/json", "json", {"a": [1]}),
        ("msgpack", "msgpack", {"a": [1]}),
        ("application/x-msgpack", "msgpack", {"a": [1]}),
        ("yaml", "yaml", {"a": [1]}),
        ("application/x-yaml", "yaml", {"a": [1]}),
        ("text", "text", "hi"),
        ("raw", "raw", b"hi"),
    ],
)
def test_accept_by_name_or_content_type(accept_by: str, serializer: str, value: Any) -> None:
    ctype, enc, body = ser.dumps(value, serializer)
    accept = ser.prepare_accept_content([accept_by])
    assert ser.loads(body, ctype, enc, accept=accept) == value
    others = ser.prepare_accept_content([n for n in ("json", "text", "raw") if n != serializer])
    with pytest.raises(ContentDisallowed):
        ser.loads(body, ctype, enc, accept=others)


def test_missing_content_type_is_application_data() -> None:
    assert ser.loads(b"\x00\xff", None, None) == b"\x00\xff"
    assert ser.loads(b"abc", None, "utf-8") == b"abc"
    assert ser.loads(b"\x00\xff", "", "binary") == b"\x00\xff"
    with pytest.raises(ContentDisallowed, match="application/data"):
        ser.loads(b"x", None, None, accept=frozenset({"application/json"}))


def test_content_type_parameters_and_case_are_ignored() -> None:
    assert ser.loads(b'{"a":1}', "Application/JSON; charset=utf-8", "utf-8") == {"a": 1}
    accept = ser.prepare_accept_content(["json"])
    assert ser.loads(b"[1]", "application/json;charset=utf-8", None, accept=accept) == [1]


# --- content types without a decoder (kombu's rule) ------------------------------------------


def test_unknown_accepted_content_type() -> None:
    accept = frozenset({"application/x-custom"})
    assert ser.loads(b"\xff\x00", "application/x-custom", "binary", accept=accept) == b"\xff\x00"
    assert ser.loads(b"\xff\x00", "application/x-custom", "ascii-8bit") == b"\xff\x00"
    assert ser.loads("héllo".encode(), "application/x-custom", "utf-8", accept=accept) == "héllo"
    assert ser.loads("héllo".encode(), "application/x-custom", None) == "héllo"
    assert ser.loads("héllo".encode("latin-1"), "application/x-custom", "Latin-1") == "héllo"


def test_text_honours_the_message_encoding() -> None:
    assert ser.loads("é".encode("utf-16"), "text/plain", "utf-16") == "é"
    assert ser.loads(b"abc", "text/plain", "binary") == b"abc"


def test_application_data_with_a_text_encoding_is_text() -> None:
    # kombu's raw serializer sends str as application/data + utf-8
    assert ser.loads(b"abc", "application/data", "utf-8") == "abc"


@pytest.mark.parametrize("encoding", ["no-such-codec", "zlib", "base64", "rot13"])
def test_non_text_content_encodings_are_refused(encoding: str) -> None:
    with pytest.raises(DecodeError, match=encoding):
        ser.loads(b"eJwrSS0uAQAEXQHB", "application/x-custom", encoding)


def test_bad_utf8_text_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as info:
        ser.loads(b"\xff\xfe\xfa", "text/plain", "utf-8")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_buffers_are_accepted() -> None:
    assert ser.loads(bytearray(b"[1]"), "application/json", "utf-8") == [1]
    assert ser.loads(memoryview(b"abc"), "application/data", "binary") == b"abc"


def test_empty_bodies() -> None:
    assert ser.loads(b"", "text/plain", "utf-8") == ""
    assert ser.loads(b"", "application/data", "binary") == b""
    with pytest.raises(DecodeError):
        ser.loads(b"", "application/json", "utf-8")


# --- errors ----------------------------------------------------------------------------------


def test_unknown_serializer() -> None:
    with pytest.raises(SerializerNotInstalled, match="nosuch"):
        ser.dumps({"a": 1}, "nosuch")


@pytest.mark.parametrize(
    ("value", "serializer"),
    [
        (object(), None),
        (object(), "json"),
        ({(1, 2): 3}, "json"),
        (object(), "msgpack"),
        (object(), "yaml"),
        (lambda: None, "pickle"),
        (1, "text"),
        ("\ud800", "text"),  # lone surrogate
        ("\ud800", "json"),
        ("str", "raw"),
        (1, "raw"),
    ],
)
def test_encode_errors(value: Any, serializer: str | None) -> None:
    with pytest.raises(EncodeError) as info:
        ser.dumps(value, serializer)
    assert info.value.__cause__ is not None


def test_circular_json_is_an_encode_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError) as info:
        ser.dumps(loop)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/json", b"{not json"),
        ("application/json", b"\xff\xfe"),
        ("application/json", b"[" * 100_000),
        ("application/json", b'{"__type__":"datetime","__value__":"yesterday"}'),
        ("application/json", b'{"__type__":"uuid","__value__":"nope"}'),
        ("application/json", b'{"__type__":"base64","__value__":"!!!"}'),
        ("application/json", b'{"__type__":"decimal","__value__":[]}'),
        ("application/x-msgpack", b"\xc1"),
        ("application/x-msgpack", b"\x92\x01"),
        ("application/x-yaml", b"a: [1, 2"),
        ("application/x-yaml", b"!!python/object/apply:os.system ['true']"),
        (PICKLE, b"\x80\x04garbage"),
        (PICKLE, b""),
    ],
)
def test_garbage_is_a_decode_error(ctype: str, body: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        ser.loads(body, ctype, "utf-8", accept=EVERYTHING)
    assert info.value.__cause__ is not None


# pickle is left out: unpickling arbitrary bytes may import and call anything.
FUZZ_TYPES = sorted(ALL_SAFE | {"application/x-unknown"})


@given(st.binary(), st.sampled_from(FUZZ_TYPES), st.sampled_from(["utf-8", "binary", None]))
def test_arbitrary_input_decodes_or_raises_decode_error(
    body: bytes, ctype: str, encoding: str | None
) -> None:
    try:
        ser.loads(body, ctype, encoding, accept=frozenset(FUZZ_TYPES))
    except DecodeError:
        pass


# --- optional dependencies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serializer", "module", "extra", "value"),
    [
        ("msgpack", "msgpack", "trio_msg[msgpack]", [1]),
        ("yaml", "yaml", "trio_msg[yaml]", [1]),
    ],
)
def test_missing_optional_dependency(
    monkeypatch: pytest.MonkeyPatch, serializer: str, module: str, extra: str, value: Any
) -> None:
    ctype, enc, body = ser.dumps(value, serializer)
    monkeypatch.setitem(sys.modules, module, None)  # makes "import <module>" fail
    with pytest.raises(SerializerNotInstalled, match=extra.replace("[", r"\[")):
        ser.dumps(value, serializer)
    with pytest.raises(SerializerNotInstalled, match=extra.replace("[", r"\[")):
        ser.loads(body, ctype, enc)
    # still known by name, so it can be listed in accept
    assert ser.prepare_accept_content([serializer]) == {ctype}


# --- registry API ----------------------------------------------------------------------------


def test_register_and_unregister_custom_serializer() -> None:
    reg = ser.SerializerRegistry()
    ser.install_builtins(reg)
    reg.register(
        "upper",
        lambda v: str(v).upper().encode("ascii"),
        lambda b: b.decode("ascii").lower(),
        "application/x-upper",
        "us-ascii",
    )
    assert reg.dumps("abc", "upper") == ("application/x-upper", "us-ascii", b"ABC")
    assert reg.loads(b"ABC", "application/x-upper", "us-ascii") == "abc"
    assert reg.prepare_accept_content(["upper"]) == {"application/x-upper"}
    assert "upper" in reg.names()
    reg.unregister("upper")
    assert "upper" not in reg.names()
    with pytest.raises(SerializerNotInstalled):
        reg.dumps("abc", "upper")
    with pytest.raises(SerializerNotInstalled):
        reg.unregister("upper")
    # without the decoder, the body is now just text
    assert reg.loads(b"ABC", "application/x-upper", "us-ascii") == "ABC"
    # the default registry was not touched
    with pytest.raises(SerializerNotInstalled):
        ser.prepare_accept_content(["upper"])


def test_module_level_register_unregister() -> None:
    ser.register("rev", lambda v: bytes(v)[::-1], lambda b: b[::-1], "application/x-rev", "binary")
    try:
        assert ser.dumps(b"abc", "rev") == ("application/x-rev", "binary", b"cba")
        assert ser.loads(b"cba", "application/x-rev", "binary") == b"abc"
    finally:
        ser.unregister("rev")
    with pytest.raises(SerializerNotInstalled):
        ser.dumps(b"abc", "rev")


def test_reregistering_a_content_type_replaces_the_old_name() -> None:
    reg = ser.SerializerRegistry()
    reg.register("a", lambda v: b"a", lambda b: "a", "application/x-same")
    reg.register("b", lambda v: b"b", lambda b: "b", "application/x-same")
    assert reg.names() == ["b"]
    assert reg.loads(b"", "application/x-same", None) == "b"


def test_custom_unsafe_serializer_needs_explicit_accept() -> None:
    reg = ser.SerializerRegistry()
    reg.register("evil", lambda v: b"x", lambda b: "decoded", "application/x-evil", unsafe=True)
    with pytest.raises(ContentDisallowed):
        reg.loads(b"x", "application/x-evil", None)
    assert reg.loads(b"x", "application/x-evil", None, accept=frozenset({"application/x-evil"}))


def test_decode_only_serializer() -> None:
    reg = ser.SerializerRegistry()
    reg.register("ro", None, lambda b: b"decoded:" + b, "application/x-ro", "binary")
    assert reg.loads(b"x", "application/x-ro", "binary") == b"decoded:x"
    with pytest.raises(SerializerNotInstalled, match="only decode"):
        reg.dumps(b"x", "ro")


def test_encoder_returning_non_bytes_is_an_encode_error() -> None:
    reg = ser.SerializerRegistry()

    def returns_str(value: Any) -> Any:  # breaks the Encoder contract on purpose
        return "a str"

    reg.register("bad", returns_str, None, "application/x-bad")
    with pytest.raises(EncodeError, match="str"):
        reg.dumps(1, "bad")


def test_invalid_registrations() -> None:
    reg = ser.SerializerRegistry()
    with pytest.raises(ValueError, match="name"):
        reg.register("a/b", None, None, "application/x-a")
    with pytest.raises(ValueError, match="content type"):
        reg.register("a", None, None, "no-slash")


# --- interop with kombu ----------------------------------------------------------------------


def kombu_dumps(value: Any, serializer: str | None = None) -> tuple[str, str, bytes]:
    """kombu.serialization.dumps, with the body as it goes on the wire.

    kombu's JSON and YAML encoders return str; the transport (py-amqp)
    encodes it with the content encoding before sending.
    """
    ctype, enc, body = kser.dumps(value, serializer=serializer)
    if isinstance(body, str):
        body = body.encode(enc)
    assert isinstance(body, bytes)
    return ctype, enc, body


INTEROP_VALUES: list[tuple[str, Any]] = [
    ("json", {"a": [1, 2.5, None, True], "é": "ü", "n": {"x": -3}}),
    ("json", [datetime(2024, 5, 6, 7, 8, 9, 123456), date(2024, 1, 1), time(23, 59)]),
    ("json", [datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=-5)))]),
    ("json", [Decimal("3.14159"), uuid.UUID(int=123456789), b"text bytes", b"\xff\x00\x80"]),
    ("msgpack", {"a": [1, 2.5, None, True], "b": b"\x00\xff", "c": "ü"}),
    ("yaml", {"a": [1, 2.5, None, True], "c": "ü", "d": {"nested": ["x"]}}),
    ("pickle", {"a": (1, 2), "s": {1, 2}, "dt": datetime(2024, 1, 1)}),
]


@pytest.mark.parametrize(("serializer", "value"), INTEROP_VALUES)
def test_kombu_to_trio_msg(serializer: str, value: Any) -> None:
    ctype, enc, body = kombu_dumps(value, serializer)
    accept = ser.prepare_accept_content([serializer])
    assert ser.loads(body, ctype, enc, accept=accept) == value


@pytest.mark.parametrize(("serializer", "value"), INTEROP_VALUES)
def test_trio_msg_to_kombu(serializer: str, value: Any) -> None:
    ctype, enc, body = ser.dumps(value, serializer)
    assert kser.loads(body, ctype, enc, accept={ctype}) == value


@pytest.mark.parametrize("value", ["héllo wörld", "", b"\x00\xffbinary", b""])
def test_text_and_bytes_interop_with_kombu(value: str | bytes) -> None:
    kombu_msg = kombu_dumps(value)
    ours = ser.dumps(value)
    # same content type and encoding both ways
    assert kombu_msg[:2] == ours[:2]
    ctype, enc, body = kombu_msg
    assert ser.loads(body, ctype, enc, accept=ser.DEFAULT_ACCEPT) == value
    # kombu hands empty bodies back undecoded, as b""
    ctype, enc, body = ours
    assert kser.loads(body, ctype, enc, accept={ctype}) == (value or b"")


def test_kombu_raw_str_reads_as_text() -> None:
    ctype, enc, body = kombu_dumps("hello", "raw")
    assert (ctype, enc) == ("application/data", "utf-8")
    assert ser.loads(body, ctype, enc, accept=ser.DEFAULT_ACCEPT) == "hello"


@given(json_values)
def test_json_interop_with_kombu_property(value: Any) -> None:
    ctype, enc, body = kombu_dumps(value, "json")
    assert ser.loads(body, ctype, enc) == value
    ctype, enc, body = ser.dumps(value, "json")
    assert kser.loads(body, ctype, enc, accept={ctype}) == value


@given(kombu_json_extras)
def test_json_extension_interop_with_kombu_property(value: Any) -> None:
    ctype, enc, body = kombu_dumps([value], "json")
    assert ser.loads(body, ctype, enc) == [value]
    ctype, enc, body = ser.dumps([value], "json")
    assert kser.loads(body, ctype, enc, accept={ctype}) == [value]


def test_pickle_interop_uses_kombus_content_type() -> None:
    ctype, enc, body = kombu_dumps([1], "pickle")
    assert (ctype, enc) == ser.dumps([1], "pickle")[:2]
    assert pickle.loads(body) == [1]
    with pytest.raises(ContentDisallowed):
        ser.loads(body, ctype, enc)
