"""Client comparison: trio_msg against the other Python AMQP clients.

Run from the repository root (``nox -s bench`` does exactly this)::

    python -m benchmarks                      # the issue's sizes, 3 rounds, busy_poll=0
    python -m benchmarks --scale 0.05 --rounds 1 --long-n 0 --no-docs   # a smoke test

Every run is one subprocess (``python -m benchmarks.clients.<module>``) for one
(client, workload, round) against the local RabbitMQ, on a fresh uniquely
named queue that is deleted afterwards.  Rounds interleave the clients, in an
order that alternates from round to round; the numbers of record are the
medians over the rounds.  Before each timed run the orchestrator waits for
the broker's process to go idle (``Broker.settle``), so that no client pays
for the clean-up of the run before it.  Queue set-up, pre-filling and checking is done here
with pika and is never timed.  A run that produced a wrong result (a wrong
count, a wrong body, a queue that does not hold what it should) stops the
whole benchmark with an error.

Writes ``benchmarks/results/clients.json`` (every round, medians, ratios,
versions, machine, date, load), prints a table, and (unless ``--no-docs``)
regenerates ``docs/_static/bench_clients.png`` and
``docs/_static/bench_clients.inc``, which ``docs/performance.rst`` includes.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.broker import BenchError, Broker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "clients.json"
DOCS_STATIC = ROOT / "docs" / "_static"


@dataclass(frozen=True)
class Client:
    name: str
    module: str
    args: tuple[str, ...] = ()
    asyncio: bool = False
    ours: bool = False


CLIENTS = (
    Client("trio_msg[trio]", "trio_msg_client", ("--backend", "trio"), ours=True),
    Client("trio_msg[asyncio]", "trio_msg_client", ("--backend", "asyncio"), True, True),
    Client("aiormq", "aiormq_client", asyncio=True),
    Client("aio-pika", "aio_pika_client", asyncio=True),
    Client("pika", "pika_client"),
    Client("kombu", "kombu_client"),
)
BY_NAME = {c.name: c for c in CLIENTS}
OURS_TRIO = "trio_msg[trio]"
OURS_ASYNCIO = "trio_msg[asyncio]"

#: The issue's sizes (messages, or calls for e).
SIZES = {"a": 100_000, "b": 100_000, "c": 5_000, "d": 100_000, "e": 2_000, "f": 200}
TITLES = {
    "a": "a. publish, no confirms",
    "b": "b. publish, confirms, window 1000",
    "c": "c. publish, wait for each confirm",
    "d": "d. consume, prefetch 1000, ack each",
    "e": "e. RPC round trip",
    "f": "f. 1 MiB messages, publish + consume",
    "g": "g. peak RSS (worst workload)",
}
#: (metric, unit, higher is better) that each workload is judged on.
PRIMARY = {
    "a": ("msg_per_s", "msg/s", True),
    "b": ("msg_per_s", "msg/s", True),
    "c": ("msg_per_s", "msg/s", True),
    "d": ("msg_per_s", "msg/s", True),
    "e": ("p50_ms", "ms p50", False),
    "f": ("mib_per_s", "MiB/s", True),
}
#: The issue's targets for trio_msg on trio against the best other client.
TARGETS = {
    "a": (">=", 2.0),
    "b": (">=", 3.0),
    "c": (">=", 1.2),
    "d": (">=", 1.7),
    "e": ("<=", 0.8),
    "f": (">=", 1.0),
    "g": ("<=", 1.3),
}
#: ...and for trio_msg on asyncio against the best asyncio client: match it.
TARGETS_ASYNCIO = {w: (op, 1.0) for w, (op, _) in TARGETS.items()}


# --- running one client -----------------------------------------------------------


class Runner:
    def __init__(
        self,
        cwd: Path,
        broker: Broker,
        timeout: float,
        verbose: bool,
        busy_poll: float | None = None,
    ) -> None:
        self.cwd = cwd
        self.broker = broker
        self.timeout = timeout
        self.verbose = verbose
        #: trio_msg's ``busy_poll`` for every trio_msg process, client and RPC
        #: server alike (None: the library's default).
        self.busy_poll = busy_poll

    def _cmd(self, client: Client, workload: str, queue: str, n: int, *extra: str) -> list[str]:
        if client.ours and self.busy_poll is not None:
            extra = (*extra, "--busy-poll", repr(self.busy_poll))
        return [
            sys.executable,
            "-m",
            f"benchmarks.clients.{client.module}",
            workload,
            "--queue",
            queue,
            "--n",
            str(n),
            *client.args,
            *extra,
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the client sees trio_msg from cwd, nothing else
        env["PYTHONHASHSEED"] = "0"
        return env

    def _parse(self, client: Client, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        if proc.returncode != 0:
            raise BenchError(f"{client.name} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if not lines:
            raise BenchError(f"{client.name} printed nothing:\n{proc.stderr[-3000:]}")
        return json.loads(lines[-1])

    def _start_server(self, client: Client, queue: str, n: int) -> subprocess.Popen[str]:
        server = subprocess.Popen(
            self._cmd(client, "rpc-server", queue, n),
            cwd=self.cwd,
            env=self._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        readable, _, _ = select.select([server.stdout], [], [], 60)
        line = server.stdout.readline() if readable else ""
        if line.strip() != "ready":
            server.kill()
            _, err = server.communicate()
            raise BenchError(f"{client.name} RPC server did not start ({line!r}):\n{err[-3000:]}")
        return server

    def run(self, client: Client, workload: str, n: int) -> dict[str, Any]:
        """One timed run, checked; returns the client's JSON plus derived metrics."""
        broker = self.broker
        slug = client.name.replace("[", "-").replace("]", "")
        queue = broker.new_queue(f"{workload}-{slug}")
        server: subprocess.Popen[str] | None = None
        try:
            if workload == "d":
                broker.prefill(queue, n)
            if workload == "e":
                server = self._start_server(client, queue, n)
            settled = broker.settle()
            proc = subprocess.run(
                self._cmd(client, workload, queue, n),
                cwd=self.cwd,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
            result = self._parse(client, proc)
            result["settle_seconds"] = settled
            if server is not None:
                out, err = server.communicate(timeout=60)
                served = self._parse(
                    client, subprocess.CompletedProcess(server.args, server.returncode, out, err)
                )
                if served.get("served") != n:
                    raise BenchError(f"{client.name} RPC server served {served}")
                result["server_rss_peak_kib"] = served["rss_peak_kib"]
                result["server_cpu_seconds"] = served["cpu_seconds"]
                result["server_cpu_timed_s"] = served["cpu_timed_s"]
                result["server_cpu_us_per_msg"] = served["cpu_us_per_msg"]
            # The broker must hold exactly what the workload leaves behind.
            left = n if workload in ("a", "b", "c") else 0
            broker.wait_depth(queue, left, timeout=60)
            result["queue_depth_after"] = left
        finally:
            if server is not None and server.poll() is None:
                server.kill()
                server.communicate()
            broker.delete(queue)
        return derive(workload, result)

    def long_consume(self, n: int, max_depth: int) -> dict[str, Any]:
        """g: trio_msg on trio consumes n messages while a pika feeder keeps
        the queue topped up (at most about max_depth deep)."""
        broker = self.broker
        client = BY_NAME[OURS_TRIO]
        queue = broker.new_queue("g-long")
        feeder = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.broker",
                "feed",
                "--queue",
                queue,
                "--n",
                str(n),
                "--max-depth",
                str(max_depth),
            ],
            cwd=self.cwd,
            env=self._env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            proc = subprocess.run(
                self._cmd(client, "long", queue, n, "--sample-every", str(max(1, n // 100))),
                cwd=self.cwd,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=max(self.timeout, n / 1000),
            )
            result = self._parse(client, proc)
            _, err = feeder.communicate(timeout=120)
            if feeder.returncode != 0:
                raise BenchError(f"the feeder failed:\n{err[-3000:]}")
            broker.wait_depth(queue, 0, timeout=60)
        finally:
            if feeder.poll() is None:
                feeder.kill()
                feeder.communicate()
            broker.delete(queue)
        samples = result["rss_samples_kib"]
        rss = [kib / 1024 for _, kib in samples]
        warm = rss[max(1, len(rss) // 10)]  # after the first tenth of the run
        growth = rss[-1] - warm
        result.update(
            msg_per_s=n / result["seconds"],
            rss_start_mib=rss[0],
            rss_after_warmup_mib=warm,
            rss_end_mib=rss[-1],
            rss_max_mib=max(rss),
            rss_growth_after_warmup_mib=growth,
            flat=growth <= max(2.0, 0.05 * warm),
            max_depth=max_depth,
        )
        return result


def derive(workload: str, r: dict[str, Any]) -> dict[str, Any]:
    n, s = r["n"], r["seconds"]
    if workload == "f":
        r["mib_per_s"] = n / s  # 1 MiB per message, each published and consumed once
    else:
        r["msg_per_s"] = n / s
    r["rss_peak_mib"] = r["rss_peak_kib"] / 1024
    # CPU per message of the library measured: for e, both ends of a call
    # (the client and its RPC server, both the same library) are counted.
    r["cpu_us"] = r["cpu_us_per_msg"] + r.get("server_cpu_us_per_msg", 0.0)
    return r


# --- the whole benchmark ----------------------------------------------------------


def snapshot(ref: str) -> tuple[Path, str | None, Path | None]:
    """Where the clients run (their cwd), the commit measured, and a temporary
    directory to remove.  ``worktree`` measures the working tree as it is;
    anything else is a git ref whose ``trio_msg/`` is exported, so that edits
    made while the benchmark runs do not change what it measures.

    Either way trio_msg's bytecode is compiled first (``compileall``, into
    ``__pycache__`` next to the sources, as importing would).  The other
    clients run from site-packages, whose ``.pyc`` files pip wrote at
    install time; without this, trio_msg alone would be compiled from
    source in every client process whenever bytecode is not written
    (``PYTHONDONTWRITEBYTECODE``, or a fresh export), and the compiler's
    freed memory stays in that process's resident set: about 1 MiB of peak
    RSS that no installed trio_msg has (and 0.3 s of start-up, untimed)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD" if ref == "worktree" else ref],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        if ref != "worktree":
            raise
        commit = None
    if ref == "worktree":
        _compile(ROOT / "trio_msg")
        return ROOT, f"{commit} + working tree" if commit else None, None
    tmp = Path(tempfile.mkdtemp(prefix="trio_msg-bench-"))
    archive = subprocess.run(
        ["git", "archive", ref, "trio_msg"], capture_output=True, check=True, cwd=ROOT
    )
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    _compile(tmp / "trio_msg")
    (tmp / "benchmarks").symlink_to(HERE)
    return tmp, commit, tmp


def _compile(package: Path) -> None:
    """Write the package's bytecode with the clients' interpreter
    (py_compile writes it even under ``PYTHONDONTWRITEBYTECODE``), in a
    subprocess so that the compiler does not grow this process: on Linux a
    child's ``ru_maxrss`` starts at its parent's peak (see
    ``clients._common.peak_rss_kib``)."""
    done = subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)])
    if done.returncode != 0:
        raise BenchError(f"cannot compile {package}")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("trio", "anyio", "pamqp", "aiormq", "aio-pika", "pika", "kombu", "amqp"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def broker_version(broker: Broker) -> str | None:
    props = broker.conn._impl.server_properties or {}
    version = props.get("version")
    return version.decode() if isinstance(version, bytes) else version


METRICS = (
    "msg_per_s",
    "mib_per_s",
    "p50_ms",
    "p99_ms",
    "seconds",
    "rss_peak_mib",
    "cpu_us",
    "cpu_us_per_msg",
    "server_cpu_us_per_msg",
)


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for metric in METRICS:
        values = [r[metric] for r in runs if metric in r]
        if values:
            out[metric] = statistics.median(values)
    return out


def ratios(
    med: dict[str, dict[str, dict[str, float]]],
    clients: list[str],
    runs: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> dict[str, Any]:
    """trio_msg's ratios against the best of the others, per workload: of
    the medians (the number of record) and, to show the spread, of each
    round on its own (trio_msg against the best other client of that round)."""
    out: dict[str, Any] = {}

    def per_round(
        workload: str, ours: str, pool: list[str], metric: str, best_of: Any
    ) -> list[float]:
        if runs is None:
            return []
        n = min(len(runs[workload][c]) for c in [ours, *pool])
        values = []
        for i in range(n):
            others = [runs[workload][c][i][metric] for c in pool]
            values.append(runs[workload][ours][i][metric] / best_of(others))
        return values

    def against(ours: str, pool: list[str], targets: dict[str, tuple[str, float]]) -> None:
        if ours not in clients or not pool:
            return
        table = {}
        for workload, (metric, _unit, higher) in PRIMARY.items():
            if workload not in med:
                continue
            values = {c: med[workload][c][metric] for c in pool}
            best = (max if higher else min)(values, key=values.__getitem__)
            ratio = med[workload][ours][metric] / values[best]
            table[workload] = _verdict(ratio, best, metric, targets[workload])
            table[workload]["rounds"] = per_round(
                workload, ours, pool, metric, max if higher else min
            )
            cpu = cpu_verdict(med[workload], ours, others)
            if cpu is not None:
                table[workload]["cpu"] = cpu
        # g: peak RSS, workload by workload, against the lightest client there;
        # the worst workload is the one judged.
        worst: dict[str, Any] | None = None
        for workload in PRIMARY:
            if workload not in med:
                continue
            values = {c: med[workload][c]["rss_peak_mib"] for c in pool}
            lightest = min(values, key=values.__getitem__)
            ratio = med[workload][ours]["rss_peak_mib"] / values[lightest]
            if worst is None or ratio > worst["ratio"]:
                worst = _verdict(ratio, lightest, "rss_peak_mib", targets["g"])
                worst["workload"] = workload
                worst["rounds"] = per_round(workload, ours, pool, "rss_peak_mib", min)
        if worst is not None:
            table["g"] = worst
        out[ours] = table

    others = [c for c in clients if not BY_NAME[c].ours]
    against(OURS_TRIO, others, TARGETS)
    against(OURS_ASYNCIO, [c for c in others if BY_NAME[c].asyncio], TARGETS_ASYNCIO)
    return out


def cpu_verdict(
    med: dict[str, dict[str, float]], ours: str, pool: list[str]
) -> dict[str, Any] | None:
    """trio_msg's CPU per message against the lowest of every other client's
    on one workload (the target: at most it)."""
    theirs = {c: med[c]["cpu_us"] for c in pool if "cpu_us" in med[c]}
    if not theirs or "cpu_us" not in med[ours]:
        return None  # a results file from before CPU per message was recorded
    lowest = min(theirs, key=theirs.__getitem__)
    ratio = med[ours]["cpu_us"] / theirs[lowest]
    return {
        "ratio": ratio,
        "against": lowest,
        "ours_us": med[ours]["cpu_us"],
        "theirs_us": theirs[lowest],
        "target": "<= 1.0",
        "met": ratio <= 1.0,
    }


def _verdict(ratio: float, best: str, metric: str, target: tuple[str, float]) -> dict[str, Any]:
    op, value = target
    met = ratio >= value if op == ">=" else ratio <= value
    return {
        "ratio": ratio,
        "against": best,
        "metric": metric,
        "target": f"{op} {value}",
        "met": met,
    }


# --- output -------------------------------------------------------------------------


def fmt(metric: str, value: float) -> str:
    if metric in ("msg_per_s",):
        return f"{value:,.0f}"
    if metric in ("p50_ms", "p99_ms"):
        return f"{value:.3f}"
    return f"{value:,.1f}"


def table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    med = results["medians"]
    clients = results["parameters"]["clients"]
    head = ["client"]
    cols: list[tuple[str, str]] = []
    for workload in results["parameters"]["workloads"]:
        metric, unit, _ = PRIMARY[workload]
        head.append(f"{workload} {unit}")
        cols.append((workload, metric))
        if workload == "c":
            head.append("c ms p99")
            cols.append(("c", "p99_ms"))
        if workload == "e":
            head.append("e ms p99")
            cols.append(("e", "p99_ms"))
    head.append("g MiB peak")
    rows = []
    for client in clients:
        row = [client]
        for workload, metric in cols:
            row.append(fmt(metric, med[workload][client][metric]))
        peak = max(med[w][client]["rss_peak_mib"] for w in results["parameters"]["workloads"])
        row.append(f"{peak:.1f}")
        rows.append(row)
    return head, rows


def rss_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    med = results["medians"]
    workloads = results["parameters"]["workloads"]
    head = ["peak RSS, MiB", *workloads]
    rows = [
        [client, *(f"{med[w][client]['rss_peak_mib']:.1f}" for w in workloads)]
        for client in results["parameters"]["clients"]
    ]
    return head, rows


def ratio_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = [
        "workload",
        "trio_msg[trio]",
        "rounds",
        "vs",
        "target",
        "trio_msg[asyncio]",
        "rounds",
        "vs",
        "target",
    ]
    rows = []
    r = results["ratios"]
    for workload in (*results["parameters"]["workloads"], "g"):
        row = [TITLES[workload]]
        for ours in (OURS_TRIO, OURS_ASYNCIO):
            v = r.get(ours, {}).get(workload)
            if v is None:
                row += ["-", "-", "-", "-"]
                continue
            mark = "met" if v["met"] else "MISSED"
            spread = v.get("rounds") or []
            span = f"{min(spread):.2f}-{max(spread):.2f}" if spread else "-"
            against = v["against"] + (f" ({v['workload']})" if "workload" in v else "")
            row += [f"{v['ratio']:.2f}x", span, against, f"{v['target']} ({mark})"]
        rows.append(row)
    return head, rows


def cpu_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """CPU time per message (µs, user + system of the timed region), every
    client on every workload; for e, the client's and its RPC server's."""
    med = results["medians"]
    clients = results["parameters"]["clients"]
    workloads = results["parameters"]["workloads"]
    if not all("cpu_us" in med[w][c] for w in workloads for c in clients):
        return None
    ours = [c for c in (OURS_TRIO, OURS_ASYNCIO) if c in clients]
    head = ["CPU us/msg", *clients, *(f"{c} / lowest other" for c in ours)]
    rows = []
    for w in workloads:
        row = [w + (" (client+server)" if w == "e" else "")]
        row += [f"{med[w][c]['cpu_us']:,.1f}" for c in clients]
        for c in ours:
            v = results["ratios"].get(c, {}).get(w, {}).get("cpu")
            if v is None:
                row.append("-")
            else:
                mark = "met" if v["met"] else "MISSED"
                row.append(f"{v['ratio']:.2f}x {v['against']} ({mark})")
        rows.append(row)
    return head, rows


def print_table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def rst_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), rule]
    for row in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    lines.append(rule)
    return "\n".join(line.rstrip() for line in lines)


def chart(results: dict[str, Any], path: Path) -> None:
    """Draw the docs' chart: one panel per workload, two panels a row.

    Sized for where it is shown: the docs' text column is about 880 px
    wide, and the PNG (10 in at 150 dpi, 1500 px) is scaled down to it, so a
    point of font size here is about 1.2 px there; the smallest text (11 pt)
    reads at 13 px.  The PNG's pixels are 1.7x the display's, sharp on a
    high-density screen.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = results["medians"]
    clients = results["parameters"]["clients"]
    workloads = results["parameters"]["workloads"]
    colours = {
        "trio_msg[trio]": "#1f77b4",
        "trio_msg[asyncio]": "#6baed6",
        "aiormq": "#ff7f0e",
        "aio-pika": "#fdae6b",
        "pika": "#2ca02c",
        "kombu": "#9467bd",
    }
    small, medium, large = 11, 12.5, 14
    panels = [*workloads, "g"]
    long = results.get("long_consume")
    if long:
        panels.append("long")
    cols = 2
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(10, 3.1 * nrows + 0.6), squeeze=False, layout="constrained"
    )
    # Centred titles may overhang their panel; keep a margin on the right.
    fig.get_layout_engine().set(rect=(0, 0, 0.975, 1))
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=small)
        if panel == "long":
            xs = [c / 1000 for c, _ in long["rss_samples_kib"]]
            ys = [kib / 1024 for _, kib in long["rss_samples_kib"]]
            ax.plot(xs, ys, color=colours[OURS_TRIO], linewidth=2)
            ax.set_ylim(0, max(ys) * 1.25)
            ax.set_xlabel(f"messages consumed (thousands, of {long['n']:,})", fontsize=small)
            ax.set_ylabel("RSS, MiB", fontsize=small)
            ax.set_title("h. trio_msg[trio] RSS, long consume", fontsize=medium)
            continue
        if panel == "g":
            values = [max(med[w][c]["rss_peak_mib"] for w in workloads) for c in clients]
            unit = "MiB, peak over a-f (lower is better)"
        else:
            metric, unit, higher = PRIMARY[panel]
            values = [med[panel][c][metric] for c in clients]
            unit += "" if higher else " (lower is better)"
        bars = ax.barh(clients, values, color=[colours.get(c, "grey") for c in clients])
        ax.invert_yaxis()
        ax.set_title(TITLES[panel], fontsize=medium)
        ax.set_xlabel(unit, fontsize=small)
        ax.xaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda x, _pos: f"{x:,.0f}" if x >= 100 else f"{x:g}")
        )
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        for bar, value in zip(bars, values, strict=True):
            label = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + label,
                    va="center", fontsize=small)  # fmt: skip
        ax.set_xlim(0, max(values) * 1.35)
    m = results["machine"]
    fig.suptitle(
        f"Python AMQP clients against RabbitMQ {results['broker']} on {m['cpu_count']} cores,\n"
        f"medians of {results['parameters']['rounds']} rounds ({m['date'][:10]})",
        fontsize=large,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def docs_include(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    p = results["parameters"]
    v = m["versions"]
    load = results["load"]
    sizes = ", ".join(f"{w} {p['sizes'][w]:,}" for w in p["workloads"])
    busy_poll = p.get("busy_poll", "library default")
    end = datetime.datetime.fromisoformat(m["date"])
    start = end - datetime.timedelta(seconds=results["wall_s"])
    lines = [
        ".. This file is written by ``python -m benchmarks``; do not edit it by hand.",
        "",
        f"Measured on **{m['date'][:10]}**, {start:%H:%M} to {end:%H:%M} UTC: "
        f"{m['cpu_count']} cores "
        f"({m['cpu']}), {m['python']}, RabbitMQ {results['broker']}, trio_msg at "
        f"``{results['trio_msg_commit']}`` with ``busy_poll={busy_poll}``, "
        f"trio {v['trio']}, anyio {v['anyio']}, "
        f"pamqp {v['pamqp']}, aiormq {v['aiormq']}, aio-pika {v['aio-pika']}, "
        f"pika {v['pika']}, kombu {v['kombu']} (py-amqp {v['amqp']}).  "
        f"{p['rounds']} interleaved round{'s' if p['rounds'] != 1 else ''}, medians; "
        f"sizes {sizes}.  The whole run took "
        f"{results['wall_s'] / 60:.1f} minutes; load average "
        f"{load['before'][0]:.2f} before and {load['after'][0]:.2f} after "
        "(the machine was shared).",
        "",
        "Medians (higher is better, except the latencies and memory):",
        "",
        rst_table(*table_rows(results)),
        "",
        "trio_msg's ratios to the best other client (for e, p50 latency, and for g, "
        "peak RSS, where lower is better); trio_msg[asyncio] is compared with the "
        "asyncio clients only:",
        "",
        rst_table(*ratio_rows(results)),
        "",
        "Peak RSS of each run (medians), workload by workload:",
        "",
        rst_table(*rss_rows(results)),
        "",
    ]
    cpu = cpu_rows(results)
    if cpu is not None:
        lines += [
            "CPU time per message, in microseconds (user + system time of the "
            "client's process over the timed region, medians; for e, the client's "
            "and its RPC server's per call), and trio_msg's ratio to the lowest of "
            "the other four clients (the target: at most 1):",
            "",
            rst_table(*cpu),
            "",
        ]
    long = results.get("long_consume")
    if long:
        lines += [
            f"The long consume (g): trio_msg on trio consumed {long['n']:,} messages at "
            f"{long['msg_per_s']:,.0f} msg/s while a pika publisher kept the queue at most "
            f"about {long['max_depth']:,} deep.  Its RSS went from "
            f"{long['rss_start_mib']:.1f} MiB at the start to "
            f"{long['rss_after_warmup_mib']:.1f} MiB after the first tenth and "
            f"{long['rss_end_mib']:.1f} MiB at the end (peak {long['rss_max_mib']:.1f} MiB): "
            + ("flat." if long["flat"] else "**still growing**."),
            "",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# --- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size (1 = the issue's)"
    )
    parser.add_argument("--clients", default=",".join(c.name for c in CLIENTS))
    parser.add_argument("--workloads", default="abcdef")
    parser.add_argument(
        "--long-n", type=int, default=1_000_000, help="g's long consume (0: skip it)"
    )
    parser.add_argument("--long-max-depth", type=int, default=100_000)
    parser.add_argument(
        "--trio-msg-ref",
        default="HEAD",
        help="git ref of trio_msg to measure, or 'worktree' (default HEAD)",
    )
    parser.add_argument(
        "--busy-poll",
        default="0",
        help="trio_msg's busy_poll in seconds for every trio_msg process "
        "(default 0: off; 'default': the library's own default)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/_static")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="run nothing: recompute the ratios of a saved results file and "
        "regenerate its tables, chart and docs fragment",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        results["ratios"] = ratios(
            results["medians"], results["parameters"]["clients"], results["runs"]
        )
        args.render.write_text(json.dumps(results, indent=1) + "\n")
        report(results, args.render, docs=not args.no_docs)
        return 0

    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for c in clients:
        if c not in BY_NAME:
            parser.error(f"unknown client {c!r}; choose from {', '.join(BY_NAME)}")
    workloads = [w for w in args.workloads if w in PRIMARY]
    sizes = {w: max(1, round(SIZES[w] * args.scale)) for w in workloads}
    long_n = round(args.long_n * args.scale) if args.long_n else 0

    busy_poll = None if args.busy_poll == "default" else float(args.busy_poll)

    cwd, commit, tmp = snapshot(args.trio_msg_ref)
    broker = Broker()
    runner = Runner(cwd, broker, args.timeout, args.verbose, busy_poll)
    load_before = os.getloadavg()
    started = time.perf_counter()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        w: {c: [] for c in clients} for w in workloads
    }
    long_result = None
    try:
        print(
            f"trio_msg at {commit} (busy_poll {args.busy_poll}); clients run from {cwd}; "
            f"load {load_before[0]:.2f}"
        )
        # Untimed: one small run of the first workload by every client, so
        # that the first timed run (trio_msg's, in round 1) does not meet a
        # broker that has been idle (in both full runs of 2026-12-02, the
        # first round of a gave 1.21x and 1.24x, the later ones 1.83x-2.29x).
        if workloads:
            first = workloads[0]
            for c in clients:
                runner.run(BY_NAME[c], first, max(1, sizes[first] // 10))
            print(f"warmed up: {first} x {max(1, sizes[first] // 10):,} by every client")
        for r in range(args.rounds):
            order = clients if r % 2 == 0 else clients[::-1]
            for w in workloads:
                for c in order:
                    res = runner.run(BY_NAME[c], w, sizes[w])
                    res["round"] = r + 1
                    runs[w][c].append(res)
                    metric, unit, _ = PRIMARY[w]
                    print(
                        f"round {r + 1}/{args.rounds}  {w}  {c:<18} {res['seconds']:7.2f} s  "
                        f"{fmt(metric, res[metric]):>10} {unit:<6}  "
                        f"rss {res['rss_peak_mib']:5.1f} MiB",
                        flush=True,
                    )
        if long_n and OURS_TRIO in clients:
            print(f"g: long consume of {long_n:,} by {OURS_TRIO} ...", flush=True)
            long_result = runner.long_consume(long_n, args.long_max_depth)
            print(
                f"g: {long_result['seconds']:.1f} s, RSS {long_result['rss_start_mib']:.1f} -> "
                f"{long_result['rss_after_warmup_mib']:.1f} -> {long_result['rss_end_mib']:.1f} MiB "
                f"({'flat' if long_result['flat'] else 'GROWING'})",
                flush=True,
            )
        version = broker_version(broker)
    finally:
        broker.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()

    med = {w: {c: medians(runs[w][c]) for c in clients} for w in workloads}
    results: dict[str, Any] = {
        "machine": machine(),
        "broker": version,
        "trio_msg_commit": commit,
        "parameters": {
            "rounds": args.rounds,
            "scale": args.scale,
            "sizes": sizes,
            "clients": clients,
            "workloads": workloads,
            "body_bytes": {"a-e": 100, "f": 1 << 20},
            "b_window": 1000,
            "d_prefetch": 1000,
            "f_prefetch": 10,
            "rpc_server_prefetch": 1,
            "long_n": long_n,
            # What every trio_msg process ran with (each run's JSON also
            # records the busy_poll its connection had).
            "busy_poll": busy_poll if busy_poll is not None else "library default",
        },
        "load": {"before": load_before, "after": load_after},
        "wall_s": wall,
        "medians": med,
        "ratios": ratios(med, clients, runs),
        "long_consume": long_result,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    report(results, args.output, docs=not args.no_docs)
    return 0


def report(results: dict[str, Any], output: Path, *, docs: bool) -> None:
    """Print the tables; write the chart and the docs fragment."""
    wall = results["wall_s"]
    load_before, load_after = results["load"]["before"], results["load"]["after"]
    print()
    print_table(*table_rows(results))
    print()
    print_table(*ratio_rows(results))
    print()
    print_table(*rss_rows(results))
    print()
    cpu = cpu_rows(results)
    if cpu is not None:
        print_table(*cpu)
        print()
    print(
        f"{wall / 60:.1f} minutes; load {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"wrote {output}"
    )
    if docs:
        chart(results, DOCS_STATIC / "bench_clients.png")
        docs_include(results, DOCS_STATIC / "bench_clients.inc")
        print(f"wrote {DOCS_STATIC / 'bench_clients.png'} and bench_clients.inc")


if __name__ == "__main__":
    sys.exit(main())
