"""RabbitMQ tutorial 4, "Routing", with trio_msg.

Log lines go to the direct exchange ``direct_logs`` with their severity as
the routing key.  One subscriber binds its queue for ``error`` only (say, to
write errors to disk); the other for every severity (to print them all).

https://www.rabbitmq.com/tutorials/tutorial-four-python
"""

from __future__ import annotations

import os

import trio

import trio_msg
from trio_msg import Consumer, Exchange, Producer, Queue, binding

# No TRIO_MSG_URL: the embedded broker (memory://), no RabbitMQ needed.
URL = os.environ.get("TRIO_MSG_URL", "memory://")

direct_logs = Exchange("direct_logs", type="direct", durable=False, auto_delete=True)

MESSAGES = [
    ("info", "Starting up"),
    ("warning", "Disk 80% full"),
    ("error", "Disk full"),
    ("info", "Shutting down"),
    ("error", "Lost the database"),
]

SUBSCRIBERS = {
    "errors only": ["error"],
    "everything": ["info", "warning", "error"],
}


async def emit_logs(conn: trio_msg.Connection) -> None:
    async with Producer(conn, exchange=direct_logs) as producer:
        for severity, text in MESSAGES:
            await producer.publish(text, routing_key=severity)
            print(f" [x] Sent {severity}: {text!r}")


async def receive_logs(
    conn: trio_msg.Connection,
    name: str,
    severities: list[str],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # One queue, one binding per severity.
    queue = Queue("", bindings=[binding(direct_logs, s) for s in severities], exclusive=True)
    expected = sum(severity in severities for severity, _ in MESSAGES)
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
                for name, severities in SUBSCRIBERS.items():
                    await nursery.start(receive_logs, conn, name, severities)
                nursery.start_soon(emit_logs, conn)


if __name__ == "__main__":
    trio.run(main)
