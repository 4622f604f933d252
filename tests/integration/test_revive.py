"""Revive: what a connection that re-establishes itself puts back, against
the real broker (the declaration ledger, consumers, delivery tags, retry's
rules), with losses made by ``rabbitmqctl close_connection`` (a clean 320).

Surviving real faults -- cuts, stalls, one-way loss, refused reconnects,
broker restarts, alarms -- with nothing lost is tests/faults' job.
"""

from __future__ import annotations

import uuid

import anyio
import pytest
from _broker import BROKER_HOST, BROKER_PORT, close_connection_by_name, rabbitmqctl

import trio_msg
from trio_msg.errors import (
    AuthenticationError,
    ConnectionForced,
    MessageStateError,
    NotSupported,
)

pytestmark = pytest.mark.anyio

FAST = trio_msg.RetryPolicy(interval_start=0.05, interval_step=0.05, interval_max=0.2)


async def _force_close(name: str) -> None:
    await anyio.to_thread.run_sync(close_connection_by_name, name, "trio_msg revive test")


async def _revive(conn: trio_msg.Connection, name: str) -> None:
    """Force-close *conn*'s connection from the broker; wait for the next one."""
    before = conn.incarnation
    await _force_close(name)
    with anyio.fail_after(10):
        while conn.incarnation == before or not conn.is_open:
            await anyio.sleep(0.01)


async def _delete(broker_url: str, *queues: str, exchanges: tuple[str, ...] = ()) -> None:
    async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
        for queue in queues:
            await ch.queue_delete(queue)
        for exchange in exchanges:
            await ch.exchange_delete(exchange)


async def _queue_depth(broker_url: str, queue: str) -> int:
    async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
        ok = await ch.queue_declare(queue, passive=True)
        return ok.message_count


async def test_declaration_ledger_is_replayed_in_order(broker_url: str, unique_name: str) -> None:
    """A non-durable queue that vanished (as after a broker restart) is
    declared again, with its exchange and binding, before the connection is
    handed back."""
    exchange = trio_msg.Exchange(unique_name + ".x", type="fanout", durable=False)
    queue = trio_msg.Queue(unique_name, exchange=exchange, durable=False)
    try:
        async with trio_msg.connect(broker_url, connection_name=unique_name, revive=FAST) as conn:
            async with conn.channel() as ch:
                assert await trio_msg.maybe_declare(queue, ch)
            assert list(conn.declared_entities) == [queue]
            # Gone behind our back, then the connection is lost.
            async with trio_msg.connect(broker_url) as other, other.channel() as och:
                await och.queue_delete(queue.name)
                await och.exchange_delete(exchange.name)
            await _revive(conn, unique_name)
            assert conn.incarnation == 2
            # Replayed: the exchange, the queue and the binding exist again.
            async with trio_msg.Producer(conn, exchange=exchange) as producer:
                await producer.publish("routed", routing_key="")
            assert await _queue_depth(broker_url, queue.name) == 1
    finally:
        await _delete(broker_url, queue.name, exchanges=(exchange.name,))


async def test_replay_drops_what_the_broker_refuses_and_goes_on(
    broker_url: str, unique_name: str
) -> None:
    clash = trio_msg.Queue(unique_name + ".clash", durable=False)
    fine = trio_msg.Queue(unique_name + ".fine", durable=False)
    try:
        async with trio_msg.connect(broker_url, connection_name=unique_name, revive=FAST) as conn:
            async with conn.channel() as ch:
                await trio_msg.maybe_declare(clash, ch)
                await trio_msg.maybe_declare(fine, ch)
            async with trio_msg.connect(broker_url) as other, other.channel() as och:
                await och.queue_delete(clash.name)
                await och.queue_delete(fine.name)
                # Someone else now owns the name with other arguments.
                await och.queue_declare(clash.name, durable=True)
            await _revive(conn, unique_name)
            assert clash not in conn.declared_entities
            assert fine in conn.declared_entities
            assert await _queue_depth(broker_url, fine.name) == 0
    finally:
        await _delete(broker_url, clash.name, fine.name)


async def test_old_delivery_tag_is_never_acked_on_the_new_connection(
    broker_url: str, unique_name: str
) -> None:
    queue = trio_msg.Queue(unique_name, auto_delete=False, durable=False)
    try:
        with anyio.fail_after(30):
            async with (
                trio_msg.connect(broker_url, connection_name=unique_name, revive=FAST) as conn,
                trio_msg.Producer(conn) as producer,
                trio_msg.Consumer(conn, queues=[queue], prefetch_count=1) as consumer,
            ):
                await producer.publish("m", routing_key=queue.name)
                old = await consumer.__anext__()
                assert not old.redelivered
                await _force_close(unique_name)
                again = await consumer.__anext__()
                assert again.payload == "m"
                assert again.redelivered
                assert again.delivery_tag == old.delivery_tag == 1
                # The old message's tag belongs to the dead channel.
                with pytest.raises(MessageStateError):
                    await old.ack()
                await again.ack()
        assert await _queue_depth(broker_url, queue.name) == 0
    finally:
        await _delete(broker_url, queue.name)


async def test_retry_needs_a_reviving_connection(broker_url: str) -> None:
    async with trio_msg.connect(broker_url, revive=False) as conn, trio_msg.Producer(conn) as producer:
        with pytest.raises(NotSupported, match="reviving"):
            await producer.publish("x", routing_key="nowhere", retry=True)
        # and nothing was lost: the producer still works
        await producer.publish("x", routing_key="nowhere")


async def test_a_channel_given_by_the_caller_is_not_revived(
    broker_url: str, unique_name: str
) -> None:
    queue = trio_msg.Queue(unique_name, auto_delete=True)
    async with trio_msg.connect(broker_url, connection_name=unique_name, revive=FAST) as conn:
        ch = await conn.open_channel()
        async with trio_msg.Consumer(ch, queues=[queue]) as consumer:
            await _force_close(unique_name)
            with anyio.fail_after(10), pytest.raises(ConnectionForced):
                await consumer.__anext__()
            # the caller re-binds it explicitly
            await conn.wait_connected()
            async with conn.channel() as ch2:
                await consumer.revive(ch2)
                async with trio_msg.Producer(conn) as producer:
                    await producer.publish("again", routing_key=queue.name)
                with anyio.fail_after(10):
                    message = await consumer.__anext__()
                assert message.payload == "again"
                await message.ack()


def _ctl(*args: str) -> None:
    rabbitmqctl(*args, timeout=30)


async def test_wrong_password_on_reconnect_ends_the_connection(broker_url: str) -> None:
    user = f"trio_msg_revive_{uuid.uuid4().hex[:8]}"
    password = "first-" + uuid.uuid4().hex
    await anyio.to_thread.run_sync(_ctl, "add_user", user, password)
    try:
        await anyio.to_thread.run_sync(_ctl, "set_permissions", "-p", "/", user, ".*", ".*", ".*")
        url = f"amqp://{user}:{password}@{BROKER_HOST}:{BROKER_PORT}//"
        with anyio.fail_after(30), pytest.raises(AuthenticationError) as info:
            async with (
                trio_msg.connect(url, connection_name=user, revive=FAST) as conn,
                conn.watch() as events,
            ):
                await anyio.to_thread.run_sync(_ctl, "change_password", user, "changed")
                await _force_close(user)
                # (the close may still be on its way when the helper returns)
                async for event in events:
                    if isinstance(event, trio_msg.Lost):
                        break
                with pytest.raises(AuthenticationError):
                    await conn.wait_connected()
        assert password not in str(info.value)
        assert password not in repr(info.value)
    finally:
        try:
            await anyio.to_thread.run_sync(_ctl, "delete_user", user)
        except Exception:
            pass


async def test_retry_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        trio_msg.RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="interval_start"):
        trio_msg.RetryPolicy(interval_start=float("nan"))
    with pytest.raises(TypeError, match="unknown retry policy keys"):
        trio_msg.RetryPolicy.coerce({"max_retry": 3})
    policy = trio_msg.RetryPolicy.coerce(
        {"max_retries": 4, "interval_start": 1, "interval_step": 2, "interval_max": 4}
    )
    assert list(policy.intervals()) == [1, 3, 4, 4]
