"""Fixtures of the kombu port: the broker URLs kombu's fixtures connect to,
and unique, cleaned-up names for the queues and exchanges kombu names.

The broker check, ``broker_url`` and ``unique_name`` are the integration
suite's own (tests/integration/conftest.py), imported, so a missing broker
fails this directory's run as it fails theirs.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType

import anyio
import pytest

import trio_msg

_INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(_INTEGRATION) not in sys.path:  # its conftest imports _broker and _proxy
    sys.path.insert(0, str(_INTEGRATION))


def _integration_conftest() -> ModuleType:
    # Imported under its own name: pytest loads it as plain "conftest" (its
    # directory is not a package), which tests/conftest.py also is.
    spec = importlib.util.spec_from_file_location(
        "trio_msg_tests_integration_conftest", _INTEGRATION / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_integration = _integration_conftest()
_require_broker = _integration._require_broker
broker_url = _integration.broker_url
unique_name = _integration.unique_name

#: Nothing listens here: kombu's "invalid" broker address (pyamqp://localhost:12345).
INVALID_URL = "amqp://guest:guest@localhost:12345//"

CLEANUP_TIMEOUT = 10


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


# kombu's fixtures are kombu.Connection objects, which connect lazily; here
# they are the URLs, and ``async with trio_msg.connect(url)`` is where the
# port connects (kombu: ``with connection as conn``).


@pytest.fixture
def connection(broker_url: str) -> str:
    return broker_url


@pytest.fixture
def failover_connection(broker_url: str) -> str:
    # kombu: 'pyamqp://localhost:12345;pyamqp://{hostname}:{port}'
    return f"{INVALID_URL};{broker_url}"


@pytest.fixture
def invalid_connection() -> str:
    return INVALID_URL


@pytest.fixture
def confirm_publish_connection(broker_url: str) -> str:
    # kombu: transport_options={"confirm_publish": True}; trio_msg's
    # Producer confirms by default.
    return broker_url


@pytest.fixture
async def names(
    broker_url: str, unique_name: str, anyio_backend: str
) -> AsyncIterator[Callable[[str], str]]:
    """``names("direct1")``: kombu's fixed name made unique to this test (the
    same name each time it is asked for), so the trio and asyncio halves and
    parallel runs never share a queue.  Every queue and exchange of those
    names is deleted after the test (kombu's are durable and never are)."""
    made: dict[str, str] = {}

    def name(kombu_name: str) -> str:
        if kombu_name not in made:
            made[kombu_name] = f"{unique_name}.{kombu_name}"
        return made[kombu_name]

    yield name
    with anyio.fail_after(CLEANUP_TIMEOUT):
        async with trio_msg.connect(broker_url, revive=False) as conn, conn.channel() as ch:
            for full in made.values():
                # kombu's SimpleQueue names an exchange after its queue; both
                # deletes are no-ops for a name that is not in use.
                await ch.queue_delete(full)
                await ch.exchange_delete(full)
