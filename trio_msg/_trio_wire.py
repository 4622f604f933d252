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

from ._wire import READ_SIZE

#: A read shorter than this leaves the kernel's buffer empty, as a rule.
SHORT_READ = 4096


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
                await trio.lowlevel.checkpoint()
                if not data:
                    raise anyio.EndOfStream
                return data
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
