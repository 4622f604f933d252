"""Where does an RPC's round trip go?  Runs workload e for trio_msg on trio
(its client and its RPC server, as the comparison does) with every read
and write of their sockets timestamped, and splits the round trip into
the two sides' own work and the two hops between them (``--workload c``
does the same for a publish waiting for its confirm; see :func:`analyse_c`):

* *client*: from reading a reply to writing the next request (decoding,
  handing the message over, the benchmark's checks, the next publish);
* *server*: from reading a request to writing its reply;
* *hop 1*: from the client's write to the server's read (the broker, the
  kernel, and the server's wake-up: trio's run loop, the task's resumption);
* *hop 2*: from the server's write to the client's read.

Both processes stamp with ``time.perf_counter`` (``CLOCK_MONOTONIC`` on
Linux, one clock for the machine), so the hops can be taken across them.
Each figure is the median over the calls (the first 500 left out).

Why this and not an interleaved wall-clock A/B of e: on this kind of shared,
virtualised machine a run's p50 moves by 10-40% from one run to the next
with the code unchanged, while the two sides' own work, measured inside
each run, moves by far less.  Moving the reader's deadline off the path
between a reply and the next request showed here as about 15 us less per
side in 10 of 11 pairs of runs, where interleaved wall-clock rounds of e
gave 0.89x the old p50 in one set of ten and 0.97x in the next twelve.
It measures
trio_msg in place (cold caches, a busy broker beside it), where code costs
several times what a warm loop of it does.

Run from the repository root::

    python -m benchmarks.trace                          # HEAD, 3 runs, busy_poll=0
    python -m benchmarks.trace --workload c             # publish, wait for the confirm
    python -m benchmarks.trace --ref worktree --against HEAD --runs 4

With ``--against`` the two refs' runs alternate, and each pair is printed.
"""

from __future__ import annotations

import argparse
import bisect
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.__main__ import BY_NAME, Runner, snapshot
from benchmarks.broker import Broker

#: Run as ``python -c HOOK <client's arguments>``: timestamps the socket
#: path of the trio_msg it imports (the snapshot's: ``-c`` puts the working
#: directory first on ``sys.path``), then runs the benchmark client.
HOOK = """
import atexit, os, runpy, sys, time
import trio_msg._trio_wire as wire
stamps = []
clock = time.perf_counter
recv_some, send_some = wire.recv_some, wire.send_some
def traced_recv(sock, size):
    data = recv_some(sock, size)
    if data:
        stamps.append((clock(), "r"))
    return data
def traced_send(sock, buffers):
    stamps.append((clock(), "s"))
    sent = send_some(sock, buffers)
    stamps.append((clock(), "S"))
    return sent
wire.recv_some, wire.send_some = traced_recv, traced_send
@atexit.register
def dump():
    with open(os.environ["TRIO_MSG_TRACE"], "w") as out:
        out.writelines(f"{t:.7f} {kind}\\n" for t, kind in stamps)
sys.argv[0] = "benchmarks.clients.trio_msg_client"
runpy.run_module("benchmarks.clients.trio_msg_client", run_name="__main__")
"""

SKIP = 500


def _load(path: Path) -> list[tuple[float, str]]:
    return [
        (float(t), kind) for t, kind in (line.split() for line in path.read_text().splitlines())
    ]


def _spans(stamps: list[tuple[float, str]], first: str, then: str) -> list[tuple[float, float]]:
    """(time of a *first*, time of the next *then*), for each *first* in turn."""
    spans = []
    start: float | None = None
    for t, kind in stamps:
        if kind == first and start is None:
            start = t
        elif kind == then and start is not None:
            spans.append((start, t))
            start = None
    return spans


def analyse(client: list[tuple[float, str]], server: list[tuple[float, str]]) -> dict[str, float]:
    """The medians, in microseconds, of the parts of a round trip."""
    calls = _spans(client, "s", "r")[SKIP:]  # a request written .. its reply read
    own_client = [b - a for a, b in _spans(client, "r", "s")[SKIP:]]
    own_server = [b - a for a, b in _spans(server, "r", "s")[SKIP:]]
    reads = [t for t, kind in server if kind == "r"]
    writes = [t for t, kind in server if kind == "s"]
    hop1, hop2 = [], []
    for sent, replied in calls:
        i = bisect.bisect_left(reads, sent)
        if i == len(reads) or reads[i] > replied:
            continue
        hop1.append(reads[i] - sent)
        j = bisect.bisect_left(writes, reads[i])
        if j < len(writes) and writes[j] < replied:
            hop2.append(replied - writes[j])
    us = 1e6
    return {
        "round trip": statistics.median(b - a for a, b in calls) * us,
        "client": statistics.median(own_client) * us,
        "server": statistics.median(own_server) * us,
        "hop 1": statistics.median(hop1) * us,
        "hop 2": statistics.median(hop2) * us,
    }


def analyse_c(client: list[tuple[float, str]]) -> dict[str, float]:
    """Workload c's publish-and-confirm, in microseconds (medians): the
    *send* system call itself (on loopback it also runs the broker's side
    of TCP), the *hop* from the send's return to the confirm's read (the
    broker, the kernel, the client's wake-up), and the *client*'s own work
    from the confirm's read to the next publish's write (the rest of that
    publish call, the benchmark's loop, the next call up to its write)."""
    calls = _spans(client, "s", "r")[SKIP:]
    us = 1e6
    return {
        "round trip": statistics.median(b - a for a, b in calls) * us
        + statistics.median(b - a for a, b in _spans(client, "r", "s")[SKIP:]) * us,
        "client": statistics.median(b - a for a, b in _spans(client, "r", "s")[SKIP:]) * us,
        "send": statistics.median(b - a for a, b in _spans(client, "s", "S")[SKIP:]) * us,
        "hop": statistics.median(b - a for a, b in _spans(client, "S", "r")[SKIP:]) * us,
    }


def trace_c(runner: Runner, broker: Broker, n: int, work: Path) -> dict[str, float]:
    """One traced run of c; the medians, plus the client's own mean."""
    client = BY_NAME["trio_msg[trio]"]
    queue = broker.new_queue("c-trace")
    path = work / "client.txt"
    args = runner._cmd(client, "c", queue, n)
    try:
        done = subprocess.run(
            [args[0], "-c", HOOK, *args[3:]],
            cwd=runner.cwd,
            env=dict(runner._env(), TRIO_MSG_TRACE=str(path)),
            capture_output=True,
            text=True,
            check=True,
            timeout=runner.timeout,
        )
    finally:
        broker.delete(queue)
    result = analyse_c(_load(path))
    ran = json.loads(done.stdout.splitlines()[-1])
    result["mean (client's own)"] = ran["seconds"] / n * 1e6
    result["client CPU/msg"] = ran["cpu_us_per_msg"]
    return result


def trace(runner: Runner, broker: Broker, n: int, work: Path) -> dict[str, float]:
    """One traced run of e; the medians, plus the client's own p50."""
    client = BY_NAME["trio_msg[trio]"]
    queue = broker.new_queue("e-trace")
    files = {side: work / f"{side}.txt" for side in ("client", "server")}

    def command(workload: str) -> list[str]:
        args = runner._cmd(client, workload, queue, n)
        return [args[0], "-c", HOOK, *args[3:]]  # (python, -m, module, ...)

    env = runner._env()
    server = subprocess.Popen(
        command("rpc-server"),
        cwd=runner.cwd,
        env=dict(env, TRIO_MSG_TRACE=str(files["server"])),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the traced RPC server did not start")
        done = subprocess.run(
            command("e"),
            cwd=runner.cwd,
            env=dict(env, TRIO_MSG_TRACE=str(files["client"])),
            capture_output=True,
            text=True,
            check=True,
            timeout=runner.timeout,
        )
        served, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
        broker.delete(queue)
    result = analyse(_load(files["client"]), _load(files["server"]))
    ran = json.loads(done.stdout.splitlines()[-1])
    result["p50 (client's own)"] = ran["p50_ms"] * 1e3
    result["client CPU/call"] = ran["cpu_us_per_msg"]
    result["server CPU/call"] = json.loads(served.splitlines()[-1])["cpu_us_per_msg"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="git ref of trio_msg, or 'worktree'")
    parser.add_argument("--against", default=None, help="a second ref, run alternately")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workload", choices=("e", "c"), default="e")
    parser.add_argument("--n", type=int, default=3000, help="calls per run")
    parser.add_argument(
        "--busy-poll", type=float, default=0.0, help="trio_msg's busy_poll (default 0: off)"
    )
    args = parser.parse_args(argv)
    refs = [args.ref] + ([args.against] if args.against else [])
    broker = Broker()
    temps: list[Path] = []
    results: dict[str, list[dict[str, float]]] = {ref: [] for ref in refs}
    try:
        runners = {}
        for ref in refs:
            cwd, commit, tmp = snapshot(ref)
            if tmp is not None:
                temps.append(tmp)
            runners[ref] = Runner(cwd, broker, 600, verbose=False, busy_poll=args.busy_poll)
            print(f"{ref}: {commit}", flush=True)
        work = Path(tempfile.mkdtemp(prefix="trio_msg-trace-"))
        temps.append(work)
        for i in range(args.runs):
            order = refs if i % 2 == 0 else refs[::-1]
            for ref in order:
                res = (trace if args.workload == "e" else trace_c)(
                    runners[ref], broker, args.n, work
                )
                results[ref].append(res)
                parts = "  ".join(f"{k} {v:6.1f}" for k, v in res.items())
                print(f"run {i + 1}  {ref:<10} {parts}  (us)", flush=True)
    finally:
        broker.close()
        for tmp in temps:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    for ref, runs in results.items():
        keys = runs[0].keys()
        med: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
        print(
            f"{ref:<10} medians of {len(runs)} runs: "
            + "  ".join(f"{k} {v:.1f}" for k, v in med.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
