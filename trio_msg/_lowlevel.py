"""The checkpoints (and the event) of the per-message paths, bound to the
running backend once per connection.

``anyio.lowlevel.checkpoint()`` finds the backend on every call (through
sniffio: a thread-local and a context variable) before calling trio's or
asyncio's own; that is four Python calls per checkpoint, and a publish, a
delivery and an ack each make one or two.  A connection looks the backend
up once, when it is made, and the hot paths (``Producer.publish``,
``Consumer.__anext__``, ``Message.ack``) call the bound functions.  They are
exactly what anyio would call: on trio, ``trio.lowlevel``'s; otherwise
anyio's own.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import anyio.lowlevel


class Checkpoints(NamedTuple):
    checkpoint: Callable[[], Awaitable[None]]
    checkpoint_if_cancelled: Callable[[], Awaitable[None]]
    cancel_shielded_checkpoint: Callable[[], Awaitable[None]]
    #: Makes an event (``set()``, ``await wait()``): trio's own on trio, where
    #: ``anyio.Event`` would wrap one.
    new_event: Callable[[], Any]
    #: The event loop's clock (``anyio.current_time``, without the lookup).
    current_time: Callable[[], float]
    #: Whether the calling task's effective cancel scope has been cancelled
    #: (a synchronous test: ``Message.ack`` settles nothing then).
    cancelled: Callable[[], bool]


ANYIO = Checkpoints(
    anyio.lowlevel.checkpoint,
    anyio.lowlevel.checkpoint_if_cancelled,
    anyio.lowlevel.cancel_shielded_checkpoint,
    anyio.Event,
    anyio.current_time,
    lambda: anyio.current_effective_deadline() == -math.inf,
)


def current_checkpoints() -> Checkpoints:
    """The checkpoints of the backend running this task.  trio is looked
    for only where it is imported already: on asyncio it is never imported
    (about 5 MiB for nothing)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return ANYIO
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return ANYIO
    lowlevel = trio.lowlevel
    return Checkpoints(
        lowlevel.checkpoint,
        lowlevel.checkpoint_if_cancelled,
        lowlevel.cancel_shielded_checkpoint,
        trio.Event,
        trio.current_time,
        lambda: trio.current_effective_deadline() == -math.inf,
    )
