"""Broker restarts, on the suite's private node (never the shared one):
a durable queue, persistent messages, confirms and ``retry=True`` carry
every confirmed message across a graceful restart and a crash."""

from __future__ import annotations

import anyio
import pytest
from _ledger import Ledger
from _node import PrivateNode
from _workload import Fault, Run, delete_queue, wait_until, workload

import trio_msg

pytestmark = pytest.mark.anyio


def _restart(node: PrivateNode, *, crash: bool) -> Fault:
    async def fault(run: Run) -> None:
        before = run.producer_conn.incarnation
        await anyio.to_thread.run_sync(node.crash_restart if crash else node.restart)
        await wait_until(
            lambda: all(
                c.incarnation > before and c.is_open for c in (run.producer_conn, run.consumer_conn)
            ),
            30,
            "revived",
        )

    return fault


@pytest.mark.parametrize("crash", [False, True], ids=["stop_start", "kill_9"])
async def test_node_restart_loses_nothing_confirmed(
    node: PrivateNode, unique_name: str, ledger: Ledger, crash: bool
) -> None:
    queue = trio_msg.Queue(unique_name, durable=True)
    try:
        run = await workload(
            node.url,
            queue,
            ledger,
            [_restart(node, crash=crash)],
            separate=True,
            persistent=True,
            timeout=90,
        )
        ledger.check()
        assert run.producer_conn.incarnation >= 2
        assert run.consumer_conn.incarnation >= 2
    finally:
        await delete_queue(node.url, queue.name)


async def test_confirmed_persistent_messages_wait_out_a_restart_in_the_queue(
    node: PrivateNode, unique_name: str, ledger: Ledger
) -> None:
    """No consumer during the restart: what was confirmed is still in the
    durable queue afterwards, and a reviving consumer gets all of it."""
    queue = trio_msg.Queue(unique_name, durable=True)
    try:
        async with (
            trio_msg.connect(node.url, revive=True) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            for i in range(50):
                ledger.publishing(i)
                await producer.publish(
                    i, routing_key=queue.name, declare=[queue], delivery_mode=2, retry=True
                )
                ledger.confirm(i)
            await anyio.to_thread.run_sync(node.restart)
            with anyio.fail_after(30):
                async with trio_msg.Consumer(conn, queues=[queue]) as consumer:
                    async for message in consumer:
                        ledger.consume(message.payload)
                        await message.ack()
                        if ledger.complete():
                            break
            assert conn.incarnation >= 2
        ledger.check(min_confirmed=50)
    finally:
        await delete_queue(node.url, queue.name)
