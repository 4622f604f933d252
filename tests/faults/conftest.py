"""The fault-injection suite: real faults between trio_msg and a real RabbitMQ.

Network faults go through the TCP proxy (tests/_support/_proxy.py) to the
shared node on 5672.  Broker restarts and resource alarms run on a private
node the suite starts itself (tests/_support/_node.py) on port 5680 + n: the
first test that needs it starts it (about 10 s), it serves the rest of the
session, and its teardown stops it at the end, failed run or not.  If it
cannot be started the tests that need it fail (never skip) with the reason.

Every test here is marked ``faults`` and ``integration``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _broker import RabbitmqctlError
from _fixtures import _require_broker, broker_url, proxy, trio_proxy, unique_name
from _ledger import Ledger
from _node import NodeError, PrivateNode

__all__ = [
    "_require_broker",
    "broker_url",
    "ledger",
    "node",
    "private_node",
    "proxy",
    "trio_proxy",
    "unique_name",
]

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def private_node() -> Iterator[PrivateNode]:
    """The suite's own RabbitMQ node, started on first use, stopped at the end
    of the session (pytest runs the teardown after a failed test too).

    ``TRIO_MSG_FAULTS_NODE`` picks the preferred slot (0: port 5680)."""
    prefer = int(os.environ.get("TRIO_MSG_FAULTS_NODE", "0"))
    try:
        started = PrivateNode.start_free(prefer=prefer)
    except NodeError as exc:
        pytest.fail(
            f"the fault suite could not start its private RabbitMQ node: {exc}", pytrace=False
        )
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def node(private_node: PrivateNode) -> Iterator[PrivateNode]:
    """The private node, healthy at the start of the test and put right after it
    (running, app started, no alarm), whatever the test did to it."""
    _heal(private_node)
    yield private_node
    _heal(private_node)


def _heal(node: PrivateNode) -> None:
    try:
        node.heal()
    except (RabbitmqctlError, NodeError) as exc:
        raise NodeError(f"could not put the private node right again: {exc}") from exc


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """A fresh ledger; ``ledger.check()`` asserts nothing was lost."""
    return Ledger.for_test(request)
