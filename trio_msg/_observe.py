"""Seeing what a connection does: log lines, a stream of events, statistics.

Each :class:`~trio_msg.Connection` owns one :class:`Observer`.  The
connection calls its hooks (``ready``, ``terminated``, ``attempt``, ...) at
the points where its life changes; the observer writes the log lines, feeds
the watchers and keeps the numbers behind ``conn.statistics()``.  Nothing
here is on the per-message path except :class:`Counters`: plain integers a
channel adds to as it publishes, is confirmed, delivers and settles.

Logging goes to ``logging.getLogger("trio_msg")``'s children:
``trio_msg.connection`` (INFO: opened, closed, reviving, revived; WARNING:
lost, blocked, gave up reviving; INFO: unblocked) and ``trio_msg.channel``
(WARNING: a consumer cancelled by the broker; DEBUG: channels opened,
closed, paused).  No line is written per message, and no line holds the
password: every error text goes through :func:`~trio_msg._params.redact`.

Watchers (:meth:`Connection.watch`) get :data:`ConnectionEvent` values in a
buffer of their own, bounded: a watcher that falls behind loses the oldest
events, and is told how many with a :class:`Missed` event before the rest.
The connection never waits for a watcher.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint

from ._params import ConnectionParameters, redact
from ._protocol import events as ev
from ._protocol.errors import TrioMsgError

if TYPE_CHECKING:
    from .connection import Connection

__all__ = [
    "Blocked",
    "Closed",
    "ConnectionEvent",
    "ConnectionStatistics",
    "Counters",
    "Lost",
    "Missed",
    "Observer",
    "Revived",
    "Reviving",
    "Unblocked",
    "Watcher",
]

logger = logging.getLogger("trio_msg.connection")
channel_logger = logging.getLogger("trio_msg.channel")

#: How many events a watcher holds, by default, before it loses the oldest.
WATCH_BUFFER = 64


# --- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lost:
    """The connection was lost (not closed by this program): ``error`` says
    why.  ``reviving`` is whether it will try to come back (``Reviving``
    and ``Revived`` or ``Closed`` follow); if not, ``Closed`` follows."""

    error: TrioMsgError
    reviving: bool


@dataclass(frozen=True, slots=True)
class Reviving:
    """Attempt number ``attempt`` to reconnect starts ``delay`` seconds from
    now.  ``error`` is what the last attempt failed with (for the first
    attempt, the loss)."""

    attempt: int
    delay: float
    error: TrioMsgError


@dataclass(frozen=True, slots=True)
class Revived:
    """The connection is back and its declarations are replayed: incarnation
    ``incarnation``, after ``attempts`` attempts and ``downtime`` seconds
    without a connection."""

    incarnation: int
    attempts: int
    downtime: float


@dataclass(frozen=True, slots=True)
class Blocked:
    """The broker stopped reading from the connection (``connection.blocked``:
    a resource alarm); publishes wait until :class:`Unblocked`."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unblocked:
    """The broker reads from the connection again (``connection.unblocked``)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The last event: the connection is closed for good.  ``error`` is
    ``None`` when the program closed it (``aclose()``, leaving the
    ``async with``), else what ended it (the loss of a connection that does
    not revive, or :class:`~trio_msg.errors.ConnectionFailed` when reviving
    gave up)."""

    error: TrioMsgError | None


@dataclass(frozen=True, slots=True)
class Missed:
    """The watcher fell behind: ``count`` older events were dropped to make
    room for newer ones.  It comes before the events that were kept."""

    count: int


#: What :meth:`Connection.watch` yields.
ConnectionEvent = Lost | Reviving | Revived | Blocked | Unblocked | Closed | Missed


# --- statistics --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """A snapshot of a connection, from :meth:`Connection.statistics`.

    The message counters cover the whole life of the connection, across
    revivals, and count messages (an ack with ``multiple`` counts each
    message it settles):

    - ``published``: ``basic.publish`` sent (a message republished with
      ``retry=True`` counts again);
    - ``confirmed``, ``nacked``: publishes the broker acked or nacked
      (confirm mode only); ``unknown``: publishes whose channel or
      connection went away before the broker answered;
    - ``returned``: ``mandatory`` publishes the broker returned as
      unroutable (in confirm mode these are also ``confirmed``);
    - ``delivered``: messages received, by consumers and ``basic.get``;
    - ``acked``: deliveries acknowledged; ``rejected``: deliveries rejected
      or nacked, requeued or not (including those trio_msg gave back because
      no consumer was left to take them).
    """

    #: ``"open"``, ``"reviving"`` (lost, reconnecting) or ``"closed"``.
    state: str
    #: 1 for the first connection, one more for each revival.
    incarnation: int
    #: Revivals that succeeded.
    reconnects: int
    #: Reconnection attempts made, successful or not.
    reconnect_attempts: int
    #: What ended the last incarnation or failed the last reconnection attempt.
    last_error: TrioMsgError | None
    #: Seconds the current incarnation has been open (``None`` if none is).
    connected_for: float | None
    #: Seconds connected in all, over every incarnation.
    connected_total: float
    #: Whether the broker blocks the connection now (a resource alarm).
    blocked: bool
    published: int
    confirmed: int
    nacked: int
    unknown: int
    returned: int
    delivered: int
    acked: int
    rejected: int


class Counters:
    """The message counters, added to in place by the channels (plain ints:
    no lock, nothing else on the hot path)."""

    __slots__ = (
        "acked",
        "confirmed",
        "delivered",
        "nacked",
        "published",
        "rejected",
        "returned",
        "unknown",
    )

    def __init__(self) -> None:
        self.published = 0
        self.confirmed = 0
        self.nacked = 0
        self.unknown = 0
        self.returned = 0
        self.delivered = 0
        self.acked = 0
        self.rejected = 0


# --- watchers ----------------------------------------------------------------


class Watcher:
    """The events of one connection, for one task: ``async with
    conn.watch() as events: async for event in events: ...``.

    Events that happen while the ``async with`` is open are buffered, up to
    ``buffer_size`` of them; past that the oldest are dropped and the next
    event read is a :class:`Missed` saying how many.  Iteration ends after
    :class:`Closed`.  A watcher opened on a closed connection yields its
    ``Closed`` event and ends.
    """

    def __init__(self, observer: Observer, buffer_size: int) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be an int >= 1, not {buffer_size!r}")
        self._observer = observer
        self._size = buffer_size
        self._events: deque[ConnectionEvent] = deque()
        self._missed = 0
        self._done = False
        self._active = False
        self._wake: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<trio_msg.Watcher {len(self._events)} buffered, {self._missed} missed>"

    def _push(self, event: ConnectionEvent) -> None:
        events = self._events
        if len(events) >= self._size:
            events.popleft()
            self._missed += 1
        events.append(event)
        if self._wake is not None:
            self._wake.set()

    async def __aenter__(self) -> Watcher:
        if self._active:
            raise RuntimeError("this watcher is already in use: call conn.watch() again")
        self._active = True
        self._observer._subscribe(self)
        try:
            await checkpoint()
        except BaseException:
            self._observer._unsubscribe(self)
            self._active = False
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._observer._unsubscribe(self)
        self._active = False
        await cancel_shielded_checkpoint()

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> ConnectionEvent:
        """The next event; waits for one.  Cancellation: stops waiting; no
        event is lost."""
        await checkpoint()
        if not self._active:
            raise RuntimeError("iterate a watcher inside 'async with conn.watch() as events'")
        while True:
            if self._missed:
                count, self._missed = self._missed, 0
                return Missed(count)
            if self._events:
                event = self._events.popleft()
                if type(event) is Closed:
                    self._done = True
                return event
            if self._done:
                raise StopAsyncIteration
            wake = self._wake = anyio.Event()
            try:
                await wake.wait()
            finally:
                self._wake = None


# --- the observer ------------------------------------------------------------


class Observer:
    """One connection's log lines, watchers and statistics (see the module's
    docstring).  The connection calls the hooks; users see
    ``conn.watch()`` and ``conn.statistics()``."""

    def __init__(self, params: ConnectionParameters) -> None:
        self._params = params
        self.counts = Counters()
        self._watchers: set[Watcher] = set()
        self.state = "connecting"
        self._closed: Closed | None = None
        self.last_error: TrioMsgError | None = None
        self.reconnects = 0
        self.attempts = 0
        #: Attempts of the revival under way.
        self._attempt = 0
        self._connected_at: float | None = None
        self._connected_total = 0.0
        self._lost_at: float | None = None
        #: Where the connection was last open (for the lines of a revival).
        self._last_where = params.host

    # --- for users -----------------------------------------------------------

    def watch(self, buffer_size: int = WATCH_BUFFER) -> Watcher:
        return Watcher(self, buffer_size)

    def statistics(self, conn: Connection) -> ConnectionStatistics:
        counts = self.counts
        now = time.monotonic()
        connected_for = None if self._connected_at is None else now - self._connected_at
        return ConnectionStatistics(
            state=self.state,
            incarnation=conn.incarnation,
            reconnects=self.reconnects,
            reconnect_attempts=self.attempts,
            last_error=self.last_error,
            connected_for=connected_for,
            connected_total=self._connected_total + (connected_for or 0.0),
            blocked=self.state == "open" and conn.blocked,
            published=counts.published,
            confirmed=counts.confirmed,
            nacked=counts.nacked,
            unknown=counts.unknown,
            returned=counts.returned,
            delivered=counts.delivered,
            acked=counts.acked,
            rejected=counts.rejected,
        )

    def _subscribe(self, watcher: Watcher) -> None:
        if self._closed is not None:
            watcher._push(self._closed)
        else:
            self._watchers.add(watcher)

    def _unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def _emit(self, event: ConnectionEvent) -> None:
        for watcher in self._watchers:
            watcher._push(event)

    # --- hooks, called by the connection -------------------------------------

    def _where(self, conn: Connection) -> str:
        address = conn.address
        host = f"{address[0]}:{address[1]}" if address else self._params.host
        name = self._params.connection_name
        return f"{host} vhost {self._params.vhost!r}" + (f" ({name!r})" if name else "")

    def _text(self, error: BaseException) -> str:
        return redact(f"{type(error).__name__}: {error}", self._params)

    def ready(self, conn: Connection) -> None:
        """An incarnation is open (and, after a loss, replayed)."""
        now = time.monotonic()
        self._connected_at = now
        self.state = "open"
        where = self._last_where = self._where(conn)
        logger.info(
            "connected to %s (incarnation %d): heartbeat %d s, frame_max %d, channel_max %d",
            where,
            conn.incarnation,
            conn.heartbeat,
            conn.frame_max,
            conn.channel_max,
        )
        if self._lost_at is None:
            return
        downtime = now - self._lost_at
        attempts = self._attempt
        self._lost_at = None
        self._attempt = 0
        self.reconnects += 1
        logger.info(
            "connection to %s revived after %d attempt%s in %.3f s",
            where,
            attempts,
            "s" * (attempts != 1),
            downtime,
        )
        self._emit(Revived(conn.incarnation, attempts, downtime))

    def terminated(self, conn: Connection, error: TrioMsgError, *, closing: bool) -> None:
        """An incarnation ended.  Only the end of one that was open counts:
        the incarnations of failed reconnection attempts are reported by
        :meth:`attempt_failed`."""
        if self._connected_at is None:
            return
        now = time.monotonic()
        self._connected_total += now - self._connected_at
        self._connected_at = None
        if closing:
            return  # aclose(): closed() says so
        self.last_error = error
        reviving = conn.will_revive(error)
        if reviving:
            self.state = "reviving"
            self._lost_at = now
        else:
            self.state = "closed"  # (Closed follows, now or from the supervisor)
        logger.warning(
            "connection to %s lost (%s): %s",
            self._where(conn),
            "reviving" if reviving else "not reviving",
            self._text(error),
        )
        self._emit(Lost(error, reviving))
        if conn.retry_policy is None:
            self._close(error)

    def attempt(self, attempt: int, delay: float, last: TrioMsgError) -> None:
        """Reconnection attempt *attempt* starts after *delay* seconds."""
        self._attempt = attempt
        self.attempts += 1
        if attempt == 1:
            logger.info(
                "reviving the connection to %s (first attempt in %.3g s)", self._last_where, delay
            )
        else:
            logger.debug("revive attempt %d in %.3g s", attempt, delay)
        self._emit(Reviving(attempt, delay, last))

    def attempt_failed(self, attempt: int, error: TrioMsgError) -> None:
        self.last_error = error
        logger.info("revive attempt %d failed: %s", attempt, self._text(error))

    def gave_up(self, error: TrioMsgError) -> None:
        """A reviving connection ends for good with *error*."""
        self.last_error = error
        if self._lost_at is not None:
            logger.warning(
                "gave up reviving the connection to %s: %s", self._last_where, self._text(error)
            )
        self._close(error)

    def blocking(self, event: ev.ConnectionBlocked | ev.ConnectionUnblocked) -> None:
        if isinstance(event, ev.ConnectionBlocked):
            logger.warning("the broker blocked the connection: %s", event.reason)
            self._emit(Blocked(event.reason))
        else:
            logger.info("the broker unblocked the connection")
            self._emit(Unblocked())

    def closed(self, conn: Connection) -> None:
        """``aclose()`` finished (a no-op if the connection ended before)."""
        if self._closed is not None:
            return
        if self._connected_at is not None:
            self._connected_total += time.monotonic() - self._connected_at
            self._connected_at = None
        logger.info("connection to %s closed", self._where(conn))
        self._close(None)

    def _close(self, error: TrioMsgError | None) -> None:
        if self._closed is not None:
            return
        self.state = "closed"
        self._lost_at = None
        closed = self._closed = Closed(error)
        self._emit(closed)
        self._watchers.clear()

    # --- channel-level ---------------------------------------------------------

    def channel_opened(self, channel_id: int) -> None:
        channel_logger.debug("channel %d opened", channel_id)

    def channel_closed(self, channel_id: int, error: TrioMsgError) -> None:
        if channel_logger.isEnabledFor(logging.DEBUG):
            channel_logger.debug("channel %d closed: %s", channel_id, self._text(error))

    def channel_flow(self, channel_id: int, active: bool) -> None:
        channel_logger.debug(
            "the broker %s publishing on channel %d", "resumed" if active else "paused", channel_id
        )

    def consumer_cancelled(self, channel_id: int, consumer_tag: str, queue: str | None) -> None:
        channel_logger.warning(
            "the broker cancelled consumer %r of queue %s on channel %d (queue deleted?)",
            consumer_tag,
            repr(queue) if queue is not None else "(unknown)",
            channel_id,
        )
