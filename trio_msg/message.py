"""Received messages."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, cast

from . import _content
from ._protocol._build import field_names
from ._protocol.errors import MessageStateError
from ._protocol.frames import BasicProperties

if TYPE_CHECKING:
    from ._lowlevel import Checkpoints
    from .channel import Channel

__all__ = ["Message", "MessageProcess", "MessageState"]

_UNDECODED = object()
_PROPERTY_NAMES = tuple(n for n in field_names(BasicProperties) if n != "headers")


class MessageState(enum.Enum):
    RECEIVED = "RECEIVED"
    ACK = "ACK"
    REJECTED = "REJECTED"
    REQUEUED = "REQUEUED"


class Message:
    """A message received from a queue (by a consumer or ``basic_get``).

    ``body`` is the raw bytes as they arrived; ``payload`` (or
    :meth:`decode`) decompresses and deserializes them through the registries,
    honouring the consumer's accept list.

    Settling (:meth:`ack`, :meth:`reject`, :meth:`requeue`, :meth:`nack`)
    happens once: a second attempt raises
    :class:`~trio_msg.errors.MessageStateError` locally, so the broker never
    closes the channel over a double ack.  A message received with
    ``no_ack=True`` is already settled: :meth:`ack` does nothing (as in
    kombu), the others raise that error.

    Settling is queued when the method is called: ``message.ack()`` in a
    plain function settles, and ``await message.ack()`` does the same and
    is a checkpoint.
    """

    __slots__ = (
        "_decoded",
        "_no_ack",
        "_props",
        "accept",
        "body",
        "channel",
        "delivery_info",
        "delivery_tag",
        "state",
    )

    def __init__(
        self,
        channel: Channel,
        *,
        body: bytes,
        properties: BasicProperties,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        consumer_tag: str | None,
        no_ack: bool = False,
        accept: frozenset[str] | None = None,
    ) -> None:
        self.channel = channel
        self.body = body
        self._props = properties
        self.delivery_tag = delivery_tag
        self.delivery_info = {
            "exchange": exchange,
            "routing_key": routing_key,
            "redelivered": redelivered,
            "consumer_tag": consumer_tag,
            "delivery_tag": delivery_tag,
        }
        self.accept = accept
        self.state = MessageState.ACK if no_ack else MessageState.RECEIVED
        self._no_ack = no_ack
        self._decoded: Any = _UNDECODED

    def __repr__(self) -> str:
        return (
            f"<trio_msg.Message tag={self.delivery_tag} {self.state.value} "
            f"content_type={self.content_type!r} {len(self.body)} bytes>"
        )

    # --- properties ----------------------------------------------------------

    @property
    def content_type(self) -> str | None:
        return self._props.content_type

    @property
    def content_encoding(self) -> str | None:
        return self._props.content_encoding

    @property
    def headers(self) -> dict[str, Any]:
        return self._props.headers or {}

    @property
    def properties(self) -> dict[str, Any]:
        """Every basic property that was set, except ``headers``."""
        props = self._props
        # Not dataclasses.asdict: it deep-copies every value, on every access.
        return {
            name: value for name in _PROPERTY_NAMES if (value := getattr(props, name)) is not None
        }

    @property
    def basic_properties(self) -> BasicProperties:
        return self._props

    @property
    def redelivered(self) -> bool:
        return bool(self.delivery_info["redelivered"])

    @property
    def routing_key(self) -> str:
        return str(self.delivery_info["routing_key"])

    @property
    def exchange(self) -> str:
        return str(self.delivery_info["exchange"])

    @property
    def delivery_count(self) -> int:
        """How many times the broker delivered this message before: the
        ``x-delivery-count`` header a quorum queue adds to a redelivery (0
        when the header is absent: a quorum queue's first delivery, and
        every delivery from a classic queue, which does not count them --
        :attr:`redelivered` is all it says).  A quorum queue with a
        ``x-delivery-limit`` drops (or dead-letters) a message once this
        reaches the limit; see docs/cluster.rst."""
        headers = self._props.headers
        if not headers:
            return 0
        count = headers.get("x-delivery-count")
        return count if type(count) is int else 0

    @property
    def stream_offset(self) -> int | None:
        """The message's offset in the stream it was read from (the
        ``x-stream-offset`` header RabbitMQ adds to deliveries from a stream
        queue); ``None`` for a message from any other queue.  Consume from
        ``offset + 1`` to go on after it (see docs/cluster.rst)."""
        headers = self._props.headers
        if not headers:
            return None
        offset = headers.get("x-stream-offset")
        return offset if type(offset) is int else None

    @property
    def acknowledged(self) -> bool:
        """Whether the message has been settled (acked, rejected or requeued)."""
        return self.state is not MessageState.RECEIVED

    # --- decoding ------------------------------------------------------------

    def decode(self) -> Any:
        """Decompress (per the ``compression`` header) and deserialize the
        body.  Raises :class:`~trio_msg.errors.ContentDisallowed` when the
        content type is not accepted, :class:`~trio_msg.errors.DecodeError`
        when the body cannot be decoded."""
        if self._decoded is _UNDECODED:
            # Imported here: consuming raw bytes never loads the codecs.
            from . import compression, serialization

            body = self.body
            method = self.headers.get(_content.COMPRESSION_HEADER)
            if method:
                body = compression.decompress(body, str(method))
            self._decoded = serialization.loads(
                body, self.content_type, self.content_encoding, accept=self.accept
            )
        return self._decoded

    @property
    def payload(self) -> Any:
        """The decoded body (see :meth:`decode`)."""
        return self.decode()

    # --- settling -----------------------------------------------------------
    #
    # Settling is synchronous, as in kombu: the frame is queued whole when the
    # method is called (the core's ack is bytes appended to the outbound
    # buffer), so ``message.ack()`` in a plain ``def`` callback settles.  The
    # method returns an awaitable that is fine to drop; awaiting it is the
    # checkpoint async code expects.

    def _begin(self, settle: Callable[[], object]) -> _Settling | None:
        """The awaitable to return instead of settling, or None to settle now.

        Inside a cancelled scope nothing is settled: awaiting the result
        raises the cancellation (a dropped result settles nothing)."""
        ck = self.channel.connection.checkpoints
        if ck.cancelled():
            return _Settling(ck, later=settle)
        return None

    def _settle(self, state: MessageState) -> None:
        if self.state is not MessageState.RECEIVED:
            raise MessageStateError(
                f"message {self.delivery_tag} is already settled ({self.state.value})"
            )
        self.state = state

    def ack(self, multiple: bool = False) -> Awaitable[None]:
        """Acknowledge the message (with ``multiple``, every earlier unsettled
        message on the channel too).

        The ack is queued (whole) when this is called; the result may be
        awaited (``await message.ack()``, a checkpoint) or dropped
        (``message.ack()`` in a plain callback).  As in kombu, a message
        consumed with ``no_ack`` is acknowledged already: this does nothing.
        A message settled before raises
        :class:`~trio_msg.errors.MessageStateError` at once.

        Cancellation: called inside a cancelled scope, it settles nothing,
        and awaiting the result raises the cancellation.  Otherwise the ack
        is queued, and the await yields without raising it.
        """
        pending = self._begin(lambda: self.ack(multiple))
        if pending is not None:
            return pending
        if self._no_ack:
            return _Settling(self.channel.connection.checkpoints)
        self._settle(MessageState.ACK)
        try:
            self.channel.ack_nowait(self.delivery_tag, multiple)
        except BaseException:
            self.state = MessageState.RECEIVED
            raise
        return _Settling(self.channel.connection.checkpoints)

    def reject(self, requeue: bool = False) -> Awaitable[None]:
        """Reject the message; with ``requeue=False`` the broker drops it (or
        dead-letters it).

        Queued when called, awaited or not; cancellation as :meth:`ack`.
        """
        pending = self._begin(lambda: self.reject(requeue))
        if pending is not None:
            return pending
        self._settle(MessageState.REQUEUED if requeue else MessageState.REJECTED)
        try:
            self.channel.reject_nowait(self.delivery_tag, requeue)
        except BaseException:
            self.state = MessageState.RECEIVED
            raise
        return _Settling(self.channel.connection.checkpoints)

    def requeue(self) -> Awaitable[None]:
        """Give the message back to its queue.  As :meth:`reject`."""
        return self.reject(requeue=True)

    def nack(self, multiple: bool = False, requeue: bool = True) -> Awaitable[None]:
        """``basic.nack`` (a RabbitMQ extension): reject, optionally many.

        Queued when called, awaited or not; cancellation as :meth:`ack`.
        """
        pending = self._begin(lambda: self.nack(multiple, requeue))
        if pending is not None:
            return pending
        self._settle(MessageState.REQUEUED if requeue else MessageState.REJECTED)
        try:
            self.channel.nack_nowait(self.delivery_tag, multiple, requeue)
        except BaseException:
            self.state = MessageState.RECEIVED
            raise
        return _Settling(self.channel.connection.checkpoints)

    # --- processing ---------------------------------------------------------

    def process(
        self,
        requeue: bool = False,
        reject_on_redelivered: bool = False,
        ignore_processed: bool = False,
    ) -> MessageProcess:
        """Settle the message by how a block ends (aio-pika's ``process()``)::

            async with message.process():
                await handle(message.payload)

        * The block succeeds: the message is acked.
        * The block raises an exception: the message is rejected, back to
          its queue with ``requeue=True``, dropped (or dead-lettered) with
          ``requeue=False``; a message that was already delivered once
          before (``redelivered``) is dropped when ``reject_on_redelivered``
          is set, whatever ``requeue`` says.  The exception propagates.
        * The block is cancelled (or interrupted by another
          ``BaseException``, e.g. ``KeyboardInterrupt``): the message goes
          back to its queue, whatever ``requeue`` says -- the work was not
          done, and the message is not to blame.  (aio-pika rejects it as
          for an exception; with its default ``requeue=False`` a message
          cancelled half-way would be lost.)  The cancellation propagates.

        With ``ignore_processed``, a message the block settled itself is
        left alone; without it, settling inside the block and then leaving
        it normally raises :class:`~trio_msg.errors.MessageStateError` (a
        message is settled once).  A message received with ``no_ack`` is
        settled already: nothing is sent for it (``ignore_processed`` or
        not).

        When the channel has closed meanwhile, nothing is sent on failure:
        the broker gives the message back to its queue by itself (a
        ``requeue=False`` that could not be sent is logged as a warning on
        the ``trio_msg.message`` logger).  On success, the ack raises the
        channel's error, so the caller knows the message will come again.

        Settling on the way out is shielded from cancellation (it only
        queues a frame).
        """
        return MessageProcess(self, requeue, reject_on_redelivered, ignore_processed)


class _Settling:
    """What :meth:`Message.ack` and the other settling methods return.

    Not a coroutine: dropping it is fine (no "never awaited" warning).
    Awaiting it is a checkpoint; if the call was made in a cancelled scope
    (and settled nothing), the checkpoint raises the cancellation.
    """

    __slots__ = ("_ck", "_later")

    def __init__(self, ck: Checkpoints, later: Callable[[], object] | None = None) -> None:
        self._ck = ck
        self._later = later

    def __await__(self) -> Generator[Any, None, None]:
        later = self._later
        if later is not None:
            yield from self._ck.checkpoint().__await__()
            # Not cancelled after all (shielded since the call): settle now.
            self._later = None
            yield from cast("Awaitable[None]", later()).__await__()
            return
        # A full checkpoint whose cancel point comes first: a cancellation
        # that comes after the frame was queued is not raised here.
        yield from self._ck.checkpoint_if_cancelled().__await__()
        yield from self._ck.cancel_shielded_checkpoint().__await__()


class MessageProcess:
    """What :meth:`Message.process` returns: ``async with`` it."""

    __slots__ = (
        "_settled_before",
        "ignore_processed",
        "message",
        "reject_on_redelivered",
        "requeue",
    )

    def __init__(
        self,
        message: Message,
        requeue: bool,
        reject_on_redelivered: bool,
        ignore_processed: bool,
    ) -> None:
        self.message = message
        self.requeue = requeue
        self.reject_on_redelivered = reject_on_redelivered
        self.ignore_processed = ignore_processed
        self._settled_before = False

    async def __aenter__(self) -> Message:
        from anyio.lowlevel import checkpoint

        await checkpoint()
        # A no_ack message (or one settled before the block) has nothing to settle.
        self._settled_before = self.message.acknowledged
        return self.message

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: object,
    ) -> None:
        import anyio
        from anyio.lowlevel import checkpoint

        # Shielded: a cancellation must neither stop the settling nor replace
        # the block's own exception; every path still yields once.
        with anyio.CancelScope(shield=True):
            if not await self._settle(exc_type):
                await checkpoint()  # (shielded: it cannot raise here)

    async def _settle(self, exc_type: type[BaseException] | None) -> bool:
        """Settle the message as the block ended; whether anything was sent."""
        message = self.message
        if self._settled_before or (self.ignore_processed and message.acknowledged):
            return False
        if exc_type is None:
            await message.ack()
            return True
        if message.acknowledged:
            return False  # settled by the block, which then failed: its error goes on
        # Cancelled or interrupted: the work was not done; give it back.
        requeue = self._requeue() if issubclass(exc_type, Exception) else True
        if not message.channel.is_open:
            if not requeue:
                import logging

                logging.getLogger("trio_msg.message").warning(
                    "message %d was not rejected: its channel is closed "
                    "(the broker will deliver it again)",
                    message.delivery_tag,
                )
            return False
        await message.reject(requeue=requeue)
        return True

    def _requeue(self) -> bool:
        if self.reject_on_redelivered and self.message.redelivered:
            return False
        return self.requeue
