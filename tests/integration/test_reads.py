"""How the driver sizes its reads (``trio_msg._wire.read_size``), against the
broker over TCP: small reads for a run of small messages, which keeps the heap
small (see ``READ_SIZE``), big ones while a large frame comes in, which
keeps large messages from being put together out of many pieces."""

from __future__ import annotations

import anyio
import pytest
from _broker import BROKER_URL

import trio_msg
from trio_msg import _asyncio_wire, _trio_wire
from trio_msg._wire import BIG_READ_SIZE, READ_SIZE

pytestmark = pytest.mark.anyio


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size every direct-wire read asks for, in order."""
    sizes: list[int] = []
    for module in (_trio_wire, _asyncio_wire):
        real = module.recv_some

        def recording(sock: object, size: int, real: object = real) -> bytes | None:
            sizes.append(size)
            return real(sock, size)  # type: ignore[operator]

        monkeypatch.setattr(module, "recv_some", recording)
    return sizes


async def consume(consumer: trio_msg.Consumer, n: int) -> list[bytes]:
    bodies = []
    with anyio.fail_after(10):
        async for message in consumer:
            bodies.append(message.body)
            if len(bodies) == n:
                return bodies
    raise AssertionError("the consumer ended")


async def test_small_messages_are_read_small_and_a_large_one_big(
    unique_name: str, asked: list[int]
) -> None:
    queue = trio_msg.Queue(unique_name, durable=False, expires=60)
    small = [b"%d" % i for i in range(500)]
    big = bytes(range(256)) * 4096  # 1 MiB: eight frames of 128 KiB
    async with (
        trio_msg.connect(BROKER_URL) as conn,  # TCP: the direct wire
        trio_msg.Producer(conn) as producer,
        trio_msg.Consumer(conn, queues=[queue], no_ack=True) as consumer,
    ):
        for body in small:
            await producer.publish(body, routing_key=queue.name)
        assert await consume(consumer, 500) == small
        small_run = list(asked)
        await producer.publish(big, routing_key=queue.name)
        assert await consume(consumer, 1) == [big]
        large = asked[len(small_run) :]
        await producer.publish(b"after", routing_key=queue.name)
        assert await consume(consumer, 1) == [b"after"]
        after = asked[len(small_run) + len(large) :]
    assert set(small_run) == {READ_SIZE}
    assert large.count(BIG_READ_SIZE) >= 3  # while the large message's frames came in
    assert after and set(after) == {READ_SIZE}  # and small again once it was in
