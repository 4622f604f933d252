"""TCP cuts through the proxy: both ways (FIN and RST), one way, and after
N bytes at many offsets, inside the handshake and after it, while a
producer publishes with confirms and a consumer acks."""

from __future__ import annotations

import socket
import struct

import anyio
import pytest
from _broker import BROKER_HOST, BROKER_PORT, PROTOCOL_HEADER
from _ledger import Ledger
from _proxy import TcpProxy
from _workload import FAST, Fault, Run, delete_queue, wait_until, workload

import trio_msg

pytestmark = pytest.mark.anyio


def _url(proxy: TcpProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}//"


async def _revived(run: Run, before: int) -> None:
    conns = {run.producer_conn, run.consumer_conn}
    await wait_until(
        lambda: all(c.incarnation > before and c.is_open for c in conns), 15, "revived"
    )


def _cut(proxy: TcpProxy, *, reset: bool) -> Fault:
    async def fault(run: Run) -> None:
        before = run.producer_conn.incarnation
        assert proxy.cut(reset=reset) >= 1
        await _revived(run, before)

    return fault


def _half_close(proxy: TcpProxy, *, client_to_server: bool) -> Fault:
    async def fault(run: Run) -> None:
        before = run.producer_conn.incarnation
        assert proxy.half_close(client_to_server=client_to_server) >= 1
        await _revived(run, before)

    return fault


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("separate", [False, True], ids=["one_connection", "two_connections"])
async def test_cut_both_ways(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger, reset: bool, separate: bool
) -> None:
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        run = await workload(
            _url(proxy), queue, ledger, [_cut(proxy, reset=reset)] * 3, separate=separate
        )
        ledger.check()
        assert run.producer_conn.incarnation == run.consumer_conn.incarnation == 4
        assert proxy.errors == []
    finally:
        await delete_queue(broker_url, queue.name)


@pytest.mark.parametrize(
    "client_to_server", [False, True], ids=["server_to_client", "client_to_server"]
)
async def test_cut_one_way(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger, client_to_server: bool
) -> None:
    """An EOF one way only (the other way keeps flowing until the peer closes)."""
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        run = await workload(
            _url(proxy),
            queue,
            ledger,
            [_half_close(proxy, client_to_server=client_to_server)] * 2,
        )
        ledger.check()
        assert run.producer_conn.incarnation == 3
        assert proxy.half_closes == 2
    finally:
        await delete_queue(broker_url, queue.name)


# ------------------------------------------------------------ cut after N bytes

_SIZES: dict[str, int] = {}


def _connection_start_size() -> int:
    """The length of the broker's Connection.Start frame (its first frame)."""
    with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=5) as sock:
        sock.sendall(PROTOCOL_HEADER)
        header = b""
        while len(header) < 7:
            chunk = sock.recv(7 - len(header))
            assert chunk, "the broker closed during the probe"
            header += chunk
    (size,) = struct.unpack("!I", header[3:7])
    return 7 + size + 1


async def _sizes(proxy: TcpProxy) -> dict[str, int]:
    """Bytes each way of a handshake (to the end of connection.open-ok) and of the
    rest of a workload's setup (a producer and a consumer with their channels),
    measured through the proxy once per process."""
    if not _SIZES:
        start = await anyio.to_thread.run_sync(_connection_start_size)
        async with trio_msg.connect(_url(proxy)) as conn:
            s2c, c2s = proxy.bytes_server_to_client, proxy.bytes_client_to_server
            async with (
                trio_msg.Producer(conn),
                trio_msg.Consumer(conn, queues=[trio_msg.Queue("", exclusive=True)]),
            ):
                setup_s2c = proxy.bytes_server_to_client
        _SIZES.update(start=start, s2c=s2c, c2s=c2s, setup_s2c=setup_s2c)
    return _SIZES


# Server->client offsets, from the reconnect's first byte: inside the
# Connection.Start frame (its header, its payload, its last byte), at its
# end, inside connection.tune / open-ok, at the handshake's end, during the
# channel setup that follows, and once messages flow.
S2C_OFFSETS = {
    "0": lambda z: 0,
    "1": lambda z: 1,
    "in_frame_header": lambda z: 5,
    "after_frame_header": lambda z: 7,
    "mid_start": lambda z: z["start"] // 2,
    "start_last_byte": lambda z: z["start"] - 1,
    "end_of_start": lambda z: z["start"],
    "in_tune": lambda z: z["start"] + 10,
    "handshake_minus_1": lambda z: z["s2c"] - 1,
    "end_of_handshake": lambda z: z["s2c"],
    "in_channel_setup": lambda z: (z["s2c"] + z["setup_s2c"]) // 2,
    "after_setup": lambda z: z["setup_s2c"] + 200,
}
# Client->server: inside the protocol header, just after it, inside
# start-ok (the credentials), at the handshake's end.
C2S_OFFSETS = {
    "c2s_in_protocol_header": lambda z: 4,
    "c2s_after_protocol_header": lambda z: 8,
    "c2s_in_start_ok": lambda z: 8 + (z["c2s"] - 8) // 3,
    "c2s_handshake_minus_1": lambda z: z["c2s"] - 1,
    "c2s_end_of_handshake": lambda z: z["c2s"],
}


def _truncate(proxy: TcpProxy, offset: int, *, client_to_server: bool) -> Fault:
    """Cut the live connection; the reconnect is cut after *offset* bytes; then heal."""

    async def fault(run: Run) -> None:
        before = run.producer_conn.incarnation
        cuts = proxy.cuts
        proxy.truncate_after(offset, client_to_server=client_to_server, live=False)
        proxy.cut()
        await wait_until(lambda: proxy.cuts > cuts, 15, "a reconnect cut after N bytes")
        proxy.heal()
        await _revived(run, before)

    return fault


@pytest.mark.parametrize("where", [*S2C_OFFSETS, *C2S_OFFSETS])
async def test_reconnect_cut_after_n_bytes(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger, where: str
) -> None:
    """A reconnect cut after N bytes (inside the handshake, or later) is just
    another failed attempt: the connection tries again and nothing is lost."""
    sizes = await _sizes(proxy)
    c2s = where in C2S_OFFSETS
    offset = (C2S_OFFSETS if c2s else S2C_OFFSETS)[where](sizes)
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        run = await workload(
            _url(proxy), queue, ledger, [_truncate(proxy, offset, client_to_server=c2s)]
        )
        ledger.check()
        assert run.producer_conn.incarnation >= 2
    finally:
        await delete_queue(broker_url, queue.name)


@pytest.mark.parametrize("offset", [0, 3, 100, 5000])
async def test_live_connection_cut_after_n_more_bytes(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger, offset: int
) -> None:
    """The live connection is cut after N more bytes from the broker (in the
    middle of a delivery or a confirm, wherever that falls)."""
    queue = trio_msg.Queue(unique_name, durable=False)

    async def fault(run: Run) -> None:
        before = run.producer_conn.incarnation
        cuts = proxy.cuts
        proxy.truncate_after(offset)
        await wait_until(lambda: proxy.cuts > cuts, 15, "the live connection cut")
        proxy.heal()
        await _revived(run, before)

    try:
        await workload(_url(proxy), queue, ledger, [fault])
        ledger.check()
    finally:
        await delete_queue(broker_url, queue.name)


# ----------------------------------------------------------- what a cut changes


async def test_cut_revives_and_exclusive_server_named_queue_gets_a_new_name(
    proxy: TcpProxy,
) -> None:
    queue = trio_msg.Queue("", exclusive=True)
    with anyio.fail_after(30):
        async with (
            trio_msg.connect(_url(proxy), revive=FAST) as conn,
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
                await wait_until(lambda: queue.name not in ("", first_name), 10, "redeclared")
                await producer.publish("after", routing_key=queue.name)
            assert received == ["after"]
            assert queue.name != first_name
            assert conn.incarnation == 2


async def test_pipeline_cut_half_way_with_retry(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger
) -> None:
    """A window of 500 unconfirmed when the link is cut: what the loss left
    unknown is republished; every message arrives, some maybe twice."""
    queue = trio_msg.Queue(unique_name, durable=False)
    n = 3000
    try:
        with anyio.fail_after(60):
            async with (
                trio_msg.connect(_url(proxy), revive=FAST) as conn,
                trio_msg.Producer(conn) as producer,
            ):
                async with conn.channel() as ch:
                    await trio_msg.maybe_declare(queue, ch)
                async with producer.pipeline(max_unconfirmed=500) as pipe:
                    for i in range(n):
                        if i == n // 2:
                            proxy.cut()
                        ledger.publishing(i)
                        await pipe.publish(i, routing_key=queue.name, retry=True)
                assert pipe.unknown == 0 and pipe.nacked == 0
                assert pipe.acked == n
                assert conn.incarnation == 2
                ledger.confirmed.update(range(n))
            async with (
                trio_msg.connect(broker_url) as conn,
                trio_msg.Consumer(conn, queues=[queue], no_ack=True) as consumer,
            ):
                async for message in consumer:
                    ledger.consume(message.payload)
                    if ledger.complete():
                        break
        ledger.check(min_confirmed=n)
    finally:
        await delete_queue(broker_url, queue.name)
