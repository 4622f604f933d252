"""Recovery times and ledger totals of the cluster scenarios, and the file
they are kept in (benchmarks/results/cluster.json).

A *sample* is one fault: the scenario, the backend, the seconds from the
fault to the first confirmed publish and to the first delivery of a message
published after the fault, and the ledger of the run it was part of (a
ledger is counted once per run, on its first sample).  The file keeps every
session's samples (``runs``) and a ``summary`` per scenario over all of
them: samples, p50 and p99 of both times (nearest rank), and the ledger
totals (sent, confirmed, lost, unexpected, duplicates).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

__all__ = ["Records", "percentile", "summarise"]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile *q* (0..100) of *values*."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class Records:
    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []

    def add(
        self,
        scenario: str,
        backend: str,
        *,
        publish_s: float,
        deliver_s: float,
        ledger: dict[str, int] | None = None,
        **extra: Any,
    ) -> None:
        sample: dict[str, Any] = {
            "scenario": scenario,
            "backend": backend,
            "publish_s": round(publish_s, 4),
            "deliver_s": round(deliver_s, 4),
            **extra,
        }
        if ledger is not None:
            sample["ledger"] = ledger
        self.samples.append(sample)
        print(f"recovery {scenario}/{backend}: publish {publish_s:.3f} s, deliver {deliver_s:.3f} s")

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {"runs": []}
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {"runs": []}
        data.setdefault("runs", []).append(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load": round(os.getloadavg()[0], 2),
                "samples": self.samples,
            }
        )
        data["summary"] = summarise(data["runs"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, dict[str, Any]] = {}
    for run in runs:
        for s in run["samples"]:
            entry = by.setdefault(
                s["scenario"],
                {
                    "publish": [],
                    "deliver": [],
                    "ledger": {
                        "sent": 0,
                        "confirmed": 0,
                        "lost": 0,
                        "unexpected": 0,
                        "duplicates": 0,
                    },
                },
            )
            entry["publish"].append(s["publish_s"])
            entry["deliver"].append(s["deliver_s"])
            for key in entry["ledger"]:
                entry["ledger"][key] += s.get("ledger", {}).get(key, 0)
    summary: dict[str, Any] = {}
    for scenario, entry in sorted(by.items()):
        summary[scenario] = {
            "samples": len(entry["publish"]),
            "publish_p50_s": percentile(entry["publish"], 50),
            "publish_p99_s": percentile(entry["publish"], 99),
            "deliver_p50_s": percentile(entry["deliver"], 50),
            "deliver_p99_s": percentile(entry["deliver"], 99),
            "ledger": entry["ledger"],
        }
    return summary
