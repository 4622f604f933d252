"""``python -m trio_msg``: every command, end to end against the real broker.

The commands run as a user runs them (a subprocess, this checkout first on
the path); what they did is checked from the output and from the broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _broker import BROKER_URL

ROOT = Path(__file__).resolve().parents[2]


def trio_msg(
    *args: str, stdin: str | None = None, url: str | None = BROKER_URL
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TRIO_MSG_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "trio_msg", *args]
    if url is not None:
        command += ["--url", url]
    return subprocess.run(
        command, input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ok(*args: str, stdin: str | None = None) -> list[str]:
    proc = trio_msg(*args, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture
def queue(unique_name: str) -> str:
    yield unique_name
    trio_msg("delete", "queue", unique_name)


def test_publish_then_consume_round_trips_bodies_and_properties(queue: str) -> None:
    ok("publish", "--declare-queue", queue, "-k", queue, "-n", "3", "-H", "origin=cli", "héllo")
    lines = ok("consume", "--count", "3", "--json", queue)
    records = [json.loads(line) for line in lines]
    assert [r["body"] for r in records] == ["héllo"] * 3
    for r in records:
        assert r["routing_key"] == queue
        assert r["headers"] == {"origin": "cli"}
        assert r["properties"]["delivery_mode"] == 2
        assert r["properties"]["content_type"] == "text/plain"
    # consumed and acked: nothing is left
    assert trio_msg("get", queue).returncode == 5


def test_publish_reads_lines_from_stdin(queue: str) -> None:
    ok(
        "publish",
        "--declare-queue",
        queue,
        "-k",
        queue,
        "--transient",
        "-",
        stdin="one\ntwo\nthree\n",
    )
    assert ok("consume", "-n", "3", queue) == ["one", "two", "three"]


def test_get_and_requeue(queue: str) -> None:
    ok("declare", "queue", queue)
    ok("publish", "-k", queue, "--content-type", "application/json", '{"n": 1}')
    peek = json.loads(ok("get", "--requeue", "--json", queue)[0])
    assert peek["body"] == {"n": 1}
    assert peek["redelivered"] is False
    again = json.loads(ok("get", "--json", queue)[0])
    assert again["body"] == {"n": 1}
    assert again["redelivered"] is True  # it went back, and came again
    proc = trio_msg("get", queue)
    assert proc.returncode == 5
    assert "empty" in proc.stderr


def test_consume_requeue_leaves_the_messages(queue: str) -> None:
    ok("publish", "--declare-queue", queue, "-k", queue, "-n", "2", "x")
    assert ok("consume", "--requeue", "-n", "2", queue) == ["x", "x"]
    info = json.loads(ok("declare", "queue", "--passive", queue)[0])
    assert info["message_count"] == 2


def test_consume_timeout_before_count_exits_5(queue: str) -> None:
    ok("declare", "queue", queue)
    ok("publish", "-k", queue, "only")
    proc = trio_msg("consume", "-n", "2", "--timeout", "1", queue)
    assert proc.returncode == 5
    assert proc.stdout.splitlines() == ["only"]


def test_declare_bind_publish_through_exchange_purge_unbind_delete(queue: str) -> None:
    exchange = queue + ".x"
    try:
        ok("declare", "exchange", exchange, "--type", "topic", "--transient")
        info = json.loads(ok("declare", "queue", queue, "-a", "x-max-length=5")[0])
        assert info == {"queue": queue, "message_count": 0, "consumer_count": 0}
        ok("bind", "queue", queue, exchange, "-k", "a.*")
        ok("publish", "-e", exchange, "-k", "a.b", "-n", "7", "m")
        unroutable = trio_msg("publish", "-e", exchange, "-k", "b.c", "--mandatory", "m")
        assert unroutable.returncode == 6, unroutable.stderr
        # x-max-length=5 was read as the number 5: the queue kept five of seven
        assert json.loads(ok("purge", queue)[0]) == {"queue": queue, "purged": 5}
        ok("unbind", "queue", queue, exchange, "-k", "a.*")
        ok("publish", "-e", exchange, "-k", "a.b", "m")
        assert json.loads(ok("declare", "queue", "--passive", queue)[0])["message_count"] == 0
    finally:
        trio_msg("delete", "exchange", exchange)
    assert trio_msg("declare", "exchange", "--passive", exchange).returncode == 4


def test_delete_if_empty_refused_by_the_broker(queue: str) -> None:
    ok("publish", "--declare-queue", queue, "-k", queue, "x")
    proc = trio_msg("delete", "queue", "--if-empty", queue)
    assert proc.returncode == 4
    assert "406" in proc.stderr
    assert json.loads(ok("delete", "queue", queue)[0]) == {"queue": queue, "deleted_messages": 1}


def test_publish_to_a_missing_exchange_fails(unique_name: str) -> None:
    proc = trio_msg("publish", "-e", unique_name, "-k", "k", "body")
    assert proc.returncode == 4
    assert "404" in proc.stderr


def test_no_broker_exits_3_and_never_shows_the_password() -> None:
    proc = trio_msg("get", "q", url="amqp://guest:s3cr3t-pw@127.0.0.1:1//")
    assert proc.returncode == 3
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout


def test_wrong_password_exits_3_and_never_shows_it() -> None:
    host = BROKER_URL.split("@", 1)[1]
    proc = trio_msg("get", "q", url=f"amqp://guest:s3cr3t-pw@{host}")
    assert proc.returncode == 3
    assert "403" in proc.stderr
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout


def test_url_from_the_environment() -> None:
    env_url_proc = subprocess.run(
        [sys.executable, "-m", "trio_msg", "declare", "queue", "--passive", "amq.no.such.q"],
        env=dict(os.environ, TRIO_MSG_URL="amqp://guest:guest@127.0.0.1:1//", PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert env_url_proc.returncode == 3  # it went to the (closed) port the variable names


def test_bench_reports_rates() -> None:
    figures = json.loads(ok("bench", "-n", "500", "--size", "10", "--json")[0])
    assert figures["messages"] == 500
    assert figures["publish_per_second"] > 0
    assert figures["consume_per_second"] > 0


@pytest.mark.parametrize(
    "command",
    ["publish", "consume", "get", "declare", "bind", "unbind", "purge", "delete", "bench"],
)
def test_help_for_each_command(command: str) -> None:
    proc = trio_msg(command, "--help", url=None)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"usage: trio-msg {command}")


def test_bad_usage_exits_2() -> None:
    assert trio_msg("publish", "--count", "0", "x").returncode == 2
    assert trio_msg("frobnicate", url=None).returncode == 2


def test_broker_command_serves_other_commands() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    server = subprocess.Popen(
        [sys.executable, "-m", "trio_msg", "broker", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1])
        url = f"amqp://guest:guest@127.0.0.1:{port}//"
        sent = trio_msg("publish", "--declare-queue", "q", "-k", "q", "-n", "2", "hi", url=url)
        assert sent.returncode == 0, sent.stderr
        got = trio_msg("consume", "-n", "2", "q", url=url)
        assert got.returncode == 0, got.stderr
        assert got.stdout.splitlines() == ["hi", "hi"]
    finally:
        server.terminate()
        server.wait(10)
