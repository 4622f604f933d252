"""The checkpoints (and the event) of the per-message paths, bound to the
running backend once per connection.

``anyio.lowlevel.checkpoint()`` finds the backend on every call (through
sniffio: a thread-local and a context variable) before calling trio's or
asyncio's own; that is four Python calls per checkpoint, and a publish, a
delivery and an ack each make one or two.  A connection looks the backend
up once, when it is made, and the hot paths (``Producer.publish``,
``Consumer.__anext__``, ``Message.ack``) call the bound functions.  They are
exactly what anyio would call: on trio, ``trio.lowlevel``'s; otherwise
the running backend's own (anyio's ``get_async_backend()``, looked up once:
on asyncio the lookup was five sniffio calls per message consumed and
acked, about a tenth of the client's CPU on workload d).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import anyio.lowlevel


def _backend_lookup() -> Callable[[], Any] | None:
    """anyio's ``get_async_backend``, what every ``anyio.lowlevel`` function
    calls first (anyio 4); None if a later anyio moved it."""
    try:
        module = importlib.import_module("anyio._core._eventloop")
    except ImportError:  # pragma: no cover - a later anyio
        return None
    lookup: Callable[[], Any] | None = getattr(module, "get_async_backend", None)
    return lookup


_get_backend = _backend_lookup()


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
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return _trio(trio)
    if _get_backend is None:
        return ANYIO  # pragma: no cover - a later anyio
    try:
        backend = _get_backend()
    except RuntimeError:  # no event loop runs here: look it up on each call
        return ANYIO
    return Checkpoints(
        backend.checkpoint,
        backend.checkpoint_if_cancelled,
        backend.cancel_shielded_checkpoint,
        anyio.Event,
        backend.current_time,
        lambda: backend.current_effective_deadline() == -math.inf,
    )


def _trio(trio: Any) -> Checkpoints:
    lowlevel = trio.lowlevel
    return Checkpoints(
        lowlevel.checkpoint,
        lowlevel.checkpoint_if_cancelled,
        lowlevel.cancel_shielded_checkpoint,
        trio.Event,
        trio.current_time,
        lambda: trio.current_effective_deadline() == -math.inf,
    )


def closing_scope(exc_type: type[BaseException] | None) -> anyio.CancelScope:
    """The scope an ``__aexit__`` closes its resource in: shielded when an
    exception is on its way out (the closes are bounded in time).  A
    cancellation raised by the close would replace that exception, and the
    cancelled scope that caught it would drop the exception with it; with
    no exception in flight, the close delivers the cancellation as usual."""
    return anyio.CancelScope(shield=exc_type is not None)
