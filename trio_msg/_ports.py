"""The driver's internal ports: what the API layer may ask of a connection
and a channel beyond their public methods.

The kombu API (:mod:`~trio_msg.messaging`, :mod:`~trio_msg.message`,
:mod:`~trio_msg.entity`, :mod:`~trio_msg.simple`, :mod:`~trio_msg.worker`)
is built on :class:`~trio_msg.Connection` and :class:`~trio_msg.Channel`.
Their public methods are the user's; the few things the API layer needs on
top (publish without waiting, wait for room, settle a delivery
synchronously, read the backend's checkpoints...) are named here, as
:class:`ConnectionPort` and :class:`ChannelPort`, with each operation's
contract.  Connection and Channel implement them (mypy checks it); the API
layer calls nothing else of theirs, and ``tests/unit/test_layering.py``
fails if it touches a private name of the driver.  The port methods are
kept off the API pages (``:meta private:``): they are not for users.

The replay of declarations is a registry too: :class:`DeclarationLedger`,
``Connection.declared_entities``, holds each entity :func:`maybe_declare`
declared with the step that declares it again; a reviving connection runs
those steps and knows nothing of exchanges and queues.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableSet
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._lowlevel import Checkpoints
    from ._protocol.errors import TrioMsgError
    from ._protocol.frames import BasicProperties
    from .channel import Channel, PublishResult

__all__ = ["ChannelPort", "ConnectionPort", "DeclarationLedger", "ReplayStep", "WaitSignal"]

#: A step of a reviving connection's replay: given a channel of the new
#: incarnation, declare one entity again.  Raises the broker's
#: ``ChannelClosed`` if it refuses (the entry then leaves the ledger).
ReplayStep = Callable[["Channel"], Awaitable[object]]


class WaitSignal(Protocol):
    """An event (``set``, ``is_set``, ``await wait()``) whose waiter may read
    the socket itself while it waits, so the reader task need not wake to
    hand it what it waits for.  Waiting is a yield; cancelled, it only stops
    waiting."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


class ConnectionPort(Protocol):
    """What the API layer needs of a :class:`~trio_msg.Connection` beyond
    its public methods."""

    @property
    def checkpoints(self) -> Checkpoints:
        """The running backend's checkpoints (trio's own on trio), for the
        per-message paths: ``checkpoint_if_cancelled`` before a publish or
        a receive, ``cancel_shielded_checkpoint`` after it."""
        ...

    def will_revive(self, error: BaseException | None) -> bool:
        """Whether *error* is a loss this connection is reviving (or will
        revive) from: a caller that met it should wait for
        :meth:`~trio_msg.Connection.wait_connected` and go again.  False
        once the connection closes or gives up, and for errors no revival
        cures (a refused login, a channel error)."""
        ...

    def new_signal(self) -> WaitSignal:
        """A new :class:`WaitSignal` of this connection (a consumer's
        delivery buffer wakes its receiver with one)."""
        ...

    @property
    def declared_entities(self) -> DeclarationLedger:
        """The registry of replay steps (see :class:`DeclarationLedger`)."""
        ...


class ChannelPort(Protocol):
    """What the API layer needs of a :class:`~trio_msg.Channel` beyond its
    public methods.  None of these is a checkpoint: the callers checkpoint
    once per message themselves."""

    @property
    def connection(self) -> ConnectionPort: ...

    def has_room(self) -> bool:
        """A publish would not wait now: the connection's outbound buffer
        is under its high-water mark, the broker does not block the
        connection, and has not paused the channel (``channel.flow``)."""
        ...

    async def wait_for_room(self) -> None:
        """Wait until :meth:`has_room`.  Cancellable, and nothing is queued.
        Raises the connection's error if it dies meanwhile."""
        ...

    def publish_nowait(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: BasicProperties,
        mandatory: bool,
        urgent: bool,
    ) -> PublishResult | None:
        """Queue one ``basic.publish`` whole, now, without back-pressure
        (call :meth:`wait_for_room` first, or check :meth:`has_room`).
        Returns the confirm's :class:`~trio_msg.PublishResult` in confirm
        mode, else ``None``.  Raises the channel's or the connection's
        error before queuing anything if it is closed.  The bytes are
        corked (a run of publishes goes out in few writes) unless *urgent*:
        the caller waits for the confirm next."""
        ...

    def is_unsettled(self, delivery_tag: int) -> bool:
        """Whether *delivery_tag* was delivered on this channel (as it is
        now: not an earlier one, closed) and is neither acked nor rejected
        yet: a delivery whose channel closed is dead, the broker redelivers
        it."""
        ...

    def ack_nowait(self, delivery_tag: int, multiple: bool) -> None:
        """Queue ``basic.ack`` (corked).  Raises
        :class:`~trio_msg.errors.MessageStateError` for a tag that is not
        unsettled, the channel's error if it is closed."""
        ...

    def nack_nowait(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        """Queue ``basic.nack`` (corked); raises as :meth:`ack_nowait`."""
        ...

    def reject_nowait(self, delivery_tag: int, requeue: bool) -> None:
        """Queue ``basic.reject`` (corked); raises as :meth:`ack_nowait`."""
        ...

    def give_back(self, delivery_tag: int) -> None:
        """Requeue a delivery nobody will take, if it can still be settled
        (a closed channel's deliveries go back by themselves).  Never
        raises."""
        ...

    def claim_error(self) -> TrioMsgError | None:
        """The error that closed the channel, if no caller has been told of
        it yet (no request or publish was pending on it, no consumer's
        receive raised it); it counts as told from now on.  ``None`` if the
        channel is open or its error was told already."""
        ...


class DeclarationLedger(MutableSet[object]):
    """The entities :func:`~trio_msg.maybe_declare` has declared on a
    connection, in the order it first declared them: a set that remembers
    insertion order.  Each entry may carry a :data:`ReplayStep`
    (``maybe_declare`` registers one): a reviving connection runs the steps
    in that order on each new incarnation.  An entry added without a step is
    remembered, not replayed."""

    def __init__(self, items: Iterable[object] = ()) -> None:
        self._items: dict[object, ReplayStep | None] = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[object]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: object, replay: ReplayStep | None = None) -> None:
        """Remember *value*, with the step that declares it again."""
        if replay is None and value in self._items:
            return  # keeps the step it has
        self._items[value] = replay

    def discard(self, value: object) -> None:
        self._items.pop(value, None)

    def replay_steps(self) -> list[tuple[object, ReplayStep]]:
        """The entries that have a replay step, in order, with it."""
        return [(item, step) for item, step in self._items.items() if step is not None]

    def __repr__(self) -> str:
        return f"DeclarationLedger({list(self._items)!r})"
