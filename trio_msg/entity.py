"""Exchange, queue and binding declarations: kombu's entities, as values.

:class:`Exchange`, :class:`Queue` and :class:`binding` describe broker
topology, with kombu's arguments and methods.  As in kombu, an exchange or
queue may be *bound* to a channel (``queue(channel)``, ``queue.bind(channel)``
return a bound copy; ``maybe_bind`` binds in place; ``revive`` moves it);
its async methods then act on that channel, or on the one given as
``channel=``, and raise :exc:`~trio_msg.errors.NotBoundError` with neither.
Binding is not part of an entity's value, so one entity can be declared on
any number of channels and connections (and replayed after a reconnect).
:func:`maybe_declare` declares an entity once per connection.

Decisions worth knowing (where we follow kombu and where we do not):

* **kombu's signatures.**  Methods take kombu's arguments in kombu's order
  (``declare(nowait=False, passive=None, channel=None)``,
  ``bind_to(exchange, routing_key, arguments, nowait, channel)``, ...).
  ``nowait`` is accepted but every call waits for the broker's reply.  A
  channel passed where kombu has a flag (trio_msg's old form
  ``queue.declare(channel)``) is a :exc:`TypeError`.  ``Queue.bind(channel)``
  binds the entity, as in kombu; :meth:`Queue.queue_bind` creates the
  binding to the queue's exchange (and :meth:`Queue.declare` those of
  *bindings* too).  ``Queue.consume`` is not supported (use a Consumer).

* **Values.**  Exchanges and bindings are immutable (apart from the
  channel an exchange is bound to, which is not part of its value).  A queue is immutable
  too, except for the :attr:`~Queue.name` of a *server-named* queue (one
  created with ``name=""``): :meth:`Queue.declare` stores the name the
  broker chose, as kombu does, and returns it.  Assigning ``name`` on a
  queue that was given a name raises :exc:`AttributeError`.
* **Equality and hashing** follow what a declaration would send to the
  broker.  An exchange is identified by name, type, durable, auto_delete,
  internal and arguments; ``delivery_mode``, ``passive`` and ``no_declare``
  do not take part.  A queue is identified by name, whether it is
  server-named, durable, exclusive, auto_delete, its effective arguments,
  its exchange, routing key, binding arguments and bindings (as a set);
  ``no_ack``, ``consumer_arguments``, ``on_declared`` and ``no_declare`` do
  not take part.  A server-named queue hashes without its name, so its hash
  does not change when the broker names it (equality still compares the
  name).
* **The default exchange** (``""``) is never declared, bound, unbound or
  deleted: declaring it is a no-op (as in kombu), binding to it or deleting
  it raises :exc:`ValueError` locally instead of letting the broker close
  the channel with 403.  ``Queue(name, routing_key=...)`` with no exchange
  (or the default one) is accepted, as in kombu: the routing key is kept
  for whoever publishes to the queue, and nothing is bound with it.
* **``amq.*`` exchanges** are reserved by the AMQP spec, which lets a client
  declare them only passively.  kombu skips them altogether; we always
  declare them *passively*, whatever ``passive`` says, so a misspelt
  ``amq.topik`` fails at declaration (404) rather than at the first publish.
* **Queue arguments.**  ``message_ttl`` and ``expires`` are seconds (int or
  float) and go on the wire as ``int(float(seconds) * 1000.0)`` milliseconds
  -- exactly kombu's conversion, so that a kombu process and a trio_msg
  process declaring the same queue send the same arguments (RabbitMQ
  refuses a redeclaration with different ones).  A convenience argument and
  the same ``x-`` key in ``queue_arguments`` must agree, or
  :exc:`ValueError` (kombu silently lets the convenience win).
* **``exclusive`` implies ``auto_delete``**, as in kombu: an exclusive queue
  is declared with ``auto_delete=True``.
* **A string exchange** (``Queue("q", exchange="tasks")`` or
  ``binding("tasks")``) means ``Exchange("tasks")``: a durable direct
  exchange that is declared with the queue, as in kombu (Celery's queue
  configuration relies on this).  Pass an :class:`Exchange` with
  ``no_declare=True`` (or ``passive=True``) to bind to an existing exchange
  of another type.
* **Unbinding a :class:`binding`** uses its ``unbind_arguments``, or its
  ``arguments`` when those are ``None`` (kombu sends no arguments, which
  cannot remove a headers-exchange binding made with arguments).  Pass
  ``unbind_arguments={}`` to unbind with an empty table.
* **Declaration cache.**  :func:`maybe_declare` remembers declared entities
  in ``channel.connection.declared_entities``, so the cache lives and dies
  with the connection.  Like kombu, it never caches what may vanish from the
  broker behind our back: server-named queues, auto-delete (and so
  exclusive) exchanges and queues, and queues with an ``x-expires``.  The
  cache is ordered (a :class:`DeclarationLedger`): a reviving connection
  declares its entities again, in the order they were first declared,
  before anyone may use the new connection, so that what the cache says
  exists does exist (a non-durable queue does not survive a broker restart).

Cancellation: every method here is a checkpoint, also when it turns out to
have nothing to send.  Cancelling one leaves the channel open and usable
(the driver discards the late reply), but whether the broker carried out a
request that was in flight is unknown: the exchange, queue or binding may or
may not exist, the purge or delete may or may not have happened.  Repeating
a declaration or binding is harmless, so the usual answer is to do it again.
A cancelled declaration of a server-named queue leaves :attr:`Queue.name`
empty even if the broker created the queue (it then belongs to nobody and
goes away with the connection if it is exclusive).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import anyio.lowlevel

from ._ports import DeclarationLedger, ReplayStep
from ._protocol.frames import BasicProperties
from .channel import QueueDeclareOk
from .errors import ContentDisallowed, NotBoundError, NotSupported

if TYPE_CHECKING:
    from .channel import Channel, PublishResult
    from .message import Message

__all__ = [
    "DELIVERY_MODES",
    "PERSISTENT_DELIVERY_MODE",
    "QUEUE_TYPES",
    "TRANSIENT_DELIVERY_MODE",
    "DeclarationLedger",
    "Exchange",
    "PreparedMessage",
    "Queue",
    "QueueDeclareOk",
    "binding",
    "maybe_declare",
    "maybe_delivery_mode",
]

#: ``delivery_mode`` 1: the broker keeps the message in memory only.
TRANSIENT_DELIVERY_MODE = 1
#: ``delivery_mode`` 2: the broker writes the message to disk (in a durable queue).
PERSISTENT_DELIVERY_MODE = 2
#: The names ``delivery_mode`` accepts besides the numbers.
DELIVERY_MODES: Mapping[str, int] = MappingProxyType(
    {"transient": TRANSIENT_DELIVERY_MODE, "persistent": PERSISTENT_DELIVERY_MODE}
)
#: The values ``Queue(queue_type=...)`` accepts (RabbitMQ's ``x-queue-type``).
QUEUE_TYPES = frozenset({"classic", "quorum", "stream"})

_RESERVED_EXCHANGE_PREFIX = "amq."
#: The basic properties :meth:`Exchange.Message` takes by name in *properties*.
_MESSAGE_PROPERTIES = frozenset(
    {
        "content_type",
        "content_encoding",
        "headers",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    }
)
_SHORTSTR_MAX = 255


class PreparedMessage(NamedTuple):
    """A message made by :meth:`Exchange.Message`, for :meth:`Exchange.publish`:
    the body as bytes and its properties."""

    body: bytes
    properties: BasicProperties


# --- helpers ------------------------------------------------------------------


def maybe_delivery_mode(
    value: int | str | None, default: int | None = PERSISTENT_DELIVERY_MODE
) -> int | None:
    """Return *value* as delivery mode 1 or 2, or *default* when it is ``None``.

    Accepts 1, 2, ``"transient"`` and ``"persistent"``; anything else raises
    :exc:`ValueError` (or :exc:`TypeError` for a non-int, non-str).
    """
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return DELIVERY_MODES[value]
        except KeyError:
            raise ValueError(
                f"delivery_mode must be 1, 2, 'transient' or 'persistent', not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"delivery_mode must be an int or str, not {type(value).__name__}")
    if value not in (TRANSIENT_DELIVERY_MODE, PERSISTENT_DELIVERY_MODE):
        raise ValueError(f"delivery_mode must be 1 or 2, not {value!r}")
    return value


def _check_shortstr(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if len(value.encode("utf-8")) > _SHORTSTR_MAX:
        raise ValueError(f"{what} is longer than {_SHORTSTR_MAX} bytes (UTF-8)")
    return value


def _check_int(what: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < low:
        raise ValueError(f"{what} must be >= {low}, got {value}")
    return value


def _seconds_to_ms(what: str, value: object, low_ms: int) -> int:
    """kombu's ``maybe_s_to_ms``: ``int(float(seconds) * 1000.0)``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    ms = int(float(value) * 1000.0)
    if ms < low_ms:
        raise ValueError(f"{what} must be at least {low_ms} ms, got {value!r} s ({ms} ms)")
    return ms


def _copy_table(what: str, table: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep copy of an argument table (nested mappings and lists copied)."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise TypeError(f"{what} must be a mapping, not {type(table).__name__}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} keys must be str, not {type(key).__name__}")
        out[key] = _copy_value(what, value)
    return out


def _copy_value(what: str, value: object) -> Any:
    if isinstance(value, Mapping):
        return _copy_table(what, value)
    if isinstance(value, list | tuple):
        return [_copy_value(what, v) for v in value]
    return value


def _freeze(value: object) -> Hashable:
    """A hashable image of an argument value that keeps types apart
    (``True``, ``1`` and ``1.0`` are different table values on the wire)."""
    if isinstance(value, Mapping):
        return ("table", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("array", tuple(_freeze(v) for v in value))
    if isinstance(value, bytearray | memoryview):
        return ("bytes", bytes(value))
    return (type(value).__name__, value)


def _frozen_table(what: str, table: Mapping[str, Any]) -> Hashable:
    key = _freeze(table)
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"{what} holds a value that is neither hashable nor a table/list") from None
    return key


def _wire_table(table: Mapping[str, Any]) -> dict[str, Any] | None:
    """What goes to the channel: a fresh copy, or ``None`` for no arguments."""
    return _copy_table("arguments", table) if table else None


def _readonly(table: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(table)


def _exchange_name(what: str, exchange: Exchange | str) -> str:
    if isinstance(exchange, Exchange):
        return exchange.name
    return _check_shortstr(what, exchange)


def _bindable_exchange_name(exchange: Exchange | str) -> str:
    name = _exchange_name("exchange", exchange)
    if not name:
        raise ValueError("nothing can be bound to or unbound from the default exchange ''")
    return name


class _Immutable:
    """Instances refuse attribute assignment once constructed."""

    __slots__ = ()

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (cannot set {key!r})")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable (cannot delete {key!r})")

    def _init(self, key: str, value: object) -> None:
        object.__setattr__(self, key, value)


# --- binding to a channel (kombu's MaybeChannelBound) -----------------------------

_B = TypeVar("_B", bound="_ChannelBound")


def _check_channel(channel: object) -> Channel:
    """*channel* if it is a channel (a :class:`~trio_msg.Channel` or
    anything with its methods), else :exc:`TypeError`."""
    if not hasattr(channel, "queue_declare"):
        hint = (
            "; open one with 'await connection.open_channel()' (kombu's "
            "connection.default_channel has no trio_msg equivalent)"
            if hasattr(channel, "open_channel")
            else ""
        )
        raise TypeError(f"entities bind to a Channel, not {type(channel).__name__}{hint}")
    return channel  # type: ignore[return-value]


def _flag(what: str, value: object) -> bool:
    """A kombu flag argument (``nowait``, ``if_unused``, ...) as a bool.

    A channel passed where the flag goes (trio_msg's old call form
    ``queue.declare(channel)``) is a :exc:`TypeError`, not a true flag.
    """
    if hasattr(value, "queue_declare") or hasattr(value, "open_channel"):
        raise TypeError(
            f"{what} got a {type(value).__name__}: pass a channel as channel=..., "
            "or bind the entity to it first (entity(channel).method())"
        )
    return bool(value)


class _ChannelBound:
    """kombu's ``MaybeChannelBound``: an entity may be *bound* to a channel.

    Binding is not part of an entity's value: a bound entity equals (and
    hashes like) the unbound one.  :meth:`bind` and ``entity(channel)``
    return a bound copy; :meth:`maybe_bind` binds the entity itself unless
    it is bound already; :meth:`revive` moves a bound entity to another
    channel.
    """

    __slots__ = ()
    _channel: Channel | None

    def __call__(self: _B, channel: Channel) -> _B:
        """``entity(channel)`` is ``entity.bind(channel)``."""
        return self.bind(channel)

    def bind(self: _B, channel: Channel) -> _B:
        """A copy of this entity bound to *channel* (kombu's meaning).

        :exc:`TypeError` unless *channel* is a channel (a Connection is not:
        open a channel on it).
        """
        return self._clone().maybe_bind(channel)

    def maybe_bind(self: _B, channel: Channel | None) -> _B:
        """Bind this entity itself to *channel*, unless it is bound already
        (or *channel* is ``None``); return it."""
        if not self.is_bound and channel is not None:
            object.__setattr__(self, "_channel", _check_channel(channel))
            self.when_bound()
        return self

    def revive(self, channel: Channel) -> None:
        """Move a bound entity to *channel* (after a reconnect); an unbound
        entity stays unbound."""
        if self.is_bound:
            object.__setattr__(self, "_channel", _check_channel(channel))
            self.when_bound()

    def when_bound(self) -> None:
        """Called when the entity is bound (a :class:`Queue` binds its
        exchange to the same channel)."""

    @property
    def is_bound(self) -> bool:
        """Whether the entity is bound to a channel."""
        return self._channel is not None

    @property
    def channel(self) -> Channel:
        """The channel the entity is bound to; :exc:`~trio_msg.errors.NotBoundError`
        if it is not bound."""
        channel = self._channel
        if channel is None:
            raise NotBoundError(
                f"can't call a method of {type(self).__name__} not bound to a channel: "
                f"bind it ({type(self).__name__.lower()}(channel)) or pass channel=..."
            )
        return channel

    def _use(self, channel: Channel | None) -> Channel:
        """*channel* if given, else the bound one (kombu's ``channel or self.channel``)."""
        return self.channel if channel is None else _check_channel(channel)

    def _clone(self: _B) -> _B:
        """An unbound copy sharing every value."""
        new = object.__new__(type(self))
        for cls in type(self).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if name == "_channel":
                    continue
                try:
                    value = object.__getattribute__(self, name)
                except AttributeError:
                    continue
                object.__setattr__(new, name, value)
        if hasattr(self, "__dict__"):
            new.__dict__.update(self.__dict__)
        object.__setattr__(new, "_channel", None)
        return new

    def _bound_repr(self) -> str:
        channel = self._channel
        if channel is None:
            return ""
        return f" bound to chan:{getattr(channel, 'channel_id', '?')}"


def _from_dict(cls: type[Any], kwargs: dict[str, Any]) -> Any:
    """Unpickle an entity from its :meth:`as_dict` (kombu's ``unpickle_dict``)."""
    return cls(**kwargs)


# --- Exchange -----------------------------------------------------------------


class Exchange(_ChannelBound, _Immutable):
    """An exchange declaration (kombu's ``Exchange``).

    Args:
        name: The exchange name; ``""`` is the default exchange, which is
            never declared.
        type: ``"direct"`` (also for ``""`` or ``None``, as in kombu),
            ``"fanout"``, ``"topic"``, ``"headers"`` or a plugin's type
            (``"x-consistent-hash"``, ...).
        channel: Bind the exchange to this channel (see :meth:`bind`).
        durable: Survives a broker restart.
        auto_delete: Deleted by the broker when its last binding goes.
        internal: Cannot be published to directly, only via exchange bindings.
        arguments: The ``arguments`` table of ``exchange.declare``
            (``alternate-exchange``, ...); copied.
        delivery_mode: The default delivery mode for messages a producer
            publishes to this exchange: 1, 2, ``"transient"``,
            ``"persistent"`` or ``None`` (the producer's default).  Not part
            of the declaration.
        passive: Only check that the exchange exists (404 closes the channel
            if not) instead of creating it.
        no_declare: Never declare this exchange (its queues still bind to it).

    The methods that talk to the broker use the channel the exchange is
    bound to (``exchange(channel)``, :meth:`bind`), or the one given as
    ``channel=``; with neither they raise
    :exc:`~trio_msg.errors.NotBoundError`.  Their ``nowait`` argument is
    accepted for kombu's sake, but every call waits for the broker's reply,
    so errors surface at the call.
    """

    TRANSIENT_DELIVERY_MODE = TRANSIENT_DELIVERY_MODE
    PERSISTENT_DELIVERY_MODE = PERSISTENT_DELIVERY_MODE

    __slots__ = (
        "_channel",
        "_key",
        "arguments",
        "auto_delete",
        "delivery_mode",
        "durable",
        "internal",
        "name",
        "no_declare",
        "passive",
        "type",
    )

    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    #: A read-only view of the declaration arguments.
    arguments: Mapping[str, Any]
    #: ``None``, 1 or 2 (names are converted).
    delivery_mode: int | None
    passive: bool
    no_declare: bool
    _key: tuple[Hashable, ...]

    def __init__(
        self,
        name: str | None = "",
        type: str | None = "direct",
        channel: Channel | None = None,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
        delivery_mode: int | str | None = None,
        passive: bool = False,
        no_declare: bool = False,
    ) -> None:
        if name is None:  # kombu's from_dict passes None for "no exchange"
            name = ""
        type = type or "direct"
        _check_shortstr("exchange name", name)
        _check_shortstr("exchange type", type)
        args = _copy_table("exchange arguments", arguments)
        self._init("_channel", None)
        self._init("name", name)
        self._init("type", type)
        self._init("durable", bool(durable))
        self._init("auto_delete", bool(auto_delete))
        self._init("internal", bool(internal))
        self._init("arguments", _readonly(args))
        self._init("delivery_mode", maybe_delivery_mode(delivery_mode, default=None))
        self._init("passive", bool(passive))
        self._init("no_declare", bool(no_declare))
        self._init(
            "_key",
            (
                name,
                type,
                self.durable,
                self.auto_delete,
                self.internal,
                _frozen_table("exchange arguments", args),
            ),
        )
        self.maybe_bind(channel)

    @property
    def is_default(self) -> bool:
        """Whether this is the default exchange ``""``."""
        return not self.name

    @property
    def is_reserved(self) -> bool:
        """Whether the name starts with ``amq.`` (declared passively only)."""
        return self.name.startswith(_RESERVED_EXCHANGE_PREFIX)

    @property
    def can_cache_declaration(self) -> bool:
        """Whether :func:`maybe_declare` may remember this declaration."""
        return not self.auto_delete

    def _will_declare(self) -> bool:
        return not self.no_declare and not self.is_default

    def _declares_anything(self) -> bool:
        return self._will_declare()

    async def declare(
        self,
        nowait: bool = False,
        passive: bool | None = None,
        channel: Channel | None = None,
    ) -> None:
        """Declare the exchange (``exchange.declare``).

        Args:
            nowait: Accepted (kombu's); the call still waits for the reply.
            passive: Only check that the exchange exists; ``None`` uses
                :attr:`passive`.  ``amq.*`` exchanges are always declared
                passively.
            channel: The channel to use instead of the bound one.

        Does nothing (but still checkpoints) for the default exchange and
        when :attr:`no_declare` is set.  On cancellation the exchange may or
        may not have been declared; the channel stays usable.
        """
        _flag("nowait", nowait)
        if not self._will_declare():
            await anyio.lowlevel.checkpoint()
            return
        ch = self._use(channel)
        if passive is None:
            passive = self.passive
        await ch.exchange_declare(
            self.name,
            self.type,
            passive=_flag("passive", passive) or self.is_reserved,
            durable=self.durable,
            auto_delete=self.auto_delete,
            internal=self.internal,
            arguments=_wire_table(self.arguments),
        )

    async def bind_to(
        self,
        exchange: Exchange | str = "",
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        nowait: bool = False,
        channel: Channel | None = None,
    ) -> None:
        """Bind this exchange (the destination) to *exchange* (the source).

        Messages routed by *exchange* with a matching key then also go
        through this one.  Neither may be the default exchange
        (:exc:`ValueError`).  On cancellation the binding may or may not
        exist; the channel stays usable.
        """
        _flag("nowait", nowait)
        source = _bindable_exchange_name(exchange)
        destination = _bindable_exchange_name(self)
        _check_shortstr("routing_key", routing_key)
        await self._use(channel).exchange_bind(
            destination,
            source,
            routing_key=routing_key,
            arguments=_wire_table(_copy_table("binding arguments", arguments)),
        )

    async def unbind_from(
        self,
        source: Exchange | str = "",
        routing_key: str = "",
        nowait: bool = False,
        arguments: Mapping[str, Any] | None = None,
        channel: Channel | None = None,
    ) -> None:
        """Remove the binding of this exchange to *source* made by :meth:`bind_to`.

        (kombu's argument order: *nowait* before *arguments*.)  On
        cancellation the binding may or may not be gone; the channel stays
        usable.
        """
        _flag("nowait", nowait)
        source_name = _bindable_exchange_name(source)
        destination = _bindable_exchange_name(self)
        _check_shortstr("routing_key", routing_key)
        await self._use(channel).exchange_unbind(
            destination,
            source_name,
            routing_key=routing_key,
            arguments=_wire_table(_copy_table("binding arguments", arguments)),
        )

    def Message(  # kombu's name
        self,
        body: bytes | str,
        delivery_mode: int | str | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> PreparedMessage:
        """A message for :meth:`publish` (kombu's ``Exchange.Message``).

        Like kombu's, it does not serialize: *body* is ``bytes``, or a
        ``str`` encoded with *content_encoding* (``utf-8`` when not given,
        which is then also sent as the content encoding).  Anything else is
        a :exc:`TypeError` (publish objects with a
        :class:`~trio_msg.Producer`).  *delivery_mode* defaults to this
        exchange's, else persistent, as in kombu.  *properties* holds other
        basic properties by name (``correlation_id``, ``reply_to``,
        ``expiration`` (a string of milliseconds), ``message_id``, ...);
        an unknown name is a :exc:`TypeError`.  Needs no channel and does no
        IO.
        """
        props = dict(properties or {})
        unknown = set(props) - _MESSAGE_PROPERTIES
        if unknown:
            raise TypeError(f"unknown message properties: {', '.join(sorted(unknown))}")
        if "content_encoding" in props and content_encoding is None:
            content_encoding = props.pop("content_encoding")
        if isinstance(body, str):
            content_encoding = content_encoding or "utf-8"
            raw = body.encode(content_encoding)
        elif isinstance(body, bytes | bytearray | memoryview):
            raw = bytes(body)
        else:
            raise TypeError(
                f"Exchange.Message takes a bytes or str body, not {type(body).__name__} "
                "(it does not serialize: use a Producer to publish objects)"
            )
        props["delivery_mode"] = maybe_delivery_mode(
            delivery_mode if delivery_mode is not None else self.delivery_mode
        )
        if priority is not None:
            props["priority"] = _check_int("priority", priority, 0)
        if content_type is not None:
            props["content_type"] = content_type
        if content_encoding is not None:
            props["content_encoding"] = content_encoding
        if headers is not None:
            props["headers"] = _copy_table("headers", headers)
        return PreparedMessage(raw, BasicProperties(**props))

    async def publish(
        self,
        message: PreparedMessage | bytes | str,
        routing_key: str | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        exchange: Exchange | str | None = None,
        *,
        channel: Channel | None = None,
    ) -> PublishResult | None:
        """Publish *message* to this exchange (or to *exchange*), as kombu's
        ``Exchange.publish``.

        A ``str`` or ``bytes`` message goes through :meth:`Message` first.
        ``immediate=True`` raises :class:`~trio_msg.errors.NotSupported`
        (RabbitMQ removed it).  On a channel in confirm mode this returns the
        :class:`~trio_msg.PublishResult` to wait on (``await
        result.wait()``), else ``None``; it does not wait for the confirm.
        Cancellation: as :meth:`trio_msg.Channel.basic_publish` (if
        cancelled, nothing was queued).
        """
        ch = self._use(channel)
        if isinstance(message, bytes | str):
            message = self.Message(message)
        elif not isinstance(message, PreparedMessage):
            raise TypeError(
                "Exchange.publish takes a message from Exchange.Message (or bytes or str), "
                f"not {type(message).__name__}"
            )
        if exchange is None or exchange == "":
            name = self.name
        else:
            name = _exchange_name("exchange", exchange)
        routing_key = "" if routing_key is None else _check_shortstr("routing_key", routing_key)
        return await ch.basic_publish(
            message.body,
            name,
            routing_key,
            message.properties,
            mandatory=_flag("mandatory", mandatory),
            immediate=_flag("immediate", immediate),
        )

    async def delete(
        self,
        if_unused: bool = False,
        nowait: bool = False,
        *,
        channel: Channel | None = None,
    ) -> None:
        """Delete the exchange (``exchange.delete``).

        Args:
            if_unused: Only delete it if it has no bindings (otherwise the
                broker closes the channel with 406).
            nowait: Accepted (kombu's); the call still waits for the reply.
            channel: The channel to use instead of the bound one.

        The default exchange cannot be deleted (:exc:`ValueError`).  On
        cancellation the exchange may or may not have been deleted; the
        channel stays usable.
        """
        if_unused = _flag("if_unused", if_unused)
        _flag("nowait", nowait)
        if self.is_default:
            raise ValueError("the default exchange '' cannot be deleted")
        await self._use(channel).exchange_delete(self.name, if_unused=if_unused)

    def binding(
        self,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        unbind_arguments: Mapping[str, Any] | None = None,
    ) -> binding:
        """A :class:`binding` to this exchange, for ``Queue(bindings=[...])``."""
        return binding(self, routing_key, arguments, unbind_arguments)

    def as_dict(self, recurse: bool = False) -> dict[str, Any]:
        """The constructor arguments, as kombu's ``as_dict``:
        ``Exchange(**e.as_dict())`` equals *e* (unbound)."""
        return {
            "name": self.name,
            "type": self.type,
            "arguments": _copy_table("arguments", self.arguments),
            "durable": self.durable,
            "passive": self.passive,
            "auto_delete": self.auto_delete,
            "delivery_mode": self.delivery_mode,
            "no_declare": self.no_declare,
            "internal": self.internal,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return _from_dict, (type(self), self.as_dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Exchange):
            return self._key == other._key
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Exchange", self._key))

    def __repr__(self) -> str:
        return f"<Exchange {self.name!r}({self.type}){self._bound_repr()}>"

    def __str__(self) -> str:
        return f"Exchange {self.name or repr('')}({self.type})"

    def __copy__(self) -> Exchange:
        return self if self._channel is None else self._clone()

    def __deepcopy__(self, memo: dict[int, object]) -> Exchange:
        return self.__copy__()


# --- binding ------------------------------------------------------------------


class binding(_Immutable):
    """One binding of a queue (or exchange) to an exchange.

    Args:
        exchange: The source exchange (an :class:`Exchange`, or a name, which
            means ``Exchange(name)``); required, and not the default exchange.
        routing_key: The binding key.
        arguments: The ``queue.bind`` / ``exchange.bind`` arguments (e.g. the
            match table of a headers exchange); copied.
        unbind_arguments: The arguments for unbinding; ``None`` means the same
            as *arguments*.
    """

    __slots__ = ("_key", "arguments", "exchange", "routing_key", "unbind_arguments")

    exchange: Exchange
    routing_key: str
    arguments: Mapping[str, Any]
    unbind_arguments: Mapping[str, Any]
    _key: tuple[Hashable, ...]

    def __init__(
        self,
        exchange: Exchange | str | None = None,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        unbind_arguments: Mapping[str, Any] | None = None,
    ) -> None:
        if exchange is None:
            raise ValueError("a binding needs an exchange")
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        elif not isinstance(exchange, Exchange):
            raise TypeError(
                f"binding exchange must be an Exchange or str, not {type(exchange).__name__}"
            )
        if exchange.is_default:
            raise ValueError("nothing can be bound to the default exchange ''")
        _check_shortstr("routing_key", routing_key)
        args = _copy_table("binding arguments", arguments)
        unbind_args = (
            args if unbind_arguments is None else _copy_table("unbind arguments", unbind_arguments)
        )
        self._init("exchange", exchange)
        self._init("routing_key", routing_key)
        self._init("arguments", _readonly(args))
        self._init("unbind_arguments", _readonly(unbind_args))
        self._init(
            "_key",
            (
                exchange,
                routing_key,
                _frozen_table("binding arguments", args),
                _frozen_table("unbind arguments", unbind_args),
            ),
        )

    async def declare(self, channel: Channel, nowait: bool = False) -> None:
        """Declare this binding's exchange on *channel* (kombu's
        ``binding.declare``; see :meth:`Exchange.declare`).

        On cancellation the exchange may or may not have been declared; the
        channel stays usable.
        """
        await self.exchange.declare(nowait=nowait, channel=channel)

    async def bind(
        self,
        entity: Queue | Exchange,
        nowait: bool = False,
        channel: Channel | None = None,
    ) -> None:
        """Bind *entity* (a queue, or a destination exchange) with this
        binding, on *channel* or the one *entity* is bound to.

        On cancellation the binding may or may not exist; the channel stays
        usable.
        """
        await entity.bind_to(
            self.exchange, self.routing_key, self.arguments, nowait=nowait, channel=channel
        )

    async def unbind(
        self,
        entity: Queue | Exchange,
        nowait: bool = False,
        channel: Channel | None = None,
    ) -> None:
        """Remove this binding of *entity*, using :attr:`unbind_arguments`.

        On cancellation the binding may or may not be gone; the channel stays
        usable.
        """
        if isinstance(entity, Exchange):
            await entity.unbind_from(
                self.exchange,
                self.routing_key,
                nowait=nowait,
                arguments=self.unbind_arguments,
                channel=channel,
            )
        else:
            await entity.unbind_from(
                self.exchange,
                self.routing_key,
                self.unbind_arguments,
                nowait=nowait,
                channel=channel,
            )

    def as_dict(self, recurse: bool = False) -> dict[str, Any]:
        """The constructor arguments (kombu's ``as_dict``); with *recurse*
        the exchange as a dict too."""
        return {
            "exchange": self.exchange.as_dict() if recurse else self.exchange,
            "routing_key": self.routing_key,
            "arguments": _copy_table("arguments", self.arguments),
            "unbind_arguments": _copy_table("unbind_arguments", self.unbind_arguments),
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return _from_dict, (type(self), self.as_dict())

    def __str__(self) -> str:
        return f"{self.exchange.name}->{self.routing_key}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, binding):
            return self._key == other._key
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("binding", self._key))

    def __repr__(self) -> str:
        return f"<binding: {self.exchange.name!r} -> {self.routing_key!r}>"

    def __copy__(self) -> binding:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> binding:
        return self


# --- Queue --------------------------------------------------------------------


class Queue(_ChannelBound):
    """A queue declaration, with the bindings that route messages to it
    (kombu's ``Queue``).

    Args:
        name: The queue name; ``""`` asks the broker to choose one when the
            queue is declared (a *server-named* queue, whose :attr:`name`
            is then set).
        exchange: The exchange to bind to with *routing_key*: an
            :class:`Exchange`, a name (``Exchange(name)``), or -- as in
            kombu -- a list of :class:`binding` objects (same as
            *bindings*).  ``None`` (or the default exchange) means no
            binding: the queue is reachable through the default exchange
            by its name, and :attr:`exchange` is ``Exchange("")``, as in
            kombu (``None`` with *bindings*).
        routing_key: The binding key for *exchange*.  Without an exchange
            (or with *bindings*) it is kept, as in kombu, for whoever
            publishes to the queue, and nothing is bound with it.
        channel: Bind the queue to this channel (see :meth:`bind`).
        durable: Survives a broker restart.
        exclusive: Used by this connection only and deleted when it closes.
            Implies *auto_delete*, as in kombu.
        auto_delete: Deleted when its last consumer is cancelled.
        queue_arguments: The ``queue.declare`` arguments table; copied.
        binding_arguments: The arguments for the *exchange* binding.
        bindings: Bindings to other exchanges (instead of *exchange*,
            *routing_key* and *binding_arguments*: giving both is a
            :exc:`ValueError`).  Duplicates are dropped, order is kept.
        no_ack: The default ``no_ack`` for consumers of this queue.
        consumer_arguments: The ``basic.consume`` arguments for consumers of
            this queue (e.g. ``{"x-priority": 10}``).
        on_declared: Called as ``on_declared(name, message_count,
            consumer_count)`` after each successful ``queue.declare``.
        max_priority: ``x-max-priority`` (1..255).
        message_ttl: ``x-message-ttl``, in seconds (sent as milliseconds).
        expires: ``x-expires``, in seconds (sent as milliseconds, at least 1).
        max_length: ``x-max-length`` (messages).
        max_length_bytes: ``x-max-length-bytes``.
        dead_letter_exchange: ``x-dead-letter-exchange`` (an Exchange or name;
            ``""`` is the default exchange).
        dead_letter_routing_key: ``x-dead-letter-routing-key``; needs a
            dead-letter exchange (RabbitMQ refuses it otherwise).
        queue_type: ``x-queue-type``: ``"classic"``, ``"quorum"`` or
            ``"stream"``.  Quorum and stream queues must be durable, not
            exclusive and not auto-delete.
        no_declare: :meth:`declare` does nothing; the queue is assumed to
            exist with its bindings.
        alias: A name for the queue in the application (Celery's); not sent.

    The methods that talk to the broker use the channel the queue is bound
    to (``queue(channel)``, :meth:`bind`), or the one given as
    ``channel=``; with neither they raise
    :exc:`~trio_msg.errors.NotBoundError`.  Their ``nowait`` argument is
    accepted for kombu's sake, but every call waits for the broker's reply,
    so errors surface at the call.

    Raises:
        ValueError: for contradictory or out-of-range settings.
        TypeError: for values of the wrong type.
    """

    #: kombu's ``Queue.ContentDisallowed``.
    ContentDisallowed = ContentDisallowed

    __slots__ = (
        "_channel",
        "_frozen",
        "_key",
        "_name",
        "_server_named",
        "alias",
        "auto_delete",
        "binding_arguments",
        "bindings",
        "consumer_arguments",
        "dead_letter_exchange",
        "dead_letter_routing_key",
        "durable",
        "exchange",
        "exclusive",
        "expires",
        "max_length",
        "max_length_bytes",
        "max_priority",
        "message_ttl",
        "no_ack",
        "no_declare",
        "on_declared",
        "queue_arguments",
        "queue_type",
        "routing_key",
    )

    exchange: Exchange | None
    routing_key: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    #: The effective ``queue.declare`` arguments (*queue_arguments* merged
    #: with the convenience arguments), read-only.
    queue_arguments: Mapping[str, Any]
    binding_arguments: Mapping[str, Any]
    bindings: tuple[binding, ...]
    no_ack: bool | None
    consumer_arguments: Mapping[str, Any] | None
    on_declared: Callable[[str, int, int], object] | None
    max_priority: int | None
    message_ttl: float | None
    expires: float | None
    max_length: int | None
    max_length_bytes: int | None
    dead_letter_exchange: str | None
    dead_letter_routing_key: str | None
    queue_type: str | None
    no_declare: bool
    alias: str | None
    _name: str
    _server_named: bool
    _key: tuple[Hashable, ...]
    _frozen: bool

    def __init__(
        self,
        name: str = "",
        exchange: Exchange | str | Iterable[binding] | None = None,
        routing_key: str = "",
        channel: Channel | None = None,
        bindings: Iterable[binding] | None = None,
        on_declared: Callable[[str, int, int], object] | None = None,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        queue_arguments: Mapping[str, Any] | None = None,
        binding_arguments: Mapping[str, Any] | None = None,
        no_ack: bool | None = None,
        consumer_arguments: Mapping[str, Any] | None = None,
        max_priority: int | None = None,
        message_ttl: float | None = None,
        expires: float | None = None,
        max_length: int | None = None,
        max_length_bytes: int | None = None,
        dead_letter_exchange: Exchange | str | None = None,
        dead_letter_routing_key: str | None = None,
        queue_type: str | None = None,
        no_declare: bool = False,
        alias: str | None = None,
    ) -> None:
        object.__setattr__(self, "_frozen", False)
        object.__setattr__(self, "_channel", None)
        _check_shortstr("queue name", name)
        self._name = name
        self._server_named = not name

        # -- exchange, routing key, bindings
        if exchange is not None and not isinstance(exchange, Exchange | str):
            # kombu's Queue("q", [binding(...), ...])
            if not isinstance(exchange, Iterable):
                raise TypeError(
                    "exchange must be an Exchange, a str or a list of bindings, "
                    f"not {type(exchange).__name__}"
                )
            if bindings is not None:
                raise ValueError("give bindings either as exchange=[...] or bindings=[...]")
            bindings, exchange = exchange, None
        binding_list: list[binding] = []
        for b in bindings if bindings is not None else ():
            if not isinstance(b, binding):
                raise TypeError(f"bindings must be binding objects, not {type(b).__name__}")
            if b not in binding_list:
                binding_list.append(b)
        if isinstance(exchange, str):
            exchange = Exchange(exchange)
        _check_shortstr("routing_key", routing_key)
        if binding_list and (exchange is not None or binding_arguments):
            raise ValueError("give either bindings or exchange/binding_arguments, not both")
        if (exchange is None or exchange.is_default) and binding_arguments:
            raise ValueError(
                "binding_arguments need an exchange to bind to "
                "(the default exchange routes by queue name and cannot be bound)"
            )
        if exchange is None and not binding_list:
            # kombu's: a queue without an exchange has the default exchange
            # (a fresh one: a shared one could be bound in place).
            exchange = Exchange("")
        self.exchange = exchange
        self.routing_key = routing_key
        self.binding_arguments = _readonly(_copy_table("binding_arguments", binding_arguments))
        self.bindings = tuple(binding_list)

        # -- flags
        self.durable = bool(durable)
        self.exclusive = bool(exclusive)
        self.auto_delete = bool(auto_delete) or self.exclusive

        # -- arguments
        args = _copy_table("queue_arguments", queue_arguments)
        conv: dict[str, Any] = {}
        if max_priority is not None:
            conv["x-max-priority"] = _check_int("max_priority", max_priority, 1)
            if max_priority > 255:
                raise ValueError(f"max_priority must be in 1..255, got {max_priority}")
        if message_ttl is not None:
            conv["x-message-ttl"] = _seconds_to_ms("message_ttl", message_ttl, 0)
        if expires is not None:
            conv["x-expires"] = _seconds_to_ms("expires", expires, 1)
        if max_length is not None:
            conv["x-max-length"] = _check_int("max_length", max_length, 0)
        if max_length_bytes is not None:
            conv["x-max-length-bytes"] = _check_int("max_length_bytes", max_length_bytes, 0)
        dlx_name: str | None = None
        if dead_letter_exchange is not None:
            dlx_name = _exchange_name("dead_letter_exchange", dead_letter_exchange)
            conv["x-dead-letter-exchange"] = dlx_name
        if dead_letter_routing_key is not None:
            conv["x-dead-letter-routing-key"] = _check_shortstr(
                "dead_letter_routing_key", dead_letter_routing_key
            )
        if queue_type is not None:
            if queue_type not in QUEUE_TYPES:
                raise ValueError(
                    f"queue_type must be one of {sorted(QUEUE_TYPES)}, not {queue_type!r}"
                )
            conv["x-queue-type"] = queue_type
        for key, value in conv.items():
            if key in args and (type(args[key]), args[key]) != (type(value), value):
                raise ValueError(
                    f"queue_arguments[{key!r}] = {args[key]!r} contradicts the "
                    f"convenience argument ({value!r})"
                )
            args[key] = value
        if "x-dead-letter-routing-key" in args and "x-dead-letter-exchange" not in args:
            raise ValueError("a dead-letter routing key needs a dead-letter exchange")
        effective_type = args.get("x-queue-type")
        if effective_type in ("quorum", "stream"):
            if not self.durable:
                raise ValueError(f"a {effective_type} queue must be durable")
            if self.exclusive:
                raise ValueError(f"a {effective_type} queue cannot be exclusive")
            if self.auto_delete:
                raise ValueError(f"a {effective_type} queue cannot be auto-delete")
        self.queue_arguments = _readonly(args)
        self.max_priority = max_priority
        self.message_ttl = message_ttl
        self.expires = expires
        self.max_length = max_length
        self.max_length_bytes = max_length_bytes
        self.dead_letter_exchange = dlx_name
        self.dead_letter_routing_key = dead_letter_routing_key
        self.queue_type = queue_type

        # -- consumer side and the rest
        self.no_ack = None if no_ack is None else bool(no_ack)
        self.consumer_arguments = (
            None
            if consumer_arguments is None
            else _readonly(_copy_table("consumer_arguments", consumer_arguments))
        )
        if on_declared is not None and not callable(on_declared):
            raise TypeError("on_declared must be callable")
        self.on_declared = on_declared
        self.no_declare = bool(no_declare)
        if alias is not None and not isinstance(alias, str):
            raise TypeError(f"alias must be a str, not {type(alias).__name__}")
        self.alias = alias
        self._key = (
            self._server_named,
            self.durable,
            self.exclusive,
            self.auto_delete,
            _frozen_table("queue_arguments", args),
            self.exchange,
            self.routing_key,
            _frozen_table("binding_arguments", self.binding_arguments),
            frozenset(self.bindings),
        )
        self._frozen = True
        self.maybe_bind(channel)

    def __setattr__(self, key: str, value: object) -> None:
        if key == "name":
            if not self._server_named:
                raise AttributeError(
                    "only a server-named queue's name can change; this queue was named "
                    f"{self._name!r}"
                )
            object.__setattr__(self, "_name", _check_shortstr("queue name", value))
            return
        if self._frozen:
            raise AttributeError(f"Queue is immutable apart from a server-named name ({key!r})")
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"Queue is immutable (cannot delete {key!r})")

    @property
    def name(self) -> str:
        """The queue name: for a server-named queue, ``""`` until declared."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:  # pragma: no cover -- __setattr__ handles it
        self.__setattr__("name", value)

    @property
    def server_named(self) -> bool:
        """Whether the broker chooses the name (the queue was created with ``""``).

        A reconnect replaying topology should reset ``name = ""`` before
        redeclaring such a queue: RabbitMQ refuses a client-chosen name with
        the reserved ``amq.`` prefix.
        """
        return self._server_named

    @property
    def can_cache_declaration(self) -> bool:
        """Whether :func:`maybe_declare` may remember this declaration (not
        server-named, not auto-delete or exclusive, no ``x-expires``)."""
        return (
            not self._server_named
            and not self.auto_delete
            and "x-expires" not in self.queue_arguments
        )

    def _declares_anything(self) -> bool:
        return not self.no_declare

    def _require_name(self) -> str:
        if not self._name:
            raise ValueError("this server-named queue has no name yet: declare it first")
        return self._name

    def _main_binding(self) -> bool:
        return self.exchange is not None and not self.exchange.is_default

    def _exchanges(self) -> list[Exchange]:
        out: list[Exchange] = []
        candidates = [self.exchange] + [b.exchange for b in self.bindings]
        for exchange in candidates:
            if exchange is not None and exchange._will_declare() and exchange not in out:
                out.append(exchange)
        return out

    def when_bound(self) -> None:
        """Bind the queue's exchange to the same channel (kombu's)."""
        if self.exchange is not None:
            object.__setattr__(self, "exchange", self.exchange.bind(self.channel))

    async def declare(
        self,
        nowait: bool = False,
        channel: Channel | None = None,
        *,
        passive: bool | None = None,
    ) -> str:
        """Declare the exchanges, then the queue, then the bindings; return the name.

        Each distinct exchange (of *exchange* and *bindings*) that can be
        declared is declared first (see :meth:`Exchange.declare`), then the
        queue (:meth:`queue_declare`, which calls *on_declared* and names a
        server-named queue), then the binding to *exchange*, then each of
        *bindings* in order.

        Args:
            nowait: Accepted (kombu's); the call still waits for the replies.
            channel: The channel to use instead of the bound one.
            passive: (trio_msg's) ``True`` only checks that the exchanges
                and the queue exist (passive declarations) and binds
                nothing.  ``None`` or ``False`` declare the queue for real,
                and each exchange according to its own ``passive``.

        With *no_declare* set this does nothing (but checkpoints).  On
        cancellation any prefix of these steps may have reached the broker;
        the channel stays usable and declaring again is safe (a server-named
        queue that had not received its name yet gets a new one).
        """
        _flag("nowait", nowait)
        if self.no_declare:
            await anyio.lowlevel.checkpoint()
            return self._name
        ch = self._use(channel)
        for exchange in self._exchanges():
            await exchange.declare(passive=True if passive else None, channel=ch)
        await self.queue_declare(passive=bool(passive), channel=ch)
        if not passive:
            await self._create_bindings(ch)
        return self._name

    async def queue_declare(
        self,
        nowait: bool = False,
        passive: bool = False,
        channel: Channel | None = None,
    ) -> QueueDeclareOk:
        """Declare only the queue (``queue.declare``) and return the broker's answer.

        A server-named queue takes the name the broker chose.  *on_declared*
        is called with the answer.  A passive declaration of a server-named
        queue that has no name yet is a :exc:`ValueError`.  On cancellation
        the queue may or may not have been declared (a server-named queue
        keeps no name); the channel stays usable.
        """
        _flag("nowait", nowait)
        passive = _flag("passive", passive)
        ch = self._use(channel)
        if passive and not self._name:
            raise ValueError("cannot passively declare a server-named queue with no name yet")
        ok = await ch.queue_declare(
            self._name,
            passive=passive,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            arguments=_wire_table(self.queue_arguments),
        )
        if self._server_named and not self._name:
            self.name = ok.queue
        if self.on_declared is not None:
            self.on_declared(ok.queue, ok.message_count, ok.consumer_count)
        return ok

    async def _create_bindings(self, channel: Channel) -> None:
        """Create all of this queue's bindings: *exchange* first, then *bindings*."""
        name = self._require_name()
        if not self._main_binding() and not self.bindings:
            await anyio.lowlevel.checkpoint()
            return
        if self.exchange is not None and self._main_binding():
            await channel.queue_bind(
                name,
                self.exchange.name,
                routing_key=self.routing_key,
                arguments=_wire_table(self.binding_arguments),
            )
        for b in self.bindings:
            await b.bind(self, channel=channel)

    def _main_exchange(self) -> Exchange:
        if self.exchange is None or not self._main_binding():
            raise ValueError(
                f"queue {self._name!r} has no exchange of its own to bind to"
                + (" (its bindings= are bound by declare())" if self.bindings else "")
            )
        return self.exchange

    async def queue_bind(self, nowait: bool = False, channel: Channel | None = None) -> None:
        """Bind the queue to its *exchange* with its *routing_key* and
        *binding_arguments* (``queue.bind``), as kombu's ``queue_bind``.

        Only that binding: :meth:`declare` also creates those in *bindings*.
        A queue without an exchange (or on the default exchange) has nothing
        to bind: :exc:`ValueError` (kombu would send a bind to ``""``, which
        the broker refuses).  On cancellation the binding may or may not
        exist; the channel stays usable.
        """
        exchange = self._main_exchange()
        await self.bind_to(
            exchange, self.routing_key, self.binding_arguments, nowait=nowait, channel=channel
        )

    async def queue_unbind(
        self,
        arguments: Mapping[str, Any] | None = None,
        nowait: bool = False,
        channel: Channel | None = None,
    ) -> None:
        """Remove the binding :meth:`queue_bind` makes (``queue.unbind``).

        *arguments* ``None`` means the queue's *binding_arguments* (kombu
        sends none, which cannot remove a headers-exchange binding).  On
        cancellation the binding may or may not be gone; the channel stays
        usable.
        """
        exchange = self._main_exchange()
        await self.unbind_from(
            exchange,
            self.routing_key,
            self.binding_arguments if arguments is None else arguments,
            nowait=nowait,
            channel=channel,
        )

    async def bind_to(
        self,
        exchange: Exchange | str = "",
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        nowait: bool = False,
        channel: Channel | None = None,
    ) -> None:
        """Bind the queue to *exchange* with *routing_key* (``queue.bind``).

        The default exchange cannot be bound to (:exc:`ValueError`).  On
        cancellation the binding may or may not exist; the channel stays
        usable.
        """
        _flag("nowait", nowait)
        exchange_name = _bindable_exchange_name(exchange)
        _check_shortstr("routing_key", routing_key)
        await self._use(channel).queue_bind(
            self._require_name(),
            exchange_name,
            routing_key=routing_key,
            arguments=_wire_table(_copy_table("binding arguments", arguments)),
        )

    async def unbind_from(
        self,
        exchange: Exchange | str = "",
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        nowait: bool = False,
        channel: Channel | None = None,
    ) -> None:
        """Remove the queue's binding to *exchange* (``queue.unbind``).

        On cancellation the binding may or may not be gone; the channel stays
        usable.
        """
        _flag("nowait", nowait)
        exchange_name = _bindable_exchange_name(exchange)
        _check_shortstr("routing_key", routing_key)
        await self._use(channel).queue_unbind(
            self._require_name(),
            exchange_name,
            routing_key=routing_key,
            arguments=_wire_table(_copy_table("binding arguments", arguments)),
        )

    async def get(
        self,
        no_ack: bool | None = None,
        accept: Iterable[str] | None = None,
        *,
        channel: Channel | None = None,
    ) -> Message | None:
        """Fetch one message (``basic.get``): a :class:`~trio_msg.Message`, or
        ``None`` when the queue is empty.

        Args:
            no_ack: ``None`` uses the queue's *no_ack* (default ``False``:
                the message must be acked).
            accept: Content types or serializer names the message's
                :meth:`~trio_msg.Message.decode` accepts; another content
                type raises :class:`~trio_msg.errors.ContentDisallowed`
                there.  ``None`` accepts every content type but unsafe ones
                (pickle), as kombu's ``None``.
            channel: The channel to use instead of the bound one.

        On cancellation a message may have been taken from the queue: with
        acks it goes back to the queue when the channel closes (or is
        recovered); with ``no_ack`` it is lost.  The channel stays usable.
        """
        ch = self._use(channel)
        no_ack = _flag("no_ack", self.no_ack if no_ack is None else no_ack)
        accepted: frozenset[str] | None = None
        if accept is not None:
            from . import serialization

            accepted = serialization.prepare_accept_content(accept)
        return await ch.basic_get(self._require_name(), no_ack=no_ack, accept=accepted)

    async def purge(self, nowait: bool = False, *, channel: Channel | None = None) -> int:
        """Remove all ready messages (no undo) and return how many there were.

        On cancellation the purge may or may not have happened; the channel
        stays usable.
        """
        _flag("nowait", nowait)
        ch = self._use(channel)
        return await ch.queue_purge(self._require_name())

    async def consume(
        self,
        consumer_tag: str = "",
        callback: Callable[..., object] | None = None,
        no_ack: bool | None = None,
        nowait: bool = False,
        on_cancel: Callable[..., object] | None = None,
    ) -> str:
        """Not supported: raises :class:`~trio_msg.errors.NotSupported`.

        kombu's ``Queue.consume`` registers a callback that the transport
        calls from inside ``drain_events``; trio_msg runs no callback
        without a task of yours to run it in.  Consume with
        ``async with trio_msg.Consumer(channel, queues=[queue]) as
        consumer`` (iterate it, or give it ``callbacks=``).  Checkpoints
        first; nothing is sent.
        """
        await anyio.lowlevel.checkpoint()
        raise NotSupported(
            "Queue.consume() is not supported: use 'async with trio_msg.Consumer(channel, "
            "queues=[queue])' and iterate it (or give it callbacks=)"
        )

    async def cancel(self, consumer_tag: str, *, channel: Channel | None = None) -> None:
        """Cancel the consumer *consumer_tag* on the channel (``basic.cancel``).

        On cancellation the consumer may or may not have been cancelled; the
        channel stays usable.
        """
        await self._use(channel).basic_cancel(consumer_tag)

    async def delete(
        self,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
        *,
        channel: Channel | None = None,
    ) -> int:
        """Delete the queue and return how many messages it held.

        Args:
            if_unused: Only if it has no consumers (else 406 closes the channel).
            if_empty: Only if it holds no messages (else 406 closes the channel).
            nowait: Accepted (kombu's); the call still waits for the reply.
            channel: The channel to use instead of the bound one.

        On cancellation the queue may or may not have been deleted; the
        channel stays usable.
        """
        if_unused = _flag("if_unused", if_unused)
        if_empty = _flag("if_empty", if_empty)
        _flag("nowait", nowait)
        ch = self._use(channel)
        return await ch.queue_delete(self._require_name(), if_unused=if_unused, if_empty=if_empty)

    def as_dict(self, recurse: bool = False) -> dict[str, Any]:
        """The constructor arguments, as kombu's ``as_dict``:
        ``Queue(**q.as_dict())`` equals *q* (unbound, without
        *on_declared*).  With *recurse* the exchange and bindings are dicts
        too (for serializing; the constructor does not take those)."""
        exchange: Any = self.exchange
        bindings: list[Any] = list(self.bindings)
        if recurse:
            exchange = None if exchange is None else exchange.as_dict()
            bindings = [b.as_dict(recurse=True) for b in bindings]
        return {
            "name": self._name,
            "exchange": exchange,
            "routing_key": self.routing_key,
            "queue_arguments": _copy_table("queue_arguments", self.queue_arguments),
            "binding_arguments": _copy_table("binding_arguments", self.binding_arguments),
            "consumer_arguments": (
                None
                if self.consumer_arguments is None
                else _copy_table("consumer_arguments", self.consumer_arguments)
            ),
            "durable": self.durable,
            "exclusive": self.exclusive,
            "auto_delete": self.auto_delete,
            "no_ack": self.no_ack,
            "alias": self.alias,
            "bindings": bindings,
            "no_declare": self.no_declare,
            "expires": self.expires,
            "message_ttl": self.message_ttl,
            "max_length": self.max_length,
            "max_length_bytes": self.max_length_bytes,
            "max_priority": self.max_priority,
            "dead_letter_exchange": self.dead_letter_exchange,
            "dead_letter_routing_key": self.dead_letter_routing_key,
            "queue_type": self.queue_type,
        }

    #: The options :meth:`from_dict` forwards to :class:`Queue` unchanged.
    _FROM_DICT_FORWARDED = (
        "queue_arguments",
        "binding_arguments",
        "consumer_arguments",
        "exclusive",
        "no_ack",
        "alias",
        "bindings",
        "no_declare",
        "expires",
        "message_ttl",
        "max_length",
        "max_length_bytes",
        "max_priority",
        "dead_letter_exchange",
        "dead_letter_routing_key",
        "queue_type",
    )

    @classmethod
    def from_dict(cls, queue: str, **options: Any) -> Queue:
        """A queue from Celery-style options, as kombu's ``Queue.from_dict``.

        ``exchange``, ``exchange_type``, ``exchange_durable`` /
        ``exchange_auto_delete`` / ``exchange_arguments`` (falling back on
        ``durable`` / ``auto_delete``), ``delivery_mode`` describe the
        exchange; ``binding_key`` (or ``routing_key``), ``queue_durable`` /
        ``queue_auto_delete`` (same fallbacks) and every other
        :class:`Queue` keyword (``queue_arguments``, ``expires``,
        ``max_priority``, ...) the queue.  Unknown options are ignored, as
        in kombu.
        """

        def pick(first: str, fallback: str) -> Any:
            value = options.get(first)
            return options.get(fallback) if value is None else value

        def flag(value: Any, default: bool) -> bool:
            return default if value is None else bool(value)

        exchange = Exchange(
            options.get("exchange") or "",
            type=options.get("exchange_type"),
            delivery_mode=options.get("delivery_mode"),
            durable=flag(pick("exchange_durable", "durable"), True),
            auto_delete=flag(pick("exchange_auto_delete", "auto_delete"), False),
            arguments=options.get("exchange_arguments"),
        )
        kwargs = {
            name: options[name]
            for name in cls._FROM_DICT_FORWARDED
            if options.get(name) is not None
        }
        if kwargs.get("bindings"):
            exchange_arg: Exchange | None = None
        else:
            exchange_arg = exchange
        return cls(
            queue,
            exchange=exchange_arg,
            routing_key=options.get("binding_key") or options.get("routing_key") or "",
            durable=flag(pick("queue_durable", "durable"), True),
            auto_delete=flag(pick("queue_auto_delete", "auto_delete"), False),
            **kwargs,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return _from_dict, (type(self), self.as_dict())

    def __copy__(self) -> Queue:
        return self._clone()

    def __deepcopy__(self, memo: dict[int, object]) -> Queue:
        return self._clone()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Queue):
            return self._key == other._key and self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        # A server-named queue's hash leaves out the name, which changes when
        # the broker assigns it; equality still compares it.
        return hash(("Queue", None if self._server_named else self._name, self._key))

    def __repr__(self) -> str:
        if self.bindings:
            target = "[" + ", ".join(repr(b) for b in self.bindings) + "]"
            return f"<Queue {self._name!r} -> {target}{self._bound_repr()}>"
        if self._main_binding():
            return (
                f"<Queue {self._name!r} -> <Exchange {self.exchange.name!r}"  # type: ignore[union-attr]
                f"({self.exchange.type})> -> {self.routing_key!r}{self._bound_repr()}>"  # type: ignore[union-attr]
            )
        return f"<Queue {self._name!r}{self._bound_repr()}>"


# --- maybe_declare -------------------------------------------------------------


async def maybe_declare(
    entity: Exchange | Queue,
    channel: Channel | None = None,
    retry: bool = False,
    **retry_policy: Any,
) -> bool:
    """Declare *entity* on *channel* unless this connection already has.

    Without *channel*, the channel *entity* is bound to (else
    :exc:`~trio_msg.errors.NotBoundError`), as kombu's ``maybe_declare``.
    kombu's ``retry=True`` (and its retry policy keywords) raise
    :class:`~trio_msg.errors.NotSupported`: a connection made with
    ``connect(url, revive=True)`` declares the cached entities again itself
    after a reconnect; call this again once it is back.

    The cache is ``channel.connection.declared_entities``; it holds entities
    compared by their declared identity (see the module docs), so an equal
    entity built elsewhere counts as declared.  Nothing is declared (and
    ``False`` returned) for an entity with ``no_declare`` or for the default
    exchange.  Entities that may disappear
    from the broker on their own (server-named queues, auto-delete or
    exclusive ones, queues with ``x-expires``) are declared every time and
    never cached.

    Returns whether a declaration was made.  It checkpoints in every case.
    On cancellation the entity may or may not have been declared and is not
    cached, so the next call declares it again; the channel stays usable.
    """
    if retry or retry_policy:
        await anyio.lowlevel.checkpoint()
        raise NotSupported(
            "maybe_declare(retry=True) is not supported: connect(url, revive=True) "
            "declares the cached entities again after a reconnect"
        )
    channel = entity._use(channel)
    if not entity._declares_anything():
        await anyio.lowlevel.checkpoint()
        return False
    cache = channel.connection.declared_entities
    cacheable = entity.can_cache_declaration
    if cacheable and entity in cache:
        await anyio.lowlevel.checkpoint()
        return False
    await entity.declare(channel=channel)
    if cacheable:
        # Unbound: the ledger outlives the channel, which it must not keep.
        kept = entity._clone() if entity.is_bound else entity
        cache.add(kept, replay=_replay_step(kept))
    return True


def _replay_step(entity: Exchange | Queue) -> ReplayStep:
    """What a reviving connection runs to declare *entity* again."""

    async def replay(channel: Channel) -> None:
        await entity.declare(channel=channel)

    return replay
