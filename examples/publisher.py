"""Send tasks to the workers of ``examples/worker.py``.

Publishes ``COUNT`` tasks (the first argument, default 20) to the durable
queue ``tasks`` as persistent messages, through a pipeline of publisher
confirms: up to ``WINDOW`` messages travel unconfirmed at once, and the
program ends only when the broker has confirmed (or refused) every one of
them.  A task the broker did not take is reported, and the exit status
says so::

    python examples/publisher.py 100

``TRIO_MSG_URL`` and ``TRIO_MSG_WORKER_QUEUE`` as for the worker;
``TASK_SECONDS`` says how long each task takes (0.05).
"""

from __future__ import annotations

import os
import sys

import trio

import trio_msg
from trio_msg import Producer, Queue

URL = os.environ.get("TRIO_MSG_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("TRIO_MSG_WORKER_QUEUE", "tasks")
WINDOW = 100  # unconfirmed messages at most
SECONDS = float(os.environ.get("TASK_SECONDS", "0.05"))  # how long each task "works"

task_queue = Queue(QUEUE, durable=True)  # the worker's declaration, the same


async def main(count: int) -> int:
    async with trio_msg.connect(URL) as conn, Producer(conn, serializer="json") as producer:
        # (this script reports its failures itself: no PipelineFailed)
        async with producer.pipeline(max_unconfirmed=WINDOW, raise_on_failure=False) as pipe:
            for n in range(count):
                await pipe.publish(
                    {"n": n, "seconds": SECONDS},
                    routing_key=task_queue.name,
                    delivery_mode="persistent",
                    declare=[task_queue],
                )
        # Leaving the pipeline waited for every confirm.
        print(f" [x] Published {count}: {pipe.acked} confirmed, {len(pipe.failures)} failed")
        for result in pipe.failures:
            print(f" [!] Not taken: {result!r}")
        return 1 if pipe.failures else 0


if __name__ == "__main__":
    sys.exit(trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 20))
