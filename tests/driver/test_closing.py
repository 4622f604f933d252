"""Closing, in virtual time: ``aclose()`` is bounded by ``close_timeout`` even
when the broker never answers (or the socket is wedged) and even when the
caller is cancelled; it is idempotent.  Closes from the broker's side fail
every waiter with one clear error."""

from __future__ import annotations

import anyio
import pytest
import trio
import trio.testing

from trio_msg._pump import HIGH_WATER
from trio_msg.connection import connect
from trio_msg.errors import (
    ChannelNotOpen,
    ConnectionClosed,
    ConnectionForced,
    ConnectionLost,
    PreconditionFailed,
)

from .fake_broker import URL, FakeBroker


@pytest.mark.trio
async def test_prompt_close_ok_closes_at_once(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with broker, connect(URL) as conn:
        start = trio.current_time()
        await conn.aclose()
        assert trio.current_time() == start
        assert not conn.is_open
        await broker.wait_closed()
    assert broker.count("Connection.Close") == 1


@pytest.mark.trio
async def test_aclose_is_bounded_when_close_ok_never_comes(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.hold.add("Connection.Close")
    async with broker, connect(URL) as conn:
        timeout = conn.close_timeout
        start = trio.current_time()
        await conn.aclose()
        elapsed = trio.current_time() - start
        # It waited for close-ok as long as allowed, and no longer.
        assert timeout <= elapsed <= timeout + 1
        assert not conn.is_open
        with trio.fail_after(1):
            await broker.wait_closed()  # the socket was closed

        start = trio.current_time()
        with trio.testing.assert_checkpoints():
            await conn.aclose()  # idempotent: nothing more to do
        assert trio.current_time() == start
    assert broker.count("Connection.Close") == 1


@pytest.mark.trio
async def test_close_timeout_is_configurable(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.hold.add("Connection.Close")
    async with broker, connect(URL) as conn:
        conn.close_timeout = 0.5
        start = trio.current_time()
        await conn.aclose()
        assert 0.5 <= trio.current_time() - start <= 1.5


@pytest.mark.trio
async def test_cancelled_aclose_still_closes_within_the_bound(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.hold.add("Connection.Close")
    async with broker, connect(URL) as conn:
        start = trio.current_time()
        with trio.CancelScope() as scope:
            scope.cancel()
            await conn.aclose()
        assert scope.cancelled_caught  # the cancellation is delivered afterwards
        assert trio.current_time() - start <= conn.close_timeout + 1
        assert not conn.is_open
        assert broker.count("Connection.Close") == 1
        with trio.fail_after(1):
            await broker.wait_closed()


@pytest.mark.trio
async def test_timeout_around_connect_closes_within_the_bound(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.hold.add("Connection.Close")
    async with broker:
        start = trio.current_time()
        with trio.move_on_after(3) as scope:
            async with connect(URL) as conn:
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert trio.current_time() - start <= 3 + conn.close_timeout + 1
        assert broker.count("Connection.Close") == 1
        assert not conn.is_open


@pytest.mark.trio
async def test_aclose_is_bounded_when_the_socket_is_wedged(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """The broker stopped reading and the outbound buffer is full: close
    cannot even be sent.  aclose still returns in time, and the publisher
    waiting for room gets an error instead of hanging."""
    errors: list[BaseException] = []
    async with broker, connect(URL) as conn, conn.channel() as ch:
        broker.pause_reading()

        published = 0

        async def publish_forever() -> None:
            nonlocal published
            try:
                while True:
                    await ch.basic_publish(b"x" * 65536, "", "q")
                    published += 1
            except ConnectionClosed as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_forever)
            await trio.testing.wait_all_tasks_blocked()
            # it waits for room, over the high-water mark
            assert published > HIGH_WATER // 65536 and not errors
            start = trio.current_time()
            await conn.aclose()
            assert trio.current_time() - start <= conn.close_timeout + 1
    assert len(errors) == 1


@pytest.mark.trio
async def test_channel_aclose_is_bounded_and_cancellable(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.hold.add("Channel.Close")
    async with broker, connect(URL) as conn:
        ch = await conn.open_channel()
        start = trio.current_time()
        with trio.CancelScope() as scope:
            scope.cancel()
            await ch.aclose()
        assert scope.cancelled_caught
        assert conn.close_timeout <= trio.current_time() - start <= conn.close_timeout + 1
        assert broker.count("Channel.Close") == 1
        with pytest.raises(ChannelNotOpen):
            await ch.queue_declare("q")
        assert conn.is_open  # the connection is not affected
        async with conn.channel() as other:
            assert other.channel_id != ch.channel_id
            await other.queue_declare("q")


@pytest.mark.trio
async def test_channel_aclose_twice_sends_one_close(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    async with broker, connect(URL) as conn:
        ch = await conn.open_channel()
        await ch.aclose()
        start = trio.current_time()
        with trio.testing.assert_checkpoints():
            await ch.aclose()
        assert trio.current_time() == start
    assert broker.count("Channel.Close") == 1


# --- closes from the broker ----------------------------------------------------------


@pytest.mark.anyio
async def test_forced_close_fails_waiters_and_leaves_the_block_with_one_error(
    broker: FakeBroker,
) -> None:
    broker.hold.add("Queue.Declare")
    errors: list[BaseException] = []
    async with broker:
        with pytest.raises(ConnectionForced) as info:
            async with connect(URL, revive=False) as conn, conn.channel() as ch:

                async def declare() -> None:
                    try:
                        await ch.queue_declare("q")
                    except ConnectionForced as exc:
                        errors.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(declare)
                    await broker.wait_for("Queue.Declare")
                    await broker.close_connection(320, "CONNECTION_FORCED - shutdown")
    error = info.value
    assert type(error) is ConnectionForced
    assert error.reply_code == 320 and error.by_peer
    assert "shutdown" in str(error)
    assert errors == [error]
    assert broker.names()[-1] == "Connection.CloseOk"


@pytest.mark.anyio
async def test_broker_hangs_up_without_close(broker: FakeBroker) -> None:
    broker.hold.add("Queue.Declare")
    errors: list[BaseException] = []
    async with broker:
        with pytest.raises(ConnectionLost) as info:
            async with connect(URL, revive=False) as conn, conn.channel() as ch:

                async def declare() -> None:
                    try:
                        await ch.queue_declare("q")
                    except ConnectionLost as exc:
                        errors.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(declare)
                    await broker.wait_for("Queue.Declare")
                    await broker.hang_up()
    assert type(info.value) is ConnectionLost
    assert errors == [info.value]


@pytest.mark.anyio
async def test_channel_close_from_the_broker_fails_its_waiters_only(
    broker: FakeBroker,
) -> None:
    broker.hold.add("Queue.Declare")
    async with broker, connect(URL) as conn:
        doomed = await conn.open_channel()
        async with conn.channel() as other:
            errors: list[BaseException] = []

            async def declare() -> None:
                try:
                    await doomed.queue_declare("q")
                except PreconditionFailed as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(declare)
                await broker.wait_for("Queue.Declare")
                await broker.close_channel(doomed.channel_id, 406, "PRECONDITION_FAILED - no")
            assert len(errors) == 1 and errors[0].reply_code == 406
            assert not doomed.is_open
            with pytest.raises(PreconditionFailed):
                await doomed.queue_declare("again")
            broker.hold.clear()
            assert (await other.queue_declare("fine")).queue == "fine"
            assert conn.is_open
        await doomed.aclose()  # already closed: no-op
    assert "Channel.CloseOk" in broker.names(doomed.channel_id)


@pytest.mark.trio
async def test_crossing_closes_end_at_once(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Our connection.close crosses the broker's: neither side waits for a
    close-ok the other will never send."""

    async def close_instead(b: FakeBroker, rec: object) -> None:
        await b.close_connection(320, "CONNECTION_FORCED - shutdown")

    broker.handlers["Connection.Close"] = close_instead
    async with broker:
        start = trio.current_time()
        with pytest.raises(ConnectionForced):
            async with connect(URL, revive=False):
                pass
        assert trio.current_time() - start < 1
        assert broker.count("Connection.Close") == 1
