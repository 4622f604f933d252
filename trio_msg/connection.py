"""Connections: one task group per connection owns the byte stream.

``async with trio_msg.connect(url) as conn:`` opens TCP (and TLS), runs the
handshake, and starts three tasks in the connection's own task group: the
**reader** and the **writer** of its pump (:mod:`trio_msg._pump`, which
decides when bytes are written and which task reads the socket), and the
**heartbeat** task, which calls the core's ``tick(now)`` when it is due.
The connection itself keeps the lifecycle (connecting, failover, closing,
revival), the channels, and the routing of the core's events: replies to
waiting callers, deliveries to consumers' buffers, confirms to publishes.

When the connection dies (socket error, heartbeat timeout, a close from the
broker) and will not come back, every task waiting on it gets the error,
the rest of the body of the owning ``async with`` is cancelled, and the
block raises it: one exception, never a bare ExceptionGroup.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec

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
    TrioMsgError,
    WrongProtocol,
)
from ._protocol.state import ConnectionState
from ._pump import Pump, Signal
from ._retry import RetryPolicy, is_revivable
from ._wire import Wire, make_wire
from .channel import Channel
from .errors import ConnectionFailed

if TYPE_CHECKING:
    from ._ports import ConnectionPort
    from .entity import Queue
    from .simple import SimpleBuffer, SimpleQueue

__all__ = ["Connection", "Signal", "connect"]

_P = ParamSpec("_P")

CLOSE_TIMEOUT = 5.0

_HANDSHAKE = (
    ConnectionState.AWAIT_START,
    ConnectionState.AWAIT_TUNE,
    ConnectionState.AWAIT_OPEN_OK,
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

    ``url`` is an AMQP URI (see :func:`trio_msg.parse_url`);
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
    new one by themselves.  Only connection failures are retried
    (:class:`~trio_msg.errors.ConnectionLost`,
    :class:`~trio_msg.errors.ConnectionForced`,
    :class:`~trio_msg.errors.InternalError`,
    :class:`~trio_msg.errors.ConnectionFailed`); a wrong password or a
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

    ``busy_poll`` (seconds, at most 0.01; 0, the default, never polls): on
    plain TCP, a task about to wait for the broker's answer polls the
    socket for that long, yielding to the event loop between tries, before
    it sleeps.  It trades CPU for latency: a confirmed publish or an RPC
    call can take half the time on a virtual machine, at the cost of up to
    ``busy_poll`` of CPU per wait.  Polling stops by itself while answers
    come slowly or waits time out, and starts again after a quick answer.
    See docs/guide.rst for its measured cost.

    Cancellation: a cancelled connect leaves nothing open.
    """
    params = parse_url(url, **options)
    policy = None if revive is False else RetryPolicy.coerce(None if revive is True else revive)
    conn = Connection(params, retry_policy=policy)
    body_error: BaseException | None = None
    error: BaseException | None = None
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
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                conn._body = None
                # Shielded: aclose() ends with a checkpoint, whose Cancelled
                # (the caller's scope may be cancelled) would replace the
                # body's exception and then be swallowed by the group.
                with anyio.CancelScope(shield=True):
                    await conn.aclose()
                conn._stop_tasks()
    except BaseExceptionGroup as group:
        error = _unwrap(group, body_error)
    # Raised here, outside the handler, so that the group does not become
    # its context.  The body's own exception goes as it came (its cause and
    # context included); the loss keeps its own cause.
    if error is body_error and error is not None:
        raise error
    if error is not None:
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


#: What the loss of a connection reaches the body's tasks as.
_LOSSES = (ConnectionLost, ConnectionClosed, ConnectionFailed)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _unwrap(group: BaseExceptionGroup[BaseException], body: BaseException | None) -> BaseException:
    """One clear exception out of the connection's task group's.

    The body's own exception, unchanged (an exception group of its own
    included), when it holds anything besides the connection's loss and
    cancellations.  Otherwise it is the loss, reaching the body's tasks
    (several waiters, a task group of the body's cancelled around it): the
    first leaf that is not a cancellation (there is at most one loss per
    connection), not a group."""
    cancelled = anyio.get_cancelled_exc_class()
    if body is not None and any(
        not isinstance(leaf, (cancelled, *_LOSSES)) for leaf in _leaves(body)
    ):
        return body
    leaves = _leaves(group)
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
        self._supervisor_scope: anyio.CancelScope | None = None
        self._supervisor_done = anyio.Event()
        #: The scope of the ``async with connect()`` body, while it runs.
        self._body: anyio.CancelScope | None = None
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
        #: The reader waits for room in a consumer's buffer (not reading).
        self._reading_paused = False
        old = getattr(self, "_pump", None)
        if old is not None:
            old.retire()
        #: When bytes are written and who reads the socket (see :mod:`trio_msg._pump`).
        self._pump = Pump(
            self._core,
            self._ck,
            self._terminated,
            busy_poll=params.busy_poll,
            route=self._route_nowait,
            dispatch=self._dispatch,
            lost=self._lost,
        )

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
                    self._spawn(tg, serve, "_broker")
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
                assert self._wire is not None
                pump = self._pump
                pump.start(self._wire)
                self._core.initiate()
                self._spawn(tg, pump.reader, "_reader")
                self._spawn(tg, pump.writer, "_writer")
                self._spawn(tg, self._heartbeat)
                pump.send(urgent=True)
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

    def _spawn(
        self, tg: anyio.abc.TaskGroup, fn: Callable[[], Awaitable[None]], name: str = ""
    ) -> None:
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
        tg.start_soon(run, name=f"trio_msg.{name or getattr(fn, '__name__', 'task')}")

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

    def _give_up(self, error: TrioMsgError) -> None:
        self._observer.gave_up(error)
        self._fatal = error
        if self.error is None:
            self.error = error
        self._ready.set()
        self._pump.stop()
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
        self._pump.send(urgent=True)
        await channel._wait_open()
        return channel

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        """``async with connection.channel() as ch``: a channel closed on exit."""
        ch = await self.open_channel()
        async with ch:  # (Channel.__aexit__: an exception on its way out stays)
            yield ch

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
                self._pump.send(urgent=True)
                with anyio.move_on_after(self.close_timeout):
                    await self._pump.wait(self._terminated)  # the close-ok
            if not self._terminated.is_set():
                self._core.connection_lost(None)
                self._dispatch_nowait(self._core.next_events())
            await self._pump.drain(1.0)
            if self._stream is not None:
                with anyio.move_on_after(1):
                    await self._close_stream()
            # Only the connection's own tasks: the body of ``async with
            # connect()`` (in the same task group) goes on after aclose().
            self._stop_incarnation()
            self._ready.set()
            self._observer.closed(self)
        await checkpoint()

    # --- writing and reading: the pump ------------------------------------------

    def _new_signal(self) -> Signal:
        """An event a task waits on for what the broker sends (see
        :meth:`trio_msg._pump.Pump.wait`)."""
        return self._pump.signal()

    def _must_wait(self) -> bool:
        return not self._pump.room() or self.error is not None

    async def _wait_writable(self) -> None:
        """Back-pressure: wait while the outbound buffer is over its mark or
        the broker blocks us.  Raises the connection's error if it dies."""
        while self._must_wait():
            if self.error is not None:
                raise self.error
            await self._pump.wait_room()

    def _route_nowait(self, events: list[ev.Event]) -> list[ev.Event] | None:
        """Route *events* that can be without waiting; the rest, from the
        first delivery whose consumer's buffer is full, is returned (the
        pump's reader awaits :meth:`_dispatch` for them)."""
        channels = self._channels
        for i, event in enumerate(events):
            if type(event) is ev.Delivery:
                channel = channels.get(event.channel_id)
                if channel is not None and not channel._deliver_nowait(event):
                    return events[i:]
            else:
                self._route(event)
        return None

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
                self._pump.send(urgent=True)

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
            self._pump.room_changed()
            self._observer.blocking(event)
        elif isinstance(event, ev.ConnectionTerminated):
            self.error = event.error
            self._observer.terminated(self, event.error, closing=self._closing)
            if self.retry_policy is not None and not self._closing and self._ready.is_set():
                self._ready = anyio.Event()  # until revived, or given up
            self._terminated.set()
            self._opened.set()
            self._pump.stop()
            if self.retry_policy is None and not self._closing:
                self._end_body(event.error)  # after waking its waiters: they get the error


def _describe(exc: BaseException) -> str:
    if isinstance(exc, anyio.EndOfStream):
        return "the broker closed the socket"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ is not None:
        text = f"{text} ({exc.__cause__})" if str(exc) else str(exc.__cause__)
    return text


if TYPE_CHECKING:
    _port: type[ConnectionPort] = Connection  # mypy: Connection implements the port
