"""Opening a connection, in virtual time: a silent or hostile broker during
the handshake fails ``connect()`` with a clear error within
``connection_timeout``; a cancelled connect leaves nothing open."""

from __future__ import annotations

import anyio
import pytest
import trio
import trio.testing
from pamqp import commands as C

from trio_msg.connection import connect
from trio_msg.errors import AuthenticationError, ConnectionFailed, ConnectionLost, InvalidPath

from .fake_broker import URL, FakeBroker, Received


@pytest.mark.trio
@pytest.mark.parametrize(
    "silent_after", ["ProtocolHeader", "Connection.StartOk", "Connection.Open"]
)
async def test_silent_handshake_times_out(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, silent_after: str
) -> None:
    broker.hold.add(silent_after)
    async with broker:
        start = trio.current_time()
        with pytest.raises(ConnectionFailed) as info:
            async with connect(URL, connection_timeout=7):
                pytest.fail("connected")
        assert trio.current_time() - start == pytest.approx(7, abs=1.01)
        assert "timed out after 7" in str(info.value)
        with trio.fail_after(1):
            await broker.wait_closed()  # the socket was closed, nothing left open


@pytest.mark.trio
async def test_cancelled_connect_leaves_nothing_open(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.hold.add("Connection.Open")
    async with broker:
        with trio.move_on_after(2) as scope:
            async with connect(URL):
                pytest.fail("connected")
        assert scope.cancelled_caught
        with trio.fail_after(1):
            await broker.wait_closed()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "hang_up_after",
    ["ProtocolHeader", "Connection.StartOk", "Connection.TuneOk", "Connection.Open"],
)
async def test_hang_up_during_the_handshake_is_a_loss(
    broker: FakeBroker, hang_up_after: str
) -> None:
    """A socket that ends in the handshake, even in the middle of the
    login, is a connection loss, not a refused login: trio_msg asks for
    authentication_failure_close, and RabbitMQ refuses a login with a 403
    (test_close_during_the_handshake_names_the_cause; the real broker in
    tests/integration/test_connection.py)."""

    async def hang_up(b: FakeBroker, rec: Received) -> None:
        await b.hang_up()

    broker.handlers[hang_up_after] = hang_up
    async with broker:
        with pytest.raises(ConnectionLost) as info:
            with anyio.fail_after(5):
                async with connect("amqp://guest:s3cret@fake-broker.invalid//", revive=False):
                    pytest.fail("connected")
    assert not isinstance(info.value, AuthenticationError)
    assert "during the handshake" in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.anyio
async def test_a_403_in_the_handshake_is_an_authentication_error(broker: FakeBroker) -> None:
    async def refuse(b: FakeBroker, rec: Received) -> None:
        await b.send(
            0,
            C.Connection.Close(
                reply_code=403,
                reply_text="ACCESS_REFUSED - Login was refused using authentication "
                "mechanism PLAIN",
                class_id=0,
                method_id=0,
            ),
        )

    broker.handlers["Connection.StartOk"] = refuse
    async with broker:
        with pytest.raises(AuthenticationError) as info:
            with anyio.fail_after(5):
                async with connect("amqp://guest:s3cret@fake-broker.invalid//", revive=False):
                    pytest.fail("connected")
    assert info.value.reply_code == 403
    assert "s3cret" not in str(info.value)


@pytest.mark.trio
async def test_close_during_the_handshake_names_the_cause(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async def no_vhost(b: FakeBroker, rec: Received) -> None:
        await b.send(
            0,
            C.Connection.Close(
                reply_code=402,
                reply_text="NOT_ALLOWED - vhost nope not found",
                class_id=10,
                method_id=40,
            ),
        )

    broker.handlers["Connection.Open"] = no_vhost
    async with broker:
        with pytest.raises(InvalidPath) as info, trio.fail_after(5):
            async with connect(URL):
                pass
    assert info.value.reply_code == 402
    assert "vhost" in str(info.value)
