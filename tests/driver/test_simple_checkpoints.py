"""SimpleQueue, Worker and Message.process() keep trio's rule: every public
async method is a checkpoint, also when it has nothing to wait for (a
buffered message, an empty queue, a second close).  The last test lists
their public async methods and the ``check(...)`` calls here, so a new one
without a checkpoint test fails it.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from trio_msg import Message, Queue, SimpleQueue, Worker
from trio_msg.connection import connect
from trio_msg.errors import Empty
from trio_msg.message import MessageProcess

from .fake_broker import URL, FakeBroker

CLASSES = (SimpleQueue, Worker, MessageProcess)


async def check(name: str, call: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``call()`` and assert it checkpointed; ``name`` is ``Class.method``."""
    with trio.testing.assert_checkpoints():
        return await call()


def _raises(exc: type[BaseException], call: Callable[[], Awaitable[Any]]) -> Callable[[], Any]:
    async def run() -> None:
        with pytest.raises(exc):
            await call()

    return run


@pytest.mark.trio
async def test_simple_queue(broker: FakeBroker) -> None:
    broker.get_queue.extend([b'"got"'])
    async with broker, connect(URL) as conn:
        queue = conn.SimpleQueue("q")
        await check("SimpleQueue.__aenter__", queue.__aenter__)
        await check("SimpleQueue.put", lambda: queue.put("x"))
        message = await check("SimpleQueue.get_nowait", queue.get_nowait)
        assert message.body == b'"got"'
        await check("SimpleQueue.get_nowait", _raises(Empty, queue.get_nowait))
        assert await check("SimpleQueue.qsize", queue.qsize) == 0
        assert await check("SimpleQueue.clear", queue.clear) == 0
        # A blocking get that times out, then one that finds a message waiting.
        await check("SimpleQueue.get", _raises(Empty, lambda: queue.get(timeout=0.01)))
        (tag,) = broker.consumers
        await broker.deliver(tag, b'"delivered"')
        await trio.testing.wait_all_tasks_blocked()
        message = await check("SimpleQueue.get", lambda: queue.get(timeout=0))
        assert message.body == b'"delivered"'
        await check("SimpleQueue.close", queue.close)
        await check("SimpleQueue.close", queue.close)  # closed already
        await check("SimpleQueue.__aexit__", lambda: queue.__aexit__(None, None, None))
        await check("SimpleQueue.aclose", queue.aclose)


@pytest.mark.trio
async def test_process_and_worker(broker: FakeBroker) -> None:
    broker.get_queue.extend([b"a", b"b"])
    async with broker, connect(URL) as conn, conn.channel() as ch:
        message = await ch.basic_get("q")
        assert isinstance(message, Message)
        process = message.process()
        await check("MessageProcess.__aenter__", process.__aenter__)
        await check("MessageProcess.__aexit__", lambda: process.__aexit__(None, None, None))
        no_ack = await ch.basic_get("q", no_ack=True)
        assert no_ack is not None
        process = no_ack.process()
        await process.__aenter__()
        # Nothing to settle: still a checkpoint.
        await check("MessageProcess.__aexit__", lambda: process.__aexit__(None, None, None))

        async def handler(message: Message) -> None:
            pass

        worker = Worker(conn, [Queue("q")], handler)
        worker.shutdown()  # before it runs: it starts, stops at once, and returns
        await check("Worker.run", worker.run)


def test_every_public_async_method_is_covered() -> None:
    covered = set(re.findall(r'check\(\s*"(\w+\.\w+)"', inspect.getsource(sys.modules[__name__])))
    public: set[str] = set()
    for cls in CLASSES:
        for name, member in inspect.getmembers(cls):
            if name.startswith("_") and name not in ("__aenter__", "__aexit__"):
                continue
            if inspect.iscoroutinefunction(member):
                public.add(f"{cls.__name__}.{name}")
    missing = public - covered
    assert not missing, f"no checkpoint test for: {sorted(missing)}"
