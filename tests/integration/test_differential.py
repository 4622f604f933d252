"""The embedded broker held true to RabbitMQ: the same random sequences of
operations, applied to both, give the same observable results.

A hypothesis state machine drives two pika connections side by side: one to
the real RabbitMQ, one to the embedded broker on a local TCP port (the
broker behind ``memory://``, reached the way any client reaches it).  Each
step does one thing to both and compares what a client sees: message
bodies in the order they come, redelivered flags, exchanges and routing
keys, message counts, confirms and nacks, unroutable returns, and the reply
codes of errors.  Everything here is deterministic in RabbitMQ for one
client on classic queues, so it is compared strictly.

``TRIO_MSG_DIFFERENTIAL_EXAMPLES`` sets how many sequences run (30 by
default; the ``differential`` nox session runs many more).
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
import trio
from _broker import BROKER_HOST, BROKER_PORT
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from trio_msg._broker import BrokerServer

_WIRE_TYPE = re.compile(r"of type '[a-z]+'")

EXAMPLES = int(os.environ.get("TRIO_MSG_DIFFERENTIAL_EXAMPLES", "30"))

QUEUES = ["q1", "q2", "q3"]
EXCHANGES = ["direct", "fanout", "topic", "headers"]
KEYS = ["a", "b", "a.b", "a.c", "b.c", ""]
TOPIC_PATTERNS = ["a", "a.*", "a.#", "#", "*.c", "b.*"]
QUEUE_ARGUMENTS: list[dict[str, Any]] = [
    {},
    {},
    {"x-max-length": 2},
    {"x-max-length": 1, "x-overflow": "reject-publish"},
    {"x-max-priority": 3},
    {"x-max-length-bytes": 6},
]


class _Server:
    """The embedded broker on a free TCP port, in a thread of its own."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._state: dict[str, Any] = {}
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the embedded broker did not start"

    async def _serve(self) -> None:
        with trio.CancelScope() as scope:
            self._state["scope"] = scope
            self._state["token"] = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self.port = await nursery.start(BrokerServer().serve_tcp, 0)
                self._ready.set()

    def stop(self) -> None:
        self._state["token"].run_sync_soon(self._state["scope"].cancel)
        self._thread.join(10)


@pytest.fixture(scope="module")
def memory_port() -> Iterator[int]:
    server = _Server()
    yield server.port
    server.stop()


class Side:
    """One broker as a pika client sees it: a confirming channel, reopened
    after a channel error; the unsettled delivery tags of basic.get."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.prefix = prefix
        self.connection = pika.BlockingConnection(
            pika.ConnectionParameters(
                host=host, port=port, heartbeat=0, blocked_connection_timeout=10
            )
        )
        self.channel = self._open()
        self.unacked: list[int] = []

    def _open(self) -> Any:
        channel = self.connection.channel()
        channel.confirm_delivery()
        return channel

    def name(self, short: str) -> str:
        return f"{self.prefix}.{short}"

    def do(self, op: str, *args: Any) -> Any:
        """Run one operation; the outcome as a comparable value (an error is
        ``("error", reply_code)``, after which the channel is reopened and
        the broker has requeued what it held unacked)."""
        try:
            return getattr(self, "op_" + op)(*args)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.channel = self._open()
            self.unacked.clear()  # the closed channel's deliveries went back
            # RabbitMQ names an argument's type in an "inequivalent arg" text by
            # the field-table type the client chose on the wire, which the
            # embedded broker does not keep: that word is not compared.
            return ("error", exc.reply_code, _WIRE_TYPE.sub("of type _", exc.reply_text))

    # --- operations ------------------------------------------------------------

    def op_declare_queue(self, short: str, arguments: dict[str, Any]) -> Any:
        ok = self.channel.queue_declare(
            self.name(short), durable=False, arguments=arguments or None
        )
        return ("declare-ok", ok.method.message_count, ok.method.consumer_count)

    def op_declare_exchange(self, short: str, type: str) -> Any:
        self.channel.exchange_declare(self.name(short), type, durable=False)
        return "ok"

    def op_bind(self, queue: str, exchange: str, key: str, arguments: dict[str, Any]) -> Any:
        self.channel.queue_bind(self.name(queue), self.name(exchange), key, arguments or None)
        return "ok"

    def op_unbind(self, queue: str, exchange: str, key: str, arguments: dict[str, Any]) -> Any:
        self.channel.queue_unbind(self.name(queue), self.name(exchange), key, arguments or None)
        return "ok"

    def op_publish(
        self, exchange: str, key: str, body: bytes, mandatory: bool, priority: int, headers: Any
    ) -> Any:
        exchange_name = self.name(exchange) if exchange else ""
        routing_key = self.name(key) if exchange == "" and key in QUEUES else key
        try:
            self.channel.basic_publish(
                exchange_name,
                routing_key,
                body,
                pika.BasicProperties(priority=priority or None, headers=headers or None),
                mandatory=mandatory,
            )
        except pika.exceptions.UnroutableError:
            return "returned"
        except pika.exceptions.NackError:
            return "nacked"
        return "confirmed"

    def op_get(self, queue: str, no_ack: bool) -> Any:
        method, props, body = self.channel.basic_get(self.name(queue), auto_ack=no_ack)
        if method is None:
            return "empty"
        if not no_ack:
            self.unacked.append(method.delivery_tag)
        exchange = method.exchange.removeprefix(self.prefix + ".") if method.exchange else ""
        key = method.routing_key.removeprefix(self.prefix + ".")
        return (
            "message",
            body,
            method.redelivered,
            exchange,
            key,
            method.message_count,
            props.priority,
        )

    def op_settle(self, index: int, how: str, multiple: bool) -> Any:
        if not self.unacked:
            return "nothing"
        tag = self.unacked[index % len(self.unacked)]
        if how == "ack":
            self.channel.basic_ack(tag, multiple=multiple)
        elif how == "reject":
            self.channel.basic_reject(tag, requeue=False)
        elif how == "requeue":
            self.channel.basic_reject(tag, requeue=True)
        else:
            self.channel.basic_nack(tag, multiple=multiple, requeue=how == "nack-requeue")
        if multiple and how in ("ack", "nack-requeue", "nack-drop"):
            self.unacked = [t for t in self.unacked if t > tag]
        else:
            self.unacked.remove(tag)
        # a round trip, so the settlement has taken effect before the next step
        self.channel.queue_declare(self.name("sync"), durable=False, auto_delete=False)
        return "ok"

    def op_ack_unknown_tag(self) -> Any:
        self.channel.basic_ack(10_000)
        self.channel.queue_declare(self.name("sync"), durable=False)  # the error comes back
        return "ok"

    def op_recover(self) -> Any:
        self.channel.basic_recover(requeue=True)
        self.unacked.clear()
        return "ok"

    def op_purge(self, queue: str) -> Any:
        ok = self.channel.queue_purge(self.name(queue))
        return ("purged", ok.method.message_count)

    def op_delete(self, queue: str, if_empty: bool) -> Any:
        ok = self.channel.queue_delete(self.name(queue), if_empty=if_empty)
        return ("deleted", ok.method.message_count)

    def op_count(self, queue: str) -> Any:
        ok = self.channel.queue_declare(self.name(queue), passive=True)
        return ("count", ok.method.message_count)

    def close(self, queues: list[str], exchanges: list[str]) -> None:
        try:
            channel = self.connection.channel()
            for q in [*queues, "sync"]:
                channel.queue_delete(self.name(q))
            for x in exchanges:
                channel.exchange_delete(self.name(x))
        finally:
            self.connection.close()


@pytest.mark.rabbitmq_only(reason="compares the embedded broker with RabbitMQ")
def test_embedded_broker_matches_rabbitmq(memory_port: int) -> None:
    class Differential(RuleBasedStateMachine):
        queues = Bundle("queues")

        @initialize()
        def connect(self) -> None:
            prefix = f"trio_msg.diff.{uuid.uuid4().hex[:10]}"
            self.rabbit = Side(BROKER_HOST, BROKER_PORT, prefix)
            self.memory = Side("127.0.0.1", memory_port, prefix)
            self.steps = 0
            self.existing: set[str] = set()
            for exchange in EXCHANGES:
                self.both("declare_exchange", exchange, exchange)

        def both(self, op: str, *args: Any) -> Any:
            self.steps += 1
            expected = self.rabbit.do(op, *args)
            got = self.memory.do(op, *args)
            assert got == expected, f"{op}{args}: RabbitMQ gave {expected!r}, memory:// {got!r}"
            return expected

        @rule(
            target=queues, queue=st.sampled_from(QUEUES), arguments=st.sampled_from(QUEUE_ARGUMENTS)
        )
        def declare_queue(self, queue: str, arguments: dict[str, Any]) -> str:
            if self.both("declare_queue", queue, arguments)[0] == "declare-ok":
                self.existing.add(queue)
            return queue

        @rule(
            queue=queues,
            exchange=st.sampled_from(EXCHANGES),
            key=st.sampled_from(KEYS + TOPIC_PATTERNS),
            match=st.sampled_from(["all", "any"]),
        )
        def bind(self, queue: str, exchange: str, key: str, match: str) -> None:
            arguments = {"x-match": match, "k": key} if exchange == "headers" else {}
            self.both("bind", queue, exchange, key, arguments)

        @rule(
            queue=queues,
            exchange=st.sampled_from(EXCHANGES),
            key=st.sampled_from(KEYS + TOPIC_PATTERNS),
        )
        def unbind(self, queue: str, exchange: str, key: str) -> None:
            self.both("unbind", queue, exchange, key, {})

        @rule(
            exchange=st.sampled_from(["", *EXCHANGES, "missing"]),
            key=st.sampled_from(KEYS + QUEUES),
            body=st.binary(min_size=0, max_size=4),
            mandatory=st.booleans(),
            priority=st.integers(0, 5),
            header=st.sampled_from([None, "a", "b"]),
        )
        def publish(
            self, exchange: str, key: str, body: bytes, mandatory: bool, priority: int, header: Any
        ) -> None:
            headers = {"k": header} if header else None
            self.both("publish", exchange, key, body, mandatory, priority, headers)

        @rule(queue=queues, no_ack=st.booleans())
        def get(self, queue: str, no_ack: bool) -> None:
            self.both("get", queue, no_ack)

        @precondition(lambda self: bool(self.rabbit.unacked))
        @rule(
            index=st.integers(0, 5),
            how=st.sampled_from(["ack", "reject", "requeue", "nack-requeue", "nack-drop"]),
            multiple=st.booleans(),
        )
        def settle(self, index: int, how: str, multiple: bool) -> None:
            self.both("settle", index, how, multiple)

        @rule()
        def ack_unknown_tag(self) -> None:
            self.both("ack_unknown_tag")

        @rule()
        def recover(self) -> None:
            self.both("recover")

        @rule(queue=queues)
        def purge(self, queue: str) -> None:
            self.both("purge", queue)

        @rule(queue=queues, if_empty=st.booleans())
        def delete(self, queue: str, if_empty: bool) -> None:
            if self.both("delete", queue, if_empty)[0] == "deleted":
                self.existing.discard(queue)

        @invariant()
        def same_counts(self) -> None:
            if not hasattr(self, "rabbit"):
                return
            for queue in sorted(self.existing):
                self.both("count", queue)

        def teardown(self) -> None:
            if hasattr(self, "rabbit"):
                STEPS.append(self.steps)
                self.rabbit.close(QUEUES, EXCHANGES)
                self.memory.close(QUEUES, EXCHANGES)

    STEPS: list[int] = []
    Differential.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    Differential.TestCase().runTest()
    print(f"differential: {len(STEPS)} sequences, {sum(STEPS)} operations on each broker")
