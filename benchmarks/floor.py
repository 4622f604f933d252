"""How low can latency go?  Workload c (publish, wait for its confirm) for
the floor clients (``benchmarks/clients/floor_client.py``: a pre-encoded
publish on a blocking socket, and on one trio task) beside trio_msg on
trio, pika and kombu, run the same way as the client comparison (one
process per run, interleaved rounds, medians, the same checks).

Run from the repository root (``nox -s bench`` runs it after the
comparison)::

    python -m benchmarks.floor                # c 5,000, 3 rounds, about a minute

Writes ``benchmarks/results/floor.json`` and prints the medians: a round
trip's mean (from the rate), and how far each contender is above the
blocking floor.  (No floor for e: a minimal client decoding deliveries with
pamqp is slower there than trio_msg, so it would floor nothing.)
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
    Client("floor[trio]", "floor_client", ("--backend", "trio")),
)
CONTENDERS = (*FLOOR, BY_NAME["trio_msg[trio]"], BY_NAME["pika"], BY_NAME["kombu"])
#: A round trip, in milliseconds: c's mean (the rate's inverse).
METRIC = {"c": "mean_ms"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--trio-msg-ref", default="HEAD")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "floor.json")
    args = parser.parse_args(argv)
    sizes = {w: max(1, round(SIZES[w] * args.scale)) for w in METRIC}
    cwd, commit, tmp = snapshot(args.trio_msg_ref)
    broker = Broker()
    runner = Runner(cwd, broker, args.timeout, verbose=False)
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
    floor = {w: med[w]["floor[blocking]"] for w in METRIC}
    kombu = med["c"]["kombu"]
    head = ["client", "c ms (mean)", "above the floor", "vs kombu's rate"]
    rows = [
        [
            c.name,
            f"{med['c'][c.name]:.3f}",
            f"+{med['c'][c.name] - floor['c']:.3f}",
            f"{kombu / med['c'][c.name]:.2f}x",
        ]
        for c in CONTENDERS
    ]
    print()
    print_table(head, rows)
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "trio_msg_commit": commit,
        "load_before": load,
        "sizes": sizes,
        "rounds": args.rounds,
        "metric": METRIC,
        "medians": med,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
