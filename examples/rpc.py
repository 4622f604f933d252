"""RabbitMQ tutorial 6, "RPC", with trio_msg.

A server consumes requests from ``rpc_queue`` and answers each with the
Fibonacci number asked for, publishing the answer to the request's
``reply_to`` queue with the same ``correlation_id``.  The client sends a
request, then waits on its own exclusive, server-named callback queue for
the answer with its correlation id.

https://www.rabbitmq.com/tutorials/tutorial-six-python
"""

from __future__ import annotations

import os
import uuid
from contextlib import AsyncExitStack
from types import TracebackType

import trio

import trio_msg
from trio_msg import Consumer, Producer, Queue

# No TRIO_MSG_URL: the embedded broker (memory://), no RabbitMQ needed.
URL = os.environ.get("TRIO_MSG_URL", "memory://")

rpc_queue = Queue("rpc_queue", durable=False)


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def rpc_server(
    conn: trio_msg.Connection, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with (
        Producer(conn) as producer,
        Consumer(conn, [rpc_queue], prefetch_count=1) as requests,
    ):
        print(" [x] Awaiting RPC requests")
        task_status.started()
        async for request in requests:
            n = request.payload
            print(f" [.] fib({n})")
            await producer.publish(
                fib(n),
                routing_key=request.properties["reply_to"],
                correlation_id=request.properties["correlation_id"],
            )
            await request.ack()


class FibonacciRpcClient:
    """``async with FibonacciRpcClient(conn) as client: await client.call(30)``"""

    def __init__(self, conn: trio_msg.Connection) -> None:
        self.conn = conn
        self.callback_queue = Queue("", exclusive=True)
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> FibonacciRpcClient:
        async with AsyncExitStack() as stack:
            self.producer = await stack.enter_async_context(Producer(self.conn))
            self.responses = await stack.enter_async_context(
                Consumer(self.conn, [self.callback_queue], no_ack=True)
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def call(self, n: int) -> int:
        correlation_id = uuid.uuid4().hex
        await self.producer.publish(
            n,
            routing_key="rpc_queue",
            reply_to=self.callback_queue.name,
            correlation_id=correlation_id,
        )
        async for response in self.responses:
            if response.properties.get("correlation_id") == correlation_id:
                return int(response.payload)
        raise RuntimeError("the callback queue went away")


async def main() -> None:
    async with trio_msg.connect(URL) as conn:
        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    await nursery.start(rpc_server, conn)
                    async with FibonacciRpcClient(conn) as client:
                        for n in (0, 1, 10, 20):
                            print(f" [x] Requesting fib({n})")
                            print(f" [.] Got fib({n}) = {await client.call(n)}")
                    nursery.cancel_scope.cancel()  # stop the server
        finally:
            async with conn.channel() as channel:
                await rpc_queue(channel).delete()


if __name__ == "__main__":
    trio.run(main)
