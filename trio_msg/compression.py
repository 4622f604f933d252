"""Message body compression: a registry of compression methods.

A compressed message carries the compression method's content type in its
``compression`` header (:data:`HEADER`, the header kombu uses), and its body
is the compressed serialized body.  A method is known by its *name*, any
number of *aliases*, and its *content type*; all three can be used to pick
it.  The built-ins use kombu's content types and aliases, so kombu and
trio_msg decompress each other's messages:

* ``zlib`` (aliases ``gzip``): ``application/x-gzip``.  Despite the content
  type, kombu sends the zlib format (``zlib.compress``); trio_msg sends the
  same and reads both the zlib and the gzip formats.
* ``bzip2`` (alias ``bzip``, ``bz2``): ``application/x-bz2``.
* ``lzma`` (alias ``xz``): ``application/x-lzma``, in the ``.xz`` container
  (``lzma.compress``'s default; legacy ``.lzma`` streams are read too).
* ``zstd`` (alias ``zstandard``): ``application/zstd``, through the
  ``zstandard`` package (optional extra ``trio_msg[zstd]``).
* ``brotli``: ``application/x-brotli``, through the ``brotli`` package
  (optional extra ``trio_msg[brotli]``).

A method whose optional package is missing stays registered, but using it
raises :class:`~trio_msg.errors.SerializerNotInstalled` naming the extra to
install; so does an unknown method.  Any failure to decompress (corrupt,
truncated or trailing data) is a :class:`~trio_msg.errors.CompressionError`.

Decompression bombs: :func:`decompress` takes ``max_size``, the largest
decompressed body allowed.  The built-in methods decompress incrementally
and stop as soon as the output passes ``max_size``, so a small body that
would expand to gigabytes is refused after producing about ``max_size``
bytes.  (zstd and older brotli releases cannot bound the output of one
step, so they are fed their input in slices small enough that one step
cannot produce much more than ``max_size``.)

This module does no IO and imports neither trio nor anyio.  The stdlib
codecs (``zlib``, ``bz2``, ``lzma``) are imported the first time a message
uses them, not with this module: most programs never compress, and those
modules and the C libraries behind them cost about 0.4 MiB of memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from trio_msg import _content
from trio_msg.errors import CompressionError, EncodeError, SerializerNotInstalled

__all__ = [
    "HEADER",
    "CompressionRegistry",
    "Compressor",
    "Decompressor",
    "Method",
    "compress",
    "decompress",
    "install_builtins",
    "register",
    "registry",
    "unregister",
]

#: The message header that names the compression method's content type.
HEADER = _content.COMPRESSION_HEADER

#: What bodies may be given as: bytes or a bytes-like buffer.
Buffer = bytes | bytearray | memoryview

#: Compresses a body.
Compressor = Callable[[bytes], bytes]


class Decompressor(Protocol):
    """Decompresses a body.

    Must raise :class:`~trio_msg.errors.CompressionError` (or any exception,
    which the registry turns into one) when the output would exceed
    *max_size* bytes, preferably before producing much more than that.
    ``None`` means no limit.  The registry also checks the size of what is
    returned, so a decompressor that ignores *max_size* is still bounded in
    its result, if not in its memory use.
    """

    def __call__(self, body: bytes, max_size: int | None, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Method:
    """One registered compression method."""

    name: str
    content_type: str
    compress: Compressor
    decompress: Decompressor
    aliases: tuple[str, ...] = ()


def _too_large(max_size: int) -> CompressionError:
    return CompressionError(f"decompressed body exceeds max_size ({max_size} bytes)")


class CompressionRegistry:
    """The compression methods known by name, alias and content type.

    A new registry is empty; the module-level :data:`registry` has the
    built-ins installed and is what the module-level functions use.
    """

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}  # by content type
        self._lookup: dict[str, str] = {}  # name, alias or content type -> content type

    def register(
        self,
        name: str,
        compress: Compressor,
        decompress: Decompressor,
        content_type: str,
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a compression method, replacing any with the same content type.

        *compress* takes the body and returns it compressed; *decompress*
        takes a compressed body and ``max_size`` (see :class:`Decompressor`).
        *name*, each of *aliases* and *content_type* can then be used to
        pick the method.
        """
        ctype = content_type.strip().lower()
        if self._methods.get(ctype) is not None:
            self.unregister(ctype)
        method = Method(name, ctype, compress, decompress, tuple(aliases))
        self._methods[ctype] = method
        for key in (name, *method.aliases, ctype):
            self._lookup[key.strip().lower()] = ctype

    def unregister(self, name: str) -> None:
        """Remove the method known as *name* (a name, alias or content type)."""
        method = self.get(name)
        del self._methods[method.content_type]
        for key, ctype in list(self._lookup.items()):
            if ctype == method.content_type:
                del self._lookup[key]

    def get(self, name: str) -> Method:
        """Return the method known as *name* (a name, alias or content type).

        Raises :class:`~trio_msg.errors.SerializerNotInstalled` if there is none.
        """
        ctype = self._lookup.get(name.strip().lower())
        if ctype is None:
            known = ", ".join(sorted(m.name for m in self._methods.values())) or "none"
            raise SerializerNotInstalled(
                f"no compression method registered as {name!r} (registered: {known})"
            )
        return self._methods[ctype]

    def names(self) -> list[str]:
        """Return the names of the registered methods."""
        return [m.name for m in self._methods.values()]

    def compress(self, body: Buffer, method: str) -> tuple[bytes, str]:
        """Compress *body* with *method* (a name, alias or content type).

        Returns the compressed body and the content type to put in the
        :data:`HEADER` message header.  Raises
        :class:`~trio_msg.errors.SerializerNotInstalled` for an unknown
        method or one whose optional package is missing, and
        :class:`~trio_msg.errors.EncodeError` if compression fails.
        """
        m = self.get(method)
        try:
            out = m.compress(bytes(body))
        except SerializerNotInstalled:
            raise
        except Exception as exc:
            raise EncodeError(f"cannot compress body with {m.name}: {exc}") from exc
        return out, m.content_type

    def decompress(self, body: Buffer, content_type: str, max_size: int | None = None) -> bytes:
        """Decompress *body*, compressed with the method *content_type*.

        *content_type* is the value of the :data:`HEADER` header (a name or
        alias works too).  If *max_size* is given, a body that decompresses
        to more than *max_size* bytes raises
        :class:`~trio_msg.errors.CompressionError`, without decompressing
        much more than that.  Corrupt input raises
        :class:`~trio_msg.errors.CompressionError` (chained); an unknown
        method, or one whose package is missing,
        :class:`~trio_msg.errors.SerializerNotInstalled`.
        """
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, not {max_size}")
        m = self.get(content_type)
        try:
            out = m.decompress(bytes(body), max_size)
        except (CompressionError, SerializerNotInstalled):
            raise
        except Exception as exc:
            raise CompressionError(f"cannot decompress {m.content_type} body: {exc}") from exc
        if max_size is not None and len(out) > max_size:
            raise _too_large(max_size)
        return out


# --- zlib -------------------------------------------------------------------------------------


def _zlib_compress(body: bytes) -> bytes:
    import zlib

    return zlib.compress(body)


def _zlib_decompress(body: bytes, max_size: int | None) -> bytes:
    import zlib

    # window bits that accept both the zlib and the gzip container
    d = zlib.decompressobj(zlib.MAX_WBITS | 32)
    # max_length 0 means "no limit"; max_size + 1 lets us tell "exactly
    # max_size" from "more than max_size" without producing any more.
    out = d.decompress(body, 0 if max_size is None else max_size + 1)
    if max_size is not None and len(out) > max_size:
        raise _too_large(max_size)
    if not d.eof:
        raise CompressionError("truncated zlib stream")
    if d.unused_data:
        raise CompressionError("trailing data after the zlib stream")
    return out


# --- bz2 and lzma: the same incremental decompressor API ----------------------------------------


class _Incremental(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


def _decompress_streams(
    new: Callable[[], _Incremental], body: bytes, max_size: int | None, what: str
) -> bytes:
    """Decompress one or more concatenated streams, stopping past *max_size*."""
    parts: list[bytes] = []
    total = 0
    data = body
    while True:
        d = new()
        while True:
            room = -1 if max_size is None else max_size - total + 1
            chunk = d.decompress(data, room)
            data = b""
            total += len(chunk)
            if max_size is not None and total > max_size:
                raise _too_large(max_size)
            parts.append(chunk)
            if d.eof:
                break
            if d.needs_input:
                raise CompressionError(f"truncated {what} stream")
        data = d.unused_data
        if not data:
            return b"".join(parts)


def _bz2_compress(body: bytes) -> bytes:
    import bz2

    return bz2.compress(body)


def _bz2_decompress(body: bytes, max_size: int | None) -> bytes:
    import bz2

    return _decompress_streams(bz2.BZ2Decompressor, body, max_size, "bzip2")


def _lzma_compress(body: bytes) -> bytes:
    import lzma

    return lzma.compress(body)


def _lzma_decompress(body: bytes, max_size: int | None) -> bytes:
    import lzma

    return _decompress_streams(
        lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO), body, max_size, "lzma"
    )


# --- optional: zstd and brotli ------------------------------------------------------------------


def _missing(method: str, package: str, extra: str) -> SerializerNotInstalled:
    return SerializerNotInstalled(
        f"the {method} compression method needs the {package!r} package: "
        f"pip install 'trio_msg[{extra}]'"
    )


def _import_zstandard() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise _missing("zstd", "zstandard", "zstd") from exc
    return zstandard


def _import_brotli() -> Any:
    try:
        import brotli
    except ImportError as exc:
        raise _missing("brotli", "brotli", "brotli") from exc
    return brotli


#: zstd's worst case: one 4-byte block (an RLE block) expands to 128 KiB.
_ZSTD_MAX_RATIO = 128 * 1024 // 4


def _input_slice(max_size: int, max_ratio: int) -> int:
    """How much input to feed per step so one step yields about max_size at most."""
    return max(64, max_size // max_ratio)


def _zstd_compress(body: bytes) -> bytes:
    out: bytes = _import_zstandard().ZstdCompressor().compress(body)
    return out


def _zstd_decompress(body: bytes, max_size: int | None) -> bytes:
    zstandard = _import_zstandard()
    dctx = zstandard.ZstdDecompressor()
    # zstandard's streaming decompressors either cannot bound one step's
    # output (decompressobj) or cannot tell a truncated frame from a
    # complete one (stream_reader, read_to_iter).  So: decompressobj, fed
    # slices of input small enough that one step cannot produce much more
    # than max_size.
    step = len(body) if max_size is None else _input_slice(max_size, _ZSTD_MAX_RATIO)
    parts: list[bytes] = []
    total = 0
    data = body
    while True:  # one zstd frame per iteration
        d = dctx.decompressobj()
        pos = 0
        while not d.eof:
            if pos >= len(data):
                raise CompressionError("truncated zstd frame")
            chunk: bytes = d.decompress(data[pos : pos + step])
            pos += step
            total += len(chunk)
            if max_size is not None and total > max_size:
                raise _too_large(max_size)
            parts.append(chunk)
        data = d.unused_data + data[pos:]
        if not data:
            return b"".join(parts)


def _brotli_compress(body: bytes) -> bytes:
    out: bytes = _import_brotli().compress(body)
    return out


#: A generous bound on brotli's expansion per input byte (a meta-block can
#: copy up to 16 MiB from a few bits).
_BROTLI_MAX_RATIO = 16 * 1024 * 1024


def _brotli_decompress(body: bytes, max_size: int | None) -> bytes:
    brotli = _import_brotli()
    d = brotli.Decompressor()
    if not hasattr(d, "can_accept_more_data"):  # brotli < 1.2: no output limit
        return _brotli_decompress_sliced(brotli, body, max_size)
    if max_size is None:
        out: bytes = d.process(body)
        parts = [out]
    else:
        parts = []
        total = 0
        data = body
        while True:
            chunk: bytes = d.process(data, output_buffer_limit=max_size - total + 1)
            data = b""
            total += len(chunk)
            if total > max_size:
                raise _too_large(max_size)
            parts.append(chunk)
            if d.can_accept_more_data():
                break
    if not d.is_finished():
        raise CompressionError("truncated brotli stream")
    return b"".join(parts)


def _brotli_decompress_sliced(brotli: Any, body: bytes, max_size: int | None) -> bytes:
    """Decompress with the old brotli API, slicing the input to bound each step."""
    d = brotli.Decompressor()
    step = max(len(body), 1) if max_size is None else max(1, max_size // _BROTLI_MAX_RATIO)
    parts: list[bytes] = []
    total = 0
    for pos in range(0, len(body), step):
        chunk: bytes = d.process(body[pos : pos + step])
        total += len(chunk)
        if max_size is not None and total > max_size:
            raise _too_large(max_size)
        parts.append(chunk)
    if not d.is_finished():
        raise CompressionError("truncated brotli stream")
    return b"".join(parts)


def install_builtins(target: CompressionRegistry) -> None:
    """Register the built-in compression methods (see the module docstring) on *target*."""
    target.register("zlib", _zlib_compress, _zlib_decompress, "application/x-gzip", ("gzip",))
    target.register("bzip2", _bz2_compress, _bz2_decompress, "application/x-bz2", ("bzip", "bz2"))
    target.register("lzma", _lzma_compress, _lzma_decompress, "application/x-lzma", ("xz",))
    target.register("zstd", _zstd_compress, _zstd_decompress, "application/zstd", ("zstandard",))
    target.register("brotli", _brotli_compress, _brotli_decompress, "application/x-brotli")


#: The default registry, with the built-in methods installed.
registry = CompressionRegistry()
install_builtins(registry)


def register(
    name: str,
    compress: Compressor,
    decompress: Decompressor,
    content_type: str,
    aliases: Iterable[str] = (),
) -> None:
    """Register a compression method on the default :data:`registry`.

    See :meth:`CompressionRegistry.register`.
    """
    registry.register(name, compress, decompress, content_type, aliases)


def unregister(name: str) -> None:
    """Remove a compression method from the default :data:`registry`."""
    registry.unregister(name)


def compress(body: Buffer, method: str) -> tuple[bytes, str]:
    """Compress *body* with *method*; return ``(compressed_body, content_type)``.

    Put the content type in the :data:`HEADER` header.  See
    :meth:`CompressionRegistry.compress`.
    """
    return registry.compress(body, method)


def decompress(body: Buffer, content_type: str, max_size: int | None = None) -> bytes:
    """Decompress *body* compressed with *content_type* (the :data:`HEADER` value).

    See :meth:`CompressionRegistry.decompress`.
    """
    return registry.decompress(body, content_type, max_size)
