"""Channels: the AMQP operations, as cancellable async methods.

A :class:`Channel` wraps one channel of the sans-IO core.  Its methods queue
frames in the core synchronously (so a request is either wholly queued or not
at all), wake the connection's single writer, and wait for the reply that the
connection's reader routes back.

Cancellation, for every request method here: if the caller is cancelled
before the request was queued, nothing was sent.  If it is cancelled while
waiting for the reply, the request may or may not have reached the broker;
its reply is discarded when it comes, and the channel stays usable.  (An
abandoned ``basic.consume`` is cancelled on the broker as soon as it is
confirmed; an abandoned ``basic.get`` has its message requeued.)
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import anyio
from anyio.lowlevel import checkpoint

from ._lowlevel import closing_scope
from ._protocol import events as ev
from ._protocol.connection import AMQPChannel
from ._protocol.errors import (
    ChannelClosed,
    ChannelNotOpen,
    ConnectionClosed,
    NotFound,
    TrioMsgError,
)
from ._protocol.frames import EMPTY_PROPERTIES, BasicProperties
from .errors import ConsumerCancelled, NotSupported

if TYPE_CHECKING:
    from ._ports import ChannelPort
    from .connection import Connection, Signal
    from .message import Message

__all__ = ["Channel", "PublishResult", "QueueDeclareOk"]

#: ``basic.publish``'s (class id, method id): a channel.close naming it was
#: caused by a publish.
_BASIC_PUBLISH = (60, 40)
#: RabbitMQ's text for a publish to a missing exchange (the exchange's name
#: may itself hold quotes: the shortest name that makes the text whole wins).
_NO_EXCHANGE = re.compile(r"no exchange '(.*?)'(?: in vhost '.*')?\Z", re.DOTALL)


class QueueDeclareOk(NamedTuple):
    """The broker's answer to ``queue.declare``."""

    queue: str
    message_count: int
    consumer_count: int


def channel_error(error: BaseException | None) -> bool:
    """Whether *error* is a broker's ``channel.close`` of one channel (a 404,
    406, ... over one operation), not the end of the connection or a close
    the client asked for."""
    return (
        isinstance(error, ChannelClosed)
        and error.by_peer
        and not isinstance(error, ConnectionClosed | ChannelNotOpen)
    )


def _refused_by(
    error: TrioMsgError | None, pending: Sequence[PublishResult]
) -> list[PublishResult]:
    """Which of the *pending* publishes the broker refused by closing the
    channel with *error*: it names ``basic.publish``, and either one publish
    was unconfirmed (then it is that one) or the error is a 404 naming the
    missing exchange (then it is every publish to that exchange; if the
    exchange was deleted while publishes to it were in flight, the earlier
    of them may have been routed before it went)."""
    if not channel_error(error) or not pending:
        return []
    assert isinstance(error, ChannelClosed)
    if (error.class_id, error.method_id) != _BASIC_PUBLISH:
        return []
    if len(pending) == 1:
        return list(pending)
    if isinstance(error, NotFound):
        # RabbitMQ: "NOT_FOUND - no exchange 'name' in vhost '/'"
        match = _NO_EXCHANGE.search(error.reply_text)
        if match is not None:
            return [result for result in pending if result.exchange == match.group(1)]
    return []


class DeliverySink(Protocol):
    """Where a consumer's deliveries go: what the reader calls on it.  An
    anyio memory object send stream is one; a Consumer's is a
    :class:`trio_msg._buffer.BufferSender`."""

    def send_nowait(self, item: Any, /) -> None: ...

    async def send(self, item: Any, /) -> None: ...

    def close(self) -> None: ...


class _Waiter:
    __slots__ = ("error", "event", "reply", "sink")

    def __init__(self, event: Signal, sink: DeliverySink | None = None) -> None:
        #: A Signal: the caller may read its reply off the socket itself.
        self.event = event
        self.reply: ev.RpcReply | None = None
        self.error: BaseException | None = None
        self.sink = sink


class PublishResult:
    """The outcome of one publish on a channel in confirm mode.

    ``outcome`` is ``None`` until the broker answers, then one of
    :class:`~trio_msg.Outcome`'s ACK, NACK or UNKNOWN (the channel or
    connection went away first).  ``returned`` holds the returned message
    when a ``mandatory`` publish could not be routed (it comes before the
    ack).  ``reason`` says why an UNKNOWN outcome is unknown: the error that
    closed the channel (or the connection).  A publish the broker refused by
    closing the channel over it (a 404 for a missing exchange) is NACK, with
    that error as its ``reason``.
    """

    __slots__ = (
        "_connection",
        "_event",
        "_innocent",
        "delivery_tag",
        "exchange",
        "outcome",
        "reason",
        "returned",
    )
    _innocent: bool  # set only for an UNKNOWN bystander (see bystander)

    def __init__(
        self, delivery_tag: int, connection: Connection | None = None, exchange: str = ""
    ) -> None:
        self._connection = connection
        self.delivery_tag = delivery_tag
        #: The exchange the message was published to.
        self.exchange = exchange
        self.outcome: ev.Outcome | None = None
        self.returned: ev.Returned | None = None
        self.reason: TrioMsgError | None = None
        self._event: Signal | anyio.Event | None = None

    def __repr__(self) -> str:
        state = self.outcome.value if self.outcome else "pending"
        return f"<PublishResult #{self.delivery_tag} {state}{' returned' if self.returned else ''}>"

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def bystander(self) -> bool:
        """UNKNOWN because the broker closed the channel over another
        operation, not over this publish: publishing it again on a new
        channel cannot meet the same refusal.  (The slot is set only then,
        so a publish pays nothing for it.)

        :meta private:
        """
        return bool(getattr(self, "_innocent", False))

    def _resolve(self, outcome: ev.Outcome) -> None:
        self.outcome = outcome
        if self._event is not None:
            self._event.set()

    async def wait(self) -> ev.Outcome:
        """Wait for the broker's answer and return it.

        Cancellation: stops waiting; the publish was sent, its outcome is
        still recorded here when it comes.
        """
        if self.outcome is None:
            connection = self._connection
            if self._event is None:
                # A Signal: the wait may read the confirm off the socket itself.
                self._event = anyio.Event() if connection is None else connection._new_signal()
            await self._event.wait()  # (a Signal's wait writes the corked publish first)
        else:
            await checkpoint()
        assert self.outcome is not None
        return self.outcome


class Channel:
    """One AMQP channel.  Get one with ``async with connection.channel() as ch``.

    Leaving the ``async with`` closes the channel (bounded in time, even when
    cancelled); unacknowledged messages delivered on it are then redelivered
    by the broker.
    """

    def __init__(self, connection: Connection, core: AMQPChannel) -> None:
        self.connection = connection
        self._core = core
        #: Where the channel's frames are written from (the connection's
        #: incarnation's; a channel does not outlive it).
        self._pump = connection._pump
        self.channel_id = core.id
        self._waiters: dict[int, _Waiter] = {}
        self._publishes: dict[int, PublishResult] = {}
        self._sinks: dict[str, DeliverySink] = {}
        self._consumer_errors: dict[str, Callable[[TrioMsgError], None]] = {}
        # Signals: a task waiting for the open-ok or close-ok may read it
        # off the socket itself (see Pump._lead).
        self._opened = connection._new_signal()
        self._closed = connection._new_signal()
        self._flow = anyio.Event()
        self._flow.set()
        #: The smallest ``basic.qos`` prefetch count sent (0: none): a
        #: quarter of it is how many acks the pump corks before the
        #: broker's window needs them.
        self._prefetch = 0
        self.error: TrioMsgError | None = None
        #: The closing error reached (or will reach) a caller: one whose
        #: request or publish was pending on the channel, or its consumer.
        #: A Producer or Consumer that owns the channel raises an error no
        #: one was told of on its next operation before it opens a new one.
        self._error_told = False
        #: Returns that could not be paired with a publish (the channel is not
        #: in confirm mode), oldest first; bounded to the last 1000.
        self.returns: deque[ev.Returned] = deque(maxlen=1000)
        self.on_return: Callable[[ev.Returned], None] | None = None
        #: The connection's message counters (``Connection.statistics()``).
        self._counts = connection._observer.counts
        #: The queue of each consumer tag, for the log line of a server-sent cancel.
        self._consumer_queues: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<trio_msg.Channel {self.channel_id} {self._core.state.value}>"

    # --- lifecycle ---------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._core.is_open and self.error is None

    @property
    def confirming(self) -> bool:
        """Whether publisher confirms are on."""
        return self._core.confirming

    async def __aenter__(self) -> Channel:
        await checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with closing_scope(exc_type):
            await self.aclose()

    async def _wait_open(self) -> None:
        try:
            await self._opened.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        """Close the channel and wait (at most a few seconds) for the broker
        to confirm.  Idempotent.  Cancellation: the close still happens
        (shielded and bounded); then the cancellation is delivered."""
        if not self._closed.is_set() and self.error is None:
            self._core.close()
            self._pump.send(urgent=True)
            timeout = self.connection.close_timeout
            with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
                await self._closed.wait()
            if not self._closed.is_set():
                # No close-ok in time: the channel is closed for us all the
                # same, and whatever waits on it is told so.
                self._on_closed(
                    ChannelNotOpen(
                        f"channel {self.channel_id} is closed (the broker did not confirm "
                        f"its close within {timeout} s)"
                    )
                )
        await checkpoint()

    def _check(self) -> None:
        if self.error is not None:
            self._error_told = True
            raise self.error
        if self.connection.error is not None:
            raise self.connection.error
        if not self._core.is_open:
            raise ChannelNotOpen(f"channel {self.channel_id} is {self._core.state.value.lower()}")

    # --- events routed here by the connection's reader -----------------------

    def _on_opened(self) -> None:
        self.connection._observer.channel_opened(self.channel_id)
        self._opened.set()

    def _on_reply(self, event: ev.RpcReply) -> None:
        waiter = self._waiters.pop(event.token, None)
        if waiter is None:
            return
        if waiter.sink is not None and event.name == "basic.consume-ok":
            self._sinks[event.fields["consumer_tag"]] = waiter.sink
        waiter.reply = event
        waiter.event.set()

    def _deliver_nowait(self, event: ev.Delivery) -> bool:
        """Hand a delivery to its consumer's buffer; ``False`` if the buffer
        is full (then the reader awaits :meth:`_deliver_waiting`).  Synchronous,
        so the reader pays no coroutine per message."""
        sink = self._sinks.get(event.consumer_tag)
        if sink is None:
            # A consumer that is being cancelled: give the message back.
            self.give_back(event.delivery_tag)
        else:
            try:
                sink.send_nowait(event)
            except anyio.WouldBlock:
                return False  # (counted by _deliver_waiting)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop_consumer(event.consumer_tag, event.delivery_tag)
        self._counts.delivered += 1
        return True

    async def _deliver_waiting(self, event: ev.Delivery) -> None:
        """The consumer is behind: stop reading the socket until it catches
        up (TCP back-pressure, see the Consumer's docs).  Meanwhile the
        broker's heartbeats sit unread, and the heartbeat task must not take
        that silence for a dead peer."""
        self._counts.delivered += 1
        sink = self._sinks.get(event.consumer_tag)
        if sink is None:
            self.give_back(event.delivery_tag)
            return
        connection = self.connection
        connection._reading_paused = True
        try:
            await sink.send(event)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._drop_consumer(event.consumer_tag, event.delivery_tag)
        finally:
            connection._reading_paused = False

    def _drop_consumer(self, consumer_tag: str, delivery_tag: int) -> None:
        self._sinks.pop(consumer_tag, None)
        self.give_back(delivery_tag)

    def give_back(self, delivery_tag: int) -> None:
        """Requeue a delivery nobody will take, if it can still be settled
        (a closing channel's messages go back to the queue by themselves).

        :meta private:
        """
        if self._core.is_open and self._core.is_unsettled(delivery_tag):
            self._core.reject(delivery_tag, requeue=True)
            self._counts.rejected += 1
            self._pump.send(urgent=True)

    def _on_confirmation(self, event: ev.Confirmation) -> None:
        publishes = self._publishes
        if event.outcome is ev.Outcome.UNKNOWN:
            # UNKNOWN comes only as the channel closes: say why.
            pending = [r for tag in event.delivery_tags if (r := publishes.pop(tag, None))]
            self._resolve_closed(pending, self._core.error)
            return
        if event.outcome is ev.Outcome.ACK:
            self._counts.confirmed += len(event.delivery_tags)
        else:
            self._counts.nacked += len(event.delivery_tags)
        for tag in event.delivery_tags:
            result = publishes.pop(tag, None)
            if result is not None:
                result.reason = None
                result._resolve(event.outcome)

    def _resolve_closed(self, pending: list[PublishResult], error: TrioMsgError | None) -> None:
        """The channel closed with publishes unconfirmed: the ones the broker
        refused (closing the channel over them) are NACK with the error as
        their reason, the others UNKNOWN."""
        if not pending:
            return
        self._error_told = True  # each of them carries the error to its caller
        refused = set(_refused_by(error, pending))
        # Closed over something other than a publish, or over publishes we
        # could tell: the others were bystanders, safe to publish again.
        bystanders = channel_error(error) and (
            bool(refused)
            or (getattr(error, "class_id", 0), getattr(error, "method_id", 0)) != _BASIC_PUBLISH
        )
        counts = self._counts
        for result in pending:
            result.reason = error
            if result in refused:
                counts.nacked += 1
                result._resolve(ev.Outcome.NACK)
            else:
                counts.unknown += 1
                if bystanders:
                    result._innocent = True
                result._resolve(ev.Outcome.UNKNOWN)

    def _on_return(self, event: ev.Returned) -> None:
        self._counts.returned += 1
        if event.publish_tag is not None:
            result = self._publishes.get(event.publish_tag)
            if result is not None:
                result.returned = event
                return
        if self.on_return is not None:
            self.on_return(event)
        else:
            self.returns.append(event)

    def _on_consumer_cancelled(self, consumer_tag: str) -> None:
        self.connection._observer.consumer_cancelled(
            self.channel_id, consumer_tag, self._consumer_queues.pop(consumer_tag, None)
        )
        sink = self._sinks.pop(consumer_tag, None)
        notify = self._consumer_errors.pop(consumer_tag, None)
        if notify is not None:
            notify(
                ConsumerCancelled(
                    f"the broker cancelled consumer {consumer_tag!r} (queue deleted?)"
                )
            )
        if sink is not None:
            sink.close()

    def _on_flow(self, active: bool) -> None:
        self.connection._observer.channel_flow(self.channel_id, active)
        if active:
            self._flow.set()
        elif self._flow.is_set():
            self._flow = anyio.Event()

    def _on_closed(self, error: TrioMsgError) -> None:
        if self._closed.is_set():
            return  # closed here already (a close that timed out)
        self.connection._observer.channel_closed(self.channel_id, error)
        self.error = error
        if self._waiters or self._consumer_errors:
            self._error_told = True
        for waiter in self._waiters.values():
            waiter.error = error
            waiter.event.set()
        self._waiters.clear()
        pending = list(self._publishes.values())
        self._publishes.clear()
        self._resolve_closed(pending, error)
        for notify in self._consumer_errors.values():
            notify(error)
        self._consumer_errors.clear()
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()
        self._flow.set()
        self._opened.set()
        self._closed.set()

    # --- requests ------------------------------------------------------------

    async def _call(
        self, issue: Callable[[AMQPChannel], int], sink: DeliverySink | None = None
    ) -> ev.RpcReply:
        await checkpoint()
        self._check()
        token = issue(self._core)
        waiter = _Waiter(self.connection._new_signal(), sink)
        self._waiters[token] = waiter
        self._pump.send(urgent=True)
        try:
            await waiter.event.wait()
        except BaseException:
            if self._waiters.pop(token, None) is not None and self._core.is_open:
                self._core.abandon(token)
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.reply is not None
        return waiter.reply

    async def exchange_declare(
        self,
        exchange: str,
        type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """``exchange.declare``.  A mismatch with an existing exchange closes
        the channel with :class:`~trio_msg.errors.PreconditionFailed`;
        ``passive=True`` on a missing one with :class:`~trio_msg.errors.NotFound`."""
        await self._call(
            lambda c: c.exchange_declare(
                exchange,
                type,
                passive=passive,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                arguments=arguments,
            )
        )

    async def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> None:
        """``exchange.delete``."""
        await self._call(lambda c: c.exchange_delete(exchange, if_unused=if_unused))

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """``exchange.bind`` (exchange-to-exchange, a RabbitMQ extension)."""
        await self._call(lambda c: c.exchange_bind(destination, source, routing_key, arguments))

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """``exchange.unbind``."""
        await self._call(lambda c: c.exchange_unbind(destination, source, routing_key, arguments))

    async def queue_declare(
        self,
        queue: str = "",
        *,
        passive: bool = False,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> QueueDeclareOk:
        """``queue.declare``; ``queue=""`` lets the broker name it."""
        reply = await self._call(
            lambda c: c.queue_declare(
                queue,
                passive=passive,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments,
            )
        )
        f = reply.fields
        return QueueDeclareOk(f["queue"], f["message_count"], f["consumer_count"])

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """``queue.bind``."""
        await self._call(lambda c: c.queue_bind(queue, exchange, routing_key, arguments))

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """``queue.unbind``."""
        await self._call(lambda c: c.queue_unbind(queue, exchange, routing_key, arguments))

    async def queue_purge(self, queue: str) -> int:
        """``queue.purge``: delete every ready message; returns how many."""
        reply = await self._call(lambda c: c.queue_purge(queue))
        return int(reply.fields["message_count"])

    async def queue_delete(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """``queue.delete``; returns how many messages went with it."""
        reply = await self._call(
            lambda c: c.queue_delete(queue, if_unused=if_unused, if_empty=if_empty)
        )
        return int(reply.fields["message_count"])

    async def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, global_: bool = False
    ) -> None:
        """``basic.qos``.  RabbitMQ does not implement ``prefetch_size``: a
        non-zero value raises :class:`~trio_msg.errors.NotSupported` locally."""
        if prefetch_size:
            await checkpoint()  # a checkpoint even when refusing locally
            raise NotSupported("RabbitMQ does not implement prefetch_size; use prefetch_count")
        if prefetch_count:
            # The smallest window the broker may apply on this channel (an
            # earlier per-consumer or global limit stays): set before the
            # request, so that a cancelled one errs toward writing sooner.
            self._prefetch = min(self._prefetch or prefetch_count, prefetch_count)
        await self._call(lambda c: c.basic_qos(prefetch_size, prefetch_count, global_))

    async def basic_recover(self, requeue: bool = True) -> None:
        """``basic.recover``: redeliver unacknowledged messages.  RabbitMQ
        only implements ``requeue=True``; ``False`` raises NotSupported."""
        if not requeue:
            await checkpoint()  # a checkpoint even when refusing locally
            raise NotSupported("RabbitMQ does not implement basic.recover with requeue=False")
        await self._call(lambda c: c.basic_recover(requeue))

    async def confirm_select(self) -> None:
        """Turn publisher confirms on (idempotent)."""
        if self._core.confirming:
            await checkpoint()
            return
        await self._call(lambda c: c.confirm_select())

    async def tx_select(self) -> None:
        """Make the channel transactional."""
        await self._call(lambda c: c.tx_select())

    async def tx_commit(self) -> None:
        """Commit the current transaction."""
        await self._call(lambda c: c.tx_commit())

    async def tx_rollback(self) -> None:
        """Roll the current transaction back."""
        await self._call(lambda c: c.tx_rollback())

    async def flow(self, active: bool) -> None:
        """``channel.flow``: ask the broker to stop or resume deliveries.
        RabbitMQ only implements ``active=True``: ``False`` raises
        :class:`~trio_msg.errors.NotSupported` locally (use ``basic.qos`` or
        cancel the consumer instead)."""
        if not active:
            await checkpoint()  # a checkpoint even when refusing locally
            raise NotSupported(
                "RabbitMQ does not implement channel.flow(active=False); use qos or cancel"
            )
        await self._call(lambda c: c.flow(active))

    async def basic_consume(
        self,
        queue: str,
        sink: DeliverySink,
        *,
        consumer_tag: str = "",
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        on_cancel: Callable[[TrioMsgError], None] | None = None,
    ) -> str:
        """``basic.consume``: deliveries go to ``sink`` (an anyio memory object
        send stream, or anything with its ``send_nowait``, ``send`` and
        ``close``); returns the consumer tag."""
        reply = await self._call(
            lambda c: c.basic_consume(
                queue, consumer_tag, no_ack=no_ack, exclusive=exclusive, arguments=arguments
            ),
            sink,
        )
        tag = str(reply.fields["consumer_tag"])
        self._consumer_queues[tag] = queue
        if on_cancel is not None:
            self._consumer_errors[tag] = on_cancel
        return tag

    async def basic_cancel(self, consumer_tag: str) -> None:
        """``basic.cancel``.  Messages delivered before the cancel took effect
        and not yet received are requeued."""
        sink: DeliverySink | None = None

        def issue(core: AMQPChannel) -> int:
            # Forget the consumer only once the cancel is queued: cancelled
            # before that (at _call's first checkpoint), nothing was sent and
            # the consumer must keep its sink.
            nonlocal sink
            token = core.basic_cancel(consumer_tag)
            self._consumer_errors.pop(consumer_tag, None)
            self._consumer_queues.pop(consumer_tag, None)
            sink = self._sinks.pop(consumer_tag, None)
            return token

        try:
            await self._call(issue)
        finally:
            # A Consumer of several queues shares one sink among its consumer
            # tags: close it only when the last of them is cancelled.
            if sink is not None and all(s is not sink for s in self._sinks.values()):
                sink.close()

    async def basic_get(
        self, queue: str, *, no_ack: bool = False, accept: Any = None
    ) -> Message | None:
        """``basic.get``: one message, or ``None`` when the queue is empty."""
        from .message import Message

        reply = await self._call(lambda c: c.basic_get(queue, no_ack=no_ack))
        if reply.name != "basic.get-ok":
            return None
        m = reply.fields
        self._counts.delivered += 1
        return Message(
            self,
            body=reply.body or b"",
            properties=reply.properties or EMPTY_PROPERTIES,
            delivery_tag=m["delivery_tag"],
            redelivered=bool(m["redelivered"]),
            exchange=m["exchange"],
            routing_key=m["routing_key"],
            consumer_tag=None,
            no_ack=no_ack,
            accept=accept,
        )

    # --- publishing ----------------------------------------------------------

    async def basic_publish(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: BasicProperties = EMPTY_PROPERTIES,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> PublishResult | None:
        """Queue one message.  Waits (cancellably) while the connection's
        outbound buffer is over its high-water mark, while the broker has
        blocked the connection, and while the broker has paused the channel.

        In confirm mode, returns a :class:`PublishResult` to wait on.

        Cancellation: if cancelled, nothing was queued; once this returns,
        the whole message is queued (a publish is never half-sent).
        """
        await checkpoint()
        if immediate:
            raise NotSupported("RabbitMQ removed basic.publish immediate=True (since 3.0)")
        await self.wait_for_room()
        return self.publish_nowait(body, exchange, routing_key, properties, mandatory, False)

    # --- the API layer's port (see trio_msg._ports.ChannelPort) ----------------

    def has_room(self) -> bool:
        """A publish would not wait for back-pressure now.

        :meta private:
        """
        return self._flow.is_set() and not self.connection._must_wait()

    async def wait_for_room(self) -> None:
        """Wait (cancellably; nothing is queued) while the connection's
        outbound buffer is over its mark, the broker blocks the connection,
        or the broker has paused the channel.

        :meta private:
        """
        conn = self.connection
        # Both conditions are checked again after either wait: the broker may
        # block the connection while the channel's flow is paused.
        while not self.has_room():
            if conn._must_wait():
                await conn._wait_writable()
            else:
                await self._pump.wait(self._flow)

    def publish_nowait(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: BasicProperties,
        mandatory: bool,
        urgent: bool,
    ) -> PublishResult | None:
        """The ChannelPort operation: see :mod:`trio_msg._ports`.

        :meta private:
        """
        self._check()
        conn = self.connection
        tag = self._core.publish(exchange, routing_key, body, properties, mandatory=mandatory)
        self._counts.published += 1
        # (corked unless urgent: waiting on the result writes it)
        self._pump.send(urgent and tag is not None)
        if tag is None:
            return None
        result = PublishResult(tag, conn, exchange)
        self._publishes[tag] = result
        return result

    # Settling is corked (Pump.settle): acks travel in batches, written when
    # a quarter of the prefetch window waits in the cork, and at once when
    # the consumer waits for its next delivery.

    def ack_nowait(self, delivery_tag: int, multiple: bool) -> None:
        """The ChannelPort operation: see :mod:`trio_msg._ports`.

        :meta private:
        """
        core = self._core
        if multiple:
            before = core.unsettled_count
            core.ack(delivery_tag, multiple)
            released = before - core.unsettled_count
            self._counts.acked += released
            self._pump.settle(self._prefetch, released)
        else:
            core.ack(delivery_tag, multiple)
            self._counts.acked += 1
            self._pump.settle(self._prefetch)

    def nack_nowait(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        """The ChannelPort operation: see :mod:`trio_msg._ports`.

        :meta private:
        """
        core = self._core
        before = core.unsettled_count
        core.nack(delivery_tag, multiple, requeue)
        released = before - core.unsettled_count
        self._counts.rejected += released
        self._pump.settle(self._prefetch, released)

    def reject_nowait(self, delivery_tag: int, requeue: bool) -> None:
        """The ChannelPort operation: see :mod:`trio_msg._ports`.

        :meta private:
        """
        self._core.reject(delivery_tag, requeue)
        self._counts.rejected += 1
        self._pump.settle(self._prefetch)

    def is_unsettled(self, delivery_tag: int) -> bool:
        """The ChannelPort operation: see :mod:`trio_msg._ports`.

        :meta private:
        """
        return self._core.is_unsettled(delivery_tag)

    def claim_error(self) -> TrioMsgError | None:
        """The closing error, if no caller was told of it
        yet; told from now on (ChannelPort).

        :meta private:
        """
        if self._error_told:
            return None
        error = self.error
        if error is not None:
            self._error_told = True
        return error


if TYPE_CHECKING:
    _port: type[ChannelPort] = Channel  # mypy: Channel implements the port
