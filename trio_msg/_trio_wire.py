"""The direct socket path on trio (see :mod:`trio_msg._wire`): imported
only when trio runs the connection.

Fairness: a read that finds data at once does not wait, so it checkpoints
before it returns (other tasks run, and the reader's cancellation arrives
there); a read that had to wait has yielded already.
What it saves is the *second* pass trio's own ``recv`` takes after a wait.
(Reading on without yielding, eight reads in a row, let a consumer of
1 MiB messages fall behind the reader: 10 MiB more resident.)
"""

from __future__ import annotations

import socket

import anyio
import trio

from ._wire import READ_SIZE, SHORT_READ


def is_tcp(sock: socket.socket) -> bool:
    return sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6)


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
        #: The last read was short: wait for readiness before the next.
        self._drained = False
        #: The scope of the task waiting in :meth:`wait_readable`.
        self._scope: trio.CancelScope | None = None

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

    def try_receive(self) -> bytes | None:
        """What the peer has sent, without waiting; ``None`` if nothing has
        arrived.  Raises :class:`anyio.EndOfStream` at the peer's end."""
        try:
            data = self._sock.recv(self._read_size)
        except BlockingIOError:
            return None
        if not data:
            raise anyio.EndOfStream
        return data

    async def wait_readable(self) -> bool:
        """Wait until there is something to read (or the peer's end):
        ``True``; ``False`` if :meth:`interrupt` woke it first.  Always a
        yield (trio waits for the next pass of its IO manager); cancelled,
        nothing was read.  One task at a time may wait here."""
        scope = trio.CancelScope()
        self._scope = scope
        try:
            with scope:
                await _wait_readable(self._sock)
        finally:
            if self._scope is scope:  # an interrupted waiter leaves after the next came
                self._scope = None
        return not scope.cancelled_caught

    def interrupt(self) -> None:
        """Wake the task waiting in :meth:`wait_readable`, if any, at once:
        the socket is free for another task to wait on as soon as this
        returns (trio unregisters the wait when it is cancelled)."""
        scope = self._scope
        if scope is not None:
            scope.cancel()

    async def receive(self) -> bytes:
        """The next bytes from the peer; waits only when none have arrived.

        After a short read the kernel's buffer was almost surely emptied, so
        the next call waits for readiness first instead of trying a read
        that would fail: one system call less per round trip, on the path
        of every reply.  (Readiness is level-triggered: data that came in
        meanwhile makes the wait return at once.)"""
        if not self._drained:
            data = self.try_receive()
            if data is not None:
                self._drained = len(data) < SHORT_READ
                await trio.lowlevel.checkpoint()
                return data
        while True:
            await self.wait_readable()
            data = self.try_receive()
            if data is not None:
                self._drained = len(data) < SHORT_READ
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
