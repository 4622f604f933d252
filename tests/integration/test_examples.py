"""The tutorials in examples/ run against the real broker, end by themselves and say the right things."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _broker import BROKER_URL, close_connection_by_name

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT = 30


def run_example(name: str, url: str | None = BROKER_URL) -> list[str]:
    """Run examples/<name>.py as ``python examples/<name>.py`` would, with
    ``TRIO_MSG_URL=url`` (None: unset, so the tutorials use the embedded
    broker); return its output lines."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TRIO_MSG_URL", None)
    if url is not None:
        env["TRIO_MSG_URL"] = url
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


@pytest.mark.parametrize("url", [BROKER_URL, None], ids=["rabbitmq", "memory"])
def test_hello_world(url: str | None) -> None:
    lines = run_example("hello_world", url)
    assert sorted(lines) == [" [x] Received 'Hello World!'", " [x] Sent 'Hello World!'"]


@pytest.mark.parametrize("url", [BROKER_URL, None], ids=["rabbitmq", "memory"])
def test_work_queues(url: str | None) -> None:
    tasks = example_constant("work_queues", "TASKS")
    lines = run_example("work_queues", url)
    for task in tasks:
        assert f" [x] Sent {task!r}" in lines
        received = [line for line in lines if line.endswith(f"Received {task!r}")]
        assert len(received) == 1, lines  # every task done once, by one worker
        assert any(line.endswith(f"Done {task!r}") for line in lines)
    assert lines[-1].startswith(f"All {len(tasks)} tasks done: ")
    # prefetch_count=1: both workers had a share
    assert "worker 1 did" in lines[-1]
    assert "worker 2 did" in lines[-1]


@pytest.mark.parametrize("url", [BROKER_URL, None], ids=["rabbitmq", "memory"])
def test_publish_subscribe(url: str | None) -> None:
    lines = run_example("publish_subscribe", url)
    for line in ["info: Hello World!", "warning: disk 80% full", "error: disk full"]:
        assert f" [x] Sent {line!r}" in lines
        assert f" [subscriber 1] {line}" in lines
        assert f" [subscriber 2] {line}" in lines
    assert lines[-1] == "Both subscribers got every line"


@pytest.mark.parametrize("url", [BROKER_URL, None], ids=["rabbitmq", "memory"])
def test_routing(url: str | None) -> None:
    lines = run_example("routing", url)
    errors_only = [line for line in lines if line.startswith(" [errors only] error:")]
    everything = [line for line in lines if line.startswith(" [everything] ") and ":" in line]
    assert errors_only == [
        " [errors only] error: 'Disk full'",
        " [errors only] error: 'Lost the database'",
    ]
    assert len([line for line in everything if "got its" not in line]) == 5
    assert " [errors only] got its 2 messages" in lines
    assert " [everything] got its 5 messages" in lines


@pytest.mark.parametrize("url", [BROKER_URL, None], ids=["rabbitmq", "memory"])
def test_topics(url: str | None) -> None:
    lines = run_example("topics", url)

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


@pytest.mark.parametrize("url", [BROKER_URL, None], ids=["rabbitmq", "memory"])
def test_rpc(url: str | None) -> None:
    lines = run_example("rpc", url)
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
    # The example configures no logging: Python prints trio_msg's one
    # warning, the loss, to stderr (and nothing else goes there).
    [warning] = err.splitlines()
    assert "lost (reviving): ConnectionForced" in warning
    assert any(line.startswith(" [!] Reconnected (incarnation 2)") for line in lines), lines
    _assert_received_all(lines, count)


# ------------------------------------------------------------- worker + publisher


class _Program:
    """An example program running in the background; a thread collects its
    stdout lines (``lines``), and ``wait_for`` waits, bounded, until they
    satisfy a condition."""

    def __init__(self, name: str, env: dict[str, str], *args: str) -> None:
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, condition: Any, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self.lines), timeout=TIMEOUT):
                raise AssertionError(f"timed out waiting for {what}: {self.lines}")

    def stop(self, sig: int) -> tuple[int, str]:
        """Send *sig*; return the exit status and stderr once it has exited."""
        self.proc.send_signal(sig)
        # Not communicate(): it would read stdout too, from under the reader.
        status = self.proc.wait(timeout=TIMEOUT)
        self._reader.join(TIMEOUT)
        assert self.proc.stderr is not None
        return status, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _queue_state(name: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue, or (-1, -1) while it does not exist."""
    import trio

    import trio_msg
    from trio_msg.errors import NotFound

    async def ask() -> tuple[int, int]:
        async with trio_msg.connect(BROKER_URL) as conn, conn.channel() as ch:
            try:
                ok = await ch.queue_declare(name, passive=True)
            except NotFound:
                return -1, -1
            return ok.message_count, ok.consumer_count

    return trio.run(ask)


def _poll(condition: Any, what: str) -> None:
    """Poll the broker until *condition* holds (bounded)."""
    import time

    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _done(lines: list[str]) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in lines if " Done " in line]


def test_worker_and_publisher(unique_name: str) -> None:
    """Two workers share what the publisher sends; SIGTERM stops one in the
    middle (its tasks in flight finish, the rest go back and the other
    worker does them), then the other: every task is done exactly once and
    nothing is left in the queue, acked or not."""
    import signal

    count = 60
    env = dict(os.environ, TRIO_MSG_URL=BROKER_URL, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TRIO_MSG_WORKER_QUEUE"] = unique_name
    workers = [
        _Program("worker", dict(env, WORKER_NAME=name, WORKER_CONCURRENCY="3"))
        for name in ("first", "second")
    ]
    try:
        _poll(lambda: _queue_state(unique_name)[1] == 2, "both workers to consume")
        publisher = subprocess.run(
            [sys.executable, str(EXAMPLES / "publisher.py"), str(count)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert publisher.returncode == 0, publisher.stderr
        assert publisher.stdout.splitlines() == [
            f" [x] Published {count}: {count} confirmed, 0 failed"
        ]
        first, second = workers
        first.wait_for(lambda lines: len(_done(lines)) >= 5, "the first worker to do some")
        first_status, first_err = first.stop(signal.SIGTERM)
        second.wait_for(
            lambda lines: len(set(_done(lines)) | set(_done(first.lines))) == count,
            "every task to be done",
        )
        second_status, second_err = second.stop(signal.SIGTERM)
        ready, consumers = _queue_state(unique_name)
    finally:
        for worker in workers:
            worker.kill()
        _delete_queue(unique_name)
    for status, err in [(first_status, first_err), (second_status, second_err)]:
        assert status == 0, err
        assert "received SIGTERM: stopping gracefully" in err
        assert "worker stopped: " in err
        assert "Traceback" not in err
    done = _done(first.lines) + _done(second.lines)
    duplicates = sorted(n for n in set(done) if done.count(n) > 1)
    assert not duplicates, f"done more than once: {duplicates}"
    assert sorted(done) == list(range(count))
    assert _done(second.lines)  # the broker shared the work
    assert first.lines[-1] == f" [first] Stopped after {len(_done(first.lines))} tasks"
    assert second.lines[-1] == f" [second] Stopped after {len(_done(second.lines))} tasks"
    # Every task done was acked, and nothing else is left (after the workers'
    # channels closed, an unacked message would be ready again).
    assert (ready, consumers) == (0, 0)


def _delete_queue(name: str) -> None:
    import trio

    import trio_msg

    async def delete() -> None:
        async with trio_msg.connect(BROKER_URL) as conn, conn.channel() as ch:
            await ch.queue_delete(name)

    trio.run(delete)


def test_worker_second_signal_cancels_what_runs(unique_name: str) -> None:
    """Tasks that would run for a minute: SIGTERM starts the graceful
    shutdown, SIGINT then cancels the handlers; their tasks (and the ones
    received ahead) are all back in the queue."""
    import signal

    env = dict(os.environ, TRIO_MSG_URL=BROKER_URL, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TRIO_MSG_WORKER_QUEUE"] = unique_name
    worker = _Program("worker", dict(env, WORKER_NAME="slow", WORKER_CONCURRENCY="2"))
    try:
        _poll(lambda: _queue_state(unique_name)[1] == 1, "the worker to consume")
        publisher = subprocess.run(
            [sys.executable, str(EXAMPLES / "publisher.py"), "6"],
            cwd=ROOT,
            env=dict(env, TASK_SECONDS="60"),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert publisher.returncode == 0, publisher.stderr
        worker.wait_for(lambda lines: len(lines) == 2, "two tasks to start")
        assert worker.proc.poll() is None
        worker.proc.send_signal(signal.SIGTERM)
        status, err = worker.stop(signal.SIGINT)
        ready, consumers = _queue_state(unique_name)
    finally:
        worker.kill()
        _delete_queue(unique_name)
    assert status == 0, err
    # (Which of the two the worker reads first is not defined: both were pending.)
    assert ": stopping gracefully" in err
    assert ": a second signal" in err
    assert "2 handler(s) still running after a second signal: cancelling them" in err
    assert "0 handled, 0 failed, 2 cut short and requeued, 2 received ahead" in err
    assert worker.lines == [
        " [slow] Received 0",
        " [slow] Received 1",
        " [slow] Stopped after 0 tasks",
    ]
    assert (ready, consumers) == (6, 0)
