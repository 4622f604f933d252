"""A long-running consumer: kombu's ``ConsumerMixin`` on trio's terms.

::

    async def handle(message: trio_msg.Message) -> None:
        await do_the_work(message.payload)      # acked when it returns

    async with trio_msg.connect(url, revive=True) as conn:
        worker = trio_msg.Worker(conn, [queue], handle, concurrency=8)
        await worker.run(handle_signals=True)   # until SIGINT / SIGTERM

:class:`Worker` consumes from its queues and runs the handler on each
message, at most ``concurrency`` at a time (in as many long-lived tasks,
not a task per message), within a prefetch window of ``prefetch_count``.
It settles each message by how its handler ended (as
:meth:`Message.process <trio_msg.Message.process>` does), logs what an
operator needs on the ``trio_msg.worker`` logger, and stops gracefully: no
new message is started, the handlers in flight finish (for up to
``grace_period`` seconds, then they are cancelled and their messages go
back to the queue), and the messages delivered ahead and not started go
back to the queue.  See docs/worker.rst.
"""

from __future__ import annotations

import inspect
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint

from .connection import Connection
from .entity import Queue
from .errors import TrioMsgError
from .message import Message, MessageState
from .messaging import Consumer, Producer

__all__ = ["Worker"]

logger = logging.getLogger("trio_msg.worker")

Handler = Callable[[Message], Awaitable[Any] | Any]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: What became of a message whose handler raised, for the log.
_OUTCOMES = {
    MessageState.REJECTED: "rejected",
    MessageState.REQUEUED: "requeued",
    MessageState.ACK: "it was acked before the handler raised",
    MessageState.RECEIVED: "not settled: its channel is closed, and the broker redelivers it",
}


class Worker:
    """Consume from ``queues`` and run ``handler(message)`` on each message.

    Args:
        connection: The connection to consume on (its own channel).  On a
            reviving connection (``connect(url, revive=True)``) the worker
            consumes again by itself after a connection loss; messages in
            flight then are redelivered by the broker.
        queues: The queues to consume from, declared once when the worker
            starts (kombu's ``get_consumers``).
        handler: An async (or plain) function taking the
            :class:`~trio_msg.Message`.  When it returns, the message is
            acked unless the handler settled it itself; when it raises an
            exception, the error is logged (with its traceback, the
            delivery tag and routing key -- never the body) and the
            message is rejected: back to its queue with
            ``requeue_on_error=True``, otherwise dropped or dead-lettered.
            A plain function runs in the worker's task: blocking work
            belongs in ``anyio.to_thread.run_sync``.
        concurrency: How many handlers may run at once (at least 1).
        prefetch_count: How many unacknowledged messages the broker may
            deliver to each of the worker's consumers; at least
            ``concurrency`` (its default).  Messages delivered ahead wait
            in the consumer's buffer and go back to the queue on shutdown.
        accept: The content types the handler may decode (the consumer's
            accept list).
        requeue_on_error: Requeue (instead of reject) a message whose
            handler raised.  A message that fails every time then comes
            back for ever: prefer a dead-letter exchange.
        grace_period: How long a shutdown waits for the handlers in flight
            before cancelling them (seconds; ``math.inf``: for as long as
            they take).
        producer_connection: The connection :attr:`producer` publishes on
            (kombu's ``ConsumerProducerMixin``).  Another connection than
            ``connection`` is best: when the broker blocks a connection
            that publishes (a resource alarm), it stops reading from it,
            and the worker's acks would wait too.  By default the producer
            uses ``connection``.

    Attributes ``handled`` (handlers that returned), ``failed`` (that
    raised), ``cancelled`` (cut short at shutdown; their messages were
    requeued), ``in_flight`` and ``max_in_flight`` count the work done.
    """

    def __init__(
        self,
        connection: Connection,
        queues: Queue | Iterable[Queue],
        handler: Handler,
        *,
        concurrency: int = 1,
        prefetch_count: int | None = None,
        accept: Iterable[str] | None = None,
        requeue_on_error: bool = False,
        grace_period: float = 30.0,
        producer_connection: Connection | None = None,
    ) -> None:
        if not isinstance(connection, Connection):
            raise TypeError(f"expected a trio_msg Connection, not {type(connection).__name__}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if prefetch_count is None:
            prefetch_count = concurrency
        elif prefetch_count < concurrency:
            raise ValueError(
                f"prefetch_count ({prefetch_count}) must be at least concurrency "
                f"({concurrency}): the broker would never deliver enough messages "
                "to keep every handler busy"
            )
        if grace_period < 0:
            raise ValueError(f"grace_period must not be negative, not {grace_period}")
        self.connection = connection
        self.queues = [queues] if isinstance(queues, Queue) else list(queues)
        if not self.queues:
            raise ValueError("a Worker needs at least one queue")
        self.handler = handler
        self.concurrency = concurrency
        self.prefetch_count = prefetch_count
        self.accept = accept
        self.requeue_on_error = requeue_on_error
        self.grace_period = grace_period
        self.producer_connection = producer_connection
        self.handled = 0
        self.failed = 0
        self.cancelled = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._producer: Producer | None = None
        self._running = False
        self._stopping = False
        self._stop = anyio.Event()
        self._hurry = anyio.Event()
        self._idle = anyio.Event()
        self._read_scopes: set[anyio.CancelScope] = set()
        self._handler_scopes: set[anyio.CancelScope] = set()
        self._read_lock = anyio.Lock()
        self._error: BaseException | None = None
        self._incarnation = 0

    def __repr__(self) -> str:
        names = ", ".join(q.name for q in self.queues)
        return f"<trio_msg.Worker queues=[{names}] concurrency={self.concurrency}>"

    @property
    def producer(self) -> Producer:
        """A :class:`~trio_msg.Producer` for the handlers (on
        ``producer_connection``, or on the worker's connection), open while
        :meth:`run` runs."""
        if self._producer is None:
            raise RuntimeError("the worker's producer exists only while the worker runs")
        return self._producer

    def shutdown(self) -> None:
        """Start a graceful shutdown: :meth:`run` stops taking messages,
        lets the handlers in flight finish (up to ``grace_period``) and
        returns.  Idempotent; may be called from a handler.  A second call
        while the worker is shutting down does not shorten the grace
        period (a second signal does)."""
        self._stop.set()

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Consume until :meth:`shutdown` (or a signal, or cancellation),
        then shut down gracefully and return.

        ``handle_signals=True`` turns SIGINT and SIGTERM into a graceful
        shutdown (a second one cancels the handlers still running at once);
        it works in the main thread only.  With ``nursery.start(worker.run)``
        the caller resumes once the worker consumes.

        Raises the error that ended consuming when it was not a shutdown
        (the broker cancelled the consumer because a queue was deleted, or
        the connection was lost and does not revive), after the same
        graceful shutdown.

        A worker runs once: a second call raises :exc:`RuntimeError`.

        Cancellation: a graceful shutdown too -- shielded, and bounded by
        ``grace_period`` (plus the connection's close timeout): the
        handlers in flight finish, the rest go back to the queue; then the
        cancellation is delivered.
        """
        if self._running:
            raise RuntimeError(f"{self!r} is running already")
        self._running = True
        async with AsyncExitStack() as stack:
            consumer = await stack.enter_async_context(
                Consumer(
                    self.connection,
                    self.queues,
                    accept=self.accept,
                    prefetch_count=self.prefetch_count,
                )
            )
            self._producer = await stack.enter_async_context(
                Producer(self.producer_connection or self.connection)
            )
            self._incarnation = self.connection.incarnation
            logger.info(
                "worker consuming from %s (concurrency %d, prefetch %d)",
                ", ".join(repr(q.name) for q in self.queues),
                self.concurrency,
                self.prefetch_count,
            )
            # Opened here, not in the watcher task: a failure (not the main
            # thread) is raised as it is, and the signals are ours once the
            # caller hears the worker started.
            signals = (
                stack.enter_context(anyio.open_signal_receiver(*_SIGNALS))
                if handle_signals
                else None
            )
            task_status.started()
            try:
                async with anyio.create_task_group() as tg:
                    if signals is not None:
                        tg.start_soon(self._watch_signals, signals)
                    for _ in range(self.concurrency):
                        tg.start_soon(self._work, consumer)
                    try:
                        await self._stop.wait()
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self._wind_down(consumer, tg)
            finally:
                buffered = consumer._receive
                returned = 0 if buffered is None else len(buffered)
                self._producer = None
                logger.info(
                    "worker stopped: %d handled, %d failed, %d cut short and requeued, "
                    "%d received ahead and not started returned to the queue",
                    self.handled,
                    self.failed,
                    self.cancelled,
                    returned,
                )
        if self._error is not None:
            raise self._error

    # --- internals -------------------------------------------------------------

    def _begin_stop(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop.set()
        logger.info(
            "worker shutting down (%s): %d handler(s) in flight, taking no new messages",
            reason,
            self.in_flight,
        )
        for scope in self._read_scopes:
            scope.cancel()

    async def _wind_down(self, consumer: Consumer, tg: anyio.abc.TaskGroup) -> None:
        """Stop intake, wait for the handlers (bounded), cancel the rest.
        Runs shielded."""
        if self._error is not None:
            reason = f"{type(self._error).__name__}"
        elif self._stop.is_set():
            reason = "shutdown() called"
        else:
            reason = "cancelled"
        self._begin_stop(reason)
        try:
            # The broker sends no more; what it sent meanwhile is requeued.
            with anyio.move_on_after(self.connection.close_timeout):
                await consumer.cancel()
        except TrioMsgError:
            pass  # the channel is gone: the broker requeues everything anyway
        if self.in_flight:
            with anyio.move_on_after(self.grace_period):
                async with anyio.create_task_group() as waiters:

                    async def idle() -> None:
                        await self._idle.wait()
                        waiters.cancel_scope.cancel()

                    async def hurry() -> None:
                        await self._hurry.wait()
                        waiters.cancel_scope.cancel()

                    waiters.start_soon(idle)
                    waiters.start_soon(hurry)
        if self.in_flight:
            logger.warning(
                "worker: %d handler(s) still running %s: cancelling them; "
                "their messages go back to the queue",
                self.in_flight,
                "after a second signal" if self._hurry.is_set() else "after the grace period",
            )
            for scope in self._handler_scopes:
                scope.cancel()
        tg.cancel_scope.cancel()  # the signal watcher, and any reader left

    async def _watch_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not self._stopping:
                logger.info(
                    "worker received %s: stopping gracefully (a second signal cancels "
                    "the handlers)",
                    name,
                )
                self._begin_stop(name)
            else:
                logger.info("worker received %s: a second signal", name)
                self._hurry.set()

    async def _work(self, consumer: Consumer) -> None:
        """One of ``concurrency`` tasks: take a message, handle it, repeat.
        A task takes a message only when it is free to handle it, so at
        most ``concurrency`` are in flight and the rest wait in the
        consumer's buffer (returned to the queue on shutdown)."""
        while True:
            message: Message | None = None
            with anyio.CancelScope() as scope:
                self._read_scopes.add(scope)
                try:
                    if self._stopping:
                        return
                    async with self._read_lock:
                        message = await consumer.__anext__()
                except StopAsyncIteration:
                    if not self._stopping:
                        logger.warning("worker: the consumer ended; shutting down")
                        self._begin_stop("the consumer ended")
                    return
                except TrioMsgError as exc:
                    if self._error is None and not self._stopping:
                        self._error = exc
                        logger.error("worker: consuming failed: %s", exc)
                        self._begin_stop(type(exc).__name__)
                    return
                finally:
                    self._read_scopes.discard(scope)
            if message is None:
                return
            await self._handle(message)

    async def _handle(self, message: Message) -> None:
        if self.connection.incarnation != self._incarnation:
            self._incarnation = self.connection.incarnation
            logger.info(
                "worker consuming again on the revived connection (incarnation %d)",
                self._incarnation,
            )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self._idle.is_set():
            self._idle = anyio.Event()
        # Shielded: cancelling run() is a graceful shutdown, which lets this
        # handler finish; only the grace period's end cancels it (scope.cancel).
        with anyio.CancelScope(shield=True) as scope:
            self._handler_scopes.add(scope)
            done = False
            try:
                async with message.process(requeue=self.requeue_on_error, ignore_processed=True):
                    result = self.handler(message)
                    if inspect.isawaitable(result):
                        await result
                    done = True
            except Exception as exc:
                if done:
                    # The handler's work is done but the ack could not be sent
                    # (the channel closed): the broker will deliver it again.
                    self.handled += 1
                    logger.warning(
                        "worker: message %d handled but not acked (%s): it will be redelivered",
                        message.delivery_tag,
                        exc,
                    )
                else:
                    self.failed += 1
                    logger.error(
                        "worker: handler failed on message %d (routing key %r, redelivered %s); %s",
                        message.delivery_tag,
                        message.routing_key,
                        message.redelivered,
                        _OUTCOMES[message.state],
                        exc_info=exc,
                    )
            else:
                self.handled += 1
            finally:
                self._handler_scopes.discard(scope)
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()
        if scope.cancelled_caught:
            self.cancelled += 1
        await checkpoint()
