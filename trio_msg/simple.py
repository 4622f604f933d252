"""kombu's simple interface: a queue to ``put`` to and ``get`` from.

``async with conn.SimpleQueue("name") as queue:`` declares a durable queue
bound to a durable direct exchange of the same name (routing key: the name)
and gives it a producer and a consumer::

    async with conn.SimpleQueue("tasks") as queue:
        await queue.put({"job": 1})
        message = await queue.get(timeout=1)   # trio_msg.errors.Empty if none came
        print(message.payload)
        await message.ack()

:class:`SimpleBuffer` is the same over a transient, exclusive, auto-delete
queue with ``no_ack`` (messages are settled as they are delivered).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

from . import errors
from ._lowlevel import closing_scope
from .channel import Channel, PublishResult
from .connection import Connection
from .entity import Exchange, Queue, maybe_declare
from .message import Message
from .messaging import Consumer, Producer

__all__ = ["SimpleBuffer", "SimpleQueue"]


class SimpleQueue:
    """A queue with ``put`` and ``get`` (kombu's ``SimpleQueue``).

    Made by :meth:`Connection.SimpleQueue <trio_msg.Connection.SimpleQueue>`
    (or from a :class:`~trio_msg.Connection` or :class:`~trio_msg.Channel`
    directly) and used as ``async with``: entering declares the exchange,
    the queue and the binding; leaving cancels the consumer and closes the
    channels it opened (messages got and not settled go back to the queue).

    Args:
        channel: A connection (the queue then opens its own channels, which
            move to the new connection by themselves when a reviving
            connection comes back) or a channel (used and left open).
        name: The queue's name, also the exchange's and the routing key;
            or a :class:`~trio_msg.Queue` (its exchange and routing key are
            used).
        no_ack: Consume (and ``get_nowait``) without acknowledgements.
        queue_opts: Keyword arguments for the :class:`~trio_msg.Queue`
            made from a name (``durable``, ``exclusive``, ``auto_delete``,
            ``max_priority``, ...).
        queue_args: The queue's declare arguments (``x-...``).
        exchange_opts: Keyword arguments for the :class:`~trio_msg.Exchange`
            made from a name (``type`` is ``"direct"`` unless given).
        serializer: The producer's default serializer.
        compression: The producer's default compression.
        accept: The content types :meth:`get` decodes (the consumer's
            accept list).
        prefetch_count: How many messages the broker may deliver ahead of
            :meth:`get` (and unsettled).  See the note below.

    As in kombu, nothing is consumed until the first blocking :meth:`get`;
    from then on messages are delivered ahead of :meth:`get` and wait in
    the consumer's buffer.  kombu sets no prefetch limit; here it is
    ``prefetch_count=1000`` by default, for the connection's sake: a
    consumer with no limit fills its buffer, and then the connection stops
    reading from the broker until ``get`` takes a message -- a ``put``
    waiting for its confirm in the same task would wait forever.  The
    difference shows only to a program that holds 1000 messages got and
    not settled: its next ``get`` finds nothing and raises
    :class:`~trio_msg.errors.Empty`, saying why.  ``prefetch_count=None``
    is kombu's (no limit), with that hazard.
    """

    #: kombu's exception class, as an attribute (``except queue.Empty``).
    Empty = errors.Empty

    no_ack: bool = False
    queue_opts: Mapping[str, Any] = {}
    queue_args: Mapping[str, Any] = {}
    exchange_opts: Mapping[str, Any] = {"type": "direct"}

    def __init__(
        self,
        channel: Connection | Channel,
        name: str | Queue,
        no_ack: bool | None = None,
        queue_opts: Mapping[str, Any] | None = None,
        queue_args: Mapping[str, Any] | None = None,
        exchange_opts: Mapping[str, Any] | None = None,
        serializer: str | None = None,
        compression: str | None = None,
        accept: Iterable[str] | None = None,
        *,
        prefetch_count: int | None = 1000,
    ) -> None:
        if not isinstance(channel, Connection | Channel):
            raise TypeError(
                f"expected a trio_msg Connection or Channel, not {type(channel).__name__}"
            )
        if no_ack is None:
            no_ack = self.no_ack
        if isinstance(name, Queue):
            queue = name
            exchange = queue.exchange if queue.exchange is not None else Exchange("")
            # Through the default exchange a queue is reached by its name.
            routing_key = queue.routing_key if exchange.name else queue.name
        else:
            exchange = Exchange(name, **{**self.exchange_opts, **(exchange_opts or {})})
            queue = Queue(
                name,
                exchange,
                name,
                queue_arguments={**self.queue_args, **(queue_args or {})},
                **{**self.queue_opts, **(queue_opts or {})},
            )
            routing_key = name
        if prefetch_count is not None and prefetch_count < 1:
            raise ValueError(f"prefetch_count must be at least 1 (or None), not {prefetch_count}")
        self.queue = queue
        self.no_ack = bool(no_ack)
        self.prefetch_count = prefetch_count
        self._target = channel
        self.producer = Producer(
            channel,
            exchange,
            routing_key=routing_key,
            serializer=serializer,
            compression=compression,
        )
        self.consumer = Consumer(
            channel,
            [queue],
            no_ack=self.no_ack,
            auto_declare=False,  # declared on entry
            accept=accept,
            prefetch_count=prefetch_count,
        )
        self._entered = False
        self._closed = False
        self._consuming = False
        #: Messages handed out by get() and possibly not settled yet (for
        #: the message of an Empty that the prefetch limit explains).
        self._outstanding: list[Message] = []

    def __repr__(self) -> str:
        return f"<trio_msg.{type(self).__name__} {self.queue.name!r}>"

    @property
    def channel(self) -> Channel:
        """The channel ``put``, ``get_nowait``, ``qsize`` and ``clear`` use."""
        return self.producer.channel

    # --- the context ---------------------------------------------------------

    async def __aenter__(self) -> SimpleQueue:
        if self._entered:
            raise RuntimeError(f"{self!r} was entered already")
        await self.producer.__aenter__()
        try:
            await maybe_declare(self.queue, self.producer.channel)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.producer.__aexit__(None, None, None)
            raise
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with closing_scope(exc_type):
            await self.close()

    async def close(self) -> None:
        """Cancel the consumer and close the channels this queue opened.
        Messages delivered and not settled go back to the queue (on a
        channel given by the caller, when that channel closes).  The queue
        itself stays (kombu's ``close``).  Idempotent.

        Cancellation: closing still happens (shielded and bounded), then
        the cancellation is delivered."""
        if self._closed or not self._entered:
            await checkpoint()
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                if self._consuming:
                    await self.consumer.__aexit__(None, None, None)
            finally:
                await self.producer.__aexit__(None, None, None)
        await checkpoint()

    aclose = close

    def _check(self) -> None:
        if not self._entered:
            raise RuntimeError(f"use it as 'async with {type(self).__name__}(...) as queue'")
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    # --- kombu's methods -----------------------------------------------------

    async def put(
        self,
        message: Any,
        serializer: str | None = None,
        headers: dict[str, Any] | None = None,
        compression: str | None = None,
        routing_key: str | None = None,
        **kwargs: Any,
    ) -> PublishResult | None:
        """Publish *message* to the queue (through its exchange), and wait
        for the broker's confirm.  Other keywords as
        :meth:`Producer.publish <trio_msg.Producer.publish>`.

        Cancellation: as :meth:`Producer.publish <trio_msg.Producer.publish>`
        (before it is sent, nothing was; afterwards the outcome is unknown)."""
        self._check()
        return await self.producer.publish(
            message,
            serializer=serializer,
            routing_key=routing_key,
            headers=headers,
            compression=compression,
            **kwargs,
        )

    async def get(self, block: bool = True, timeout: float | None = None) -> Message:  # noqa: ASYNC109 (kombu API)
        """The next message; wait at most ``timeout`` seconds (``None``:
        for as long as it takes) and raise
        :class:`~trio_msg.errors.Empty` if none came.  ``block=False`` is
        :meth:`get_nowait`.  ``timeout`` of 0 or less takes only a message
        already delivered.

        The first call starts consuming (kombu's way); the message is
        settled by the caller (``await message.ack()``) unless the queue is
        ``no_ack``.

        Cancellation: no message is lost; one that had arrived stays for
        the next call."""
        if not block:
            return await self.get_nowait()
        self._check()
        consumer = await self._consume()
        if timeout is not None and timeout <= 0:
            if not self._buffered():
                raise self._empty(timeout)
            timeout = None  # one is here: take it
        with anyio.move_on_after(math.inf if timeout is None else timeout):
            try:
                message = await consumer.__anext__()
            except StopAsyncIteration:
                if consumer.channel.error is not None:
                    raise consumer.channel.error from None
                raise RuntimeError(f"{self!r}: its consumer was cancelled") from None
            return self._handed_out(message)
        raise self._empty(timeout)

    async def get_nowait(self) -> Message:
        """A message if there is one now, else :class:`~trio_msg.errors.Empty`.

        A message already delivered to the consumer (after a blocking
        :meth:`get`) comes first; otherwise this asks the broker
        (``basic.get``), so it is a round trip, not a wait for a message to
        arrive.  Cancellation: if cancelled while asking the broker, a
        message the broker handed out meanwhile is not acknowledged and
        goes back to the queue when the channel closes."""
        self._check()
        if self._consuming and self._buffered():
            message = await self.consumer.__anext__()
            return self._handed_out(message)
        channel = await self.producer._usable_channel()
        got = await channel.basic_get(
            self.queue.name, no_ack=self.no_ack, accept=self.consumer.accept
        )
        if got is None:
            raise errors.Empty(f"queue {self.queue.name!r} is empty")
        return self._handed_out(got)

    async def qsize(self) -> int:
        """How many messages are ready in the queue (a passive
        ``queue.declare``; messages delivered and not acknowledged are not
        counted).  Cancellation: nothing changes."""
        self._check()
        channel = await self.producer._usable_channel()
        ok = await channel.queue_declare(self.queue.name, passive=True)
        return ok.message_count

    async def clear(self) -> int:
        """Delete every ready message (``queue.purge``); return how many.
        Cancellation: the purge may or may not have happened."""
        self._check()
        channel = await self.producer._usable_channel()
        return await channel.queue_purge(self.queue.name)

    def __len__(self) -> int:
        raise TypeError(
            f"len() of a {type(self).__name__} would need the broker: use 'await queue.qsize()'"
        )

    def __bool__(self) -> bool:
        return True

    # --- internals -----------------------------------------------------------

    async def _consume(self) -> Consumer:
        if not self._consuming:
            await self.consumer.__aenter__()
            self._consuming = True
        return self.consumer

    def _buffered(self) -> int:
        """How many deliveries wait in the consumer's buffer (none that
        count once its channel has closed: their tags are dead)."""
        receive = self.consumer._receive
        if receive is None or not self.consumer.channel.is_open:
            return 0
        return len(receive)

    def _handed_out(self, message: Message) -> Message:
        if not message.acknowledged:
            outstanding = self._outstanding
            if len(outstanding) >= 64:
                outstanding[:] = [m for m in outstanding if not m.acknowledged]
            outstanding.append(message)
        return message

    def _empty(self, timeout: float | None) -> errors.Empty:
        waited = "" if timeout is None else f" within {timeout} s"
        text = f"no message from queue {self.queue.name!r}{waited}"
        limit = self.prefetch_count
        if limit is not None and not self.no_ack:
            held = sum(1 for m in self._outstanding if not m.acknowledged and m.channel.is_open)
            self._outstanding = [m for m in self._outstanding if not m.acknowledged]
            if held >= limit:
                text += (
                    f": {held} messages got and not settled hold the whole prefetch window "
                    f"(prefetch_count={limit}); ack them, or raise prefetch_count"
                )
        return errors.Empty(text)


class SimpleBuffer(SimpleQueue):
    """kombu's ``SimpleBuffer``: a :class:`SimpleQueue` over a transient
    queue -- not durable, exclusive to this connection and deleted with it,
    messages transient, consumed with ``no_ack``.

    A ``no_ack`` consumer has no prefetch window: the broker sends as fast
    as it can, and when the consumer's buffer (1000 messages) is full the
    connection stops reading until :meth:`get` takes one -- a ``put``
    waiting for its confirm in the same task would then wait for ever.
    Keep getting while you put."""

    no_ack = True
    queue_opts = {"durable": False, "auto_delete": True, "exclusive": True}
    exchange_opts = {
        "type": "direct",
        "durable": False,
        "delivery_mode": "transient",
        "auto_delete": True,
    }
