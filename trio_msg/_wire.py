"""The connection's byte pipe: what the reader and the writer talk to.

Two kinds:

* :class:`StreamWire` wraps any anyio byte stream: TLS, in-memory streams
  in tests, a plain socket on asyncio.
* :class:`SocketWire` is the fast path for a plain TCP socket on trio.  It
  calls the non-blocking socket itself and waits with
  ``trio.lowlevel.wait_readable`` / ``wait_writable`` only when the kernel
  says it would block.  trio's own socket methods end every successful call
  with a schedule point, which costs a pass of the run loop (an
  ``epoll_wait`` and the scheduler's bookkeeping) per read and per write;
  for one message waiting for its confirm that was two of five passes.  The
  wire also lets a task that is about to wait write the bytes it waits on
  itself (:meth:`SocketWire.try_send`), instead of waking the writer task
  to do it: one more pass saved per round trip.

Fairness: a :class:`SocketWire` read that finds data at once does not
yield, so the reader yields by itself every ``YIELD_EVERY`` reads that did
not wait; that is also where its cancellation is delivered while data keeps
coming.
"""

from __future__ import annotations

import socket
from typing import Protocol

import anyio
import anyio.abc
import trio

READ_SIZE = 256 * 1024
#: A reader that keeps finding data yields to the other tasks after this
#: many reads in a row that did not wait.
YIELD_EVERY = 8
#: A read shorter than this leaves the kernel's buffer empty, as a rule.
SHORT_READ = 4096


class Wire(Protocol):
    #: :meth:`try_send` can write without waiting.
    direct: bool

    async def send(self, data: bytes | memoryview) -> None: ...

    def try_send(self, data: bytes | memoryview) -> int: ...

    async def receive(self) -> bytes: ...


class StreamWire:
    """An anyio byte stream as a wire; it cannot write without waiting."""

    direct = False

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def send(self, data: bytes | memoryview) -> None:
        await self._stream.send(bytes(data) if isinstance(data, memoryview) else data)

    def try_send(self, data: bytes | memoryview) -> int:
        return 0

    async def receive(self) -> bytes:
        return await self._stream.receive(READ_SIZE)


class SocketWire:
    """A connected, non-blocking TCP socket driven by trio's IO manager.

    The stream it came from still owns the socket and closes it; closing
    wakes a task waiting here with :class:`anyio.ClosedResourceError`.
    Errors: a socket error is raised as the :class:`OSError` it is, the
    peer's end of stream as :class:`anyio.EndOfStream`.
    """

    direct = True

    def __init__(self, sock: socket.socket, read_size: int = READ_SIZE) -> None:
        self._sock = sock
        self._read_size = read_size
        self._reads_without_wait = 0
        #: The last read was short: wait for readiness before the next.
        self._drained = False

    def try_send(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes now, without waiting; how many bytes.
        Raises :class:`OSError` when the socket is broken."""
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    async def send(self, data: bytes | memoryview) -> None:
        """Write all of *data*; waits only while the kernel's buffer is full.
        Cancelled while waiting, some of *data* may have been written."""
        view = memoryview(data)
        total = len(view)
        sent = self.try_send(view)
        while sent < total:
            await _wait_writable(self._sock)
            sent += self.try_send(view[sent:])
        view.release()

    async def receive(self) -> bytes:
        """The next bytes from the peer; waits only when none have arrived.

        After a short read the kernel's buffer was almost surely emptied, so
        the next call waits for readiness first instead of trying a read
        that would fail: one system call less per round trip, on the path
        of every reply.  (Readiness is level-triggered: data that came in
        meanwhile makes the wait return at once.)"""
        sock = self._sock
        size = self._read_size
        if not self._drained:
            try:
                data = sock.recv(size)
            except BlockingIOError:
                pass
            else:
                self._drained = len(data) < SHORT_READ
                self._reads_without_wait += 1
                if self._reads_without_wait >= YIELD_EVERY:
                    self._reads_without_wait = 0
                    await trio.lowlevel.checkpoint()
                if not data:
                    raise anyio.EndOfStream
                return data
        self._reads_without_wait = 0
        while True:
            await _wait_readable(sock)
            try:
                data = sock.recv(size)
            except BlockingIOError:
                continue
            self._drained = len(data) < SHORT_READ
            if not data:
                raise anyio.EndOfStream
            return data


async def _wait_readable(sock: socket.socket) -> None:
    try:
        await trio.lowlevel.wait_readable(sock)
    except trio.ClosedResourceError:
        raise anyio.ClosedResourceError from None


async def _wait_writable(sock: socket.socket) -> None:
    try:
        await trio.lowlevel.wait_writable(sock)
    except trio.ClosedResourceError:
        raise anyio.ClosedResourceError from None


def make_wire(stream: anyio.abc.ByteStream) -> Wire:
    """The fastest wire for *stream*: a :class:`SocketWire` for a plain TCP
    socket when running on trio, else a :class:`StreamWire`."""
    if isinstance(stream, anyio.abc.SocketStream):
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            return StreamWire(stream)  # not on trio
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
            return SocketWire(sock)
    return StreamWire(stream)
