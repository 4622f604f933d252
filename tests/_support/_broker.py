"""The real broker the integration tests talk to, and ways to hurt it on purpose.

Everything here is synchronous (sockets and ``subprocess`` with timeouts); async
tests call the ``rabbitmqctl`` helpers through ``anyio.to_thread.run_sync``.

Never stop, restart or reconfigure the shared node from a test, and always
restore the memory watermark.  Every ``rabbitmqctl`` helper takes ``node=``
(a node name for ``rabbitmqctl -n``): tests/faults points them at its private
node (``_node.PrivateNode``), which it may hurt as it likes.

``TRIO_MSG_TEST_BROKER=memory`` puts the embedded broker in RabbitMQ's place
(tests/_support/_embedded.py): ``BROKER_HOST:BROKER_PORT`` is then its TCP
listener, ``MEMORY_URL`` its ``memory://`` URL, and the ``rabbitmqctl``
helpers act on it through ``trio_msg.testing``-style scripting.  Their
``node=`` (a private RabbitMQ node) has no equivalent there and is an error.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "BROKER_HOST",
    "BROKER_PORT",
    "BROKER_URL",
    "DEFAULT_MEMORY_WATERMARK",
    "EMBEDDED",
    "MEMORY_URL",
    "BrokerUnavailable",
    "RabbitmqctlError",
    "alarms",
    "check_broker",
    "close_connection_by_name",
    "close_connection_by_port",
    "list_connections",
    "memory_alarm",
    "wait_alarm_cleared",
]


def _parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(
            f"TRIO_MSG_TEST_BROKER must be 'host:port' or 'memory', got {value!r}"
        )
    return host.strip("[]"), int(port)


#: The embedded broker stands in for RabbitMQ (``TRIO_MSG_TEST_BROKER=memory``).
EMBEDDED = os.environ.get("TRIO_MSG_TEST_BROKER", "").strip() == "memory"

if EMBEDDED:
    import _embedded

    BROKER_HOST, BROKER_PORT = _embedded.BROKER_HOST, _embedded.BROKER_PORT
    BROKER_URL = f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}//"
    #: What ``broker_url`` gives the tests: the in-memory transport.
    MEMORY_URL: str | None = _embedded.MEMORY_URL
else:
    BROKER_HOST, BROKER_PORT = _parse_hostport(
        os.environ.get("TRIO_MSG_TEST_BROKER", "127.0.0.1:5672")
    )
    BROKER_URL = os.environ.get(
        "TRIO_MSG_TEST_URL", f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}//"
    )
    MEMORY_URL = None

#: What ``memory_alarm()`` restores (the node's configured default).
DEFAULT_MEMORY_WATERMARK = "0.4"

#: The AMQP 0-9-1 protocol header a client opens with.
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

_HOW_TO_START = """\
Start one, then run the tests again:
  * Debian/Ubuntu:  apt-get install -y rabbitmq-server && rabbitmq-server -detached
                    (then `rabbitmqctl await_startup` waits until it is up)
  * container:      docker run -d -p 5672:5672 rabbitmq:3
  * elsewhere:      TRIO_MSG_TEST_BROKER=host:port (and TRIO_MSG_TEST_URL=amqp://user:pass@host:port/vhost)
  * none at all:    TRIO_MSG_TEST_BROKER=memory runs what does not need RabbitMQ itself
                    against trio_msg's embedded broker
The rabbitmqctl-based tests (forced closes, resource alarms) also need `rabbitmqctl`
for that node on the PATH."""


class BrokerUnavailable(RuntimeError):
    """No AMQP 0-9-1 broker answers at BROKER_HOST:BROKER_PORT."""


class RabbitmqctlError(RuntimeError):
    """A ``rabbitmqctl`` / ``rabbitmq-diagnostics`` call failed or timed out."""


# --------------------------------------------------------------------------- probe


def check_broker(host: str = BROKER_HOST, port: int = BROKER_PORT, *, timeout: float = 5.0) -> None:
    """Check that a real AMQP 0-9-1 broker answers at host:port.

    Sends the protocol header and expects the 7-byte header of a method frame
    (type 1) on channel 0 back: the broker's ``Connection.Start``. Raises
    ``BrokerUnavailable`` with instructions on how to start one otherwise.
    """
    where = f"{host}:{port}"

    def fail(why: str) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"No AMQP 0-9-1 broker at {where} (from TRIO_MSG_TEST_BROKER, default "
            f"127.0.0.1:5672): {why}.\nThe integration tests need a real RabbitMQ.\n"
            + _HOW_TO_START
        )

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise fail(f"cannot connect ({exc})") from exc
    try:
        deadline = time.monotonic() + timeout
        sock.sendall(PROTOCOL_HEADER)
        reply = b""
        while len(reply) < 7:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise fail(f"no answer to the protocol header within {timeout} s")
            sock.settimeout(remaining)
            chunk = sock.recv(7 - len(reply))
            if not chunk:
                raise fail(f"the peer closed the connection after {reply!r}")
            reply += chunk
    except TimeoutError as exc:
        raise fail(f"no answer to the protocol header within {timeout} s") from exc
    except OSError as exc:
        raise fail(f"I/O error during the probe ({exc})") from exc
    finally:
        sock.close()
    if reply[0] != 1 or reply[1:3] != b"\x00\x00":
        raise fail(
            f"the reply {reply!r} is not a method frame on channel 0 "
            "(not an AMQP 0-9-1 broker, or a different protocol version)"
        )


# --------------------------------------------------------------------- rabbitmqctl

RABBITMQCTL = os.environ.get("TRIO_MSG_RABBITMQCTL", "rabbitmqctl")
RABBITMQ_DIAGNOSTICS = os.environ.get("TRIO_MSG_RABBITMQ_DIAGNOSTICS", "rabbitmq-diagnostics")


def _run(tool: str, *args: str, timeout: float = 30.0, node: str | None = None) -> str:
    if node is not None:
        args = ("-n", node, *args)
    if shutil.which(tool) is None:
        raise RabbitmqctlError(
            f"{tool!r} is not on the PATH: the forced-close and alarm helpers need the "
            "RabbitMQ CLI tools of the broker under test"
        )
    cmd = [tool, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RabbitmqctlError(f"{' '.join(cmd)!r} timed out after {timeout} s") from exc
    if proc.returncode != 0:
        raise RabbitmqctlError(
            f"{' '.join(cmd)!r} exited with {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout


def _no_node(node: str | None) -> None:
    if EMBEDDED and node is not None:
        raise RabbitmqctlError(f"node {node!r}: the embedded broker has no private nodes")


def rabbitmqctl(*args: str, timeout: float = 30.0, node: str | None = None) -> str:
    """Run ``rabbitmqctl [-n NODE] ARGS`` and return its stdout (raises ``RabbitmqctlError``).

    Embedded: the user commands (``add_user``, ``change_password``,
    ``delete_user``, ``set_permissions``) act on the broker's user table;
    any other command raises ``RabbitmqctlError``."""
    if EMBEDDED:
        _no_node(node)
        try:
            return _embedded.rabbitmqctl(*args)
        except NotImplementedError as exc:
            raise RabbitmqctlError(str(exc)) from None
    return _run(RABBITMQCTL, *args, timeout=timeout, node=node)


_LIST_FIELDS = ("pid", "name", "peer_port", "client_properties", "user")

# In rabbitmqctl's table output client_properties looks like
# [{"product","Pika Python Client Library"},...,{"connection_name","my name"}]
# with strings in double quotes and `"` / `\` escaped by a backslash.
_CONNECTION_NAME_RE = re.compile(r'\{"connection_name","((?:[^"\\]|\\.)*)"\}')
_ESCAPE_RE = re.compile(r"\\(.)")


def _connection_name(client_properties: str) -> str | None:
    match = _CONNECTION_NAME_RE.search(client_properties)
    if match is None:
        return None
    return _ESCAPE_RE.sub(r"\1", match.group(1))


def list_connections(*, timeout: float = 30.0, node: str | None = None) -> list[dict[str, Any]]:
    """The broker's client connections, as ``rabbitmqctl list_connections`` sees them.

    Each dict has ``pid`` (str, what ``close_connection`` takes), ``name`` (str,
    "client addr:port -> server addr:port"), ``peer_port`` (int: the client's
    local port), ``connection_name`` (str or None, from client_properties),
    ``user`` (str) and ``client_properties`` (the raw Erlang-ish text).
    Embedded, ``peer_port`` is None for a ``memory://`` connection.
    """
    if EMBEDDED:
        _no_node(node)
        return _embedded.list_connections()
    out = rabbitmqctl(
        "list_connections", "-q", "--no-table-headers", *_LIST_FIELDS, timeout=timeout, node=node
    )
    result: list[dict[str, Any]] = []
    for line in out.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < len(_LIST_FIELDS):
            continue
        pid, name, peer_port, *props, user = parts
        raw_props = "\t".join(props)
        result.append(
            {
                "pid": pid,
                "name": name,
                "peer_port": int(peer_port) if peer_port.isdigit() else None,
                "connection_name": _connection_name(raw_props),
                "user": user,
                "client_properties": raw_props,
            }
        )
    return result


def _close_matching(
    what: str,
    predicate: Any,
    reason: str,
    wait: float,
    node: str | None,
) -> list[dict[str, Any]]:
    if EMBEDDED:
        _no_node(node)
        return _embedded.close_matching(what, predicate, reason, wait)
    deadline = time.monotonic() + wait
    while True:
        matches = [c for c in list_connections(node=node) if predicate(c)]
        if matches:
            break
        if time.monotonic() >= deadline:
            raise LookupError(f"no broker connection with {what} appeared within {wait} s")
        time.sleep(0.2)
    for conn in matches:
        try:
            rabbitmqctl("close_connection", conn["pid"], reason, node=node)
        except RabbitmqctlError:
            # It may have gone away on its own between listing and closing.
            if any(c["pid"] == conn["pid"] for c in list_connections(node=node)):
                raise
    return matches


def close_connection_by_name(
    connection_name: str,
    reason: str = "closed by trio_msg test",
    *,
    wait: float = 5.0,
    node: str | None = None,
) -> list[dict[str, Any]]:
    """Force-close (320 CONNECTION_FORCED) the connection(s) with this connection_name.

    Retries the listing for up to ``wait`` seconds (a fresh connection takes a
    moment to be listed); raises ``LookupError`` if none shows up. Returns the
    matched connections as ``list_connections`` describes them.
    """

    def predicate(c: dict[str, Any]) -> bool:
        if c["connection_name"] is not None:
            return bool(c["connection_name"] == connection_name)
        return f'"{connection_name}"' in c["client_properties"]

    return _close_matching(f"connection_name {connection_name!r}", predicate, reason, wait, node)


def close_connection_by_port(
    port: int,
    reason: str = "closed by trio_msg test",
    *,
    wait: float = 5.0,
    node: str | None = None,
) -> list[dict[str, Any]]:
    """Force-close the connection whose client side uses local port ``port``.

    Through a proxy that is the proxy's upstream port (``TcpProxy.upstream_ports``),
    not the client's own.
    """
    return _close_matching(
        f"peer port {port}", lambda c: c["peer_port"] == port, reason, wait, node
    )


# ------------------------------------------------------------------------- alarms


def alarms(*, timeout: float = 30.0, node: str | None = None) -> str:
    """The text of ``rabbitmq-diagnostics -q alarms`` (empty string when clear)."""
    if EMBEDDED:
        _no_node(node)
        return _embedded.alarm_text()
    out = _run(RABBITMQ_DIAGNOSTICS, "-q", "alarms", timeout=timeout, node=node).strip()
    if not out or "no alarms" in out:
        return ""
    return out


def _wait_alarms(want_clear: bool, timeout: float, node: str | None = None) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = alarms(node=node)
        if (text == "") == want_clear:
            return text
        if time.monotonic() >= deadline:
            state = "clear" if want_clear else "raised"
            raise TimeoutError(f"broker alarms not {state} after {timeout} s: {text!r}")
        time.sleep(0.2)


def wait_alarm_cleared(timeout: float = 15.0, *, node: str | None = None) -> None:
    """Poll ``rabbitmq-diagnostics -q alarms`` until the node reports none."""
    _wait_alarms(True, timeout, node)


@contextmanager
def memory_alarm(
    *, wait_raised: bool = True, timeout: float = 15.0, node: str | None = None
) -> Iterator[None]:
    """Raise a node-wide memory alarm for the duration of the block.

    ``set_vm_memory_high_watermark 0``; on exit, ALWAYS (finally) restores
    ``DEFAULT_MEMORY_WATERMARK`` and waits until the alarm has cleared. With
    ``wait_raised`` the block starts only once the alarm is reported.
    """
    if EMBEDDED:
        _no_node(node)
        _embedded.set_alarm(True)
        try:
            yield
        finally:
            _embedded.set_alarm(False)
        return
    try:
        rabbitmqctl("set_vm_memory_high_watermark", "0", timeout=timeout, node=node)
        if wait_raised:
            _wait_alarms(False, timeout, node)
        yield
    finally:
        _restore_watermark(timeout, node)
        wait_alarm_cleared(timeout, node=node)


def _restore_watermark(timeout: float, node: str | None = None) -> None:
    # Alarms are node-wide: one left in force breaks every later test, so retry.
    for attempt in range(3):
        try:
            rabbitmqctl(
                "set_vm_memory_high_watermark", DEFAULT_MEMORY_WATERMARK, timeout=timeout, node=node
            )
            return
        except RabbitmqctlError:
            if attempt == 2:
                raise
            time.sleep(1)
