"""The suite's own tools: the proxy's newer faults, the ledger and the
private node fixture."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import pytest
from _broker import PROTOCOL_HEADER, alarms, memory_alarm
from _ledger import Ledger
from _node import PrivateNode
from _proxy import TcpProxy

pytestmark = pytest.mark.anyio


async def _open(proxy: TcpProxy) -> anyio.abc.SocketStream:
    with anyio.fail_after(5):
        return await anyio.connect_tcp(proxy.host, proxy.port)


async def _read_until_eof(stream: anyio.abc.SocketStream, timeout: float = 5) -> bytes:
    data = b""
    with anyio.fail_after(timeout):
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data


async def _receive_some(stream: anyio.abc.SocketStream, n: int) -> bytes:
    data = b""
    with anyio.fail_after(5):
        while len(data) < n:
            data += await stream.receive()
    return data


async def test_drop_server_to_client(proxy: TcpProxy) -> None:
    proxy.drop_server_to_client()
    async with await _open(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)  # the broker answers; we never see it
        await proxy.wait_connections(1)
        await _wait(lambda: proxy.bytes_dropped_s2c > 0)
        with anyio.move_on_after(0.2) as scope:
            await stream.receive()
        assert scope.cancelled_caught
        assert proxy.bytes_server_to_client == 0


async def test_truncate_client_to_server(proxy: TcpProxy) -> None:
    """Only 4 bytes of the header reach the broker, then both sides are cut."""
    proxy.truncate_after(4, client_to_server=True)
    async with await _open(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        assert await _read_until_eof(stream) == b""
    assert proxy.bytes_client_to_server == 4
    assert proxy.cuts == 1


async def test_truncate_new_connections_only(proxy: TcpProxy) -> None:
    async with await _open(proxy) as live:
        await live.send(PROTOCOL_HEADER)
        await proxy.wait_connections(1)
        proxy.truncate_after(7, live=False)
        async with await _open(proxy) as new:
            await new.send(PROTOCOL_HEADER)
            assert len(await _read_until_eof(new)) == 7
        # the live connection is untouched: it gets all of connection.start
        assert len(await _receive_some(live, 8)) > 7


async def test_refuse_next(proxy: TcpProxy) -> None:
    proxy.refuse_next(2)
    for _ in range(2):
        async with await _open(proxy) as stream:
            assert await _read_until_eof(stream) == b""
    async with await _open(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        assert len(await _receive_some(stream, 7)) >= 7
    assert proxy.refused == 2


@pytest.mark.parametrize("client_to_server", [False, True])
async def test_half_close(proxy: TcpProxy, client_to_server: bool) -> None:
    """An EOF one way: from the proxy to the client, or to the broker (which
    then closes the other way too)."""
    async with await _open(proxy) as stream:
        await stream.send(PROTOCOL_HEADER)
        await _receive_some(stream, 7)
        assert proxy.half_close(client_to_server=client_to_server) == 1
        await _read_until_eof(stream)
    await proxy.wait_connections(0)
    assert proxy.half_closes == 1
    assert proxy.errors == []


async def _wait(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await anyio.sleep(0.01)


def test_ledger_counts() -> None:
    recorded: dict[str, int] = {}
    ledger = Ledger("t", lambda key, value: recorded.__setitem__(key, value))
    for i in range(4):
        ledger.publishing(i)
    ledger.confirm(0)
    ledger.confirm(1)
    ledger.consume_all([0, 1, 1, 2])  # 2: unknown outcome, delivered all the same
    assert ledger.check(min_confirmed=2)["duplicates"] == 1
    assert recorded["ledger_duplicates"] == 1 and recorded["ledger_lost"] == 0
    ledger.confirm(3)
    with pytest.raises(AssertionError, match="lost"):
        ledger.check()
    ledger.consume(3)
    ledger.consume(99)
    with pytest.raises(AssertionError, match="unexpected"):
        ledger.check()


def test_private_node_is_ours_and_answers(private_node: PrivateNode) -> None:
    assert private_node.port != 5672
    assert 5680 <= private_node.port <= 5689
    assert private_node.healthy()
    assert private_node.name.startswith("trio_msg_faults_")
    # the CLI reaches it (the cookie question, settled)
    assert private_node.ctl("eval", "node().").strip().strip("'") == private_node.name


def test_memory_alarm_is_raised_and_always_restored(node: PrivateNode) -> None:
    """The alarm helper, on the private node (alarms are node-wide: never on
    the shared one)."""
    assert alarms(node=node.name) == "", "a resource alarm is already in force"
    seen: list[str] = []

    def fail_inside_an_alarm() -> None:
        with memory_alarm(node=node.name):
            seen.append(alarms(node=node.name))
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        fail_inside_an_alarm()
    assert "memory" in seen[0].lower()
    assert alarms(node=node.name) == ""
