"""Forced closes (``320 CONNECTION_FORCED`` from ``rabbitmqctl close_connection``)
while a producer publishes with confirms and a consumer acks."""

from __future__ import annotations

import anyio
import pytest
from _broker import close_connection_by_name
from _ledger import Ledger
from _workload import FAST, Fault, Run, delete_queue, queue_depth, workload

import trio_msg

pytestmark = pytest.mark.anyio


def _force_close(name: str) -> Fault:
    async def fault(run: Run) -> None:
        await anyio.to_thread.run_sync(close_connection_by_name, name, "trio_msg fault test")

    return fault


@pytest.mark.parametrize("separate", [False, True], ids=["one_connection", "two_connections"])
async def test_forced_close_while_publishing_with_confirms(
    broker_url: str, unique_name: str, ledger: Ledger, separate: bool
) -> None:
    """Every confirmed message arrives; both sides move to the next
    incarnation by themselves.  (Not an auto-delete queue: the broker would
    delete one, with its messages, when the consumer's connection went.)"""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        run = await workload(
            broker_url,
            queue,
            ledger,
            [_force_close(unique_name)],
            separate=separate,
            connection_name=unique_name,
        )
        ledger.check()
        # every connection by that name was closed and came back
        assert run.producer_conn.incarnation == 2
        assert run.consumer_conn.incarnation == 2
    finally:
        await delete_queue(broker_url, queue.name)


async def test_forced_close_during_a_pipeline_with_retry(
    broker_url: str, unique_name: str, ledger: Ledger
) -> None:
    """A window of unconfirmed publishes when the close lands: the unknown
    ones are republished; every message is in the queue, some maybe twice."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        with anyio.fail_after(60):
            async with (
                trio_msg.connect(broker_url, revive=FAST, connection_name=unique_name) as conn,
                trio_msg.Producer(conn) as producer,
            ):
                async with conn.channel() as ch:
                    await trio_msg.maybe_declare(queue, ch)
                closed = anyio.Event()

                async def close_it() -> None:
                    await anyio.to_thread.run_sync(close_connection_by_name, unique_name)
                    closed.set()

                n = 0
                async with anyio.create_task_group() as tg, producer.pipeline(200) as pipe:
                    tg.start_soon(close_it)
                    # publish until the close has landed, and 300 more after it
                    after = 300
                    while after:
                        if closed.is_set():
                            after -= 1
                        ledger.publishing(n)
                        await pipe.publish(n, routing_key=queue.name, retry=True)
                        n += 1
                        if n % 5 == 0 and not closed.is_set():
                            await anyio.sleep(0.005)  # pacing: rabbitmqctl takes seconds
                assert pipe.unknown == 0 and pipe.nacked == 0 and pipe.acked == n
                for i in range(n):
                    ledger.confirm(i)
                assert conn.incarnation == 2
            async with (
                trio_msg.connect(broker_url) as conn,
                trio_msg.Consumer(conn, queues=[queue], no_ack=True) as consumer,
            ):
                async for message in consumer:
                    ledger.consume(message.payload)
                    if ledger.complete():
                        break
            left = await queue_depth(broker_url, queue.name)
        figures = ledger.check(min_confirmed=n)
        # at least once: what came twice (or is still queued) was republished
        assert figures["duplicates"] + left <= pipe.republished
    finally:
        await delete_queue(broker_url, queue.name)
