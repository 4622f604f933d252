"""Where does a client spend its time?  Samples one client's run of a
workload with py-spy (or, without py-spy, cProfile) and summarises it.

Run from the repository root::

    python -m benchmarks.profile                       # trio_msg on trio, workloads a b d
    python -m benchmarks.profile --client aiormq --workloads d --n 50000

For py-spy, the summary has three parts: the share of samples by layer
(trio_msg's core, its driver, its messaging API, pamqp, trio, anyio, the
socket calls, ...), the functions with the most samples *inside* them (self),
and the trio_msg functions with the most samples under them (inclusive).
The whole process is sampled, including imports and connecting, which for
runs of this size are a few percent.
"""

from __future__ import annotations

import argparse
import collections
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.__main__ import BY_NAME, SIZES, snapshot
from benchmarks.broker import Broker

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def layer(path: str) -> str:
    if "trio_msg/_protocol/" in path:
        return "trio_msg core (_protocol)"
    if "trio_msg/messaging" in path or "trio_msg/message" in path:
        return "trio_msg API (messaging, message)"
    if "trio_msg/" in path:
        return "trio_msg driver (connection, channel, ...)"
    if "benchmarks/" in path:
        return "the benchmark's own loop"
    for name in (
        "pamqp",
        "trio",
        "anyio",
        "outcome",
        "aiormq",
        "aio_pika",
        "pika",
        "kombu",
        "amqp",
    ):
        if path.startswith(f"{name}/") or f"/{name}/" in path:
            return name
    if path in ("socket.py", "selectors.py", "ssl.py") or path.startswith("asyncio/"):
        return "stdlib IO (socket, selectors, asyncio)"
    return "other (stdlib, interpreter)"


def summarise_pyspy(raw: Path, top: int) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        total += count
        frames = []
        for part in stack.split(";"):
            m = _FRAME.match(part)
            if m:
                frames.append((m["func"], m["file"]))
        if not frames:
            continue
        func, file = frames[-1]
        self_time[f"{func} ({file})"] += count
        layers[layer(file)] += count
        for name in {f"{f} ({p})" for f, p in frames if "trio_msg/" in p}:
            inclusive[name] += count
    out = [f"{total} samples", "", "by layer (self time):"]
    for name, count in layers.most_common():
        out.append(f"  {count / total:6.1%}  {name}")
    out += ["", f"top {top} functions by self time:"]
    for name, count in self_time.most_common(top):
        out.append(f"  {count / total:6.1%}  {name}")
    out += ["", f"top {top} trio_msg functions by inclusive time:"]
    for name, count in inclusive.most_common(top):
        out.append(f"  {count / total:6.1%}  {name}")
    return "\n".join(out)


def summarise_cprofile(path: Path, top: int) -> str:
    import io

    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", default="trio_msg[trio]", choices=list(BY_NAME))
    parser.add_argument("--workloads", default="abd")
    parser.add_argument("--n", type=int, default=None, help="size (default: the issue's)")
    parser.add_argument("--tool", choices=("py-spy", "cprofile"), default=None)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--trio-msg-ref", default="HEAD")
    args = parser.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    tool = args.tool or ("py-spy" if Path(pyspy).exists() else "cprofile")
    client = BY_NAME[args.client]
    cwd, commit, tmp = snapshot(args.trio_msg_ref)
    broker = Broker()
    out_dir = Path(tempfile.mkdtemp(prefix="trio_msg-profile-"))
    try:
        for workload in args.workloads:
            n = args.n or SIZES[workload]
            queue = broker.new_queue(f"profile-{workload}")
            try:
                if workload == "d":
                    broker.prefill(queue, n)
                cmd = [
                    "-m",
                    f"benchmarks.clients.{client.module}",
                    workload,
                    "--queue",
                    queue,
                    "--n",
                    str(n),
                    *client.args,
                ]
                if tool == "py-spy":
                    data = out_dir / f"{workload}.txt"
                    full = [pyspy, "record", "-f", "raw", "-r", str(args.rate), "-o", str(data),
                            "--", sys.executable, *cmd]  # fmt: skip
                else:
                    data = out_dir / f"{workload}.prof"
                    full = [sys.executable, "-m", "cProfile", "-o", str(data), *cmd]
                proc = subprocess.run(full, cwd=cwd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"{workload}: failed\n{proc.stderr[-3000:]}")
                result = proc.stdout.strip().splitlines()[-1]
            finally:
                broker.delete(queue)
            print(f"=== {args.client} workload {workload}, n={n:,}, trio_msg {commit}, {tool}")
            print(result)
            print()
            if tool == "py-spy":
                print(summarise_pyspy(data, args.top))
            else:
                print(summarise_cprofile(data, args.top))
            print(f"(raw profile: {data})")
            print()
    finally:
        broker.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
