"""aiormq 7 (asyncio, pamqp-based; what aio-pika is built on).

Publishes use ``wait=False`` (documented: do not wait for the local write
buffer to drain for every message), which is aiormq's fast path.  With
publisher confirms each ``basic_publish`` waits for its confirm, so workload b
keeps up to ``--window`` publishes in flight as tasks behind a semaphore.
"""

from __future__ import annotations

import asyncio
import uuid

import aiormq
from aiormq import spec

from benchmarks.clients._common import (
    BIG,
    BIG_PREFETCH,
    CONTENT_ENCODING,
    CONTENT_TYPE,
    DELIVERY_MODE,
    RPC_SERVER_PREFETCH,
    SMALL,
    URL,
    Check,
    cpu_stop,
    emit,
    latency_summary,
    now,
    parse_args,
    ready,
    start,
    stop,
)

PROPS = spec.Basic.Properties(
    content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING, delivery_mode=DELIVERY_MODE
)


def props(**extra) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        delivery_mode=DELIVERY_MODE,
        **extra,
    )


async def publish_many(ch, queue: str, n: int, body: bytes) -> None:
    publish = ch.basic_publish
    for _ in range(n):
        # a fresh Properties object each time: aiormq stamps a message_id on it
        await publish(body, routing_key=queue, properties=props(), wait=False)


async def consume(ch, queue: str, n: int, expected: bytes, prefetch: int) -> int:
    count = 0
    done = asyncio.Event()

    async def on_message(message) -> None:
        nonlocal count
        Check.body(message.body, expected, "aiormq consume")
        await message.channel.basic_ack(message.delivery.delivery_tag)
        count += 1
        if count == n:
            done.set()

    await ch.basic_qos(prefetch_count=prefetch)
    ok = await ch.basic_consume(queue, on_message, no_ack=False)
    await done.wait()
    await ch.basic_cancel(ok.consumer_tag)
    await ch.queue_declare(queue, passive=True)
    return count


async def run(args) -> dict:
    q, n = args.queue, args.n
    result: dict = {}
    async with aiormq.connect(URL) as conn:
        confirms = args.workload in ("b", "c")
        ch = await conn.channel(publisher_confirms=confirms)
        if args.workload == "a":
            t0 = start()
            await publish_many(ch, q, n, SMALL)
            await ch.queue_declare(q, passive=True)
            result["seconds"] = stop(t0)
        elif args.workload == "b":
            window = asyncio.Semaphore(args.window)
            acked = 0

            async def one() -> None:
                nonlocal acked
                try:
                    confirm = await ch.basic_publish(
                        SMALL, routing_key=q, properties=props(), wait=False
                    )
                    if isinstance(confirm, spec.Basic.Ack):
                        acked += 1
                finally:
                    window.release()

            tasks = set()
            t0 = start()
            for _ in range(n):
                await window.acquire()
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            result["seconds"] = stop(t0)
            result["window"] = args.window
            Check.equal(acked, n, "aiormq confirms")
        elif args.workload == "c":
            lat = []
            t0 = start()
            for _ in range(n):
                t = now()
                confirm = await ch.basic_publish(SMALL, routing_key=q, properties=props())
                lat.append(now() - t)
                assert isinstance(confirm, spec.Basic.Ack), confirm
            result["seconds"] = stop(t0)
            result.update(latency_summary(lat))
        elif args.workload == "d":
            t0 = start()
            count = await consume(ch, q, n, SMALL, args.prefetch)
            result["seconds"] = stop(t0)
            Check.equal(count, n, "aiormq consumed")
        elif args.workload == "e":
            reply_queue = (await ch.queue_declare("", exclusive=True)).queue
            futures: dict[str, asyncio.Future] = {}

            def on_reply(message) -> None:
                future = futures.pop(message.header.properties.correlation_id, None)
                if future is not None:
                    future.set_result(message.body)

            await ch.basic_consume(reply_queue, on_reply, no_ack=True)
            loop = asyncio.get_running_loop()
            lat = []
            t0 = start()
            for _ in range(n):
                t = now()
                corr = uuid.uuid4().hex
                future = futures[corr] = loop.create_future()
                await ch.basic_publish(
                    SMALL,
                    routing_key=q,
                    properties=props(reply_to=reply_queue, correlation_id=corr),
                )
                body = await future
                lat.append(now() - t)
                Check.body(body, SMALL, "aiormq rpc reply")
            result["seconds"] = stop(t0)
            result.update(latency_summary(lat))
        elif args.workload == "rpc-server":
            served = 0
            done = asyncio.Event()

            async def on_request(message) -> None:
                nonlocal served
                p = message.header.properties
                await message.channel.basic_publish(
                    message.body,
                    routing_key=p.reply_to,
                    properties=props(correlation_id=p.correlation_id),
                )
                await message.channel.basic_ack(message.delivery.delivery_tag)
                served += 1
                if served == n:
                    cpu_stop()
                    done.set()

            await ch.basic_qos(prefetch_count=RPC_SERVER_PREFETCH)
            await ch.basic_consume(q, on_request, no_ack=False)
            ready()
            await done.wait()
            result["served"] = served
        elif args.workload == "f":
            t0 = start()
            await publish_many(ch, q, n, BIG)
            await ch.queue_declare(q, passive=True)
            t1 = now()
            count = await consume(ch, q, n, BIG, BIG_PREFETCH)
            t2 = now()
            cpu_stop()
            Check.equal(count, n, "aiormq consumed")
            result.update(seconds=t2 - t0, publish_s=t1 - t0, consume_s=t2 - t1)
        else:
            raise SystemExit(f"aiormq: no workload {args.workload}")
    return result


def main() -> None:
    args = parse_args()
    result = asyncio.run(run(args))
    emit("aiormq", args, result)


if __name__ == "__main__":
    main()
