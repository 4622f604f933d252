"""RabbitMQ tutorial 3, "Publish/Subscribe", with trio_msg.

An emitter publishes log lines to the fanout exchange ``logs``; two
subscribers each bind a server-named, exclusive queue to it, so each gets
every line.  The exchange is auto-delete and the queues exclusive: they
disappear once the program is done.

https://www.rabbitmq.com/tutorials/tutorial-three-python
"""

from __future__ import annotations

import os

import trio

import trio_msg
from trio_msg import Consumer, Exchange, Producer, Queue

# No TRIO_MSG_URL: the embedded broker (memory://), no RabbitMQ needed.
URL = os.environ.get("TRIO_MSG_URL", "memory://")

logs = Exchange("logs", type="fanout", durable=False, auto_delete=True)

LINES = ["info: Hello World!", "warning: disk 80% full", "error: disk full"]


async def emit_logs(conn: trio_msg.Connection) -> None:
    async with Producer(conn, exchange=logs) as producer:
        for line in LINES:
            await producer.publish(line)  # a fanout exchange ignores the routing key
            print(f" [x] Sent {line!r}")


async def receive_logs(
    conn: trio_msg.Connection,
    name: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # Queue(""): the broker names it; exclusive: deleted with our connection.
    queue = Queue("", exchange=logs, exclusive=True)
    async with Consumer(conn, [queue], no_ack=True) as consumer:
        print(f" [{name}] Waiting for logs on {queue.name}")
        task_status.started()  # bound: from now on every line reaches us
        received = 0
        async for message in consumer:
            print(f" [{name}] {message.payload}")
            received += 1
            if received == len(LINES):
                return


async def main() -> None:
    async with trio_msg.connect(URL) as conn:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for name in ("subscriber 1", "subscriber 2"):
                    await nursery.start(receive_logs, conn, name)
                nursery.start_soon(emit_logs, conn)
        print("Both subscribers got every line")


if __name__ == "__main__":
    trio.run(main)
