"""Faults on a three-node cluster under traffic: a producer publishing with
confirms and ``retry=True``, a consumer acking, both on reviving connections
given every node, to a quorum queue.  Each scenario keeps a ledger (nothing
confirmed may be lost, nothing unexpected may arrive; duplicates are counted)
and records how long the traffic took to recover (see _traffic.py and
benchmarks/results/cluster.json).

``TRIO_MSG_CLUSTER_REPEAT`` (1 unless set) repeats the faults of the kill and
freeze scenarios within one run, for more recovery samples.
"""

from __future__ import annotations

import os
import time

import anyio
import pytest
from _cluster import Cluster, ClusterNode
from _ledger import Ledger
from _records import Records
from _traffic import Fault, Run, traffic, wait_until

import trio_msg

pytestmark = pytest.mark.anyio

REPEAT = int(os.environ.get("TRIO_MSG_CLUSTER_REPEAT", "1"))


def quorum(name: str) -> trio_msg.Queue:
    return trio_msg.Queue(name, queue_type="quorum")


async def declare_on(node: ClusterNode, queue: trio_msg.Queue) -> None:
    """Declare *queue* through *node*: a quorum queue's leader is placed on
    the node the declaring client is connected to (``client-local``)."""
    with anyio.fail_after(30):
        async with trio_msg.connect(node.url) as conn, conn.channel() as ch:
            await queue.declare(channel=ch)


async def delete(cluster: Cluster, name: str) -> None:
    with anyio.fail_after(30):
        async with trio_msg.connect(cluster.urls) as conn, conn.channel() as ch:
            await ch.queue_delete(name)


def order(cluster: Cluster, first: int) -> list[str]:
    """Every node's URL, *first*'s first."""
    urls = cluster.urls
    return urls[first:] + urls[:first]


def record(
    records: Records, scenario: str, backend: str, run: Run, figures: dict[str, int]
) -> None:
    for n, at in enumerate(run.timeline.faults):
        publish_s, deliver_s = run.timeline.recovery(at)
        records.add(
            scenario,
            backend,
            publish_s=publish_s,
            deliver_s=deliver_s,
            ledger=figures if n == 0 else None,
        )


def node_of(cluster: Cluster, conn: trio_msg.Connection) -> ClusterNode:
    """The node *conn* is connected to now."""
    assert conn.address is not None
    return next(n for n in cluster.nodes if n.port == conn.address[1])


def kill(cluster: Cluster, queue: str, *, clients_node: bool) -> Fault:
    """kill -9 a node that leads *queue*: the producer's node
    (``clients_node``) or one neither client is on; start it again once
    traffic flows."""

    async def fault(run: Run) -> None:
        on = {node_of(cluster, run.producer_conn), node_of(cluster, run.consumer_conn)}
        if clients_node:
            node = node_of(cluster, run.producer_conn)
        else:
            node = next(n for n in cluster.nodes if n not in on)
        await anyio.to_thread.run_sync(cluster.move_leader, queue, node)

        def hit() -> None:
            run.timeline.fault()
            node.kill()

        await anyio.to_thread.run_sync(hit)
        await wait_for_traffic(run)
        # back for the next round (the cluster stays whole between faults)
        await anyio.to_thread.run_sync(lambda: node.start(fresh=False))

    return fault


async def wait_for_traffic(run: Run, timeout: float = 60) -> None:
    """Until a message published after the last fault was confirmed and delivered."""
    at = run.timeline.faults[-1]
    tl = run.timeline

    def recovered() -> bool:
        after = [i for i, t in tl.started.items() if t >= at]
        return any(i in tl.confirmed for i in after) and any(i in tl.delivered for i in after)

    await wait_until(recovered, timeout, "traffic after the fault")


async def test_kill_the_quorum_queues_leader(
    healthy: Cluster, unique_name: str, ledger: Ledger, records: Records, anyio_backend: str
) -> None:
    """kill -9 the node leading the queue; the clients are on the other two."""
    cluster = healthy
    queue = quorum(unique_name)
    leader = cluster.nodes[0]
    await declare_on(leader, queue)
    try:
        assert await anyio.to_thread.run_sync(cluster.leader, queue.name) is leader
        run = await traffic(
            order(cluster, 1),
            order(cluster, 2),
            queue,
            ledger,
            [kill(cluster, queue.name, clients_node=False)] * REPEAT,
        )
        figures = ledger.check()
        record(records, "kill -9 the leader", anyio_backend, run, figures)
    finally:
        await delete(cluster, queue.name)


async def test_kill_the_node_the_clients_are_on(
    healthy: Cluster, unique_name: str, ledger: Ledger, records: Records, anyio_backend: str
) -> None:
    """kill -9 the node both clients are connected to, which also leads the
    queue (the worst case: the publisher's channel is nacked for seconds
    after the new leader is elected)."""
    cluster = healthy
    queue = quorum(unique_name)
    node = cluster.nodes[0]
    await declare_on(node, queue)
    try:
        run = await traffic(
            order(cluster, 0),
            order(cluster, 0),
            queue,
            ledger,
            [kill(cluster, queue.name, clients_node=True)] * REPEAT,
        )
        figures = ledger.check()
        assert run.producer_conn.incarnation >= 2
        assert run.consumer_conn.incarnation >= 2
        record(records, "kill -9 the client's node", anyio_backend, run, figures)
    finally:
        await delete(cluster, queue.name)


def freeze(cluster: Cluster, queue: str) -> Fault:
    """SIGSTOP the producer's node, after moving *queue*'s leader off it;
    thaw it once traffic flows again."""

    async def fault(run: Run) -> None:
        node = node_of(cluster, run.producer_conn)
        if await anyio.to_thread.run_sync(cluster.leader, queue) is node:
            other = next(n for n in cluster.nodes if n is not node)
            await anyio.to_thread.run_sync(cluster.move_leader, queue, other)

        def hit() -> None:
            run.timeline.fault()
            node.freeze()

        incarnations = (run.producer_conn.incarnation, run.consumer_conn.incarnation)
        consumer_there = node_of(cluster, run.consumer_conn) is node
        await anyio.to_thread.run_sync(hit)
        try:
            await wait_for_traffic(run)
            # they moved away (heartbeats found the node silent)
            assert run.producer_conn.incarnation > incarnations[0]
            if consumer_there:
                assert run.consumer_conn.incarnation > incarnations[1]
        finally:
            await anyio.to_thread.run_sync(node.thaw)
        await anyio.to_thread.run_sync(
            lambda: node.ctl("await_startup", "--timeout", "60", timeout=70)
        )

    return fault


async def test_freeze_the_node_the_clients_are_on(
    healthy: Cluster, unique_name: str, ledger: Ledger, records: Records, anyio_backend: str
) -> None:
    """SIGSTOP the node both clients are on (the queue's leader is on
    another): with heartbeat 2 they find it silent within two intervals and
    fail over; the node is thawed once traffic flows again, and its unacked
    messages come back (as duplicates)."""
    cluster = healthy
    queue = quorum(unique_name)
    await declare_on(cluster.nodes[1], queue)
    try:
        run = await traffic(
            order(cluster, 0),
            order(cluster, 0),
            queue,
            ledger,
            [freeze(cluster, queue.name)] * REPEAT,
            heartbeat=2,
            connection_timeout=3,
        )
        figures = ledger.check()
        record(records, "SIGSTOP the client's node (heartbeat 2)", anyio_backend, run, figures)
    finally:
        await delete(cluster, queue.name)


def rolling_restart(node: ClusterNode) -> Fault:
    async def fault(run: Run) -> None:
        # As an operator would: only stop a node whose loss leaves every
        # quorum queue a majority.
        await anyio.to_thread.run_sync(
            lambda: node.ctl("await_startup", "--timeout", "60", timeout=70)
        )
        await anyio.to_thread.run_sync(wait_not_quorum_critical, node)

        def hit() -> None:
            run.timeline.fault()
            node.graceful_restart()

        await anyio.to_thread.run_sync(hit)
        await wait_for_traffic(run)

    return fault


def wait_not_quorum_critical(node: ClusterNode, timeout: float = 60) -> None:
    from _broker import RabbitmqctlError, _run

    deadline = time.monotonic() + timeout
    while True:
        try:
            _run("rabbitmq-queues", "check_if_node_is_quorum_critical", node=node.name, timeout=30)
            return
        except RabbitmqctlError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_rolling_restart(
    healthy: Cluster, unique_name: str, ledger: Ledger, records: Records, anyio_backend: str
) -> None:
    """Restart every node in turn (``rabbitmqctl stop``, start again), as a
    rolling upgrade does, while traffic flows.  On trio only: the three
    restarts take about three minutes, and the kill and freeze scenarios
    cover the same client paths on both backends."""
    cluster = healthy
    queue = quorum(unique_name)
    await declare_on(cluster.nodes[0], queue)
    try:
        run = await traffic(
            order(cluster, 0),
            order(cluster, 1),
            queue,
            ledger,
            [rolling_restart(node) for node in cluster.nodes],
            timeout=300,
        )
        figures = ledger.check()
        record(records, "rolling restart", anyio_backend, run, figures)
    finally:
        await delete(cluster, queue.name)


@pytest.mark.measurement
async def test_kill_the_clients_node_retrying_on_the_same_channel(
    healthy: Cluster,
    unique_name: str,
    ledger: Ledger,
    records: Records,
    anyio_backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What moving to a new channel after a nack saves: the same scenario as
    test_kill_the_node_the_clients_are_on with the move turned off, so a
    nacked publish is retried on the channel that keeps being nacked.

    A measurement for docs/cluster.rst, not a check (``-m measurement``
    runs it): either outcome is a figure, and it turns off a private step
    of the Producer to take it."""

    async def stay(self: trio_msg.Producer) -> None:
        pass

    monkeypatch.setattr(trio_msg.Producer, "_move_after_nack", stay)
    cluster = healthy
    queue = quorum(unique_name)
    await declare_on(cluster.nodes[0], queue)
    try:
        timed_out: BaseExceptionGroup[TimeoutError] | None = None
        try:
            run = await traffic(
                order(cluster, 0),
                order(cluster, 0),
                queue,
                ledger,
                [kill(cluster, queue.name, clients_node=True)] * REPEAT,
                timeout=300,
            )
        except* TimeoutError as group:  # (raised in a task: in a group)
            timed_out = group
        if timed_out is not None:
            # what it measured on RabbitMQ 3.10.8: the channel was still
            # nacked 60 s after the kill
            print(f"measured: no publish got through on the nacked channel: {timed_out!r}")
            return
        figures = ledger.check()
        record(records, "kill -9 the client's node, no channel move", anyio_backend, run, figures)
    finally:
        await delete(cluster, queue.name)
