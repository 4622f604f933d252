"""Setting up and checking the benchmark queues, through pika.

The orchestrator uses this, never the clients under test: every run gets a
fresh, uniquely named, non-durable queue that is deleted afterwards, and
pre-filled queues are filled here (untimed) with pika's BlockingConnection,
then checked to hold exactly what was asked for before the run starts.

``python -m benchmarks.broker feed --queue Q --n N --max-depth D`` publishes
N messages while keeping the queue at most about D deep (the feeder of the
long consume of workload g).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions

from benchmarks.clients._common import (
    CONTENT_ENCODING,
    CONTENT_TYPE,
    DELIVERY_MODE,
    SMALL,
    URL,
)

PROPS = pika.BasicProperties(
    content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING, delivery_mode=DELIVERY_MODE
)
PREFIX = "trio_msg-bench"
QUEUE_EXPIRES_MS = 30 * 60 * 1000


class BenchError(RuntimeError):
    """A run produced the wrong result (or the broker did not settle)."""


def _connect() -> pika.BlockingConnection:
    params = pika.URLParameters(URL)
    params.heartbeat = 0  # the admin connection may sit idle while a run goes on
    return pika.BlockingConnection(params)


class Broker:
    """One admin connection to the broker (pika, no heartbeats)."""

    def __init__(self) -> None:
        self.conn = _connect()
        self.ch = self.conn.channel()

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()

    def _channel(self):
        if not self.conn.is_open:
            self.conn = _connect()
        if not self.ch.is_open:
            self.ch = self.conn.channel()
        return self.ch

    def new_queue(self, label: str) -> str:
        name = f"{PREFIX}-{label}-{uuid.uuid4().hex[:8]}"
        # x-expires: should the benchmark die before deleting it, the broker
        # drops the queue once it has been unused for half an hour.
        self._channel().queue_declare(
            name, durable=False, auto_delete=False, arguments={"x-expires": QUEUE_EXPIRES_MS}
        )
        return name

    def depth(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of the queue."""
        try:
            ok = self._channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise BenchError(f"queue {queue} is gone: {exc}") from exc
        return ok.method.message_count, ok.method.consumer_count

    def wait_depth(self, queue: str, expected: int, timeout: float = 30.0) -> int:
        """Wait until the queue holds exactly ``expected`` ready messages and
        no consumer; fail if it holds more, or never gets there."""
        deadline = time.monotonic() + timeout
        while True:
            messages, consumers = self.depth(queue)
            if messages > expected:
                raise BenchError(f"{queue}: {messages} messages, expected {expected}")
            if messages == expected and consumers == 0:
                return messages
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{queue}: {messages} messages and {consumers} consumers after "
                    f"{timeout:.0f}s, expected {expected} and none"
                )
            time.sleep(0.05)

    def settle(self, timeout: float = 5.0) -> float:
        """Wait until the broker's process has gone idle; return the seconds
        waited.

        Deleting a queue of 100,000 messages keeps RabbitMQ busy for a while
        after ``queue.delete-ok``; without this, whichever client runs first
        in a workload pays for the previous workload's clean-up.  Idle means
        at most one clock tick of CPU (10 ms) in a 200 ms window.  Where the
        broker's process cannot be seen (not Linux, or not on this machine)
        this is a fixed half-second pause.
        """
        started = time.monotonic()
        pids = _beam_pids()
        if not pids:
            time.sleep(0.5)
            return time.monotonic() - started
        tick = os.sysconf("SC_CLK_TCK")
        window = 0.2
        before = _cpu_ticks(pids)
        while time.monotonic() - started < timeout:
            time.sleep(window)
            now = _cpu_ticks(pids)
            if now - before <= max(1, tick * window * 0.05):
                break
            before = now
        return time.monotonic() - started

    def delete(self, queue: str) -> None:
        try:
            self._channel().queue_delete(queue)
        except pika.exceptions.AMQPError:
            pass

    def prefill(self, queue: str, n: int, body: bytes = SMALL) -> None:
        ch = self._channel()
        publish = ch.basic_publish
        for i in range(n):
            publish("", queue, body, PROPS)
            if i % 10_000 == 9_999:
                self.conn.process_data_events(0)
        self.wait_depth(queue, n, timeout=60)


def _beam_pids() -> list[int]:
    """The local Erlang VMs (RabbitMQ's process), found through /proc."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() == "beam.smp":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _cpu_ticks(pids: list[int]) -> int:
    """User plus system CPU of the processes, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total


def feed(queue: str, n: int, max_depth: int) -> None:
    """Publish n messages, pausing whenever the queue is over max_depth."""
    conn = _connect()
    ch = conn.channel()
    publish = ch.basic_publish
    step = max(1, max_depth // 20)
    sent = 0
    while sent < n:
        while ch.queue_declare(queue, passive=True).method.message_count > max_depth - step:
            time.sleep(0.02)
        for _ in range(min(step, n - sent)):
            publish("", queue, SMALL, PROPS)
        sent += min(step, n - sent)
    ch.queue_declare(queue, passive=True)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["feed"])
    parser.add_argument("--queue", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--max-depth", type=int, default=100_000)
    args = parser.parse_args()
    feed(args.queue, args.n, args.max_depth)


if __name__ == "__main__":
    main()
