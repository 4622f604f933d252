"""Revive: a connection that re-establishes itself, against the real broker.

Losses are made for real: ``rabbitmqctl close_connection`` (a clean 320
close) and the TCP proxy (cut sockets, refused reconnects).
"""

from __future__ import annotations

import uuid

import anyio
import pytest
from _broker import close_connection_by_name, rabbitmqctl
from _proxy import TcpProxy

import trio_msg
from trio_msg.errors import (
    AuthenticationError,
    ConnectionFailed,
    ConnectionForced,
    ConnectionLost,
    MessageStateError,
    NotFound,
    NotSupported,
    TrioMsgError,
)

pytestmark = pytest.mark.anyio

FAST = trio_msg.RetryPolicy(interval_start=0.05, interval_step=0.05, interval_max=0.2)


def _proxy_url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}//"


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


async def test_forced_close_producer_and_consumer_carry_on(
    broker_url: str, unique_name: str
) -> None:
    """Every message published with retry arrives; both sides move to the
    second incarnation by themselves.  (The queue is not auto-delete: the
    broker would delete one, with its messages, when the consumer's
    connection went.)"""
    queue = trio_msg.Queue(unique_name, durable=False)
    got: list[int] = []
    try:
        with anyio.fail_after(30):
            async with trio_msg.connect(
                broker_url, connection_name=unique_name, revive=FAST
            ) as conn:
                async with (
                    trio_msg.Producer(conn) as producer,
                    trio_msg.Consumer(conn, queues=[queue], prefetch_count=5) as consumer,
                ):

                    async def consume() -> None:
                        async for message in consumer:
                            got.append(message.payload)
                            await message.ack()
                            if len(set(got)) == 20:
                                return

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(consume)
                        for i in range(20):
                            if i == 10:
                                await _force_close(unique_name)
                            await producer.publish(i, routing_key=queue.name, retry=True)
                assert conn.incarnation == 2
                assert conn.is_open
        assert set(got) == set(range(20))
    finally:
        await _delete(broker_url, queue.name)


async def test_proxy_cut_revives_and_exclusive_server_named_queue_gets_a_new_name(
    proxy: TcpProxy,
) -> None:
    queue = trio_msg.Queue("", exclusive=True)
    with anyio.fail_after(30):
        async with (
            trio_msg.connect(_proxy_url(proxy), revive=FAST) as conn,
            trio_msg.Producer(conn) as producer,
            trio_msg.Consumer(conn, queues=[queue]) as consumer,
        ):
            first_name = queue.name
            await producer.publish("before", routing_key=first_name)
            message = await consumer.__anext__()
            assert message.payload == "before"
            await message.ack()

            assert proxy.cut() == 1
            # The consumer notices, waits for the revival and redeclares:
            # RabbitMQ refuses a client-chosen "amq.gen-" name, so it must ask
            # for a new one.
            async with anyio.create_task_group() as tg:
                received: list[object] = []

                async def take() -> None:
                    message = await consumer.__anext__()
                    received.append(message.payload)
                    await message.ack()

                tg.start_soon(take)
                with anyio.fail_after(10):
                    while queue.name in ("", first_name):
                        await anyio.sleep(0.02)
                await producer.publish("after", routing_key=queue.name)
            assert received == ["after"]
            assert queue.name != first_name
            assert conn.incarnation == 2


async def test_publish_while_disconnected_waits_is_cancellable_and_buffers_nothing(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(_proxy_url(proxy), revive=FAST) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            await producer.publish("one", routing_key=queue.name, declare=[queue])
            proxy.refuse_new()
            proxy.cut()
            with anyio.fail_after(5):
                while conn.is_open:  # the client notices the cut
                    await anyio.sleep(0.01)
            with anyio.move_on_after(0.5) as scope:
                await producer.publish("dropped", routing_key=queue.name)
            assert scope.cancelled_caught
            assert not conn.is_open
            proxy.heal()
            with anyio.fail_after(10):
                await producer.publish("two", routing_key=queue.name)
            assert conn.incarnation == 2
        # The cancelled publish was never sent: only "one" and "two" are there.
        assert await _queue_depth(broker_url, queue.name) == 2
    finally:
        await _delete(broker_url, queue.name)


async def test_gives_up_after_max_retries(proxy: TcpProxy) -> None:
    policy = trio_msg.RetryPolicy(max_retries=3, interval_start=0.01, interval_step=0.01)
    waiter_error: list[BaseException] = []
    with anyio.fail_after(20), pytest.raises(ConnectionFailed) as info:
        async with trio_msg.connect(_proxy_url(proxy), revive=policy) as conn:
            proxy.refuse_new()
            proxy.cut()
            while conn.is_open:  # the client notices the cut
                await anyio.sleep(0.01)
            with pytest.raises(ConnectionFailed) as waited:
                await conn.wait_connected()
            waiter_error.append(waited.value)
            with pytest.raises(ConnectionFailed):
                await conn.open_channel()
    assert "gave up reconnecting after 3 attempts" in str(info.value)
    assert waiter_error[0] is info.value
    assert isinstance(info.value.__cause__, ConnectionLost | ConnectionFailed)


async def test_aclose_while_reconnecting_is_prompt_and_raises_nothing(proxy: TcpProxy) -> None:
    policy = trio_msg.RetryPolicy(interval_start=0.2, interval_step=0.2)
    with anyio.fail_after(5):
        async with trio_msg.connect(_proxy_url(proxy), revive=policy) as conn:
            proxy.refuse_new()
            proxy.cut()
            with anyio.fail_after(2):
                while conn.is_open:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.3)  # somewhere in the retry loop
    assert not conn.is_open
    with pytest.raises(TrioMsgError):
        await conn.wait_connected()


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


async def test_pipeline_retry_republishes_what_the_loss_left_unknown(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    queue = trio_msg.Queue(unique_name, durable=False)
    n = 3000
    try:
        with anyio.fail_after(60):
            async with (
                trio_msg.connect(_proxy_url(proxy), revive=FAST) as conn,
                trio_msg.Producer(conn) as producer,
            ):
                await producer.declare()
                async with conn.channel() as ch:
                    await trio_msg.maybe_declare(queue, ch)
                async with producer.pipeline(max_unconfirmed=500) as pipe:
                    for i in range(n):
                        if i == n // 2:
                            proxy.cut()
                        await pipe.publish(i, routing_key=queue.name, retry=True)
                assert pipe.unknown == 0 and pipe.nacked == 0
                assert pipe.acked == n
                assert conn.incarnation == 2
        # At least once: every message is there; a few may be there twice.
        seen: set[int] = set()
        async with (
            trio_msg.connect(broker_url) as conn,
            trio_msg.Consumer(conn, queues=[queue], no_ack=True) as consumer,
        ):
            while len(seen) < n:
                with anyio.fail_after(10):
                    message = await consumer.__anext__()
                seen.add(message.payload)
        assert seen == set(range(n))
    finally:
        await _delete(broker_url, queue.name)


async def test_without_retry_a_lost_publish_is_unknown_and_the_next_one_works(
    proxy: TcpProxy, unique_name: str
) -> None:
    queue = trio_msg.Queue(unique_name, auto_delete=True)
    async with (
        trio_msg.connect(_proxy_url(proxy), revive=FAST) as conn,
        trio_msg.Producer(conn) as producer,
        trio_msg.Consumer(conn, queues=[queue]),
    ):
        proxy.stall()  # the confirm cannot come back
        async with anyio.create_task_group() as tg:
            errors: list[BaseException] = []

            async def publish() -> None:
                try:
                    await producer.publish("lost?", routing_key=queue.name)
                except TrioMsgError as exc:
                    errors.append(exc)

            tg.start_soon(publish)
            await anyio.sleep(0.2)
            proxy.heal()
            proxy.cut()
        assert len(errors) == 1
        assert isinstance(errors[0], trio_msg.errors.MessageOutcomeUnknown)
        assert isinstance(errors[0].reason, ConnectionLost)
        with anyio.fail_after(10):
            await producer.publish("next", routing_key=queue.name)


async def test_retry_needs_a_reviving_connection(broker_url: str) -> None:
    async with trio_msg.connect(broker_url, revive=False) as conn, trio_msg.Producer(conn) as producer:
        with pytest.raises(NotSupported, match="reviving"):
            await producer.publish("x", routing_key="nowhere", retry=True)
        # and nothing was lost: the producer still works
        await producer.publish("x", routing_key="nowhere")


async def test_retry_does_not_retry_what_a_new_connection_cannot_cure(
    broker_url: str, unique_name: str
) -> None:
    async with (
        trio_msg.connect(broker_url, revive=FAST) as conn,
        trio_msg.Producer(conn) as producer,
    ):
        # Refused by the broker (no such exchange): the outcome is known.
        with anyio.fail_after(5), pytest.raises(NotFound):
            await producer.publish("x", exchange=unique_name + ".missing", retry=True)
        assert conn.incarnation == 1


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
        url = f"amqp://{user}:{password}@{broker_url.split('@', 1)[1]}"
        with anyio.fail_after(30), pytest.raises(AuthenticationError) as info:
            async with trio_msg.connect(url, connection_name=user, revive=FAST) as conn:
                await anyio.to_thread.run_sync(_ctl, "change_password", user, "changed")
                await _force_close(user)
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


async def _wait_lost(conn: trio_msg.Connection) -> None:
    with anyio.fail_after(5):
        while conn.is_open:
            await anyio.sleep(0.01)


async def test_wait_connected_is_a_checkpoint_and_cancellable_while_reconnecting(
    proxy: TcpProxy,
) -> None:
    async with trio_msg.connect(_proxy_url(proxy), revive=FAST) as conn:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await conn.wait_connected()  # open: still a checkpoint
        assert scope.cancelled_caught
        proxy.refuse_new()
        proxy.cut()
        await _wait_lost(conn)
        with anyio.move_on_after(0.3) as scope:
            await conn.wait_connected()
        assert scope.cancelled_caught
        proxy.heal()
        with anyio.fail_after(10):
            await conn.wait_connected()
        async with conn.channel() as ch:
            await ch.queue_declare("", exclusive=True)


async def test_consumer_cancelled_while_moving_over_tries_again(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    """Cancel the iteration while its consumer waits for the connection,
    and again while it redeclares on the new one (the link stalled): the
    next iteration finishes the move and gets the message."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(_proxy_url(proxy), revive=FAST) as conn,
            trio_msg.Consumer(conn, queues=[queue], prefetch_count=1) as consumer,
        ):
            proxy.refuse_new()
            proxy.cut()
            await _wait_lost(conn)
            with anyio.move_on_after(0.3) as scope:
                await consumer.__anext__()
            assert scope.cancelled_caught
            proxy.heal()
            with anyio.fail_after(10):
                await conn.wait_connected()
            proxy.stall()
            with anyio.move_on_after(0.3) as scope:
                await consumer.__anext__()  # opening a channel / declaring: held
            assert scope.cancelled_caught
            proxy.resume()
            async with trio_msg.connect(broker_url) as other, trio_msg.Producer(other) as producer:
                await producer.publish("hello", routing_key=queue.name)
            with anyio.fail_after(10):
                message = await consumer.__anext__()
            assert message.payload == "hello"
            await message.ack()
            # one consumer on the queue, not one per attempt
            async with trio_msg.connect(broker_url) as other, other.channel() as ch:
                ok = await ch.queue_declare(queue.name, passive=True)
            assert ok.consumer_count == 1
    finally:
        await _delete(broker_url, queue.name)


async def test_producer_cancelled_while_moving_over_keeps_confirms(
    proxy: TcpProxy, broker_url: str, unique_name: str
) -> None:
    """A producer cancelled between opening its new channel and turning
    confirms on must not publish unconfirmed afterwards."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with (
            trio_msg.connect(_proxy_url(proxy), revive=FAST) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            await producer.publish("one", routing_key=queue.name, declare=[queue])
            proxy.cut()
            await _wait_lost(conn)
            with anyio.fail_after(10):
                await conn.wait_connected()
            proxy.stall()
            with anyio.move_on_after(0.3) as scope:
                await producer.publish("held", routing_key=queue.name)
            assert scope.cancelled_caught
            proxy.resume()
            with anyio.fail_after(10):
                result = await producer.publish("two", routing_key=queue.name)
            assert result is not None and result.outcome is trio_msg.Outcome.ACK
            assert producer.channel.confirming
    finally:
        await _delete(broker_url, queue.name)


async def test_heartbeat_loss_and_handshake_timeouts_are_retried(proxy: TcpProxy) -> None:
    """A stalled link: heartbeats stop (HeartbeatTimeout), reconnects time
    out (ConnectionFailed), both retried until the link flows again."""
    async with trio_msg.connect(
        _proxy_url(proxy), revive=FAST, heartbeat=1, connection_timeout=0.5
    ) as conn:
        proxy.stall()
        with anyio.fail_after(10):
            await _wait_lost(conn)
        await anyio.sleep(1.0)  # a reconnect attempt or two time out
        assert not conn.is_open
        proxy.cut()  # drop the stalled links ...
        proxy.resume()  # ... and let new ones flow
        with anyio.fail_after(10):
            await conn.wait_connected()
        assert conn.incarnation >= 2
