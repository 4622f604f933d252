"""The compression registry: round trips, errors, bomb guard, kombu interop."""

from __future__ import annotations

import bz2
import contextlib
import functools
import gzip
import lzma
import sys
import tracemalloc
import zlib
from collections.abc import Iterator

import brotli
import kombu.compression as kcomp
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from trio_msg import compression as comp
from trio_msg.errors import CompressionError, DecodeError, EncodeError, SerializerNotInstalled

# name -> (content type kombu uses, every alias kombu knows it by)
KOMBU_METHODS = {
    "zlib": ("application/x-gzip", ["gzip", "zlib"]),
    "bzip2": ("application/x-bz2", ["bzip2", "bzip"]),
    "lzma": ("application/x-lzma", ["lzma", "xz"]),
    "zstd": ("application/zstd", ["zstd", "zstandard"]),
    "brotli": ("application/x-brotli", ["brotli"]),
}
METHODS = sorted(KOMBU_METHODS)
CONTENT_TYPES = sorted(ct for ct, _ in KOMBU_METHODS.values())


def test_header_name() -> None:
    assert comp.HEADER == "compression"


@pytest.mark.parametrize("method", METHODS)
def test_content_types_and_aliases_match_kombu(method: str) -> None:
    ctype, aliases = KOMBU_METHODS[method]
    for name in [method, *aliases, ctype]:
        assert comp.compress(b"x", name)[1] == ctype


def test_kombu_knows_our_content_types() -> None:
    # kombu registers zstd only when backports.zstd / compression.zstd is
    # importable, so it is checked against kombu's source above instead.
    for alias, ctype in kcomp._aliases.items():
        assert comp.registry.get(alias).content_type == ctype


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@given(body=st.binary(max_size=4096))
def test_roundtrip(method: str, body: bytes) -> None:
    data, ctype = comp.compress(body, method)
    assert ctype == KOMBU_METHODS[method][0]
    assert comp.decompress(data, ctype) == body
    # max_size is inclusive
    assert comp.decompress(data, ctype, max_size=len(body)) == body
    if body:
        with pytest.raises(CompressionError, match="max_size"):
            comp.decompress(data, ctype, max_size=len(body) - 1)


@pytest.mark.parametrize("method", METHODS)
def test_roundtrip_large_compressible(method: str) -> None:
    body = b"".join(b"line %d of a fairly repetitive body\n" % i for i in range(100_000))
    data, ctype = comp.compress(body, method)
    assert len(data) < len(body) // 5
    assert comp.decompress(data, ctype) == body
    assert comp.decompress(data, ctype, max_size=len(body)) == body
    with pytest.raises(CompressionError):
        comp.decompress(data, ctype, max_size=len(body) - 1)


@pytest.mark.parametrize("method", METHODS)
def test_buffers_are_accepted(method: str) -> None:
    data, ctype = comp.compress(bytearray(b"abc" * 10), method)
    assert comp.decompress(memoryview(data), ctype) == b"abc" * 10


def test_zlib_content_type_also_reads_gzip() -> None:
    body = b"hello " * 100
    assert comp.decompress(gzip.compress(body), "application/x-gzip") == body
    # ... but sends the zlib format, as kombu does
    data, _ = comp.compress(body, "gzip")
    assert zlib.decompress(data) == body


def test_concatenated_streams() -> None:
    assert comp.decompress(bz2.compress(b"ab") + bz2.compress(b"cd"), "bzip2") == b"abcd"
    assert comp.decompress(lzma.compress(b"ab") + lzma.compress(b"cd"), "xz") == b"abcd"
    zc = zstandard.ZstdCompressor()
    assert comp.decompress(zc.compress(b"ab") + zc.compress(b"cd"), "zstd") == b"abcd"
    two = bz2.compress(b"a" * 1000) + bz2.compress(b"b" * 1000)
    with pytest.raises(CompressionError, match="max_size"):
        comp.decompress(two, "bzip2", max_size=1500)


def test_lzma_reads_the_legacy_format() -> None:
    assert comp.decompress(lzma.compress(b"abc", format=lzma.FORMAT_ALONE), "lzma") == b"abc"


# --- errors ----------------------------------------------------------------------------------


def test_unknown_method() -> None:
    with pytest.raises(SerializerNotInstalled, match="nosuch"):
        comp.compress(b"abc", "nosuch")
    with pytest.raises(SerializerNotInstalled, match="application/x-nosuch"):
        comp.decompress(b"abc", "application/x-nosuch")


@pytest.mark.parametrize("ctype", CONTENT_TYPES)
@pytest.mark.parametrize(
    "body", [b"", b"garbage", b"\x00" * 64, bytes(range(256))], ids=["empty", "text", "nul", "all"]
)
def test_garbage_is_a_compression_error(ctype: str, body: bytes) -> None:
    with pytest.raises(CompressionError):
        comp.decompress(body, ctype)


def test_compression_error_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        comp.decompress(b"garbage", "zlib")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("max_size", [None, 1 << 20])
def test_truncated_is_a_compression_error(method: str, max_size: int | None) -> None:
    body = bytes(range(256)) * 400
    data, ctype = comp.compress(body, method)
    for cut in (1, 4, len(data) // 2):
        with pytest.raises(CompressionError):
            comp.decompress(data[:-cut], ctype, max_size=max_size)


@pytest.mark.parametrize("method", METHODS)
def test_trailing_garbage_is_a_compression_error(method: str) -> None:
    data, ctype = comp.compress(b"payload" * 10, method)
    with pytest.raises(CompressionError):
        comp.decompress(data + b"\x01trailing garbage", ctype)


@pytest.mark.parametrize("ctype", CONTENT_TYPES)
@given(body=st.binary(max_size=512))
def test_arbitrary_input_decompresses_or_raises_compression_error(ctype: str, body: bytes) -> None:
    try:
        out = comp.decompress(body, ctype, max_size=1 << 16)
    except CompressionError:
        return
    assert len(out) <= 1 << 16


def test_negative_max_size() -> None:
    with pytest.raises(ValueError, match="max_size"):
        comp.decompress(zlib.compress(b"x"), "zlib", max_size=-1)


def test_compress_failure_is_an_encode_error() -> None:
    reg = comp.CompressionRegistry()

    def broken(body: bytes) -> bytes:
        raise RuntimeError("boom")

    reg.register("broken", broken, lambda b, m: b, "application/x-broken")
    with pytest.raises(EncodeError, match="boom"):
        reg.compress(b"x", "broken")


@pytest.mark.parametrize(
    ("method", "module", "extra"),
    [("zstd", "zstandard", "trio_msg[zstd]"), ("brotli", "brotli", "trio_msg[brotli]")],
)
def test_missing_optional_dependency(
    monkeypatch: pytest.MonkeyPatch, method: str, module: str, extra: str
) -> None:
    data, ctype = comp.compress(b"abc", method)
    monkeypatch.setitem(sys.modules, module, None)  # makes "import <module>" fail
    with pytest.raises(SerializerNotInstalled, match=extra.replace("[", r"\[")):
        comp.compress(b"abc", method)
    with pytest.raises(SerializerNotInstalled, match=extra.replace("[", r"\[")):
        comp.decompress(data, ctype)


# --- decompression bombs ---------------------------------------------------------------------

BOMB_SIZE = 32 << 20  # 32 MiB of zeros
LIMIT = 1 << 20


@functools.cache
def bomb(method: str) -> tuple[bytes, str]:
    return comp.compress(bytes(BOMB_SIZE), method)


@pytest.mark.parametrize("method", METHODS)
def test_decompression_bomb_is_refused_without_materialising_it(method: str) -> None:
    data, ctype = bomb(method)
    assert len(data) < 64 * 1024  # it really is a bomb
    tracemalloc.start()
    try:
        with pytest.raises(CompressionError, match="max_size"):
            comp.decompress(data, ctype, max_size=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Decompressing it all would need at least BOMB_SIZE.  (lzma's own
    # 8 MiB dictionary is part of the peak, so the bound is not 2 * LIMIT.)
    assert peak < BOMB_SIZE // 2


@pytest.mark.parametrize("method", METHODS)
def test_bomb_decompresses_without_a_limit(method: str) -> None:
    data, ctype = bomb(method)
    assert comp.decompress(data, ctype) == bytes(BOMB_SIZE)
    assert comp.decompress(data, ctype, max_size=BOMB_SIZE) == bytes(BOMB_SIZE)


def test_custom_decompressor_ignoring_max_size_is_still_checked() -> None:
    reg = comp.CompressionRegistry()
    reg.register("double", lambda b: b, lambda b, max_size: b * 2, "application/x-double")
    assert reg.decompress(b"ab", "double", max_size=4) == b"abab"
    with pytest.raises(CompressionError, match="max_size"):
        reg.decompress(b"ab", "double", max_size=3)


def test_old_brotli_api_path() -> None:
    # brotli < 1.2 has no output limit: the input is fed in slices instead.
    body = bytes(range(256)) * 100
    data = brotli.compress(body)
    assert comp._brotli_decompress_sliced(brotli, data, None) == body
    assert comp._brotli_decompress_sliced(brotli, data, len(body)) == body
    with pytest.raises(CompressionError, match="max_size"):
        comp._brotli_decompress_sliced(brotli, data, len(body) - 1)
    with pytest.raises(CompressionError, match="truncated"):
        comp._brotli_decompress_sliced(brotli, data[:-3], None)
    bomb_data, _ = bomb("brotli")
    with pytest.raises(CompressionError, match="max_size"):
        comp._brotli_decompress_sliced(brotli, bomb_data, LIMIT)


# --- registry API ----------------------------------------------------------------------------


def test_register_and_unregister() -> None:
    reg = comp.CompressionRegistry()
    comp.install_builtins(reg)
    reg.register(
        "rev", lambda b: b[::-1], lambda b, m: b[::-1], "application/x-rev", aliases=["reverse"]
    )
    assert reg.compress(b"abc", "reverse") == (b"cba", "application/x-rev")
    assert reg.decompress(b"cba", "application/x-rev") == b"abc"
    assert reg.decompress(b"cba", "rev") == b"abc"
    assert "rev" in reg.names()
    reg.unregister("reverse")
    assert "rev" not in reg.names()
    for name in ("rev", "reverse", "application/x-rev"):
        with pytest.raises(SerializerNotInstalled):
            reg.get(name)
    # the default registry was never touched
    with pytest.raises(SerializerNotInstalled):
        comp.compress(b"abc", "rev")


def test_module_level_register_unregister() -> None:
    comp.register("ident", lambda b: b, lambda b, m: b, "application/x-ident")
    try:
        assert comp.compress(b"abc", "ident") == (b"abc", "application/x-ident")
        assert comp.decompress(b"abc", "application/x-ident") == b"abc"
    finally:
        comp.unregister("ident")
    with pytest.raises(SerializerNotInstalled):
        comp.compress(b"abc", "ident")


def test_reregistering_a_content_type_replaces_it() -> None:
    reg = comp.CompressionRegistry()
    reg.register("a", lambda b: b"a", lambda b, m: b"a", "application/x-same", aliases=["old"])
    reg.register("b", lambda b: b"b", lambda b, m: b"b", "application/x-same")
    assert reg.names() == ["b"]
    assert reg.decompress(b"", "application/x-same") == b"b"
    with pytest.raises(SerializerNotInstalled):
        reg.get("old")


# --- interop with kombu ----------------------------------------------------------------------


@contextlib.contextmanager
def kombu_zstd() -> Iterator[None]:
    """Make kombu's zstd method available if kombu did not register it.

    kombu 5.6+ registers ``application/zstd`` (aliases zstd, zstandard) with
    ``backports.zstd`` / ``compression.zstd``, which is not installed here;
    stand in with the zstandard package's one-shot functions, which produce
    and read the same standard zstd frames.
    """
    with pytest.MonkeyPatch.context() as mp:
        if "application/zstd" not in kcomp._encoders:
            mp.setitem(kcomp._encoders, "application/zstd", zstandard.compress)
            mp.setitem(kcomp._decoders, "application/zstd", zstandard.decompress)
            mp.setitem(kcomp._aliases, "zstd", "application/zstd")
            mp.setitem(kcomp._aliases, "zstandard", "application/zstd")
        yield


INTEROP_BODIES = [b"", b"x", b"hello world " * 500, bytes(range(256)) * 64]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("body", INTEROP_BODIES, ids=["empty", "one", "text", "binary"])
def test_kombu_to_trio_msg(method: str, body: bytes) -> None:
    for alias in KOMBU_METHODS[method][1]:
        with kombu_zstd():
            data, ctype = kcomp.compress(body, alias)
        assert ctype == KOMBU_METHODS[method][0]
        assert comp.decompress(data, ctype) == body
        assert comp.decompress(data, ctype, max_size=len(body)) == body


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("body", INTEROP_BODIES, ids=["empty", "one", "text", "binary"])
def test_trio_msg_to_kombu(method: str, body: bytes) -> None:
    data, ctype = comp.compress(body, method)
    with kombu_zstd():
        assert kcomp.decompress(data, ctype) == body


@pytest.mark.parametrize("method", METHODS)
@given(body=st.binary(max_size=2048))
def test_kombu_interop_property(method: str, body: bytes) -> None:
    with kombu_zstd():
        data, ctype = kcomp.compress(body, method)
        assert comp.decompress(data, ctype) == body
        data, ctype = comp.compress(body, method)
        assert kcomp.decompress(data, ctype) == body
