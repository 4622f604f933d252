"""The connection's byte pipe: what the reader and the writer talk to.

Two kinds:

* :class:`StreamWire` wraps any anyio byte stream: TLS, in-memory streams
  in tests, a plain socket on asyncio.
* ``trio_msg._trio_wire.SocketWire`` is the fast path for a plain TCP
  socket on trio.  It calls the non-blocking socket itself and waits with
  ``trio.lowlevel.wait_readable`` / ``wait_writable`` only when the kernel
  says it would block.  trio's own socket methods end every successful call
  with a schedule point, which costs a pass of the run loop (an
  ``epoll_wait`` and the scheduler's bookkeeping) even when the call had
  just waited -- a second pass for a read that woke up, and a pass for
  every write; for one message waiting for its confirm that was two of
  five passes.  The
  wire also lets a task that is about to wait write the bytes it waits on
  itself (``SocketWire.try_send``), instead of waking the writer task
  to do it: one more pass saved per round trip.  And a task that is
  about to wait for a reply may read the socket itself, instead of being
  woken by the reader task once it has read the reply (``DirectWire``,
  ``Connection._lead``): the last pass between a reply arriving and the
  task that waits for it running.

``SocketWire`` lives in ``trio_msg._trio_wire``, imported only when
trio is running: on asyncio, trio is never imported (it would cost about
5 MiB of memory for nothing).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol

import anyio
import anyio.abc

from ._protocol.frames import Buffer

READ_SIZE = 256 * 1024
#: A read shorter than this leaves the kernel's buffer empty, as a rule.
SHORT_READ = 4096


class Wire(Protocol):
    """What the connection writes to and reads from.  Writes take a list
    of buffers to send in order (``AMQPConnection.buffers_to_send``)."""

    #: :meth:`try_send` can write without waiting.
    direct: bool

    async def send(self, buffers: Sequence[Buffer]) -> None: ...

    def try_send(self, buffers: Sequence[Buffer]) -> int: ...

    async def receive(self) -> bytes: ...


def skip(buffers: Sequence[Buffer], sent: int) -> list[Buffer]:
    """What is left of *buffers* once their first *sent* bytes are written:
    the rest of a buffer written in part is a view, not a copy."""
    for i, buffer in enumerate(buffers):
        size = len(buffer)
        if sent < size:
            rest = list(buffers[i:])
            if sent:
                rest[0] = memoryview(buffer)[sent:]
            return rest
        sent -= size
    return []


class DirectWire(Wire, Protocol):
    """A wire whose reading is split in two, so that the task reading can
    change hands (see ``Connection._lead``): a wait for readiness that
    another task can interrupt, and a read that never waits."""

    async def wait_readable(self) -> bool: ...

    def try_receive(self) -> bytes | None: ...

    def interrupt(self) -> None: ...


class StreamWire:
    """An anyio byte stream as a wire; it cannot write without waiting."""

    direct = False

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def send(self, buffers: Sequence[Buffer]) -> None:
        first = buffers[0]
        if len(buffers) == 1 and type(first) is bytes:
            await self._stream.send(first)
        else:
            await self._stream.send(b"".join(buffers))

    def try_send(self, buffers: Sequence[Buffer]) -> int:
        return 0

    async def receive(self) -> bytes:
        return await self._stream.receive(READ_SIZE)


def make_wire(stream: anyio.abc.ByteStream) -> Wire:
    """The fastest wire for *stream*: a ``SocketWire`` for a plain TCP
    socket when running on trio, else a :class:`StreamWire`."""
    trio = sys.modules.get("trio")
    if trio is not None and isinstance(stream, anyio.abc.SocketStream):
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            return StreamWire(stream)  # trio is imported, but asyncio runs this
        from ._trio_wire import SocketWire, is_tcp

        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        if is_tcp(sock):
            return SocketWire(sock)
    return StreamWire(stream)
