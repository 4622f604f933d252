"""Cancellation storms around publish and receive, with the link cut under
them: many publishes and receives cancelled at random points (before the
message is queued, while it waits for its confirm, while a consumer waits
or moves to a new connection).  A cancelled publish has an unknown outcome;
nothing confirmed may be lost, and the connection must stay usable."""

from __future__ import annotations

import random

import anyio
import pytest
from _ledger import Ledger
from _proxy import TcpProxy
from _workload import FAST, delete_queue, wait_until

import trio_msg
from trio_msg.errors import TrioMsgError

pytestmark = pytest.mark.anyio


def _url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}//"


def _timeout(rng: random.Random) -> float:
    """Mostly room enough to finish; one time in six a deadline already
    passed (cancelled at the call's first checkpoint, whatever the load),
    one in six a few milliseconds at most (cancelled wherever it is then)."""
    draw = rng.random()
    if draw < 1 / 6:
        return 0.0
    return rng.uniform(0, 0.004) if draw < 1 / 3 else 1.0


@pytest.mark.parametrize("seed", [1, 2])
async def test_cancellation_storm_around_publish_and_receive(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger, seed: int
) -> None:
    rng = random.Random(seed)
    queue = trio_msg.Queue(unique_name, durable=False)
    publishers, per_publisher = 6, 60
    cancelled = {"publish": 0, "receive": 0}
    try:
        with anyio.fail_after(90):
            async with (
                trio_msg.connect(_url(proxy), revive=FAST) as conn,
                trio_msg.Producer(conn) as producer,
                trio_msg.Consumer(conn, queues=[queue], prefetch_count=20) as consumer,
            ):
                published = anyio.Event()
                finished = anyio.Event()

                async def publisher(k: int) -> None:
                    for j in range(per_publisher):
                        msg_id = k * per_publisher + j
                        ledger.publishing(msg_id)
                        with anyio.move_on_after(_timeout(rng)) as scope:
                            await producer.publish(msg_id, routing_key=queue.name, retry=True)
                            ledger.confirm(msg_id)
                        if scope.cancelled_caught:
                            cancelled["publish"] += 1

                async def receiver() -> None:
                    while True:
                        with anyio.move_on_after(_timeout(rng)) as scope:
                            message = await consumer.__anext__()
                            ledger.consume(message.payload)
                            try:
                                await message.ack()
                            except TrioMsgError:
                                pass  # its channel is gone: redelivered
                        if scope.cancelled_caught:
                            cancelled["receive"] += 1
                        if published.is_set() and ledger.complete():
                            finished.set()
                            return

                async def cutter() -> None:
                    total = publishers * per_publisher
                    for at in sorted(rng.sample(range(total // 10, total * 3 // 4), 3)):
                        await wait_until(lambda: len(ledger.sent) >= at, 30, "publishing")  # noqa: B023
                        before = conn.incarnation
                        proxy.cut(reset=rng.random() < 0.5)
                        await wait_until(
                            lambda: conn.incarnation > before and conn.is_open,  # noqa: B023
                            15,
                            "revived",
                        )

                async with anyio.create_task_group() as tg:
                    tg.start_soon(receiver)
                    async with anyio.create_task_group() as pubs:
                        pubs.start_soon(cutter)
                        for k in range(publishers):
                            pubs.start_soon(publisher, k)
                    published.set()
                    if ledger.complete():
                        finished.set()
                    await finished.wait()
                    tg.cancel_scope.cancel()

                # usable afterwards: one more message, there and back
                await producer.publish(-1, routing_key=queue.name)
                with anyio.fail_after(10):
                    while True:
                        message = await consumer.__anext__()
                        await message.ack()
                        if message.payload == -1:
                            break
                assert conn.incarnation == 4
            async with trio_msg.connect(broker_url) as other, other.channel() as ch:
                ok = await ch.queue_declare(queue.name, passive=True)
                assert ok.consumer_count == 0  # ours left with its connection
        ledger.check()
        print(f"cancelled: {cancelled}")
        assert cancelled["publish"] > 0 and cancelled["receive"] > 0
    finally:
        await delete_queue(broker_url, queue.name)


async def test_consumer_cancelled_while_moving_over_tries_again(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    """Cancel the iteration while its consumer waits for the connection,
    and again while it redeclares on the new one (the link stalled): the
    next iteration finishes the move and gets the message."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(_url(proxy), revive=FAST) as conn,
            trio_msg.Consumer(conn, queues=[queue], prefetch_count=1) as consumer,
        ):
            proxy.refuse_new()
            proxy.cut()
            await wait_until(lambda: not conn.is_open, 5, "the cut noticed")
            with anyio.move_on_after(0.3) as scope:
                await consumer.__anext__()
            assert scope.cancelled_caught
            proxy.heal()
            with anyio.fail_after(10):
                await conn.wait_connected()
            proxy.stall()
            with anyio.move_on_after(0.3) as scope:
                await consumer.__anext__()  # opening a channel / declaring: held
            assert scope.cancelled_caught
            proxy.resume()
            async with trio_msg.connect(broker_url) as other, trio_msg.Producer(other) as producer:
                await producer.publish("hello", routing_key=queue.name)
            with anyio.fail_after(10):
                message = await consumer.__anext__()
            assert message.payload == "hello"
            await message.ack()
            # one consumer on the queue, not one per attempt
            async with trio_msg.connect(broker_url) as other, other.channel() as ch:
                ok = await ch.queue_declare(queue.name, passive=True)
            assert ok.consumer_count == 1
    finally:
        await delete_queue(broker_url, queue.name)


async def test_producer_cancelled_while_moving_over_keeps_confirms(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    """A producer cancelled between opening its new channel and turning
    confirms on must not publish unconfirmed afterwards."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(_url(proxy), revive=FAST) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            await producer.publish("one", routing_key=queue.name, declare=[queue])
            proxy.cut()
            await wait_until(lambda: not conn.is_open, 5, "the cut noticed")
            with anyio.fail_after(10):
                await conn.wait_connected()
            proxy.stall()
            with anyio.move_on_after(0.3) as scope:
                await producer.publish("held", routing_key=queue.name)
            assert scope.cancelled_caught
            proxy.resume()
            with anyio.fail_after(10):
                result = await producer.publish("two", routing_key=queue.name)
            assert result is not None and result.outcome is trio_msg.Outcome.ACK
            assert producer.channel.confirming
    finally:
        await delete_queue(broker_url, queue.name)
