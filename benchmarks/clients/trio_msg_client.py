"""trio_msg, on trio (``--backend trio``) or on asyncio through anyio
(``--backend asyncio``): the same code, run by ``anyio.run``.

Raw bytes with a ``content_type`` are published as they are (no serializer);
consumers read ``message.body`` (no decoding).
"""

from __future__ import annotations

import uuid

import anyio

import trio_msg
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
    current_rss_kib,
    emit,
    latency_summary,
    now,
    parse_args,
    ready,
    start,
    stop,
)

PUB = {
    "content_type": CONTENT_TYPE,
    "content_encoding": CONTENT_ENCODING,
    "delivery_mode": DELIVERY_MODE,
}


async def publish_many(producer: trio_msg.Producer, queue: str, n: int, body: bytes) -> None:
    publish = producer.publish
    for _ in range(n):
        await publish(body, routing_key=queue, **PUB)


async def consume(
    conn: trio_msg.Connection, queue: str, n: int, expected: bytes, prefetch: int
) -> int:
    count = 0
    async with trio_msg.Consumer(
        conn,
        queues=[trio_msg.Queue(queue, durable=False)],
        prefetch_count=prefetch,
        auto_declare=False,
    ) as consumer:
        async for message in consumer:
            Check.body(message.body, expected, "trio_msg consume")
            await message.ack()
            count += 1
            if count == n:
                break
        await consumer.channel.queue_declare(queue, passive=True)  # the acks went out
    return count


async def run(args) -> dict:
    q, n = args.queue, args.n
    result: dict = {}
    options = {} if args.busy_poll is None else {"busy_poll": args.busy_poll}
    async with trio_msg.connect(URL, **options) as conn:
        result["busy_poll"] = conn.params.busy_poll
        if args.workload == "a":
            async with trio_msg.Producer(conn, confirm=False) as producer:
                t0 = start()
                await publish_many(producer, q, n, SMALL)
                await producer.channel.queue_declare(q, passive=True)
                result["seconds"] = stop(t0)
        elif args.workload == "b":
            async with trio_msg.Producer(conn) as producer:
                t0 = start()
                async with producer.pipeline(max_unconfirmed=args.window) as pipe:
                    for _ in range(n):
                        await pipe.publish(SMALL, routing_key=q, **PUB)
                result["seconds"] = stop(t0)
                result["window"] = args.window
                Check.equal((pipe.acked, len(pipe.failures)), (n, 0), "trio_msg confirms")
        elif args.workload == "c":
            async with trio_msg.Producer(conn) as producer:
                lat = []
                t0 = start()
                for _ in range(n):
                    t = now()
                    await producer.publish(SMALL, routing_key=q, **PUB)
                    lat.append(now() - t)
                result["seconds"] = stop(t0)
                result.update(latency_summary(lat))
        elif args.workload == "d":
            t0 = start()
            count = await consume(conn, q, n, SMALL, args.prefetch)
            result["seconds"] = stop(t0)
            Check.equal(count, n, "trio_msg consumed")
        elif args.workload == "e":
            async with conn.channel() as ch:
                reply_queue = (await ch.queue_declare("", exclusive=True, durable=False)).queue
            async with (
                trio_msg.Consumer(
                    conn,
                    queues=[trio_msg.Queue(reply_queue, exclusive=True, durable=False)],
                    no_ack=True,
                    auto_declare=False,
                ) as replies,
                trio_msg.Producer(conn, confirm=False) as producer,
            ):
                receive = replies.__anext__
                lat = []
                t0 = start()
                for _ in range(n):
                    t = now()
                    corr = uuid.uuid4().hex
                    await producer.publish(
                        SMALL, routing_key=q, reply_to=reply_queue, correlation_id=corr, **PUB
                    )
                    reply = await receive()
                    lat.append(now() - t)
                    Check.equal(reply.basic_properties.correlation_id, corr, "rpc correlation id")
                    Check.body(reply.body, SMALL, "trio_msg rpc reply")
                result["seconds"] = stop(t0)
                result.update(latency_summary(lat))
        elif args.workload == "rpc-server":
            served = 0
            async with (
                trio_msg.Consumer(
                    conn,
                    queues=[trio_msg.Queue(q, durable=False)],
                    prefetch_count=RPC_SERVER_PREFETCH,
                    auto_declare=False,
                ) as requests,
                trio_msg.Producer(conn, confirm=False) as producer,
            ):
                ready()
                async for request in requests:
                    props = request.basic_properties
                    await producer.publish(
                        request.body,
                        routing_key=props.reply_to,
                        correlation_id=props.correlation_id,
                        **PUB,
                    )
                    await request.ack()
                    served += 1
                    if served == n:
                        cpu_stop()
                        break
            result["served"] = served
        elif args.workload == "f":
            async with trio_msg.Producer(conn, confirm=False) as producer:
                t0 = start()
                await publish_many(producer, q, n, BIG)
                await producer.channel.queue_declare(q, passive=True)
            t1 = now()
            count = await consume(conn, q, n, BIG, BIG_PREFETCH)
            t2 = now()
            cpu_stop()
            Check.equal(count, n, "trio_msg consumed")
            result.update(seconds=t2 - t0, publish_s=t1 - t0, consume_s=t2 - t1)
        elif args.workload == "long":
            # g: a long consume, sampling the resident set every sample_every messages.
            samples = [(0, current_rss_kib())]
            every = args.sample_every
            count = 0
            t0 = start()
            async with trio_msg.Consumer(
                conn,
                queues=[trio_msg.Queue(q, durable=False)],
                prefetch_count=args.prefetch,
                auto_declare=False,
            ) as consumer:
                async for message in consumer:
                    Check.body(message.body, SMALL, "trio_msg long consume")
                    await message.ack()
                    count += 1
                    if count % every == 0:
                        samples.append((count, current_rss_kib()))
                    if count == n:
                        break
            result["seconds"] = stop(t0)
            result["rss_samples_kib"] = samples
            Check.equal(count, n, "trio_msg consumed")
        else:
            raise SystemExit(f"trio_msg: no workload {args.workload}")
    return result


def main() -> None:
    args = parse_args(extra=True, busy_poll=True)
    result = anyio.run(run, args, backend=args.backend)
    emit(f"trio_msg[{args.backend}]", args, result)


if __name__ == "__main__":
    main()
