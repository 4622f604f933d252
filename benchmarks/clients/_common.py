"""What every client module shares: the command line, the message bodies,
the JSON line each run prints, and small statistics helpers.

A client module is run as::

    python -m benchmarks.clients.<module> <workload> --queue Q [--n N] ...

and prints exactly one JSON object on its last line of stdout.  It connects,
runs one workload against the queue the orchestrator prepared, times only the
workload itself (not imports, not connecting) and exits.  Errors are raised:
a client that got a wrong count or a wrong body exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

HOST = "127.0.0.1"
PORT = 5672
USER = "guest"
PASSWORD = "guest"
#: The default vhost "/", spelled the way pika, aiormq, aio-pika and trio_msg read it.
URL = f"amqp://{USER}:{PASSWORD}@{HOST}:{PORT}/%2F"
#: kombu's spelling of the same.
KOMBU_URL = f"amqp://{USER}:{PASSWORD}@{HOST}:{PORT}//"

#: The workloads a client module implements (see benchmarks/README.md).
WORKLOADS = ("a", "b", "c", "d", "e", "f")

SMALL = bytes(range(100))  # the 100-byte body of workloads a-e
BIG = bytes(range(256)) * 4096  # the 1 MiB body of workload f
assert len(BIG) == 1 << 20

#: Properties every client puts on every message: raw bytes, transient.
CONTENT_TYPE = "application/data"
CONTENT_ENCODING = "binary"
DELIVERY_MODE = 1

#: Prefetch used by the RPC server (one request at a time, as RabbitMQ's
#: tutorial 6) and by the consumer of workload f (ten 1 MiB messages in flight).
RPC_SERVER_PREFETCH = 1
BIG_PREFETCH = 10


def parse_args(
    argv: Sequence[str] | None = None,
    *,
    extra: bool = False,
    backends: tuple[str, ...] = ("trio", "asyncio"),
    busy_poll: bool = False,
) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=(*WORKLOADS, "rpc-server", "long"))
    parser.add_argument("--queue", required=True, help="the queue to use (prepared by the caller)")
    parser.add_argument("--n", type=int, required=True, help="messages (or calls)")
    parser.add_argument("--window", type=int, default=1000, help="b: most unconfirmed publishes")
    parser.add_argument("--prefetch", type=int, default=1000, help="d: prefetch count")
    parser.add_argument("--sample-every", type=int, default=10_000, help="long: RSS sample period")
    if extra:
        parser.add_argument("--backend", choices=backends, default=backends[0])
    if busy_poll:
        parser.add_argument(
            "--busy-poll",
            type=float,
            default=None,
            help="trio_msg's busy_poll in seconds (0: off; default: the library's default)",
        )
    return parser.parse_args(argv)


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far, in KiB (Linux units).

    ``VmHWM`` where there is a ``/proc``: ``ru_maxrss`` carries the parent's
    peak across fork and exec on Linux, so a client started by an
    orchestrator bigger than itself would report the orchestrator's peak.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int:
    with open("/proc/self/statm", "rb") as f:
        pages = int(f.read().split()[1])
    return pages * (resource.getpagesize() // 1024)


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """p50 / p99 / mean of a list of seconds, in milliseconds."""
    ordered = sorted(latencies)
    n = len(ordered)

    def pct(p: float) -> float:
        # nearest-rank percentile
        k = max(0, min(n - 1, math.ceil(p / 100 * n) - 1))
        return ordered[k] * 1000

    return {
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(ordered) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


class Check:
    """Counts and compares what a run produced; raises on the first mismatch."""

    @staticmethod
    def body(got: bytes, expected: bytes, where: str) -> None:
        if got != expected:
            raise AssertionError(
                f"{where}: wrong body ({len(got)} bytes, expected {len(expected)})"
            )

    @staticmethod
    def equal(got: Any, expected: Any, what: str) -> None:
        if got != expected:
            raise AssertionError(f"{what}: got {got!r}, expected {expected!r}")


def cpu_seconds() -> float:
    """CPU time (user and system) this process has used so far: start-up
    and connecting included, so compare it workload by workload."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: CPU time (user + system, every thread of the process) at the start of the
#: timed region, and what the region used once it ended.
_cpu_start: float | None = None
_cpu_timed: float | None = None


def start() -> float:
    """Start the timed region: returns the wall clock (``perf_counter``) and
    notes the process's CPU time, so that the run reports the CPU its
    workload used, without start-up, imports or connecting."""
    global _cpu_start
    _cpu_start = time.process_time()
    return time.perf_counter()


def cpu_stop() -> None:
    """End the timed region's CPU count (``stop`` does it too)."""
    global _cpu_timed
    if _cpu_start is not None and _cpu_timed is None:
        _cpu_timed = time.process_time() - _cpu_start


def stop(t0: float) -> float:
    """End the timed region started by ``start``: its wall-clock seconds."""
    elapsed = time.perf_counter() - t0
    cpu_stop()
    return elapsed


def emit(client: str, args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Print the run's one JSON line (with the peak RSS and the CPU time) and flush.

    ``cpu_seconds`` is the whole process's (start-up included);
    ``cpu_timed_s`` the timed region's (``start`` to ``stop``; for an RPC
    server, ``ready`` to its last reply) and ``cpu_us_per_msg`` that divided
    by the messages (or calls, or requests served)."""
    if _cpu_timed is None:
        raise AssertionError(f"{client} {args.workload}: the timed region never ended")
    line = {
        "client": client,
        "workload": args.workload,
        "n": args.n,
        **result,
        "rss_peak_kib": peak_rss_kib(),
        "cpu_seconds": round(cpu_seconds(), 4),
        "cpu_timed_s": round(_cpu_timed, 6),
        "cpu_us_per_msg": round(_cpu_timed / args.n * 1e6, 3),
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def ready() -> None:
    """An RPC server says it is consuming (the orchestrator waits for this);
    its CPU is counted from here (``cpu_stop`` after its last reply)."""
    start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()


now = time.perf_counter
