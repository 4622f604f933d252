"""RabbitMQ tutorial 1, "Hello World!", with trio_msg.

One task consumes from the queue ``hello`` while another publishes
``"Hello World!"`` to it; the consumer prints what it received and the
program ends.  Run it as it is, on the embedded broker (``memory://``,
no RabbitMQ needed), or with ``TRIO_MSG_URL`` pointing at RabbitMQ::

    python examples/hello_world.py
    TRIO_MSG_URL=amqp://guest:guest@127.0.0.1:5672// python examples/hello_world.py

https://www.rabbitmq.com/tutorials/tutorial-one-python
"""

from __future__ import annotations

import os

import trio

import trio_msg
from trio_msg import Consumer, Producer, Queue

# No TRIO_MSG_URL: the embedded broker (memory://), no RabbitMQ needed.
URL = os.environ.get("TRIO_MSG_URL", "memory://")

# Messages published to the default exchange with routing key "hello" go to
# the queue called "hello".
hello = Queue("hello", durable=False)


async def send(conn: trio_msg.Connection) -> None:
    async with Producer(conn) as producer:
        # declare=[...] makes sure the queue exists before publishing; with
        # publisher confirms (the default) publish returns once the broker
        # has the message.
        await producer.publish("Hello World!", routing_key="hello", declare=[hello])
        print(" [x] Sent 'Hello World!'")


async def receive(
    conn: trio_msg.Connection, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with Consumer(conn, [hello]) as consumer:
        task_status.started()  # consuming: the message can't be missed now
        async for message in consumer:
            print(f" [x] Received {message.payload!r}")
            await message.ack()
            return


async def main() -> None:
    async with trio_msg.connect(URL) as conn:
        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    await nursery.start(receive, conn)
                    nursery.start_soon(send, conn)
        finally:
            async with conn.channel() as channel:
                await hello(channel).delete()


if __name__ == "__main__":
    trio.run(main)
