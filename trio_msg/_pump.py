"""The pump: when bytes are written, and which task reads the socket.

One :class:`Pump` per incarnation of a connection (a revival makes a new
one) owns everything between the sans-IO core and the wire: the bytes the
core has queued and the wire has not taken, corking, the writer and reader
tasks, leading (a waiting task reads the socket itself), the hand-back of
the reading to the reader task, and busy polling.  The connection keeps the
lifecycle, the channels, the routing of events and revival; it talks to the
pump through a few calls that cannot be misused:

- :meth:`Pump.send` after queuing bytes in the core: ``urgent`` when a task
  will wait for the answer at once (a request, a confirmed publish), else
  the bytes may cork.  Either way they go out before any task waits.
  :meth:`Pump.settle` after queuing acks (or nacks, rejects): corked too,
  but kept corked through a run of deliveries (see its rule).
- :meth:`Pump.signal` makes a :class:`Signal`, the event a task waits on
  for what the broker will send (a reply, a confirm, a delivery);
  ``await signal.wait()`` writes what is corked, then reads the socket
  itself while nobody else does, or waits for the task that does.
- :meth:`Pump.wait` is the same for any other event: it writes what is
  corked and hands the reading back to the reader task, which reads what
  ends the wait.
- :meth:`Pump.room` / :meth:`Pump.wait_room`: back-pressure.
- :meth:`Pump.reader`, :meth:`Pump.writer` (the tasks the connection
  starts), :meth:`Pump.stop` (the incarnation ended: wake every waiter),
  :meth:`Pump.drain` (let the writer finish before the socket closes).

The rules, and why (docs/architecture.rst tells the same at length):

1. Bytes leave in the order the core queued them; bytes taken from the core
   and not yet written (``_unsent``) go before anything else.  Only one task
   writes at a time (``_sending``): the writer, or a task whose bytes the
   kernel takes whole without waiting (a direct wire's ``try_send``).
2. Nothing a task waits for stays corked: every wait writes what is queued
   first.  A cork waits ``LINGER`` at most, and not at all past
   ``FLUSH_BYTES``, after ``QUIET``, or right after the broker sent
   something (an answer in a conversation).  Acks are no such answer:
   nobody waits on them but the broker's prefetch window, so they stay
   corked until a quarter of the window waits in the cork.
3. One task reads at a time: the reader task, or one leader.  A leader
   reads only while the reader holds nothing undispatched, and gives what
   it cannot dispatch without waiting back to the reader (``_backlog``), so
   events keep their order.
4. A frame nobody waits for is read within ``HANDBACK`` of the last lead.
5. A task that polls spins at most ``busy_poll`` per wait, only when busy
   polling is on, and only while answers come within ``POLL_AGAIN`` times
   that; a wait that ends without its answer (a timeout, a cancellation)
   stops the polling until an answer comes quickly again.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import anyio

from ._lowlevel import Checkpoints
from ._protocol import events as ev
from ._protocol.connection import AMQPConnection
from ._protocol.errors import RemoteProtocolError
from ._protocol.frames import Buffer
from ._protocol.state import ConnectionState
from ._wire import SHORT_READ, DirectWire, Wire, read_size, skip

__all__ = ["Pump", "Signal"]

#: Publishers wait while more than this many bytes are queued for the socket.
HIGH_WATER = 1024 * 1024
#: A corked publish or ack waits up to LINGER seconds for company in the
#: core's outbound buffer, unless FLUSH_BYTES are waiting or a task needs
#: them out (see :meth:`Pump.writer`).
LINGER = 0.001
FLUSH_BYTES = 64 * 1024
#: A corked send that finds the oldest corked message this old writes the
#: cork itself, so that in a steady stream the writer's LINGER timer never
#: fires (a timeout costs a cancellation, several times a publish).
CORK_AGE = LINGER / 2
#: A send this long after the last one goes out at once (as Nagle's
#: algorithm sends when nothing is in flight): corking pays only when more
#: messages follow close behind.
QUIET = 0.0005
#: How long the parked reader sleeps, at most, after a lead begins (see
#: :meth:`Pump._lead`): a task in a conversation -- an RPC client's next
#: call, a server's next request, the next confirmed publish -- leads again
#: well within it, and the reader sleeps through the whole conversation.
#: It bounds how late a frame nobody waits for is read, and a cork started
#: meanwhile waits up to it instead of LINGER.
HANDBACK = 0.002
#: A lead's start leaves the parked reader's deadline where it is while it
#: is still at least this far ahead (see :meth:`Pump._arm_patience`), so a
#: lead is sure of HANDBACK_KEEP before the reader wakes.
HANDBACK_KEEP = 0.0015
#: A lead polls (``busy_poll``) only while the last wait of a leader ended
#: with its answer within this many times ``busy_poll``: a consumer waiting
#: for messages that come seldom, an answer that takes long, or a wait that
#: times out stops the polling after one wasted poll, and one quick answer
#: starts it again.
POLL_AGAIN = 2

#: The clock of corking (``QUIET``, ``CORK_AGE``): the real one, the
#: cheapest to read per message.  (The driver tests put the event loop's
#: virtual clock here, so that time stands still while a test publishes.)
_now = time.perf_counter

STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)


class _Event(Protocol):
    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


class Pump:
    """The writing and reading machinery of one incarnation (see the module).

    *route* dispatches the events the core produced without waiting and
    returns the rest, from the first delivery whose consumer's buffer is
    full; *dispatch* awaits room for such events; *lost* is told of a
    socket error.  *terminated* is set by the connection when the
    incarnation ends (then it calls :meth:`stop`).
    """

    def __init__(
        self,
        core: AMQPConnection,
        ck: Checkpoints,
        terminated: Any,
        *,
        busy_poll: float,
        route: Callable[[list[ev.Event]], list[ev.Event] | None],
        dispatch: Callable[[list[ev.Event]], Awaitable[None]],
        lost: Callable[[BaseException], None],
    ) -> None:
        self._core = core
        self._ck = ck
        #: The backend's own event (trio's, not anyio's wrapper of it): the
        #: hot paths ask ``is_set()`` on every write and every lead.
        self._terminated = terminated
        self._route = route
        self._dispatch = dispatch
        self._lost = lost
        self._wire: Wire | None = None
        #: A later incarnation has begun: bytes this one reads are dropped.
        self._retired = False
        self._stopped = False
        # -- writing
        #: Bytes taken from the core and not yet written (buffers, and how
        #: many bytes in all): the writer sends them before anything else.
        self._unsent: list[Buffer] | None = None
        self._unsent_size = 0
        self._wake = anyio.Event()
        self._flush = anyio.Event()
        self._urgent = False
        #: The writer is in the middle of a send; ``_sent`` is set after each.
        self._sending = False
        self._sent = anyio.Event()
        self._writer_running = False
        #: When the last corked send came (``_now``).
        self._last_lazy = 0.0
        #: When the oldest message now corked was queued, if one is.
        self._corked_at: float | None = None
        #: The cork counts on the parked reader's deadline (``HANDBACK``,
        #: set by the last lead), not on a deadline of the writer's own.
        self._cork_by_reader = False
        #: The writer's linger (its deadline moves when a new cork starts).
        self._linger: anyio.CancelScope | None = None
        #: The writer's idle wait; a new cork gives it a deadline instead of
        #: waking it, and a task that writes the cork itself takes it away.
        self._idle: anyio.CancelScope | None = None
        #: Bytes came in since the last write: the broker is waiting on us.
        self._heard = False
        #: Settlements (acks, nacks, rejects) in the cork now.
        self._settles = 0
        #: Back-pressure: tasks waiting for room, and what wakes them.
        self._room_waiters = 0
        self._room = anyio.Event()
        # -- reading
        #: The Signal of the task reading instead of the reader task.
        self._lead_by: Signal | None = None
        #: The reader task is parked, not waiting on the socket, and holds
        #: nothing it has not dispatched: another task may take over.
        self._reader_parked = False
        #: The reader task waits on the socket, holding nothing undispatched.
        self._reader_waiting = False
        #: A Signal was set (a waiter woken) since the reader last looked.
        self._woke = False
        self._role_back: Any = None
        #: The parked reader's wait: it has a deadline (``HANDBACK``) instead
        #: of being woken when a lead ends with its reply.
        self._patience: anyio.CancelScope | None = None
        #: That deadline, as last set (infinite: none yet on this park).
        self._patience_until = math.inf
        #: Tasks waiting on a Signal without leading (another task leads).
        self._followers = 0
        #: Events a leader could not dispatch without waiting (a full
        #: consumer buffer): the reader dispatches them first.
        self._backlog: list[ev.Event] | None = None
        # -- busy polling: how long, and whether the last lead's answer came
        # soon enough to poll for the next one.
        self._busy_poll = busy_poll
        self._polling = busy_poll > 0

    # --- the interface ---------------------------------------------------------

    def start(self, wire: Wire) -> None:
        """The incarnation's socket is connected: the pump writes and reads *wire*."""
        self._wire = wire

    def retire(self) -> None:
        """A new incarnation replaces this one: what its tasks still read is dropped."""
        self._retired = True

    def send(self, urgent: bool) -> None:
        """The core has queued bytes: write them now if *urgent* (someone
        waits for the answer, or they are the core's own), else soon --
        corked with what follows, and written at the latest when a task
        waits (:meth:`wait`, :meth:`Signal.wait`)."""
        if urgent:
            self._kick()
        else:
            self._kick_lazy(self._heard)

    def settle(self, window: int, released: int = 1) -> None:
        """The core has queued a settlement (an ack, a nack, a reject):
        corked as :meth:`send` corks, save that a delivery just read does
        not write it at once.  An ack answers no question anybody waits on
        (a task waiting for its next delivery writes the cork first); it
        reopens the broker's prefetch window, of *window* deliveries (0:
        none), which only needs it before the window runs dry: the cork is
        written once it holds a quarter of the window.  In a run of
        deliveries acks then go out a cork at a time, not one write per
        socket read.  *released*: how many deliveries the settlement
        released (``multiple`` releases many).  The count is of every
        channel's settlements in the cork, which can only write it sooner."""
        self._settles = settles = self._settles + released
        if window and settles * 4 >= window:
            self._kick()
        else:
            self._kick_lazy(False)

    def signal(self) -> Signal:
        """An event whose waiter may read the socket while it waits."""
        return Signal(self)

    async def wait(self, event: Signal | _Event) -> None:
        """Wait until *event* is set: for something the broker sends.  What
        is corked is written first.  On a :class:`Signal` the task reads
        the socket itself if nobody else does (:meth:`_lead`); on any other
        event the reading is handed back to the reader task, which reads
        what sets it.  A yield; cancelled, it only stops waiting."""
        if self._core.outbound_size:
            self._kick()
        if type(event) is not Signal:
            self._hand_back(False)
            await event.wait()
            return
        signal = event
        wire = self._wire
        if (
            wire is not None
            and wire.direct
            and (self._reader_parked or self._reader_waiting)
            and self._lead_by is None
            and not self._terminated.is_set()
        ):
            await self._lead(cast(DirectWire, wire), signal)
            if signal._event.is_set():
                return
        self._followers += 1
        try:
            await signal._event.wait()
        finally:
            self._followers -= 1

    def outbound(self) -> int:
        """Bytes queued for the socket: in the core, and taken but unsent."""
        return self._core.outbound_size + self._unsent_size

    def room(self) -> bool:
        """A publish would not wait for back-pressure: at most ``HIGH_WATER``
        bytes queued, and the broker does not block the connection."""
        return self._core.outbound_size + self._unsent_size <= HIGH_WATER and not self._core.blocked

    async def wait_room(self) -> None:
        """Wait once for a change of :meth:`room` (or the incarnation's
        end); the caller checks again.  Cancelled, it only stops waiting."""
        self._room_waiters += 1
        try:
            await self.wait(self._room)
        finally:
            self._room_waiters -= 1

    def room_changed(self) -> None:
        """The broker blocked or unblocked the connection: waiters look again."""
        if self._room_waiters:
            self._room.set()
            self._room = anyio.Event()

    def stop(self) -> None:
        """The incarnation ended: wake every task waiting on the pump (the
        writer sees the end and returns; the reader's wait is interrupted).
        Once: the wire may be closed by a later call."""
        if self._stopped:
            return
        self._stopped = True
        self._hand_back(False)
        if self._wire is not None and self._wire.direct:
            cast(DirectWire, self._wire).interrupt()  # a leader, or the reader
        self._kick()
        self.room_changed()
        self._room.set()

    async def drain(self, bound: float) -> None:
        """Give the writer up to *bound* seconds to send what is queued (a
        close-ok owed to a broker whose close crossed ours) before the
        socket goes."""
        with anyio.move_on_after(bound):
            while (self.outbound() or self._sending) and self._writer_running:
                sent = self._sent = anyio.Event()
                self._kick()  # on a direct wire this may write it all at once
                if self.outbound() or self._sending:
                    await sent.wait()

    # --- writing ---------------------------------------------------------------

    def _kick(self) -> None:
        """Write what is queued now.

        On a direct wire with the writer idle, this task writes it itself,
        without waiting; what the kernel does not take now (or a socket
        error, which the writer meets again and reports) is left to the
        writer, which is woken for it.
        """
        wire = self._wire
        if (
            wire is not None
            and wire.direct
            and not self._sending
            and self._unsent is None
            and not self._terminated.is_set()
        ):
            core = self._core
            size = core.outbound_size
            if not size:
                return
            buffers = core.buffers_to_send()
            self._cork_taken()
            try:
                sent = wire.try_send(buffers)
            except OSError:
                sent = 0
            if sent == size:
                idle = self._idle
                if idle is not None and idle.deadline != math.inf:
                    idle.deadline = math.inf  # nothing left for the writer to time
                if self._room_waiters:
                    self.room_changed()
                return
            self._unsent = skip(buffers, sent)
            self._unsent_size = size - sent
        self._urgent = True
        self._wake.set()
        self._flush.set()

    def _cork_taken(self) -> None:
        """The core's bytes were taken for writing: no cork is left."""
        self._corked_at = None
        self._cork_by_reader = False
        self._heard = False
        self._settles = 0

    def _kick_lazy(self, heard: bool) -> None:
        """Write what is queued soon: within ``LINGER``; at once past
        ``FLUSH_BYTES``, after ``QUIET``, or when *heard* (the broker has
        sent something since the last write, and the bytes answer it).

        The last is for conversations: an RPC server's reply follows the
        request it answers, a client's next request follows the last reply.
        A run of publishes with nothing coming back is still corked (acks:
        see :meth:`settle`).

        In a steady run the sending task writes the cork itself once it is
        ``CORK_AGE`` old, and the first message of the next cork moves the
        writer's deadline on: the writer's timer fires only at the end of a
        run, for the last cork nobody else writes."""
        now = _now()
        last = self._last_lazy
        self._last_lazy = now
        if heard or now - last > QUIET or self._core.outbound_size >= FLUSH_BYTES:
            self._kick()
            return
        corked = self._corked_at
        if corked is None:
            self._corked_at = now
            scope = self._linger if self._linger is not None else self._idle
            if scope is None:
                self._wake.set()
                return
            if scope is self._idle and self._patience_until != math.inf:
                # The parked reader wakes within HANDBACK (a lead gave it a
                # deadline): it writes the cork unless a task does first,
                # and the writer's deadline is neither set nor, when that
                # task writes it, taken away (two trio deadline moves).
                self._cork_by_reader = True
            else:
                scope.deadline = self._ck.current_time() + LINGER
        elif now - corked >= CORK_AGE:
            self._kick()

    async def writer(self) -> None:
        """The task that writes whatever no other task writes at once.

        Corked bytes (:meth:`send` not urgent) are written by it ``LINGER``
        after the first of them, so a run of messages goes out in a few
        large writes instead of a system call each.  (The first of a cork
        moves the deadline of its linger, or of its idle wait, instead of
        waking it: most corks are written by a task about to wait before
        then, and the writer sleeps through them.)  Urgent bytes are
        written at once: on a direct wire, by the sending task itself
        while this one is idle."""
        core = self._core
        wire = self._wire
        assert wire is not None
        self._writer_running = True
        try:
            while True:
                if self._unsent is None and not core.outbound_size:
                    if core.state in (ConnectionState.CLOSED, ConnectionState.ERROR):
                        return
                    self._wake = anyio.Event()
                    self.room_changed()
                    with anyio.CancelScope() as idle:
                        self._idle = idle
                        try:
                            await self._wake.wait()
                        finally:
                            self._idle = None
                    # Past its deadline, a cork has lingered its LINGER:
                    # written now.  (A task about to wait usually writes it
                    # first and takes the deadline away: the writer then
                    # sleeps through a whole conversation.)
                    self._urgent = self._urgent or idle.cancelled_caught
                    continue
                if not self._urgent and core.state is ConnectionState.OPEN:
                    try:
                        with anyio.move_on_after(LINGER) as self._linger:
                            await self._flush.wait()
                    finally:
                        self._linger = None
                self._urgent = False
                if self._flush.is_set():
                    self._flush = anyio.Event()
                data = self._unsent
                if data is not None:
                    self._unsent = None
                    self._unsent_size = 0
                else:
                    data = core.buffers_to_send()
                    if not data:
                        continue  # a task about to wait wrote it while we lingered
                self._sending = True
                self._cork_taken()
                try:
                    await wire.send(data)
                finally:
                    self._sending = False
                    self._sent.set()
                if self.outbound() <= HIGH_WATER:
                    self.room_changed()
        except STREAM_ERRORS as exc:
            self._lost(exc)
        finally:
            self._writer_running = False
            self._sent.set()
            self.room_changed()

    # --- reading ---------------------------------------------------------------

    def _take(self, data: bytes) -> list[ev.Event] | None:
        """Feed *data* to the core, send its own answers, and route the
        events that can be without waiting; the rest is returned.  Bytes
        read after a later incarnation began are dropped."""
        if self._retired:
            return None
        core = self._core
        before = core.outbound_size
        self._heard = True
        try:
            core.receive_data(data)
        except RemoteProtocolError:
            pass  # the core closed itself; its events say why
        if core.outbound_size > before:
            self._kick()  # the core's own answers: close-ok, flow-ok, ...
        return self._route(core.next_events())

    async def reader(self) -> None:
        """The task that reads whatever no waiting task reads itself."""
        core = self._core
        wire = self._wire
        assert wire is not None
        try:
            if wire.direct:
                await self._read_direct(cast(DirectWire, wire))
                return
            while core.state not in (ConnectionState.CLOSED, ConnectionState.ERROR):
                rest = self._take(await wire.receive(read_size(core.frame_in_progress)))
                if rest:
                    await self._dispatch(rest)
        except STREAM_ERRORS as exc:
            self._lost(exc)
        finally:
            self._reader_parked = self._reader_waiting = False

    async def _read_direct(self, wire: DirectWire) -> None:
        """The reader on a direct wire, where a task waiting for a reply may
        take the reading over (:meth:`_lead`) while this task holds nothing
        undispatched: for free while it is parked (stepped aside for an
        earlier leader, or yielding after it woke a waiter), by interrupting
        it while it waits on the socket (dearer).  Once a task leads, the
        reader parks, and a waiter that waits again soon after (the next
        confirm, the next reply) takes over for free.  A lead that ends
        with its reply does not wake the reader: the lead's start gave the
        reader's park a deadline ``HANDBACK`` away, which the next leads
        move on, so that through a conversation the reader does not run at
        all.  Woken (a lead ended otherwise, nobody led again in time, or a
        lead outlasted the deadline), the reader parks again at once,
        without a deadline, if a task leads already."""
        core = self._core
        checkpoint = self._ck.checkpoint
        drained = False
        while core.state not in (ConnectionState.CLOSED, ConnectionState.ERROR):
            if self._lead_by is not None:
                self._reader_parked = True
                back = self._role_back = self._ck.new_event()
                with anyio.CancelScope() as patience:
                    self._patience = patience
                    self._patience_until = math.inf
                    try:
                        await back.wait()
                    finally:
                        # (woken by its deadline, nobody cleared its event)
                        self._patience = self._role_back = None
                        self._patience_until = math.inf
                if self._cork_by_reader:
                    self._kick()  # the cork counted on this park's deadline
                if self._someone_leads():
                    continue  # it led again before we ran: park at once
                drained = True  # the leader read last; wait for more
                if not patience.cancelled_caught:
                    # Woken at once (a backlog, a cancelled leader): let
                    # the tasks that run beside us go first, the one that
                    # stopped leading may wait again at once.
                    await checkpoint()
                continue
            backlog = self._backlog
            if backlog is not None:
                self._backlog = None
                await self._dispatch(backlog)
                continue
            self._reader_parked = False
            if drained:
                self._reader_waiting = True
                try:
                    readable = await wire.wait_readable()
                finally:
                    self._reader_waiting = False
                if not readable or self._lead_by is not None:
                    continue  # interrupted: a task leads now, or the connection ends
            data = wire.try_receive(read_size(core.frame_in_progress))
            if data is None:
                drained = True
                continue
            self._woke = False
            rest = self._take(data)
            if rest:
                await self._dispatch(rest)
            if self._woke or not drained:
                # It woke a waiter, or read without waiting (let others run).
                self._reader_parked = True
                await checkpoint()
            drained = len(data) < SHORT_READ

    def _someone_leads(self) -> bool:
        # (a method: mypy would keep ``_lead_by`` narrowed across an await)
        return self._lead_by is not None

    async def _lead(self, wire: DirectWire, signal: Signal) -> None:
        """Leader/follower reading: a task about to wait for what the
        broker will send (a confirm, a delivery) reads the socket itself
        while the reader task is parked, and stops as soon as its *signal*
        is set.  Otherwise the reader wakes on the reply, dispatches it,
        and the waiting task runs in the scheduler's next pass: one pass
        per round trip that only hands bytes over.

        Busy polling (off unless ``busy_poll`` is set): for its first
        ``busy_poll`` seconds the leader does not sleep on the socket; it
        tries to read, yields to the event loop (a checkpoint: other tasks
        run, cancellation arrives) and tries again.  An answer that comes
        within that time then wakes no sleeping process.  The price is CPU,
        ``busy_poll`` at most per wait, and only while answers come soon
        (``POLL_AGAIN``); a wait that ends without its answer stops it.

        Only one task leads at a time, and only when the reader holds
        nothing undispatched, so events keep their order.  A delivery the
        leader cannot buffer without waiting goes, with everything after
        it, to the reader (``_backlog``), which waits for room as ever.
        Another task setting *signal* interrupts the leader's wait
        (:meth:`Signal.set`); so does the incarnation's end.  Cancelled,
        the leader has read nothing it has not dispatched.
        """
        terminated = self._terminated
        event = signal._event
        self._lead_by = signal
        if self._reader_waiting:
            wire.interrupt()  # the reader steps aside, and parks
        else:
            # The parked reader's deadline is set here, before the wait,
            # rather than when the lead ends with its reply: that is between
            # the reply and what the task does with it (the next request,
            # the next publish).
            self._arm_patience()
        signal._wire = wire
        busy = self._busy_poll
        polling = self._polling
        checkpoint = self._ck.checkpoint
        # (the real clock: a test's virtual clock stands still while a task
        # keeps running)
        start = time.perf_counter() if busy else 0.0
        poll_until = start + busy
        try:
            while not event.is_set() and not terminated.is_set():
                if polling and time.perf_counter() < poll_until:
                    await checkpoint()
                    if event.is_set() or terminated.is_set():
                        break  # another task set it meanwhile (or the end came)
                else:
                    polling = False
                    if not await wire.wait_readable() or terminated.is_set():
                        continue
                data = wire.try_receive(read_size(self._core.frame_in_progress))
                if data is None:
                    continue
                rest = self._take(data)
                if rest:
                    self._backlog = rest
                    self._reader_parked = False  # until it has dispatched them
                    self._reader_waiting = False
                    break
        except STREAM_ERRORS as exc:
            if not self._retired:
                self._lost(exc)
        finally:
            signal._wire = None
            answered = bool(event.is_set())
            if busy:
                # Polling goes on only while answers come soon; a wait that
                # ends without one (a timeout, a cancellation) polled for
                # nothing, and stops it too.
                self._polling = answered and time.perf_counter() - start <= POLL_AGAIN * busy
            self._lead_by = None
            self._hand_back(answered and self._backlog is None and not self._followers)

    def _hand_back(self, later: bool) -> None:
        """The end of a lead: wake the parked reader, or, *later*, leave it
        parked until the deadline the lead's start gave it (or give it one
        now, if it parked during the lead), for a task that had its reply
        and is likely to lead again before that.  At once when the leader goes
        without its reply (cancelled, or the incarnation ends), when it
        left a backlog, or when other tasks wait for what the broker sends
        next: the reader reads for them."""
        back = self._role_back
        if back is None:
            return
        if later and self._patience is not None:
            if self._patience_until == math.inf:
                # The reader parked during the lead (it was interrupted, or
                # the lead outlasted the deadline its start gave): none yet.
                self._arm_patience()
            return
        self._role_back = None
        back.set()

    def _arm_patience(self) -> None:
        """Give the parked reader's park a deadline ``HANDBACK`` from now,
        unless the one it has is still ``HANDBACK_KEEP`` away: in a
        conversation of short round trips the deadline moves at every
        second lead, not at every one.  A frame nobody waits for is read
        within ``HANDBACK`` of the last lead's end; a lead longer than the
        time left costs the reader a step: it wakes, finds the task leading
        and parks again, and that lead's end sets the deadline."""
        patience = self._patience
        if patience is None:
            return
        now = self._ck.current_time()
        until = self._patience_until
        if until != math.inf and until - now >= HANDBACK_KEEP:
            return
        if self._cork_by_reader:
            self._kick()  # it counted on the deadline this moves on
        self._patience_until = until = now + HANDBACK
        patience.deadline = until


class Signal:
    """An event whose waiter may read the socket while it waits
    (:meth:`Pump.wait`): ``set()``, ``is_set()``, ``await wait()``.
    Setting it from another task interrupts its leader's wait on the
    socket, so that the waiter wakes as it would on a plain event."""

    __slots__ = ("_event", "_pump", "_wire")

    def __init__(self, pump: Pump) -> None:
        self._pump = pump
        self._event = pump._ck.new_event()
        #: The wire its waiter is reading, while it leads.
        self._wire: DirectWire | None = None

    def set(self) -> None:
        self._event.set()
        self._pump._woke = True
        wire = self._wire
        if wire is not None:
            wire.interrupt()  # no-op unless its leader waits on the socket

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    async def wait(self) -> None:
        await self._pump.wait(self)
