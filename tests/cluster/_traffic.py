"""Traffic through a cluster while faults hit it: a producer publishing with
confirms and ``retry=True``, a consumer acking, on reviving connections
given every node, with a ledger and a timeline.

The timeline says when each publish started, when it was confirmed and when
each message was first delivered (``time.monotonic()``, the clock the faults
stamp themselves with too).  The recovery after a fault is measured from the
fault (the instant before the signal is sent, or ``rabbitmqctl stop`` is
called) to the first confirm, and to the first delivery, of a message whose
publish started after the fault: what a user's next publish and next message
wait.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from _ledger import Ledger
from _workload import wait_until  # (tests/faults, on the path: conftest.py)

import trio_msg
from trio_msg.errors import TrioMsgError

__all__ = ["FAST", "Fault", "Run", "Timeline", "traffic", "wait_until"]

#: Quick reconnects: the nodes are local.
FAST = trio_msg.RetryPolicy(interval_start=0.05, interval_step=0.1, interval_max=0.5)

Fault = Callable[["Run"], Awaitable[None]]


@dataclass
class Timeline:
    started: dict[int, float] = field(default_factory=dict)
    confirmed: dict[int, float] = field(default_factory=dict)
    delivered: dict[int, float] = field(default_factory=dict)
    #: when each fault hit (one per fault, in order)
    faults: list[float] = field(default_factory=list)

    def fault(self) -> None:
        """Stamp a fault: call it right before the fault is injected."""
        self.faults.append(time.monotonic())

    def recovery(self, at: float) -> tuple[float, float]:
        """(seconds to the first confirm, seconds to the first delivery) of
        messages published after *at*."""
        after = [i for i, t in self.started.items() if t >= at]
        confirms = [self.confirmed[i] for i in after if i in self.confirmed]
        deliveries = [self.delivered[i] for i in after if i in self.delivered]
        if not confirms or not deliveries:
            raise AssertionError(f"nothing published after the fault at {at} got through")
        return min(confirms) - at, min(deliveries) - at


@dataclass
class Run:
    producer_conn: trio_msg.Connection
    consumer_conn: trio_msg.Connection
    ledger: Ledger
    timeline: Timeline
    extra: dict[str, Any] = field(default_factory=dict)


async def traffic(
    producer_urls: Sequence[str],
    consumer_urls: Sequence[str],
    queue: trio_msg.Queue,
    ledger: Ledger,
    faults: Sequence[Fault],
    *,
    before: int = 30,
    after: int = 30,
    timeout: float = 180,
    **conn_options: Any,
) -> Run:
    """Publish ``before`` messages, then inject *faults* in order while
    publishing goes on, then ``after`` more; the consumer drains until every
    confirmed message has arrived.  Returns the :class:`Run`."""
    conn_options.setdefault("revive", FAST)
    timeline = Timeline()
    with anyio.fail_after(timeout):
        async with (
            trio_msg.connect(list(producer_urls), connection_name="producer", **conn_options)
            as pconn,
            trio_msg.connect(list(consumer_urls), connection_name="consumer", **conn_options)
            as cconn,
        ):
            run = Run(pconn, cconn, ledger, timeline)
            await _work(run, queue, faults, before, after)
            return run


async def _work(
    run: Run, queue: trio_msg.Queue, faults: Sequence[Fault], before: int, after: int
) -> None:
    ledger, timeline = run.ledger, run.timeline
    produced = anyio.Event()
    finished = anyio.Event()
    faults_over = anyio.Event()

    async with trio_msg.Consumer(run.consumer_conn, queues=[queue], prefetch_count=20) as consumer:

        async def consume() -> None:
            async for message in consumer:
                msg_id = message.payload
                timeline.delivered.setdefault(msg_id, time.monotonic())
                ledger.consume(msg_id)
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
            faults_over.set()

        async def produce() -> None:
            async with trio_msg.Producer(run.producer_conn) as producer:
                i = 0
                remaining = after
                while True:
                    if i == before:
                        tg.start_soon(inject)
                    if i >= before and faults_over.is_set():
                        if remaining == 0:
                            break
                        remaining -= 1
                    ledger.publishing(i)
                    timeline.started[i] = time.monotonic()
                    await producer.publish(i, routing_key=queue.name, retry=True, delivery_mode=2)
                    timeline.confirmed[i] = time.monotonic()
                    ledger.confirm(i)
                    i += 1
                    # pacing, not synchronisation: faults take seconds; keep
                    # the message count small and the timeline fine-grained
                    await anyio.sleep(0.01)
            produced.set()
            if ledger.complete():
                finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            tg.start_soon(produce)
            await finished.wait()
            tg.cancel_scope.cancel()
