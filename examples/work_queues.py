"""RabbitMQ tutorial 2, "Work Queues", with trio_msg.

Two workers share the durable queue ``task_queue``.  Each task's dots say
how long it takes (a tenth of a second per dot).  With ``prefetch_count=1``
the broker gives a worker a new task only once it has acknowledged the
last, so a busy worker is not handed more work while the other is idle.
The program ends when every task is done.

https://www.rabbitmq.com/tutorials/tutorial-two-python
"""

from __future__ import annotations

import os
from collections import Counter

import trio

import trio_msg
from trio_msg import Consumer, Producer, Queue

# No TRIO_MSG_URL: the embedded broker (memory://), no RabbitMQ needed.
URL = os.environ.get("TRIO_MSG_URL", "memory://")

TASKS = [
    "First message.",
    "Second message..",
    "Third message...",
    "Fourth message....",
    "Fifth message.....",
    "Sixth message.",
]

# durable: the queue survives a broker restart (and persistent messages in it).
task_queue = Queue("task_queue", durable=True)


async def new_task(conn: trio_msg.Connection) -> None:
    async with Producer(conn) as producer:
        for task in TASKS:
            await producer.publish(
                task, routing_key="task_queue", delivery_mode="persistent", declare=[task_queue]
            )
            print(f" [x] Sent {task!r}")


async def worker(
    conn: trio_msg.Connection,
    name: str,
    done: trio.MemorySendChannel[str],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with Consumer(conn, [task_queue], prefetch_count=1) as consumer:
        task_status.started()
        async for message in consumer:
            task = message.payload
            print(f" [{name}] Received {task!r}")
            await trio.sleep(task.count(".") / 10)  # "work"
            print(f" [{name}] Done {task!r}")
            await message.ack()  # only now does the broker send this worker another
            await done.send(name)


async def main() -> None:
    async with trio_msg.connect(URL) as conn:
        try:
            with trio.fail_after(20):
                done_send, done_receive = trio.open_memory_channel[str](len(TASKS))
                async with trio.open_nursery() as nursery:
                    for name in ("worker 1", "worker 2"):
                        await nursery.start(worker, conn, name, done_send)
                    await new_task(conn)
                    tally = Counter([await done_receive.receive() for _ in TASKS])
                    nursery.cancel_scope.cancel()  # stop the workers
            shares = ", ".join(f"{name} did {n}" for name, n in sorted(tally.items()))
            print(f"All {len(TASKS)} tasks done: {shares}")
        finally:
            async with conn.channel() as channel:
                await task_queue(channel).delete()


if __name__ == "__main__":
    trio.run(main)
