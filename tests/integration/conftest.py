"""Integration tests: the real RabbitMQ (see tests/_support/_broker.py) and a
fault-injecting proxy (tests/_support/_proxy.py).

The fixtures live in tests/_support/_fixtures.py, shared with tests/faults.
A missing broker fails the whole run (``pytest.exit``, return code 3) with a
message saying how to start one; it never turns into skips.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _fixtures import _require_broker, broker_url, proxy, trio_proxy, unique_name

__all__ = ["_require_broker", "broker_url", "proxy", "trio_proxy", "unique_name"]

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)
