"""What a Producer puts in each message's properties, as the broker decodes
them (pamqp, in the fake broker): the properties a Producer builds once for
raw bodies without headers and uses again (``Producer._build``) must be
exactly what it would build afresh."""

from __future__ import annotations

from typing import Any

import pytest

from trio_msg import Exchange, Producer
from trio_msg.connection import connect

from .fake_broker import URL, FakeBroker

RAW = "application/x-raw"


def fields(props: Any) -> dict[str, Any]:
    names = ("content_type", "content_encoding", "delivery_mode", "priority", "expiration")
    return {name: getattr(props, name) for name in names}


@pytest.mark.anyio
async def test_properties_used_again_are_the_ones_asked_for(broker: FakeBroker) -> None:
    # Each combination twice, interleaved, so that every second one comes
    # from the kept properties.
    asked: list[dict[str, Any]] = [
        {},
        {"delivery_mode": 1},
        {"delivery_mode": "persistent"},
        {"priority": 3},
        {"expiration": 1.5},
        {"content_encoding": "gzipped"},
        {"priority": 3, "delivery_mode": 2, "expiration": 10},
    ]
    async with (
        broker,
        connect(URL) as conn,
        Producer(
            conn, Exchange("ex", delivery_mode=1), confirm=False, auto_declare=False
        ) as producer,
    ):
        for kwargs in asked + asked:
            await producer.publish(b"x", routing_key="q", content_type=RAW, **kwargs)
        # Another exchange, another default: not the properties kept.
        producer.exchange = Exchange("ex", delivery_mode=2)
        await producer.publish(b"x", routing_key="q", content_type=RAW)
        await broker.wait_published(2 * len(asked) + 1)
    got = [fields(p.properties) for p in broker.published]
    want = [
        {
            "content_type": RAW,
            "content_encoding": kwargs.get("content_encoding", "binary"),
            "delivery_mode": {None: 1, 1: 1, "persistent": 2, 2: 2}[kwargs.get("delivery_mode")],
            "priority": kwargs.get("priority"),
            "expiration": (
                None if "expiration" not in kwargs else str(int(kwargs["expiration"] * 1000))
            ),
        }
        for kwargs in asked + asked
    ]
    want.append({**want[0], "delivery_mode": 2})
    assert got == want


@pytest.mark.anyio
async def test_a_priority_that_is_not_an_integer_is_refused(broker: FakeBroker) -> None:
    async with broker, connect(URL) as conn, Producer(conn, confirm=False) as producer:
        await producer.publish(b"x", routing_key="q", content_type=RAW, priority=1)
        # Equal to 1, but not an integer: refused, not taken for the 1 before.
        with pytest.raises(ValueError, match="priority must be an integer"):
            await producer.publish(b"x", routing_key="q", content_type=RAW, priority=1.0)
        await producer.publish(b"y", routing_key="q", content_type=RAW, priority=1)
        await broker.wait_published(2)
    assert [p.body for p in broker.published] == [b"x", b"y"]
