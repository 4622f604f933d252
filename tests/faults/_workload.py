"""The workload every fault scenario runs: a producer publishing with
confirms and ``retry=True`` and a consumer acking, on reviving connections,
with faults injected while they work, and a ledger of what happened.

Faults run in their own task, in order, once publishing reaches
``before`` messages; publishing goes on during them and for ``after`` more
messages once the last has ended, then the consumer drains until every
confirmed message has arrived (bounded by ``timeout``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from _ledger import Ledger

import trio_msg
from trio_msg.errors import TrioMsgError

__all__ = ["FAST", "Fault", "Run", "delete_queue", "queue_depth", "wait_until", "workload"]

#: Quick reconnects: the faults are local and short.
FAST = trio_msg.RetryPolicy(interval_start=0.05, interval_step=0.05, interval_max=0.2)

Fault = Callable[["Run"], Awaitable[None]]


@dataclass
class Run:
    """What a fault may look at: the connections and the ledger so far."""

    producer_conn: trio_msg.Connection
    consumer_conn: trio_msg.Connection
    ledger: Ledger
    #: faults that have ended
    done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *predicate* (every 10 ms) until true; ``TimeoutError`` naming
    *what* after *timeout* seconds."""
    try:
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.01)
    except TimeoutError:
        raise TimeoutError(f"{what}: not within {timeout} s") from None


async def workload(
    url: str,
    queue: trio_msg.Queue,
    ledger: Ledger,
    faults: Sequence[Fault],
    *,
    before: int = 20,
    after: int = 20,
    separate: bool = False,
    producer_url: str | None = None,
    persistent: bool = False,
    prefetch: int = 10,
    timeout: float = 60,
    **conn_options: Any,
) -> Run:
    """Run the workload against *url* (both sides on one connection, or one
    each with ``separate``, or the producer's to ``producer_url``); returns
    the :class:`Run` (its ledger filled in)."""
    conn_options.setdefault("revive", FAST)
    delivery_mode = 2 if persistent else 1
    with anyio.fail_after(timeout):
        async with trio_msg.connect(producer_url or url, **conn_options) as pconn:
            if separate or producer_url is not None:
                async with trio_msg.connect(url, **conn_options) as cconn:
                    return await _work(
                        pconn, cconn, queue, ledger, faults, before, after, delivery_mode, prefetch
                    )
            return await _work(
                pconn, pconn, queue, ledger, faults, before, after, delivery_mode, prefetch
            )


async def _work(
    pconn: trio_msg.Connection,
    cconn: trio_msg.Connection,
    queue: trio_msg.Queue,
    ledger: Ledger,
    faults: Sequence[Fault],
    before: int,
    after: int,
    delivery_mode: int,
    prefetch: int,
) -> Run:
    run = Run(pconn, cconn, ledger)
    produced = anyio.Event()
    finished = anyio.Event()
    faults_over = anyio.Event()
    if not faults:
        faults_over.set()

    async with trio_msg.Consumer(cconn, queues=[queue], prefetch_count=prefetch) as consumer:

        async def consume() -> None:
            async for message in consumer:
                ledger.consume(message.payload)
                try:
                    await message.ack()
                except TrioMsgError:
                    pass  # its channel is gone: the broker redelivers it
                if produced.is_set() and ledger.complete():
                    finished.set()
                    return

        async def inject() -> None:
            for fault in faults:
                await fault(run)
                run.done += 1
            faults_over.set()

        async def produce() -> None:
            async with trio_msg.Producer(pconn) as producer:
                i = 0
                remaining = after
                while True:
                    if i == before:
                        tg.start_soon(inject)
                    if faults_over.is_set() and i >= before:
                        if remaining == 0:
                            break
                        remaining -= 1
                    ledger.publishing(i)
                    await producer.publish(
                        i, routing_key=queue.name, retry=True, delivery_mode=delivery_mode
                    )
                    ledger.confirm(i)
                    i += 1
                    if i > before and not faults_over.is_set():
                        # pacing, not synchronisation: a fault can take seconds
                        # (rabbitmqctl); keep the message count small meanwhile
                        await anyio.sleep(0.005)
            produced.set()
            if ledger.complete():
                finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            tg.start_soon(produce)
            await finished.wait()
            tg.cancel_scope.cancel()
    return run


async def delete_queue(url: str, name: str) -> None:
    with anyio.fail_after(30):
        async with trio_msg.connect(url) as conn, conn.channel() as ch:
            await ch.queue_delete(name)


async def queue_depth(url: str, name: str) -> int:
    async with trio_msg.connect(url) as conn, conn.channel() as ch:
        ok = await ch.queue_declare(name, passive=True)
        return ok.message_count
