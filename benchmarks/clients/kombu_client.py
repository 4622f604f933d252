"""kombu 5 on py-amqp (the ``pyamqp://`` transport), blocking:
``Producer.publish`` and a ``Consumer`` with callbacks, driven by
``Connection.drain_events``.

Publisher confirms are kombu's ``transport_options={"confirm_publish":
True}``: every ``publish`` then waits for its confirm, so workload b runs
with a window of one (the JSON says so).
"""

from __future__ import annotations

import uuid

from kombu import Connection, Consumer, Producer, Queue

from benchmarks.clients._common import (
    BIG,
    BIG_PREFETCH,
    CONTENT_ENCODING,
    CONTENT_TYPE,
    DELIVERY_MODE,
    KOMBU_URL,
    RPC_SERVER_PREFETCH,
    SMALL,
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

PUB = {
    "content_type": CONTENT_TYPE,
    "content_encoding": CONTENT_ENCODING,
    "delivery_mode": DELIVERY_MODE,
}


def publish_many(producer: Producer, queue: str, n: int, body: bytes) -> None:
    publish = producer.publish
    for _ in range(n):
        publish(body, routing_key=queue, **PUB)


def consume(conn: Connection, channel, queue: str, n: int, expected: bytes, prefetch: int) -> int:
    count = 0

    def on_message(body, message) -> None:
        nonlocal count
        Check.body(body, expected, "kombu consume")
        message.ack()
        count += 1

    consumer = Consumer(
        channel,
        queues=[Queue(queue, no_declare=True)],
        callbacks=[on_message],
        accept=[CONTENT_TYPE],
        prefetch_count=prefetch,
    )
    with consumer:
        while count < n:
            conn.drain_events(timeout=60)
    channel.queue_declare(queue=queue, passive=True)
    return count


def main() -> None:
    args = parse_args()
    q, n = args.queue, args.n
    confirms = args.workload in ("b", "c")
    conn = Connection(KOMBU_URL, transport_options={"confirm_publish": confirms})
    conn.connect()
    channel = conn.channel()
    producer = Producer(channel, auto_declare=False)
    result: dict = {}
    if args.workload == "a":
        t0 = start()
        publish_many(producer, q, n, SMALL)
        channel.queue_declare(queue=q, passive=True)
        result["seconds"] = stop(t0)
    elif args.workload == "b":
        t0 = start()
        publish_many(producer, q, n, SMALL)  # each publish waits for its confirm
        result["seconds"] = stop(t0)
        result["window"] = 1
    elif args.workload == "c":
        lat = []
        t0 = start()
        for _ in range(n):
            t = now()
            producer.publish(SMALL, routing_key=q, **PUB)
            lat.append(now() - t)
        result["seconds"] = stop(t0)
        result.update(latency_summary(lat))
    elif args.workload == "d":
        t0 = start()
        count = consume(conn, channel, q, n, SMALL, args.prefetch)
        result["seconds"] = stop(t0)
        Check.equal(count, n, "kombu consumed")
    elif args.workload == "e":
        reply_queue = channel.queue_declare(queue="", exclusive=True).queue
        response: list = []

        def on_reply(message) -> None:
            response.append(message)

        replies = Consumer(
            channel, queues=[Queue(reply_queue, no_declare=True)], on_message=on_reply, no_ack=True
        )
        replies.consume()
        lat = []
        t0 = start()
        for _ in range(n):
            t = now()
            corr = uuid.uuid4().hex
            producer.publish(SMALL, routing_key=q, reply_to=reply_queue, correlation_id=corr, **PUB)
            while not response:
                conn.drain_events(timeout=30)
            reply = response.pop()
            lat.append(now() - t)
            Check.equal(reply.properties["correlation_id"], corr, "kombu rpc correlation id")
            Check.body(reply.body, SMALL, "kombu rpc reply")
        result["seconds"] = stop(t0)
        result.update(latency_summary(lat))
    elif args.workload == "rpc-server":
        served = 0

        def on_request(message) -> None:
            nonlocal served
            props = message.properties
            producer.publish(
                message.body,
                routing_key=props["reply_to"],
                correlation_id=props["correlation_id"],
                **PUB,
            )
            message.ack()
            served += 1

        requests = Consumer(
            channel,
            queues=[Queue(q, no_declare=True)],
            on_message=on_request,
            prefetch_count=RPC_SERVER_PREFETCH,
        )
        with requests:
            ready()
            while served < n:
                conn.drain_events(timeout=60)
        cpu_stop()
        result["served"] = served
    elif args.workload == "f":
        t0 = start()
        publish_many(producer, q, n, BIG)
        channel.queue_declare(queue=q, passive=True)
        t1 = now()
        count = consume(conn, channel, q, n, BIG, BIG_PREFETCH)
        t2 = now()
        cpu_stop()
        Check.equal(count, n, "kombu consumed")
        result.update(seconds=t2 - t0, publish_s=t1 - t0, consume_s=t2 - t1)
    else:
        raise SystemExit(f"kombu: no workload {args.workload}")
    conn.release()
    emit("kombu", args, result)


if __name__ == "__main__":
    main()
