"""The embedded broker's model: exchanges, queues, bindings and consumers as
plain data, and RabbitMQ's rules for routing, ordering and delivery.

No IO and no clock of its own: :mod:`.server` feeds it the operations that
arrive in frames and gives it the time where a rule needs one.  Deliveries
go to :class:`ConsumerPort` objects (a server channel's consumers), which
write the frames.

What RabbitMQ (3.10, classic queues) does is the specification; where this
model is not yet as complete, it refuses with ``540 NOT_IMPLEMENTED`` rather
than doing something else (see :data:`UNSUPPORTED_QUEUE_ARGUMENTS`).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import os
import time
from bisect import insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._protocol.frames import BasicProperties

__all__ = [
    "AMQPError",
    "Broker",
    "Exchange",
    "Queue",
    "StoredMessage",
]

# Reply codes (AMQP 0-9-1 constants, as RabbitMQ uses them).
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541
NO_ROUTE = 312
CONNECTION_FORCED = 320

_NAMES = {
    CONNECTION_FORCED: "CONNECTION_FORCED",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}

#: Reply codes that close the whole connection; the others close a channel.
CONNECTION_CODES = frozenset(
    {
        CONNECTION_FORCED,
        FRAME_ERROR,
        SYNTAX_ERROR,
        COMMAND_INVALID,
        CHANNEL_ERROR,
        UNEXPECTED_FRAME,
        NOT_ALLOWED,
        NOT_IMPLEMENTED,
        INTERNAL_ERROR,
    }
)

#: Queue arguments RabbitMQ acts on that this model does not implement yet:
#: declaring a queue with one is refused with 540, never accepted and
#: ignored.  (Arguments RabbitMQ does not know are kept, as it keeps them.)
UNSUPPORTED_QUEUE_ARGUMENTS = frozenset(
    {
        "x-delivery-limit",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-quorum-initial-group-size",
        "x-stream-max-segment-size-bytes",
    }
)

#: The queue arguments RabbitMQ (3.10) compares when a queue is declared
#: again, in the order it compares them; others may differ.
EQUIVALENCE_ARGUMENTS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
)

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


class AMQPError(Exception):
    """A refusal, with RabbitMQ's reply code and text; ``connection`` when
    the code closes the connection rather than the channel."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = _reply_text(f"{_NAMES.get(code, str(code))} - {text}")
        super().__init__(self.text)

    @property
    def connection(self) -> bool:
        return self.code in CONNECTION_CODES


def _reply_text(text: str) -> str:
    """A reply text as RabbitMQ sends it: one of more than 255 bytes (a
    short string's limit) is cut to its first 252 and "..." (here never in
    the middle of a character)."""
    raw = text.encode("utf-8")
    if len(raw) <= 255:
        return text
    return raw[:252].decode("utf-8", "ignore") + "..."


def _show(value: Any) -> str:
    """A value as RabbitMQ shows it in an 'inequivalent arg' message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _locked(name: str) -> AMQPError:
    return AMQPError(
        RESOURCE_LOCKED,
        f"cannot obtain exclusive access to locked queue '{name}' in vhost '/'. "
        "It could be originally declared on another connection or the exclusive "
        "property value does not match that of the original declaration.",
    )


def inequivalent(arg: str, kind: str, name: str, received: Any, current: Any) -> AMQPError:
    """RabbitMQ's "inequivalent arg" refusal.  Two values of one type are
    shown bare ('1'); otherwise each is shown with its type, or as none.
    RabbitMQ names the field-table type the client sent; this broker keeps
    decoded values only, and names the type by the value's kind."""
    if received is not None and current is not None and type(received) is type(current):
        shown = f"received '{_show(received)}' but current is '{_show(current)}'"
    else:
        shown = f"received {_show_arg(received)} but current is {_show_arg(current)}"
    return AMQPError(
        PRECONDITION_FAILED, f"inequivalent arg '{arg}' for {kind} '{name}' in vhost '/': {shown}"
    )


def _show_arg(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, int):
        kind = "long"
    elif isinstance(value, str | bytes):
        kind = "longstr"
    else:
        kind = type(value).__name__
    return f"the value '{_show(value)}' of type '{kind}'"


@dataclass(slots=True)
class StoredMessage:
    """A message in a queue; ``seq`` orders a queue (requeued messages go
    back to where they were, as in RabbitMQ's classic queues)."""

    seq: int
    exchange: str
    routing_key: str
    properties: BasicProperties
    body: bytes
    redelivered: bool = False
    #: When it expires (the broker's clock), from its ``expiration`` and the
    #: queue's ``x-message-ttl``; None: never.
    expires_at: float | None = None
    #: Its priority level in a priority queue (0 in others).
    level: int = 0
    #: Its content header's payload as published (None: encode
    #: ``properties`` afresh, which dead-lettering changed).
    header: bytes | None = None

    def __lt__(self, other: StoredMessage) -> bool:
        return self.seq < other.seq


class ConsumerPort(Protocol):
    """What a queue needs from a consumer: whether it may take one more
    message now, and to be handed one."""

    tag: str
    exclusive: bool
    priority: int

    def can_take(self) -> bool: ...

    def take(self, queue: Queue, message: StoredMessage) -> None: ...

    def cancelled_by_server(self, queue: Queue) -> None: ...


@dataclass(eq=False)
class Binding:
    source: str
    destination: str
    kind: str  # "queue" or "exchange"
    routing_key: str
    arguments: dict[str, Any]

    def key(self) -> tuple[str, str, str, str, tuple[tuple[str, Any], ...]]:
        return (
            self.source,
            self.destination,
            self.kind,
            self.routing_key,
            tuple(sorted(self.arguments.items(), key=lambda kv: kv[0])),
        )


@dataclass(eq=False)
class Exchange:
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]
    bindings: list[Binding] = field(default_factory=list)

    def matches(self, binding: Binding, routing_key: str, headers: dict[str, Any] | None) -> bool:
        if self.type == "fanout":
            return True
        if self.type == "direct":
            return binding.routing_key == routing_key
        if self.type == "topic":
            return topic_matches(binding.routing_key, routing_key)
        return headers_match(binding.arguments, headers or {})


class Ready:
    """A queue's ready messages: first in, first out within a priority
    level, the highest level first (one level in a queue without
    ``x-max-priority``).  Counts messages and body bytes, for
    ``x-max-length`` and ``x-max-length-bytes``."""

    __slots__ = ("_levels", "_only", "bytes", "count")

    def __init__(self) -> None:
        self._levels: dict[int, deque[StoredMessage]] = {}
        #: The level, while there is only one (every queue without priorities).
        self._only: deque[StoredMessage] | None = None
        self.count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __iter__(self) -> Iterator[StoredMessage]:
        for level in sorted(self._levels, reverse=True):
            yield from self._levels[level]

    def _level(self, number: int) -> deque[StoredMessage]:
        level = self._levels[number] = deque()
        self._only = level if len(self._levels) == 1 else None
        return level

    def append(self, message: StoredMessage) -> None:
        level = self._levels.get(message.level)
        if level is None:
            level = self._level(message.level)
        level.append(message)
        self.count += 1
        self.bytes += len(message.body)

    def heads(self) -> list[deque[StoredMessage]]:
        """The non-empty levels, highest first."""
        return [self._levels[k] for k in sorted(self._levels, reverse=True) if self._levels[k]]

    def head(self) -> StoredMessage | None:
        only = self._only
        if only is not None:
            return only[0] if only else None
        for level in self.heads():
            return level[0]
        return None

    def popleft(self) -> StoredMessage:
        only = self._only
        if only is not None and only:
            message = only.popleft()
            self.count -= 1
            self.bytes -= len(message.body)
            return message
        for level in self.heads():
            message = level.popleft()
            self.count -= 1
            self.bytes -= len(message.body)
            return message
        raise IndexError("no ready message")

    def remove_head_of(self, level: deque[StoredMessage]) -> StoredMessage:
        message = level.popleft()
        self.count -= 1
        self.bytes -= len(message.body)
        return message

    def requeue(self, message: StoredMessage) -> None:
        """Back to its place in its level (by publish order)."""
        level = self._levels.get(message.level)
        if level is None:
            level = self._level(message.level)
        if not level or message.seq < level[0].seq:
            level.appendleft(message)
        elif message.seq > level[-1].seq:
            level.append(message)
        else:
            items = list(level)
            insort(items, message)
            level.clear()
            level.extend(items)
        self.count += 1
        self.bytes += len(message.body)

    def clear(self) -> list[StoredMessage]:
        out = list(self)
        self._levels.clear()
        self._only = None
        self.count = 0
        self.bytes = 0
        return out


@dataclass(eq=False)
class Queue:
    name: str
    durable: bool
    exclusive_owner: object | None  # the owning connection, for exclusive queues
    auto_delete: bool
    arguments: dict[str, Any]
    ready: Ready = field(default_factory=Ready)
    consumers: list[ConsumerPort] = field(default_factory=list)
    unacked: int = 0
    #: Whether a consumer ever consumed from it (auto-delete needs one).
    had_consumer: bool = False
    #: When it was last used (declared, consumed from, got from), for
    #: ``x-expires``.
    last_used: float = 0.0
    _next: int = 0  # round-robin position among the consumers

    #: The consumer that gets every message of a single-active-consumer queue.
    active: ConsumerPort | None = None
    #: A message with an expiry time was put in it (until then, nothing
    #: in it can expire: :meth:`Broker.expire` has nothing to look at).
    may_expire: bool = False

    def requeue(self, message: StoredMessage) -> None:
        """Back to its place among the ready messages, flagged redelivered."""
        message.redelivered = True
        self.ready.requeue(message)

    # the arguments this model acts on, read once at declaration
    @property
    def max_priority(self) -> int | None:
        value = self.arguments.get("x-max-priority")
        return None if value is None else int(value)

    @property
    def single_active(self) -> bool:
        return bool(self.arguments.get("x-single-active-consumer"))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_cycle(target: str, deaths: list[dict[str, Any]], reason: str) -> bool:
    """RabbitMQ drops a message that would be dead-lettered back into a
    queue it already died in, unless it was rejected somewhere on the way
    (then the cycle is one a client closes, and goes on)."""
    if reason == "rejected":
        return False
    for death in deaths:
        if _text(death.get("reason")) == "rejected":
            return False
        if _text(death.get("queue")) == target:
            return True
    return False


def _words(key: str) -> list[str]:
    # RabbitMQ: the empty key is no word at all; "a." is "a" and "".
    return key.split(".") if key else []


def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic match: words split on '.', ``*`` one word, ``#``
    zero or more."""
    return _topic_words(_words(pattern), _words(routing_key))


def _topic_words(pattern: list[str], words: list[str]) -> bool:
    """Whether the words of a binding pattern match the words of a key."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic_words(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return _topic_words(rest, words[1:])
    return False


def headers_match(arguments: dict[str, Any], headers: dict[str, Any]) -> bool:
    """The headers exchange: ``x-match`` ``all`` (the default) or ``any``
    (3.10 also knows ``all-with-x`` and ``any-with-x``); binding arguments
    that start with ``x-`` take part only in the ``-with-x`` forms."""
    mode = arguments.get("x-match", "all")
    if isinstance(mode, bytes):
        mode = mode.decode()
    with_x = mode in ("all-with-x", "any-with-x")
    wanted = {
        k: v for k, v in arguments.items() if k != "x-match" and (with_x or not k.startswith("x-"))
    }
    if mode in ("any", "any-with-x"):
        return any(k in headers and (v is None or headers[k] == v) for k, v in wanted.items())
    return all(k in headers and (v is None or headers[k] == v) for k, v in wanted.items())


def _invalid(name: str, arg: str, problem: str) -> AMQPError:
    return AMQPError(
        PRECONDITION_FAILED, f"invalid arg '{arg}' for queue '{name}' in vhost '/': {problem}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_queue_arguments(name: str, arguments: dict[str, Any]) -> None:
    """Refuse the argument values RabbitMQ refuses (406), with its texts;
    and, with 540, what this model does not implement."""
    for arg, least in (
        ("x-message-ttl", 0),
        ("x-expires", 1),
        ("x-max-length", 0),
        ("x-max-length-bytes", 0),
        ("x-max-priority", 0),
    ):
        value = arguments.get(arg)
        if value is None:
            continue
        if not _is_int(value):
            raise _invalid(name, arg, f"{{unacceptable_type,{type(value).__name__}}}")
        if value < least:
            kind = "value_zero" if value == 0 else "value_negative"
            raise _invalid(name, arg, f"{{{kind},{value}}}")
    priority = arguments.get("x-max-priority")
    if priority is not None and priority > 255:
        raise _invalid(name, "x-max-priority", f"{{value_too_large,{priority},255}}")
    overflow = arguments.get("x-overflow")
    if overflow is not None and _text(overflow) not in (
        "drop-head",
        "reject-publish",
        "reject-publish-dlx",
    ):
        raise _invalid(name, "x-overflow", f"{{invalid_value,{_text(overflow)}}}")
    sac = arguments.get("x-single-active-consumer")
    if sac is not None and not isinstance(sac, bool):
        raise _invalid(
            name, "x-single-active-consumer", f"{{unacceptable_type,{type(sac).__name__}}}"
        )
    for arg in ("x-dead-letter-exchange", "x-dead-letter-routing-key"):
        value = arguments.get(arg)
        if value is not None and not isinstance(value, str | bytes):
            raise _invalid(name, arg, f"{{unacceptable_type,{type(value).__name__}}}")
    if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
        raise _invalid(name, "x-dead-letter-routing-key", '{no_dlx,<<"x-dead-letter-exchange">>}')
    queue_type = arguments.get("x-queue-type")
    if queue_type is not None and _text(queue_type) != "classic":
        raise AMQPError(
            NOT_IMPLEMENTED,
            f"queue type '{_text(queue_type)}' is not implemented by the memory broker",
        )


def message_ttl(expiration: str | None) -> int | None:
    """A message's ``expiration`` property in milliseconds (RabbitMQ refuses
    a publish whose expiration is not a non-negative integer, with 406)."""
    if expiration is None:
        return None
    text = str(expiration)
    if not text.isdigit():
        raise AMQPError(PRECONDITION_FAILED, f"invalid expiration '{text}': no_integer")
    return int(text)


def server_queue_name() -> str:
    return "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class Broker:
    """One virtual host ("/"): exchanges, queues and their bindings.

    Operations raise :class:`AMQPError` with RabbitMQ's codes and texts.
    """

    def __init__(self, name: str = "", clock: Callable[[], float] | None = None) -> None:
        self.name = name
        #: The time in seconds, for message TTLs.
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        #: Direct reply-to keys and the channels whose consumer they reach.
        self.replies: dict[str, Any] = {}
        #: A resource alarm's reason while one is on (publishers are blocked).
        self.alarm: str | None = None
        #: Scripted by tests: confirms held back until released, publishes
        #: refused with a nack.
        self.holding_confirms = False
        self.held_confirms: list[tuple[Any, Any, Any]] = []
        self.nacking = False
        self._seq = 0
        for ex_name, ex_type in (
            ("", "direct"),
            ("amq.direct", "direct"),
            ("amq.fanout", "fanout"),
            ("amq.topic", "topic"),
            ("amq.headers", "headers"),
            ("amq.match", "headers"),
        ):
            self.exchanges[ex_name] = Exchange(ex_name, ex_type, True, False, False, {})

    # --- exchanges --------------------------------------------------------

    def exchange(self, name: str) -> Exchange:
        try:
            return self.exchanges[name]
        except KeyError:
            raise AMQPError(NOT_FOUND, f"no exchange '{name}' in vhost '/'") from None

    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
    ) -> None:
        if passive:
            if name == "":
                return
            self.exchange(name)
            return
        # RabbitMQ's order: the type, the default exchange, then either the
        # reserved prefix (a new exchange) or equivalence (an existing one).
        if type not in EXCHANGE_TYPES:
            raise AMQPError(COMMAND_INVALID, f"unknown exchange type '{type}'")
        if name == "":
            raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange")
        current = self.exchanges.get(name)
        if current is None:
            if name.startswith("amq."):
                raise AMQPError(
                    ACCESS_REFUSED, f"exchange name '{name}' contains reserved prefix 'amq.*'"
                )
            if "alternate-exchange" in arguments:
                raise AMQPError(
                    NOT_IMPLEMENTED, "alternate-exchange is not implemented by the memory broker"
                )
            self.exchanges[name] = Exchange(name, type, durable, auto_delete, internal, arguments)
            return
        for arg, received, have in (
            ("type", type, current.type),
            ("durable", durable, current.durable),
            ("auto_delete", auto_delete, current.auto_delete),
            ("internal", internal, current.internal),
        ):
            if received != have:
                raise inequivalent(arg, "exchange", name, received, have)
        # RabbitMQ compares only the arguments it acts on.
        key = "alternate-exchange"
        if arguments.get(key) != current.arguments.get(key):
            raise inequivalent(
                key, "exchange", name, arguments.get(key), current.arguments.get(key)
            )

    def delete_exchange(self, name: str, *, if_unused: bool) -> None:
        if name == "" or name.startswith("amq."):
            raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange")
        exchange = self.exchanges.get(name)
        if exchange is None:
            return  # RabbitMQ: deleting a missing exchange succeeds
        if if_unused and exchange.bindings:
            raise AMQPError(PRECONDITION_FAILED, f"exchange '{name}' in vhost '/' in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        del self.exchanges[exchange.name]
        exchange.bindings.clear()
        self._unbind_destination("exchange", exchange.name)

    def _unbind_destination(self, kind: str, name: str) -> None:
        """Remove every binding to the queue or exchange ``name`` (it is
        gone); a source left without bindings auto-deletes."""
        for source in list(self.exchanges.values()):
            before = len(source.bindings)
            source.bindings = [
                b for b in source.bindings if not (b.kind == kind and b.destination == name)
            ]
            if before != len(source.bindings):
                self._maybe_auto_delete_exchange(source)

    def _maybe_auto_delete_exchange(self, exchange: Exchange) -> None:
        if exchange.auto_delete and not exchange.bindings and exchange.name in self.exchanges:
            self._remove_exchange(exchange)

    # --- queues -------------------------------------------------------------

    def sweep(self) -> None:
        """Delete the queues whose ``x-expires`` has passed unused."""
        now = self.clock()
        for queue in list(self.queues.values()):
            self._expired(queue, now)

    def _expired(self, queue: Queue, now: float) -> bool:
        expires = queue.arguments.get("x-expires")
        if expires is None or queue.consumers or now - queue.last_used < expires / 1000:
            return False
        self.remove_queue(queue)
        return True

    def touch(self, queue: Queue) -> None:
        queue.last_used = self.clock()

    def queue(self, name: str, owner: object | None = None) -> Queue:
        queue = self.queues.get(name)
        if queue is not None and self._expired(queue, self.clock()):
            queue = None
        if queue is None:
            raise AMQPError(NOT_FOUND, f"no queue '{name}' in vhost '/'")
        if queue.exclusive_owner is not None and queue.exclusive_owner is not owner:
            raise _locked(name)
        return queue

    def declare_queue(
        self,
        name: str,
        *,
        owner: object,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any],
    ) -> Queue:
        if passive:
            queue = self.queue(name, owner)
            self.touch(queue)
            return queue
        if name.startswith("amq.") and name not in self.queues:
            raise AMQPError(ACCESS_REFUSED, f"queue name '{name}' contains reserved prefix 'amq.*'")
        if not name:
            name = server_queue_name()
        current = self.queues.get(name)
        if current is not None and self._expired(current, self.clock()):
            current = None
        if current is not None:
            self.queue(name, owner)  # exclusive to another connection: 405
            self.touch(current)
            for arg, received, have in (
                ("durable", durable, current.durable),
                ("auto_delete", auto_delete, current.auto_delete),
            ):
                if received != have:
                    raise inequivalent(arg, "queue", name, received, have)
            if exclusive != (current.exclusive_owner is not None):
                raise _locked(name)
            # RabbitMQ compares only the arguments it acts on, in this order.
            for key in EQUIVALENCE_ARGUMENTS:
                if arguments.get(key) != current.arguments.get(key):
                    raise inequivalent(
                        key, "queue", name, arguments.get(key), current.arguments.get(key)
                    )
            return current
        check_queue_arguments(name, arguments)
        unsupported = sorted(UNSUPPORTED_QUEUE_ARGUMENTS.intersection(arguments))
        if unsupported:
            raise AMQPError(
                NOT_IMPLEMENTED,
                f"queue argument '{unsupported[0]}' is not implemented by the memory broker",
            )
        queue = Queue(name, durable, owner if exclusive else None, auto_delete, dict(arguments))
        queue.last_used = self.clock()
        self.queues[name] = queue
        # Every queue is bound to the default exchange by its name.
        return queue

    def delete_queue(self, name: str, *, owner: object, if_unused: bool, if_empty: bool) -> int:
        queue = self.queues.get(name)
        if queue is None:
            return 0  # RabbitMQ: deleting a missing queue succeeds with 0
        self.queue(name, owner)
        if if_unused and queue.consumers:
            raise AMQPError(PRECONDITION_FAILED, f"queue '{name}' in vhost '/' in use")
        if if_empty and queue.ready:
            raise AMQPError(PRECONDITION_FAILED, f"queue '{name}' in vhost '/' not empty")
        return self.remove_queue(queue)

    def remove_queue(self, queue: Queue) -> int:
        """Delete ``queue`` now (also when its owner goes or it auto-deletes):
        its consumers are told (``basic.cancel``), its bindings go."""
        if self.queues.get(queue.name) is not queue:
            return 0
        del self.queues[queue.name]
        count = len(queue.ready)
        queue.ready.clear()
        for consumer in list(queue.consumers):
            consumer.cancelled_by_server(queue)
        queue.consumers.clear()
        self._unbind_destination("queue", queue.name)
        return count

    def purge_queue(self, name: str, owner: object) -> int:
        queue = self.queue(name, owner)
        count = len(queue.ready)
        queue.ready.clear()
        return count

    # --- bindings -----------------------------------------------------------

    def bind(
        self,
        kind: str,
        destination: str,
        source: str,
        routing_key: str,
        arguments: dict[str, Any],
        owner: object,
    ) -> None:
        binding = self._binding(kind, destination, source, routing_key, arguments, owner)
        exchange = self.exchanges[source]
        if all(b.key() != binding.key() for b in exchange.bindings):
            exchange.bindings.append(binding)

    def unbind(
        self,
        kind: str,
        destination: str,
        source: str,
        routing_key: str,
        arguments: dict[str, Any],
        owner: object,
    ) -> None:
        # RabbitMQ 3.10: unbinding what is not there (the binding, its queue
        # or its exchange) succeeds.
        if source not in self.exchanges:
            return
        binding = Binding(source, destination, kind, routing_key, dict(arguments))
        exchange = self.exchanges[source]
        before = len(exchange.bindings)
        exchange.bindings = [b for b in exchange.bindings if b.key() != binding.key()]
        if before != len(exchange.bindings):
            self._maybe_auto_delete_exchange(exchange)

    def _binding(
        self,
        kind: str,
        destination: str,
        source: str,
        routing_key: str,
        arguments: dict[str, Any],
        owner: object,
    ) -> Binding:
        if source == "" or (kind == "exchange" and destination == ""):
            raise AMQPError(ACCESS_REFUSED, "operation not permitted on the default exchange")
        if kind == "queue":
            self.queue(destination, owner)
        else:
            self.exchange(destination)
        self.exchange(source)
        return Binding(source, destination, kind, routing_key, dict(arguments))

    # --- publishing ---------------------------------------------------------

    def route(
        self, exchange_name: str, routing_key: str, headers: dict[str, Any] | None
    ) -> list[Queue]:
        """The queues a message reaches, each once, following
        exchange-to-exchange bindings (cycles included) as RabbitMQ does."""
        exchange = self.exchange(exchange_name)
        if exchange_name == "":
            queue = self.queues.get(routing_key)
            return [queue] if queue is not None else []
        found: dict[str, Queue] = {}
        seen = {exchange_name}
        todo = [exchange]
        while todo:
            ex = todo.pop()
            for binding in ex.bindings:
                if not ex.matches(binding, routing_key, headers):
                    continue
                if binding.kind == "queue":
                    queue = self.queues.get(binding.destination)
                    if queue is not None:
                        found.setdefault(queue.name, queue)
                elif binding.destination not in seen:
                    seen.add(binding.destination)
                    nxt = self.exchanges.get(binding.destination)
                    if nxt is not None:
                        todo.append(nxt)
        return list(found.values())

    def routing_keys(self, routing_key: str, headers: dict[str, Any] | None) -> list[str]:
        """The key and those of the ``CC`` and ``BCC`` headers (RabbitMQ's
        sender-selected distribution)."""
        keys = [routing_key]
        if headers:
            for name in ("CC", "BCC"):
                extra = headers.get(name)
                if isinstance(extra, list):
                    keys += [_text(k) for k in extra if isinstance(k, str | bytes)]
        return keys

    def route_all(
        self, exchange_name: str, routing_key: str, headers: dict[str, Any] | None
    ) -> list[Queue]:
        """:meth:`route` for the key and its CC/BCC keys, each queue once."""
        keys = self.routing_keys(routing_key, headers)
        if len(keys) == 1:
            return self.route(exchange_name, routing_key, headers)
        found: dict[str, Queue] = {}
        for key in keys:
            for queue in self.route(exchange_name, key, headers):
                found.setdefault(queue.name, queue)
        return list(found.values())

    def enqueue(
        self,
        queues: Iterable[Queue],
        exchange: str,
        routing_key: str,
        properties: BasicProperties,
        body: bytes,
        header: bytes | None = None,
    ) -> bool:
        """Put a published message in each queue; False when a queue refused
        it (``x-overflow`` ``reject-publish``: the publisher gets a nack)."""
        ttl = message_ttl(properties.expiration)
        headers = properties.headers
        if headers and "BCC" in headers:
            header = None
            properties = dataclasses.replace(
                properties, headers={k: v for k, v in headers.items() if k != "BCC"}
            )
        now = self.clock()
        accepted = True
        for queue in queues:
            if self._full(queue, len(body)):
                overflow = _text(queue.arguments.get("x-overflow", "drop-head"))
                if overflow in ("reject-publish", "reject-publish-dlx"):
                    accepted = False
                    if overflow == "reject-publish-dlx":
                        self._seq += 1
                        rejected = StoredMessage(self._seq, exchange, routing_key, properties, body)
                        self.dead_letter(queue, [rejected], "maxlen")
                    continue
            self._seq += 1
            expires = ttl
            queue_ttl = queue.arguments.get("x-message-ttl")
            if queue_ttl is not None:
                expires = queue_ttl if expires is None else min(expires, queue_ttl)
            level = 0
            max_priority = queue.max_priority
            if max_priority is not None:
                level = min(properties.priority or 0, max_priority)
            if expires is not None:
                queue.may_expire = True
            queue.ready.append(
                StoredMessage(
                    self._seq,
                    exchange,
                    routing_key,
                    properties,
                    body,
                    expires_at=None if expires is None else now + expires / 1000,
                    level=level,
                    header=header,
                )
            )
            self.dispatch(queue)
            self._drop_head(queue)
        return accepted

    def enqueue_plain(
        self,
        queue: Queue,
        exchange: str,
        routing_key: str,
        properties: BasicProperties,
        body: bytes,
        header: bytes | None,
    ) -> None:
        """:meth:`enqueue` for the common case, in fewer steps: one queue
        without arguments, a message without ``expiration`` or headers
        (nothing to expire, limit, prioritise or strip)."""
        self._seq += 1
        queue.ready.append(
            StoredMessage(self._seq, exchange, routing_key, properties, body, header=header)
        )
        if queue.consumers:
            self.dispatch(queue)

    def _full(self, queue: Queue, size: int) -> bool:
        """Whether one more message of ``size`` bytes would be over a limit
        (only ready messages count, as in RabbitMQ)."""
        args = queue.arguments
        max_length = args.get("x-max-length")
        if max_length is not None and len(queue.ready) >= max_length:
            return True
        max_bytes = args.get("x-max-length-bytes")
        return max_bytes is not None and queue.ready.bytes + size > max_bytes

    def _drop_head(self, queue: Queue) -> None:
        args = queue.arguments
        max_length = args.get("x-max-length")
        max_bytes = args.get("x-max-length-bytes")
        if max_length is None and max_bytes is None:
            return
        dropped = []
        ready = queue.ready
        while ready and (
            (max_length is not None and len(ready) > max_length)
            or (max_bytes is not None and ready.bytes > max_bytes)
        ):
            dropped.append(ready.popleft())
        if dropped:
            self.dead_letter(queue, dropped, "maxlen")

    def expire(self, queue: Queue) -> None:
        """Drop (and dead-letter) the expired messages at the head of
        ``queue``: RabbitMQ expires messages when they reach the head."""
        ready = queue.ready
        if not ready or not queue.may_expire:
            return
        now = self.clock()
        expired = []
        for level in ready.heads():
            while level and level[0].expires_at is not None and level[0].expires_at <= now:
                expired.append(ready.remove_head_of(level))
        if expired:
            self.dead_letter(queue, expired, "expired")

    def dead_letter(self, queue: Queue, messages: list[StoredMessage], reason: str) -> None:
        """Republish ``messages`` from ``queue`` to its dead-letter exchange,
        with RabbitMQ's ``x-death`` history; dropped when it has none (or
        the exchange is missing)."""
        dlx = queue.arguments.get("x-dead-letter-exchange")
        if dlx is None:
            return
        dlx = _text(dlx)
        if dlx not in self.exchanges:
            return
        dlrk = queue.arguments.get("x-dead-letter-routing-key")
        now = datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0)
        for message in messages:
            props = message.properties
            headers = dict(props.headers or {})
            deaths = [d for d in headers.get("x-death") or [] if isinstance(d, dict)]
            keys = self.routing_keys(message.routing_key, props.headers)
            for i, death in enumerate(deaths):
                if _text(death.get("queue")) == queue.name and _text(death.get("reason")) == reason:
                    entry = dict(deaths.pop(i))
                    entry["count"] = int(entry.get("count", 0)) + 1
                    break
            else:
                entry = {
                    "count": 1,
                    "reason": reason,
                    "queue": queue.name,
                    "time": now,
                    "exchange": message.exchange,
                    "routing-keys": keys,
                }
                if props.expiration is not None:
                    entry["original-expiration"] = props.expiration
            deaths.insert(0, entry)
            headers["x-death"] = deaths
            headers.setdefault("x-first-death-reason", reason)
            headers.setdefault("x-first-death-queue", queue.name)
            headers.setdefault("x-first-death-exchange", message.exchange)
            new_props = dataclasses.replace(props, headers=headers, expiration=None)
            route_keys = [_text(dlrk)] if dlrk is not None else keys
            targets: dict[str, Queue] = {}
            for key in route_keys:
                for target in self.route(dlx, key, headers):
                    targets.setdefault(target.name, target)
            cleared = [t for t in targets.values() if not _is_cycle(t.name, deaths, reason)]
            self.enqueue(
                cleared,
                dlx,
                _text(dlrk) if dlrk is not None else message.routing_key,
                new_props,
                message.body,
            )

    def dispatch(self, queue: Queue) -> None:
        """Hand ready messages to consumers that can take them: the highest
        consumer priority first, in turn within a priority; only the active
        one on a single-active-consumer queue (when the active one goes,
        the highest priority among the others takes over)."""
        consumers = queue.consumers
        if not consumers:
            return
        self.expire(queue)
        ready = queue.ready
        if queue.single_active:
            if queue.active not in consumers:
                # RabbitMQ 3.10: the consumer with the highest priority, the
                # earliest of those (the first one has no one to compete with,
                # and keeps the place until it goes).
                queue.active = max(consumers, key=lambda c: c.priority)
            active = queue.active
            assert active is not None
            while ready and active.can_take():
                active.take(queue, ready.popleft())
            return
        if len(consumers) == 1:
            only = consumers[0]
            while ready and only.can_take():
                only.take(queue, ready.popleft())
            return
        while ready:
            n = len(consumers)
            chosen = None
            best = None
            for i in range(n):
                consumer = consumers[(queue._next + i) % n]
                if (best is None or consumer.priority > best) and consumer.can_take():
                    best = consumer.priority
                    chosen = (queue._next + i) % n
            if chosen is None:
                return
            queue._next = (chosen + 1) % n
            consumers[chosen].take(queue, ready.popleft())

    def check_consumer(self, queue: Queue, consumer: ConsumerPort) -> None:
        """403 if ``consumer`` may not join ``queue``: it wants the queue to
        itself and others consume from it, or another has it to itself."""
        if (consumer.exclusive and queue.consumers) or any(c.exclusive for c in queue.consumers):
            raise AMQPError(ACCESS_REFUSED, f"queue '{queue.name}' in vhost '/' in exclusive use")

    def add_consumer(self, queue: Queue, consumer: ConsumerPort) -> None:
        self.check_consumer(queue, consumer)
        queue.consumers.append(consumer)
        queue.had_consumer = True
        queue.last_used = self.clock()
        self.dispatch(queue)

    def remove_consumer(self, queue: Queue, consumer: ConsumerPort) -> None:
        queue.last_used = self.clock()
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
            if queue._next >= len(queue.consumers):
                queue._next = 0
        if queue.active is consumer:
            queue.active = None
        if queue.auto_delete and queue.had_consumer and not queue.consumers:
            self.remove_queue(queue)
        else:
            self.dispatch(queue)

    def cancel_consumers(self, queue: Queue) -> int:
        """Cancel every consumer of ``queue`` from the broker's side
        (``basic.cancel`` to each), as RabbitMQ does when a queue's leader
        moves; the queue and its messages stay."""
        consumers = list(queue.consumers)
        queue.consumers.clear()
        queue.active = None
        for consumer in consumers:
            consumer.cancelled_by_server(queue)
        return len(consumers)

    def connection_gone(self, owner: object) -> None:
        """Exclusive queues go with the connection that declared them."""
        for queue in [q for q in self.queues.values() if q.exclusive_owner is owner]:
            self.remove_queue(queue)
