"""A private three-node RabbitMQ cluster the cluster suite may kill, freeze and
restart (tests/cluster).

    cluster = Cluster.start()          # ~30 s: three nodes, clustered
    cluster.urls                       # their AMQP URLs, 127.0.0.1:5673..5675
    cluster.nodes[1].kill()            # kill -9 one node's VM
    cluster.nodes[1].start(fresh=False)  # it comes back and rejoins
    cluster.nodes[2].freeze() / .thaw()  # SIGSTOP / SIGCONT
    cluster.leader(queue)              # the node leading a quorum queue
    cluster.stop()                     # kill every node, remove its files

Nodes are ``trio_msg_cluster_<n>@localhost`` (n = 0..2) on AMQP port
``5673 + n`` and distribution port ``25673 + n``, with their data, logs and
pid file under ``/tmp/trio_msg_cluster/<name>/``.  They are
:class:`_node.PrivateNode`\\ s with other names and ports: the same user, the
same Erlang cookie, the same leftover handling (a node of a crashed run found
on those ports is killed by its pid before the cluster starts).  One lock file
(``fcntl.flock``) says a live run holds the cluster: a second run at the same
time fails at once instead of killing the first one's nodes.

Everything here is synchronous; async tests call it through
``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import threading
import warnings
from pathlib import Path
from typing import IO

from _broker import RabbitmqctlError
from _node import NodeError, PrivateNode, _check_can_run_nodes

__all__ = ["Cluster", "ClusterNode", "NodeError"]

CLUSTER_DIR = Path(os.environ.get("TRIO_MSG_CLUSTER_DIR", "/tmp/trio_msg_cluster"))
AMQP_PORT_BASE = 5673
DIST_PORT_BASE = 25673
SIZE = 3


class ClusterNode(PrivateNode):
    """One node of the cluster (index 0..2)."""

    def __init__(self, index: int) -> None:
        if not 0 <= index < SIZE:
            raise ValueError(f"index must be 0..{SIZE - 1}")
        self.slot = index
        self.short_name = f"trio_msg_cluster_{index}"
        self.name = f"{self.short_name}@localhost"
        self.port = AMQP_PORT_BASE + index
        self.dist_port = DIST_PORT_BASE + index
        self.dir = CLUSTER_DIR / self.short_name
        self.pid_file = self.dir / "pid"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        # The cluster holds the lock; a node is always "locked" through it.
        self._lock: IO[str] | None = None
        self.watermark = "0.4"
        self.starts = 0
        self.frozen = False

    def __repr__(self) -> str:
        return f"<ClusterNode {self.name} amqp=127.0.0.1:{self.port}>"

    def _try_lock(self) -> bool:
        return True  # the Cluster's lock covers its nodes

    def _unlock(self) -> None:
        pass

    def freeze(self) -> None:
        """``SIGSTOP`` the node's VM: its sockets stay open, nothing answers."""
        pid = self._require_pid()
        os.kill(pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """``SIGCONT`` a frozen node."""
        pid = self._require_pid()
        os.kill(pid, signal.SIGCONT)
        self.frozen = False

    def _require_pid(self) -> int:
        pid = self.pid()
        if pid is None:
            raise NodeError(f"{self.name} is not running")
        return pid

    def stop(self) -> None:
        """Kill the node (``kill -9``: the cluster is thrown away whole, and a
        graceful stop of a cluster node can wait on its peers)."""
        pid = self.pid()
        if pid is not None:
            if self.frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            _kill(pid)
        self.frozen = False
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    def kill(self) -> None:
        """``kill -9`` the node's VM and wait until it is gone."""
        self.frozen = False
        super().kill()

    def graceful_restart(self) -> None:
        """``rabbitmqctl stop`` (the node shuts down cleanly, clients get
        ``320 CONNECTION_FORCED``), then start it again on its data: one step
        of a rolling upgrade."""
        try:
            self.ctl("stop", timeout=90)
        except RabbitmqctlError as exc:
            # Said, not hidden: the step was then a kill, not a clean stop.
            warnings.warn(
                f"{self!r}: rabbitmqctl stop failed ({exc}); killed it instead", stacklevel=2
            )
            pid = self.pid()
            if pid is not None:
                _kill(pid)
        self._wait_gone()
        self.start(fresh=False)

    def _wait_gone(self) -> None:
        import time

        deadline = time.monotonic() + 30
        while self.pid() is not None:
            if time.monotonic() > deadline:
                raise NodeError(f"{self.name} did not exit within 30 s of rabbitmqctl stop")
            time.sleep(0.1)


class Cluster:
    """Three :class:`ClusterNode`\\ s joined into one cluster."""

    def __init__(self) -> None:
        self.nodes = [ClusterNode(i) for i in range(SIZE)]
        self._lock: IO[str] | None = None

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node_named(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @classmethod
    def start(cls) -> Cluster:
        """Start three fresh nodes (in parallel), join the second and third to
        the first.  Kills leftovers of an earlier run first; on failure, stops
        whatever it started and raises :class:`NodeError`."""
        _check_can_run_nodes()
        CLUSTER_DIR.mkdir(parents=True, exist_ok=True)
        cluster = cls()
        lock = open(CLUSTER_DIR / "cluster.lock", "w")  # noqa: SIM115 (held for the cluster's life)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise NodeError(
                f"another live test run holds the cluster ({CLUSTER_DIR / 'cluster.lock'})"
            ) from None
        cluster._lock = lock
        try:
            for node in cluster.nodes:
                node._kill_leftover()
                shutil.rmtree(node.dir, ignore_errors=True)
            errors: list[BaseException] = []

            def start(node: ClusterNode) -> None:
                try:
                    node.start(fresh=True)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=start, args=(n,)) for n in cluster.nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise NodeError(f"starting the cluster's nodes failed: {errors[0]}") from errors[0]
            first = cluster.nodes[0]
            for node in cluster.nodes[1:]:
                node.ctl("stop_app", timeout=60)
                node.ctl("join_cluster", first.name, timeout=60)
                node.start_app()
            running = cluster.running_nodes()
            if sorted(running) != sorted(n.name for n in cluster.nodes):
                raise NodeError(f"the cluster did not form: running nodes {running}")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self) -> None:
        """Kill every node and remove its files; release the lock.  Idempotent."""
        try:
            for node in self.nodes:
                with contextlib.suppress(NodeError):
                    node.stop()
                shutil.rmtree(node.dir, ignore_errors=True)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    # ---------------------------------------------------------------- state

    def any_running(self) -> ClusterNode:
        for node in self.nodes:
            if node.pid() is not None and not node.frozen:
                return node
        raise NodeError("no node of the cluster is running")

    def running_nodes(self) -> list[str]:
        """The node names ``cluster_status`` lists as running."""
        out = self.any_running().ctl("cluster_status", "--formatter", "json", timeout=30)
        import json

        return list(json.loads(out).get("running_nodes", []))

    def leader(self, queue: str, vhost: str = "/") -> ClusterNode:
        """The node leading quorum queue or stream *queue*."""
        expr = (
            f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"{vhost}">>, queue, '
            f'<<"{queue}">>)), {{_, N}} = amqqueue:get_pid(Q), N.'
        )
        out = self.any_running().ctl("eval", expr, timeout=30).strip()
        match = re.fullmatch(r"'?([^']+)'?", out)
        if match is None:
            raise NodeError(f"could not read the leader of {queue!r}: {out!r}")
        return self.node_named(match.group(1))

    def move_leader(self, queue: str, node: ClusterNode, vhost: str = "/") -> None:
        """Make *node* lead quorum queue *queue* (RabbitMQ's
        ``transfer_leadership``, which refuses while *node*'s member is still
        catching up: tried again until it works, 60 s at most)."""
        import time

        expr = (
            f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"{vhost}">>, queue, '
            f'<<"{queue}">>)), rabbit_quorum_queue:transfer_leadership(Q, \'{node.name}\').'
        )
        deadline = time.monotonic() + 60
        while self.leader(queue, vhost) is not node:
            if time.monotonic() > deadline:
                raise NodeError(f"could not move the leader of {queue!r} to {node.name}")
            with contextlib.suppress(RabbitmqctlError):
                self.any_running().ctl("eval", expr, timeout=30)
            time.sleep(0.2)

    def heal(self) -> None:
        """Every node running, none frozen, all three in the cluster."""
        for node in self.nodes:
            if node.frozen:
                node.thaw()
            if node.pid() is None:
                node.start(fresh=False)
        for node in self.nodes:
            node.ctl("await_startup", "--timeout", "60", timeout=70)
        running = self.running_nodes()
        if sorted(running) != sorted(n.name for n in self.nodes):
            raise NodeError(f"the cluster is not whole again: running nodes {running}")


def _kill(pid: int) -> None:
    from _node import _kill as kill

    kill(pid)
