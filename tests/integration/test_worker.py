"""The Worker (kombu's ConsumerMixin on trio's terms) against the real broker.

Handlers are held on events, never timed: a test waits for "3 handlers are
running", then releases them, and reads what the broker holds afterwards.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

import trio_msg
from trio_msg import Message, Producer, Queue, Worker

pytestmark = pytest.mark.anyio

TIMEOUT = 10  # seconds for anything the broker should do at once


class Gauge:
    """A number that tasks can wait on (how many handlers are running)."""

    def __init__(self) -> None:
        self.value = 0
        self.max = 0
        self.total = 0
        self._changed = anyio.Event()

    def add(self, delta: int) -> None:
        self.value += delta
        self.max = max(self.max, self.value)
        if delta > 0:
            self.total += delta
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[Gauge], bool]) -> None:
        while not predicate(self):
            await self._changed.wait()


@pytest.fixture
async def conn(broker_url: str) -> AsyncIterator[trio_msg.Connection]:
    async with trio_msg.connect(broker_url) as connection:
        yield connection


@pytest.fixture
async def names(broker_url: str, unique_name: str) -> AsyncIterator[list[str]]:
    """Queue names to use (``unique_name`` plus suffixes); all deleted afterwards."""
    used = [unique_name]
    yield used
    with anyio.fail_after(TIMEOUT):
        async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
            for name in used:
                await ch.queue_delete(name)


def make_queue(names: list[str], suffix: str = "", **kwargs: Any) -> Queue:
    name = f"{names[0]}.{suffix}" if suffix else names[0]
    if name not in names:
        names.append(name)
    kwargs.setdefault("durable", False)
    return Queue(name, **kwargs)


async def publish(conn: trio_msg.Connection, queue: Queue, bodies: list[Any]) -> None:
    async with Producer(conn) as producer:
        for body in bodies:
            await producer.publish(body, routing_key=queue.name, declare=[queue])


async def queue_counts(conn: trio_msg.Connection, name: str) -> tuple[int, int]:
    """(ready messages, consumers), as the broker says."""
    async with conn.channel() as ch:
        ok = await ch.queue_declare(name, passive=True)
        return ok.message_count, ok.consumer_count


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll the broker until *check* holds (bounded by the caller's timeout)."""
    while not await check():
        await anyio.sleep(0.02)


async def test_concurrency_is_bounded_within_the_prefetch(
    conn: trio_msg.Connection, names: list[str]
) -> None:
    queue = make_queue(names)
    count, concurrency, prefetch = 20, 3, 5
    running = Gauge()
    send_token, receive_token = anyio.create_memory_object_stream[None](count)
    seen: list[int] = []

    async def handler(message: Message) -> None:
        running.add(1)
        try:
            await receive_token.receive()
            seen.append(message.payload)
        finally:
            running.add(-1)

    worker = Worker(
        conn, [queue], handler, concurrency=concurrency, prefetch_count=prefetch, grace_period=1
    )
    with anyio.fail_after(TIMEOUT):
        await publish(conn, queue, list(range(count)))
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await running.wait_for(lambda g: g.value == concurrency)
            # 3 running and 2 waiting in the worker's buffer: the broker
            # delivered the prefetch window and no more.
            await until(lambda: _ready_is(conn, queue.name, count - prefetch))
            for left in range(count, 0, -1):
                await running.wait_for(lambda g, left=left: g.value == min(concurrency, left))
                send_token.send_nowait(None)
            await running.wait_for(lambda g: g.total == count and g.value == 0)
            worker.shutdown()
    assert running.max == concurrency
    assert sorted(seen) == list(range(count))
    assert (worker.handled, worker.failed, worker.cancelled) == (count, 0, 0)
    assert worker.max_in_flight == concurrency
    assert await queue_counts(conn, queue.name) == (0, 0)  # all acked, consumer gone


async def _ready_is(conn: trio_msg.Connection, name: str, expected: int) -> bool:
    ready, _ = await queue_counts(conn, name)
    assert ready >= expected, f"the broker delivered more than the prefetch: {ready} ready"
    return ready == expected


async def test_cancellation_lets_in_flight_handlers_finish(
    conn: trio_msg.Connection, names: list[str]
) -> None:
    queue = make_queue(names)
    count, concurrency, prefetch = 10, 2, 4
    running = Gauge()
    finish = anyio.Event()
    finished: list[int] = []
    returned = anyio.Event()

    async def handler(message: Message) -> None:
        running.add(1)
        await finish.wait()  # not cut short by the cancellation of run()
        finished.append(message.payload)

    # The default grace period (30 s) is far longer than the test takes.
    worker = Worker(conn, [queue], handler, concurrency=concurrency, prefetch_count=prefetch)

    async def run_worker(*, task_status: anyio.abc.TaskStatus[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await worker.run()
        returned.set()

    with anyio.fail_after(TIMEOUT):
        await publish(conn, queue, list(range(count)))
        async with anyio.create_task_group() as tg:
            scope = await tg.start(run_worker)
            await running.wait_for(lambda g: g.value == concurrency)
            scope.cancel()
            # The worker stops consuming (the broker sees no consumer) ...
            await until(lambda: _no_consumer(conn, queue.name))
            # ... but waits for the two handlers in flight.
            assert not returned.is_set()
            assert running.total == concurrency  # none started after the cancel
            finish.set()
            await returned.wait()
    assert len(finished) == concurrency
    assert (worker.handled, worker.cancelled) == (concurrency, 0)
    # The two handled were acked; the rest (prefetched or never sent) are back.
    assert await queue_counts(conn, queue.name) == (count - concurrency, 0)


async def _no_consumer(conn: trio_msg.Connection, name: str) -> bool:
    _, consumers = await queue_counts(conn, name)
    return consumers == 0


async def test_grace_period_over_cancels_and_requeues(
    conn: trio_msg.Connection, names: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(names)
    running = Gauge()
    cut_short = 0

    async def handler(message: Message) -> None:
        nonlocal cut_short
        running.add(1)
        try:
            await anyio.Event().wait()  # never finishes by itself
        except anyio.get_cancelled_exc_class():
            cut_short += 1
            raise

    worker = Worker(conn, [queue], handler, concurrency=3, grace_period=0)
    caplog.set_level(logging.INFO, logger="trio_msg.worker")
    with anyio.fail_after(TIMEOUT):
        await publish(conn, queue, list(range(5)))
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await running.wait_for(lambda g: g.value == 3)
            worker.shutdown()
    assert cut_short == 3
    assert (worker.handled, worker.failed, worker.cancelled) == (0, 0, 3)
    assert await queue_counts(conn, queue.name) == (5, 0)  # every message back
    assert any("cancelling them" in r.getMessage() for r in caplog.records)


async def test_handler_error_rejects_or_requeues(
    conn: trio_msg.Connection, names: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    dead = make_queue(names, "dead")
    queue = make_queue(names, dead_letter_exchange="", dead_letter_routing_key=dead.name)
    attempts: list[tuple[str, bool]] = []
    done = Gauge()

    async def handler(message: Message) -> None:
        attempts.append((message.payload, message.redelivered))
        done.add(1)
        if message.payload == "poison" or not message.redelivered:
            raise ValueError(f"cannot handle {message.payload}")

    caplog.set_level(logging.INFO, logger="trio_msg.worker")
    with anyio.fail_after(TIMEOUT):
        async with conn.channel() as ch:
            await dead.declare(channel=ch)
        # requeue_on_error=False: rejected, so dead-lettered.
        worker = Worker(conn, [queue], handler)
        await publish(conn, queue, ["poison"])
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await done.wait_for(lambda g: g.total == 1)
            worker.shutdown()
        assert (worker.handled, worker.failed) == (0, 1)
        assert await queue_counts(conn, queue.name) == (0, 0)
        assert (await queue_counts(conn, dead.name))[0] == 1
        # requeue_on_error=True: back to the queue, and handled when redelivered.
        worker = Worker(conn, [queue], handler, requeue_on_error=True)
        await publish(conn, queue, ["flaky"])
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await done.wait_for(lambda g: g.total == 3)
            worker.shutdown()
        assert (worker.handled, worker.failed) == (1, 1)
        assert attempts[1:] == [("flaky", False), ("flaky", True)]
        assert await queue_counts(conn, queue.name) == (0, 0)
        assert (await queue_counts(conn, dead.name))[0] == 1  # not dead-lettered
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.exc_info and r.exc_info[0] is ValueError for r in errors)
    assert [r.getMessage().rsplit("; ", 1)[1] for r in errors] == ["rejected", "requeued"]
    # The log says which message, never what was in it.
    assert all("poison" not in r.getMessage() and "flaky" not in r.getMessage() for r in errors)


async def test_handler_settles_itself(conn: trio_msg.Connection, names: list[str]) -> None:
    """A handler that settles its message is left alone: a requeue it chose stands."""
    queue = make_queue(names)
    done = Gauge()

    async def handler(message: Message) -> None:
        if not message.redelivered:
            await message.requeue()
        done.add(1)

    worker = Worker(conn, [queue], handler)
    with anyio.fail_after(TIMEOUT):
        await publish(conn, queue, ["once more"])
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await done.wait_for(lambda g: g.total == 2)
            worker.shutdown()
    assert (worker.handled, worker.failed) == (2, 0)
    assert await queue_counts(conn, queue.name) == (0, 0)


async def test_plain_function_handler_and_producer(
    conn: trio_msg.Connection, broker_url: str, names: list[str]
) -> None:
    """ConsumerProducerMixin: handlers publish through worker.producer, on
    the producer connection."""
    queue = make_queue(names)
    replies = make_queue(names, "replies")
    seen: list[Any] = []
    done = Gauge()
    async with trio_msg.connect(broker_url) as publishing:

        async def handler(message: Message) -> None:
            await worker.producer.publish(
                {"echo": message.payload}, routing_key=replies.name, declare=[replies]
            )
            done.add(1)

        def plain(message: Message) -> None:
            seen.append(message.payload)
            done.add(1)

        worker = Worker(conn, [queue], handler, producer_connection=publishing)
        with anyio.fail_after(TIMEOUT):
            await publish(conn, queue, [1, 2])
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                assert worker.producer.connection is publishing
                await done.wait_for(lambda g: g.total == 2)
                worker.shutdown()
            async with conn.channel() as ch:
                got = [await ch.basic_get(replies.name, no_ack=True) for _ in range(2)]
            assert sorted(m.payload["echo"] for m in got if m is not None) == [1, 2]
            with pytest.raises(RuntimeError, match="only while"):
                _ = worker.producer
            # A plain (not async) function is a handler too.
            plain_worker = Worker(conn, [queue], plain)
            await publish(conn, queue, [3])
            async with anyio.create_task_group() as tg:
                await tg.start(plain_worker.run)
                await done.wait_for(lambda g: g.total == 3)
                plain_worker.shutdown()
            assert seen == [3]
            assert plain_worker.handled == 1
            assert await queue_counts(conn, queue.name) == (0, 0)


async def test_logging_is_not_per_message(
    conn: trio_msg.Connection, names: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(names)
    count = 30
    done = Gauge()

    async def handler(message: Message) -> None:
        done.add(1)

    caplog.set_level(logging.DEBUG, logger="trio_msg.worker")
    worker = Worker(conn, [queue], handler, concurrency=4)
    with anyio.fail_after(TIMEOUT):
        await publish(conn, queue, list(range(count)))
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await done.wait_for(lambda g: g.total == count)
            worker.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_msg.worker"]
    assert len(lines) == 3, lines  # started, shutting down, stopped
    assert f"consuming from {queue.name!r} (concurrency 4, prefetch 4)" in lines[0]
    assert "shutting down" in lines[1]
    assert f"{count} handled, 0 failed" in lines[2]


async def test_the_broker_cancelling_the_consumer_ends_run(
    conn: trio_msg.Connection, names: list[str]
) -> None:
    """The queue deleted under the worker: run() shuts down and raises
    ConsumerCancelled (not an exception group)."""
    queue = make_queue(names)
    caught: list[BaseException] = []

    async def handler(message: Message) -> None:
        pass

    worker = Worker(conn, [queue], handler, concurrency=2)

    async def run_worker(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await worker.run(task_status=task_status)
        except Exception as exc:
            caught.append(exc)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(run_worker)
            async with conn.channel() as ch:
                await ch.queue_delete(queue.name)
    assert len(caught) == 1
    assert isinstance(caught[0], trio_msg.errors.ConsumerCancelled)


async def test_bad_arguments(conn: trio_msg.Connection) -> None:
    queue = Queue("q")

    async def handler(message: Message) -> None:
        pass

    with pytest.raises(TypeError, match="Connection"):
        Worker("amqp://", [queue], handler)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency"):
        Worker(conn, [queue], handler, concurrency=0)
    with pytest.raises(ValueError, match="prefetch_count"):
        Worker(conn, [queue], handler, concurrency=4, prefetch_count=2)
    with pytest.raises(ValueError, match="at least one queue"):
        Worker(conn, [], handler)
    worker = Worker(conn, [queue], handler)
    assert worker.prefetch_count == 1  # the concurrency


async def test_revives_and_says_so(
    broker_url: str, names: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The connection is force-closed under a handler: its ack cannot be
    sent (logged), the message comes again on the revived connection, and
    the worker says it consumes again."""
    from _broker import close_connection_by_name

    queue = make_queue(names)
    name = names[0]
    policy = trio_msg.RetryPolicy(interval_start=0.05, interval_step=0.05, interval_max=0.2)
    running = Gauge()
    release = anyio.Event()
    deliveries: list[Message] = []

    async def handler(message: Message) -> None:
        deliveries.append(message)
        running.add(1)
        if len(deliveries) == 1:
            await release.wait()

    caplog.set_level(logging.INFO, logger="trio_msg.worker")
    async with trio_msg.connect(broker_url, connection_name=name, revive=policy) as conn:
        worker = Worker(conn, [queue], handler)
        with anyio.fail_after(3 * TIMEOUT):
            await publish(conn, queue, ["job"])
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await running.wait_for(lambda g: g.total == 1)
                await anyio.to_thread.run_sync(close_connection_by_name, name, "worker test")
                while deliveries[0].channel.is_open:  # until the client has seen it
                    await anyio.sleep(0.01)
                release.set()  # the handler returns; its ack has nowhere to go
                await running.wait_for(lambda g: g.total == 2)
                worker.shutdown()
    assert [m.redelivered for m in deliveries] == [False, True]
    assert worker.handled == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("handled but not acked" in m for m in messages), messages
    assert any("consuming again on the revived connection (incarnation 2)" in m for m in messages)
    async with trio_msg.connect(broker_url) as conn:
        assert await queue_counts(conn, queue.name) == (0, 0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_gracefully(
    conn: trio_msg.Connection,
    names: list[str],
    caplog: pytest.LogCaptureFixture,
    signum: signal.Signals,
) -> None:
    """run(handle_signals=True): the signal starts the graceful shutdown, on
    either backend.  (A handler of our own stands in while the worker's is
    not installed: a bug must fail this test, not kill the test run.)"""
    queue = make_queue(names)
    running = Gauge()
    finish = anyio.Event()
    strays: list[int] = []

    async def handler(message: Message) -> None:
        running.add(1)
        await finish.wait()

    worker = Worker(conn, [queue], handler, concurrency=2, prefetch_count=3)
    caplog.set_level(logging.INFO, logger="trio_msg.worker")
    previous = signal.signal(signum, lambda n, frame: strays.append(n))
    try:
        with anyio.fail_after(TIMEOUT):
            await publish(conn, queue, list(range(5)))
            async with anyio.create_task_group() as tg:
                await tg.start(functools.partial(worker.run, handle_signals=True))
                await running.wait_for(lambda g: g.value == 2)
                os.kill(os.getpid(), signum)
                await until(lambda: _no_consumer(conn, queue.name))
                assert running.total == 2  # none started after the signal
                finish.set()
    finally:
        signal.signal(signum, previous)
    assert strays == []
    assert (worker.handled, worker.cancelled) == (2, 0)
    assert await queue_counts(conn, queue.name) == (3, 0)
    assert any(
        f"received {signum.name}: stopping gracefully" in r.getMessage() for r in caplog.records
    )
