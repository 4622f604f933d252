"""A memory alarm, on the suite's private node (never the shared one):
publishers wait while the broker blocks them, nothing is lost, and a
connection closed while blocked closes within its bound."""

from __future__ import annotations

import anyio
import pytest
from _broker import DEFAULT_MEMORY_WATERMARK
from _ledger import Ledger
from _node import PrivateNode
from _workload import Run, delete_queue, wait_until, workload

import trio_msg
from trio_msg.errors import TrioMsgError

pytestmark = pytest.mark.anyio


async def _set_watermark(node: PrivateNode, value: str) -> None:
    await anyio.to_thread.run_sync(node.set_memory_watermark, value)


async def test_publishers_wait_out_an_alarm_and_nothing_is_lost(
    node: PrivateNode, unique_name: str, ledger: Ledger
) -> None:
    queue = trio_msg.Queue(unique_name, durable=True)

    async def alarm(run: Run) -> None:
        try:
            await _set_watermark(node, "0")
            await wait_until(lambda: run.producer_conn.blocked, 15, "connection.blocked")
            confirmed = len(ledger.confirmed)
            await anyio.wait_all_tasks_blocked()
            # blocked: the producer waits, nothing more is confirmed
            assert len(ledger.confirmed) == confirmed
            run.extra["blocked_at"] = confirmed
        finally:
            await _set_watermark(node, DEFAULT_MEMORY_WATERMARK)
        await wait_until(lambda: not run.producer_conn.blocked, 15, "connection.unblocked")

    try:
        run = await workload(
            node.url, queue, ledger, [alarm], separate=True, persistent=True, timeout=60
        )
        ledger.check()
        # no connection was lost over it
        assert run.producer_conn.incarnation == run.consumer_conn.incarnation == 1
        assert len(ledger.confirmed) > run.extra["blocked_at"]
    finally:
        await delete_queue(node.url, queue.name)


async def test_close_while_blocked_returns_within_its_bound(
    node: PrivateNode, unique_name: str
) -> None:
    """The broker stops reading a blocked connection's socket, so the close
    handshake cannot finish: ``aclose`` gives up after ``close_timeout`` (and
    its short drains), and the publish waiting inside gets an error."""
    queue = trio_msg.Queue(unique_name, durable=True)
    errors: list[BaseException] = []
    try:
        async with trio_msg.connect(node.url, revive=True) as conn:
            conn.close_timeout = 1.0
            async with trio_msg.Producer(conn) as producer:
                await producer.publish("before", routing_key=queue.name, declare=[queue])
                try:
                    await _set_watermark(node, "0")
                    async with anyio.create_task_group() as tg:

                        async def publish() -> None:
                            try:
                                await producer.publish("during", routing_key=queue.name)
                            except TrioMsgError as exc:
                                errors.append(exc)

                        tg.start_soon(publish)
                        await wait_until(lambda: conn.blocked, 15, "connection.blocked")
                        await anyio.wait_all_tasks_blocked()
                        # bound: close_timeout, + 1 s draining + 1 s closing the
                        # socket; + slack for a loaded machine
                        with anyio.fail_after(conn.close_timeout + 2 + 5):
                            await conn.aclose()
                    assert not conn.is_open
                finally:
                    await _set_watermark(node, DEFAULT_MEMORY_WATERMARK)
        assert len(errors) == 1, errors
    finally:
        await delete_queue(node.url, queue.name)
