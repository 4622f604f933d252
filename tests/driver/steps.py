"""Counting how often a trio_msg task runs (a trio instrument) and how often
a trio deadline moves, and the RPC server's conversation the corking and
leading tests count them through."""

from __future__ import annotations

import pytest
import trio

from trio_msg import Consumer, Producer

from .fake_broker import FakeBroker


class TaskSteps:
    """A trio instrument: how many times the task named *name* ran."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name == self.name:
            self.steps += 1


class DeadlineMoves:
    """How many times a trio cancel scope's deadline was set, from
    :meth:`start` until the caller's ``monkeypatch.undo()``."""

    def __init__(self) -> None:
        self.moves = 0

    def start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = trio.CancelScope.deadline
        assert real.fset is not None
        setter = real.fset

        def count(scope: trio.CancelScope, value: float) -> None:
            self.moves += 1
            setter(scope, value)

        monkeypatch.setattr(trio.CancelScope, "deadline", property(real.fget, count))


async def serve(
    broker: FakeBroker,
    requests: Consumer,
    producer: Producer,
    n: int,
    steps: TaskSteps,
    *,
    count_from: int = 5,
) -> None:
    """Be an RPC server for *n* requests that *broker* delivers one at a
    time: take each, publish its reply, ack it, and wait until the broker
    has the reply.  *steps* counts from request *count_from* on (the first
    ones warm up); the caller removes it."""
    (tag,) = broker.consumers
    for i in range(n):
        if i == count_from:
            trio.lowlevel.add_instrument(steps)
        await broker.deliver(tag, b"request %d" % i)
        request = await requests.__anext__()
        assert request.body == b"request %d" % i
        await producer.publish(b"reply %d" % i, routing_key="replies")
        await request.ack()
        await broker.wait_published(i + 1)
