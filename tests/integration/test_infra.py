"""The integration-test infrastructure itself, against the real broker, on both backends."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import anyio
import anyio.abc
import pika
import pika.exceptions
import pytest
import sniffio
from _broker import (
    BROKER_HOST,
    BROKER_PORT,
    BROKER_URL,
    EMBEDDED,
    MEMORY_URL,
    PROTOCOL_HEADER,
    BrokerUnavailable,
    check_broker,
    close_connection_by_name,
    close_connection_by_port,
    list_connections,
)
from _proxy import TcpProxy, tcp_proxy

FRAME_END = 0xCE
STREAM_GONE = (anyio.EndOfStream, anyio.BrokenResourceError)


async def _connect(proxy: TcpProxy) -> anyio.abc.SocketStream:
    with anyio.fail_after(5):
        return await anyio.connect_tcp(proxy.host, proxy.port)


async def _receive_exactly(stream: anyio.abc.ByteReceiveStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += await stream.receive(n - len(data))
    return data


async def _read_connection_start(stream: anyio.abc.ByteReceiveStream) -> bytes:
    """Read one whole frame and check it is Connection.Start (class 10, method 10)."""
    with anyio.fail_after(5):
        header = await _receive_exactly(stream, 7)
        frame_type, channel, size = struct.unpack("!BHI", header)
        assert (frame_type, channel) == (1, 0)
        payload = await _receive_exactly(stream, size + 1)
    assert payload[-1] == FRAME_END
    assert struct.unpack("!HH", payload[:4]) == (10, 10)
    return header + payload


async def _read_until_eof(stream: anyio.abc.ByteReceiveStream, timeout: float = 5) -> bytes:
    data = b""
    with anyio.fail_after(timeout):
        while True:
            try:
                data += await stream.receive()
            except anyio.EndOfStream:
                return data


async def _assert_gone(stream: anyio.abc.ByteReceiveStream, timeout: float = 5) -> None:
    """The peer closed: EOF or a reset, and nothing else, within ``timeout``."""
    with anyio.fail_after(timeout):
        try:
            data = await stream.receive()
        except STREAM_GONE:
            return
    pytest.fail(f"expected EOF or a broken stream, got {data!r}")


# ---------------------------------------------------------------------- broker


def test_check_broker_passes() -> None:
    check_broker()


def test_check_broker_fails_clearly_on_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrokerUnavailable) as info:
        check_broker("127.0.0.1", port, timeout=2)
    text = str(info.value)
    assert "rabbitmq-server -detached" in text
    assert "rabbitmq:3" in text
    assert "TRIO_MSG_TEST_BROKER" in text


@pytest.fixture
def not_amqp_server() -> Iterator[int]:
    """A TCP server on a free port that answers anything with an HTTP error."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)

    def answer() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(8)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            except OSError:
                pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        thread.join(5)


def test_check_broker_rejects_a_non_amqp_server(not_amqp_server: int) -> None:
    with pytest.raises(BrokerUnavailable, match="not a method frame"):
        check_broker("127.0.0.1", not_amqp_server, timeout=2)


def test_broker_url_and_markers(broker_url: str, request: pytest.FixtureRequest) -> None:
    if EMBEDDED:
        assert broker_url == MEMORY_URL
        assert broker_url.startswith("memory://")
    else:
        assert broker_url == BROKER_URL
        assert broker_url.startswith("amqp://")
    assert request.node.get_closest_marker("integration") is not None


def test_unique_name(unique_name: str, request: pytest.FixtureRequest) -> None:
    assert unique_name.startswith("trio_msg.test.test_unique_name.")
    assert len(unique_name) < 255  # AMQP shortstr
    assert all(c.isalnum() or c in "._-" for c in unique_name)


# ----------------------------------------------------------------------- proxy


@pytest.mark.anyio
async def test_proxy_forwards_the_handshake_start(proxy: TcpProxy, anyio_backend: str) -> None:
    assert sniffio.current_async_library() == anyio_backend
    async with await _connect(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        frame = await _read_connection_start(stream)
        assert proxy.connections == 1
        assert len(proxy.upstream_ports) == 1
    assert proxy.bytes_client_to_server == len(PROTOCOL_HEADER)
    assert proxy.bytes_server_to_client == len(frame)
    await proxy.wait_connections(0)
    assert proxy.accepted == 1
    assert proxy.errors == []


@pytest.mark.anyio
@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_cut_breaks_live_connections(proxy: TcpProxy, reset: bool) -> None:
    async with await _connect(proxy) as a, await _connect(proxy) as b:
        for s in (a, b):
            await s.send(PROTOCOL_HEADER)
            await _read_connection_start(s)
        assert proxy.cut(reset=reset) == 2
        await _assert_gone(a)
        await _assert_gone(b)
    await proxy.wait_connections(0)
    # the proxy itself keeps working
    async with await _connect(proxy) as c:
        await c.send(PROTOCOL_HEADER)
        await _read_connection_start(c)
    assert proxy.errors == []


@pytest.mark.anyio
async def test_stall_holds_bytes_and_resume_releases_them(proxy: TcpProxy) -> None:
    async with await _connect(proxy) as stream:
        await proxy.wait_connections(1)
        proxy.stall()
        assert proxy.stalled
        await stream.send(PROTOCOL_HEADER)
        with anyio.move_on_after(0.5) as waited:
            data = await stream.receive()
            pytest.fail(f"bytes flowed while stalled: {data!r}")
        assert waited.cancelled_caught
        assert proxy.bytes_client_to_server == 0
        assert proxy.bytes_server_to_client == 0
        assert proxy.connections == 1  # the sockets stay open
        proxy.resume()
        await _read_connection_start(stream)
        assert proxy.bytes_client_to_server == len(PROTOCOL_HEADER)
    assert proxy.errors == []


@pytest.mark.anyio
async def test_stall_mid_stream_keeps_the_connection_open(proxy: TcpProxy) -> None:
    async with await _connect(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        await _read_connection_start(stream)
        proxy.stall()
        # A frame of an unknown type makes the broker drop the connection at
        # once, if it gets through.
        await stream.send(b"\x09\x00\x00\x00\x00\x00\x00\xce")
        with anyio.move_on_after(0.5) as waited:
            data = await stream.receive()
            pytest.fail(f"bytes flowed while stalled: {data!r}")
        assert waited.cancelled_caught
        assert proxy.connections == 1
        proxy.resume()
        # Now the held bytes reach the broker, which drops the connection.
        await _assert_gone(stream)


@pytest.mark.anyio
async def test_drop_client_to_server(proxy: TcpProxy) -> None:
    proxy.drop_client_to_server()
    async with await _connect(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        with anyio.move_on_after(0.5) as waited:
            data = await stream.receive()
            pytest.fail(f"the broker answered a dropped header: {data!r}")
        assert waited.cancelled_caught
        assert proxy.bytes_dropped == len(PROTOCOL_HEADER)
        assert proxy.bytes_client_to_server == 0
        proxy.drop_client_to_server(False)
        await stream.send(PROTOCOL_HEADER)
        await _read_connection_start(stream)


@pytest.mark.anyio
@pytest.mark.parametrize("n", [0, 1, 7, 100])
async def test_truncate_after_delivers_exactly_n_bytes(proxy: TcpProxy, n: int) -> None:
    # The full Connection.Start, for comparison.
    async with await _connect(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        full = await _read_connection_start(stream)
    assert len(full) > 100

    # On a live connection: counts from the call.
    async with await _connect(proxy) as stream:
        await proxy.wait_connections(1)
        proxy.truncate_after(n)
        if n:  # with 0 the connection is already cut
            await stream.send(PROTOCOL_HEADER)
        got = await _read_until_eof(stream)
    assert got == full[:n]

    # On a new connection: counts from its start, until lifted.
    async with await _connect(proxy) as stream:
        if n:  # with 0 the proxy cuts it on arrival
            await stream.send(PROTOCOL_HEADER)
        got = await _read_until_eof(stream)
    assert got == full[:n]
    proxy.truncate_after(None)
    async with await _connect(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        assert await _read_connection_start(stream) == full
    assert proxy.errors == []


@pytest.mark.anyio
async def test_refuse_new(proxy: TcpProxy) -> None:
    async with await _connect(proxy) as live:
        proxy.refuse_new()
        async with await _connect(proxy) as refused:
            await _assert_gone(refused)
        assert proxy.refused == 1
        # the connection that was already there is untouched
        await live.send(PROTOCOL_HEADER)
        await _read_connection_start(live)
        proxy.heal()
        async with await _connect(proxy) as again:
            await again.send(PROTOCOL_HEADER)
            await _read_connection_start(again)
    assert proxy.accepted == 3


@pytest.mark.trio
async def test_trio_proxy_fixture_for_trio_marked_tests(trio_proxy: TcpProxy) -> None:
    assert sniffio.current_async_library() == "trio"
    async with await _connect(trio_proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        await _read_connection_start(stream)


@pytest.mark.anyio
async def test_leaving_the_proxy_closes_everything_promptly() -> None:
    start = anyio.current_time()
    async with tcp_proxy(BROKER_HOST, BROKER_PORT) as p:
        stream = await _connect(p)
        await stream.send(PROTOCOL_HEADER)
        await _read_connection_start(stream)
        p.stall()  # a stalled pump must not hold the exit up
    async with stream:
        await _assert_gone(stream, timeout=2)
    assert anyio.current_time() - start < 5
    with pytest.raises(OSError):
        await anyio.connect_tcp(p.host, p.port)


@pytest.mark.anyio
async def test_errors_in_the_body_propagate_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with tcp_proxy(BROKER_HOST, BROKER_PORT):
            raise KeyError("boom")


@pytest.mark.anyio
async def test_cancelling_the_body_works() -> None:
    with anyio.move_on_after(0.2) as scope:
        async with tcp_proxy(BROKER_HOST, BROKER_PORT):
            await anyio.sleep(5)
    assert scope.cancelled_caught


@pytest.mark.anyio
async def test_unreachable_target_closes_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with tcp_proxy("127.0.0.1", port) as p, await _connect(p) as stream:
        await _assert_gone(stream)
    assert p.errors == []


# ----------------------------------------------------------------- rabbitmqctl


def _pika_connect(port: int, name: str) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        host=BROKER_HOST if port == BROKER_PORT else "127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": name},
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=5,
    )
    return pika.BlockingConnection(params)


def _expect_forced_close(conn: pika.BlockingConnection) -> pika.exceptions.AMQPConnectionError:
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
    except pika.exceptions.ConnectionClosedByBroker as exc:
        return exc
    finally:
        if conn.is_open:
            conn.close()
    pytest.fail("pika did not see the forced close")


def test_list_connections_and_close_by_name(unique_name: str) -> None:
    name = f"{unique_name} \"quoted\" 'n'"
    conn = _pika_connect(BROKER_PORT, name)
    local_port = conn._impl._transport._sock.getsockname()[1]
    closed = close_connection_by_name(name, "infra test")
    assert len(closed) == 1
    info = closed[0]
    assert info["connection_name"] == name
    assert info["peer_port"] == local_port
    assert info["user"] == "guest"
    assert info["pid"].startswith("<")
    exc = _expect_forced_close(conn)
    assert exc.reply_code == 320
    assert "infra test" in exc.reply_text
    assert all(c["connection_name"] != name for c in list_connections())


def test_close_by_name_reports_a_missing_connection(unique_name: str) -> None:
    with pytest.raises(LookupError):
        close_connection_by_name(unique_name, wait=0.5)


@pytest.mark.anyio
async def test_close_by_port_through_the_proxy(proxy: TcpProxy, unique_name: str) -> None:
    conn = await anyio.to_thread.run_sync(_pika_connect, proxy.port, unique_name)
    try:
        assert proxy.connections == 1
        [upstream] = proxy.upstream_ports
        listed = await anyio.to_thread.run_sync(list_connections)
        [mine] = [c for c in listed if c["connection_name"] == unique_name]
        assert mine["peer_port"] == upstream
        await anyio.to_thread.run_sync(close_connection_by_port, upstream, "via proxy")
        exc = await anyio.to_thread.run_sync(_expect_forced_close, conn)
        assert exc.reply_code == 320
    finally:
        if conn.is_open:
            await anyio.to_thread.run_sync(conn.close)
    await proxy.wait_connections(0)
