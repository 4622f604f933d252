"""One-way loss, each way: the proxy keeps reading one side and throws what
it reads away, while the other way flows (heartbeat 1)."""

from __future__ import annotations

import pytest
from _ledger import Ledger
from _proxy import TcpProxy
from _workload import Fault, Run, delete_queue, wait_until, workload

import trio_msg

pytestmark = pytest.mark.anyio

HB = {"heartbeat": 1, "connection_timeout": 2}


def _drop(proxy: TcpProxy, *, client_to_server: bool) -> Fault:
    """Drop one way until the connection is noticed dead (by the client's
    heartbeat, or by the broker's, which then closes), then heal."""

    async def fault(run: Run) -> None:
        conn = run.producer_conn
        before = conn.incarnation
        if client_to_server:
            proxy.drop_client_to_server()
        else:
            proxy.drop_server_to_client()
        await wait_until(lambda: not conn.is_open, 15, "the loss noticed")
        proxy.heal()
        await wait_until(lambda: conn.incarnation > before and conn.is_open, 15, "revived")

    return fault


@pytest.mark.parametrize(
    "client_to_server", [True, False], ids=["client_to_server", "server_to_client"]
)
async def test_one_way_drop(
    proxy: TcpProxy, broker_url: str, unique_name: str, ledger: Ledger, client_to_server: bool
) -> None:
    queue = trio_msg.Queue(unique_name, durable=False)
    try:
        run = await workload(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}//",
            queue,
            ledger,
            [_drop(proxy, client_to_server=client_to_server)],
            **HB,
        )
        ledger.check()
        assert run.producer_conn.incarnation >= 2
        if client_to_server:
            assert proxy.bytes_dropped > 0
        else:
            assert proxy.bytes_dropped_s2c > 0
    finally:
        await delete_queue(broker_url, queue.name)
