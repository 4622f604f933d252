"""The cluster suite: trio_msg on a private three-node RabbitMQ cluster.

``nox -s cluster`` runs it; the default ``tests`` session leaves it out
(``--ignore=tests/cluster``): it starts its own nodes, on 127.0.0.1:5673..5675
(tests/_support/_cluster.py), never touching the shared node on 5672.

The session-scoped ``cluster`` fixture starts and clusters the three nodes
(about 30 s) and, at the end of the session, failed run or not, kills them and
removes their files.  If they cannot be started every test fails (never
skips) with the reason.  Each test gets the cluster whole (``healthy``): every
node running, none frozen, all three clustered, and puts it right again
after, whatever it did to it.

The fault scenarios record their ledgers and recovery times; at the end of
the session they are written to ``TRIO_MSG_CLUSTER_RESULTS`` (by default
``benchmarks/results/cluster.json``, merged with the runs already there).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
# The fault suite's ledger (tests/faults/_ledger.py) serves here too.
sys.path.insert(0, str(_HERE.parent / "faults"))

from _cluster import Cluster, NodeError  # noqa: E402
from _fixtures import unique_name  # noqa: E402,F401 (a fixture)
from _ledger import Ledger  # noqa: E402
from _records import Records  # noqa: E402

RESULTS = Path(
    os.environ.get(
        "TRIO_MSG_CLUSTER_RESULTS",
        str(_HERE.parent.parent / "benchmarks" / "results" / "cluster.json"),
    )
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The three-node cluster, started on first use, torn down at the end."""
    started = time.monotonic()
    try:
        made = Cluster.start()
    except NodeError as exc:
        pytest.fail(f"the cluster suite could not start its nodes: {exc}", pytrace=False)
    print(f"cluster of 3 nodes started in {time.monotonic() - started:.1f} s")
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def healthy(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, whole at the start of the test and made whole after it."""
    cluster.heal()
    yield cluster
    cluster.heal()


@pytest.fixture(scope="session")
def records() -> Iterator[Records]:
    """Recovery times and ledgers of the session's fault scenarios; written
    to RESULTS at the end (merged with earlier runs there)."""
    made = Records()
    yield made
    if made.samples:
        made.save(RESULTS)


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    return Ledger.for_test(request)


def results_summary(path: Path = RESULTS) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}
