"""Message body serializers: turn Python values into AMQP bodies and back.

A serializer has a *name* (``"json"``), the *content type* it stamps on the
messages it encodes (``"application/json"``) and the *content encoding* of the
bytes it produces (``"utf-8"``, or ``"binary"`` for non-text formats).  The
producer picks a serializer by name; the consumer picks the decoder by the
message's ``content_type`` and refuses any content type that is not in its
*accept* set (:class:`~trio_msg.errors.ContentDisallowed`), before a single
byte is decoded.

Built-in serializers, with kombu's content types and encodings so that kombu
(and Celery) and trio_msg read each other's messages:

* ``json``: ``application/json``, ``utf-8``; stdlib; the default.
* ``text``: ``text/plain``, ``utf-8``; ``str`` only.
* ``raw``: ``application/data``, ``binary``; bytes-like only.
* ``msgpack``: ``application/x-msgpack``, ``binary``; needs ``trio_msg[msgpack]``.
* ``yaml``: ``application/x-yaml``, ``utf-8``; needs ``trio_msg[yaml]``.
* ``pickle``: ``application/x-python-serialize``, ``binary``; stdlib; unsafe.

Decisions worth knowing:

* **kombu's JSON extensions are spoken both ways.**  kombu 5.x's JSON encoder
  (``kombu/utils/json.py``) emits ``datetime``, ``date``, ``time``,
  ``Decimal``, ``UUID`` and ``bytes`` by default, as an envelope object
  ``{"__type__": <marker>, "__value__": <value>}`` (markers ``datetime``,
  ``date``, ``time``, ``decimal``, ``uuid`` with ``{"hex": ...}``, and
  ``bytes`` for UTF-8-decodable bytes or ``base64`` for the rest).  Celery
  task arguments travel this way, so trio_msg decodes those envelopes back
  into the Python values, and encodes the same types the same way, so a value
  survives a trip through either library.  One difference from kombu: an
  envelope with a marker we do not know is left as the plain dict it is
  (kombu raises), because it may just be user data that happens to have
  those two keys.  kombu's ``__json__`` hook is not supported.
* JSON is written compactly (no spaces, non-ASCII characters kept as UTF-8
  rather than ``\\uXXXX`` escapes); any JSON decoder reads it.  ``NaN`` and
  ``Infinity`` are allowed, as in kombu and the stdlib.
* ``pickle`` is registered *unsafe*: it is never decoded unless the caller's
  accept set names it explicitly, not even when ``accept`` is ``None``
  (which otherwise means "no accept check").  It is not in
  :data:`DEFAULT_ACCEPT`.  Unpickling runs arbitrary code; only accept it
  from publishers you trust completely.
* ``msgpack`` and ``yaml`` are optional: they are always registered (so their
  content types are known and can be accepted), but encoding or decoding
  them without the library installed raises
  :class:`~trio_msg.errors.SerializerNotInstalled` naming the extra to
  install.  YAML uses ``safe_dump`` / ``safe_load`` only.
* A message without a content type is treated as ``application/data`` (for
  the accept check) and its body returned as bytes, whatever its content
  encoding.  A content type with no decoder (an unknown one
  that the accept set lets through, ``text/plain``, ``application/data``) is
  returned as bytes when its content encoding is ``binary`` (or
  ``ascii-8bit``), and otherwise decoded to ``str`` with that encoding
  (``utf-8`` when none is given) -- kombu's rule.  Only text encodings are
  honoured: a content encoding such as ``zlib`` or ``base64`` is a
  :class:`~trio_msg.errors.DecodeError`, never a decompression.
* Content types are compared without parameters and case-insensitively, so
  ``application/json; charset=utf-8`` decodes as JSON and is accepted by an
  accept set containing ``application/json``.
* An empty body is handed to the decoder like any other (kombu returns empty
  bodies undecoded): an empty ``text/plain`` body is ``""``, an empty JSON
  body is a :class:`~trio_msg.errors.DecodeError`.
* The ``raw`` serializer only takes bytes-like values and ``text`` only
  ``str``; anything else is an :class:`~trio_msg.errors.EncodeError` rather
  than a guess.

Every failure of an encoder is raised as :class:`~trio_msg.errors.EncodeError`
and every failure of a decoder as :class:`~trio_msg.errors.DecodeError`, with
the original exception chained.  This module does no IO and imports neither
trio nor anyio.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from trio_msg import _content
from trio_msg.errors import ContentDisallowed, DecodeError, EncodeError, SerializerNotInstalled

__all__ = [
    "DEFAULT_ACCEPT",
    "Codec",
    "Decoder",
    "Encoder",
    "SerializerRegistry",
    "dumps",
    "install_builtins",
    "loads",
    "prepare_accept_content",
    "register",
    "registry",
    "unregister",
]

#: Turns a Python value into a message body.
Encoder = Callable[[Any], bytes]
#: Turns a message body back into a Python value.
Decoder = Callable[[bytes], Any]

#: Content encodings whose bodies are never decoded to ``str`` (kombu's list).
BINARY_ENCODINGS = frozenset({"binary", "ascii-8bit"})


#: Content types accepted when the consumer does not say otherwise: JSON,
#: plain text and raw bytes.
DEFAULT_ACCEPT: frozenset[str] = _content.DEFAULT_ACCEPT

#: Protocol used for pickling; kombu's default, readable by every Python 3.
PICKLE_PROTOCOL = 4


def _normalize_content_type(content_type: str) -> str:
    """Return *content_type* lower-cased, without parameters (``; charset=...``)."""
    return content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Codec:
    """One registered serializer.

    ``encoder`` or ``decoder`` may be ``None``: without a decoder, bodies of
    this content type are returned as bytes or decoded to ``str`` according to
    their content encoding; without an encoder, the serializer cannot be used
    to publish.  ``unsafe`` codecs are only decoded when the accept set names
    them explicitly.
    """

    name: str
    content_type: str
    content_encoding: str
    encoder: Encoder | None
    decoder: Decoder | None
    unsafe: bool = False


class SerializerRegistry:
    """The serializers known by name and by content type.

    A new registry is empty; the module-level :data:`registry` has the
    built-ins installed and is what the module-level functions use.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, Codec] = {}
        self._by_type: dict[str, Codec] = {}
        #: Serializer used by :meth:`dumps` for values that are neither
        #: ``bytes`` nor ``str`` when no serializer is named.
        self.default_serializer = "json"

    def register(
        self,
        name: str,
        encoder: Encoder | None,
        decoder: Decoder | None,
        content_type: str,
        content_encoding: str = "utf-8",
        *,
        unsafe: bool = False,
    ) -> None:
        """Register a serializer, replacing any with the same name or content type.

        *encoder* takes a value and returns the body as bytes; *decoder* takes
        the body and returns the value; either may be ``None`` (see
        :class:`Codec`).  *content_encoding* is what the encoder produces:
        a text encoding such as ``"utf-8"``, or ``"binary"``.  An *unsafe*
        serializer is only ever decoded when the caller's accept set lists it.
        """
        if not name or "/" in name:
            raise ValueError(f"invalid serializer name {name!r}: it must be non-empty, without '/'")
        ctype = _normalize_content_type(content_type)
        if "/" not in ctype:
            raise ValueError(f"invalid content type {content_type!r}")
        for existing in (self._by_name.get(name), self._by_type.get(ctype)):
            if existing is not None:
                self._remove(existing)
        codec = Codec(name, ctype, content_encoding.lower(), encoder, decoder, unsafe)
        self._by_name[name] = codec
        self._by_type[ctype] = codec

    def unregister(self, name: str) -> None:
        """Remove the serializer called *name*.

        Raises :class:`~trio_msg.errors.SerializerNotInstalled` if there is none.
        """
        codec = self._by_name.get(name)
        if codec is None:
            raise SerializerNotInstalled(f"no serializer registered as {name!r}")
        self._remove(codec)

    def _remove(self, codec: Codec) -> None:
        if self._by_name.get(codec.name) is codec:
            del self._by_name[codec.name]
        if self._by_type.get(codec.content_type) is codec:
            del self._by_type[codec.content_type]

    def names(self) -> list[str]:
        """Return the names of the registered serializers."""
        return list(self._by_name)

    def get(self, name: str) -> Codec:
        """Return the serializer called *name*.

        Raises :class:`~trio_msg.errors.SerializerNotInstalled` if there is none.
        """
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise SerializerNotInstalled(
                f"no serializer registered as {name!r} (registered: {known})"
            ) from None

    def content_type_of(self, name: str) -> str:
        """Return the content type of the serializer called *name*."""
        return self.get(name).content_type

    def dumps(self, data: Any, serializer: str | None = None) -> tuple[str, str, bytes]:
        """Serialize *data* into ``(content_type, content_encoding, body)``.

        With *serializer* ``None``: bytes-like values are sent as they are
        (``application/data``, ``binary``), ``str`` as UTF-8
        ``text/plain``, and anything else with :attr:`default_serializer`
        (JSON).  Otherwise the named serializer is used whatever the value.

        Raises :class:`~trio_msg.errors.SerializerNotInstalled` for an unknown
        serializer (or one whose optional library is missing) and
        :class:`~trio_msg.errors.EncodeError` if the value cannot be encoded.
        """
        if serializer is None:
            if isinstance(data, bytes | bytearray | memoryview):
                serializer = "raw"
            elif isinstance(data, str):
                serializer = "text"
            else:
                serializer = self.default_serializer
        codec = self.get(serializer)
        if codec.encoder is None:
            raise SerializerNotInstalled(f"serializer {serializer!r} can only decode")
        try:
            body: object = codec.encoder(data)
        except SerializerNotInstalled:
            raise
        except Exception as exc:
            raise EncodeError(
                f"cannot serialize {type(data).__name__} with {serializer!r}: {exc}"
            ) from exc
        if isinstance(body, bytearray | memoryview):
            body = bytes(body)
        if not isinstance(body, bytes):
            raise EncodeError(
                f"serializer {serializer!r} returned {type(body).__name__}, not bytes"
            )
        return codec.content_type, codec.content_encoding, body

    def loads(
        self,
        body: bytes | bytearray | memoryview,
        content_type: str | None,
        content_encoding: str | None,
        accept: frozenset[str] | None = None,
    ) -> Any:
        """Deserialize a message *body* according to its content type.

        *accept* is a set of content types as made by
        :func:`prepare_accept_content`; a content type outside it raises
        :class:`~trio_msg.errors.ContentDisallowed` without decoding.  With
        *accept* ``None`` every content type is decoded except unsafe ones
        (pickle), which are only ever decoded when listed explicitly.

        A missing content type means ``application/data``, and the body is
        returned as bytes whatever its content encoding.  A content
        type without a decoder gives bytes if *content_encoding* is
        ``binary``, else ``str`` decoded with *content_encoding* (default
        ``utf-8``).  Any failure to decode raises
        :class:`~trio_msg.errors.DecodeError` (chained);
        :class:`~trio_msg.errors.SerializerNotInstalled` if the decoder's
        optional library is missing.
        """
        raw_type = content_type or "application/data"
        ctype = _normalize_content_type(raw_type)
        codec = self._by_type.get(ctype)
        if accept is not None:
            if ctype not in accept:
                raise ContentDisallowed(
                    f"refusing to decode content type {self._describe(raw_type, codec)}: "
                    f"it is not in the accepted content types "
                    f"({', '.join(sorted(accept)) or 'none'})"
                )
        elif codec is not None and codec.unsafe:
            raise ContentDisallowed(
                f"refusing to decode content type {self._describe(raw_type, codec)}: it is "
                f"unsafe and is only decoded when the accept list names it explicitly"
            )
        data = body if isinstance(body, bytes) else bytes(body)
        if not content_type:
            return data
        if codec is not None and codec.decoder is not None:
            try:
                return codec.decoder(data)
            except SerializerNotInstalled:
                raise
            except Exception as exc:
                raise DecodeError(
                    f"cannot decode {self._describe(raw_type, codec)} body: {exc}"
                ) from exc
        encoding = (content_encoding or "utf-8").strip().lower()
        if encoding in BINARY_ENCODINGS:
            return data
        try:
            # bytes.decode only takes text encodings: a content encoding
            # such as "zlib" or "base64" is refused, not applied.
            return data.decode(encoding)
        except (LookupError, UnicodeError, ValueError) as exc:
            raise DecodeError(
                f"cannot decode {self._describe(raw_type, codec)} body "
                f"with content encoding {encoding!r}: {exc}"
            ) from exc

    @staticmethod
    def _describe(content_type: str, codec: Codec | None) -> str:
        return f"{content_type!r} ({codec.name})" if codec is not None else repr(content_type)

    def prepare_accept_content(self, names_or_types: Iterable[str] | None) -> frozenset[str]:
        """Turn serializer names and content types into a set of content types.

        ``["json", "application/x-msgpack"]`` gives
        ``frozenset({"application/json", "application/x-msgpack"})``.  A
        string with a ``/`` is taken as a content type (and need not be
        registered); anything else must be a registered serializer name, or
        :class:`~trio_msg.errors.SerializerNotInstalled` is raised.  ``None``
        gives :data:`DEFAULT_ACCEPT`.
        """
        if names_or_types is None:
            return DEFAULT_ACCEPT
        if isinstance(names_or_types, str):
            names_or_types = [names_or_types]
        return frozenset(
            _normalize_content_type(item) if "/" in item else self.content_type_of(item)
            for item in names_or_types
        )


# --- JSON, with kombu's envelopes for non-JSON types -----------------------------------------


def _envelope(marker: str, value: Any) -> dict[str, Any]:
    return {"__type__": marker, "__value__": value}


def _json_default(obj: Any) -> Any:
    # datetime before date: a datetime is a date.
    if isinstance(obj, datetime):
        return _envelope("datetime", obj.isoformat())
    if isinstance(obj, date):
        return _envelope("date", obj.isoformat())
    if isinstance(obj, time):
        return _envelope("time", obj.isoformat())
    if isinstance(obj, Decimal):
        return _envelope("decimal", str(obj))
    if isinstance(obj, uuid.UUID):
        return _envelope("uuid", {"hex": obj.hex})
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        try:
            return _envelope("bytes", raw.decode("utf-8"))
        except UnicodeDecodeError:
            return _envelope("base64", base64.b64encode(raw).decode("ascii"))
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _decode_uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(hex=value["hex"])


_JSON_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": lambda v: datetime.fromisoformat(v).date(),
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": _decode_uuid,
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v.encode("ascii"), validate=True),
}


def _json_object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and obj.keys() == {"__type__", "__value__"}:
        decoder = _JSON_DECODERS.get(obj["__type__"]) if isinstance(obj["__type__"], str) else None
        if decoder is not None:
            return decoder(obj["__value__"])
    return obj


def _json_dumps(data: Any) -> bytes:
    text = json.dumps(data, default=_json_default, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def _json_loads(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"), object_hook=_json_object_hook)


# --- text and raw -----------------------------------------------------------------------------


def _text_dumps(data: Any) -> bytes:
    if not isinstance(data, str):
        raise TypeError(f"the text serializer takes str, not {type(data).__name__}")
    return data.encode("utf-8")


def _raw_dumps(data: Any) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"the raw serializer takes bytes, not {type(data).__name__} (use 'text' for str)"
        )
    return bytes(data)


# --- pickle -----------------------------------------------------------------------------------


# pickle is imported when first used: it is unsafe, so off by default, and
# importing it costs about 0.4 MiB of memory that most programs never use.


def _pickle_dumps(data: Any) -> bytes:
    import pickle

    return pickle.dumps(data, protocol=PICKLE_PROTOCOL)


def _pickle_loads(body: bytes) -> Any:
    import pickle

    return pickle.loads(body)


# --- optional: msgpack and yaml ---------------------------------------------------------------


def _missing(name: str, module: str, extra: str) -> SerializerNotInstalled:
    return SerializerNotInstalled(
        f"the {name} serializer needs the {module!r} package: pip install 'trio_msg[{extra}]'"
    )


def _msgpack_dumps(data: Any) -> bytes:
    try:
        import msgpack
    except ImportError as exc:
        raise _missing("msgpack", "msgpack", "msgpack") from exc
    body: bytes = msgpack.packb(data, use_bin_type=True)
    return body


def _msgpack_loads(body: bytes) -> Any:
    try:
        import msgpack
    except ImportError as exc:
        raise _missing("msgpack", "msgpack", "msgpack") from exc
    return msgpack.unpackb(body, raw=False)


def _yaml_dumps(data: Any) -> bytes:
    try:
        import yaml
    except ImportError as exc:
        raise _missing("yaml", "PyYAML", "yaml") from exc
    # allow_unicode stays off (kombu's choice too): with it on, PyYAML writes
    # characters such as U+0085 unescaped and reads them back as line breaks.
    text: str = yaml.safe_dump(data)
    return text.encode("utf-8")


def _yaml_loads(body: bytes) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise _missing("yaml", "PyYAML", "yaml") from exc
    return yaml.safe_load(body)


def install_builtins(target: SerializerRegistry) -> None:
    """Register the built-in serializers (see the module docstring) on *target*."""
    target.register("json", _json_dumps, _json_loads, "application/json", "utf-8")
    # No decoder: decoded with the message's own content encoding (kombu's rule).
    target.register("text", _text_dumps, None, "text/plain", "utf-8")
    target.register("raw", _raw_dumps, None, "application/data", "binary")
    target.register("msgpack", _msgpack_dumps, _msgpack_loads, "application/x-msgpack", "binary")
    target.register("yaml", _yaml_dumps, _yaml_loads, "application/x-yaml", "utf-8")
    target.register(
        "pickle",
        _pickle_dumps,
        _pickle_loads,
        "application/x-python-serialize",
        "binary",
        unsafe=True,
    )


#: The default registry, with the built-in serializers installed.
registry = SerializerRegistry()
install_builtins(registry)


def register(
    name: str,
    encoder: Encoder | None,
    decoder: Decoder | None,
    content_type: str,
    content_encoding: str = "utf-8",
    *,
    unsafe: bool = False,
) -> None:
    """Register a serializer on the default :data:`registry`.

    See :meth:`SerializerRegistry.register`.
    """
    registry.register(name, encoder, decoder, content_type, content_encoding, unsafe=unsafe)


def unregister(name: str) -> None:
    """Remove a serializer from the default :data:`registry`.

    See :meth:`SerializerRegistry.unregister`.
    """
    registry.unregister(name)


def dumps(data: Any, serializer: str | None = None) -> tuple[str, str, bytes]:
    """Serialize *data* with the default :data:`registry`.

    Returns ``(content_type, content_encoding, body)``; see
    :meth:`SerializerRegistry.dumps`.
    """
    return registry.dumps(data, serializer)


def loads(
    body: bytes | bytearray | memoryview,
    content_type: str | None,
    content_encoding: str | None,
    accept: frozenset[str] | None = None,
) -> Any:
    """Deserialize a message body with the default :data:`registry`.

    See :meth:`SerializerRegistry.loads`.
    """
    return registry.loads(body, content_type, content_encoding, accept)


def prepare_accept_content(names_or_types: Iterable[str] | None) -> frozenset[str]:
    """Turn serializer names and content types into an accept set.

    Uses the default :data:`registry`; see
    :meth:`SerializerRegistry.prepare_accept_content`.
    """
    return registry.prepare_accept_content(names_or_types)
