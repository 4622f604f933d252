"""Cancellation is local: every request, cancelled at its first checkpoint,
sends nothing; cancelled while waiting for its reply, it leaves the channel
open, its late reply is discarded and the next request gets its own.

The fake broker holds replies back exactly (``broker.hold``), so "while
waiting for the reply" needs no timing luck.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from trio_msg import Consumer, Producer, Queue
from trio_msg._protocol.events import Delivery
from trio_msg.channel import Channel
from trio_msg.connection import connect

from .fake_broker import URL, FakeBroker

Call = Callable[[Channel], Awaitable[Any]]


def _sink() -> Any:
    send, _receive = anyio.create_memory_object_stream[Delivery](10)
    return send


#: Request frame name -> a call that sends it.
REQUESTS: dict[str, Call] = {
    "Queue.Declare": lambda ch: ch.queue_declare("stale"),
    "Queue.Bind": lambda ch: ch.queue_bind("q", "ex", "rk"),
    "Queue.Unbind": lambda ch: ch.queue_unbind("q", "ex", "rk"),
    "Queue.Purge": lambda ch: ch.queue_purge("q"),
    "Queue.Delete": lambda ch: ch.queue_delete("q"),
    "Exchange.Declare": lambda ch: ch.exchange_declare("ex", "topic"),
    "Exchange.Delete": lambda ch: ch.exchange_delete("ex"),
    "Exchange.Bind": lambda ch: ch.exchange_bind("dst", "src", "rk"),
    "Exchange.Unbind": lambda ch: ch.exchange_unbind("dst", "src", "rk"),
    "Basic.Qos": lambda ch: ch.basic_qos(prefetch_count=7),
    "Basic.Recover": lambda ch: ch.basic_recover(),
    "Basic.Get": lambda ch: ch.basic_get("q"),
    "Basic.Consume": lambda ch: ch.basic_consume("q", _sink()),
    "Confirm.Select": lambda ch: ch.confirm_select(),
    "Tx.Select": lambda ch: ch.tx_select(),
    "Channel.Flow": lambda ch: ch.flow(True),
}


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


async def next_request_gets_its_own_reply(ch: Channel) -> None:
    with anyio.fail_after(5):
        ok = await ch.queue_declare("next")
    assert ok.queue == "next"
    assert ch.is_open


@pytest.mark.anyio
@pytest.mark.parametrize("name", REQUESTS)
async def test_cancelled_at_first_checkpoint_sends_nothing(broker: FakeBroker, name: str) -> None:
    async with broker, connect(URL) as conn, conn.channel() as ch:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await REQUESTS[name](ch)
            pytest.fail("no checkpoint before the request was queued")
        assert scope.cancelled_caught
        await next_request_gets_its_own_reply(ch)
    sent = broker.names(ch.channel_id).count(name)
    assert sent == (1 if name == "Queue.Declare" else 0)  # only the next one


@pytest.mark.anyio
@pytest.mark.parametrize("name", REQUESTS)
async def test_cancelled_while_waiting_late_reply_is_discarded(
    broker: FakeBroker, name: str
) -> None:
    broker.hold.add(name)
    async with broker, connect(URL) as conn, conn.channel() as ch:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await REQUESTS[name](ch)
                pytest.fail("returned without its reply")

            tg.start_soon(call)
            await broker.wait_for(name)
            await settle()
            tg.cancel_scope.cancel()
        assert ch.is_open
        # The next request goes out behind the abandoned one; the broker
        # answers both in order, the stale reply first.
        async with anyio.create_task_group() as tg:
            tg.start_soon(next_request_gets_its_own_reply, ch)
            await settle()
            broker.hold.clear()
            await broker.release()
    sent = broker.names(ch.channel_id).count(name)
    assert sent == (2 if name == "Queue.Declare" else 1)  # never re-sent


@pytest.mark.anyio
async def test_stale_declare_ok_does_not_answer_the_next_declare(broker: FakeBroker) -> None:
    """Same method, same reply type: only order tells the replies apart."""
    broker.hold.add("Queue.Declare")
    async with broker, connect(URL) as conn, conn.channel() as ch:
        with anyio.move_on_after(0.05) as scope:
            await ch.queue_declare("first")
        assert scope.cancelled_caught
        results: list[str] = []

        async def second() -> None:
            results.append((await ch.queue_declare("second")).queue)

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await settle()
            assert results == []
            await broker.release()  # DeclareOk(first): discarded
            await settle()
            assert results == []
            await broker.release()  # DeclareOk(second)
        assert results == ["second"]
        broker.hold.clear()
        await next_request_gets_its_own_reply(ch)


@pytest.mark.anyio
async def test_abandoned_consume_is_cancelled_on_the_broker(broker: FakeBroker) -> None:
    broker.hold.add("Basic.Consume")
    async with broker, connect(URL) as conn, conn.channel() as ch:
        with anyio.move_on_after(0.05):
            await ch.basic_consume("q", _sink(), consumer_tag="orphan")
        broker.hold.clear()
        await broker.release()
        cancel = await broker.wait_for("Basic.Cancel")
        assert cancel.consumer_tag == "orphan"
        await next_request_gets_its_own_reply(ch)


@pytest.mark.anyio
async def test_abandoned_get_gives_its_message_back(broker: FakeBroker) -> None:
    broker.hold.add("Basic.Get")
    broker.get_queue.append(b"unwanted")
    async with broker, connect(URL) as conn, conn.channel() as ch:
        with anyio.move_on_after(0.05):
            await ch.basic_get("q")
        broker.hold.clear()
        await broker.release()
        await next_request_gets_its_own_reply(ch)
    settles = [
        (r.name, r.frame.delivery_tag, r.frame.requeue)
        for r in broker.received
        if r.name in ("Basic.Reject", "Basic.Nack")
    ]
    assert settles in ([("Basic.Reject", 1, True)], [("Basic.Nack", 1, True)])
    assert broker.count("Basic.Ack") == 0


@pytest.mark.anyio
async def test_cancelled_basic_cancel_requeues_what_comes_after(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn, conn.channel() as ch:
        send, receive = anyio.create_memory_object_stream[Delivery](10)
        tag = await ch.basic_consume("q", send, consumer_tag="c1")
        broker.hold.add("Basic.Cancel")
        with anyio.move_on_after(0.05):
            await ch.basic_cancel(tag)
        # A delivery already on its way when the broker saw the cancel.
        delivery_tag = await broker.deliver("c1", b"in flight")
        broker.hold.clear()
        await broker.release()
        await next_request_gets_its_own_reply(ch)
        with pytest.raises(anyio.EndOfStream):
            receive.receive_nowait()
    rejects = broker.frames("Basic.Reject") + broker.frames("Basic.Nack")
    assert [(f.delivery_tag, f.requeue) for f in rejects] == [(delivery_tag, True)]


@pytest.mark.trio
async def test_cancelled_open_channel_closes_the_channel_it_got(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    broker.hold.add("Channel.Open")
    async with broker, connect(URL) as conn:
        async with trio.open_nursery() as nursery:

            async def release_later() -> None:
                await broker.wait_for("Channel.Close")
                await trio.sleep(1)
                broker.hold.clear()
                await broker.release()

            nursery.start_soon(release_later)
            start = trio.current_time()
            with trio.move_on_after(0.5) as scope:
                await conn.open_channel()
            assert scope.cancelled_caught
            # The cancelled call closed the channel before returning.
            assert trio.current_time() - start == pytest.approx(1.5)
        assert broker.names(1) == ["Channel.Open", "Channel.Close"]
        async with conn.channel() as ch:
            await next_request_gets_its_own_reply(ch)


@pytest.mark.anyio
async def test_cancelled_confirmed_publish_leaves_the_channel_usable(
    broker: FakeBroker,
) -> None:
    broker.auto_confirm = False
    async with broker, connect(URL) as conn, Producer(conn) as producer:
        with anyio.move_on_after(0.05) as scope:
            await producer.publish(b"first", routing_key="q")
        assert scope.cancelled_caught
        # It was sent (the broker reads it, on a loaded machine maybe only
        # now); its outcome is unknown.
        with anyio.fail_after(5):
            await broker.wait_published(1)
        assert len(broker.published) == 1
        done = anyio.Event()

        async def second() -> None:
            await producer.publish(b"second", routing_key="q")
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await broker.wait_published(2)
            await broker.confirm(producer.channel.channel_id, 1)  # the first one's ack
            await settle()
            assert not done.is_set()
            await broker.confirm(producer.channel.channel_id, 2)
        assert done.is_set()
        await next_request_gets_its_own_reply(producer.channel)


@pytest.mark.anyio
async def test_cancelling_iteration_cancels_nothing_on_the_broker(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn:
        async with Consumer(conn, queues=[Queue("q")], prefetch_count=5) as consumer:
            (tag,) = broker.consumers
            with anyio.move_on_after(0.05) as scope:
                await consumer.__anext__()
            assert scope.cancelled_caught
            assert broker.count("Basic.Cancel") == 0
            await broker.deliver(tag, b"still consuming")
            with anyio.fail_after(5):
                message = await consumer.__anext__()
            assert message.body == b"still consuming"
            await message.ack()
        assert [f.consumer_tag for f in broker.frames("Basic.Cancel")] == [tag]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "call",
    [
        "declare",
        "qos",
        "consume",
        "purge",
        "cancel",
        "recover",
    ],
)
async def test_consumer_methods_cancelled_at_first_checkpoint(
    broker: FakeBroker, call: str
) -> None:
    queue = Queue("q")
    async with (
        broker,
        connect(URL) as conn,
        Consumer(conn, queues=[queue], prefetch_count=5) as consumer,
    ):
        before = broker.names(consumer.channel.channel_id)
        methods: dict[str, Callable[[], Awaitable[Any]]] = {
            "declare": consumer.declare,
            "qos": lambda: consumer.qos(prefetch_count=1),
            "consume": lambda: consumer.consume(),
            "purge": consumer.purge,
            "cancel": consumer.cancel,
            "recover": consumer.recover,
        }
        if call == "consume":
            await consumer.cancel()
            before = broker.names(consumer.channel.channel_id)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await methods[call]()
        assert scope.cancelled_caught
        assert broker.names(consumer.channel.channel_id) == before
        assert consumer.channel.is_open
        if call != "consume":
            assert consumer.consuming_from(queue)


def _closers(conn: Any) -> dict[str, Callable[[], Any]]:
    return {
        "channel": conn.channel,
        "Producer": lambda: Producer(conn),
        "Consumer": lambda: Consumer(conn, queues=[Queue("q")]),
        "SimpleQueue": lambda: conn.SimpleQueue("q"),
    }


@pytest.mark.anyio
@pytest.mark.parametrize("what", ["channel", "Producer", "Consumer", "SimpleQueue"])
async def test_an_exception_leaving_a_cancelled_block_is_not_replaced(
    broker: FakeBroker, what: str
) -> None:
    """Leaving the ``async with`` with an exception in a cancelled scope:
    the close still happens, and the exception goes on (a Cancelled from
    the close would replace it, and the cancelled scope would swallow it)."""
    async with broker, connect(URL) as conn:
        with pytest.raises(LookupError, match="the body's"):
            with anyio.CancelScope() as scope:
                async with _closers(conn)[what]() as thing:
                    if what == "SimpleQueue":
                        await thing.put(b"x")  # (it opens its channels lazily)
                    scope.cancel()
                    raise LookupError("the body's")
        assert broker.names().count("Channel.Close") >= 1
        async with conn.channel() as ch:  # the connection goes on
            await ch.queue_declare("after")
