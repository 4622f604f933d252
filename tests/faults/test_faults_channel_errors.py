"""Channel errors while publishes wait for their confirms: the broker
closes the producer's channel (404: no such exchange)."""

from __future__ import annotations

import anyio
import pytest
from _ledger import Ledger
from _workload import FAST, delete_queue

import trio_msg
from trio_msg.errors import MessageOutcomeUnknown, NotFound

pytestmark = pytest.mark.anyio


async def _consume_all(broker_url: str, queue: trio_msg.Queue, ledger: Ledger) -> None:
    with anyio.fail_after(15):
        async with (
            trio_msg.connect(broker_url) as conn,
            trio_msg.Consumer(conn, queues=[queue]) as consumer,
        ):
            async for message in consumer:
                ledger.consume(message.payload)
                await message.ack()
                if ledger.complete():
                    return


@pytest.mark.parametrize("revive", [False, True], ids=["plain", "reviving"])
async def test_a_refused_publish_raises_not_found_and_the_producer_goes_on(
    broker_url: str, unique_name: str, ledger: Ledger, revive: bool
) -> None:
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(broker_url, revive=FAST if revive else False) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            for i in range(10):
                ledger.publishing(i)
                await producer.publish(i, routing_key=queue.name, declare=[queue])
                ledger.confirm(i)
            with anyio.fail_after(10), pytest.raises(NotFound):
                await producer.publish("x", exchange=unique_name + ".missing")
            # the producer is not dead: it publishes on a new channel
            for i in range(10, 20):
                ledger.publishing(i)
                with anyio.fail_after(10):
                    await producer.publish(i, routing_key=queue.name)
                ledger.confirm(i)
            assert conn.incarnation == 1
        await _consume_all(broker_url, queue, ledger)
        ledger.check(min_confirmed=20)
    finally:
        await delete_queue(broker_url, queue.name)


async def test_channel_error_with_a_window_of_confirms_in_flight(
    broker_url: str, unique_name: str, ledger: Ledger
) -> None:
    """A pipeline with publishes in flight when one of them closes the
    channel: those the broker confirmed are all there; the rest are unknown,
    never silently "acked"; the refused one says why (NotFound); publishing
    goes on afterwards."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(broker_url, revive=FAST) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            async with conn.channel() as ch:
                await trio_msg.maybe_declare(queue, ch)
            results = {}
            async with producer.pipeline(max_unconfirmed=200, raise_on_failure=False) as pipe:
                for i in range(100):
                    ledger.publishing(i)
                    results[i] = await pipe.publish(i, routing_key=queue.name)
                bad = await pipe.publish("x", exchange=unique_name + ".missing")
            for i, result in results.items():
                if result.outcome is trio_msg.Outcome.ACK:
                    ledger.confirm(i)
            # refused: never "acked" (nacked or unknown), and the reason says why
            assert bad.outcome in (trio_msg.Outcome.NACK, trio_msg.Outcome.UNKNOWN)
            assert isinstance(bad.reason, NotFound)
            assert pipe.unknown + pipe.nacked >= 1
            for result in results.values():
                assert result.outcome is not trio_msg.Outcome.NACK  # not refused: ours
            assert pipe.acked == len(ledger.confirmed)
            # and the producer goes on
            for i in range(100, 110):
                ledger.publishing(i)
                with anyio.fail_after(10):
                    await producer.publish(i, routing_key=queue.name)
                ledger.confirm(i)
        await _consume_all(broker_url, queue, ledger)
        ledger.check(min_confirmed=10)
    finally:
        await delete_queue(broker_url, queue.name)


async def test_retry_does_not_retry_what_a_new_connection_cannot_cure(
    broker_url: str, unique_name: str
) -> None:
    async with (
        trio_msg.connect(broker_url, revive=FAST) as conn,
        trio_msg.Producer(conn) as producer,
    ):
        with anyio.fail_after(5), pytest.raises(NotFound):
            await producer.publish("x", exchange=unique_name + ".missing", retry=True)
        assert conn.incarnation == 1


async def test_in_flight_publishes_of_a_closed_channel_are_unknown(
    broker_url: str, unique_name: str
) -> None:
    """A plain publish waiting for its confirm when another task's publish
    closes the channel: it raises MessageOutcomeUnknown (reason: the channel
    error), never hangs."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(broker_url) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            async with conn.channel() as ch:
                await trio_msg.maybe_declare(queue, ch)
            outcomes: list[object] = []

            async def publish(i: int) -> None:
                try:
                    await producer.publish(i, routing_key=queue.name)
                    outcomes.append("ack")
                except MessageOutcomeUnknown as exc:
                    outcomes.append(type(exc.reason))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(publish, i)
                    await anyio.wait_all_tasks_blocked()  # all 20 sent, waiting
                    with pytest.raises((NotFound, MessageOutcomeUnknown)):
                        await producer.publish("x", exchange=unique_name + ".missing")
            assert len(outcomes) == 20
            assert set(outcomes) <= {"ack", NotFound}
    finally:
        await delete_queue(broker_url, queue.name)
