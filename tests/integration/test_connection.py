"""Connections against the real broker, on trio and asyncio: opening, failing to
open, and dying (forced close, cut, silence) with one clear exception."""

from __future__ import annotations

import math
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import sniffio
import trustme
from _broker import BROKER_HOST, BROKER_PORT, EMBEDDED, close_connection_by_name
from _proxy import TcpProxy
from anyio.streams.memory import MemoryObjectReceiveStream
from anyio.streams.tls import TLSListener

from trio_msg._protocol.events import Outcome
from trio_msg.channel import Channel
from trio_msg.connection import Connection, connect
from trio_msg.errors import (
    AccessRefused,
    AuthenticationError,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionForced,
    ConnectionLost,
    HeartbeatTimeout,
    InvalidPath,
    NotAllowed,
    TrioMsgError,
)

pytestmark = pytest.mark.anyio

SECRET = "n0t-the-Pa55word"


def _via(proxy: TcpProxy, **query: str) -> str:
    url = f"amqp://guest:guest@{proxy.host}:{proxy.port}//"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chain_text(exc: BaseException) -> str:
    """The text of an exception and everything chained to it."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts.append(f"{type(cur).__name__}: {cur} {cur!r}")
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


# ------------------------------------------------------------------- opening


async def test_connect_url_and_keyword_overrides(
    broker_url: str, unique_name: str, anyio_backend: str
) -> None:
    assert sniffio.current_async_library() == anyio_backend
    # The URL says a wrong password and heartbeat 30; the keywords win.
    url = f"amqp://guest:{SECRET}@{BROKER_HOST}:{BROKER_PORT}//?heartbeat=30&frame_max=65536"
    async with connect(url, password="guest", heartbeat=7, connection_name=unique_name) as conn:
        assert conn.is_open
        assert conn.heartbeat == 7
        assert conn.frame_max == 65536
        assert conn.channel_max == 2047
        assert conn.params.connection_name == unique_name
        assert conn.address == (BROKER_HOST, BROKER_PORT)
        assert conn.server_properties["product"] == (
            "trio_msg memory broker" if EMBEDDED else "RabbitMQ"
        )
        assert not conn.blocked
        text = repr(conn)
        assert "***" in text
        assert ":guest@" not in text
        assert SECRET not in text
        async with conn.channel() as ch:
            ok = await ch.queue_declare("", exclusive=True)
            assert ok.queue.startswith("amq.gen-")
    assert not conn.is_open


async def test_connect_defaults_from_url(broker_url: str) -> None:
    async with connect(broker_url) as conn:
        assert conn.heartbeat == 60
        assert conn.frame_max == 131072
        assert conn.params.vhost == "/"


async def test_wrong_password_is_an_authentication_error(broker_url: str) -> None:
    url = f"amqp://guest:{SECRET}@{BROKER_HOST}:{BROKER_PORT}//"
    start = anyio.current_time()
    with anyio.fail_after(5), pytest.raises(AuthenticationError) as info:
        async with connect(url):
            pytest.fail("connected with a wrong password")
    assert anyio.current_time() - start < 3
    exc = info.value
    assert isinstance(exc, AccessRefused)
    assert isinstance(exc, ConnectionClosed)
    assert exc.reply_code == 403
    assert SECRET not in _chain_text(exc)


async def test_unknown_vhost(broker_url: str, unique_name: str) -> None:
    with anyio.fail_after(5), pytest.raises(ConnectionClosed) as info:
        async with connect(broker_url, vhost=unique_name):
            pytest.fail("opened a vhost that does not exist")
    assert isinstance(info.value, NotAllowed | InvalidPath), repr(info.value)
    assert info.value.reply_code in (530, 402)
    assert info.value.by_peer


async def test_nothing_listening_is_connection_failed() -> None:
    port = _free_port()
    with anyio.fail_after(5), pytest.raises(ConnectionFailed) as info:
        async with connect(f"amqp://guest:{SECRET}@127.0.0.1:{port}//"):
            pytest.fail("connected to nothing")
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text
    assert SECRET not in _chain_text(info.value)
    assert isinstance(info.value, OSError)  # ConnectionFailed is an OSError too


async def test_failover_to_the_next_host(broker_url: str) -> None:
    port = _free_port()
    async with connect(
        f"amqp://guest:guest@127.0.0.1:{port},{BROKER_HOST}:{BROKER_PORT}//"
    ) as conn:
        assert conn.address == (BROKER_HOST, BROKER_PORT)
        assert conn.is_open


async def test_connection_timeout_when_the_broker_is_silent(proxy: TcpProxy) -> None:
    proxy.stall()
    start = anyio.current_time()
    with anyio.fail_after(5), pytest.raises(ConnectionFailed) as info:
        async with connect(_via(proxy), connection_timeout=0.5):
            pytest.fail("connected through a stalled proxy")
    elapsed = anyio.current_time() - start
    assert 0.4 < elapsed < 2, elapsed
    assert "timed out" in str(info.value)
    assert proxy.errors == []


async def test_hang_up_before_connection_start(proxy: TcpProxy) -> None:
    """The peer accepts and hangs up at once, before Connection.Start."""
    proxy.refuse_new()
    with anyio.fail_after(5), pytest.raises((ConnectionFailed, ConnectionLost)):
        async with connect(_via(proxy), connection_timeout=3):
            pytest.fail("connected through a refusing proxy")


async def test_hang_up_during_the_tls_handshake(proxy: TcpProxy) -> None:
    """An EOF in the middle of the TLS handshake is a failed connect, not a
    bare anyio.EndOfStream."""
    proxy.refuse_new()
    with anyio.fail_after(5), pytest.raises(ConnectionFailed) as info:
        async with connect(
            f"amqps://guest:guest@{proxy.host}:{proxy.port}//", connection_timeout=3
        ):
            pytest.fail("connected through a refusing proxy")
    assert f"{proxy.host}:{proxy.port}" in str(info.value)


async def test_tls_to_a_plain_port(broker_url: str) -> None:
    with anyio.fail_after(5), pytest.raises(ConnectionFailed):
        async with connect(f"amqps://guest:guest@{BROKER_HOST}:{BROKER_PORT}//", verify=False):
            pytest.fail("TLS handshake with a plain AMQP port")


# ----------------------------------------------------------------------- TLS


@asynccontextmanager
async def _tls_server(ca: trustme.CA) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 with a certificate for "localhost" signed by
    ``ca``.  It never speaks AMQP: the handshake is all that matters."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = multi.extra(anyio.abc.SocketAttribute.local_port)
    listener = TLSListener(multi, server_ctx, standard_compatible=False)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            with anyio.move_on_after(5):
                try:
                    while True:  # read (and ignore) until the client goes
                        await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass

    body_exc: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield port
        except BaseException as exc:  # re-raised unwrapped, below
            body_exc = exc
        finally:
            tg.cancel_scope.cancel()
    if body_exc is not None:
        raise body_exc


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_untrusted_certificate(tls_ca: trustme.CA, tmp_path: Path) -> None:
    other = trustme.CA()
    cafile = tmp_path / "other-ca.pem"
    other.cert_pem.write_to_path(str(cafile))
    async with _tls_server(tls_ca) as port:
        with anyio.fail_after(5), pytest.raises(ConnectionFailed) as info:
            async with connect(
                f"amqps://guest:{SECRET}@127.0.0.1:{port}//",
                cafile=str(cafile),
                server_hostname="localhost",
            ):
                pytest.fail("TLS accepted a certificate from an unknown CA")
    text = str(info.value)
    assert "certificate" in text.lower(), text
    assert SECRET not in _chain_text(info.value)


async def test_tls_wrong_hostname(tls_ca: trustme.CA, tmp_path: Path) -> None:
    cafile = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(cafile))
    async with _tls_server(tls_ca) as port:
        with anyio.fail_after(5), pytest.raises(ConnectionFailed) as info:
            async with connect(
                f"amqps://guest:guest@127.0.0.1:{port}//",
                cafile=str(cafile),
                server_hostname="wrong.example",
            ):
                pytest.fail("TLS accepted a certificate for another host name")
    text = str(info.value).lower()
    assert "certificate" in text or "hostname" in text, text
    assert "wrong.example" in text


async def test_tls_handshake_succeeds_with_the_right_ca_then_times_out(
    tls_ca: trustme.CA, tmp_path: Path
) -> None:
    """Control for the two tests above: with the right CA and name the TLS
    handshake passes, and what fails is the (absent) AMQP handshake."""
    cafile = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(cafile))
    async with _tls_server(tls_ca) as port:
        with anyio.fail_after(5), pytest.raises(ConnectionFailed) as info:
            async with connect(
                f"amqps://guest:guest@127.0.0.1:{port}//",
                cafile=str(cafile),
                server_hostname="localhost",
                connection_timeout=0.5,
            ):
                pytest.fail("the TLS server does not speak AMQP")
    assert "timed out" in str(info.value)


# -------------------------------------------------------------------- dying


class _Watch:
    """Run waiters on a connection and record how each ended."""

    def __init__(self) -> None:
        self.outcomes: dict[str, object] = {}
        self.started = 0

    async def run(self, name: str, fn: Callable[[], Awaitable[Any]]) -> None:
        self.started += 1
        try:
            self.outcomes[name] = await fn()
        except Exception as exc:  # recorded, checked by the test
            self.outcomes[name] = exc


async def _drain(receive: MemoryObjectReceiveStream[Any]) -> str:
    async for _ in receive:
        pass
    return "closed"


async def _setup(
    watch: _Watch, conn: Connection
) -> tuple[Channel, Channel, MemoryObjectReceiveStream[Any], str]:
    """A channel with a consumer (its sink returned) and a channel in confirm
    mode, for waiters to wait on once the test has broken the link."""
    ch = await conn.open_channel()
    q = (await ch.queue_declare("", exclusive=True)).queue
    send, receive = anyio.create_memory_object_stream[Any](10)
    cancelled: list[TrioMsgError] = []
    await ch.basic_consume(q, send, on_cancel=cancelled.append)
    pub_ch = await conn.open_channel()
    await pub_ch.confirm_select()
    watch.outcomes["on_cancel"] = cancelled
    return ch, pub_ch, receive, q


async def test_forced_close_raises_connection_forced(proxy: TcpProxy, unique_name: str) -> None:
    watch = _Watch()
    with anyio.fail_after(15), pytest.raises(ConnectionForced) as info:
        async with (
            connect(_via(proxy), connection_name=unique_name, revive=False) as conn,
            anyio.create_task_group() as tg,
        ):
            ch, pub_ch, receive, q = await _setup(watch, conn)
            proxy.stall()
            result = await pub_ch.basic_publish(b"x", "", q)
            assert result is not None
            tg.start_soon(watch.run, "declare", lambda: ch.queue_declare(q, passive=True))
            tg.start_soon(watch.run, "open_channel", conn.open_channel)
            tg.start_soon(watch.run, "sink", lambda: _drain(receive))
            tg.start_soon(watch.run, "confirm", result.wait)
            await anyio.sleep(0.1)
            await anyio.to_thread.run_sync(
                close_connection_by_name, unique_name, "trio_msg forced-close test"
            )
            proxy.resume()
            await anyio.sleep_forever()  # the loss cancels the body
    assert not conn.is_open
    exc = info.value
    assert type(exc) is ConnectionForced
    assert exc.reply_code == 320
    assert exc.by_peer
    assert "trio_msg forced-close test" in exc.reply_text
    out = watch.outcomes
    assert isinstance(out["declare"], ConnectionForced)
    assert isinstance(out["open_channel"], ConnectionForced)
    assert out["sink"] == "closed"
    assert out["confirm"] is Outcome.UNKNOWN
    notified = out["on_cancel"]
    assert isinstance(notified, list) and len(notified) == 1
    assert isinstance(notified[0], ConnectionForced)


async def test_forced_close_error_raised_in_the_body_is_not_grouped(
    broker_url: str, unique_name: str
) -> None:
    with anyio.fail_after(10), pytest.raises(ConnectionForced) as info:
        async with connect(broker_url, connection_name=unique_name, revive=False) as conn:
            ch = await conn.open_channel()
            await anyio.to_thread.run_sync(close_connection_by_name, unique_name)
            # (shielded from the cancellation the loss brings, to raise the
            # loss from inside the body)
            with anyio.CancelScope(shield=True), anyio.fail_after(5):
                while conn.is_open:
                    await anyio.sleep(0.02)
            await ch.queue_declare("", exclusive=True)  # raises inside the body
    assert type(info.value) is ConnectionForced
    # a channel of a dead connection says so too
    with pytest.raises(ConnectionForced):
        await ch.queue_declare("", exclusive=True)
    with pytest.raises(ConnectionForced):
        await conn.open_channel()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_proxy_cut_raises_connection_lost(proxy: TcpProxy, reset: bool) -> None:
    watch = _Watch()
    start = anyio.current_time()
    with anyio.fail_after(10), pytest.raises(ConnectionLost) as info:
        async with connect(_via(proxy), revive=False) as conn, anyio.create_task_group() as tg:
            ch, pub_ch, receive, q = await _setup(watch, conn)
            proxy.stall()
            result = await pub_ch.basic_publish(b"x", "", q)
            assert result is not None
            tg.start_soon(watch.run, "declare", lambda: ch.queue_declare(q, passive=True))
            tg.start_soon(watch.run, "open_channel", conn.open_channel)
            tg.start_soon(watch.run, "sink", lambda: _drain(receive))
            tg.start_soon(watch.run, "confirm", result.wait)
            await anyio.sleep(0.1)
            assert proxy.cut(reset=reset) == 1
    assert anyio.current_time() - start < 5
    exc = info.value
    assert type(exc) is ConnectionLost
    out = watch.outcomes
    assert isinstance(out["declare"], ConnectionLost)
    assert isinstance(out["open_channel"], ConnectionLost)
    assert out["sink"] == "closed"
    assert out["confirm"] is Outcome.UNKNOWN
    notified = out["on_cancel"]
    assert isinstance(notified, list) and len(notified) == 1
    assert isinstance(notified[0], ConnectionLost)
    with pytest.raises(ConnectionLost):
        await pub_ch.basic_publish(b"late", "", q)


async def test_silent_broker_heartbeat_timeout(proxy: TcpProxy) -> None:
    watch = _Watch()
    with anyio.fail_after(10), pytest.raises(HeartbeatTimeout) as info:
        async with connect(_via(proxy), heartbeat=1, revive=False) as conn:
            assert conn.heartbeat == 1
            stalled_at = math.inf
            try:
                async with anyio.create_task_group() as tg:
                    ch, pub_ch, receive, q = await _setup(watch, conn)
                    # Heartbeats keep an idle connection alive well past 2 intervals.
                    await anyio.sleep(2.5)
                    assert conn.is_open
                    proxy.stall()
                    stalled_at = anyio.current_time()
                    result = await pub_ch.basic_publish(b"x", "", q)
                    assert result is not None
                    tg.start_soon(watch.run, "declare", lambda: ch.queue_declare(q, passive=True))
                    tg.start_soon(watch.run, "sink", lambda: _drain(receive))
                    tg.start_soon(watch.run, "confirm", result.wait)
            finally:  # (the loss cancels the body)
                died_after = anyio.current_time() - stalled_at
    # Two silent intervals after the last byte heard; RabbitMQ sends a
    # heartbeat every half interval, so that byte may be 0.5 s older than the
    # stall, and timers on both sides jitter (CI once saw 1.499 s): 1 s is the
    # earliest that is not premature.
    assert 1.0 < died_after < 3.5, died_after
    assert isinstance(info.value, ConnectionLost)
    out = watch.outcomes
    assert isinstance(out["declare"], HeartbeatTimeout)
    assert out["sink"] == "closed"
    assert out["confirm"] is Outcome.UNKNOWN


async def test_body_exception_wins_and_is_not_grouped(broker_url: str) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with connect(broker_url) as conn, conn.channel():
            raise KeyError("mine")
    assert not conn.is_open


async def test_clean_exit_raises_nothing_and_closes_channels(broker_url: str) -> None:
    async with connect(broker_url) as conn:
        ch = await conn.open_channel()
        was_open = ch.is_open
    assert was_open
    assert not ch.is_open
    assert ch.error is conn.error  # the channel went with its connection
    with pytest.raises(ConnectionClosed):
        await ch.queue_declare("", exclusive=True)
    with pytest.raises(ConnectionClosed):
        await conn.open_channel()


async def test_cancelling_the_body_closes_and_propagates(broker_url: str) -> None:
    start = anyio.current_time()
    with anyio.move_on_after(0.3) as scope:
        async with connect(broker_url) as conn, conn.channel() as ch:
            await anyio.sleep(10)
    assert scope.cancelled_caught
    assert anyio.current_time() - start < 2
    assert not conn.is_open
    assert not ch.is_open
    # closed cleanly: our close, answered by the broker's close-ok
    assert isinstance(conn.error, ConnectionClosed)
    assert conn.error.reply_code == 200
    assert not conn.error.by_peer


async def test_cut_in_the_middle_of_a_message(proxy: TcpProxy) -> None:
    """The link dies halfway through a large delivery's body frames."""
    with anyio.fail_after(10), pytest.raises(ConnectionLost):
        async with connect(_via(proxy)) as conn, conn.channel() as ch:
            q = (await ch.queue_declare("", exclusive=True)).queue
            await ch.confirm_select()
            result = await ch.basic_publish(b"y" * (1024 * 1024), "", q)
            assert result is not None
            assert await result.wait() is Outcome.ACK
            proxy.truncate_after(300_000)
            await ch.basic_get(q)
            pytest.fail("received a message through a truncated link")
    assert proxy.cuts == 1
