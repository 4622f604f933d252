"""A long-running worker: run it, run several, stop it with Ctrl-C or SIGTERM.

It consumes tasks from the durable queue ``tasks`` (``python
examples/publisher.py`` sends some), up to ``CONCURRENCY`` at a time, each
acked when its handler returns.  Run it in as many terminals (or machines)
as you like: the broker shares the tasks among the workers, at most
``PREFETCH`` unacknowledged ones to each.

Ctrl-C or SIGTERM stops it gracefully: it takes no new task, lets the tasks
in flight finish (for up to ``GRACE`` seconds), gives the ones it had
received but not started back to the queue, and exits 0.  A second signal
cancels the tasks still running (they go back to the queue too).  The
connection revives if the broker goes away, and the worker logs it.  The
queue is durable and never deleted: tasks wait in it while no worker runs.

Settings come from the environment: ``TRIO_MSG_URL`` (default
``amqp://guest:guest@127.0.0.1:5672//``), ``TRIO_MSG_WORKER_QUEUE``
(``tasks``), ``WORKER_NAME`` (``worker-<pid>``) and ``WORKER_CONCURRENCY``
(4)::

    python examples/worker.py
"""

from __future__ import annotations

import logging
import os

import trio

import trio_msg
from trio_msg import Message, Queue, RetryPolicy, Worker

URL = os.environ.get("TRIO_MSG_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("TRIO_MSG_WORKER_QUEUE", "tasks")
NAME = os.environ.get("WORKER_NAME", f"worker-{os.getpid()}")
CONCURRENCY = int(os.environ.get("WORKER_CONCURRENCY", "4"))
PREFETCH = 2 * CONCURRENCY  # a few ready ahead, so no handler waits for the broker
GRACE = 10.0  # seconds the tasks in flight get to finish on shutdown

# Durable: the queue and its (persistent) tasks survive a broker restart.
task_queue = Queue(QUEUE, durable=True)
# Reconnect at once, then every second, for as long as it takes.
POLICY = RetryPolicy(interval_start=0, interval_step=1, interval_max=1)


async def handle(message: Message) -> None:
    """One task.  Returning acks it; raising rejects it (and logs why)."""
    task = message.payload
    print(f" [{NAME}] Received {task['n']}", flush=True)
    await trio.sleep(task["seconds"])  # the "work"
    print(f" [{NAME}] Done {task['n']}", flush=True)


async def main() -> None:
    async with trio_msg.connect(URL, revive=POLICY, connection_name=NAME) as conn:
        worker = Worker(
            conn,
            [task_queue],
            handle,
            concurrency=CONCURRENCY,
            prefetch_count=PREFETCH,
            grace_period=GRACE,
        )
        await worker.run(handle_signals=True)
    print(f" [{NAME}] Stopped after {worker.handled} tasks", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    trio.run(main)
