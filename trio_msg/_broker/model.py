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
import os
import time
from bisect import insort
from collections import deque
from collections.abc import Callable, Iterable
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

_NAMES = {
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
        "x-max-length",
        "x-max-length-bytes",
        "x-overflow",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-max-priority",
        "x-single-active-consumer",
        "x-queue-type",
        "x-queue-mode",
        "x-queue-master-locator",
        "x-queue-version",
        "x-delivery-limit",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-quorum-initial-group-size",
        "x-stream-max-segment-size-bytes",
    }
)

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


class AMQPError(Exception):
    """A refusal, with RabbitMQ's reply code and text; ``connection`` when
    the code closes the connection rather than the channel."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = f"{_NAMES.get(code, str(code))} - {text}"
        super().__init__(self.text)

    @property
    def connection(self) -> bool:
        return self.code in CONNECTION_CODES


def _show(value: Any) -> str:
    """A value as RabbitMQ shows it in an 'inequivalent arg' message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def inequivalent(arg: str, kind: str, name: str, received: Any, current: Any) -> AMQPError:
    return AMQPError(
        PRECONDITION_FAILED,
        f"inequivalent arg '{arg}' for {kind} '{name}' in vhost '/': "
        f"received {_show_arg(received)} but current is {_show_arg(current)}",
    )


def _show_arg(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"'{_show(value)}'"
    if isinstance(value, int):
        return f"the value '{value}' of type 'long'"
    if isinstance(value, str | bytes):
        return f"the value '{_show(value)}' of type 'longstr'"
    return f"'{_show(value)}'"


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

    def __lt__(self, other: StoredMessage) -> bool:
        return self.seq < other.seq


class ConsumerPort(Protocol):
    """What a queue needs from a consumer: whether it may take one more
    message now, and to be handed one."""

    tag: str
    exclusive: bool

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


@dataclass(eq=False)
class Queue:
    name: str
    durable: bool
    exclusive_owner: object | None  # the owning connection, for exclusive queues
    auto_delete: bool
    arguments: dict[str, Any]
    ready: deque[StoredMessage] = field(default_factory=deque)
    consumers: list[ConsumerPort] = field(default_factory=list)
    unacked: int = 0
    #: Whether a consumer ever consumed from it (auto-delete needs one).
    had_consumer: bool = False
    #: When it was last used (declared, consumed from, got from), for
    #: ``x-expires``.
    last_used: float = 0.0
    _next: int = 0  # round-robin position among the consumers

    def requeue(self, message: StoredMessage) -> None:
        """Back to its place among the ready messages, flagged redelivered."""
        message.redelivered = True
        ready = self.ready
        if not ready or message.seq < ready[0].seq:
            ready.appendleft(message)
        elif message.seq > ready[-1].seq:
            ready.append(message)
        else:
            items = list(ready)
            insort(items, message)
            self.ready = deque(items)


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
        for key in set(arguments) | set(current.arguments):
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
        # bindings where it is the destination
        for other in list(self.exchanges.values()):
            before = len(other.bindings)
            other.bindings = [
                b
                for b in other.bindings
                if not (b.kind == "exchange" and b.destination == exchange.name)
            ]
            if before != len(other.bindings):
                self._maybe_auto_delete_exchange(other)

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
            raise AMQPError(
                RESOURCE_LOCKED,
                f"cannot obtain exclusive access to locked queue '{name}' in vhost '/'. "
                "It could be originally declared on another connection or the exclusive "
                "property value does not match that of the original declaration.",
            )
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
                ("exclusive", exclusive, current.exclusive_owner is not None),
                ("auto_delete", auto_delete, current.auto_delete),
            ):
                if received != have:
                    raise inequivalent(arg, "queue", name, received, have)
            for key in set(arguments) | set(current.arguments):
                if arguments.get(key) != current.arguments.get(key):
                    raise inequivalent(
                        key, "queue", name, arguments.get(key), current.arguments.get(key)
                    )
            return current
        ttl = arguments.get("x-message-ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0):
            raise AMQPError(
                PRECONDITION_FAILED,
                f"invalid arg 'x-message-ttl' for queue '{name}' in vhost '/': "
                f"{{value_negative,{ttl}}}"
                if isinstance(ttl, int) and not isinstance(ttl, bool)
                else f"invalid arg 'x-message-ttl' for queue '{name}' in vhost '/': "
                f"{{unacceptable_type,{type(ttl).__name__}}}",
            )
        for arg in ("x-expires",):
            value = arguments.get(arg)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                problem = (
                    (f"{{value_zero,{value}}}" if value == 0 else f"{{value_negative,{value}}}")
                    if isinstance(value, int) and not isinstance(value, bool)
                    else (f"{{unacceptable_type,{type(value).__name__}}}")
                )
                raise AMQPError(
                    PRECONDITION_FAILED,
                    f"invalid arg '{arg}' for queue '{name}' in vhost '/': {problem}",
                )
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
        for exchange in list(self.exchanges.values()):
            before = len(exchange.bindings)
            exchange.bindings = [
                b
                for b in exchange.bindings
                if not (b.kind == "queue" and b.destination == queue.name)
            ]
            if before != len(exchange.bindings):
                self._maybe_auto_delete_exchange(exchange)
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
        if kind == "queue" and destination not in self.queues:
            raise AMQPError(NOT_FOUND, f"no queue '{destination}' in vhost '/'")
        if kind == "exchange" and destination not in self.exchanges:
            raise AMQPError(NOT_FOUND, f"no exchange '{destination}' in vhost '/'")
        if source not in self.exchanges:
            raise AMQPError(NOT_FOUND, f"no exchange '{source}' in vhost '/'")
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

    def enqueue(
        self,
        queues: Iterable[Queue],
        exchange: str,
        routing_key: str,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        ttl = message_ttl(properties.expiration)
        now = self.clock()
        for queue in queues:
            self._seq += 1
            expires = ttl
            queue_ttl = queue.arguments.get("x-message-ttl")
            if queue_ttl is not None:
                expires = queue_ttl if expires is None else min(expires, queue_ttl)
            queue.ready.append(
                StoredMessage(
                    self._seq,
                    exchange,
                    routing_key,
                    properties,
                    body,
                    expires_at=None if expires is None else now + expires / 1000,
                )
            )
            self.dispatch(queue)

    def expire(self, queue: Queue) -> None:
        """Drop the expired messages at the head of ``queue`` (RabbitMQ
        expires messages when they reach the head)."""
        ready = queue.ready
        if not ready:
            return
        now = self.clock()
        while ready and ready[0].expires_at is not None and ready[0].expires_at <= now:
            ready.popleft()

    def dispatch(self, queue: Queue) -> None:
        """Hand ready messages to consumers that can take them, in turn."""
        consumers = queue.consumers
        if not consumers:
            return
        self.expire(queue)
        ready = queue.ready
        while ready and consumers:
            n = len(consumers)
            for i in range(n):
                consumer = consumers[(queue._next + i) % n]
                if consumer.can_take():
                    queue._next = (queue._next + i + 1) % n
                    consumer.take(queue, ready.popleft())
                    break
            else:
                return

    def add_consumer(self, queue: Queue, consumer: ConsumerPort) -> None:
        if consumer.exclusive and queue.consumers:
            raise AMQPError(
                ACCESS_REFUSED,
                f"queue '{queue.name}' in vhost '/' in exclusive use",
            )
        if any(c.exclusive for c in queue.consumers):
            raise AMQPError(
                ACCESS_REFUSED,
                f"queue '{queue.name}' in vhost '/' in exclusive use",
            )
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
        if queue.auto_delete and queue.had_consumer and not queue.consumers:
            self.remove_queue(queue)

    def connection_gone(self, owner: object) -> None:
        """Exclusive queues go with the connection that declared them."""
        for queue in [q for q in self.queues.values() if q.exclusive_owner is owner]:
            self.remove_queue(queue)
