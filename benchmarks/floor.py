"""How low can latency go?  Workloads c (publish, wait for its confirm) and
e (RPC round trips, each side its own client's) for the floor clients
(``benchmarks/clients/floor_client.py``: pre-encoded frames on a blocking
socket, on the same socket polled before it blocks, and on one trio task)
beside trio_msg on trio, pika and kombu, run
the same way as the client comparison (one process per run, interleaved
rounds, medians, the same checks).

Run from the repository root (``nox -s bench`` runs it after the
comparison)::

    python -m benchmarks.floor      # c 5,000 and e 2,000, 3 rounds, about two minutes

Writes ``benchmarks/results/floor.json`` and prints the medians: for c a
round trip's mean (from the rate), for e the p50 (the issue's measure),
how far each contender is above the blocking floor, and its ratio to the
better of pika and kombu (the blocking clients, the best others on c and
e in the client comparison), as the comparison's targets take it: for c
the rate's ratio (above 1 is faster), for e the p50's (below 1 is faster).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.__main__ import BY_NAME, HERE, SIZES, Client, Runner, print_table, snapshot
from benchmarks.broker import Broker

FLOOR = (
    Client("floor[blocking]", "floor_client", ("--backend", "blocking")),
    Client("floor[poll]", "floor_client", ("--backend", "poll")),
    Client("floor[trio]", "floor_client", ("--backend", "trio")),
)
CONTENDERS = (*FLOOR, BY_NAME["trio_msg[trio]"], BY_NAME["pika"], BY_NAME["kombu"])
#: A round trip, in milliseconds: c's mean (the rate's inverse), e's p50.
METRIC = {"c": "mean_ms", "e": "p50_ms"}
#: Each workload's ratio is to the better of these.
AGAINST = ("pika", "kombu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--trio-msg-ref", default="HEAD")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--busy-poll",
        type=float,
        default=0.0,
        help="trio_msg's busy_poll (default 0: off; floor[poll] polls whatever this says)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "floor.json")
    args = parser.parse_args(argv)
    sizes = {w: max(1, round(SIZES[w] * args.scale)) for w in METRIC}
    cwd, commit, tmp = snapshot(args.trio_msg_ref)
    broker = Broker()
    runner = Runner(cwd, broker, args.timeout, verbose=False, busy_poll=args.busy_poll)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        w: {c.name: [] for c in CONTENDERS} for w in METRIC
    }
    load = os.getloadavg()[0]
    try:
        for r in range(args.rounds):
            order = CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]
            for w in METRIC:
                for client in order:
                    res = runner.run(client, w, sizes[w])
                    runs[w][client.name].append(res)
                    print(
                        f"round {r + 1}/{args.rounds}  {w}  {client.name:<16} "
                        f"{res[METRIC[w]]:.3f} ms",
                        flush=True,
                    )
    finally:
        broker.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    med = {
        w: {c: statistics.median(r[METRIC[w]] for r in rs) for c, rs in by_client.items()}
        for w, by_client in runs.items()
    }
    # CPU per message of the timed region (e: the client's and its server's).
    cpu = {
        w: {
            c: statistics.median(
                r["cpu_us_per_msg"] + r.get("server_cpu_us_per_msg", 0.0) for r in rs
            )
            for c, rs in by_client.items()
        }
        for w, by_client in runs.items()
    }
    floor = {w: med[w]["floor[blocking]"] for w in METRIC}
    head = ["client"]
    for w, metric in METRIC.items():
        kind = "mean" if metric == "mean_ms" else "p50"
        head += [f"{w} ms ({kind})", "above the floor", "vs pika/kombu", f"{w} CPU us/msg"]
    rows = []
    for c in CONTENDERS:
        row = [c.name]
        for w in METRIC:
            ms = med[w][c.name]
            best = min(med[w][other] for other in AGAINST)
            ratio = best / ms if w == "c" else ms / best
            row += [f"{ms:.3f}", f"{ms - floor[w]:+.3f}", f"{ratio:.2f}x", f"{cpu[w][c.name]:.1f}"]
        rows.append(row)
    print()
    print_table(head, rows)
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "trio_msg_commit": commit,
        "load_before": load,
        "sizes": sizes,
        "rounds": args.rounds,
        "busy_poll": args.busy_poll,
        "metric": METRIC,
        "medians": med,
        "cpu_us_per_msg": cpu,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
