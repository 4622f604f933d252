"""A channel's publishes wait while the broker blocks the connection (a
memory alarm), on the suite's private node: alarms are node-wide, and never
raised on the shared one."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _broker import memory_alarm
from _node import PrivateNode

from trio_msg import Channel, Connection, Outcome, PublishResult, connect

pytestmark = pytest.mark.anyio


async def test_publish_waits_while_the_broker_is_blocked(node: PrivateNode) -> None:
    async with connect(node.url, revive=False) as conn, conn.channel() as ch:
        await _blocked_publishes(conn, ch, node)


async def _blocked_publishes(conn: Connection, ch: Channel, node: PrivateNode) -> None:
    q = (await ch.queue_declare("", exclusive=True)).queue
    await ch.confirm_select()
    alarm: Any = memory_alarm(node=node.name)
    await anyio.to_thread.run_sync(alarm.__enter__)
    try:
        # The broker blocks a connection when it next publishes.
        first = await ch.basic_publish(b"trigger", "", q)
        assert first is not None
        with anyio.fail_after(5):
            while not conn.blocked:
                await anyio.sleep(0.02)
        with anyio.move_on_after(0.5) as waited:
            await ch.basic_publish(b"while blocked", "", q)
            pytest.fail("a publish went through while the broker blocked us")
        assert waited.cancelled_caught
        late: list[PublishResult | None] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def publish_late() -> None:
                    late.append(await ch.basic_publish(b"after the alarm", "", q))

                tg.start_soon(publish_late)
                await anyio.sleep(0.1)
                assert late == []  # still waiting
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(alarm.__exit__, None, None, None)
                alarm = None
    finally:
        if alarm is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(alarm.__exit__, None, None, None)
    assert not conn.blocked
    [result] = late
    assert result is not None
    with anyio.fail_after(10):
        assert await first.wait() is Outcome.ACK
        assert await result.wait() is Outcome.ACK
    # the cancelled publish queued nothing
    bodies = []
    while (msg := await ch.basic_get(q, no_ack=True)) is not None:
        bodies.append(msg.body)
    assert bodies == [b"trigger", b"after the alarm"]
