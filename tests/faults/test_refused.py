"""Reconnects refused for a while: the proxy accepts and closes at once
(the broker's port answers, nobody serves), then lets them through."""

from __future__ import annotations

import anyio
import pytest
from _ledger import Ledger
from _proxy import TcpProxy
from _workload import FAST, Fault, Run, delete_queue, queue_depth, wait_until, workload

import trio_msg
from trio_msg.errors import ConnectionFailed, ConnectionLost, TrioMsgError

pytestmark = pytest.mark.anyio


def _url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}//"


async def _wait_lost(conn: trio_msg.Connection) -> None:
    await wait_until(lambda: not conn.is_open, 5, "the client noticed the cut")


def _cut_and_refuse(proxy: TcpProxy, n: int) -> Fault:
    async def fault(run: Run) -> None:
        before = run.producer_conn.incarnation
        refused = proxy.refused
        proxy.refuse_next(n)
        proxy.cut()
        await wait_until(lambda: proxy.refused >= refused + n, 15, "reconnects refused")
        await wait_until(
            lambda: run.producer_conn.incarnation > before and run.producer_conn.is_open,
            15,
            "revived",
        )

    return fault


@pytest.mark.parametrize("separate", [False, True], ids=["one_connection", "two_connections"])
async def test_refused_reconnects_while_publishing(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger, separate: bool
) -> None:
    """Cut, then the next reconnects are refused: publishes wait, nothing
    confirmed is lost, and both sides carry on once the broker takes them."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        run = await workload(
            _url(proxy),
            queue,
            ledger,
            [_cut_and_refuse(proxy, 4), _cut_and_refuse(proxy, 1)],
            separate=separate,
        )
        ledger.check()
        assert run.producer_conn.incarnation == 3
        assert run.consumer_conn.incarnation == 3
        assert proxy.refused >= 5
    finally:
        await delete_queue(broker_url, queue.name)


async def test_publish_while_disconnected_waits_is_cancellable_and_buffers_nothing(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(_url(proxy), revive=FAST) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            await producer.publish("one", routing_key=queue.name, declare=[queue])
            proxy.refuse_new()
            proxy.cut()
            await _wait_lost(conn)
            with anyio.move_on_after(0.5) as scope:
                await producer.publish("dropped", routing_key=queue.name)
            assert scope.cancelled_caught
            assert not conn.is_open
            proxy.heal()
            with anyio.fail_after(10):
                await producer.publish("two", routing_key=queue.name)
            assert conn.incarnation == 2
        # The cancelled publish was never sent: only "one" and "two" are there.
        assert await queue_depth(broker_url, queue.name) == 2
    finally:
        await delete_queue(broker_url, queue.name)


async def test_gives_up_after_max_retries(proxy: TcpProxy) -> None:
    policy = trio_msg.RetryPolicy(max_retries=3, interval_start=0.01, interval_step=0.01)
    waiter_error: list[BaseException] = []
    with anyio.fail_after(20), pytest.raises(ConnectionFailed) as info:
        async with trio_msg.connect(_url(proxy), revive=policy) as conn:
            proxy.refuse_new()
            proxy.cut()
            await _wait_lost(conn)
            with pytest.raises(ConnectionFailed) as waited:
                await conn.wait_connected()
            waiter_error.append(waited.value)
            with pytest.raises(ConnectionFailed):
                await conn.open_channel()
    assert "gave up reconnecting after 3 attempts" in str(info.value)
    assert waiter_error[0] is info.value
    assert isinstance(info.value.__cause__, ConnectionLost | ConnectionFailed)
    assert proxy.refused == 3


async def test_aclose_while_reconnecting_is_prompt_and_raises_nothing(proxy: TcpProxy) -> None:
    policy = trio_msg.RetryPolicy(interval_start=0.2, interval_step=0.2)
    with anyio.fail_after(5):
        async with trio_msg.connect(_url(proxy), revive=policy) as conn:
            proxy.refuse_new()
            proxy.cut()
            await _wait_lost(conn)
            # somewhere in the retry loop: one attempt refused, waiting for the next
            await wait_until(lambda: proxy.refused >= 1, 2, "a reconnect refused")
    assert not conn.is_open
    with pytest.raises(TrioMsgError):
        await conn.wait_connected()


async def test_wait_connected_is_a_checkpoint_and_cancellable_while_reconnecting(
    proxy: TcpProxy,
) -> None:
    async with trio_msg.connect(_url(proxy), revive=FAST) as conn:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await conn.wait_connected()  # open: still a checkpoint
        assert scope.cancelled_caught
        proxy.refuse_new()
        proxy.cut()
        await _wait_lost(conn)
        with anyio.move_on_after(0.3) as scope:
            await conn.wait_connected()
        assert scope.cancelled_caught
        proxy.heal()
        with anyio.fail_after(10):
            await conn.wait_connected()
        async with conn.channel() as ch:
            await ch.queue_declare("", exclusive=True)
