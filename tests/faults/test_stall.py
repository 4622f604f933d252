"""Silent stalls (the proxy forwards nothing, sockets stay open) with
heartbeat 1: a consumer waiting for messages, a producer waiting for a
confirm, and a connection whose body does nothing."""

from __future__ import annotations

import anyio
import pytest
from _ledger import Ledger
from _proxy import TcpProxy
from _workload import FAST, Fault, Run, delete_queue, wait_until, workload

import trio_msg
from trio_msg.errors import ConnectionLost, HeartbeatTimeout, MessageOutcomeUnknown, TrioMsgError

pytestmark = pytest.mark.anyio

#: heartbeat 1 s: a stall is noticed after two silent intervals; a reconnect
#: into a stalled link gives up after 2 s and is tried again.
HB = {"heartbeat": 1, "connection_timeout": 2}


def _url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}//"


def _stall(proxy: TcpProxy, conn_of: str) -> Fault:
    """Stall until the stalled side's connection has noticed, then resume."""

    async def fault(run: Run) -> None:
        conn = getattr(run, conn_of)
        before = conn.incarnation
        proxy.stall()
        await wait_until(lambda: not conn.is_open, 10, "the stall noticed")
        proxy.resume()
        await wait_until(lambda: conn.incarnation > before and conn.is_open, 15, "revived")

    return fault


async def test_stall_under_a_consumer(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger
) -> None:
    """The consumer's link stalls while it waits for deliveries; the producer
    (direct to the broker) goes on.  The consumer notices by its heartbeat,
    reconnects once the link flows, and gets every confirmed message."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        run = await workload(
            _url(proxy),
            queue,
            ledger,
            [_stall(proxy, "consumer_conn")],
            producer_url=broker_url,
            **HB,
        )
        ledger.check()
        assert run.consumer_conn.incarnation == 2
        assert run.producer_conn.incarnation == 1
    finally:
        await delete_queue(broker_url, queue.name)


async def test_stall_under_a_producer_waiting_for_a_confirm(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger
) -> None:
    """The producer's link stalls with a publish waiting for its confirm: the
    heartbeat ends that incarnation, the publish (retry=True) goes again on
    the next, and nothing confirmed is lost."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        async with trio_msg.connect(broker_url) as conn, conn.channel() as ch:
            await ch.queue_declare(queue.name, durable=False)
        async with (
            trio_msg.connect(_url(proxy), revive=FAST, **HB) as pconn,
            trio_msg.Producer(pconn) as producer,
        ):
            ledger.publishing(0)
            await producer.publish(0, routing_key=queue.name, retry=True)
            ledger.confirm(0)
            proxy.stall()
            async with anyio.create_task_group() as tg:

                async def heal_when_noticed() -> None:
                    await wait_until(lambda: not pconn.is_open, 10, "the stall noticed")
                    proxy.resume()

                tg.start_soon(heal_when_noticed)
                with anyio.fail_after(30):
                    ledger.publishing(1)
                    await producer.publish(1, routing_key=queue.name, retry=True)
                    ledger.confirm(1)
            assert pconn.incarnation == 2
        async with (
            trio_msg.connect(broker_url) as conn,
            trio_msg.Consumer(conn, queues=[queue]) as consumer,
        ):
            with anyio.fail_after(10):
                async for message in consumer:
                    ledger.consume(message.payload)
                    await message.ack()
                    if ledger.complete():
                        break
        ledger.check(min_confirmed=2)
    finally:
        await delete_queue(broker_url, queue.name)


async def test_stall_under_an_idle_connection_ends_its_body(proxy: TcpProxy) -> None:
    """A connection that will not revive, whose body waits for nothing in
    particular: when the link stalls, the heartbeat declares it dead, the
    body is cancelled and ``connect`` raises HeartbeatTimeout."""
    body_cancelled = False
    with anyio.fail_after(10), pytest.raises(HeartbeatTimeout):
        async with trio_msg.connect(_url(proxy), revive=False, **HB):
            proxy.stall()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                body_cancelled = True
                raise
    assert body_cancelled


async def test_stall_under_an_idle_reviving_connection(proxy: TcpProxy) -> None:
    """The same with revive: the body goes on, the connection comes back by
    itself once the link flows, and is usable."""
    with anyio.fail_after(30):
        async with trio_msg.connect(_url(proxy), revive=FAST, **HB) as conn:
            proxy.stall()
            await wait_until(lambda: not conn.is_open, 10, "the stall noticed")
            proxy.resume()
            await conn.wait_connected()
            async with conn.channel() as ch:
                await ch.queue_declare("", exclusive=True)
            assert conn.incarnation >= 2


async def test_heartbeat_loss_and_handshake_timeouts_are_retried(proxy: TcpProxy) -> None:
    """A stalled link: heartbeats stop (HeartbeatTimeout), reconnects time
    out (ConnectionFailed), both retried until the link flows again."""
    async with trio_msg.connect(
        _url(proxy), revive=FAST, heartbeat=1, connection_timeout=0.5
    ) as conn:
        proxy.stall()
        await wait_until(lambda: not conn.is_open, 10, "the stall noticed")
        attempts = proxy.accepted
        # a reconnect attempt or two time out in the stalled link
        await wait_until(lambda: proxy.accepted >= attempts + 2, 10, "reconnects tried")
        assert not conn.is_open
        proxy.cut()  # drop the stalled links ...
        proxy.resume()  # ... and let new ones flow
        with anyio.fail_after(10):
            await conn.wait_connected()
        assert conn.incarnation >= 2


async def test_without_retry_a_publish_lost_in_a_stall_is_unknown_and_the_next_one_works(
    proxy: TcpProxy, unique_name: str
) -> None:
    queue = trio_msg.Queue(unique_name, auto_delete=True)
    async with (
        trio_msg.connect(_url(proxy), revive=FAST) as conn,
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
            await anyio.wait_all_tasks_blocked()  # it waits for its confirm
            proxy.heal()
            proxy.cut()
        assert len(errors) == 1
        assert isinstance(errors[0], MessageOutcomeUnknown)
        assert isinstance(errors[0].reason, ConnectionLost)
        with anyio.fail_after(10):
            await producer.publish("next", routing_key=queue.name)
