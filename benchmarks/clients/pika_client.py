"""pika 1.x, ``BlockingConnection`` (the way most pika code is written).

Publisher confirms with ``BlockingChannel.confirm_delivery()`` make every
``basic_publish`` wait for its confirm: a BlockingConnection cannot keep
several publishes unconfirmed, so workload b runs with a window of one
(the JSON says so).
"""

from __future__ import annotations

import uuid

import pika

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

PROPS = pika.BasicProperties(
    content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING, delivery_mode=DELIVERY_MODE
)


def connect() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(URL))


def publish_many(ch, queue: str, n: int, body: bytes) -> None:
    publish = ch.basic_publish
    for _ in range(n):
        publish("", queue, body, PROPS)


def consume(ch, queue: str, n: int, expected: bytes, prefetch: int) -> int:
    count = 0

    def on_message(ch, method, properties, body):
        nonlocal count
        Check.body(body, expected, "pika consume")
        ch.basic_ack(method.delivery_tag)
        count += 1
        if count == n:
            ch.stop_consuming()

    ch.basic_qos(prefetch_count=prefetch)
    tag = ch.basic_consume(queue, on_message)
    ch.start_consuming()
    ch.basic_cancel(tag)
    return count


def main() -> None:
    args = parse_args()
    q, n = args.queue, args.n
    conn = connect()
    ch = conn.channel()
    result: dict = {}
    if args.workload == "a":
        t0 = start()
        publish_many(ch, q, n, SMALL)
        ch.queue_declare(q, passive=True)  # one round trip after the last publish
        result["seconds"] = stop(t0)
    elif args.workload == "b":
        ch.confirm_delivery()
        t0 = start()
        publish_many(ch, q, n, SMALL)  # each call waits for its confirm
        result["seconds"] = stop(t0)
        result["window"] = 1
    elif args.workload == "c":
        ch.confirm_delivery()
        lat = []
        t0 = start()
        for _ in range(n):
            t = now()
            ch.basic_publish("", q, SMALL, PROPS)
            lat.append(now() - t)
        result["seconds"] = stop(t0)
        result.update(latency_summary(lat))
    elif args.workload == "d":
        t0 = start()
        count = consume(ch, q, n, SMALL, args.prefetch)
        ch.queue_declare(q, passive=True)
        result["seconds"] = stop(t0)
        Check.equal(count, n, "pika consumed")
    elif args.workload == "e":
        reply_queue = ch.queue_declare("", exclusive=True).method.queue
        response: list = []

        def on_reply(ch, method, properties, body):
            response.append((properties.correlation_id, body))

        ch.basic_consume(reply_queue, on_reply, auto_ack=True)
        lat = []
        t0 = start()
        for _ in range(n):
            t = now()
            corr = uuid.uuid4().hex
            ch.basic_publish(
                "",
                q,
                SMALL,
                pika.BasicProperties(
                    content_type=CONTENT_TYPE,
                    content_encoding=CONTENT_ENCODING,
                    delivery_mode=DELIVERY_MODE,
                    reply_to=reply_queue,
                    correlation_id=corr,
                ),
            )
            while not response:
                conn.process_data_events(time_limit=None)
            got_corr, body = response.pop()
            lat.append(now() - t)
            Check.equal(got_corr, corr, "pika rpc correlation id")
            Check.body(body, SMALL, "pika rpc reply")
        result["seconds"] = stop(t0)
        result.update(latency_summary(lat))
    elif args.workload == "rpc-server":
        served = 0

        def on_request(ch, method, props, body):
            nonlocal served
            ch.basic_publish(
                "",
                props.reply_to,
                body,
                pika.BasicProperties(
                    content_type=CONTENT_TYPE,
                    content_encoding=CONTENT_ENCODING,
                    delivery_mode=DELIVERY_MODE,
                    correlation_id=props.correlation_id,
                ),
            )
            ch.basic_ack(method.delivery_tag)
            served += 1
            if served == n:
                cpu_stop()
                ch.stop_consuming()

        ch.basic_qos(prefetch_count=RPC_SERVER_PREFETCH)
        ch.basic_consume(q, on_request)
        ready()
        ch.start_consuming()
        result["served"] = served
    elif args.workload == "f":
        t0 = start()
        publish_many(ch, q, n, BIG)
        ch.queue_declare(q, passive=True)
        t1 = now()
        count = consume(ch, q, n, BIG, BIG_PREFETCH)
        ch.queue_declare(q, passive=True)
        t2 = now()
        cpu_stop()
        Check.equal(count, n, "pika consumed")
        result.update(seconds=t2 - t0, publish_s=t1 - t0, consume_s=t2 - t1)
    else:
        raise SystemExit(f"pika: no workload {args.workload}")
    conn.close()
    emit("pika", args, result)


if __name__ == "__main__":
    main()
