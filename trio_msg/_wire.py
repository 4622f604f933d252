"""The connection's byte pipe: what the reader and the writer talk to.

Two kinds:

* :class:`StreamWire` wraps any anyio byte stream: TLS, in-memory streams
  in tests, a plain socket on an asyncio loop that cannot watch sockets
  (Windows' proactor).
* ``trio_msg._asyncio_wire.AsyncioSocketWire`` is the same fast path on
  asyncio, through the loop's ``add_reader`` / ``add_writer``.
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
  ``Pump._lead``): the last pass between a reply arriving and the
  task that waits for it running.

``SocketWire`` lives in ``trio_msg._trio_wire``, imported only when
trio is running: on asyncio, trio is never imported (it would cost about
5 MiB of memory for nothing).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence
from typing import Protocol, cast

import anyio
import anyio.abc

from ._protocol.frames import Buffer

#: What a read asks for, as a rule.  Why not more: each ``recv`` allocates
#: what it asks for before it is cut down to what came, and a busy consumer
#: of small messages reads bursts the size of its prefetch window.  Reads of
#: 256 KiB left glibc's heap holding about 0.3 MiB more by the end of
#: workload d than reads of 64 KiB (``/proc/self/smaps``), and were no
#: faster there.
READ_SIZE = 64 * 1024
#: What a read asks for while a frame larger than :data:`READ_SIZE` is half
#: in (large messages; see :func:`read_size`).  Such a frame would otherwise
#: be put together from several reads, a copy each: with 64 KiB reads
#: only, workload f (1 MiB messages) ran 10-20% slower (medians of two A/B
#: runs of five).
BIG_READ_SIZE = 256 * 1024
#: A read shorter than this leaves the kernel's buffer empty, as a rule.
SHORT_READ = 4096
#: The most buffers one ``sendmsg`` takes (Linux and the BSDs: 1024).
IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16
#: Windows' sockets have no ``sendmsg``: buffers are joined there.
_SENDMSG = hasattr(socket.socket, "sendmsg")


def read_size(frame_in_progress: int) -> int | None:
    """The size of the next read, given the size of the frame the core
    holds in part (``AMQPConnection.frame_in_progress``): ``None`` (the
    wire's own, :data:`READ_SIZE`) unless that frame is a big one."""
    return BIG_READ_SIZE if frame_in_progress > READ_SIZE else None


def is_tcp(sock: socket.socket) -> bool:
    return sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6)


def send_some(sock: socket.socket, buffers: Sequence[Buffer]) -> int:
    """Write what the kernel takes now of *buffers*, in order, on the
    non-blocking *sock*, without waiting; how many bytes.  Several buffers
    go in one ``sendmsg`` (at most ``IOV_MAX`` of them), so a large body is
    not copied into one string first.  Raises :class:`OSError` when the
    socket is broken."""
    try:
        if len(buffers) == 1:
            return sock.send(buffers[0])
        if not _SENDMSG:
            return sock.send(b"".join(buffers))
        if len(buffers) > IOV_MAX:
            buffers = buffers[:IOV_MAX]
        return sock.sendmsg(buffers)
    except BlockingIOError:
        return 0


class Wire(Protocol):
    """What the connection writes to and reads from.  Writes take a list
    of buffers to send in order (``AMQPConnection.buffers_to_send``)."""

    #: :meth:`try_send` can write without waiting.
    direct: bool

    async def send(self, buffers: Sequence[Buffer]) -> None: ...

    def try_send(self, buffers: Sequence[Buffer]) -> int: ...

    async def receive(self, size: int | None = None) -> bytes:
        """The next bytes from the peer, at most *size* (by default the
        wire's own read size; see :func:`read_size`)."""
        ...

    def close(self) -> None:
        """The connection is closing its stream: let go of what the wire
        holds of its own (called just before the stream's ``aclose``)."""


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
    change hands (see ``Pump._lead``): a wait for readiness that
    another task can interrupt, and a read that never waits."""

    async def wait_readable(self) -> bool: ...

    def try_receive(self, size: int | None = None) -> bytes | None: ...

    def interrupt(self) -> None: ...


def recv_some(sock: socket.socket, size: int) -> bytes | None:
    """What the peer has sent on the non-blocking *sock*, at most *size*
    bytes, without waiting; ``None`` if nothing has arrived.  Raises
    :class:`anyio.EndOfStream` at the peer's end, :class:`OSError` when the
    socket is broken."""
    try:
        data = sock.recv(size)
    except BlockingIOError:
        return None
    if not data:
        raise anyio.EndOfStream
    return data


class DirectSocket:
    """What the two direct wires (trio's and asyncio's) share: ``send`` and
    ``receive`` made of the non-waiting ``try_send`` / ``try_receive`` and
    the backend's waits, which each wire supplies.  The driver reads a
    direct wire through ``wait_readable`` and ``try_receive`` itself;
    ``receive`` is the plain :class:`Wire` reading."""

    #: The last read was short: wait for readiness before the next.
    _drained = False

    def try_send(self, buffers: Sequence[Buffer]) -> int:
        raise NotImplementedError

    def try_receive(self, size: int | None = None) -> bytes | None:
        raise NotImplementedError

    async def wait_readable(self) -> bool:
        raise NotImplementedError

    async def _wait_writable(self) -> None:
        raise NotImplementedError

    async def _yield(self) -> None:
        raise NotImplementedError

    async def send(self, buffers: Sequence[Buffer]) -> None:
        """Write all of *buffers*; waits only while the kernel's buffer is
        full.  Cancelled while waiting, some of them may have been written."""
        total = sum(map(len, buffers))
        sent = self.try_send(buffers)
        while sent < total:
            total -= sent
            buffers = skip(buffers, sent)
            await self._wait_writable()
            sent = self.try_send(buffers)

    async def receive(self, size: int | None = None) -> bytes:
        """The next bytes from the peer (at most *size*); waits only when
        none have arrived.

        After a short read the kernel's buffer was almost surely emptied, so
        the next call waits for readiness first instead of trying a read
        that would fail: one system call less per round trip, on the path
        of every reply.  (Readiness is level-triggered: data that came in
        meanwhile makes the wait return at once.)  A read that found data
        at once yields before it returns (fairness)."""
        if not self._drained:
            data = self.try_receive(size)
            if data is not None:
                self._drained = len(data) < SHORT_READ
                await self._yield()
                return data
        while True:
            await self.wait_readable()
            data = self.try_receive(size)
            if data is not None:
                self._drained = len(data) < SHORT_READ
                return data


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

    async def receive(self, size: int | None = None) -> bytes:
        return await self._stream.receive(size or READ_SIZE)

    def close(self) -> None:
        pass


def make_wire(stream: anyio.abc.ByteStream) -> Wire:
    """The fastest wire for *stream*: for a plain TCP socket a
    ``SocketWire`` on trio, an ``AsyncioSocketWire`` on an asyncio loop that
    can watch file descriptors; for ``memory://`` the broker's own
    ``MemoryWire``; else a :class:`StreamWire`."""
    driver = sys.modules.get("trio_msg._broker.driver")
    if driver is not None and isinstance(stream, driver.MemoryClient):
        return cast(Wire, stream.wire)
    if not isinstance(stream, anyio.abc.SocketStream):
        return StreamWire(stream)
    sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    if not is_tcp(sock):
        return StreamWire(stream)
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass  # trio is imported, but asyncio runs this
        else:
            from ._trio_wire import SocketWire

            return SocketWire(sock)
    from ._asyncio_wire import AsyncioSocketWire, watches_fds

    if watches_fds():
        return AsyncioSocketWire(sock)
    return StreamWire(stream)
