"""RabbitMQ tutorial 5, "Topics", with trio_msg.

Log lines go to the topic exchange ``topic_logs`` with routing keys
``<facility>.<severity>``.  Subscribers bind with patterns: ``*`` matches
one word, ``#`` zero or more.

https://www.rabbitmq.com/tutorials/tutorial-five-python
"""

from __future__ import annotations

import os

import trio

import trio_msg
from trio_msg import Consumer, Exchange, Producer, Queue, binding

# No TRIO_MSG_URL: the embedded broker (memory://), no RabbitMQ needed.
URL = os.environ.get("TRIO_MSG_URL", "memory://")

topic_logs = Exchange("topic_logs", type="topic", durable=False, auto_delete=True)

MESSAGES = [
    ("kern.critical", "A critical kernel error"),
    ("kern.info", "Kernel module loaded"),
    ("auth.critical", "Too many failed logins"),
    ("cron.warning", "Job ran late"),
]

# name: (binding keys, how many of MESSAGES they match)
SUBSCRIBERS = {
    "kernel": (["kern.*"], 2),
    "critical": (["*.critical"], 2),
    "kernel or critical": (["kern.*", "*.critical"], 3),  # each message at most once
    "everything": (["#"], 4),
}


async def emit_logs(conn: trio_msg.Connection) -> None:
    async with Producer(conn, exchange=topic_logs) as producer:
        for routing_key, text in MESSAGES:
            await producer.publish(text, routing_key=routing_key)
            print(f" [x] Sent {routing_key}: {text!r}")


async def receive_logs(
    conn: trio_msg.Connection,
    name: str,
    binding_keys: list[str],
    expected: int,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    queue = Queue("", bindings=[binding(topic_logs, key) for key in binding_keys], exclusive=True)
    async with Consumer(conn, [queue], no_ack=True) as consumer:
        task_status.started()
        received = 0
        async for message in consumer:
            print(f" [{name}] {message.routing_key}: {message.payload!r}")
            received += 1
            if received == expected:
                print(f" [{name}] got its {expected} messages")
                return


async def main() -> None:
    async with trio_msg.connect(URL) as conn:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for name, (keys, expected) in SUBSCRIBERS.items():
                    await nursery.start(receive_logs, conn, name, keys, expected)
                nursery.start_soon(emit_logs, conn)


if __name__ == "__main__":
    trio.run(main)
