"""The core's events carry plain values (ints, strings, dicts, trio_msg's
own classes), never pamqp objects: what the driver and the API layer see of
a reply does not depend on the codec underneath."""

from __future__ import annotations

from typing import Any

from pamqp import commands as C

from trio_msg._protocol import events

from .peer import build, connected


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str | bytes | events.Outcome):
        return True
    if isinstance(value, tuple | list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    module = type(value).__module__
    return module.startswith("trio_msg.") or module in ("datetime", "decimal")


def test_core_events_carry_plain_values() -> None:
    peer = connected()
    ch = peer.open_channel()
    ch.queue_declare("q")
    ch.basic_get("q")
    seen = peer.send(ch.id, build(C.Queue.DeclareOk, queue="q", message_count=1, consumer_count=0))
    seen += peer.feed(
        peer.content(
            ch.id,
            build(
                C.Basic.GetOk,
                delivery_tag=1,
                redelivered=False,
                exchange="",
                routing_key="q",
                message_count=0,
            ),
            b"body",
        )
    )
    assert [type(e).__name__ for e in seen] == ["RpcReply", "RpcReply"]
    assert [e.name for e in seen] == ["queue.declare-ok", "basic.get-ok"]
    for event in [*seen, events.ConnectionBlocked("x")]:
        for field in type(event).__slots__:
            value = getattr(event, field)
            assert _plain(value), (event, field, value)
