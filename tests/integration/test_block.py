"""The connection's life in its ``async with`` block, against the real broker
(trio and asyncio): a loss it will not come back from cancels the body and
the block raises it; ``aclose()`` in the body returns and the body goes on;
a socket cut anywhere in the handshake is a loss (revive retries it), not a
wrong password; a server that is not a broker fails with ConnectionFailed;
``await connect(url)`` says to use ``async with``."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from _broker import close_connection_by_name
from _proxy import TcpProxy

import trio_msg
from trio_msg.connection import connect
from trio_msg.errors import (
    AuthenticationError,
    ConnectionClosed,
    ConnectionFailed,
    ConnectionForced,
    ConnectionLost,
)

pytestmark = pytest.mark.anyio

#: Bytes of ``connection.tune`` (7 + 4 + 2 + 4 + 2 + 1) and ``open-ok`` (7 + 4 + 1 + 1).
TUNE = 20
OPEN_OK = 13


def _via(proxy: TcpProxy, password: str = "guest") -> str:
    return f"amqp://guest:{password}@{proxy.host}:{proxy.port}//"


async def _handshake_size(proxy: TcpProxy) -> int:
    """Bytes the broker sends in a whole handshake (start, tune, open-ok)."""
    before = proxy.bytes_server_to_client
    async with connect(_via(proxy), revive=False, heartbeat=0):
        size = proxy.bytes_server_to_client - before
    start = size - TUNE - OPEN_OK
    assert start > 100, size  # connection.start with the broker's properties
    return size


async def _wait_cuts(proxy: TcpProxy, count: int) -> None:
    with anyio.fail_after(10):
        while proxy.cuts < count:
            await anyio.sleep(0.01)


# ------------------------------------------------------------ a loss ends the block


@pytest.mark.parametrize("how", ["cut", "forced close"])
async def test_a_loss_cancels_the_body_and_the_block_raises_it(
    proxy: TcpProxy, unique_name: str, how: str
) -> None:
    reached = []
    with anyio.fail_after(10), pytest.raises(ConnectionLost if how == "cut" else ConnectionForced):
        async with connect(_via(proxy), revive=False, connection_name=unique_name):
            if how == "cut":
                assert proxy.cut() == 1
            else:
                await anyio.to_thread.run_sync(close_connection_by_name, unique_name)
            await anyio.sleep_forever()  # not touching the connection
            reached.append("after")
    assert reached == []


async def test_a_reviving_connection_out_of_retries_ends_the_block(proxy: TcpProxy) -> None:
    policy = trio_msg.RetryPolicy(max_retries=2, interval_start=0, interval_step=0.05)
    with anyio.fail_after(20), pytest.raises(ConnectionFailed) as info:
        async with connect(_via(proxy), revive=policy):
            proxy.refuse_new()
            assert proxy.cut() == 1
            await anyio.sleep_forever()
    assert "gave up reconnecting after 2 attempts" in str(info.value)
    assert proxy.refused == 2


async def test_aclose_in_the_body_returns_and_the_body_goes_on(
    broker_url: str, unique_name: str
) -> None:
    reached = []
    with anyio.fail_after(10):
        async with connect(broker_url, revive=False) as conn:
            ch = await conn.open_channel()
            await ch.queue_declare(unique_name, exclusive=True)  # gone with the connection
            await conn.aclose()
            reached.append("after aclose")
            with pytest.raises(ConnectionClosed, match="closed by client"):
                await ch.queue_declare(unique_name, passive=True)
            with pytest.raises(ConnectionClosed, match="closed by client"):
                await conn.open_channel()
            await anyio.sleep(0)
            reached.append("end of body")
    assert reached == ["after aclose", "end of body"]


# ------------------------------------------------------------------ the handshake


@pytest.mark.parametrize(
    "where",
    [
        "nothing",  # the broker's answer never arrives
        "start header",  # inside connection.start's frame header
        "start",  # inside connection.start
        "after start",  # our start-ok (the login) is on its way
        "tune",  # inside connection.tune: the login was taken
        "after tune",  # our tune-ok and open are on their way
        "open-ok",  # inside connection.open-ok
    ],
)
async def test_a_cut_in_the_handshake_is_a_loss_not_a_wrong_password(
    proxy: TcpProxy, where: str
) -> None:
    size = await _handshake_size(proxy)
    start = size - TUNE - OPEN_OK
    offset = {
        "nothing": 0,
        "start header": 3,
        "start": start // 2,
        "after start": start,
        "tune": start + 5,
        "after tune": start + TUNE,
        "open-ok": size - 2,
    }[where]
    proxy.truncate_after(offset)
    with anyio.fail_after(10), pytest.raises(ConnectionLost) as info:
        async with connect(_via(proxy), revive=False):
            pytest.fail("connected")
    assert not isinstance(info.value, AuthenticationError)
    assert "during the handshake" in str(info.value)


async def test_a_reviving_connection_whose_login_is_cut_tries_again(proxy: TcpProxy) -> None:
    size = await _handshake_size(proxy)
    policy = trio_msg.RetryPolicy(interval_start=0, interval_step=0.2, interval_max=0.5)
    async with connect(_via(proxy), revive=policy) as conn:
        cuts = proxy.cuts
        proxy.truncate_after(size - TUNE - OPEN_OK + 5)  # inside tune: after the login
        assert proxy.cut() == 1
        await _wait_cuts(proxy, cuts + 2)  # the loss, and a reconnect cut in its login
        proxy.heal()
        with anyio.fail_after(20):
            await conn.wait_connected()
        assert conn.incarnation == 2
        async with conn.channel() as ch:
            assert (await ch.queue_declare("", exclusive=True)).queue


async def test_a_wrong_password_is_still_an_authentication_error(proxy: TcpProxy) -> None:
    with anyio.fail_after(10), pytest.raises(AuthenticationError) as info:
        async with connect(_via(proxy, password="not-the-password"), revive=True):
            pytest.fail("connected with a wrong password")
    assert info.value.reply_code == 403
    assert "not-the-password" not in str(info.value)


# --------------------------------------------------------------- not a broker


async def test_a_server_that_is_not_a_broker_is_connection_failed() -> None:
    """A server on the port that does not speak AMQP 0-9-1 (here an HTTP
    server) fails with ConnectionFailed quoting what it sent, not with an
    unknown frame type."""
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    got: list[bytes] = []

    async def http(client: anyio.abc.SocketStream) -> None:
        async with client:
            got.append(await client.receive())
            await client.send(answer)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, http)
        with anyio.fail_after(10), pytest.raises(ConnectionFailed) as info:
            async with connect(f"amqp://guest:s3cret@127.0.0.1:{port}//", revive=False):
                pytest.fail("connected to an HTTP server")
        tg.cancel_scope.cancel()
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text
    assert "does not speak AMQP 0-9-1" in text
    assert "HTTP/1.1 400 Bad Request" in text
    assert "s3cret" not in text
    assert got[0].startswith(b"AMQP\x00\x00\x09\x01")


async def test_awaiting_connect_says_to_use_async_with(broker_url: str) -> None:
    with pytest.raises(TypeError) as info:
        await trio_msg.connect(broker_url)  # type: ignore[misc]
    assert "async with trio_msg.connect(url) as conn" in str(info.value)
