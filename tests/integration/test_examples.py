"""The tutorials in examples/ run against the real broker, end by themselves and say the right things."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from _broker import BROKER_URL, close_connection_by_name

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT = 30


def run_example(name: str) -> list[str]:
    """Run examples/<name>.py as ``python examples/<name>.py`` would; return its output lines."""
    env = dict(os.environ, TRIO_MSG_URL=BROKER_URL, PYTHONUNBUFFERED="1")
    # Import trio_msg from this checkout, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"{name}.py exited {proc.returncode}:\n{proc.stderr}"
    assert proc.stderr == ""
    return proc.stdout.splitlines()


def example_constant(name: str, constant: str) -> Any:
    """The literal value of a module-level constant of examples/<name>.py (not run)."""
    tree = ast.parse((EXAMPLES / f"{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == constant for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"{constant} not found in {name}.py")


def test_hello_world() -> None:
    lines = run_example("hello_world")
    assert sorted(lines) == [" [x] Received 'Hello World!'", " [x] Sent 'Hello World!'"]


def test_work_queues() -> None:
    tasks = example_constant("work_queues", "TASKS")
    lines = run_example("work_queues")
    for task in tasks:
        assert f" [x] Sent {task!r}" in lines
        received = [line for line in lines if line.endswith(f"Received {task!r}")]
        assert len(received) == 1, lines  # every task done once, by one worker
        assert any(line.endswith(f"Done {task!r}") for line in lines)
    assert lines[-1].startswith(f"All {len(tasks)} tasks done: ")
    # prefetch_count=1: both workers had a share
    assert "worker 1 did" in lines[-1]
    assert "worker 2 did" in lines[-1]


def test_publish_subscribe() -> None:
    lines = run_example("publish_subscribe")
    for line in ["info: Hello World!", "warning: disk 80% full", "error: disk full"]:
        assert f" [x] Sent {line!r}" in lines
        assert f" [subscriber 1] {line}" in lines
        assert f" [subscriber 2] {line}" in lines
    assert lines[-1] == "Both subscribers got every line"


def test_routing() -> None:
    lines = run_example("routing")
    errors_only = [line for line in lines if line.startswith(" [errors only] error:")]
    everything = [line for line in lines if line.startswith(" [everything] ") and ":" in line]
    assert errors_only == [
        " [errors only] error: 'Disk full'",
        " [errors only] error: 'Lost the database'",
    ]
    assert len([line for line in everything if "got its" not in line]) == 5
    assert " [errors only] got its 2 messages" in lines
    assert " [everything] got its 5 messages" in lines


def test_topics() -> None:
    lines = run_example("topics")

    def seen(name: str) -> set[str]:
        prefix = f" [{name}] "
        return {
            line[len(prefix) :].split(":")[0]
            for line in lines
            if line.startswith(prefix) and "got its" not in line
        }

    assert seen("kernel") == {"kern.critical", "kern.info"}
    assert seen("critical") == {"kern.critical", "auth.critical"}
    assert seen("kernel or critical") == {"kern.critical", "kern.info", "auth.critical"}
    assert seen("everything") == {"kern.critical", "kern.info", "auth.critical", "cron.warning"}
    assert " [kernel or critical] got its 3 messages" in lines


def test_rpc() -> None:
    lines = run_example("rpc")
    for n, result in [(0, 0), (1, 1), (10, 55), (20, 6765)]:
        assert f" [.] fib({n})" in lines  # the server's side
        assert f" [.] Got fib({n}) = {result}" in lines  # the client's


def _assert_received_all(lines: list[str], count: int) -> None:
    """The consumer got every message, once, and stopped: its last line says
    so.  (The producer's "Sent" for the last message may come after it: the
    delivery can reach the consumer before the confirm reaches the producer.)"""
    received = [line for line in lines if not line.startswith(" [x] Sent")]
    assert received[-1] == f" [x] Received all {count}", lines
    assert lines.count(f" [x] Received all {count}") == 1
    assert f" [x] Sent {count - 1}" in lines


def test_resilient_runs_undisturbed() -> None:
    count = example_constant("resilient", "COUNT")
    lines = run_example("resilient")
    _assert_received_all(lines, count)
    assert not any("Reconnected" in line for line in lines)


def test_resilient_rides_out_a_forced_close() -> None:
    """Close the example's connection from the broker while it runs: it
    reconnects, and every message still arrives."""
    count = example_constant("resilient", "COUNT")
    name = example_constant("resilient", "NAME")
    env = dict(os.environ, TRIO_MSG_URL=BROKER_URL, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "resilient.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(" [x] Sent 5"):
                close_connection_by_name(name, "trio_msg example test")
                break
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += out.splitlines()
    assert proc.returncode == 0, err
    assert err == ""
    assert any(line.startswith(" [!] Reconnected (incarnation 2)") for line in lines), lines
    _assert_received_all(lines, count)
