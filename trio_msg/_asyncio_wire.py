"""The direct socket path on asyncio (see :mod:`trio_msg._wire`):
imported only when asyncio runs the connection.

anyio's asyncio socket stream reads through a transport whose reading it
resumes and pauses around every ``receive`` (two ``epoll_ctl`` calls per
read), ends every ``send`` with a yield, and cannot be read by whichever
task is about to wait for a reply (``Pump._lead``): a confirmed
publish took the writer's pass, the reader's and the publisher's.  This
wire drives a duplicate of the stream's socket with the event loop's
``add_reader`` / ``add_writer`` (the loop refuses those for a descriptor a
transport owns; the duplicate is a descriptor of its own for the same
connection).  The stream stays the socket's owner and closes the
original; the connection calls :meth:`AsyncioSocketWire.close` just before
it does, which closes the duplicate and wakes the wire's waiters.

The watch for readability is kept between waits (a task that waits for
every reply does not re-register each time) and dropped when it fires with
no one waiting: readiness is level-triggered, and an unread socket would
otherwise wake the loop on every pass.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import anyio

from ._protocol.frames import Buffer
from ._wire import READ_SIZE, DirectSocket, recv_some, send_some


def watches_fds() -> bool:
    """The running asyncio loop can watch sockets (``add_reader``): not
    Windows' proactor loop."""
    loop = asyncio.get_running_loop()
    return not isinstance(loop, getattr(asyncio, "ProactorEventLoop", ()))


class AsyncioSocketWire(DirectSocket):
    """A connected TCP socket (duplicated from *sock*, which the stream
    keeps) driven by the running asyncio loop.

    Errors: a socket error is raised as the :class:`OSError` it is, the
    peer's end of stream as :class:`anyio.EndOfStream`, a wait or a read
    after :meth:`close` as :class:`anyio.ClosedResourceError`.
    """

    direct = True

    def __init__(self, sock: socket.socket, read_size: int = READ_SIZE) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock.dup()
        self._sock.setblocking(False)
        self._fd = self._sock.fileno()
        self._read_size = read_size
        self._reader: asyncio.Future[bool] | None = None
        self._writer: asyncio.Future[None] | None = None
        #: ``add_reader`` is in place (kept between waits).
        self._watching = False
        self._closed = False

    def try_send(self, buffers: Sequence[Buffer]) -> int:
        """Write what the kernel takes now (see :func:`~trio_msg._wire.send_some`)."""
        if self._closed:
            raise anyio.ClosedResourceError
        return send_some(self._sock, buffers)

    async def _wait_writable(self) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._writer = fut
        self._loop.add_writer(self._fd, self._on_writable)
        try:
            await fut
        finally:
            self._writer = None
            if not self._closed:
                self._loop.remove_writer(self._fd)
        if self._closed:
            raise anyio.ClosedResourceError

    def _on_writable(self) -> None:
        fut = self._writer
        if fut is not None and not fut.done():
            fut.set_result(None)

    def try_receive(self, size: int | None = None) -> bytes | None:
        """What the peer has sent, without waiting; ``None`` if nothing has
        arrived; at most *size* bytes (the wire's read size by default).
        Raises :class:`anyio.EndOfStream` at the peer's end."""
        if self._closed:
            raise anyio.ClosedResourceError
        return recv_some(self._sock, size or self._read_size)

    async def wait_readable(self) -> bool:
        """Wait until there is something to read (or the peer's end):
        ``True``; ``False`` if :meth:`interrupt` woke it first.  Always a
        yield; cancelled, nothing was read.  One task at a time may wait
        here."""
        if self._closed:
            raise anyio.ClosedResourceError
        fut: asyncio.Future[bool] = self._loop.create_future()
        self._reader = fut
        if not self._watching:
            self._loop.add_reader(self._fd, self._on_readable)
            self._watching = True
        try:
            readable = await fut
        finally:
            if self._reader is fut:  # not a waiter that came after an interrupt
                self._reader = None
        if self._closed:
            raise anyio.ClosedResourceError  # closed before this task ran
        return readable

    def _on_readable(self) -> None:
        fut = self._reader
        if fut is None or fut.cancelled():
            self._loop.remove_reader(self._fd)  # no one waits: stop watching
            self._watching = False
        elif not fut.done():
            fut.set_result(True)

    def interrupt(self) -> None:
        """Wake the task waiting in :meth:`wait_readable`, if any, at once."""
        fut = self._reader
        if fut is not None and not fut.done():
            fut.set_result(False)

    def close(self) -> None:
        """Stop watching, wake the waiters with
        :class:`anyio.ClosedResourceError` and close the duplicate."""
        if self._closed:
            return
        self._closed = True
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False
        if self._writer is not None:
            self._loop.remove_writer(self._fd)
        for fut in (self._reader, self._writer):
            if fut is not None and not fut.done():
                fut.set_exception(anyio.ClosedResourceError())
        self._sock.close()

    async def _yield(self) -> None:
        await anyio.lowlevel.checkpoint()
