"""aio-pika (asyncio, on aiormq), the way its documentation writes it:
``default_exchange.publish(Message(...))``, ``queue.iterator()`` and
``message.ack()``, an RPC client with a future per correlation id.

With publisher confirms each ``publish`` waits for its confirm, so workload b
keeps up to ``--window`` publishes in flight as tasks behind a semaphore.
"""

from __future__ import annotations

import asyncio
import uuid

import aio_pika

from benchmarks.clients._common import (
    BIG,
    BIG_PREFETCH,
    CONTENT_ENCODING,
    CONTENT_TYPE,
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

TRANSIENT = aio_pika.DeliveryMode.NOT_PERSISTENT


def message(body: bytes, **extra) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        delivery_mode=TRANSIENT,
        **extra,
    )


async def publish_many(exchange, queue: str, n: int, body: bytes) -> None:
    publish = exchange.publish
    for _ in range(n):
        await publish(message(body), routing_key=queue, mandatory=False)


async def consume(ch, queue_name: str, n: int, expected: bytes, prefetch: int) -> int:
    await ch.set_qos(prefetch_count=prefetch)
    queue = await ch.declare_queue(queue_name, passive=True)
    count = 0
    async with queue.iterator() as messages:
        async for msg in messages:
            Check.body(msg.body, expected, "aio-pika consume")
            await msg.ack()
            count += 1
            if count == n:
                break
    await ch.declare_queue(queue_name, passive=True)
    return count


async def run(args) -> dict:
    q, n = args.queue, args.n
    result: dict = {}
    conn = await aio_pika.connect(URL)
    async with conn:
        confirms = args.workload in ("b", "c")
        ch = await conn.channel(publisher_confirms=confirms)
        exchange = ch.default_exchange
        if args.workload == "a":
            t0 = start()
            await publish_many(exchange, q, n, SMALL)
            await ch.declare_queue(q, passive=True)
            result["seconds"] = stop(t0)
        elif args.workload == "b":
            window = asyncio.Semaphore(args.window)
            acked = 0

            async def one() -> None:
                nonlocal acked
                try:
                    await exchange.publish(message(SMALL), routing_key=q, mandatory=False)
                    acked += 1  # a nack raises DeliveryError
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
            Check.equal(acked, n, "aio-pika confirms")
        elif args.workload == "c":
            lat = []
            t0 = start()
            for _ in range(n):
                t = now()
                await exchange.publish(message(SMALL), routing_key=q, mandatory=False)
                lat.append(now() - t)
            result["seconds"] = stop(t0)
            result.update(latency_summary(lat))
        elif args.workload == "d":
            t0 = start()
            count = await consume(ch, q, n, SMALL, args.prefetch)
            result["seconds"] = stop(t0)
            Check.equal(count, n, "aio-pika consumed")
        elif args.workload == "e":
            reply_queue = await ch.declare_queue(exclusive=True)
            futures: dict[str, asyncio.Future] = {}

            async def on_reply(msg) -> None:
                future = futures.pop(msg.correlation_id, None)
                if future is not None:
                    future.set_result(msg.body)

            await reply_queue.consume(on_reply, no_ack=True)
            loop = asyncio.get_running_loop()
            lat = []
            t0 = start()
            for _ in range(n):
                t = now()
                corr = uuid.uuid4().hex
                future = futures[corr] = loop.create_future()
                await exchange.publish(
                    message(SMALL, correlation_id=corr, reply_to=reply_queue.name),
                    routing_key=q,
                    mandatory=False,
                )
                body = await future
                lat.append(now() - t)
                Check.body(body, SMALL, "aio-pika rpc reply")
            result["seconds"] = stop(t0)
            result.update(latency_summary(lat))
        elif args.workload == "rpc-server":
            served = 0
            await ch.set_qos(prefetch_count=RPC_SERVER_PREFETCH)
            queue = await ch.declare_queue(q, passive=True)
            async with queue.iterator() as requests:
                ready()
                async for request in requests:
                    async with request.process():
                        await exchange.publish(
                            message(request.body, correlation_id=request.correlation_id),
                            routing_key=request.reply_to,
                            mandatory=False,
                        )
                    served += 1
                    if served == n:
                        cpu_stop()
                        break
            result["served"] = served
        elif args.workload == "f":
            t0 = start()
            await publish_many(exchange, q, n, BIG)
            await ch.declare_queue(q, passive=True)
            t1 = now()
            count = await consume(ch, q, n, BIG, BIG_PREFETCH)
            t2 = now()
            cpu_stop()
            Check.equal(count, n, "aio-pika consumed")
            result.update(seconds=t2 - t0, publish_s=t1 - t0, consume_s=t2 - t1)
        else:
            raise SystemExit(f"aio-pika: no workload {args.workload}")
    return result


def main() -> None:
    args = parse_args()
    result = asyncio.run(run(args))
    emit("aio-pika", args, result)


if __name__ == "__main__":
    main()
