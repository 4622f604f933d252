"""The embedded broker as the integration tests' broker (``TRIO_MSG_TEST_BROKER=memory``).

One broker for the whole run, ``memory://trio_msg-tests``, shared as the
RabbitMQ node is (tests use unique names and delete what they make).  Tests
reach it two ways:

* ``broker_url`` is its ``memory://`` URL: the client's in-memory transport,
  served in the connecting task's own event loop;
* ``BROKER_HOST:BROKER_PORT`` (and ``BROKER_URL``) is a TCP listener serving
  the same broker, for what needs a socket: the fault-injecting proxy, pika
  and kombu, example programs and the command line in subprocesses.  The
  listening socket is bound once, when this module is imported; each test
  serves it from its own event loop (``serving()``) or, for a synchronous
  test, from an event loop in a thread of its own (``serving_in_a_thread()``).

The broker is never touched from two threads at once: an async test serves
every connection in its own loop, a synchronous one in its thread's loop.
The ``rabbitmqctl`` stand-ins (``list_connections``, ``close_connection_*``,
``memory_alarm``...) run their work where the broker lives: directly when
called from the loop, through ``anyio.from_thread`` from a worker thread
(``anyio.to_thread.run_sync(close_connection_by_name, ...)``), through the
portal from a synchronous test.
"""

from __future__ import annotations

import contextvars
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import sniffio
from anyio.abc import SocketAttribute

from trio_msg._broker import get_broker
from trio_msg._broker.driver import BrokerServer
from trio_msg._broker.model import CONNECTION_FORCED
from trio_msg._broker.server import ServerConnection
from trio_msg.testing import MemoryBroker

__all__ = [
    "BROKER_HOST",
    "BROKER_PORT",
    "MEMORY_URL",
    "broker",
    "call",
    "serving",
    "serving_in_a_thread",
]

T = TypeVar("T")

NAME = "trio_msg-tests"
MEMORY_URL = f"memory://{NAME}"

_LISTENING = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_LISTENING.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
_LISTENING.bind(("127.0.0.1", 0))
_LISTENING.listen(128)
BROKER_HOST = "127.0.0.1"
BROKER_PORT: int = _LISTENING.getsockname()[1]

# The client port of each connection served over TCP (rabbitmqctl's peer_port).
_PEER_PORT: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "trio_msg_test_peer_port", default=None
)


class _Connections(list[ServerConnection]):
    """The server's list of connections, noting the TCP client port of each
    as the driver adds it (``serve_stream`` runs in the handler's context)."""

    def __init__(self, items: list[ServerConnection]) -> None:
        super().__init__(items)
        self.peer_port: dict[int, int | None] = {}

    def append(self, conn: ServerConnection) -> None:
        self.peer_port[id(conn)] = _PEER_PORT.get()
        super().append(conn)

    def remove(self, conn: ServerConnection) -> None:
        self.peer_port.pop(id(conn), None)
        super().remove(conn)


def _server() -> BrokerServer:
    server = get_broker(NAME)
    if not isinstance(server.connections, _Connections):
        server.connections = _Connections(server.connections)
        # rabbitmqctl add_user & co. change this dict (new connections copy it).
        server.users = {"guest": "guest"}
    return server


_server()
broker = MemoryBroker(NAME)


# --------------------------------------------------------------------- serving


async def _handle(stream: anyio.abc.SocketStream) -> None:
    _PEER_PORT.set(stream.extra(SocketAttribute.remote_port, None))
    await _server().serve_stream(stream)


async def serving(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the shared listening socket in this event loop until cancelled
    (the socket itself stays open for the next test)."""
    listener = await anyio.abc.SocketListener.from_socket(_LISTENING.dup())
    async with listener:
        task_status.started()
        await listener.serve(_handle)


_portal: anyio.from_thread.BlockingPortal | None = None


@contextmanager
def serving_in_a_thread() -> Iterator[None]:
    """Serve the listening socket from an event loop in a thread of its own,
    for a synchronous test (its clients are subprocesses, pika, or
    ``trio.run``s of its own)."""
    global _portal
    with anyio.from_thread.start_blocking_portal("trio") as portal:
        future, _ = portal.start_task(serving)
        _portal = portal
        try:
            yield
        finally:
            _portal = None
            future.cancel()


def call(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in the thread whose event loop serves the broker."""
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        pass
    else:
        return fn(*args)  # in the event loop's own thread
    if _portal is not None:
        return _portal.call(fn, *args)
    try:
        return anyio.from_thread.run_sync(fn, *args)
    except RuntimeError:
        # Not an anyio worker thread and no loop: nothing is being served.
        return fn(*args)


# ------------------------------------------------------ rabbitmqctl stand-ins


def _connection_name(conn: ServerConnection) -> str | None:
    value = conn.client_properties.get("connection_name")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _listing() -> list[tuple[dict[str, Any], ServerConnection]]:
    server = _server()
    peers = server.connections.peer_port if isinstance(server.connections, _Connections) else {}
    out = []
    for conn in list(server.connections):
        if conn.closed:
            continue
        port = peers.get(id(conn))
        name = _connection_name(conn)
        out.append(
            (
                {
                    "pid": f"<embedded.{id(conn)}>",
                    "name": f"127.0.0.1:{port} -> {BROKER_HOST}:{BROKER_PORT}"
                    if port is not None
                    else MEMORY_URL,
                    "peer_port": port,
                    "connection_name": name,
                    "user": conn.user,
                    "client_properties": repr(conn.client_properties),
                },
                conn,
            )
        )
    return out


def list_connections() -> list[dict[str, Any]]:
    """The open connections, described as ``_broker.list_connections`` does."""
    return [info for info, _ in call(_listing)]


def close_matching(
    what: str, predicate: Callable[[dict[str, Any]], bool], reason: str, wait: float
) -> list[dict[str, Any]]:
    """Force-close (320) the connections ``predicate`` picks, waiting up to
    ``wait`` seconds for one to appear; ``LookupError`` if none does."""

    def close_now() -> list[dict[str, Any]]:
        matches = [(info, conn) for info, conn in _listing() if predicate(info)]
        for _, conn in matches:
            conn.server_close(
                CONNECTION_FORCED, f"broker forced connection closure with reason '{reason}'"
            )
        return [info for info, _ in matches]

    deadline = time.monotonic() + wait
    while True:
        closed = call(close_now)
        if closed:
            return closed
        if time.monotonic() >= deadline:
            raise LookupError(f"no broker connection with {what} appeared within {wait} s")
        time.sleep(0.05)


def set_alarm(on: bool) -> None:
    call(broker.block if on else broker.unblock)


def alarm_text() -> str:
    return call(lambda: _server().broker.alarm or "")


def rabbitmqctl(*args: str) -> str:
    """The few user-management commands the tests use, on the embedded
    broker's user table; anything else raises ``NotImplementedError``."""
    server = _server()
    users = server.users
    assert users is not None
    match args:
        case ("add_user", user, password) | ("change_password", user, password):
            users[user] = password
        case ("delete_user", user):
            users.pop(user, None)
        case ("set_permissions", *_):
            pass  # the embedded broker lets every user do everything
        case _:
            raise NotImplementedError(f"rabbitmqctl {' '.join(args)}: no embedded equivalent")
    return ""
