"""The connection's life as structured concurrency promises it, on trio and
asyncio: a connection that dies and will not come back cancels the body of
its ``async with connect()`` and the block raises the loss (one exception,
never a silent exit, never an ExceptionGroup); the body's own exceptions
pass unchanged; a normal close cancels nothing; ``aclose()`` inside the body
returns and the code after it runs.  (The real broker's side is in
tests/integration/test_connection.py.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest
import trio
import trio.testing
from pamqp import commands as C

from trio_msg import Producer
from trio_msg._retry import RetryPolicy
from trio_msg.connection import Connection, connect
from trio_msg.errors import (
    ConnectionClosed,
    ConnectionFailed,
    ConnectionForced,
    ConnectionLost,
    HeartbeatTimeout,
    TrioMsgError,
)

from .fake_broker import URL, FakeBroker, Received

#: Retries at once: the tests run on asyncio too, without a virtual clock.
NO_WAIT = RetryPolicy(max_retries=2, interval_start=0, interval_step=0)


async def _hang_up(broker: FakeBroker) -> None:
    await broker.hang_up()


async def _force_close(broker: FakeBroker) -> None:
    await broker.close_connection(320, "CONNECTION_FORCED - operator says no")


LOSSES: dict[str, tuple[Callable[[FakeBroker], Awaitable[None]], type[TrioMsgError]]] = {
    "socket closed": (_hang_up, ConnectionLost),
    "forced close": (_force_close, ConnectionForced),
}


@pytest.mark.anyio
@pytest.mark.parametrize("loss", list(LOSSES))
async def test_a_loss_cancels_a_body_that_does_not_use_the_connection(
    broker: FakeBroker, loss: str
) -> None:
    cause, expected = LOSSES[loss]
    reached: list[str] = []
    async with broker:
        with anyio.fail_after(5), pytest.raises(expected) as info:
            async with connect(URL, revive=False):
                reached.append("before")
                await cause(broker)
                await anyio.sleep_forever()  # serving HTTP, doing other work...
                reached.append("after")
    assert type(info.value) is expected
    assert reached == ["before"]
    # One clear exception: not a group, and no Cancelled chained to it.
    assert info.value.__suppress_context__ or info.value.__context__ is None


@pytest.mark.anyio
async def test_a_reviving_connection_that_runs_out_of_retries_ends_its_block(
    broker: FakeBroker,
) -> None:
    broker.serve_again = True
    async with broker:
        with anyio.fail_after(5), pytest.raises(ConnectionFailed) as info:
            async with connect(URL, revive=NO_WAIT):
                broker.refuse = 100
                await broker.hang_up()
                await anyio.sleep_forever()
    assert "gave up reconnecting after 2 attempts" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionFailed)  # the last attempt's failure
    assert broker.connects == 1 + 2


@pytest.mark.anyio
async def test_a_reviving_connection_that_comes_back_leaves_the_body_alone(
    broker: FakeBroker,
) -> None:
    broker.serve_again = True
    async with broker, connect(URL, revive=NO_WAIT) as conn:
        broker.refuse = 1
        await broker.hang_up()
        with anyio.fail_after(5):
            await conn.wait_connected()
        assert conn.incarnation == 2
        await anyio.wait_all_tasks_blocked()
        async with conn.channel() as ch:
            await ch.queue_declare("after")
    assert broker.connects == 3


@pytest.mark.anyio
async def test_nested_task_groups_in_the_body_are_cancelled_and_the_loss_raised(
    broker: FakeBroker,
) -> None:
    cancelled: list[str] = []

    async def worker(name: str) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(name)
            raise

    async with broker:
        with anyio.fail_after(5), pytest.raises(ConnectionLost):
            async with connect(URL, revive=False), anyio.create_task_group() as tg:
                tg.start_soon(worker, "a")
                tg.start_soon(worker, "b")
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(broker.hang_up)
                await worker("body")
    assert sorted(cancelled) == ["a", "b", "body"]


@pytest.mark.anyio
async def test_a_body_that_swallows_the_cancellation_still_raises_the_loss(
    broker: FakeBroker,
) -> None:
    async with broker:
        with anyio.fail_after(5), pytest.raises(ConnectionLost):
            async with connect(URL, revive=False):
                try:
                    await broker.hang_up()
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    pass  # bad manners, but no silent exit for all that


@pytest.mark.anyio
async def test_the_bodys_own_exception_passes_unchanged(broker: FakeBroker) -> None:
    class Mine(Exception):
        pass

    async with broker:
        with anyio.fail_after(5), pytest.raises(Mine) as info:
            async with connect(URL, revive=False):
                try:
                    await broker.hang_up()
                    await anyio.sleep_forever()
                finally:
                    raise Mine("cleanup failed")
    assert str(info.value) == "cleanup failed"


@pytest.mark.anyio
async def test_the_bodys_own_exception_keeps_its_context(broker: FakeBroker) -> None:
    """Raised while handling another, the body's exception leaves the block
    with that other one as its context, as a traceback shows it."""
    async with broker:
        with anyio.fail_after(5), pytest.raises(ValueError, match="outer") as info:
            async with connect(URL, revive=False):
                try:
                    raise KeyError("inner")
                except KeyError:
                    raise ValueError("outer")  # noqa: B904 (the context is the point)
    assert isinstance(info.value.__context__, KeyError)
    assert not info.value.__suppress_context__


@pytest.mark.anyio
async def test_the_bodys_own_exception_group_passes_unchanged(broker: FakeBroker) -> None:
    """A group of the body's own (two errors of its task group) is not cut
    down to its first error."""
    mine = ExceptionGroup("two failed", [ValueError("a"), KeyError("b")])
    async with broker:
        with anyio.fail_after(5), pytest.raises(ExceptionGroup) as info:
            async with connect(URL, revive=False):
                raise mine
    assert info.value is mine


@pytest.mark.anyio
async def test_a_body_error_beside_the_loss_is_not_dropped(broker: FakeBroker) -> None:
    """A task of the body's fails with an error of its own as the connection
    dies: the block raises the body's group with that error, not the loss
    alone (the closing channel's cancellation used to replace the group,
    and the body's cancelled scope swallowed it)."""
    broker.hold.add("Queue.Declare")

    async def fail_soon() -> None:
        await broker.wait_for("Queue.Declare")
        await _force_close(broker)
        raise ValueError("mine")

    async with broker:
        with anyio.fail_after(5), pytest.raises(BaseExceptionGroup) as info:
            async with (
                connect(URL, revive=False) as conn,
                conn.channel() as ch,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(fail_soon)
                await ch.queue_declare("q")
    assert info.group_contains(ValueError, match="mine")
    assert conn.error is not None  # the connection did die meanwhile


@pytest.mark.anyio
async def test_an_exception_before_any_loss_passes_unchanged(broker: FakeBroker) -> None:
    cause = LookupError("why")
    async with broker:
        with pytest.raises(KeyError) as info:
            async with connect(URL, revive=False):
                raise KeyError("mine") from cause
    assert info.value.args == ("mine",)
    assert info.value.__cause__ is cause


@pytest.mark.anyio
async def test_a_task_waiting_on_the_connection_gets_the_loss(broker: FakeBroker) -> None:
    """The body waiting on the connection gets the error itself, as before,
    and the block raises that same error."""
    broker.hold.add("Queue.Declare")
    caught: list[BaseException] = []
    async with broker:
        with anyio.fail_after(5), pytest.raises(ConnectionForced) as info:
            async with connect(URL, revive=False) as conn, conn.channel() as ch:

                async def declare() -> None:
                    try:
                        await ch.queue_declare("q")
                    except ConnectionForced as exc:
                        caught.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(declare)
                    await broker.wait_for("Queue.Declare")
                    await _force_close(broker)
                    await anyio.sleep_forever()
    assert caught == [info.value]


@pytest.mark.anyio
async def test_a_child_task_that_lets_the_loss_out_is_not_a_group(broker: FakeBroker) -> None:
    """A task of the body's own task group fails with the loss while the
    others are cancelled: the block raises the loss, not an ExceptionGroup."""
    broker.hold.add("Queue.Declare")
    async with broker:
        with anyio.fail_after(5), pytest.raises(ConnectionForced) as info:
            async with (
                connect(URL, revive=False) as conn,
                conn.channel() as ch,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(ch.queue_declare, "q")
                tg.start_soon(anyio.sleep_forever)
                await broker.wait_for("Queue.Declare")
                await _force_close(broker)
                await anyio.sleep_forever()
    assert info.value is conn.error


@pytest.mark.anyio
async def test_a_normal_close_by_the_broker_does_not_cancel_the_body(
    broker: FakeBroker,
) -> None:
    reached = False
    async with broker:
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as info:
            async with connect(URL, revive=False) as conn:
                await broker.close_connection(200, "Goodbye")
                while conn.is_open:
                    await anyio.wait_all_tasks_blocked()
                await anyio.wait_all_tasks_blocked()
                await anyio.sleep(0)
                reached = True
    assert reached
    assert info.value.reply_code == 200 and info.value.by_peer


@pytest.mark.anyio
@pytest.mark.parametrize("revive", [False, True])
async def test_aclose_in_the_body_returns_and_the_body_goes_on(
    broker: FakeBroker, revive: bool
) -> None:
    reached: list[str] = []
    async with broker:
        with anyio.fail_after(5):
            async with connect(URL, revive=NO_WAIT if revive else False) as conn:
                async with conn.channel() as ch:
                    await conn.aclose()
                    reached.append("after aclose")
                    assert not conn.is_open
                    with pytest.raises(ConnectionClosed) as on_channel:
                        await ch.queue_declare("q")
                with pytest.raises(ConnectionClosed) as on_connection:
                    await conn.open_channel()
                for error in (on_channel.value, on_connection.value):
                    assert error.reply_code == 200
                    assert "closed by client" in str(error)
                with pytest.raises(ConnectionClosed):
                    async with Producer(conn):
                        pass
                await anyio.sleep(0)
                reached.append("end of body")
        await broker.wait_closed()
    assert reached == ["after aclose", "end of body"]
    assert broker.count("Connection.Close") == 1
    assert broker.sessions == 1  # a reviving connection closed does not come back


@pytest.mark.anyio
async def test_reviving_after_a_cut_in_the_login(broker: FakeBroker) -> None:
    """The reconnect's socket ends in the middle of the login: a loss, which
    the policy retries, not a refused password that ends the connection."""
    broker.serve_again = True

    async def cut_the_second_login(b: FakeBroker, rec: Received) -> None:
        if rec.session == 2:
            await b.hang_up()
        else:
            await b.answer(rec)

    broker.handlers["Connection.StartOk"] = cut_the_second_login
    async with broker, connect(URL, revive=NO_WAIT) as conn:
        await broker.hang_up()
        with anyio.fail_after(5):
            await broker.wait_sessions(3)
            await conn.wait_connected()
        assert conn.incarnation == 2
        async with conn.channel() as ch:
            await ch.queue_declare("after")
    assert broker.sessions == 3


@pytest.mark.anyio
async def test_awaiting_connect_says_to_use_async_with() -> None:
    with pytest.raises(TypeError, match=r"async with trio_msg\.connect\(url\) as conn"):
        await connect(URL)  # type: ignore[misc]


@pytest.mark.anyio
async def test_connect_is_still_an_async_context_manager(broker: FakeBroker) -> None:
    async with broker:
        cm = connect(URL, revive=False)
        async with cm as conn:
            assert isinstance(conn, Connection)
            assert conn.is_open
        assert not conn.is_open
    assert connect.__name__ == "connect"
    assert "revive" in (connect.__doc__ or "")


@pytest.mark.anyio
async def test_the_loss_of_a_connection_during_an_rpc_on_the_first_channel(
    broker: FakeBroker,
) -> None:
    """A close the broker sends with an error code while a channel is being
    opened fails the opener with it, and the block with the same error."""

    async def refuse(b: FakeBroker, rec: Received) -> None:
        await b.send(
            0,
            C.Connection.Close(
                reply_code=504, reply_text="CHANNEL_ERROR - nope", class_id=20, method_id=10
            ),
        )

    broker.handlers["Channel.Open"] = refuse
    async with broker:
        with anyio.fail_after(5), pytest.raises(ConnectionClosed) as info:
            async with connect(URL, revive=False) as conn:
                with pytest.raises(ConnectionClosed) as opening:
                    await conn.open_channel()
                assert opening.value is conn.error
                await anyio.sleep_forever()
    assert info.value.reply_code == 504


# --- in virtual time (trio's autojump clock) ---------------------------------------


@pytest.mark.trio
async def test_a_silent_broker_ends_a_sleeping_body_after_two_heartbeats(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.heartbeat = 10
    async with broker:
        with pytest.raises(HeartbeatTimeout):
            async with connect(URL, heartbeat=10, revive=False):
                broker.silent = True
                start = trio.current_time()
                try:
                    await trio.sleep(3600)
                finally:
                    elapsed = trio.current_time() - start
    assert 15 <= elapsed <= 25  # two intervals after the last byte heard, not on exit


@pytest.mark.trio
async def test_the_block_ends_as_soon_as_revive_gives_up(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.serve_again = True
    policy = RetryPolicy(max_retries=3, interval_start=1, interval_step=1)
    async with broker:
        with pytest.raises(ConnectionFailed, match="after 3 attempts"):
            async with connect(URL, revive=policy):
                broker.refuse = 100
                start = trio.current_time()
                await broker.hang_up()
                try:
                    await trio.sleep(3600)
                finally:
                    elapsed = trio.current_time() - start
    assert elapsed == pytest.approx(1 + 2 + 3, abs=0.01)
