"""Connections: one task group per connection owns the byte stream.

``async with trio_msg.connect(url) as conn:`` opens TCP (and TLS), runs the
handshake, and starts three tasks in the connection's own task group:

- the **reader** feeds received bytes to the sans-IO core and routes its
  events (replies to waiting callers, deliveries to consumers' buffers,
  confirms to publishes);
- the **writer** drains the core's outbound buffer in batches, so a
  cancelled caller never leaves half a frame on the wire.  On trio, over
  plain TCP, a task about to wait for an answer writes what is queued
  itself when the writer is idle, without waiting (see
  :mod:`trio_msg._wire`); what the kernel does not take at once is the
  writer's, and goes first;
- the **heartbeat** task calls the core's ``tick(now)`` when it is due.

When the connection dies (socket error, heartbeat timeout, a close from the
broker) and will not come back, every task waiting on it gets the error,
the rest of the body of the owning ``async with`` is cancelled, and the
block raises it: one exception, never a bare ExceptionGroup.
"""

from __future__ import annotations

import functools
import math
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, cast

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint

from ._failover import FailoverCycle
from ._lowlevel import current_checkpoints
from ._observe import WATCH_BUFFER, ConnectionStatistics, Observer, Watcher
from ._params import ConnectionParameters, make_ssl_context, parse_url, redact, sni_hostname
from ._ports import DeclarationLedger
from ._protocol import events as ev
from ._protocol.connection import AMQPConnection
from ._protocol.errors import (
    REPLY_SUCCESS,
    ChannelClosed,
    ConnectionClosed,
    ConnectionLost,
    RemoteProtocolError,
    TrioMsgError,
    WrongProtocol,
)
from ._protocol.frames import Buffer
from ._protocol.state import ConnectionState
from ._retry import RetryPolicy, is_revivable
from ._wire import SHORT_READ, DirectWire, Wire, make_wire, read_size, skip
from .channel import Channel
from .errors import ConnectionFailed

if TYPE_CHECKING:
    from ._ports import ConnectionPort
    from .entity import Queue
    from .simple import SimpleBuffer, SimpleQueue

__all__ = ["Connection", "connect"]

_P = ParamSpec("_P")

#: Publishers wait while more than this many bytes are queued for the socket.
HIGH_WATER = 1024 * 1024
#: Publishes and acks wait up to LINGER seconds in the outbound buffer for
#: company, unless FLUSH_BYTES are waiting or a task needs them out (see
#: Connection._writer).
LINGER = 0.001
FLUSH_BYTES = 64 * 1024
#: A publish or ack that finds the oldest corked message this old writes the
#: cork itself, so that in a steady stream the writer's LINGER timer never
#: fires (a timeout costs a cancellation, several times a publish).
CORK_AGE = LINGER / 2
#: A publish or ack that comes this long after the last one goes out at once
#: (as Nagle's algorithm sends when nothing is in flight): corking pays only
#: when more messages follow close behind.
QUIET = 0.0005
CLOSE_TIMEOUT = 5.0
#: How long the parked reader sleeps, at most, after a lead begins (see
#: :meth:`Connection._lead`): a task in a conversation -- an RPC client's
#: next call, a server's next request, the next confirmed publish -- leads
#: again well within it, and the reader sleeps through the whole
#: conversation.  It bounds how late a frame nobody waits for is read, and
#: a cork started in it (:meth:`Connection._kick_lazy`) waits up to it
#: instead of LINGER.  A lead that outlasts the time left of it (at least
#: HANDBACK_KEEP) costs the reader a step: at 1 ms that was 0.2 steps per
#: request of an RPC server in runs with a p50 of 0.7 ms; at 1.5 to 2 ms it
#: is rare.
HANDBACK = 0.002
#: A lead's start leaves the parked reader's deadline where it is while it
#: is still at least this far ahead (see :meth:`Connection._arm_patience`),
#: so a lead is sure of HANDBACK_KEEP before the reader wakes.
HANDBACK_KEEP = 0.0015
#: A lead polls (``busy_poll``) only while the last one that ended with its
#: answer had it within this many times ``busy_poll``: a consumer waiting
#: for messages that come seldom, or an answer that takes long, stops
#: polling after one wasted poll, and starts again after one quick answer.
#: Why 2: at 4, a client of a server that takes 1.5 ms per call polled a
#: third of every call and slept anyway; Linux's haltpoll stops at 1, but
#: its window grows back by steps, and ours, all or nothing, would then
#: stop for every answer that came a little late.
POLL_AGAIN = 2

_HANDSHAKE = (
    ConnectionState.AWAIT_START,
    ConnectionState.AWAIT_TUNE,
    ConnectionState.AWAIT_OPEN_OK,
)

_STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
    ssl.SSLError,
)


class _ConnectContext:
    """What :func:`connect` returns: the async context manager, which also
    says how to use it when awaited (``await connect(url)`` is aio-pika's
    and aiormq's way, and would otherwise fail with a puzzling TypeError)."""

    __slots__ = ("_cm",)

    def __init__(self, cm: AbstractAsyncContextManager[Connection]) -> None:
        self._cm = cm

    async def __aenter__(self) -> Connection:
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._cm.__aexit__(exc_type, exc, tb)

    if not TYPE_CHECKING:  # (so that type checkers flag the await too)

        def __await__(self):
            raise TypeError(
                "trio_msg.connect() is an async context manager, not a coroutine: "
                "use 'async with trio_msg.connect(url) as conn:' (the connection "
                "lives in that block and is closed when it ends)"
            )


def _context(
    fn: Callable[_P, AbstractAsyncContextManager[Connection]],
) -> Callable[_P, _ConnectContext]:
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _ConnectContext:
        return _ConnectContext(fn(*args, **kwargs))

    return wrapper


@_context
@asynccontextmanager
async def connect(
    url: str | Sequence[str] = "amqp://guest:guest@localhost:5672//",
    *,
    revive: bool | RetryPolicy | Mapping[str, Any] = True,
    **options: Any,
) -> AsyncIterator[Connection]:
    """Connect to the broker; yields an open :class:`Connection`.

    ``url`` is an AMQP URI (see :func:`trio_msg._params.parse_url`);
    keyword options override what it says.  Failover hosts, as kombu
    writes them: ``host1,host2`` in one URL, URLs joined by ``;``, a list
    of URLs, or ``alternates=[url, ...]``; ``failover_strategy``
    (``"round-robin"``, ``"shuffle"`` or a callable) orders them.  Every
    connection attempt -- the first, and each of a reviving connection --
    tries each host once, in that order, within ``connection_timeout``.  Leaving the block closes the
    connection (bounded in time, even when cancelled).

    ``revive=True`` (the default, with the default
    :class:`~trio_msg.RetryPolicy`: retry for ever, waits growing to 10 s),
    or a :class:`~trio_msg.RetryPolicy`, or kombu's ``ensure()`` keywords
    as a dict: a lost connection is re-established
    in the background, with the policy's waits between attempts and the
    next failover host first; the declarations cached by ``maybe_declare``
    are replayed on it before anyone else may use it, and Producers and
    Consumers that opened their own channel on this connection move to the
    new one by themselves.  Only failures in
    :data:`trio_msg._retry.REVIVABLE` are retried; a wrong password or a
    forbidden vhost ends the connection at once.  When the policy runs out
    of retries, waiting tasks get :class:`~trio_msg.errors.ConnectionFailed`
    and leaving the block raises it.  This is what a kombu ``Connection``
    does for ``publish(retry=True)`` and ``ensure()``, so it is the default.

    ``revive=False``: if the connection dies while the block runs, every
    task waiting on it gets the error and leaving the block raises it
    (:class:`~trio_msg.errors.ConnectionLost`,
    :class:`~trio_msg.errors.ConnectionForced`, ...).  See docs/revive.rst.

    The first connection is never retried: a broker that cannot be reached
    when the program starts is an error the caller should see.

    The body of the ``async with`` lives with the connection, as a
    nursery's body with its children: when the connection dies for good
    (not reviving, a loss revive cannot cure, or the retries ran out), the
    tasks waiting on it get the error first, then the rest of the body is
    cancelled and the block raises the loss at once, even if the body was
    not using the connection.  An exception of the body's own passes
    unchanged.  A normal close (:meth:`Connection.aclose`, or the broker's
    close with reply 200) cancels nothing.  See docs/cancellation.rst.

    It is an async context manager only: ``await connect(url)`` raises a
    TypeError saying to use ``async with``.  A socket that ends during the
    handshake raises :class:`~trio_msg.errors.ConnectionLost` (a refused
    login is the broker's 403: :class:`~trio_msg.errors.AuthenticationError`);
    a server that does not speak AMQP 0-9-1 raises
    :class:`~trio_msg.errors.ConnectionFailed` quoting what it sent.

    ``busy_poll`` (seconds, 0.0005 by default; 0 turns it off): on plain
    TCP, a task about to wait for the broker's answer polls the socket for
    that long, yielding to the event loop between tries, before it sleeps.
    It trades CPU for latency (a confirmed publish took half the time on a
    virtual machine), and stops by itself while answers come slowly.  See
    docs/guide.rst.

    Cancellation: a cancelled connect leaves nothing open.
    """
    params = parse_url(url, **options)
    policy = None if revive is False else RetryPolicy.coerce(None if revive is True else revive)
    conn = Connection(params, retry_policy=policy)
    try:
        async with anyio.create_task_group() as tg:
            conn._tg = tg
            await conn._open(tg)
            conn._mark_ready()
            if policy is not None:
                conn._spawn_supervisor(tg)
            try:
                # The body runs in a scope of its own, which a loss the
                # connection will not come back from cancels (_end_body):
                # this block then raises the loss, like a failed nursery.
                with anyio.CancelScope() as conn._body:
                    yield conn
            finally:
                conn._body = None
                # Shielded: aclose() ends with a checkpoint, whose Cancelled
                # (the caller's scope may be cancelled) would replace the
                # body's exception and then be swallowed by the group.
                with anyio.CancelScope(shield=True):
                    await conn.aclose()
                conn._stop_tasks()
    except BaseExceptionGroup as group:
        error = _unwrap(group)
        # (keeps the exception's own cause; only the group is hidden)
        raise error from error.__cause__
    # Here the body ended without an exception of its own, or was cancelled
    # by the loss (see _end_body): either way a loss is raised, never
    # swallowed.  (``from __cause__`` keeps its cause and hides the body's
    # Cancelled, which would only read as a second failure.)
    if policy is not None:
        if conn._fatal is not None:
            raise conn._fatal from conn._fatal.__cause__
    elif conn.error is not None and not _normal_close(conn.error):
        raise conn.error from conn.error.__cause__


def _normal_close(error: BaseException) -> bool:
    return (
        isinstance(error, ConnectionClosed)
        and not error.by_peer
        and error.reply_code == REPLY_SUCCESS
    )


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """One clear exception out of a task group's: the first that is not a
    cancellation (there is at most one user-visible error per connection)."""
    cancelled = anyio.get_cancelled_exc_class()
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if not isinstance(exc, cancelled):
            return exc
    return leaves[0] if leaves else group


class Connection:
    """An open AMQP connection.  Made by :func:`connect`; don't construct it.

    Attributes: ``params`` (the :class:`~trio_msg._params.ConnectionParameters`,
    password hidden from ``repr``), ``server_properties``, ``frame_max``,
    ``channel_max``, ``heartbeat`` (as negotiated), ``blocked`` (the broker
    has blocked publishing: a resource alarm), ``declared_entities``, the
    cache behind ``maybe_declare`` (and the ledger a reviving connection
    replays), ``retry_policy`` (``None`` unless the connection revives) and
    ``incarnation`` (1 for the first connection, one more for each revival).
    """

    close_timeout = CLOSE_TIMEOUT

    def __init__(
        self, params: ConnectionParameters, retry_policy: RetryPolicy | None = None
    ) -> None:
        self.params = params
        self.retry_policy = retry_policy
        #: The backend's checkpoints, for the per-message paths; also the
        #: API layer's (ConnectionPort.checkpoints: an attribute, not a
        #: property, as it is read once per message).
        self._ck = self.checkpoints = current_checkpoints()
        self.incarnation = 0
        self.declared_entities = DeclarationLedger()
        self._failover = FailoverCycle(params.addresses, params.failover_strategy)
        self.server_properties: dict[str, Any] = {}
        self.address: tuple[str, int] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        #: Set while an incarnation is open and replayed, and once the
        #: connection is gone for good; a fresh one is made on each loss.
        self._ready = anyio.Event()
        #: The error that ended a reviving connection for good.
        self._fatal: TrioMsgError | None = None
        self._closing = False
        #: Busy polling (see :meth:`_lead`): how long, and whether the last
        #: lead's answer came soon enough to poll for the next one.
        self._busy_poll = params.busy_poll
        self._polling = params.busy_poll > 0
        self._supervisor_scope: anyio.CancelScope | None = None
        self._supervisor_done = anyio.Event()
        #: The scope of the ``async with connect()`` body, while it runs.
        self._body: anyio.CancelScope | None = None
        self._writable_waiters = 0
        #: Log lines, watchers and statistics (see :mod:`trio_msg._observe`).
        self._observer = Observer(params)
        self._new_incarnation()

    def _new_incarnation(self) -> None:
        """Fresh per-connection state: a new core, no stream, no channels."""
        params = self.params
        self._core = AMQPConnection(
            username=params.username,
            password=params.password,
            vhost=params.vhost,
            auth_mechanism=params.auth_mechanism,
            frame_max=params.frame_max,
            channel_max=params.channel_max,
            heartbeat=params.heartbeat,
            connection_name=params.connection_name,
            client_properties=dict(params.client_properties or {}),
            max_body_size=params.max_body_size,
        )
        self._stream: anyio.abc.ByteStream | None = None
        self._wire: Wire | None = None
        #: Bytes taken from the core and not yet written (buffers, and how
        #: many bytes in all): the writer sends them before anything else.
        self._unsent: list[Buffer] | None = None
        self._unsent_size = 0
        #: The cancel scopes of this incarnation's tasks still running.
        self._live_tasks: set[anyio.CancelScope] = set()
        self._tasks_done = anyio.Event()
        self._tasks_done.set()
        self._channels: dict[int, Channel] = {}
        self.error: TrioMsgError | None = None
        self._opened = anyio.Event()
        #: Set when this incarnation ends.  The backend's own event (trio's,
        #: not anyio's wrapper of it): the hot paths ask ``is_set()`` on
        #: every write and every lead.
        self._terminated = self._ck.new_event()
        self._wake = anyio.Event()
        self._flush = anyio.Event()
        self._urgent = False
        #: The reader waits for room in a consumer's buffer (not reading).
        self._reading_paused = False
        # Leader/follower reading (see _lead): who reads the socket instead
        # of the reader task, the reader's state, and its wake-up call.
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
        #: of being woken when a lead ends with its reply (see :meth:`_lead`).
        self._patience: anyio.CancelScope | None = None
        #: That deadline, as last set (infinite: none yet on this park).
        self._patience_until = math.inf
        #: Tasks waiting on a Signal without leading (another task leads).
        self._followers = 0
        #: Events a leader could not dispatch without waiting (a full
        #: consumer buffer): the reader dispatches them first.
        self._backlog: list[ev.Event] | None = None
        #: The writer is in the middle of a send; ``_sent`` is set after each.
        self._sending = False
        self._sent = anyio.Event()
        #: When the last publish or ack was corked (``time.perf_counter``).
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
        # Waiters of an earlier incarnation hold (and were woken by) the old
        # event; the count of waiters carries over.
        self._writable = anyio.Event()

    def __repr__(self) -> str:
        state = self._core.state.value
        return f"<trio_msg.Connection {self.params.url_redacted()} {state}>"

    @property
    def is_open(self) -> bool:
        """Open and usable now (a reviving connection is not while it reconnects)."""
        return self._core.is_open and self.error is None and self._ready.is_set()

    @property
    def reviving(self) -> bool:
        """Whether this connection re-establishes itself when lost."""
        return self.retry_policy is not None

    @property
    def blocked(self) -> bool:
        return self._core.blocked

    @property
    def frame_max(self) -> int:
        return self._core.frame_max

    @property
    def channel_max(self) -> int:
        return self._core.channel_max

    @property
    def heartbeat(self) -> int:
        return self._core.heartbeat

    # --- opening -------------------------------------------------------------

    async def _open(self, tg: anyio.abc.TaskGroup, *, rotate: bool = False) -> None:
        params = self.params
        ssl_context = make_ssl_context(params)
        failures: list[str] = []
        # One round of the failover strategy's hosts (round-robin goes on
        # from the host after the last one tried, so *rotate* needs nothing).
        addresses = self._failover.round()
        self.address = None
        try:
            with anyio.fail_after(params.connection_timeout):
                if params.memory is not None:
                    from ._broker import attach

                    addresses = iter(())  # no network: the embedded broker
                    self._stream, serve = attach(params.memory)
                    # shielded like the reader and writer: the broker's side
                    # must answer the close handshake of a cancelled block
                    self._spawn(tg, serve)
                    self._wire = make_wire(self._stream)
                    self.address = ("memory", 0)
                for host, port in addresses:
                    try:
                        self._stream = await self._connect_tcp(host, port, ssl_context)
                        self._wire = make_wire(self._stream)
                    except (
                        OSError,
                        ssl.SSLError,
                        anyio.BrokenResourceError,
                        anyio.EndOfStream,
                    ) as exc:
                        failures.append(f"{host}:{port}: {_describe(exc)}")
                        continue
                    self.address = (host, port)
                    break
                else:
                    if self.address is None:
                        raise ConnectionFailed(
                            redact("cannot connect to the broker: " + "; ".join(failures), params)
                        )
                self._core.initiate()
                self._spawn(tg, self._reader)
                self._spawn(tg, self._writer)
                self._spawn(tg, self._heartbeat)
                self._kick()
                await self._opened.wait()
        except TimeoutError:
            await self._abort()
            where = f"{self.address[0]}:{self.address[1]}" if self.address else "the broker"
            raise ConnectionFailed(
                f"timed out after {params.connection_timeout}s connecting to {where}"
                + (f" ({'; '.join(failures)})" if failures else "")
            ) from None
        except BaseException:
            await self._abort()
            raise
        if self.error is not None:
            await self._abort()
            if isinstance(self.error, WrongProtocol) and self.address is not None:
                # Not a broker at all (an HTTP server, the management port):
                # the address is wrong, as if nothing listened there.
                host, port = self.address
                raise ConnectionFailed(
                    f"cannot connect to the broker: {host}:{port}: {self.error}"
                ) from self.error
            raise self.error

    async def _connect_tcp(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> anyio.abc.ByteStream:
        if ssl_context is None:
            return await anyio.connect_tcp(host, port)
        try:
            return await anyio.connect_tcp(
                host,
                port,
                ssl_context=ssl_context,
                tls_hostname=sni_hostname(self.params, host),
                tls_standard_compatible=False,
            )
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionFailed(
                f"TLS certificate of {host}:{port} rejected: {exc.verify_message or exc.reason}"
            ) from None

    async def _abort(self) -> None:
        """Tear this incarnation down without the AMQP close (failed opens)."""
        if self.error is None and not self._terminated.is_set():
            self._core.connection_lost(ConnectionLost("connection aborted"))
            self._dispatch_nowait(self._core.next_events())
        if self._stream is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await self._close_stream()
        self._stop_incarnation()

    async def _close_stream(self) -> None:
        assert self._stream is not None
        if self._wire is not None:
            self._wire.close()
        await self._stream.aclose()

    def _spawn(self, tg: anyio.abc.TaskGroup, fn: Callable[[], Awaitable[None]]) -> None:
        """Start an IO task of this incarnation, shielded from the cancel
        scopes around ``connect`` (a timeout around the ``async with`` must
        not kill the reader and writer before the close handshake);
        :meth:`_stop_incarnation` ends it, and ``_tasks_done`` is set once
        every task of the incarnation has returned."""
        scope = anyio.CancelScope(shield=True)
        if self._tasks_done.is_set():
            self._tasks_done = anyio.Event()
        done = self._tasks_done
        live = self._live_tasks
        live.add(scope)

        async def run() -> None:
            try:
                with scope:
                    await fn()
            finally:
                live.discard(scope)
                if not live:
                    done.set()

        # Named for what it runs ("trio_msg._reader"), not for the wrapper.
        tg.start_soon(run, name=f"trio_msg.{getattr(fn, '__name__', 'task')}")

    def _stop_incarnation(self) -> None:
        for scope in list(self._live_tasks):
            scope.cancel()

    def _stop_tasks(self) -> None:
        self._stop_incarnation()
        if self._supervisor_scope is not None:
            self._supervisor_scope.cancel()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _mark_ready(self) -> None:
        self.incarnation += 1
        self._ready.set()
        self._observer.ready(self)

    # --- revival -------------------------------------------------------------

    def _spawn_supervisor(self, tg: anyio.abc.TaskGroup) -> None:
        scope = self._supervisor_scope = anyio.CancelScope(shield=True)

        async def run() -> None:
            try:
                with scope:
                    await self._supervise()
            finally:
                self._supervisor_done.set()

        tg.start_soon(run)

    async def _supervise(self) -> None:
        """Wait for each incarnation to die and bring up the next one."""
        while True:
            await self._terminated.wait()
            if self._closing:
                return
            error = self.error
            if not is_revivable(error):
                self._give_up(error or ConnectionLost("the connection ended"))
                return
            await self._end_incarnation()
            assert error is not None
            failure = await self._reconnect(error)
            if failure is not None:
                self._give_up(failure)
                return

    async def _reconnect(self, lost: TrioMsgError) -> TrioMsgError | None:
        """Reconnect by the retry policy; ``None`` once open and replayed,
        else why not."""
        assert self.retry_policy is not None and self._tg is not None
        last: TrioMsgError = lost
        attempts = 0
        for wait in self.retry_policy.intervals():
            self._observer.attempt(attempts + 1, wait, last)
            await anyio.sleep(wait)
            attempts += 1
            self._new_incarnation()
            try:
                await self._open(self._tg, rotate=True)
                await self._replay()
            except TrioMsgError as exc:
                self._observer.attempt_failed(attempts, exc)
                await self._end_incarnation()
                if not is_revivable(exc):
                    return exc
                last = exc
                continue
            self._mark_ready()
            return None
        failure = ConnectionFailed(
            f"gave up reconnecting after {attempts} attempt{'s' * (attempts != 1)}: {last}"
        )
        failure.__cause__ = last
        return failure

    async def _end_incarnation(self) -> None:
        """Stop this incarnation's tasks and close its socket; wait until
        they are gone, so the next incarnation starts from nothing."""
        if not self._terminated.is_set():
            # Given up on while open (the replay failed): settle its waiters.
            self._core.connection_lost(ConnectionLost("connection abandoned while reviving"))
            self._dispatch_nowait(self._core.next_events())
        self._stop_incarnation()
        with anyio.CancelScope(shield=True):
            if self._stream is not None:
                with anyio.move_on_after(1):
                    await self._close_stream()
            await self._tasks_done.wait()

    async def _replay(self) -> None:
        """Run, in order, the replay steps registered in
        ``declared_entities`` (``maybe_declare`` registers one per entity
        it caches): declare them again on the new incarnation.

        An entity the broker now refuses (someone redeclared it otherwise)
        leaves the ledger, so the next ``maybe_declare`` raises the broker's
        error where the caller sees it; the replay goes on without it.
        """
        steps = self.declared_entities.replay_steps()
        if not steps:
            return
        channel = await self._open_channel_now()
        try:
            for entity, step in steps:
                try:
                    await step(channel)
                except ChannelClosed:
                    if self.error is not None:
                        raise  # the connection went, not just the channel
                    self.declared_entities.discard(entity)
                    channel = await self._open_channel_now()
        finally:
            with anyio.CancelScope(shield=True):
                await channel.aclose()

    # --- the API layer's port (see trio_msg._ports.ConnectionPort) -----------

    def will_revive(self, error: BaseException | None) -> bool:
        """Whether *error* is a loss this connection is (or
        will be) reviving from (ConnectionPort).

        :meta private:
        """
        return (
            self.retry_policy is not None
            and self._fatal is None
            and not self._closing
            and is_revivable(error)
        )

    def new_signal(self) -> Signal:
        """The ConnectionPort operation: see :mod:`trio_msg._ports`.

        :meta private:
        """
        return self._new_signal()

    def flush(self) -> None:
        """Write what is corked now (ConnectionPort).

        :meta private:
        """
        self._flush_pending()

    def _give_up(self, error: TrioMsgError) -> None:
        self._observer.gave_up(error)
        self._fatal = error
        if self.error is None:
            self.error = error
        self._ready.set()
        self._writable.set()
        self._end_body(error)

    def _end_body(self, error: TrioMsgError | None) -> None:
        """The connection is gone for good with *error*: cancel the body of
        its ``async with``, which then raises *error* (see :func:`connect`),
        unless it is a normal close (reply 200, ours or the broker's).
        Tasks waiting on the connection were woken with the error first."""
        if error is None or (
            isinstance(error, ConnectionClosed) and error.reply_code == REPLY_SUCCESS
        ):
            return
        if self._body is not None:
            self._body.cancel()

    async def wait_connected(self) -> None:
        """Return once the connection is open (at once if it is).

        On a reviving connection that is reconnecting, wait for it.  Raises
        the connection's error if it is closed or gone for good.

        Cancellation: stops waiting; nothing else happens.
        """
        await checkpoint()
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._closing or self.retry_policy is None:
                self._check()
                return
            if self._ready.is_set() and self._core.is_open and self.error is None:
                return
            await self._ready.wait()

    # --- watching ------------------------------------------------------------

    def statistics(self) -> ConnectionStatistics:
        """A snapshot of the connection: its state, incarnation, revivals,
        last error, time connected, and counters of messages published,
        confirmed, nacked, returned, delivered and acked (see
        :class:`~trio_msg.ConnectionStatistics`).  Cheap: call it as often
        as you like."""
        return self._observer.statistics(self)

    def watch(self, buffer_size: int = WATCH_BUFFER) -> Watcher:
        """Watch the connection's changes of state from a task::

            async with conn.watch() as events:
                async for event in events:
                    ...   # Lost, Reviving, Revived, Blocked, Unblocked, Closed

        Events are buffered for the watcher from the ``async with`` on; a
        watcher that falls more than ``buffer_size`` events behind loses the
        oldest and reads a :class:`~trio_msg.Missed` first.  The connection
        never waits for a watcher.  Iteration ends after
        :class:`~trio_msg.Closed`.  See docs/revive.rst.

        Cancellation: a cancelled wait for the next event loses no event.
        """
        return self._observer.watch(buffer_size)

    # --- channels ------------------------------------------------------------

    async def open_channel(self) -> Channel:
        """Open a new channel.  The caller must :meth:`Channel.aclose` it;
        prefer ``async with connection.channel()``.  On a reviving
        connection that is reconnecting, this waits until it is back.

        Cancellation: the channel, if the broker opened it, is closed again.
        """
        await self.wait_connected()
        return await self._open_channel_now()

    async def _open_channel_now(self) -> Channel:
        self._check()
        core_channel = self._core.open_channel()
        channel = Channel(self, core_channel)
        self._channels[core_channel.id] = channel
        self._kick()
        await channel._wait_open()
        return channel

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        """``async with connection.channel() as ch``: a channel closed on exit."""
        ch = await self.open_channel()
        try:
            yield ch
        finally:
            await ch.aclose()

    # --- kombu's simple interface -------------------------------------------

    def SimpleQueue(  # kombu's name
        self,
        name: str | Queue,
        no_ack: bool | None = None,
        queue_opts: Mapping[str, Any] | None = None,
        queue_args: Mapping[str, Any] | None = None,
        exchange_opts: Mapping[str, Any] | None = None,
        channel: Channel | None = None,
        **kwargs: Any,
    ) -> SimpleQueue:
        """A :class:`~trio_msg.simple.SimpleQueue` on this connection (or on
        ``channel``): ``async with conn.SimpleQueue("tasks") as queue``.
        Keywords as kombu's ``Connection.SimpleQueue``."""
        from .simple import SimpleQueue

        return SimpleQueue(
            channel or self, name, no_ack, queue_opts, queue_args, exchange_opts, **kwargs
        )

    def SimpleBuffer(  # kombu's name
        self,
        name: str | Queue,
        no_ack: bool | None = None,
        queue_opts: Mapping[str, Any] | None = None,
        queue_args: Mapping[str, Any] | None = None,
        exchange_opts: Mapping[str, Any] | None = None,
        channel: Channel | None = None,
        **kwargs: Any,
    ) -> SimpleBuffer:
        """A :class:`~trio_msg.simple.SimpleBuffer` (transient, ``no_ack``)
        on this connection (or on ``channel``)."""
        from .simple import SimpleBuffer

        return SimpleBuffer(
            channel or self, name, no_ack, queue_opts, queue_args, exchange_opts, **kwargs
        )

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if not self._core.is_open:
            raise ConnectionLost(f"the connection is {self._core.state.value.lower()}")

    # --- closing -------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection: ``connection.close``, wait (bounded) for
        ``close-ok``, close the socket; a reviving connection stops
        reviving.  Idempotent.  Always closes, even when cancelled: the
        cancellation is delivered afterwards.

        Inside ``async with connect()`` it returns and the body goes on;
        operations on the closed connection then raise
        :class:`~trio_msg.errors.ConnectionClosed` ("closed by client")."""
        with anyio.CancelScope(shield=True):
            self._closing = True
            if self._supervisor_scope is not None:
                self._supervisor_scope.cancel()
                with anyio.move_on_after(self.close_timeout):
                    await self._supervisor_done.wait()
            if not self._terminated.is_set() and self._core.state is not ConnectionState.INIT:
                self._core.close()
                self._dispatch_nowait(self._core.next_events())
                self._kick()
                self._hand_back(False)  # the reader reads the close-ok
                with anyio.move_on_after(self.close_timeout):
                    await self._terminated.wait()
            if not self._terminated.is_set():
                self._core.connection_lost(None)
                self._dispatch_nowait(self._core.next_events())
            await self._drain(1.0)
            if self._stream is not None:
                with anyio.move_on_after(1):
                    await self._close_stream()
            # Only the connection's own tasks: the body of ``async with
            # connect()`` (in the same task group) goes on after aclose().
            self._stop_incarnation()
            self._ready.set()
            self._observer.closed(self)
        await checkpoint()

    async def _drain(self, bound: float) -> None:
        """Give the writer up to *bound* seconds to send what is queued (a close-ok
        owed to a broker whose close crossed ours) before the socket goes."""
        with anyio.move_on_after(bound):
            while (self._outbound() or self._sending) and self._live_tasks:
                sent = self._sent = anyio.Event()
                self._kick()  # on a direct wire this may write it all at once
                if self._outbound() or self._sending:
                    await sent.wait()

    # --- the tasks -----------------------------------------------------------

    def _outbound(self) -> int:
        """Bytes queued for the socket: in the core, and taken but unsent."""
        return self._core.outbound_size + self._unsent_size

    def _kick(self) -> None:
        """Write what is queued now (someone is about to wait for it).

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
            self._corked_at = None
            self._cork_by_reader = False
            self._heard = False
            try:
                sent = wire.try_send(buffers)
            except OSError:
                sent = 0
            if sent == size:
                idle = self._idle
                if idle is not None and idle.deadline != math.inf:
                    idle.deadline = math.inf  # nothing left for the writer to time
                if self._writable_waiters:
                    self._notify_writable()
                return
            self._unsent = skip(buffers, sent)
            self._unsent_size = size - sent
        self._urgent = True
        self._wake.set()
        self._flush.set()

    def _flush_pending(self) -> None:
        """A task is about to wait: write anything corked now."""
        if self._core.outbound_size:
            self._kick()

    def _kick_lazy(self) -> None:
        """Write what is queued soon: within ``LINGER``; at once past
        ``FLUSH_BYTES``, after ``QUIET``, or when the broker has sent
        something since the last write (see :meth:`_writer`).

        The last is for conversations: an RPC server's reply follows the
        request it answers, a client's next request follows the last reply,
        and the first ack after a batch of deliveries opens the broker's
        prefetch window.  A run of publishes with nothing coming back (or
        the acks of one batch) is still corked.  ``QUIET`` alone missed
        these when a round trip is shorter than it.

        In a steady run the queuing task writes the cork itself once it is
        ``CORK_AGE`` old, and the first message of the next cork moves the
        writer's deadline on: the writer's timer fires only at the end of a
        run, for the last cork nobody else writes."""
        now = time.perf_counter()
        last = self._last_lazy
        self._last_lazy = now
        if self._heard or now - last > QUIET or self._core.outbound_size >= FLUSH_BYTES:
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
                # deadline, as an RPC server's request did): it writes the
                # cork unless a task does first, and the writer's deadline
                # is neither set nor, when that task writes it, taken away
                # (two trio deadline moves, about 2 us each).
                self._cork_by_reader = True
            else:
                scope.deadline = self._ck.current_time() + LINGER
        elif now - corked >= CORK_AGE:
            self._kick()

    def _must_wait(self) -> bool:
        return self._outbound() > HIGH_WATER or self._core.blocked or self.error is not None

    async def _wait_writable(self) -> None:
        """Back-pressure: wait while the outbound buffer is over its mark or
        the broker blocks us.  Raises the connection's error if it dies."""
        while self._must_wait():
            if self.error is not None:
                raise self.error
            self._writable_waiters += 1
            self._hand_back(False)  # the reader reads the broker's unblocking
            try:
                await self._writable.wait()
            finally:
                self._writable_waiters -= 1

    def _notify_writable(self) -> None:
        if self._writable_waiters:
            self._writable.set()
            self._writable = anyio.Event()

    async def _writer(self) -> None:
        """The task that writes whatever no other task writes at once.

        Corking: publishes and acks (:meth:`_kick_lazy`) are written by
        it ``LINGER`` after the first of them, so a run of messages goes
        out in a few large writes instead of a system call each.  (The
        first of a cork moves the deadline of its linger, or of its idle
        wait, instead of waking it: most corks are written by a task
        about to wait before then, and the writer sleeps through them.)
        Whatever a task is about to wait for -- a reply, a confirm, the
        next delivery -- is flushed at once (:meth:`_kick`), and so is a
        buffer past ``FLUSH_BYTES`` and a message that comes ``QUIET`` after
        the one before it: the linger never delays an answer anyone is waiting
        for, nor a lone message, only bytes that have company coming.
        Handshake and close frames always go at once.  On a direct wire,
        "at once" is the queuing task's own write when this task is idle.
        """
        core = self._core
        wire = self._wire
        assert wire is not None
        try:
            while True:
                if self._unsent is None and not core.outbound_size:
                    if core.state in (ConnectionState.CLOSED, ConnectionState.ERROR):
                        return
                    self._wake = anyio.Event()
                    self._notify_writable()
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
                self._corked_at = None
                self._cork_by_reader = False
                self._heard = False
                try:
                    await wire.send(data)
                finally:
                    self._sending = False
                    self._sent.set()
                if self._outbound() <= HIGH_WATER:
                    self._notify_writable()
        except _STREAM_ERRORS as exc:
            self._lost(exc)
        finally:
            self._sent.set()
            self._notify_writable()

    async def _reader(self) -> None:
        core = self._core
        wire = self._wire
        assert wire is not None
        try:
            if wire.direct:
                await self._read_direct(cast(DirectWire, wire))
                return
            while core.state not in (ConnectionState.CLOSED, ConnectionState.ERROR):
                rest = self._take(core, await wire.receive(read_size(core.frame_in_progress)))
                if rest:
                    await self._dispatch(rest)
        except _STREAM_ERRORS as exc:
            self._lost(exc)
        finally:
            if self._core is core:  # not a revived connection's reader
                self._reader_parked = self._reader_waiting = False

    async def _read_direct(self, wire: DirectWire) -> None:
        """The reader on a direct wire, where a task waiting for a reply may
        take the reading over (:meth:`_lead`) while this task holds nothing
        undispatched: for free while it is parked (stepped aside for an
        earlier leader, or yielding after it woke a waiter), by interrupting
        it while it waits on the socket (``SocketWire.interrupt``, dearer).
        Once a task leads, the reader parks, and a waiter that waits again
        soon after (the next confirm, the next reply) takes over for free.
        A lead that ends with its reply does not wake the reader: the lead's
        start gave the reader's park a deadline ``HANDBACK`` away, which the
        next leads move on, so that through a conversation the reader does not
        run at all (it ran one or two steps per round trip, and each could
        cost the scheduler a pass).  Woken (a lead ended otherwise, nobody
        led again in time, or a lead outlasted the deadline), the reader
        parks again at once, without a deadline, if a task leads already."""
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
            rest = self._take(core, data)
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

    def _take(self, core: AMQPConnection, data: bytes) -> list[ev.Event] | None:
        """Feed *data* to the core, send its own answers, and dispatch the
        events that can be without waiting; the rest, from the first
        delivery whose consumer's buffer is full, is returned.  *core* is
        the one the caller read for: bytes of a lost incarnation, read
        after a revival began, are dropped."""
        if core is not self._core:
            return None
        before = core.outbound_size
        self._heard = True
        try:
            core.receive_data(data)
        except RemoteProtocolError:
            pass  # the core closed itself; its events say why
        if core.outbound_size > before:
            self._kick()  # the core's own answers: close-ok, flow-ok, ...
        events = core.next_events()
        channels = self._channels
        for i, event in enumerate(events):
            if type(event) is ev.Delivery:
                channel = channels.get(event.channel_id)
                if channel is not None and not channel._deliver_nowait(event):
                    return events[i:]
            else:
                self._route(event)
        return None

    def _new_signal(self) -> Signal:
        return Signal(self)

    async def _wait_leading(self, signal: Signal) -> None:
        """Wait until *signal* is set, reading the socket meanwhile if the
        reader task is parked (:meth:`_lead`).  A yield; cancelled, it only
        stops waiting."""
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

    async def _lead(self, wire: DirectWire, signal: Signal) -> None:
        """Leader/follower reading: a task about to wait for what the
        broker will send (a confirm, a delivery) reads the socket itself
        while the reader task is parked (see :meth:`_read_direct`), and
        stops as soon as its *signal* is set.  Otherwise the reader wakes
        on the reply, dispatches it, and the waiting task runs in the
        scheduler's next pass: one pass per round trip that only hands
        bytes over.  (The reader's own pass,
        to step aside and to take over again, falls while the broker
        works, not between the reply and the task that waits for it.)

        Busy polling: for its first ``busy_poll`` seconds the leader does
        not sleep on the socket; it tries to read, yields to the event loop
        (a checkpoint: other tasks run, cancellation arrives) and tries
        again.  An answer that comes within that time then wakes no
        sleeping process: on a virtual machine, waking an idle CPU cost
        about 80 us of a 180 us confirm round trip (docs/performance.rst).
        The price is CPU, ``busy_poll`` at most per lead, and only while
        answers come soon (``POLL_AGAIN``).

        Only one task leads at a time, and only when the reader holds
        nothing undispatched, so events keep their order.  A delivery the
        leader cannot buffer without waiting goes, with everything after
        it, to the reader (``_backlog``), which waits for room as ever.
        Another task setting *signal* interrupts the leader's wait
        (:meth:`Signal.set`); so does the connection's end.  Cancelled,
        the leader has read nothing it has not dispatched.
        """
        core = self._core  # this incarnation: a revival makes a new one
        terminated = self._terminated
        self._lead_by = signal
        if self._reader_waiting:
            wire.interrupt()  # the reader steps aside, and parks
        else:
            # The parked reader's deadline is set here, before the wait,
            # rather than when the lead ends with its reply: that is between
            # the reply and what the task does with it (the next request, the
            # next publish), and moving a trio deadline there cost an RPC
            # about 14 us on each side in place, 2.5 us in a warm loop
            # (timestamped around it; see docs/performance.rst).
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
            while not signal._event.is_set() and not terminated.is_set():
                if polling and time.perf_counter() < poll_until:
                    await checkpoint()
                    if signal._event.is_set() or terminated.is_set():
                        break  # another task set it meanwhile (or the end came)
                else:
                    polling = False
                    if not await wire.wait_readable() or terminated.is_set():
                        continue
                data = wire.try_receive(read_size(core.frame_in_progress))
                if data is None:
                    continue
                rest = self._take(core, data)
                if rest:
                    self._backlog = rest
                    self._reader_parked = False  # until it has dispatched them
                    self._reader_waiting = False
                    break
        except _STREAM_ERRORS as exc:
            if self._core is core:
                self._lost(exc)
        finally:
            signal._wire = None
            if busy and signal._event.is_set():
                self._polling = time.perf_counter() - start <= POLL_AGAIN * busy
            if self._core is core:
                self._lead_by = None
                self._hand_back(
                    signal._event.is_set() and self._backlog is None and not self._followers
                )

    def _hand_back(self, later: bool) -> None:
        """The end of a lead: wake the parked reader, or, *later*, leave it
        parked until the deadline the lead's start gave it (or give it one
        now, if it parked during the lead), for a task that had its reply
        and is likely to lead again before that.  At once when the leader goes
        without its reply (cancelled, or the connection ends), when it
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
        conversation of 0.5 ms round trips the deadline moves at every
        second lead, not at every one (about 2 us a move: a generator-based
        context manager inside trio).  A frame nobody waits for is read
        within ``HANDBACK`` of the last lead's end; a lead longer than the
        time left (at least ``HANDBACK_KEEP``) costs the reader a step: it
        wakes, finds the task leading and parks again, and that lead's end
        sets the deadline."""
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

    def _lost(self, exc: BaseException) -> None:
        if self._terminated.is_set():
            return
        error: TrioMsgError | None = None
        state = self._core.state
        if state is not ConnectionState.CLOSING:
            text = redact(_describe(exc), self.params)
            # A loss in the handshake is a loss: a broker refusing our
            # credentials says so with a 403 (we ask for it with the
            # authentication_failure_close capability).
            during = " during the handshake" if state in _HANDSHAKE else ""
            error = ConnectionLost(f"connection to the broker lost{during}: {text}")
        self._core.connection_lost(error)
        self._dispatch_nowait(self._core.next_events())

    async def _heartbeat(self) -> None:
        core = self._core
        terminated = self._terminated
        while not terminated.is_set():
            deadline = core.next_deadline()
            if deadline is None:
                if core.state in (ConnectionState.CLOSED, ConnectionState.ERROR):
                    return
                await anyio.sleep(1 if core.state is not ConnectionState.OPEN else math.inf)
                continue
            await anyio.sleep_until(deadline)
            if self._reading_paused:
                core.reading_paused()
            core.tick(anyio.current_time())
            events = core.next_events()
            if events:
                self._dispatch_nowait(events)
            if core.outbound_size:
                self._kick()

    # --- routing events --------------------------------------------------------

    async def _dispatch(self, events: list[ev.Event]) -> None:
        channels = self._channels
        for event in events:
            if type(event) is ev.Delivery:
                channel = channels.get(event.channel_id)
                if channel is not None and not channel._deliver_nowait(event):
                    await channel._deliver_waiting(event)
            else:
                self._route(event)

    def _dispatch_nowait(self, events: list[ev.Event]) -> None:
        for event in events:
            if type(event) is not ev.Delivery:  # no consumer can take it now
                self._route(event)

    def _route(self, event: ev.Event) -> None:
        channel = self._channels.get(event.channel_id) if event.channel_id else None
        if isinstance(event, ev.RpcReply):
            if channel is not None:
                channel._on_reply(event)
        elif isinstance(event, ev.Confirmation):
            if channel is not None:
                channel._on_confirmation(event)
        elif isinstance(event, ev.Returned):
            if channel is not None:
                channel._on_return(event)
        elif isinstance(event, ev.ChannelOpened):
            if channel is not None:
                channel._on_opened()
        elif isinstance(event, ev.ChannelClosed):
            channel = self._channels.pop(event.channel_id, None)
            if channel is not None:
                channel._on_closed(event.error)
        elif isinstance(event, ev.ConsumerCancelled):
            if channel is not None:
                channel._on_consumer_cancelled(event.consumer_tag)
        elif isinstance(event, ev.ChannelFlow):
            if channel is not None:
                channel._on_flow(event.active)
        elif isinstance(event, ev.ConnectionOpened):
            self.server_properties = event.server_properties
            self._opened.set()
        elif isinstance(event, ev.ConnectionBlocked | ev.ConnectionUnblocked):
            self._notify_writable()
            self._observer.blocking(event)
        elif isinstance(event, ev.ConnectionTerminated):
            self.error = event.error
            self._observer.terminated(self, event.error, closing=self._closing)
            if self.retry_policy is not None and not self._closing and self._ready.is_set():
                self._ready = anyio.Event()  # until revived, or given up
            self._terminated.set()
            self._opened.set()
            self._hand_back(False)
            if self._wire is not None and self._wire.direct:
                cast(DirectWire, self._wire).interrupt()  # a leader, or the reader
            self._kick()
            self._notify_writable()
            self._writable.set()
            if self.retry_policy is None and not self._closing:
                self._end_body(event.error)  # after waking its waiters: they get the error


class Signal:
    """An event whose waiter may read the socket while it waits
    (:meth:`Connection._lead`): ``set()``, ``is_set()``, ``await wait()``.
    Setting it from another task interrupts its leader's wait on the
    socket, so that the waiter wakes as it would on a plain event."""

    __slots__ = ("_connection", "_event", "_wire")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._event = connection._ck.new_event()
        #: The wire its waiter is reading, while it leads.
        self._wire: DirectWire | None = None

    def set(self) -> None:
        self._event.set()
        connection = self._connection
        connection._woke = True
        wire = self._wire
        if wire is not None:
            wire.interrupt()  # no-op unless its leader waits on the socket

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    async def wait(self) -> None:
        await self._connection._wait_leading(self)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, anyio.EndOfStream):
        return "the broker closed the socket"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ is not None:
        text = f"{text} ({exc.__cause__})" if str(exc) else str(exc.__cause__)
    return text


if TYPE_CHECKING:
    _port: type[ConnectionPort] = Connection  # mypy: Connection implements the port
