"""memory:// beside RabbitMQ: the same trio_msg workloads against the embedded
broker (in the process) and against RabbitMQ on loopback, in one run.

Run from the repository root::

    python -m benchmarks.memory                  # the sizes below, 3 rounds, and --flat
    python -m benchmarks.memory --scale 0.1 --rounds 1 --long-n 0   # a smoke test
    python -m benchmarks.memory --flat           # only the 1,000,000-message run

Workloads (as in ``benchmarks/README.md``, trio_msg on trio only):

- a: publish 100-byte messages without confirms;
- b: publish with confirms, a window of 1000 (a Pipeline);
- c: publish and wait for each confirm;
- d: consume a pre-filled queue, prefetch 1000, ack each;
- e: RPC round trips (a server task in the same process);
- f: publish and consume 1 MiB messages, prefetch 10.

Both targets are reached with the same client settings, ``busy_poll=0``
(``--busy-poll``): with memory:// the broker works in the client's own
thread, and a task spinning while it waits for an answer would only take
that thread from the broker.

And a long run (``--flat``): 1,000,000 messages published (window 1000) and
consumed on memory://, the process's resident memory and the number of
memory blocks Python has allocated sampled every 100,000 (both must stay
flat).  Writes ``benchmarks/results/memory.json`` (with the machine's load
average before and after, as wall-clock rates depend on it) and prints a
table; ``--flat`` alone writes only its own figures there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import trio

import trio_msg
from trio_msg import Consumer, Producer, Queue
from trio_msg._broker import drop_broker

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
SIZES = {"a": 100_000, "b": 100_000, "c": 5_000, "d": 100_000, "e": 2_000, "f": 200}
SMALL = bytes(range(100))
BIG = bytes(range(256)) * 4096
PUB = {"content_type": "application/data", "content_encoding": "binary", "delivery_mode": 1}


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def _fill(conn: trio_msg.Connection, queue: str, n: int, body: bytes) -> None:
    async with Producer(conn) as producer, producer.pipeline() as pipeline:
        for _ in range(n):
            await pipeline.publish(body, routing_key=queue, **PUB)
        await pipeline.wait_all()


async def _drain(conn: trio_msg.Connection, queue: str, n: int, prefetch: int) -> None:
    count = 0
    async with Consumer(
        conn, [Queue(queue, durable=False)], prefetch_count=prefetch, auto_declare=False
    ) as consumer:
        async for message in consumer:
            await message.ack()
            count += 1
            if count == n:
                return


async def workload(url: str, name: str, n: int) -> float:
    """Run one workload on a fresh queue; the seconds it took."""
    queue = f"bench.memory.{uuid.uuid4().hex[:8]}"
    async with trio_msg.connect(url, revive=False) as conn:
        async with conn.channel() as ch:
            await ch.queue_declare(queue, durable=False)
        try:
            if name == "d":
                await _fill(conn, queue, n, SMALL)
            start = time.perf_counter()
            if name == "a":
                async with Producer(conn, confirm=False) as producer:
                    for _ in range(n):
                        await producer.publish(SMALL, routing_key=queue, **PUB)
                async with conn.channel() as ch:  # every message is in the queue
                    while (await ch.queue_declare(queue, passive=True)).message_count < n:
                        await trio.sleep(0.001)
            elif name == "b":
                await _fill(conn, queue, n, SMALL)
            elif name == "c":
                async with Producer(conn) as producer:
                    for _ in range(n):
                        await producer.publish(SMALL, routing_key=queue, **PUB)
            elif name == "d":
                await _drain(conn, queue, n, 1000)
            elif name == "e":
                await _rpc(conn, queue, n)
            elif name == "f":
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_drain, conn, queue, n, 10)
                    await _fill(conn, queue, n, BIG)
            elapsed = time.perf_counter() - start
        finally:
            async with conn.channel() as ch:
                await ch.queue_delete(queue)
    return elapsed


async def _rpc(conn: trio_msg.Connection, queue: str, n: int) -> None:
    async with trio.open_nursery() as nursery:

        async def server(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with (
                Consumer(
                    conn, [Queue(queue, durable=False)], prefetch_count=1, auto_declare=False
                ) as c,
                Producer(conn, confirm=False) as p,
            ):
                task_status.started()
                async for request in c:
                    await p.publish(
                        request.body,
                        routing_key=request.properties["reply_to"],
                        correlation_id=request.properties["correlation_id"],
                        **PUB,
                    )
                    await request.ack()

        await nursery.start(server)
        async with conn.channel() as ch:
            replies = (await ch.queue_declare("", exclusive=True, durable=False)).queue
        async with (
            Consumer(
                conn,
                [Queue(replies, durable=False, exclusive=True)],
                no_ack=True,
                auto_declare=False,
            ) as answers,
            Producer(conn, confirm=False) as client,
        ):
            for i in range(n):
                await client.publish(
                    SMALL, routing_key=queue, reply_to=replies, correlation_id=str(i), **PUB
                )
                reply = await answers.__anext__()
                assert reply.properties["correlation_id"] == str(i)
        nursery.cancel_scope.cancel()


async def long_run(n: int) -> list[tuple[int, int, int]]:
    """Publish and consume ``n`` messages on memory://; every n/10 messages
    the count, RSS (KiB) and Python's allocated blocks."""
    name = f"bench-long-{uuid.uuid4().hex[:8]}"
    samples: list[tuple[int, int, int]] = []
    step = max(n // 10, 1)
    consumed = 0
    try:
        async with trio_msg.connect(f"memory://{name}", revive=False) as conn:
            async with conn.channel() as ch:
                await ch.queue_declare("long", durable=False)
            async with trio.open_nursery() as nursery:

                async def consume() -> None:
                    nonlocal consumed
                    count = 0
                    async with Consumer(
                        conn,
                        [Queue("long", durable=False)],
                        prefetch_count=1000,
                        auto_declare=False,
                    ) as consumer:
                        async for message in consumer:
                            await message.ack()
                            count += 1
                            consumed = count
                            if count % step == 0:
                                samples.append((count, rss_kib(), sys.getallocatedblocks()))
                            if count == n:
                                return

                nursery.start_soon(consume)
                # The embedded broker has no credit flow (RabbitMQ slows a
                # publisher whose queues fall behind): keep the backlog at
                # most 10,000, so that what is measured is the broker and
                # client at a steady state, not a queue growing.
                async with Producer(conn) as producer, producer.pipeline() as pipeline:
                    for published in range(n):
                        while published - consumed > 10_000:
                            await trio.sleep(0.001)
                        await pipeline.publish(SMALL, routing_key="long", **PUB)
                    await pipeline.wait_all()
    finally:
        drop_broker(name)
    return samples


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "workloads": {},
        "machine": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "busy_poll": args.busy_poll,
        "load_before": os.getloadavg(),
    }
    query = f"?busy_poll={args.busy_poll}"
    for name, size in SIZES.items():
        if args.flat:
            break
        n = max(int(size * args.scale), 1)
        rates: dict[str, list[float]] = {"memory": [], "rabbitmq": []}
        for _ in range(args.rounds):
            for target in ("memory", "rabbitmq"):
                url = f"memory://bench-{uuid.uuid4().hex[:8]}" if target == "memory" else RABBITMQ
                seconds = await workload(url + query, name, n)
                if target == "memory":
                    drop_broker(url.removeprefix("memory://"))
                rates[target].append(n / seconds)
        med = {t: statistics.median(v) for t, v in rates.items()}
        results["workloads"][name] = {
            "n": n,
            "rates": rates,
            "median": med,
            "ratio": med["memory"] / med["rabbitmq"],
        }
        unit = "calls/s" if name == "e" else "msg/s"
        print(
            f"{name}: memory {med['memory']:>10,.0f}  rabbitmq {med['rabbitmq']:>10,.0f} {unit}  ratio {med['memory'] / med['rabbitmq']:.2f}x",
            flush=True,
        )
    if args.long_n or args.flat:
        n = args.long_n or 1_000_000
        start = time.perf_counter()
        samples = await long_run(n)
        seconds = time.perf_counter() - start
        results["long"] = {
            "n": n,
            "seconds": seconds,
            "backlog_max": 10_000,
            "samples": [{"messages": m, "rss_kib": kib, "blocks": b} for m, kib, b in samples],
        }
        print(f"long run: {n:,} messages in {seconds:.1f} s; every {n // 10:,}:")
        for m, kib, b in samples:
            print(f"  {m:>9,}  RSS {kib / 1024:6.1f} MiB  Python blocks {b:>9,}")
    results["load_after"] = os.getloadavg()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--long-n", type=int, default=1_000_000)
    parser.add_argument("--busy-poll", type=float, default=0.0, help="the client's, both targets")
    parser.add_argument("--flat", action="store_true", help="only the long run")
    parser.add_argument("--no-write", action="store_true", help="print only")
    arguments = parser.parse_args()
    out = trio.run(main, arguments)
    if not arguments.no_write:
        if arguments.flat and RESULTS.exists():
            # keep the workloads of the last full run, replace the long run
            previous = json.loads(RESULTS.read_text())
            previous["long"] = out["long"]
            out = previous
        RESULTS.write_text(json.dumps(out, indent=1) + "\n")
