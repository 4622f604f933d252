"""Integration tests: the real RabbitMQ (see tests/_support/_broker.py) and a
fault-injecting proxy (tests/_support/_proxy.py).

The fixtures live in tests/_support/_fixtures.py, shared with tests/faults.
A missing broker fails the whole run (``pytest.exit``, return code 3) with a
message saying how to start one; it never turns into skips.

With ``TRIO_MSG_TEST_BROKER=memory`` the embedded broker stands in for
RabbitMQ (tests/_support/_embedded.py): every test is given the fixture that
serves its TCP listener the way the test runs (in its anyio event loop, or
in a thread for a synchronous test; ``trio_proxy`` serves it for
pytest-trio tests), and the tests marked
``rabbitmq_only`` (they need RabbitMQ itself; the marker says why) are
deselected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _broker import EMBEDDED
from _fixtures import (
    _embedded_tcp,
    _embedded_tcp_thread,
    _require_broker,
    broker_url,
    proxy,
    trio_proxy,
    unique_name,
)

__all__ = [
    "_embedded_tcp",
    "_embedded_tcp_thread",
    "_require_broker",
    "broker_url",
    "proxy",
    "trio_proxy",
    "unique_name",
]

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if _HERE in Path(item.path).resolve().parents]
    rabbitmq_only = []
    for item in ours:
        item.add_marker(pytest.mark.integration)
        marker = item.get_closest_marker("rabbitmq_only")
        if marker is not None:
            if not marker.kwargs.get("reason"):
                raise pytest.UsageError(f"{item.nodeid}: rabbitmq_only needs a reason=")
            rabbitmq_only.append(item)
    if not EMBEDDED:
        return
    if rabbitmq_only:
        config.hook.pytest_deselected(items=rabbitmq_only)
        items[:] = [item for item in items if item not in rabbitmq_only]
    for item in ours:
        if item in rabbitmq_only:
            continue
        names: list[str] = item.fixturenames  # type: ignore[attr-defined]
        if "anyio_backend" in names:
            serve = "_embedded_tcp"
        elif item.get_closest_marker("trio") is not None:
            continue  # pytest-trio: ``trio_proxy`` serves it
        else:
            serve = "_embedded_tcp_thread"
        names.insert(0, serve)
