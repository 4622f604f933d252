"""kombu's Producer and Consumer, as async context managers.

Both take a :class:`~trio_msg.Connection` (they then open, and on exit close,
a channel of their own) or a :class:`~trio_msg.Channel` (they use it and
leave it open).
"""

from __future__ import annotations

import datetime
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeAlias

import anyio
from anyio.lowlevel import checkpoint

from . import _content
from ._buffer import BufferReceiver, BufferSender, delivery_buffer
from ._lowlevel import closing_scope
from ._protocol import events as ev
from ._protocol._build import record
from ._protocol.errors import TrioMsgError
from ._protocol.frames import BasicProperties, new_properties
from ._retry import RetryPolicy
from .channel import Channel, PublishResult, channel_error
from .connection import Connection
from .entity import PERSISTENT_DELIVERY_MODE, Exchange, Queue, maybe_declare
from .errors import (
    ChannelNotOpen,
    MessageNacked,
    MessageOutcomeUnknown,
    NotSupported,
    PipelineFailed,
    ResourceLocked,
    Unroutable,
)
from .message import Message

__all__ = ["STREAM_PREFETCH", "Consumer", "Pipeline", "Producer", "StreamOffset"]

_logger = logging.getLogger("trio_msg.messaging")

ReturnCallback: TypeAlias = Callable[[Unroutable, str, str, Message | None], Any]
MessageCallback: TypeAlias = Callable[[Any, Message], Any]

_PROPERTY_NAMES = frozenset(
    (
        "correlation_id",
        "reply_to",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    )
)
_DELIVERY_MODES = {"transient": 1, "persistent": 2, 1: 1, 2: 2}


@record  # not frozen: a frozen __init__ costs a setattr call per field
class _Publish:
    """One message to publish, as the caller asked for it (kept whole so that
    ``retry=True`` can publish it again)."""

    body: Any
    routing_key: str | None
    delivery_mode: int | str | None
    mandatory: bool
    immediate: bool
    priority: int
    content_type: str | None
    content_encoding: str | None
    serializer: str | None
    headers: dict[str, Any] | None
    compression: str | None
    exchange: Exchange | str | None
    retry: bool
    declare: Sequence[Exchange | Queue]
    expiration: float | None
    properties: dict[str, Any]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def _resolve_channel(target: Connection | Channel) -> tuple[Channel, bool]:
    if isinstance(target, Channel):
        return target, False
    if isinstance(target, Connection):
        return await target.open_channel(), True
    raise TypeError(f"expected a trio_msg Connection or Channel, not {type(target).__name__}")


class Producer:
    """Publishes messages (kombu's ``Producer``).

    ``async with Producer(conn, exchange=..., serializer="json") as producer:``

    Publisher confirms are on by default (``confirm=True``):
    :meth:`publish` returns once the broker has taken responsibility for the
    message, and raises :class:`~trio_msg.errors.MessageNacked` if it refused,
    :class:`~trio_msg.errors.MessageOutcomeUnknown` if the channel went away
    first, or :class:`~trio_msg.errors.Unroutable` for a returned
    ``mandatory`` message (unless ``on_return`` is given).  To publish many
    without waiting for each confirm, use :meth:`pipeline`.

    When the broker closes the channel over one operation (a 404 for a
    missing exchange, a 406 for a redeclare with other arguments), the error
    is raised to the callers whose operations were on that channel; a
    Producer made from a connection then opens a new channel on its next
    publish.  One made from a :class:`~trio_msg.Channel` does not (the
    channel is the caller's): see :meth:`publish`.
    """

    def __init__(
        self,
        channel: Connection | Channel,
        exchange: Exchange | str | None = None,
        routing_key: str = "",
        serializer: str | None = None,
        auto_declare: bool = True,
        compression: str | None = None,
        on_return: ReturnCallback | None = None,
        *,
        confirm: bool = True,
    ) -> None:
        self._target = channel
        if exchange is None:
            exchange = Exchange("")
        elif isinstance(exchange, str):
            exchange = Exchange(exchange)
        self.exchange: Exchange = exchange
        self.routing_key = routing_key
        self.serializer = serializer
        self.compression = compression
        self.auto_declare = auto_declare
        self.on_return = on_return
        self.confirm = confirm
        self._channel: Channel | None = None
        self._owns_channel = False
        #: A retrying publish on a given channel lost with its connection
        #: moves the producer to a channel of its own (set by retry=True).
        self._adopt_on_loss = False
        self._revive_lock = anyio.Lock()
        #: How many times a nack moved this producer to a new channel.
        self._nack_moves = 0
        #: Properties already built for raw bodies without headers, by
        #: (content type, encoding, delivery mode, priority, expiration):
        #: the same frozen object each time, whose encoding the core keeps.
        self._made_properties: dict[tuple[Any, ...], BasicProperties] = {}

    def __repr__(self) -> str:
        return f"<trio_msg.Producer exchange={self.exchange.name!r} channel={self._channel!r}>"

    @property
    def channel(self) -> Channel:
        """The channel in use (set on entering the context)."""
        if self._channel is None:
            raise RuntimeError("use the Producer as 'async with Producer(...) as producer'")
        return self._channel

    @property
    def connection(self) -> Connection:
        return self.channel.connection

    async def __aenter__(self) -> Producer:
        await checkpoint()  # on a caller's channel there may be nothing to wait for
        await self._bind(self._target)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with closing_scope(exc_type):
            try:
                if exc_type is None:
                    await self._drain_returns()
            finally:
                await self._close_channel()
            await checkpoint()
        channel = self._channel
        # A broker's close that no publish has raised yet (publishing without
        # confirms): said here rather than lost.
        if (
            exc_type is None
            and channel is not None
            and self._owns_channel
            and channel.error is not None
            and channel_error(channel.error)
            and (error := channel.claim_error()) is not None
        ):
            raise error

    async def _bind(self, target: Connection | Channel) -> None:
        """Take a channel (opening one on a Connection), turn confirms on and
        declare the exchange.  The producer uses the channel only once all of
        that is done: cancelled half-way, it closes the new channel again and
        keeps the one it had."""
        channel, owns = await _resolve_channel(target)
        try:
            if self.confirm:
                await channel.confirm_select()
            if self.auto_declare and self.exchange.name:
                await maybe_declare(self.exchange, channel)
        except BaseException:
            if owns:
                with anyio.CancelScope(shield=True):
                    await channel.aclose()
            raise
        self._channel, self._owns_channel = channel, owns

    async def _close_channel(self) -> None:
        if self._owns_channel and self._channel is not None:
            await self._channel.aclose()

    async def declare(self) -> None:
        """Declare the default exchange (done on entry when ``auto_declare``)."""
        if self.exchange.name:
            await maybe_declare(self.exchange, self.channel)
        else:
            await checkpoint()

    async def maybe_declare(
        self, entity: Exchange | Queue | None, retry: bool = False, **retry_policy: Any
    ) -> bool:
        """Declare *entity* on the producer's channel unless this connection
        already has (see :func:`~trio_msg.maybe_declare`); returns whether
        it declared.  ``None`` declares nothing, as in kombu.

        ``retry=True`` (with kombu's ``retry_policy`` keywords): if the
        connection is lost meanwhile, declare again once it is back; as
        ``publish(retry=True)``, it needs a reviving connection and a
        Producer made from it.  Cancellation: as
        :func:`~trio_msg.maybe_declare`."""
        if entity is None:
            await checkpoint()
            return False
        if retry:
            self._check_can_retry()
        waits = RetryPolicy.coerce(retry_policy or None).intervals() if retry else None
        while True:
            try:
                return await maybe_declare(entity, await self._usable_channel())
            except TrioMsgError as exc:
                if waits is None or not self._lost_connection(exc):
                    raise
                wait = next(waits, None)
                if wait is None:
                    raise
            await anyio.sleep(wait)

    async def close(self) -> None:
        """What leaving ``async with`` does: handle pending returns, then
        close the producer's own channel (one it was given stays open).
        Publishing afterwards fails.  kombu's ``release()`` and ``close()``
        (which in kombu release nothing).  Cancellation: the channel is
        closed all the same."""
        await self.__aexit__(None, None, None)

    release = close

    async def revive(self, channel: Connection | Channel) -> None:
        """Re-bind the producer to a new channel (after a connection loss).

        A Producer made from a reviving connection does this by itself.
        Cancellation: the producer keeps its old channel (if it was the
        producer's own, it has been closed)."""
        await self._close_channel()
        self._target = channel
        await self._bind(channel)

    def _revivable(self) -> bool:
        channel = self._channel
        return (
            channel is not None
            and (self._owns_channel or self._adopt_on_loss)
            and not channel.is_open
            and channel.connection.will_revive(channel.error)
        )

    async def _usable_channel(self) -> Channel:
        """The channel to publish on: after a connection loss, wait until a
        reviving connection is back and move to a new channel on it.  After
        the broker closed the channel over one operation, raise that error
        if no caller has seen it yet (nothing of this publish was sent), or
        else move to a new channel.  A closed channel given by the caller is
        never replaced: an error says so."""
        channel = self.channel
        if channel.is_open:
            return channel
        if not self._revivable():
            error = channel.error
            if not channel_error(error):
                return channel  # closed for good, or by us: the publish raises why
            assert error is not None
            untold = channel.claim_error()
            if untold is not None or not self._owns_channel:
                # (_send checked for a cancellation already: the yield that
                # makes this call a checkpoint.)
                await channel.connection.checkpoints.cancel_shielded_checkpoint()
            if untold is not None:
                raise untold
            if not self._owns_channel:
                raise ChannelNotOpen(
                    f"channel {channel.channel_id} was closed by the broker ({error}); a "
                    "Producer given a Channel does not open another: open a new channel "
                    "and pass it to producer.revive()"
                ) from error
        async with self._revive_lock:
            # (Another task may have moved on while this one waited.)
            if self._channel is channel and (
                self._revivable() or (self._owns_channel and channel_error(channel.error))
            ):
                connection = channel.connection
                while True:
                    await connection.wait_connected()
                    try:
                        await self._bind(connection)
                        break
                    except TrioMsgError as exc:
                        # Lost again while opening the new channel: wait
                        # for the next incarnation, as for the first loss
                        # (wait_connected raises once revive gives up).
                        if not connection.will_revive(exc):
                            raise
        return self.channel

    # --- building messages ---------------------------------------------------

    def _build(
        self,
        body: Any,
        *,
        delivery_mode: int | str | None,
        priority: int,
        content_type: str | None,
        content_encoding: str | None,
        serializer: str | None,
        headers: dict[str, Any] | None,
        compression: str | None,
        expiration: float | None,
        properties: dict[str, Any],
    ) -> tuple[bytes, BasicProperties]:
        key: tuple[Any, ...] | None = None
        if (
            not properties
            and not headers
            and body.__class__ is bytes
            and priority.__class__ is int  # 1.0 is refused below, not taken for 1
            and content_type is not None
            and not (compression or self.compression)
        ):
            key = (
                content_type,
                content_encoding,
                self.exchange.delivery_mode if delivery_mode is None else delivery_mode,
                priority,
                expiration,
            )
            made = self._made_properties.get(key)
            if made is not None:
                return body, made
        if properties and not _PROPERTY_NAMES.issuperset(properties):  # (builds no set)
            unknown = properties.keys() - _PROPERTY_NAMES
            raise TypeError(f"unknown message properties: {', '.join(sorted(unknown))}")
        if content_type is not None and isinstance(body, bytes | str):
            # Already serialized by the caller: kombu's rule.
            if isinstance(body, str):
                content_encoding = content_encoding or "utf-8"
                raw = body.encode(content_encoding)
            else:
                content_encoding = content_encoding or "binary"
                raw = body
        else:
            from . import serialization  # here: raw bytes never load the codecs

            content_type, default_encoding, raw = serialization.dumps(
                body, serializer or self.serializer
            )
            content_encoding = content_encoding or default_encoding
        headers = dict(headers) if headers else None
        method = compression or self.compression
        if method:
            from . import compression as _compression

            if headers is None:
                headers = {}
            raw, headers[_content.COMPRESSION_HEADER] = _compression.compress(raw, method)
        if delivery_mode is None:
            delivery_mode = self.exchange.delivery_mode
        if delivery_mode is not None:
            try:
                delivery_mode = _DELIVERY_MODES[delivery_mode]
            except KeyError:
                raise ValueError(
                    f"delivery_mode must be 1, 2, 'transient' or 'persistent', not {delivery_mode!r}"
                ) from None
        if not isinstance(priority, int) or not 0 <= priority <= 255:
            raise ValueError(f"priority must be an integer 0..255, not {priority!r}")
        get = properties.get
        timestamp = get("timestamp")
        if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
            timestamp = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
        props = new_properties(  # every field, in BasicProperties' order
            content_type,
            content_encoding,
            headers or None,
            delivery_mode,
            priority or None,
            get("correlation_id"),
            get("reply_to"),
            None if expiration is None else str(int(expiration * 1000)),
            get("message_id"),
            timestamp,
            get("type"),
            get("user_id"),
            get("app_id"),
            get("cluster_id"),
        )
        if key is not None:
            made_properties = self._made_properties
            if len(made_properties) >= 64:
                made_properties.clear()
            made_properties[key] = props
        return raw, props

    # --- publishing ------------------------------------------------------------

    async def _send(self, msg: _Publish, *, awaited: bool = False) -> PublishResult | None:
        """Queue one message.  A checkpoint: cancellation is checked before
        anything is queued, and the task yields once it is queued (a
        cancellation can no longer hit it then) -- unless *awaited*: the
        caller waits on the confirm at once, and that wait is the yield, so
        a confirmed publish costs one pass of the scheduler, not two."""
        ck = self.channel.connection.checkpoints
        await ck.checkpoint_if_cancelled()
        if msg.immediate:
            raise NotSupported("RabbitMQ removed basic.publish immediate=True (since 3.0)")
        if msg.retry:
            self._check_can_retry()
        delivery_mode = msg.delivery_mode
        if delivery_mode is None:
            # kombu's rule: the publish's Exchange, else the producer's, else persistent.
            exchange = msg.exchange
            delivery_mode = (
                exchange if isinstance(exchange, Exchange) else self.exchange
            ).delivery_mode or PERSISTENT_DELIVERY_MODE
        raw, props = self._build(
            msg.body,
            delivery_mode=delivery_mode,
            priority=msg.priority,
            content_type=msg.content_type,
            content_encoding=msg.content_encoding,
            serializer=msg.serializer,
            headers=msg.headers,
            compression=msg.compression,
            expiration=msg.expiration,
            properties=msg.properties,  # read, never changed
        )
        exchange = msg.exchange
        if exchange is None or exchange == "":  # kombu: ``exchange or self.exchange``
            exchange_name = self.exchange.name
        else:
            exchange_name = exchange.name if isinstance(exchange, Exchange) else exchange
        routing_key = self.routing_key if msg.routing_key is None else msg.routing_key
        while True:
            channel = self.channel
            if not channel.is_open:
                channel = await self._usable_channel()
            try:
                for entity in msg.declare:
                    await maybe_declare(entity, channel)
                if not channel.has_room():  # (no coroutine in the common case)
                    await channel.wait_for_room()
                result = channel.publish_nowait(
                    raw, exchange_name, routing_key, props, msg.mandatory, awaited
                )
                if result is None or not awaited:
                    await ck.cancel_shielded_checkpoint()
                return result
            except TrioMsgError:
                # Nothing of this message was queued (publish_nowait raises only
                # before it queues).  Lost with the connection while waiting
                # for room or for a declare: wait for the revival, go again.
                if not self._revivable():
                    raise

    async def publish(
        self,
        body: Any,
        routing_key: str | None = None,
        delivery_mode: int | str | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        priority: int = 0,
        content_type: str | None = None,
        content_encoding: str | None = None,
        serializer: str | None = None,
        headers: dict[str, Any] | None = None,
        compression: str | None = None,
        exchange: Exchange | str | None = None,
        retry: bool = False,
        retry_policy: RetryPolicy | dict[str, Any] | None = None,
        declare: Sequence[Exchange | Queue] | None = None,
        expiration: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (kombu API)
        confirm_timeout: float | None = None,
        **properties: Any,
    ) -> PublishResult | None:
        """Publish one message; with confirms on, wait until the broker
        confirmed it.  Parameters as kombu's ``Producer.publish``;
        ``expiration`` is in seconds.  ``immediate=True`` raises
        :class:`~trio_msg.errors.NotSupported` (RabbitMQ removed it).

        ``delivery_mode`` is kombu's: when not given, the ``delivery_mode``
        of ``exchange`` (if it is an :class:`~trio_msg.Exchange`) or else of
        the producer's exchange, and when that is not set either, 2
        (persistent).  Pass ``delivery_mode="transient"`` (or 1) for
        messages the broker may keep in memory only.

        ``timeout`` (seconds, kombu 5's): how long the message may wait to
        be sent (for the connection, for room in the outbound buffer, while
        the broker blocks publishers); then :exc:`TimeoutError`, and
        nothing was sent.  ``confirm_timeout`` (seconds; ``timeout`` when
        not given, as in kombu): how long to wait for the broker's confirm;
        then :exc:`TimeoutError`, and the message was sent but its outcome
        is unknown.

        On a reviving connection, a Producer made from the connection that
        finds the connection lost waits until it is back and publishes on a
        new channel (nothing is buffered: this call is what waits).
        ``retry=True`` also publishes the message again when the connection
        was lost before the broker confirmed it, or when the broker closed
        the channel over another operation (at least once: the broker
        may have routed the first copy too), or when the broker nacked it
        (then on a new channel of the producer's own: after a cluster
        failover a quorum queue nacks the old channel for seconds; see
        docs/cluster.rst), waiting ``retry_policy``'s
        intervals (a :class:`~trio_msg.RetryPolicy` or kombu's keyword dict;
        by default as often as it takes) between attempts; it needs a
        reviving connection and a Producer made from it
        (:class:`~trio_msg.errors.NotSupported` otherwise).

        A publish the broker refused by closing the channel (a missing
        exchange: :class:`~trio_msg.errors.NotFound`) raises that error: the
        message was not routed.  Other publishes unconfirmed on that channel
        raise :class:`~trio_msg.errors.MessageOutcomeUnknown` (its
        ``reason`` is the error), or are published again with ``retry=True``.
        The next publish of a Producer made from a connection opens a new
        channel (confirms on).  Without confirms the broker's refusal comes
        after ``publish`` returned: the next ``publish`` (or leaving the
        ``async with``) raises it, sending nothing, and the one after that
        opens a new channel; messages published in between, before the
        broker's close arrived, were dropped by the broker.  A Producer made
        from a :class:`~trio_msg.Channel` raises the error once the same way,
        then :class:`~trio_msg.errors.ChannelNotOpen` until it is given a
        new channel with :meth:`revive`.

        Cancellation: if cancelled before the message was queued, nothing was
        sent.  If cancelled while waiting for the confirm, the message was
        sent and its outcome is unknown to the caller; the channel stays
        usable.
        """
        msg = _Publish(
            body, routing_key, delivery_mode, mandatory, immediate, priority, content_type,
            content_encoding, serializer, headers, compression, exchange, retry,
            () if declare is None else declare, expiration, properties,
        )  # fmt: skip
        if confirm_timeout is None:
            confirm_timeout = timeout
        if not retry:
            return await self._publish_once(msg, timeout, confirm_timeout)
        # (_send checkpoints, then checks that retrying can work at all.)
        waits = RetryPolicy.coerce(retry_policy).intervals()
        while True:
            moves = self._nack_moves
            try:
                return await self._publish_once(msg, timeout, confirm_timeout)
            except MessageNacked as exc:
                wait = next(waits, None)
                if wait is None:
                    raise
                if exc.__class__ is MessageNacked:  # not a refusal that closed the channel
                    await self._move_after_nack()
            except TrioMsgError as exc:
                moved = isinstance(exc, MessageOutcomeUnknown) and self._nack_moves != moves
                if not (moved or self._lost_connection(exc) or self._bystander(exc)):
                    raise
                wait = next(waits, None)
                if wait is None:
                    raise
            await anyio.sleep(wait)

    async def _move_after_nack(self) -> None:
        """A retrying publish was nacked: publish again on a new channel.

        A quorum queue nacks a channel's publishes while the channel does
        not know the queue's new leader, which takes RabbitMQ from 8 seconds
        to over a minute after a failover; a new channel is accepted within
        a second
        (see docs/cluster.rst).  Only the producer's own channel is replaced;
        publishes still waiting on the old one end as outcome unknown, and
        those with ``retry=True`` are published again."""
        channel = self._channel
        if not self._owns_channel or channel is None or not channel.is_open:
            return
        async with self._revive_lock:
            if self._channel is not channel:
                return  # another task moved already
            connection = channel.connection
            await connection.wait_connected()
            await self._bind(connection)
            self._nack_moves += 1
        _logger.info(
            "publish nacked on channel %d: moved to channel %d",
            channel.channel_id,
            self.channel.channel_id,
        )
        with anyio.CancelScope(shield=True):
            await channel.aclose()

    async def _send_retrying(
        self, msg: _Publish, retries: Iterator[float] | None, *, sleep: bool = True
    ) -> PublishResult | None:
        """:meth:`_send`, tried again (``retries``: the policy's waits) while
        it fails because the connection was lost."""
        while True:
            try:
                return await self._send(msg)
            except TrioMsgError as exc:
                if retries is None or not self._lost_connection(exc):
                    raise
                wait = next(retries, None)
                if wait is None:
                    raise
            if sleep:
                await anyio.sleep(wait)

    async def _publish_once(
        self,
        msg: _Publish,
        timeout: float | None = None,  # noqa: ASYNC109 (kombu API)
        confirm_timeout: float | None = None,
    ) -> PublishResult | None:
        if timeout is None:
            result = await self._send(msg, awaited=True)
        else:
            with anyio.move_on_after(timeout) as scope:
                result = await self._send(msg, awaited=True)
            if scope.cancelled_caught:
                raise TimeoutError(
                    f"publish: not sent within timeout={timeout} s (nothing was sent)"
                )
        if self.channel.returns:
            await self._drain_returns()
        if result is None:
            return None
        if confirm_timeout is None:
            outcome = await result.wait()
        else:
            with anyio.move_on_after(confirm_timeout) as scope:
                outcome = await result.wait()
            if scope.cancelled_caught:
                raise TimeoutError(
                    f"publish #{result.delivery_tag}: no confirm within {confirm_timeout} s "
                    "(the message was sent; its outcome is unknown)"
                )
        await self._check_outcome(result, outcome)
        return result

    def _check_can_retry(self) -> None:
        if not self.channel.connection.reviving:
            raise NotSupported(
                "retry=True needs a reviving connection (connect(url) revives unless "
                "given revive=False)"
            )
        # kombu's ensure() moves a producer whose channel died with the
        # connection to the connection's default channel; here a producer
        # given a channel moves to a channel of its own on the revived
        # connection (retrying publishes only; see docs/kombu.rst).
        self._adopt_on_loss = True

    def _bystander(self, exc: TrioMsgError) -> bool:
        """Whether a publish's outcome is unknown because the broker closed
        its channel over another operation (this producer's own channel,
        which it replaces on the next publish)."""
        return (
            isinstance(exc, MessageOutcomeUnknown)
            and exc.result is not None
            and exc.result.bystander
            and self._owns_channel
        )

    def _lost_connection(self, exc: TrioMsgError) -> bool:
        """Whether a failed publish failed because the connection was lost
        (and the connection is coming back)."""
        reason = exc.reason if isinstance(exc, MessageOutcomeUnknown) else exc
        return self.channel.connection.will_revive(reason)

    async def _check_outcome(self, result: PublishResult, outcome: ev.Outcome) -> None:
        if result.returned is not None:
            await self._returned(result.returned)
        if outcome is ev.Outcome.NACK:
            if result.reason is not None:
                raise result.reason  # refused by closing the channel (a 404 ...)
            raise MessageNacked(f"the broker nacked publish #{result.delivery_tag}")
        if outcome is ev.Outcome.UNKNOWN:
            error = result.reason
            raise MessageOutcomeUnknown(
                f"publish #{result.delivery_tag}: the channel went away before the broker confirmed it"
                + (f" ({error})" if error else ""),
                error,
                result,
            ) from error

    async def _returned(self, returned: ev.Returned) -> None:
        message = Message(
            self.channel,
            body=returned.body,
            properties=returned.properties,
            delivery_tag=0,
            redelivered=False,
            exchange=returned.exchange,
            routing_key=returned.routing_key,
            consumer_tag=None,
            no_ack=True,
        )
        exc = Unroutable(
            returned.reply_text,
            returned.reply_code,
            returned.exchange,
            returned.routing_key,
            message,
        )
        if self.on_return is None:
            raise exc
        await _maybe_await(self.on_return(exc, returned.exchange, returned.routing_key, message))

    async def _drain_returns(self) -> None:
        """Returns that could not be paired with a publish (no confirms)."""
        returns = self.channel.returns
        while returns:
            await self._returned(returns.popleft())

    @asynccontextmanager
    async def pipeline(
        self, max_unconfirmed: int = 1000, *, raise_on_failure: bool = True
    ) -> AsyncIterator[Pipeline]:
        """Publish with confirms without waiting for each one.

        ``async with producer.pipeline(1000) as pipe: await pipe.publish(...)``
        keeps at most ``max_unconfirmed`` messages unconfirmed (publish waits,
        cancellably, while the window is full) and, on exit, waits for every
        outcome.  ``pipe.acked``, ``pipe.nacked``, ``pipe.unknown`` and
        ``pipe.returned`` (acked but unroutable, ``mandatory``) count them;
        ``pipe.failures`` lists the results that were not plainly acked.
        A publish the broker refused by closing the channel (a missing
        exchange) is counted in ``nacked``, its result's ``reason`` the
        error; the publishes after it go out on a new channel.

        Leaving the block with failures raises
        :class:`~trio_msg.errors.PipelineFailed` (the failures and the
        counts in it), so that no nacked message goes unnoticed; with
        ``raise_on_failure=False`` the block only counts them, for code
        that reads ``pipe.failures`` itself.
        """
        if not self.confirm:
            raise NotSupported("a pipeline needs publisher confirms (Producer(confirm=True))")
        pipe = Pipeline(self, max_unconfirmed)
        yield pipe
        await pipe.wait_all()
        if raise_on_failure and pipe.failures:
            raise PipelineFailed(
                list(pipe.failures), pipe.acked, pipe.nacked, pipe.unknown, pipe.returned
            )


class _Pending:
    """A window entry: the result, and what ``retry=True`` needs to send it
    again (the message and the retries it has left)."""

    __slots__ = ("msg", "result", "retries")

    def __init__(self, result: PublishResult, msg: _Publish, retries: Iterator[float] | None):
        self.result = result
        self.msg = msg
        self.retries = retries


class Pipeline:
    """A window of unconfirmed publishes; see :meth:`Producer.pipeline`.

    ``publish(..., retry=True)`` on a reviving connection: a message whose
    outcome became UNKNOWN because the connection was lost is published
    again (at least once: duplicates are possible) as the window settles,
    and a publish that finds the connection lost is tried again, in all at
    most ``retry_policy``'s ``max_retries`` times per message; each attempt
    waits for the connection to come back, without the policy's intervals
    (a window of unknowns would otherwise sleep once per message).
    """

    def __init__(self, producer: Producer, max_unconfirmed: int) -> None:
        if max_unconfirmed < 1:
            raise ValueError("max_unconfirmed must be at least 1")
        self.producer = producer
        self.max_unconfirmed = max_unconfirmed
        self._window: deque[_Pending] = deque()
        self.acked = 0
        self.nacked = 0
        self.unknown = 0
        self.returned = 0
        #: How many messages were published again after a connection loss.
        self.republished = 0
        self.failures: list[PublishResult] = []

    async def _settle(self) -> None:
        """Count the settled head of the window; republish (``retry``) what a
        lost connection left unknown."""
        window = self._window
        producer = self.producer
        while window and window[0].result.outcome is not None:
            entry = window.popleft()
            result = entry.result
            if (
                result.outcome is ev.Outcome.UNKNOWN
                and entry.retries is not None
                and (
                    producer.channel.connection.will_revive(result.reason)
                    or (result.bystander and producer._owns_channel)
                )
                and next(entry.retries, None) is not None
            ):
                try:
                    new = await producer._send_retrying(entry.msg, entry.retries, sleep=False)
                except BaseException:
                    window.appendleft(entry)  # not sent: still unknown, retried next time
                    raise
                assert new is not None
                entry.result = new
                window.append(entry)
                self.republished += 1
                continue
            self._count(result)

    def _count(self, result: PublishResult) -> None:
        outcome = result.outcome
        if outcome is ev.Outcome.ACK and result.returned is None:
            self.acked += 1
            return
        if outcome is ev.Outcome.NACK:
            self.nacked += 1
        elif outcome is ev.Outcome.UNKNOWN:
            self.unknown += 1
        else:  # acked, but returned unroutable: a failure, not a success
            self.returned += 1
        self.failures.append(result)

    async def publish(
        self, body: Any, routing_key: str | None = None, **kwargs: Any
    ) -> PublishResult:
        """Like :meth:`Producer.publish`, but returns as soon as the message
        is queued; waits only while the window is full (and, on a reviving
        connection, while it reconnects).  ``timeout`` bounds that wait
        (then :exc:`TimeoutError`, and nothing was sent); there is no
        ``confirm_timeout``: bound :meth:`wait_all` instead.  Cancellation:
        nothing was queued by this call (a message republished meanwhile
        stays in the window)."""
        if "confirm_timeout" in kwargs:
            raise TypeError(
                "a pipeline does not wait for each confirm: no confirm_timeout "
                "(bound wait_all(), or leaving the pipeline, with a cancel scope)"
            )
        timeout = kwargs.pop("timeout", None)
        if timeout is not None:
            with anyio.move_on_after(timeout):
                return await self.publish(body, routing_key, **kwargs)
            raise TimeoutError(f"publish: not sent within timeout={timeout} s (nothing was sent)")
        await self._settle()
        while len(self._window) >= self.max_unconfirmed:
            await self._window[0].result.wait()
            await self._settle()
        retry_policy = kwargs.pop("retry_policy", None)
        msg = _Publish(
            body,
            routing_key,
            kwargs.pop("delivery_mode", None),
            kwargs.pop("mandatory", False),
            kwargs.pop("immediate", False),
            kwargs.pop("priority", 0),
            kwargs.pop("content_type", None),
            kwargs.pop("content_encoding", None),
            kwargs.pop("serializer", None),
            kwargs.pop("headers", None),
            kwargs.pop("compression", None),
            kwargs.pop("exchange", None),
            kwargs.pop("retry", False),
            kwargs.pop("declare", None) or (),
            kwargs.pop("expiration", None),
            kwargs,
        )
        retries = RetryPolicy.coerce(retry_policy).intervals() if msg.retry else None
        result = await self.producer._send_retrying(msg, retries, sleep=False)
        assert result is not None
        self._window.append(_Pending(result, msg, retries))
        return result

    @property
    def pending(self) -> int:
        return len(self._window)

    async def wait_all(self) -> None:
        """Wait for every outstanding outcome (republishing, with ``retry``,
        what a lost connection left unknown).  Cancellation: stops waiting;
        the messages were sent."""
        await checkpoint()
        while self._window:
            await self._window[0].result.wait()
            await self._settle()


#: Where a stream consumer starts (``x-stream-offset``): ``"first"``,
#: ``"last"``, ``"next"``, an offset, or a timezone-aware datetime (the
#: first chunk written at or after it).
StreamOffset: TypeAlias = str | int | datetime.datetime
#: The prefetch a Consumer sets when it reads a stream and was given none
#: (RabbitMQ refuses ``basic.consume`` on a stream without one).
STREAM_PREFETCH = 100


def _is_stream(queue: Queue) -> bool:
    return queue.queue_arguments.get("x-queue-type") == "stream" or bool(
        queue.consumer_arguments and "x-stream-offset" in queue.consumer_arguments
    )


def _check_stream_offset(offset: object) -> StreamOffset | None:
    if offset is None:
        return None
    if isinstance(offset, str):
        if offset not in ("first", "last", "next"):
            raise ValueError(
                f"stream_offset must be 'first', 'last', 'next', an offset or a datetime, "
                f"not {offset!r}"
            )
        return offset
    if isinstance(offset, bool) or not isinstance(offset, int | datetime.datetime):
        raise TypeError(
            "stream_offset must be 'first', 'last', 'next', an int or a datetime, "
            f"not {type(offset).__name__}"
        )
    if isinstance(offset, int):
        if offset < 0:
            raise ValueError(f"a stream offset is >= 0, got {offset}")
        return offset
    if offset.tzinfo is None:
        raise ValueError(
            "stream_offset: give a timezone-aware datetime (a naive one could be local time or UTC)"
        )
    return offset


class Consumer:
    """Consumes from queues (kombu's ``Consumer``).

    ``async with Consumer(conn, queues=[q], prefetch_count=10) as consumer:``
    declares the queues (``auto_declare``), applies ``prefetch_count`` and
    starts consuming; leaving cancels the consumers (unacknowledged messages
    go back to the queue when the channel closes).

    ``async for message in consumer`` yields :class:`~trio_msg.Message`\\ s.
    Or register callbacks (``callbacks=[...]`` / :meth:`register_callback`,
    plain or async functions taking ``(body, message)``) and ``await
    consumer.run()``: they run in order, in the task that calls ``run``.

    Deliveries reach the consumer through a buffer sized to its
    prefetch (``prefetch_count`` times the number of queues), so the connection's
    reader never waits on a consumer that respects its prefetch.  Without a
    prefetch limit the buffer holds ``buffer_size`` messages; when it is full
    the reader stops reading the socket and TCP pushes back on the broker.

    A server-sent cancel (the queue was deleted) ends iteration with
    :class:`~trio_msg.errors.ConsumerCancelled`.

    Stream queues (``Queue(..., queue_type="stream")``): ``stream_offset``
    says where to start reading (``"first"``, ``"last"``, ``"next"``, an
    offset, or a timezone-aware :class:`~datetime.datetime`), sent as the
    ``x-stream-offset`` consume argument for each of its queues (a classic
    or quorum queue ignores it).  RabbitMQ
    refuses to consume from a stream without a prefetch, so without a
    ``prefetch_count`` the consumer sets :data:`STREAM_PREFETCH` when one of
    its queues is a stream (or ``stream_offset`` is given).  Each message's
    offset is :attr:`Message.stream_offset <trio_msg.Message.stream_offset>`;
    when the consumer consumes again after a connection loss or a channel
    error, it starts each stream after the last message it handed to you,
    not at ``stream_offset`` again.  See docs/cluster.rst.

    When the broker closes the consumer's channel over one operation (a 406
    for an unknown delivery tag, a 404 or 406 from a declaration), iteration
    raises that error; a Consumer made from a connection then opens a new
    channel on the next iteration (qos, ``basic.consume`` for its queues)
    and goes on.  The broker redelivers the messages left unacknowledged on
    the old channel (``redelivered`` set); their old :class:`Message`
    objects refuse to be settled
    (:class:`~trio_msg.errors.MessageStateError`).  A Consumer made from a
    :class:`~trio_msg.Channel` keeps raising the error until it is given a
    new channel with :meth:`revive`.
    """

    def __init__(
        self,
        channel: Connection | Channel,
        queues: Queue | Iterable[Queue] | None = None,
        no_ack: bool | None = None,
        auto_declare: bool = True,
        callbacks: Iterable[MessageCallback] | None = None,
        on_decode_error: Callable[[Message, Exception], Any] | None = None,
        on_message: Callable[[Message], Any] | None = None,
        accept: Iterable[str] | None = None,
        prefetch_count: int | None = None,
        tag_prefix: str | None = None,
        buffer_size: int = 1000,
        *,
        stream_offset: StreamOffset | None = None,
    ) -> None:
        self._target = channel
        if queues is None:
            queues = []
        elif isinstance(queues, Queue):
            queues = [queues]
        self.queues: list[Queue] = list(queues)
        #: Where stream queues are read from (``x-stream-offset``).
        self.stream_offset = _check_stream_offset(stream_offset)
        #: stream queue name -> the offset after the last message handed over
        self._stream_resume: dict[str, int] = {}
        if prefetch_count is None and (
            stream_offset is not None or any(_is_stream(q) for q in self.queues)
        ):
            prefetch_count = STREAM_PREFETCH
        self.no_ack = bool(no_ack)
        self.auto_declare = auto_declare
        self.callbacks: list[MessageCallback] = list(callbacks or [])
        self.on_decode_error = on_decode_error
        self.on_message = on_message
        if accept is None:
            self.accept = _content.DEFAULT_ACCEPT
        else:
            from . import serialization

            self.accept = serialization.prepare_accept_content(accept)
        self.prefetch_count = prefetch_count
        #: The last qos applied (replayed on a new channel).
        self._qos: tuple[int, int, bool] | None = (
            None if prefetch_count is None else (0, prefetch_count, False)
        )
        self._revive_pending = False
        #: The pending recovery is from a channel error: same connection.
        self._reopen_only = False
        self._salvaged: deque[Message] = deque()
        self.tag_prefix = tag_prefix or ""
        self.buffer_size = buffer_size
        self._channel: Channel | None = None
        self._owns_channel = False
        self._tags: dict[str, str] = {}  # queue name -> consumer tag
        self._no_ack_tags: set[str] = set()
        self._send: BufferSender[ev.Delivery] | None = None
        self._receive: BufferReceiver[ev.Delivery] | None = None
        self._error: TrioMsgError | None = None

    def __repr__(self) -> str:
        return f"<trio_msg.Consumer queues={[q.name for q in self.queues]!r}>"

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            raise RuntimeError("use the Consumer as 'async with Consumer(...) as consumer'")
        return self._channel

    @property
    def connection(self) -> Connection:
        return self.channel.connection

    def _new_buffer(
        self, size: int
    ) -> tuple[BufferSender[ev.Delivery], BufferReceiver[ev.Delivery]]:
        return delivery_buffer(size, self.channel.connection.new_signal)

    def _stream_size(self) -> int:
        if self.prefetch_count:
            return self.prefetch_count * max(1, len(self.queues))
        return self.buffer_size

    async def __aenter__(self) -> Consumer:
        channel, owns = await _resolve_channel(self._target)
        self._channel, self._owns_channel = channel, owns
        self._send, self._receive = self._new_buffer(self._stream_size())
        try:
            await self._setup()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with closing_scope(exc_type):
            await self._close()

    async def _setup(self) -> None:
        """On a fresh channel: declare (``auto_declare``), qos, consume."""
        if self.auto_declare:
            await self.declare()
        if self._qos is not None:
            await self.channel.basic_qos(*self._qos)
        await self.consume()

    async def _close(self) -> None:
        self._release_buffer()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.connection.close_timeout):
            try:
                if self.channel.is_open:
                    await self.cancel()
            except TrioMsgError:
                pass
            finally:
                if self._owns_channel:
                    await self.channel.aclose()
        if self._send is not None:
            self._send.close()
        await checkpoint()

    def _release_buffer(self) -> None:
        """Leaving: give buffered ack-mode messages back to the queue and
        close the buffer.  Without a prefetch limit the connection's reader
        may be waiting for room in it; closed, the reader goes on (and gives
        back what it held), so the replies to the cancel and close that
        follow can be read instead of waiting out the close timeout.
        Buffered ``no_ack`` messages are dropped: the consumer is leaving,
        and the broker counted them delivered."""
        receive = self._receive
        if receive is None or self._channel is None:
            return
        channel = self._channel
        while True:
            try:
                delivery = receive.receive_nowait()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.WouldBlock):
                break
            if delivery.consumer_tag not in self._no_ack_tags:
                channel.give_back(delivery.delivery_tag)
        receive.close()

    async def revive(self, channel: Connection | Channel) -> None:
        """Re-bind to a new channel (after a connection loss) and consume again.

        A Consumer made from a reviving connection does this by itself.
        Messages still buffered from the old channel are handed over first
        if they were consumed with ``no_ack``; the others are given back to
        the broker (or, with the old channel gone, redelivered by it): their
        delivery tags are never acknowledged on the new channel.

        When the old channel is still open, the consumers on it are
        cancelled first (it may be the caller's, and stay open): the broker
        sends them nothing more.

        Cancellation: the consumer is left closed, as after a failed entry.
        """
        old = self._channel
        if old is not None and old.is_open and self._tags:
            try:
                await self.cancel()
            except TrioMsgError:
                pass  # the old channel is going away: its consumers with it
            except BaseException:
                await self._close()
                raise
        if old is not None:
            self._salvage(old)
        self._tags.clear()
        self._no_ack_tags.clear()
        if self._owns_channel and old is not None:
            await old.aclose()
        # Closing the old channel reports its end to the consumer: forget it.
        self._error = None
        self._revive_pending = self._reopen_only = False
        self._target = channel
        self._channel, self._owns_channel = await _resolve_channel(channel)
        try:
            await self._setup()
        except BaseException:
            await self._close()
            raise

    def _salvage(self, old: Channel) -> None:
        """Empty the delivery stream of *old*'s deliveries before moving on:
        no_ack messages are kept to be handed over (the broker counts them
        delivered), ack-mode ones go back to the queue."""
        assert self._receive is not None
        while True:
            try:
                delivery = self._receive.receive_nowait()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.WouldBlock):
                break
            if delivery.consumer_tag in self._no_ack_tags:
                self._salvaged.append(self._message(old, delivery, no_ack=True))
            else:
                old.give_back(delivery.delivery_tag)
        self._send, self._receive = self._new_buffer(self._stream_size())

    def _can_revive(self) -> bool:
        channel = self.channel
        return (
            self._owns_channel
            and not channel.is_open
            and channel.connection.will_revive(self._error or channel.error)
        )

    def _can_reopen(self) -> bool:
        """The broker closed our own channel over one operation, and the
        connection is still there (or being revived)."""
        channel = self.channel
        return self._owns_channel and not channel.is_open and channel_error(channel.error)

    async def _recover(self) -> None:
        """After a connection loss: wait for the reviving connection, then
        declare, qos and consume again on a new channel of it.  After a
        channel error (``_reopen_only``), the same on a new channel of the
        same connection.

        An exclusive queue can still be locked by the lost connection for a
        moment (the broker may not have noticed it died): ResourceLocked is
        retried with the connection's retry policy.
        """
        old = self.channel
        connection = old.connection
        reopen_only = self._reopen_only
        policy = connection.retry_policy
        waits = iter(()) if reopen_only or policy is None else policy.intervals()
        while True:
            await connection.wait_connected()
            self._salvage(old)
            self._tags.clear()
            self._no_ack_tags.clear()
            self._error = None
            try:
                channel = await connection.open_channel()
            except TrioMsgError as exc:
                # lost again while the channel opened: wait for the next one
                if connection.will_revive(exc):
                    if reopen_only:
                        self._reopen_only = reopen_only = False
                    continue
                raise
            self._channel = channel
            try:
                if self.auto_declare and not reopen_only:
                    for queue in self.queues:
                        if queue.server_named:
                            queue.name = ""  # gone with the old connection; get a new one
                await self._setup()
            except BaseException as exc:
                self._channel = old
                self._tags.clear()
                self._no_ack_tags.clear()
                with anyio.CancelScope(shield=True):
                    await channel.aclose()
                if isinstance(exc, ResourceLocked) and (wait := next(waits, None)) is not None:
                    await anyio.sleep(wait)
                    continue
                if isinstance(exc, TrioMsgError) and connection.will_revive(exc):
                    if reopen_only:  # the connection went too: a new one's queues
                        self._reopen_only = reopen_only = False
                    continue  # lost again while setting up: wait for the next one
                raise
            self._revive_pending = self._reopen_only = False
            return

    # --- kombu's methods ------------------------------------------------------

    async def declare(self) -> None:
        """Declare the queues, their exchanges and bindings."""
        await checkpoint()
        for queue in self.queues:
            await queue.declare(channel=self.channel)

    def register_callback(self, callback: MessageCallback) -> None:
        """Add a ``(body, message)`` callback, called after the others."""
        self.callbacks.append(callback)

    async def add_queue(self, queue: Queue) -> Queue:
        """Add a queue, consumed from at the next :meth:`consume` (as in
        kombu, adding does not start consuming).  With ``auto_declare``, an
        entered consumer declares it (and its exchange and bindings) now, as
        kombu does; before entering, entry declares it with the others.  A
        queue of the same name already added is replaced.

        Cancellation: the queue may or may not have been declared, and is
        not added."""
        await checkpoint()
        if self._channel is not None and self.auto_declare:
            await queue.declare(channel=self._channel)
        for i, known in enumerate(self.queues):
            if known.name == queue.name and queue.name:
                self.queues[i] = queue
                break
        else:
            self.queues.append(queue)
        return queue

    async def consume(self, no_ack: bool | None = None) -> None:
        """Start consuming from every queue not consumed from yet."""
        await checkpoint()
        no_ack = self.no_ack if no_ack is None else no_ack
        assert self._send is not None
        assert self._receive is not None
        if not self._tags and self._receive.sender_closed:
            self._reopen_stream()
        for queue in self.queues:
            if queue.name in self._tags:
                continue
            queue_no_ack = queue.no_ack if queue.no_ack is not None else no_ack
            arguments = dict(queue.consumer_arguments or {})
            if self.stream_offset is not None or _is_stream(queue):
                resume = self._stream_resume.get(queue.name)
                if resume is not None:
                    arguments["x-stream-offset"] = resume
                elif self.stream_offset is not None:
                    arguments["x-stream-offset"] = self.stream_offset
            tag = await self.channel.basic_consume(
                queue.name,
                self._send,
                consumer_tag=f"{self.tag_prefix}{len(self._tags) + 1}" if self.tag_prefix else "",
                no_ack=queue_no_ack,
                arguments=arguments,
                on_cancel=self._cancelled,
            )
            self._tags[queue.name] = tag
            if queue_no_ack:
                self._no_ack_tags.add(tag)

    def _reopen_stream(self) -> None:
        """Cancelling the last consumer closed the delivery stream (ending
        iteration); consuming again needs a new one.  Deliveries still
        buffered in the old one move over, in order."""
        assert self._receive is not None
        buffered: list[ev.Delivery] = []
        while True:
            try:
                buffered.append(self._receive.receive_nowait())
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.WouldBlock):
                break
        self._send, self._receive = self._new_buffer(max(self._stream_size(), len(buffered)))
        for delivery in buffered:
            self._send.send_nowait(delivery)
        self._error = None

    def _cancelled(self, error: TrioMsgError) -> None:
        if self._error is None:
            self._error = error
        if self._send is not None:
            self._send.close()

    async def cancel(self) -> None:
        """End all consumers.  Already-delivered messages are unaffected; the
        broker sends no more."""
        await checkpoint()
        while self._tags:
            queue, tag = next(iter(self._tags.items()))
            del self._tags[queue]
            await self.channel.basic_cancel(tag)

    async def close(self) -> None:
        """kombu's ``Consumer.close()``: the same as :meth:`cancel` (messages
        already delivered can still be settled).  Leaving ``async with``
        also closes the consumer's own channel.  Cancellation: as
        :meth:`cancel`, the consumers cancelled so far stay cancelled; the
        channel stays usable."""
        await self.cancel()

    async def cancel_by_queue(self, queue: str | Queue) -> None:
        """Cancel the consumer of one queue."""
        await checkpoint()
        name = queue.name if isinstance(queue, Queue) else queue
        tag = self._tags.pop(name, None)
        if tag is not None:
            await self.channel.basic_cancel(tag)

    def consuming_from(self, queue: str | Queue) -> bool:
        name = queue.name if isinstance(queue, Queue) else queue
        return name in self._tags

    async def purge(self) -> int:
        """Purge every ready message from all the queues (no undo)."""
        await checkpoint()
        total = 0
        for queue in self.queues:
            total += await self.channel.queue_purge(queue.name)
        return total

    async def flow(self, active: bool) -> None:
        """``channel.flow``; RabbitMQ only implements ``active=True``."""
        await self.channel.flow(active)

    async def qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False
    ) -> None:
        """``basic.qos``.  ``prefetch_size`` is not implemented by RabbitMQ
        (:class:`~trio_msg.errors.NotSupported`)."""
        await self.channel.basic_qos(prefetch_size, prefetch_count, apply_global)
        self._qos = (prefetch_size, prefetch_count, apply_global)

    async def recover(self, requeue: bool = True) -> None:
        """Redeliver unacknowledged messages.  RabbitMQ only implements
        ``requeue=True`` (kombu's default, ``False``, raises NotSupported)."""
        await self.channel.basic_recover(requeue)

    async def receive(self, body: Any, message: Message) -> None:
        """Dispatch to the callbacks, in order.  Raises NotImplementedError
        when none is registered."""
        if not self.callbacks:
            raise NotImplementedError("Consumer does not have any callbacks")
        for callback in self.callbacks:
            await _maybe_await(callback(body, message))
        await checkpoint()

    # --- receiving --------------------------------------------------------------

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        """The next message.  On a reviving connection, a Consumer made from
        the connection waits out a connection loss and consumes again on the
        new connection (messages delivered in ack mode on the lost one are
        redelivered by the broker).  A channel closed by the broker over one
        operation raises its error here once; the next call consumes again
        on a new channel.

        Cancellation: no message is lost; one that had arrived stays buffered
        for the next call.  A cancelled move to a new channel is taken up
        again by the next call."""
        if self._receive is None:
            raise RuntimeError("use the Consumer as 'async with Consumer(...) as consumer'")
        while True:
            if self._salvaged:
                await checkpoint()
                return self._salvaged.popleft()
            if self._revive_pending:
                await self._recover()
                continue
            channel = self.channel
            ck = channel.connection.checkpoints
            receive = self._receive  # a new one after each recovery
            try:
                # A cancellation is taken before a message is, never after
                # (the yield once it is taken is shielded).
                await ck.checkpoint_if_cancelled()
                if len(receive):
                    delivery = receive.receive_nowait()
                    await ck.cancel_shielded_checkpoint()
                else:
                    # (A test of the length, not WouldBlock: an RPC's consumer
                    # finds the buffer empty on every call.)  The wait writes
                    # the corked acks first: the broker's prefetch window
                    # waits for them.
                    delivery = await receive.wait_receive()  # it waits: a yield
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if self._can_revive():
                    self._revive_pending = True
                    continue
                if self._can_reopen():
                    # Said once, here; the next call opens a new channel.
                    error = self._error or channel.error
                    assert error is not None
                    channel.claim_error()  # told here
                    self._revive_pending = self._reopen_only = True
                    raise error from None
                if self._error is not None:
                    raise self._error from None
                if channel.error is not None and not self._owns_channel:
                    raise channel.error from None
                raise StopAsyncIteration from None
            no_ack = delivery.consumer_tag in self._no_ack_tags
            if not no_ack and not channel.is_unsettled(delivery.delivery_tag):
                # An ack-mode message whose channel has closed: its tag is dead
                # and the broker redelivers it.  (A no_ack message is already
                # settled and is still handed over: dropping it would lose it.)
                continue
            return self._message(channel, delivery, no_ack=no_ack)

    def _message(self, channel: Channel, delivery: ev.Delivery, *, no_ack: bool) -> Message:
        headers = delivery.properties.headers
        if headers and "x-stream-offset" in headers:
            self._handed_over(delivery.consumer_tag, headers["x-stream-offset"])
        return Message(
            channel,
            body=delivery.body,
            properties=delivery.properties,
            delivery_tag=delivery.delivery_tag,
            redelivered=delivery.redelivered,
            exchange=delivery.exchange,
            routing_key=delivery.routing_key,
            consumer_tag=delivery.consumer_tag,
            no_ack=no_ack,
            accept=self.accept,
        )

    def _handed_over(self, consumer_tag: str, offset: object) -> None:
        """A stream message goes to the user: consuming again starts after it."""
        if type(offset) is not int:
            return
        for name, tag in self._tags.items():
            if tag == consumer_tag:
                self._stream_resume[name] = offset + 1
                return

    async def _handle(self, message: Message) -> None:
        if self.on_message is not None:
            await _maybe_await(self.on_message(message))
            return
        try:
            body = message.decode()
        except Exception as exc:
            if self.on_decode_error is None:
                raise
            await _maybe_await(self.on_decode_error(message, exc))
            return
        await self.receive(body, message)

    async def run(self, limit: int | None = None) -> None:
        """Receive messages and dispatch each (``on_message``, or decode +
        callbacks; undecodable ones to ``on_decode_error``), forever or for
        ``limit`` messages.  Cancellation: stops between messages or inside a
        callback; messages not yet handled stay unacknowledged and return to
        the queue when the consumer's channel closes."""
        count = 0
        async for message in self:
            await self._handle(message)
            count += 1
            if limit is not None and count >= limit:
                return

    async def drain_events(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (kombu API)
        """Handle one message, waiting at most ``timeout`` seconds (then
        ``TimeoutError``), like kombu's ``connection.drain_events``."""
        with anyio.fail_after(timeout):
            message = await self.__anext__()
        await self._handle(message)
