"""A Consumer's delivery buffer: a bounded queue between the connection's
reader and the consumer.

Why not anyio's memory object stream, which it replaced: every delivery
went through it, and its ``receive()`` checkpoints before it looks, then
parks the receiver with an Event, a receiver record, an ordered dict and a
set; for a consumer that waits for each message (RPC, a slow producer)
that was a pass of the scheduler and a dozen allocations per message.
Here the consumer checks for cancellation itself, takes a buffered message
with a ``popleft``, and waits on one Event shared by whoever waits.

The two ends keep the names and errors of anyio's memory object streams,
which :meth:`trio_msg.Channel.basic_consume` accepts as its sink:

* :class:`BufferSender` (the reader's end): ``send_nowait`` (``WouldBlock``
  when full, ``BrokenResourceError`` once the receiver closed),
  ``send`` (waits for room) and ``close`` (no more deliveries: the receiver
  gets ``EndOfStream`` once the buffer is empty);
* :class:`BufferReceiver` (the consumer's end): ``receive_nowait``,
  ``receive``, :meth:`~BufferReceiver.wait_receive` (no checkpoint before
  waiting: the caller has checked for cancellation) and ``close``.

One buffer has one sender; any number of tasks may receive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import anyio
from anyio.lowlevel import checkpoint

T = TypeVar("T")


class _Event(Protocol):
    def set(self) -> None: ...

    async def wait(self) -> None: ...


class _State(Generic[T]):
    __slots__ = ("items", "max_size", "new_event", "readable", "receiver_closed",
                 "sender_closed", "writable")  # fmt: skip

    def __init__(self, max_size: int, new_event: Callable[[], _Event]) -> None:
        self.items: deque[T] = deque()
        self.max_size = max(1, max_size)
        self.new_event = new_event
        self.sender_closed = False
        self.receiver_closed = False
        #: Set when an item arrives or the sender closes (receivers wait on it).
        self.readable: _Event | None = None
        #: Set when room is made or the receiver closes (the sender waits on it).
        self.writable: _Event | None = None

    def wake_readers(self) -> None:
        event = self.readable
        if event is not None:
            self.readable = None
            event.set()

    def wake_writer(self) -> None:
        event = self.writable
        if event is not None:
            self.writable = None
            event.set()


class BufferSender(Generic[T]):
    __slots__ = ("_state",)

    def __init__(self, state: _State[T]) -> None:
        self._state = state

    def send_nowait(self, item: T) -> None:
        state = self._state
        if state.sender_closed:
            raise anyio.ClosedResourceError
        if state.receiver_closed:
            raise anyio.BrokenResourceError
        if len(state.items) >= state.max_size:
            raise anyio.WouldBlock
        state.items.append(item)
        if state.readable is not None:
            state.wake_readers()

    async def send(self, item: T) -> None:
        """Queue *item*, waiting (cancellably) while the buffer is full.
        Cancelled, the item was not queued."""
        await checkpoint()
        state = self._state
        while True:
            try:
                self.send_nowait(item)
                return
            except anyio.WouldBlock:
                pass
            event = state.writable
            if event is None:
                event = state.writable = state.new_event()
            await event.wait()

    def close(self) -> None:
        state = self._state
        if not state.sender_closed:
            state.sender_closed = True
            state.wake_readers()


class BufferReceiver(Generic[T]):
    __slots__ = ("_state",)

    def __init__(self, state: _State[T]) -> None:
        self._state = state

    def __len__(self) -> int:
        """Items buffered now."""
        return len(self._state.items)

    @property
    def sender_closed(self) -> bool:
        return self._state.sender_closed

    def receive_nowait(self) -> T:
        state = self._state
        if state.receiver_closed:
            raise anyio.ClosedResourceError
        items = state.items
        if items:
            item = items.popleft()
            if state.writable is not None:
                state.wake_writer()
            return item
        if state.sender_closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def wait_receive(self) -> T:
        """The next item, waiting for it if there is none.  No checkpoint
        comes first: when an item is there it is returned at once.
        Cancelled while waiting, nothing was taken."""
        state = self._state
        while True:
            if state.items or state.sender_closed or state.receiver_closed:
                return self.receive_nowait()  # (without raising WouldBlock first)
            event = state.readable
            if event is None:
                event = state.readable = state.new_event()
            await event.wait()

    async def receive(self) -> T:
        """A checkpoint, then :meth:`wait_receive`."""
        await checkpoint()
        return await self.wait_receive()

    def close(self) -> None:
        state = self._state
        if not state.receiver_closed:
            state.receiver_closed = True
            state.wake_writer()
            state.wake_readers()


def delivery_buffer(
    max_size: int, new_event: Callable[[], _Event] = anyio.Event
) -> tuple[BufferSender[T], BufferReceiver[T]]:
    """A buffer of at most *max_size* items (at least 1); *new_event* makes
    the events waiters wait on (the running backend's, for speed)."""
    state: _State[T] = _State(max_size, new_event)
    return BufferSender(state), BufferReceiver(state)
