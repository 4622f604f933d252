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
from collections.abc import Sequence

import anyio
import trio

from ._protocol.frames import Buffer
from ._wire import IOV_MAX, READ_SIZE, DirectSocket, is_tcp, recv_some, send_some

__all__ = ["IOV_MAX", "SocketWire", "is_tcp"]


class SocketWire(DirectSocket):
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
        #: Tasks in :meth:`wait_readable` (one, or an interrupted one that
        #: has not run yet and the next).
        self._reading = 0
        #: How many times :meth:`interrupt` woke the socket's waiters.
        self._interrupts = 0

    def try_send(self, buffers: Sequence[Buffer]) -> int:
        """Write what the kernel takes now of *buffers*, in order, without
        waiting; how many bytes.  Several buffers go in one ``sendmsg``
        (at most ``IOV_MAX`` of them), so a large body is not copied into
        one string first.  Raises :class:`OSError` when the socket is
        broken."""
        return send_some(self._sock, buffers)

    async def _wait_writable(self) -> None:
        interrupts = self._interrupts
        try:
            await trio.lowlevel.wait_writable(self._sock)
        except trio.ClosedResourceError:
            if not self._interrupted_since(interrupts):
                raise anyio.ClosedResourceError from None

    def try_receive(self, size: int | None = None) -> bytes | None:
        """What the peer has sent, without waiting; ``None`` if nothing has
        arrived; at most *size* bytes (the wire's read size by default).
        Raises :class:`anyio.EndOfStream` at the peer's end."""
        return recv_some(self._sock, size or self._read_size)

    async def wait_readable(self) -> bool:
        """Wait until there is something to read (or the peer's end):
        ``True``; ``False`` if :meth:`interrupt` woke it first.  Always a
        yield (trio waits for the next pass of its IO manager); cancelled,
        nothing was read.  One task at a time may wait here."""
        interrupts = self._interrupts
        self._reading += 1
        try:
            await trio.lowlevel.wait_readable(self._sock)
        except trio.ClosedResourceError:
            if self._interrupted_since(interrupts):
                return False
            raise anyio.ClosedResourceError from None
        finally:
            self._reading -= 1
        return True

    def interrupt(self) -> None:
        """Wake the task waiting in :meth:`wait_readable`, if any, at once.

        Why not a cancel scope around each wait, the usual way: entering
        and leaving one costs about 50,000 instructions (callgrind), a
        fifth of a whole confirmed publish, on every wait, for a wake-up
        that is rare (the heartbeat task finding the broker dead, a close
        that timed out).  ``trio.lowlevel.notify_closing`` wakes the
        socket's waiters with ``ClosedResourceError`` and drops its
        registration; the socket stays open, the next wait registers it
        again, and a waiter that sees the error after an interrupt and
        finds the socket still open takes it as that (see
        :meth:`_interrupted_since`).  The writer, if it waits for room
        then, is woken too, and simply waits again."""
        if self._reading:
            self._interrupts += 1
            trio.lowlevel.notify_closing(self._sock)

    def close(self) -> None:
        pass  # the stream closes the socket, which wakes the waiters

    def _interrupted_since(self, interrupts: int) -> bool:
        """An interrupt came since *interrupts*, and the socket is open: a
        ``ClosedResourceError`` was that interrupt, not a close."""
        return self._interrupts != interrupts and self._sock.fileno() != -1

    async def _yield(self) -> None:
        await trio.lowlevel.checkpoint()
