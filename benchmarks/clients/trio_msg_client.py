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
    current_rss_kib,
    emit,
    latency_summary,
    now,
    parse_args,
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
    async with trio_msg.connect(URL) as conn:
        if args.workload == "a":
            async with trio_msg.Producer(conn, confirm=False) as producer:
                t0 = now()
                await publish_many(producer, q, n, SMALL)
                await producer.channel.queue_declare(q, passive=True)
                result["seconds"] = now() - t0
        elif args.workload == "b":
            async with trio_msg.Producer(conn) as producer:
                t0 = now()
                async with producer.pipeline(max_unconfirmed=args.window) as pipe:
                    for _ in range(n):
                        await pipe.publish(SMALL, routing_key=q, **PUB)
                result["seconds"] = now() - t0
                result["window"] = args.window
                Check.equal((pipe.acked, len(pipe.failures)), (n, 0), "trio_msg confirms")
        elif args.workload == "c":
            async with trio_msg.Producer(conn) as producer:
                lat = []
                t0 = now()
                for _ in range(n):
                    t = now()
                    await producer.publish(SMALL, routing_key=q, **PUB)
                    lat.append(now() - t)
                result["seconds"] = now() - t0
                result.update(latency_summary(lat))
        elif args.workload == "d":
            t0 = now()
            count = await consume(conn, q, n, SMALL, args.prefetch)
            result["seconds"] = now() - t0
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
                t0 = now()
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
                result["seconds"] = now() - t0
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
                print("ready", flush=True)
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
                        break
            result["served"] = served
        elif args.workload == "f":
            async with trio_msg.Producer(conn, confirm=False) as producer:
                t0 = now()
                await publish_many(producer, q, n, BIG)
                await producer.channel.queue_declare(q, passive=True)
            t1 = now()
            count = await consume(conn, q, n, BIG, BIG_PREFETCH)
            t2 = now()
            Check.equal(count, n, "trio_msg consumed")
            result.update(seconds=t2 - t0, publish_s=t1 - t0, consume_s=t2 - t1)
        elif args.workload == "long":
            # g: a long consume, sampling the resident set every sample_every messages.
            samples = [(0, current_rss_kib())]
            every = args.sample_every
            count = 0
            t0 = now()
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
            result["seconds"] = now() - t0
            result["rss_samples_kib"] = samples
            Check.equal(count, n, "trio_msg consumed")
        else:
            raise SystemExit(f"trio_msg: no workload {args.workload}")
    return result


def main() -> None:
    args = parse_args(extra=True)
    result = anyio.run(run, args, backend=args.backend)
    emit(f"trio_msg[{args.backend}]", args, result)


if __name__ == "__main__":
    main()
