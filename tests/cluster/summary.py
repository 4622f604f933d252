"""Print the recovery table of docs/cluster.rst from benchmarks/results/cluster.json.

    python tests/cluster/summary.py [path]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _records import summarise

ORDER = [
    "kill -9 the leader",
    "kill -9 the client's node",
    "SIGSTOP the client's node (heartbeat 2)",
    "rolling restart",
]


def main() -> None:
    path = Path(
        sys.argv[1]
        if len(sys.argv) > 1
        else Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "cluster.json"
    )
    data = json.loads(path.read_text())
    summary = summarise(data["runs"])
    rows = [
        (
            "scenario",
            "faults",
            "first confirm p50 / p99 (s)",
            "first delivery p50 / p99 (s)",
            "confirmed",
            "lost",
            "duplicates",
        )
    ]
    for name in sorted(summary, key=lambda n: ORDER.index(n) if n in ORDER else 99):
        s = summary[name]
        ledger = s["ledger"]
        rows.append(
            (
                name,
                str(s["samples"]),
                f"{s['publish_p50_s']:.2f} / {s['publish_p99_s']:.2f}",
                f"{s['deliver_p50_s']:.2f} / {s['deliver_p99_s']:.2f}",
                str(ledger["confirmed"]),
                str(ledger["lost"]),
                str(ledger["duplicates"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)
    print(rule)
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print(rule)
    print(rule)
    runs = data["runs"]
    print()
    print(
        f"{len(runs)} run(s), {runs[0]['when']} to {runs[-1]['when']}, "
        f"{runs[-1]['cpus']} CPUs, load average {runs[-1]['load']} at the end of the last."
    )


if __name__ == "__main__":
    main()
