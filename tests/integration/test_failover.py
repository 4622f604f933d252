"""Failover as kombu writes it, against the real broker: a first host that
refuses (a closed port) and the broker second, in each URL form and with
each failover strategy; and the host order a reviving connection follows."""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from _broker import BROKER_HOST, BROKER_PORT
from _proxy import TcpProxy

import trio_msg
from trio_msg.errors import ConnectionFailed

pytestmark = pytest.mark.anyio

SECRET = "n0t-the-Pa55word"
BROKER = (BROKER_HOST, BROKER_PORT)
FAST = trio_msg.RetryPolicy(interval_start=0.05, interval_step=0.05, interval_max=0.2)


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _url(host: str, port: int, password: str = "guest") -> str:
    return f"amqp://guest:{password}@{host}:{port}//"


def _forms(closed: int) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Every way to say "127.0.0.1:<closed>, then the broker": (url, keywords)."""
    first, second = _url("127.0.0.1", closed), _url(*BROKER)
    return {
        "comma": (f"amqp://guest:guest@127.0.0.1:{closed},{BROKER_HOST}:{BROKER_PORT}//", {}),
        "semicolon": (f"{first};{second}", {}),
        "list": ([first, second], {}),
        "alternates": (first, {"alternates": [second]}),
    }


FORMS = ["comma", "semicolon", "list", "alternates"]


class Recording:
    """A callable failover strategy that records what it is given and yields."""

    def __init__(self, order: Callable[[list[tuple[str, int]]], list[tuple[str, int]]]) -> None:
        self.order = order
        self.given: list[list[tuple[str, int]]] = []
        self.yielded: list[tuple[str, int]] = []

    def __call__(self, hosts: list[tuple[str, int]]) -> Iterator[tuple[str, int]]:
        self.given.append(list(hosts))
        for host in itertools.cycle(self.order(hosts)):
            self.yielded.append(host)
            yield host


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("strategy", ["round-robin", "shuffle"])
async def test_connect_fails_over_to_the_broker(form: str, strategy: str) -> None:
    closed = _closed_port()
    url, keywords = _forms(closed)[form]
    async with trio_msg.connect(url, failover_strategy=strategy, **keywords) as conn:
        assert conn.params.addresses == (("127.0.0.1", closed), BROKER)
        assert conn.address == BROKER
        async with conn.channel() as ch:
            await ch.queue_declare("", exclusive=True)  # the broker answers


@pytest.mark.parametrize("form", FORMS)
async def test_connect_follows_a_callable_strategy(form: str) -> None:
    closed = _closed_port()
    url, keywords = _forms(closed)[form]
    strategy = Recording(lambda hosts: hosts)  # the order given: the closed port first
    async with trio_msg.connect(url, failover_strategy=strategy, **keywords) as conn:
        assert conn.address == BROKER
    assert strategy.given == [[("127.0.0.1", closed), BROKER]]
    assert strategy.yielded == [("127.0.0.1", closed), BROKER]
    # Broker first: the closed port is never tried.
    strategy = Recording(lambda hosts: hosts[::-1])
    async with trio_msg.connect(url, failover_strategy=strategy, **keywords) as conn:
        assert conn.address == BROKER
    assert strategy.yielded == [BROKER]


def _tried(error: ConnectionFailed) -> list[str]:
    """The hosts a failed connect names, in its order."""
    return re.findall(r"127\.0\.0\.1:(\d+): ", str(error))


async def test_every_host_is_tried_once_in_the_strategy_order() -> None:
    ports = [_closed_port() for _ in range(3)]
    urls = [_url("127.0.0.1", p, SECRET) for p in ports]
    expected = [str(p) for p in ports]

    with pytest.raises(ConnectionFailed) as info:
        async with trio_msg.connect(";".join(urls)):
            pytest.fail("connected to nothing")
    assert _tried(info.value) == expected  # round-robin: in the order given
    assert SECRET not in str(info.value)

    with pytest.raises(ConnectionFailed) as info:
        async with trio_msg.connect(urls, failover_strategy="shuffle"):
            pytest.fail("connected to nothing")
    assert sorted(_tried(info.value)) == sorted(expected)  # each once, any order
    assert SECRET not in str(info.value)

    strategy = Recording(lambda hosts: [hosts[2], hosts[0], hosts[1]])
    with pytest.raises(ConnectionFailed) as info:
        async with trio_msg.connect(urls[0], alternates=urls[1:], failover_strategy=strategy):
            pytest.fail("connected to nothing")
    assert _tried(info.value) == [expected[2], expected[0], expected[1]]
    assert SECRET not in str(info.value)


async def _wait_revived(conn: trio_msg.Connection, before: int) -> None:
    with anyio.fail_after(10):
        while conn.incarnation == before or not conn.is_open:
            await anyio.sleep(0.01)


async def test_a_reviving_connection_moves_to_the_next_host(proxy: TcpProxy) -> None:
    """Round-robin: lost on the first host (a proxy to the broker), the
    connection revives on the second (the broker itself)."""
    url = f"{_url('127.0.0.1', proxy.port)};{_url(*BROKER)}"
    async with trio_msg.connect(url, revive=FAST) as conn:
        assert conn.address == ("127.0.0.1", proxy.port)
        # The proxy still accepts: had the first host been tried first
        # again, the connection would be back on it.
        assert proxy.cut() == 1
        await _wait_revived(conn, 1)
        assert conn.address == BROKER
        async with conn.channel() as ch:
            await ch.queue_declare("", exclusive=True)


async def test_a_reviving_connection_follows_a_callable_strategy(proxy: TcpProxy) -> None:
    closed = _closed_port()
    proxied = ("127.0.0.1", proxy.port)
    # proxy, closed port, broker, ...: after losing the proxy, the closed port
    # is tried, then the broker.
    strategy = Recording(lambda hosts: [proxied, ("127.0.0.1", closed), BROKER])
    urls = [_url(*BROKER), _url("127.0.0.1", closed), _url(*proxied)]
    async with trio_msg.connect(urls, revive=FAST, failover_strategy=strategy) as conn:
        assert conn.address == proxied
        proxy.cut()
        await _wait_revived(conn, 1)
        assert conn.address == BROKER
    assert strategy.yielded == [proxied, ("127.0.0.1", closed), BROKER]
