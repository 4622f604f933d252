"""A producer and a consumer that ride out a lost connection.

``connect(..., revive=...)`` re-establishes the connection when it is lost
(try ``rabbitmqctl close_connection`` on it while this runs: the test suite
does).  The Producer and the Consumer were made from the connection, so
they move to the new one by themselves; ``retry=True`` publishes again a
message whose confirm the loss swallowed, so every message arrives at least
once, and the consumer drops duplicates by ``message_id``.  Run it with a
broker at ``TRIO_MSG_URL`` (default ``amqp://guest:guest@127.0.0.1:5672//``)::

    python examples/resilient.py
"""

from __future__ import annotations

import os

import trio

import trio_msg
from trio_msg import Consumer, Producer, Queue, RetryPolicy

URL = os.environ.get("TRIO_MSG_URL", "amqp://guest:guest@127.0.0.1:5672//")
NAME = "trio_msg-example-resilient"
COUNT = 80
queue = Queue("resilient", durable=False)
# Reconnect at once, then every 0.5 s, for as long as it takes.
POLICY = RetryPolicy(interval_start=0, interval_step=0.5, interval_max=0.5)


async def produce(conn: trio_msg.Connection) -> None:
    async with Producer(conn) as producer:
        for i in range(COUNT):
            await producer.publish({"n": i}, routing_key=queue.name, message_id=str(i), retry=True)
            print(f" [x] Sent {i}")
            await trio.sleep(0.1)  # slow enough to close the connection by hand


async def consume(
    conn: trio_msg.Connection, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    seen: set[str] = set()
    incarnation = conn.incarnation
    async with Consumer(conn, [queue], prefetch_count=10) as consumer:
        task_status.started()
        async for message in consumer:
            if conn.incarnation != incarnation:
                incarnation = conn.incarnation
                print(f" [!] Reconnected (incarnation {incarnation})")
            message_id = str(message.properties["message_id"])
            if message_id in seen:
                print(f" [.] Duplicate {message.payload['n']} dropped")
            seen.add(message_id)
            await message.ack()
            if len(seen) == COUNT:
                print(f" [x] Received all {COUNT}")
                return


async def main() -> None:
    async with trio_msg.connect(URL, revive=POLICY, connection_name=NAME) as conn:
        try:
            with trio.fail_after(25):
                async with trio.open_nursery() as nursery:
                    await nursery.start(consume, conn)
                    nursery.start_soon(produce, conn)
        finally:
            async with conn.channel() as channel:
                await queue(channel).delete()


if __name__ == "__main__":
    trio.run(main)
