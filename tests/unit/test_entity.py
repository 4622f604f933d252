"""Exchange, Queue, binding and maybe_declare against a recording fake channel."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import anyio
import pytest
import sniffio

from trio_msg.entity import (
    PERSISTENT_DELIVERY_MODE,
    TRANSIENT_DELIVERY_MODE,
    DeclarationLedger,
    Exchange,
    Queue,
    QueueDeclareOk,
    binding,
    maybe_declare,
    maybe_delivery_mode,
)
from trio_msg.errors import ContentDisallowed, NotBoundError, NotSupported

Call = tuple[Any, ...]


class FakeConnection:
    def __init__(self) -> None:
        self.declared_entities = DeclarationLedger()


class FakeChannel:
    """Records every call as ``(method, *positional, {keywords})``; each
    method checkpoints first, like the real driver."""

    def __init__(self, server_names: list[str] | None = None) -> None:
        self.connection = FakeConnection()
        self.calls: list[Call] = []
        self._server_names = list(server_names or ["amq.gen-1", "amq.gen-2"])
        self.declare_ok_counts = (0, 0)

    async def _record(self, *call: Any) -> None:
        await anyio.lowlevel.checkpoint()
        self.calls.append(call)

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
        await self._record(
            "exchange_declare",
            exchange,
            type,
            {
                "passive": passive,
                "durable": durable,
                "auto_delete": auto_delete,
                "internal": internal,
                "arguments": arguments,
            },
        )

    async def exchange_delete(self, exchange: str, *, if_unused: bool = False) -> None:
        await self._record("exchange_delete", exchange, {"if_unused": if_unused})

    async def exchange_bind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._record("exchange_bind", destination, source, routing_key, arguments)

    async def exchange_unbind(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._record("exchange_unbind", destination, source, routing_key, arguments)

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
        await self._record(
            "queue_declare",
            queue,
            {
                "passive": passive,
                "durable": durable,
                "exclusive": exclusive,
                "auto_delete": auto_delete,
                "arguments": arguments,
            },
        )
        name = queue or self._server_names.pop(0)
        return QueueDeclareOk(name, *self.declare_ok_counts)

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._record("queue_bind", queue, exchange, routing_key, arguments)

    async def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> None:
        await self._record("queue_unbind", queue, exchange, routing_key, arguments)

    async def queue_purge(self, queue: str) -> int:
        await self._record("queue_purge", queue)
        return 7

    async def queue_delete(
        self, queue: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        await self._record("queue_delete", queue, {"if_unused": if_unused, "if_empty": if_empty})
        return 3

    def methods(self) -> list[str]:
        return [c[0] for c in self.calls]


def qargs(queue: Queue) -> dict[str, Any]:
    return dict(queue.queue_arguments)


async def declared_queue_args(queue: Queue) -> dict[str, Any] | None:
    ch = FakeChannel()
    await queue.queue_declare(channel=ch)
    (call,) = ch.calls
    args: dict[str, Any] | None = call[2]["arguments"]
    return args


# --- the test harness itself ---------------------------------------------------


@pytest.mark.anyio
async def test_runs_on_the_claimed_backend(anyio_backend: str) -> None:
    assert sniffio.current_async_library() == anyio_backend


# --- Exchange --------------------------------------------------------------------


@pytest.mark.anyio
async def test_exchange_declare_maps_every_field() -> None:
    ch = FakeChannel()
    ex = Exchange(
        "media",
        type="topic",
        durable=False,
        auto_delete=True,
        internal=True,
        arguments={"alternate-exchange": "ae"},
    )
    await ex.declare(channel=ch)
    assert ch.calls == [
        (
            "exchange_declare",
            "media",
            "topic",
            {
                "passive": False,
                "durable": False,
                "auto_delete": True,
                "internal": True,
                "arguments": {"alternate-exchange": "ae"},
            },
        )
    ]


@pytest.mark.anyio
async def test_exchange_defaults() -> None:
    ch = FakeChannel()
    await Exchange("x").declare(channel=ch)
    assert ch.calls == [
        (
            "exchange_declare",
            "x",
            "direct",
            {
                "passive": False,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": None,
            },
        )
    ]


@pytest.mark.anyio
async def test_exchange_passive_attribute_and_override() -> None:
    ch = FakeChannel()
    await Exchange("x", passive=True).declare(channel=ch)
    await Exchange("x", passive=True).declare(passive=False, channel=ch)
    await Exchange("x").declare(passive=True, channel=ch)
    assert [c[3]["passive"] for c in ch.calls] == [True, False, True]


@pytest.mark.anyio
async def test_default_exchange_and_no_declare_are_not_declared_but_checkpoint() -> None:
    ch = FakeChannel()
    for ex in (Exchange(""), Exchange("x", no_declare=True)):
        await ex.declare(channel=ch)
        reached = False
        with anyio.CancelScope() as scope:
            scope.cancel()
            await ex.declare(channel=ch)
            reached = True
        assert not reached, "declare() did not checkpoint"
    assert ch.calls == []


@pytest.mark.anyio
async def test_reserved_amq_exchange_is_always_declared_passively() -> None:
    ch = FakeChannel()
    await Exchange("amq.topic", type="topic").declare(channel=ch)
    await Exchange("amq.topic", type="topic").declare(passive=False, channel=ch)
    assert [(c[1], c[3]["passive"]) for c in ch.calls] == [("amq.topic", True)] * 2


@pytest.mark.anyio
async def test_exchange_bind_to_and_unbind_from() -> None:
    ch = FakeChannel()
    dest = Exchange("dest")
    await dest.bind_to(Exchange("src"), "k.#", {"x-match": "all"}, channel=ch)
    await dest.bind_to("src2", channel=ch)
    await dest.unbind_from("src", "k.#", arguments={"x-match": "all"}, channel=ch)
    await dest.unbind_from(Exchange("src2"), channel=ch)
    assert ch.calls == [
        ("exchange_bind", "dest", "src", "k.#", {"x-match": "all"}),
        ("exchange_bind", "dest", "src2", "", None),
        ("exchange_unbind", "dest", "src", "k.#", {"x-match": "all"}),
        ("exchange_unbind", "dest", "src2", "", None),
    ]


@pytest.mark.anyio
async def test_exchange_bind_with_default_exchange_is_refused_locally() -> None:
    ch = FakeChannel()
    with pytest.raises(ValueError, match="default exchange"):
        await Exchange("dest").bind_to("", channel=ch)
    with pytest.raises(ValueError, match="default exchange"):
        await Exchange("").bind_to("src", channel=ch)
    with pytest.raises(ValueError, match="default exchange"):
        await Exchange("dest").unbind_from(Exchange(""), channel=ch)
    assert ch.calls == []


@pytest.mark.anyio
async def test_exchange_delete() -> None:
    ch = FakeChannel()
    await Exchange("x").delete(channel=ch)
    await Exchange("x").delete(if_unused=True, channel=ch)
    assert ch.calls == [
        ("exchange_delete", "x", {"if_unused": False}),
        ("exchange_delete", "x", {"if_unused": True}),
    ]
    with pytest.raises(ValueError, match="cannot be deleted"):
        await Exchange("").delete(channel=ch)
    assert len(ch.calls) == 2


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        (1, TRANSIENT_DELIVERY_MODE),
        (2, PERSISTENT_DELIVERY_MODE),
        ("transient", 1),
        ("persistent", 2),
    ],
)
def test_exchange_delivery_mode(given: int | str | None, expected: int | None) -> None:
    assert Exchange("x", delivery_mode=given).delivery_mode == expected


@pytest.mark.parametrize("bad", [0, 3, "durable", "PERSISTENT", ""])
def test_exchange_delivery_mode_invalid(bad: int | str) -> None:
    with pytest.raises(ValueError, match="delivery_mode"):
        Exchange("x", delivery_mode=bad)


def test_delivery_mode_type_errors() -> None:
    with pytest.raises(TypeError):
        Exchange("x", delivery_mode=True)
    with pytest.raises(TypeError):
        Exchange("x", delivery_mode=2.0)  # type: ignore[arg-type]


def test_maybe_delivery_mode_default() -> None:
    assert maybe_delivery_mode(None) == PERSISTENT_DELIVERY_MODE
    assert maybe_delivery_mode(None, default=None) is None
    assert maybe_delivery_mode("transient") == 1


def test_exchange_validation() -> None:
    # kombu: an empty (or None) type means direct
    assert Exchange("x", type="").type == "direct"
    assert Exchange("x", type=None).type == "direct"
    with pytest.raises(ValueError, match="255"):
        Exchange("x" * 256)
    Exchange("x" * 255)
    with pytest.raises(TypeError):
        Exchange(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys"):
        Exchange("x", arguments={1: 2})  # type: ignore[dict-item]


def test_exchange_equality_and_hash() -> None:
    a = Exchange("x", "topic", arguments={"alternate-exchange": "ae", "n": [1, {"k": 2}]})
    b = Exchange("x", "topic", arguments={"n": [1, {"k": 2}], "alternate-exchange": "ae"})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    # Not part of the declared identity:
    assert a == Exchange(
        "x",
        "topic",
        arguments=dict(a.arguments),
        delivery_mode="transient",
        passive=True,
        no_declare=True,
    )
    # Part of it:
    for other in (
        Exchange("y", "topic", arguments=dict(a.arguments)),
        Exchange("x", "direct", arguments=dict(a.arguments)),
        Exchange("x", "topic", durable=False, arguments=dict(a.arguments)),
        Exchange("x", "topic", auto_delete=True, arguments=dict(a.arguments)),
        Exchange("x", "topic", internal=True, arguments=dict(a.arguments)),
        Exchange("x", "topic", arguments={"alternate-exchange": "other"}),
    ):
        assert a != other
    assert a != "x"


def test_argument_types_are_kept_apart() -> None:
    # True, 1 and 1.0 encode differently in an AMQP table.
    assert Exchange("x", arguments={"a": 1}) != Exchange("x", arguments={"a": True})
    assert Exchange("x", arguments={"a": 1}) != Exchange("x", arguments={"a": 1.0})


def test_exchange_is_immutable_and_copies_its_arguments() -> None:
    args: dict[str, Any] = {"alternate-exchange": "ae", "nested": {"a": 1}}
    ex = Exchange("x", arguments=args)
    args["alternate-exchange"] = "changed"
    args["nested"]["a"] = 2
    assert ex.arguments == {"alternate-exchange": "ae", "nested": {"a": 1}}
    with pytest.raises(AttributeError):
        ex.name = "y"
    with pytest.raises(TypeError):
        ex.arguments["k"] = 1  # type: ignore[index]
    assert copy.copy(ex) is ex
    assert copy.deepcopy({"e": ex})["e"] is ex


@pytest.mark.anyio
async def test_channel_cannot_mutate_entity_arguments() -> None:
    class MutatingChannel(FakeChannel):
        async def exchange_declare(self, exchange: str, type: str = "direct", **kw: Any) -> None:
            await super().exchange_declare(exchange, type, **kw)
            kw["arguments"]["alternate-exchange"] = "mutated"

    ex = Exchange("x", arguments={"alternate-exchange": "ae"})
    await ex.declare(channel=MutatingChannel())
    assert ex.arguments["alternate-exchange"] == "ae"


def test_exchange_repr() -> None:
    assert repr(Exchange("media", "topic")) == "<Exchange 'media'(topic)>"


def test_unhashable_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="hashable"):
        Exchange("x", arguments={"a": {1, 2}})


# --- binding --------------------------------------------------------------------


def test_binding_construction() -> None:
    b = binding("ex", "rk")
    assert b.exchange == Exchange("ex")
    assert b.routing_key == "rk"
    assert b.arguments == {}
    assert b.unbind_arguments == {}
    assert Exchange("ex").binding("rk") == b
    assert hash(Exchange("ex").binding("rk")) == hash(b)
    with pytest.raises(ValueError, match="needs an exchange"):
        binding()
    with pytest.raises(ValueError, match="default exchange"):
        binding(Exchange(""))
    with pytest.raises(TypeError):
        binding(5)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        b.routing_key = "other"


def test_binding_equality() -> None:
    ex = Exchange("h", "headers")
    b = binding(ex, "", {"x-match": "any"})
    assert b == binding(ex, "", {"x-match": "any"}, {"x-match": "any"})
    assert b != binding(ex, "", {"x-match": "all"})
    assert b != binding(ex, "k", {"x-match": "any"})
    assert b != binding(ex, "", {"x-match": "any"}, {})
    assert b != binding(Exchange("h", "topic"), "", {"x-match": "any"})
    assert repr(b) == "<binding: 'h' -> ''>"


@pytest.mark.anyio
async def test_binding_bind_and_unbind_queue() -> None:
    ch = FakeChannel()
    q = Queue("q")
    b = binding(Exchange("h", "headers"), "rk", {"x-match": "any", "a": 1})
    await b.bind(q, channel=ch)
    await b.unbind(q, channel=ch)
    await binding("h", "rk", {"a": 1}, unbind_arguments={}).unbind(q, channel=ch)
    assert ch.calls == [
        ("queue_bind", "q", "h", "rk", {"x-match": "any", "a": 1}),
        # unbind_arguments=None means "the same as arguments"
        ("queue_unbind", "q", "h", "rk", {"x-match": "any", "a": 1}),
        ("queue_unbind", "q", "h", "rk", None),
    ]


@pytest.mark.anyio
async def test_binding_bind_exchange() -> None:
    ch = FakeChannel()
    b = binding("src", "k")
    await b.bind(Exchange("dest", channel=ch))
    await b.unbind(Exchange("dest", channel=ch))
    assert ch.calls == [
        ("exchange_bind", "dest", "src", "k", None),
        ("exchange_unbind", "dest", "src", "k", None),
    ]


# --- Queue: arguments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_priority": 10}, {"x-max-priority": 10}),
        ({"max_priority": 255}, {"x-max-priority": 255}),
        ({"message_ttl": 1.5}, {"x-message-ttl": 1500}),
        ({"message_ttl": 0}, {"x-message-ttl": 0}),
        ({"message_ttl": 60}, {"x-message-ttl": 60000}),
        # kombu's int(float(s) * 1000.0) truncation, kept for identical redeclares
        ({"message_ttl": 1.005}, {"x-message-ttl": 1004}),
        ({"expires": 30}, {"x-expires": 30000}),
        ({"expires": 0.001}, {"x-expires": 1}),
        ({"max_length": 0}, {"x-max-length": 0}),
        ({"max_length": 100}, {"x-max-length": 100}),
        ({"max_length_bytes": 1 << 20}, {"x-max-length-bytes": 1 << 20}),
        ({"dead_letter_exchange": "dlx"}, {"x-dead-letter-exchange": "dlx"}),
        ({"dead_letter_exchange": Exchange("dlx")}, {"x-dead-letter-exchange": "dlx"}),
        ({"dead_letter_exchange": ""}, {"x-dead-letter-exchange": ""}),
        (
            {"dead_letter_exchange": "", "dead_letter_routing_key": "dead"},
            {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"},
        ),
        ({"queue_type": "classic"}, {"x-queue-type": "classic"}),
        ({"queue_type": "quorum"}, {"x-queue-type": "quorum"}),
        ({"queue_type": "stream"}, {"x-queue-type": "stream"}),
        ({}, None),
    ],
)
@pytest.mark.anyio
async def test_queue_convenience_arguments(
    kwargs: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    q = Queue("q", **kwargs)
    assert await declared_queue_args(q) == expected
    assert qargs(q) == (expected or {})


@pytest.mark.anyio
async def test_queue_arguments_merge_with_conveniences() -> None:
    q = Queue(
        "q",
        queue_arguments={"x-overflow": "reject-publish", "x-max-priority": 5},
        max_priority=5,
        message_ttl=2,
    )
    assert await declared_queue_args(q) == {
        "x-overflow": "reject-publish",
        "x-max-priority": 5,
        "x-message-ttl": 2000,
    }
    assert q.max_priority == 5
    assert q.message_ttl == 2


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_priority": 0}, ValueError, "max_priority"),
        ({"max_priority": 256}, ValueError, "max_priority"),
        ({"max_priority": True}, TypeError, "max_priority"),
        ({"max_priority": 2.0}, TypeError, "max_priority"),
        ({"message_ttl": -1}, ValueError, "message_ttl"),
        ({"message_ttl": float("inf")}, ValueError, "message_ttl"),
        ({"message_ttl": "10"}, TypeError, "message_ttl"),
        ({"expires": 0}, ValueError, "expires"),
        ({"expires": 0.0001}, ValueError, "expires"),
        ({"max_length": -1}, ValueError, "max_length"),
        ({"max_length_bytes": -1}, ValueError, "max_length_bytes"),
        ({"queue_type": "lazy"}, ValueError, "queue_type"),
        ({"queue_type": "Quorum"}, ValueError, "queue_type"),
        ({"dead_letter_routing_key": "rk"}, ValueError, "dead-letter exchange"),
        ({"queue_arguments": {"x-max-priority": 3}, "max_priority": 4}, ValueError, "contradicts"),
        # same number, different AMQP type
        ({"queue_arguments": {"x-max-length": 3.0}, "max_length": 3}, ValueError, "contradicts"),
        ({"queue_arguments": {"x-dead-letter-routing-key": "rk"}}, ValueError, "dead-letter"),
    ],
)
def test_queue_argument_validation(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        Queue("q", **kwargs)


@pytest.mark.parametrize("qtype", ["quorum", "stream"])
@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"durable": False}, "durable"),
        ({"exclusive": True}, "exclusive"),
        ({"auto_delete": True}, "auto-delete"),
    ],
)
def test_quorum_and_stream_queues_must_be_durable_and_shared(
    qtype: str, flags: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Queue("q", queue_type=qtype, **flags)
    # the raw argument is checked the same way
    with pytest.raises(ValueError, match=match):
        Queue("q", queue_arguments={"x-queue-type": qtype}, **flags)


def test_classic_queue_may_be_transient_and_exclusive() -> None:
    q = Queue("q", queue_type="classic", durable=False, exclusive=True)
    assert not q.durable
    assert q.exclusive


# --- Queue: declaring ---------------------------------------------------------


@pytest.mark.anyio
async def test_queue_declare_maps_flags() -> None:
    ch = FakeChannel()
    await Queue("q", durable=False, auto_delete=True).queue_declare(channel=ch)
    await Queue("q2", exclusive=True).queue_declare(passive=True, channel=ch)
    assert ch.calls == [
        (
            "queue_declare",
            "q",
            {
                "passive": False,
                "durable": False,
                "exclusive": False,
                "auto_delete": True,
                "arguments": None,
            },
        ),
        (
            "queue_declare",
            "q2",
            {
                "passive": True,
                "durable": True,
                "exclusive": True,
                # exclusive implies auto_delete, as in kombu
                "auto_delete": True,
                "arguments": None,
            },
        ),
    ]


@pytest.mark.anyio
async def test_declare_order_exchanges_then_queue_then_bindings() -> None:
    ch = FakeChannel()
    media = Exchange("media", "topic")
    q = Queue(
        "video",
        bindings=[
            media.binding("video.*"),
            binding("other", "x"),
            media.binding("clip.#"),
        ],
    )
    assert await q.declare(channel=ch) == "video"
    assert ch.methods() == [
        "exchange_declare",
        "exchange_declare",
        "queue_declare",
        "queue_bind",
        "queue_bind",
        "queue_bind",
    ]
    assert [c[1] for c in ch.calls[:2]] == ["media", "other"]  # each exchange once
    assert ch.calls[3:] == [
        ("queue_bind", "video", "media", "video.*", None),
        ("queue_bind", "video", "other", "x", None),
        ("queue_bind", "video", "media", "clip.#", None),
    ]


@pytest.mark.anyio
async def test_declare_with_single_exchange() -> None:
    ch = FakeChannel()
    q = Queue("video", Exchange("media"), "video", binding_arguments={"x-a": 1})
    await q.declare(channel=ch)
    assert ch.methods() == ["exchange_declare", "queue_declare", "queue_bind"]
    assert ch.calls[2] == ("queue_bind", "video", "media", "video", {"x-a": 1})


@pytest.mark.anyio
async def test_declare_with_str_exchange_declares_a_direct_exchange() -> None:
    ch = FakeChannel()
    q = Queue("video", "media", "video")
    assert q.exchange == Exchange("media")
    await q.declare(channel=ch)
    assert ch.calls[0][:3] == ("exchange_declare", "media", "direct")
    assert ch.calls[2] == ("queue_bind", "video", "media", "video", None)


@pytest.mark.anyio
async def test_declare_skips_no_declare_and_default_exchanges_but_still_binds() -> None:
    ch = FakeChannel()
    await Queue("q", Exchange("existing", "topic", no_declare=True), "k").declare(channel=ch)
    assert ch.methods() == ["queue_declare", "queue_bind"]

    ch = FakeChannel()
    await Queue("q", Exchange("")).declare(channel=ch)
    await Queue("q").declare(channel=ch)
    assert ch.methods() == ["queue_declare", "queue_declare"]


@pytest.mark.anyio
async def test_declare_amq_exchange_passively_then_binds() -> None:
    ch = FakeChannel()
    await Queue("q", Exchange("amq.topic", "topic"), "a.#").declare(channel=ch)
    assert ch.methods() == ["exchange_declare", "queue_declare", "queue_bind"]
    assert ch.calls[0][3]["passive"] is True
    assert ch.calls[1][2]["passive"] is False


@pytest.mark.anyio
async def test_passive_queue_declare_checks_and_binds_nothing() -> None:
    ch = FakeChannel()
    await Queue("q", Exchange("media"), "k").declare(passive=True, channel=ch)
    assert ch.methods() == ["exchange_declare", "queue_declare"]
    assert ch.calls[0][3]["passive"] is True
    assert ch.calls[1][2]["passive"] is True


@pytest.mark.anyio
async def test_no_declare_queue_does_nothing_but_checkpoints() -> None:
    ch = FakeChannel()
    q = Queue("q", Exchange("media"), "k", no_declare=True)
    assert await q.declare(channel=ch) == "q"
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await q.declare(channel=ch)
        reached = True
    assert not reached
    assert ch.calls == []


@pytest.mark.anyio
async def test_on_declared_is_called_with_the_answer() -> None:
    seen: list[tuple[str, int, int]] = []
    ch = FakeChannel()
    ch.declare_ok_counts = (5, 2)
    q = Queue("q", on_declared=lambda *a: seen.append(a))
    await q.declare(channel=ch)
    await q.queue_declare(passive=True, channel=ch)
    assert seen == [("q", 5, 2), ("q", 5, 2)]
    with pytest.raises(TypeError, match="callable"):
        Queue("q", on_declared=5)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_server_named_queue_takes_the_brokers_name() -> None:
    ch = FakeChannel(server_names=["amq.gen-abc"])
    seen: list[str] = []
    q = Queue(
        "", Exchange("media"), "k", exclusive=True, on_declared=lambda n, m, c: seen.append(n)
    )
    assert q.server_named
    h = hash(q)
    assert await q.declare(channel=ch) == "amq.gen-abc"
    assert q.name == "amq.gen-abc"
    assert seen == ["amq.gen-abc"]
    assert ch.calls[1][1] == ""
    assert ch.calls[2] == ("queue_bind", "amq.gen-abc", "media", "k", None)
    assert hash(q) == h  # stable across naming
    # redeclaring on the same connection uses the name it was given
    await q.queue_declare(channel=ch)
    assert ch.calls[-1][1] == "amq.gen-abc"
    # a reconnect may reset it
    q.name = ""
    assert q.name == ""


@pytest.mark.anyio
async def test_server_named_queue_needs_a_name_before_use() -> None:
    ch = FakeChannel()
    q = Queue("")
    with pytest.raises(ValueError, match="no name yet"):
        await q.queue_declare(passive=True, channel=ch)
    with pytest.raises(ValueError, match="no name yet"):
        await q.purge(channel=ch)
    with pytest.raises(ValueError, match="no name yet"):
        await q.delete(channel=ch)
    with pytest.raises(ValueError, match="no name yet"):
        await q.bind_to("ex", channel=ch)
    with pytest.raises(ValueError, match="no name yet"):
        await Queue("", Exchange("ex")).queue_bind(channel=ch)
    assert ch.calls == []


@pytest.mark.anyio
async def test_cancelled_server_named_declare_keeps_no_name() -> None:
    ch = FakeChannel()
    q = Queue("")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await q.declare(channel=ch)
    assert q.name == ""
    assert ch.calls == []


def test_named_queue_is_immutable() -> None:
    q = Queue("q")
    with pytest.raises(AttributeError, match="server-named"):
        q.name = "other"
    with pytest.raises(AttributeError, match="immutable"):
        q.durable = False
    with pytest.raises(AttributeError):
        del q.routing_key
    assert q.name == "q"


# --- Queue: bindings and validation ----------------------------------------------


def test_bindings_conflict_with_exchange_or_routing_key() -> None:
    b = binding("ex", "k")
    with pytest.raises(ValueError, match="either bindings"):
        Queue("q", Exchange("ex"), bindings=[b])
    # a routing key beside bindings is kept, as in kombu, and bound nowhere
    assert Queue("q", routing_key="k", bindings=[b]).routing_key == "k"
    with pytest.raises(ValueError, match="either bindings"):
        Queue("q", binding_arguments={"a": 1}, bindings=[b])
    with pytest.raises(ValueError, match=r"exchange=\[\.\.\.\] or bindings"):
        Queue("q", [b], bindings=[b])


def test_binding_arguments_without_exchange_are_refused() -> None:
    with pytest.raises(ValueError, match="need an exchange"):
        Queue("q", binding_arguments={"a": 1})
    with pytest.raises(ValueError, match="need an exchange"):
        Queue("q", Exchange(""), binding_arguments={"a": 1})


@pytest.mark.anyio
async def test_routing_key_without_exchange_is_kept_and_binds_nothing() -> None:
    # kombu's Queue(name, routing_key=...): the key is kept for publishing
    for q in (Queue("q", routing_key="rk"), Queue("q", Exchange(""), routing_key="rk")):
        assert q.routing_key == "rk"
        assert q.exchange == Exchange("")  # kombu: the default exchange, not None
        assert q == Queue("q", routing_key="rk")
        ch = FakeChannel()
        assert await q.declare(channel=ch) == "q"
        assert ch.methods() == ["queue_declare"]
        with pytest.raises(ValueError, match="no exchange of its own"):
            await q.queue_bind(channel=ch)
        assert ch.methods() == ["queue_declare"]


def test_bindings_validation_and_dedup() -> None:
    b1, b2 = binding("a", "1"), binding("b", "2")
    q = Queue("q", bindings=[b1, b2, binding("a", "1")])
    assert q.bindings == (b1, b2)
    assert q.exchange is None
    # kombu's Queue("q", [binding, ...])
    assert Queue("q", [b1, b2]).bindings == (b1, b2)
    assert Queue("q", (b for b in [b1, b2])).bindings == (b1, b2)
    with pytest.raises(TypeError, match="binding objects"):
        Queue("q", bindings=["a"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="exchange must be"):
        Queue("q", 5)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_queue_bind_and_unbind_and_bindings() -> None:
    ch = FakeChannel()
    q = Queue("q", Exchange("main"), "k", binding_arguments={"a": 1})
    await q.queue_bind(channel=ch)
    await q.queue_unbind(channel=ch)
    await q.queue_unbind({"other": 1}, channel=ch)
    assert ch.calls == [
        ("queue_bind", "q", "main", "k", {"a": 1}),
        ("queue_unbind", "q", "main", "k", {"a": 1}),
        ("queue_unbind", "q", "main", "k", {"other": 1}),
    ]
    ch = FakeChannel()
    q = Queue("q", bindings=[binding("a", "1"), binding("b", "2", {"x": 1}, {"y": 2})])
    with pytest.raises(ValueError, match="bound by declare"):
        await q.queue_bind(channel=ch)
    for b in q.bindings:
        await b.bind(q, channel=ch)
    for b in q.bindings:
        await b.unbind(q, channel=ch)
    assert ch.calls == [
        ("queue_bind", "q", "a", "1", None),
        ("queue_bind", "q", "b", "2", {"x": 1}),
        ("queue_unbind", "q", "a", "1", None),
        ("queue_unbind", "q", "b", "2", {"y": 2}),
    ]


@pytest.mark.anyio
async def test_declare_with_nothing_to_bind_checkpoints() -> None:
    ch = FakeChannel()
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await Queue("q", no_declare=True).declare(channel=ch)
        reached = True
    assert not reached
    await Queue("q").declare(channel=ch)
    assert ch.methods() == ["queue_declare"]


@pytest.mark.anyio
async def test_queue_bind_to_unbind_from_purge_delete() -> None:
    ch = FakeChannel()
    q = Queue("q")
    await q.bind_to(Exchange("ex"), "rk", {"a": 1}, channel=ch)
    await q.bind_to("ex2", channel=ch)
    await q.unbind_from("ex", "rk", {"a": 1}, channel=ch)
    assert await q.purge(channel=ch) == 7
    assert await q.delete(channel=ch) == 3
    assert await q.delete(if_unused=True, if_empty=True, channel=ch) == 3
    assert ch.calls == [
        ("queue_bind", "q", "ex", "rk", {"a": 1}),
        ("queue_bind", "q", "ex2", "", None),
        ("queue_unbind", "q", "ex", "rk", {"a": 1}),
        ("queue_purge", "q"),
        ("queue_delete", "q", {"if_unused": False, "if_empty": False}),
        ("queue_delete", "q", {"if_unused": True, "if_empty": True}),
    ]
    with pytest.raises(ValueError, match="default exchange"):
        await q.bind_to("", channel=ch)
    with pytest.raises(ValueError, match="default exchange"):
        await q.unbind_from(Exchange(""), channel=ch)


# --- Queue: equality -------------------------------------------------------------


def test_queue_equality_and_hash() -> None:
    def make(**kw: Any) -> Queue:
        base: dict[str, Any] = {
            "name": "q",
            "exchange": Exchange("ex", "topic"),
            "routing_key": "k",
            "max_priority": 5,
        }
        base.update(kw)
        return Queue(**base)

    a = make()
    assert a == make()
    assert hash(a) == hash(make())
    assert len({a, make()}) == 1
    # the convenience and the raw argument declare the same thing
    assert a == make(max_priority=None, queue_arguments={"x-max-priority": 5})
    # not part of the declared identity
    assert a == make(no_ack=True, consumer_arguments={"x-priority": 1}, no_declare=True)
    assert a == make(on_declared=print)
    # part of it
    for other in (
        make(name="r"),
        make(exchange=Exchange("ex", "direct")),
        make(routing_key="j"),
        make(max_priority=6),
        make(durable=False),
        make(exclusive=True),
        make(auto_delete=True),
        make(binding_arguments={"a": 1}),
    ):
        assert a != other
    assert a != "q"


def test_queue_bindings_compare_as_a_set() -> None:
    b1, b2 = binding("a", "1"), binding("b", "2")
    assert Queue("q", bindings=[b1, b2]) == Queue("q", bindings=[b2, b1])
    assert hash(Queue("q", bindings=[b1, b2])) == hash(Queue("q", bindings=[b2, b1]))
    assert Queue("q", bindings=[b1]) != Queue("q", bindings=[b1, b2])


def test_server_named_queues_compare_by_name() -> None:
    a, b = Queue(""), Queue("")
    assert a == b
    assert a != Queue("amq.gen-x")
    a.name = "amq.gen-1"
    b.name = "amq.gen-2"
    assert a != b
    assert hash(a) == hash(b)  # name left out of a server-named queue's hash
    assert a != Queue("amq.gen-1")  # server-named is part of the identity


def test_queue_repr() -> None:
    assert repr(Queue("q")) == "<Queue 'q'>"
    assert repr(Queue("q", Exchange("ex"), "k")) == "<Queue 'q' -> <Exchange 'ex'(direct)> -> 'k'>"
    assert (
        repr(Queue("q", bindings=[binding("a", "1")])) == "<Queue 'q' -> [<binding: 'a' -> '1'>]>"
    )


def test_queue_copies_its_tables() -> None:
    qa: dict[str, Any] = {"x-overflow": "drop-head"}
    ba: dict[str, Any] = {"a": 1}
    q = Queue("q", Exchange("e"), "k", queue_arguments=qa, binding_arguments=ba)
    qa["x-overflow"] = "reject-publish"
    ba["a"] = 2
    assert q.queue_arguments == {"x-overflow": "drop-head"}
    assert q.binding_arguments == {"a": 1}


# --- maybe_declare ---------------------------------------------------------------


@pytest.mark.anyio
async def test_maybe_declare_caches_per_connection() -> None:
    ch = FakeChannel()
    q = Queue("q", Exchange("ex"), "k")
    assert await maybe_declare(q, ch) is True
    assert q in ch.connection.declared_entities
    n = len(ch.calls)
    assert n == 3
    assert await maybe_declare(q, ch) is False
    # an equal queue built elsewhere counts as declared
    assert await maybe_declare(Queue("q", Exchange("ex"), "k"), ch) is False
    assert len(ch.calls) == n
    # a different declaration is declared
    assert await maybe_declare(Queue("q", Exchange("ex"), "other"), ch) is True
    # another connection has its own cache
    ch2 = FakeChannel()
    assert await maybe_declare(q, ch2) is True
    assert ch2.methods() == ["exchange_declare", "queue_declare", "queue_bind"]


@pytest.mark.anyio
async def test_maybe_declare_exchange() -> None:
    ch = FakeChannel()
    ex = Exchange("ex", "fanout")
    assert await maybe_declare(ex, ch) is True
    assert await maybe_declare(Exchange("ex", "fanout"), ch) is False
    assert await maybe_declare(Exchange("ex", "topic"), ch) is True
    assert ch.methods() == ["exchange_declare", "exchange_declare"]


@pytest.mark.anyio
async def test_maybe_declare_never_caches_server_named_queues() -> None:
    ch = FakeChannel()
    q = Queue("", durable=False)
    assert await maybe_declare(q, ch) is True
    assert await maybe_declare(q, ch) is True
    assert ch.methods() == ["queue_declare", "queue_declare"]
    assert ch.connection.declared_entities == set()


@pytest.mark.parametrize(
    "entity",
    [
        Queue("q", auto_delete=True),
        Queue("q", exclusive=True),
        Queue("q", expires=10),
        Queue("q", queue_arguments={"x-expires": 10000}),
        Exchange("ex", auto_delete=True),
    ],
    ids=repr,
)
@pytest.mark.anyio
async def test_maybe_declare_does_not_cache_what_may_vanish(entity: Queue | Exchange) -> None:
    ch = FakeChannel()
    assert await maybe_declare(entity, ch) is True
    assert await maybe_declare(entity, ch) is True
    assert len(ch.calls) == 2
    assert ch.connection.declared_entities == set()


@pytest.mark.parametrize(
    "entity",
    [Exchange(""), Exchange("ex", no_declare=True), Queue("q", no_declare=True)],
    ids=repr,
)
@pytest.mark.anyio
async def test_maybe_declare_with_nothing_to_declare(entity: Queue | Exchange) -> None:
    ch = FakeChannel()
    assert await maybe_declare(entity, ch) is False
    assert ch.calls == []
    assert ch.connection.declared_entities == set()


@pytest.mark.anyio
async def test_maybe_declare_checkpoints_when_cached() -> None:
    ch = FakeChannel()
    ex = Exchange("ex")
    await maybe_declare(ex, ch)
    result: bool | None = None
    with anyio.CancelScope() as scope:
        scope.cancel()
        result = await maybe_declare(ex, ch)
    assert result is None


@pytest.mark.anyio
async def test_cancelled_maybe_declare_is_not_cached() -> None:
    ch = FakeChannel()
    ex = Exchange("ex")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await maybe_declare(ex, ch)
    assert ch.connection.declared_entities == set()
    assert await maybe_declare(ex, ch) is True


@pytest.mark.anyio
async def test_failed_declare_is_not_cached() -> None:
    class Refusing(FakeChannel):
        async def queue_declare(self, queue: str = "", **kw: Any) -> QueueDeclareOk:
            await anyio.lowlevel.checkpoint()
            raise RuntimeError("406")

    ch = Refusing()
    q = Queue("q")
    with pytest.raises(RuntimeError):
        await maybe_declare(q, ch)
    assert ch.connection.declared_entities == set()


# --- bound entities (kombu's MaybeChannelBound) ------------------------------------


class PublishingChannel(FakeChannel):
    channel_id = 7

    async def basic_publish(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: Any = None,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> None:
        await self._record("basic_publish", body, exchange, routing_key, properties, mandatory)

    async def basic_get(self, queue: str, *, no_ack: bool = False, accept: Any = None) -> None:
        await self._record("basic_get", queue, {"no_ack": no_ack, "accept": accept})

    async def basic_cancel(self, consumer_tag: str) -> None:
        await self._record("basic_cancel", consumer_tag)


def test_bind_returns_a_bound_copy_equal_to_the_entity() -> None:
    ch = FakeChannel()
    ex = Exchange("ex", "topic")
    q = Queue("q", ex, "k")
    for entity in (ex, q):
        assert not entity.is_bound
        with pytest.raises(NotBoundError, match="not bound"):
            _ = entity.channel
        bound = entity.bind(ch)
        assert bound is not entity
        assert bound.is_bound and bound.channel is ch
        assert not entity.is_bound  # the original stays unbound
        assert bound == entity and hash(bound) == hash(entity)
        assert entity(ch) == entity and entity(ch).channel is ch  # __call__
    bound_q = q(ch)
    assert bound_q.exchange is not None and bound_q.exchange.channel is ch  # when_bound
    assert q.exchange is ex and not ex.is_bound


def test_maybe_bind_binds_in_place_once_and_revive_moves() -> None:
    one, two = FakeChannel(), FakeChannel()
    q = Queue("q", Exchange("ex"), "k")
    assert q.maybe_bind(None) is q and not q.is_bound
    assert q.maybe_bind(one) is q and q.channel is one
    assert q.maybe_bind(two) is q and q.channel is one  # already bound: unchanged
    q.revive(two)
    assert q.channel is two
    assert q.exchange is not None and q.exchange.channel is two
    unbound = Queue("q")
    unbound.revive(two)
    assert not unbound.is_bound
    # bound at construction, as kombu's channel= argument
    assert Queue("q", channel=one).channel is one
    assert Exchange("ex", channel=one).channel is one


def test_only_channels_bind() -> None:
    class Connection:
        async def open_channel(self) -> None: ...

    with pytest.raises(TypeError, match="open_channel"):
        Queue("q").bind(Connection())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bind to a Channel"):
        Exchange("ex")(object())  # type: ignore[arg-type]


def test_bound_repr_names_the_channel() -> None:
    ch = PublishingChannel()
    assert repr(Exchange("ex", "topic")(ch)) == "<Exchange 'ex'(topic) bound to chan:7>"
    assert repr(Queue("q")(ch)) == "<Queue 'q' bound to chan:7>"
    assert str(Exchange("ex", "topic")) == "Exchange ex(topic)"
    assert str(binding("ex", "rk")) == "ex->rk"


@pytest.mark.anyio
async def test_bound_entities_use_their_channel_or_the_one_given() -> None:
    bound_ch, other = FakeChannel(), FakeChannel()
    q = Queue("q", Exchange("ex"), "k")(bound_ch)
    await q.declare()
    await q.purge()
    await q.declare(channel=other)
    assert bound_ch.methods() == ["exchange_declare", "queue_declare", "queue_bind", "queue_purge"]
    assert other.methods() == ["exchange_declare", "queue_declare", "queue_bind"]
    with pytest.raises(NotBoundError):
        await Queue("q").purge()
    with pytest.raises(NotBoundError):
        await Exchange("ex").declare()
    assert await maybe_declare(Exchange("ex2")(other)) is True  # kombu: no channel needed
    assert other.calls[-1][:2] == ("exchange_declare", "ex2")
    with pytest.raises(NotBoundError):
        await maybe_declare(Exchange("ex3"))


@pytest.mark.anyio
async def test_a_channel_passed_where_kombu_has_a_flag_is_a_type_error() -> None:
    """trio_msg's old form, queue.declare(channel), would be kombu's nowait=channel."""
    ch = FakeChannel()
    for call in (
        lambda: Queue("q").declare(ch),  # type: ignore[arg-type]
        lambda: Queue("q").queue_declare(ch),  # type: ignore[arg-type]
        lambda: Queue("q").purge(ch),  # type: ignore[arg-type]
        lambda: Queue("q").delete(ch),  # type: ignore[arg-type]
        lambda: Exchange("x").declare(ch),  # type: ignore[arg-type]
        lambda: Exchange("x").delete(ch),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="channel="):
            await call()
    assert ch.calls == []


@pytest.mark.anyio
async def test_nowait_is_accepted_and_still_waits() -> None:
    ch = FakeChannel()
    q = Queue("q", Exchange("ex"), "k")(ch)
    assert await q.declare(nowait=True) == "q"
    assert await q.purge(nowait=True) == 7
    assert await q.delete(nowait=True) == 3
    await q.exchange.delete(nowait=True)  # type: ignore[union-attr]
    assert ch.methods()[-3:] == ["queue_purge", "queue_delete", "exchange_delete"]


@pytest.mark.anyio
async def test_queue_get_prepares_accept_and_uses_no_ack_default() -> None:
    ch = PublishingChannel()
    await Queue("q")(ch).get()
    await Queue("q", no_ack=True)(ch).get(accept=["json", "text/plain"])
    await Queue("q", no_ack=True)(ch).get(no_ack=False, accept="application/json")
    assert [c[2] for c in ch.calls] == [
        {"no_ack": False, "accept": None},
        {"no_ack": True, "accept": frozenset({"application/json", "text/plain"})},
        {"no_ack": False, "accept": frozenset({"application/json"})},
    ]


@pytest.mark.anyio
async def test_consume_is_not_supported_and_cancel_cancels() -> None:
    ch = PublishingChannel()
    q = Queue("q")(ch)
    with pytest.raises(NotSupported, match="Consumer"):
        await q.consume(callback=lambda *a: None)
    await q.cancel("ctag")
    assert ch.calls == [("basic_cancel", "ctag")]


def test_exchange_message_is_kombus() -> None:
    ex = Exchange("ex", delivery_mode="transient")
    m = ex.Message("héllo", properties={"reply_to": "r"}, priority=3, headers={"h": 1})
    assert m.body == "héllo".encode()
    p = m.properties
    assert (p.content_encoding, p.delivery_mode, p.priority, p.reply_to, p.headers) == (
        "utf-8",
        TRANSIENT_DELIVERY_MODE,
        3,
        "r",
        {"h": 1},
    )
    raw = Exchange("ex").Message(b"\x00", content_type="application/x-thing")
    assert raw.body == b"\x00"
    assert raw.properties.delivery_mode == PERSISTENT_DELIVERY_MODE  # kombu's default
    assert raw.properties.content_encoding is None
    assert Exchange("ex").Message("x", content_encoding="latin-1").body == b"x"
    with pytest.raises(TypeError, match="does not serialize"):
        Exchange("ex").Message({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown message properties: bogus"):
        Exchange("ex").Message("x", properties={"bogus": 1})


@pytest.mark.anyio
async def test_exchange_publish() -> None:
    ch = PublishingChannel()
    ex = Exchange("ex")(ch)
    await ex.publish("a", routing_key="rk")
    await ex.publish(ex.Message(b"b"), mandatory=True, exchange="other")
    await ex.publish(b"c", routing_key="rk", exchange=Exchange("third"))
    assert [(c[1], c[2], c[3], c[5]) for c in ch.calls] == [
        (b"a", "ex", "rk", False),
        (b"b", "other", "", True),
        (b"c", "third", "rk", False),
    ]
    with pytest.raises(TypeError, match=r"Exchange\.Message"):
        await ex.publish(123)  # type: ignore[arg-type]
    with pytest.raises(NotBoundError):
        await Exchange("ex").publish("x")


def test_as_dict_round_trips_and_pickles() -> None:
    ex = Exchange("ex", "topic", durable=False, arguments={"alternate-exchange": "ae"})
    assert Exchange(**ex.as_dict()) == ex
    q = Queue(
        "q",
        ex,
        "k",
        binding_arguments={"b": 1},
        message_ttl=1.5,
        max_priority=5,
        dead_letter_exchange="dlx",
        alias="video",
        no_ack=True,
    )
    d = q.as_dict()
    assert d["alias"] == "video" and d["message_ttl"] == 1.5 and d["exchange"] is ex
    assert Queue(**d) == q
    q2 = Queue("q2", bindings=[binding(ex, "a"), binding("other", "b")])
    assert Queue(**q2.as_dict()) == q2
    rec = q2.as_dict(recurse=True)
    assert rec["bindings"][0]["exchange"]["name"] == "ex"
    for entity in (ex, q, q2, binding(ex, "a", {"x": 1})):
        assert pickle.loads(pickle.dumps(entity)) == entity
    bound = q(FakeChannel())
    assert not copy.copy(bound).is_bound  # kombu: a copy is unbound
    assert copy.copy(bound) == q
    assert not copy.copy(ex(FakeChannel())).is_bound


def test_from_dict_follows_kombu() -> None:
    q = Queue.from_dict(
        "video",
        exchange="media",
        exchange_type="topic",
        binding_key="video.#",
        durable=False,
        exchange_durable=True,
        queue_arguments={"x-max-length": 10},
        expires=30,
        unknown_option="ignored",
    )
    assert q.name == "video" and q.routing_key == "video.#"
    assert q.exchange == Exchange("media", "topic", durable=True)
    assert q.durable is False
    assert q.queue_arguments == {"x-max-length": 10, "x-expires": 30000}
    plain = Queue.from_dict("plain")
    assert plain.exchange is not None and plain.exchange.is_default
    assert plain.durable is True
    assert Queue.ContentDisallowed is ContentDisallowed
    assert Exchange.PERSISTENT_DELIVERY_MODE == 2


@pytest.mark.anyio
async def test_the_declaration_cache_keeps_no_channel() -> None:
    ch = FakeChannel()
    ex = Exchange("ex")(ch)
    assert await maybe_declare(ex) is True
    assert await maybe_declare(Exchange("ex"), ch) is False  # the same value: cached
    (cached,) = ch.connection.declared_entities
    assert cached == ex and not cached.is_bound  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_maybe_declare_retry_is_not_supported() -> None:
    ch = FakeChannel()
    with pytest.raises(NotSupported, match="revive=True"):
        await maybe_declare(Exchange("ex"), ch, retry=True)
    with pytest.raises(NotSupported):
        await maybe_declare(Exchange("ex"), ch, max_retries=3)
    assert ch.calls == []
