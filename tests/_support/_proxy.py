"""A TCP proxy (anyio: trio and asyncio) for real network faults between client and broker.

    async with tcp_proxy(BROKER_HOST, BROKER_PORT) as proxy:
        conn = connect(f"amqp://guest:guest@127.0.0.1:{proxy.port}//")
        proxy.stall()      # heartbeats stop flowing, sockets stay open
        proxy.cut()        # every live connection closed abruptly, both sides

Faults (``stall``, ``drop_client_to_server``, ``drop_server_to_client``,
``truncate_after``, ``refuse_new``) stay in force, for live and new
connections, until undone (``resume``, ``heal``). ``cut`` acts once, on the
connections live at the time, and so does ``half_close`` (one direction
only: an EOF that way); ``refuse_next(n)`` refuses the next ``n``
connections and then accepts again.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

__all__ = ["TcpProxy", "tcp_proxy"]

_CHUNK = 65536
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection to the target."""

    client: anyio.abc.SocketStream
    server: anyio.abc.SocketStream | None = None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    upstream_port: int | None = None
    # each direction's pump ("c2s", "s2c"), to close one way only
    halves: dict[str, anyio.CancelScope] = field(default_factory=dict)
    # bytes still allowed server->client (client->server) before a cut; None: unlimited
    s2c_budget: int | None = None
    c2s_budget: int | None = None
    reset: bool = False

    def cut(self, *, reset: bool) -> None:
        self.reset = self.reset or reset
        self.scope.cancel()


class TcpProxy:
    """State and controls of a running proxy; build it with ``tcp_proxy()``."""

    def __init__(self, target_host: str, target_port: int, *, connect_timeout: float) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self.host = "127.0.0.1"
        self.port = 0
        #: forwarded byte counts (totals over all connections)
        self.bytes_client_to_server = 0
        self.bytes_server_to_client = 0
        #: client->server bytes read and thrown away by ``drop_client_to_server``
        self.bytes_dropped = 0
        #: server->client bytes read and thrown away by ``drop_server_to_client``
        self.bytes_dropped_s2c = 0
        #: connections accepted so far (including refused ones)
        self.accepted = 0
        #: connections accepted and closed at once by ``refuse_new``
        self.refused = 0
        #: connections cut by ``cut`` or ``truncate_after``
        self.cuts = 0
        #: directions closed by ``half_close``
        self.half_closes = 0
        #: unexpected errors inside the proxy's tasks (tests may assert it is empty)
        self.errors: list[BaseException] = []
        self._links: set[_Link] = set()
        self._flowing = anyio.Event()
        self._flowing.set()
        self._dropping_c2s = False
        self._dropping_s2c = False
        self._truncate: int | None = None
        self._truncate_c2s: int | None = None
        self._refusing = False
        self._refuse_count = 0
        self._changed = anyio.Event()
        self._close_timeout = 5.0

    # ------------------------------------------------------------------ state

    @property
    def connections(self) -> int:
        """Client connections currently live through the proxy."""
        return len(self._links)

    @property
    def upstream_ports(self) -> list[int]:
        """Local ports of the live proxy->target connections (what the broker lists
        as ``peer_port``; use with ``close_connection_by_port``)."""
        return [link.upstream_port for link in self._links if link.upstream_port is not None]

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    @property
    def url_host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        """Wait until exactly ``n`` connections are live (``TimeoutError`` after ``timeout``)."""
        with anyio.fail_after(timeout):
            while len(self._links) != n:
                await self._changed.wait()

    # --------------------------------------------------------------- controls

    def cut(self, *, reset: bool = False) -> int:
        """Abruptly close every live connection, on both sides; returns how many.

        ``reset=True`` closes with a TCP RST (SO_LINGER 0) instead of a FIN.
        New connections are still accepted afterwards.
        """
        links = list(self._links)
        for link in links:
            link.cut(reset=reset)
        return len(links)

    def half_close(self, *, client_to_server: bool) -> int:
        """Cut one way: stop forwarding in one direction of every live connection
        and send an EOF that way; the other direction keeps flowing (until the
        peer, told of the EOF, closes).  Returns how many connections."""
        direction = "c2s" if client_to_server else "s2c"
        links = [link for link in self._links if direction in link.halves]
        for link in links:
            link.halves[direction].cancel()
        self.half_closes += len(links)
        return len(links)

    def stall(self) -> None:
        """Stop forwarding in both directions; sockets stay open, data waits in buffers."""
        if self._flowing.is_set():
            self._flowing = anyio.Event()

    def resume(self) -> None:
        """Undo ``stall``: pending and new data flows again."""
        self._flowing.set()

    def drop_client_to_server(self, enabled: bool = True) -> None:
        """One-way loss: keep reading what the client sends but discard it.

        The bytes are gone for good, mid-stream: unlike a real loss (TCP
        retransmits), a connection that lived through a drop may have lost
        whole frames without either side noticing.  Lift a drop after the
        connection was declared dead, or ``cut()`` it when healing."""
        self._dropping_c2s = enabled

    def drop_server_to_client(self, enabled: bool = True) -> None:
        """One-way loss the other way: keep reading what the server sends but
        discard it (see ``drop_client_to_server`` about healing)."""
        self._dropping_s2c = enabled

    def truncate_after(
        self, n_bytes: int | None, *, client_to_server: bool = False, live: bool = True
    ) -> None:
        """Forward only the next ``n_bytes`` server->client on each connection, then cut it.

        Applies to live connections (counting from now; not with
        ``live=False``) and to each new one (from its start) until
        ``truncate_after(None)`` or ``heal()``.  With ``client_to_server=True``
        it counts (and cuts) what the client sends instead.
        """
        if n_bytes is not None and n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")
        if client_to_server:
            self._truncate_c2s = n_bytes
        else:
            self._truncate = n_bytes
        for link in list(self._links) if live else []:
            if client_to_server:
                link.c2s_budget = n_bytes
            else:
                link.s2c_budget = n_bytes
            if n_bytes == 0:
                self.cuts += 1
                link.cut(reset=False)

    def refuse_new(self, enabled: bool = True) -> None:
        """Accept new connections and close them at once (live ones are untouched)."""
        self._refusing = enabled
        if not enabled:
            self._refuse_count = 0

    def refuse_next(self, n: int) -> None:
        """Refuse (accept and close at once) the next ``n`` new connections, then
        accept again: a broker that comes back after a few reconnect attempts."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._refuse_count = n

    def heal(self) -> None:
        """Undo every standing fault: resume, stop dropping, truncating and refusing."""
        self.resume()
        self._dropping_c2s = False
        self._dropping_s2c = False
        self._truncate = None
        self._truncate_c2s = None
        for link in list(self._links):
            link.s2c_budget = None
            link.c2s_budget = None
        self._refusing = False
        self._refuse_count = 0

    # --------------------------------------------------------------- internals

    async def _serve(self, listener: anyio.abc.SocketListener) -> None:
        async with listener, anyio.create_task_group() as tg:
            while True:
                try:
                    client = await listener.accept()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
                except OSError as exc:  # e.g. EMFILE: note it, keep serving
                    self.errors.append(exc)
                    await anyio.sleep(0.05)
                    continue
                self.accepted += 1
                refuse = self._refusing or self._refuse_count > 0
                if self._refuse_count > 0:
                    self._refuse_count -= 1
                if refuse:
                    self.refused += 1
                    await _close(client, reset=False)
                    continue
                tg.start_soon(self._handle, client)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        link = _Link(client=client, s2c_budget=self._truncate, c2s_budget=self._truncate_c2s)
        self._links.add(link)
        self._notify()
        try:
            with link.scope:
                if link.s2c_budget == 0 or link.c2s_budget == 0:
                    self.cuts += 1
                    link.scope.cancel()
                with anyio.fail_after(self.connect_timeout):
                    link.server = await anyio.connect_tcp(self.target_host, self.target_port)
                link.upstream_port = link.server.extra(SocketAttribute.local_port)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, link, self._pump_c2s, "c2s")
                    tg.start_soon(self._pump, link, self._pump_s2c, "s2c")
        except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the target is unreachable or a side went away: just close both
        except Exception as exc:  # never let a link take the proxy (and the test) down
            self.errors.append(exc)
        finally:
            self._links.discard(link)
            self._notify()
            with anyio.move_on_after(self._close_timeout, shield=True):
                await _close(client, reset=link.reset)
                if link.server is not None:
                    await _close(link.server, reset=link.reset)

    async def _pump(
        self, link: _Link, pump: Callable[[_Link], Awaitable[None]], direction: str
    ) -> None:
        half = link.halves[direction] = anyio.CancelScope()
        try:
            with half:
                await pump(link)
            if half.cancel_called:  # half_close(): this way only
                assert link.server is not None
                await _send_eof(link.server if direction == "c2s" else link.client)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            link.scope.cancel()  # one side went away: close both
        except Exception as exc:
            self.errors.append(exc)
            link.scope.cancel()

    async def _wait_flowing(self) -> None:
        while not self._flowing.is_set():
            await self._flowing.wait()

    async def _pump_c2s(self, link: _Link) -> None:
        assert link.server is not None
        src, dst = link.client, link.server
        while True:
            await self._wait_flowing()
            try:
                data = await src.receive(_CHUNK)
            except anyio.EndOfStream:
                await _send_eof(dst)
                return
            await self._wait_flowing()  # stalled while we were reading: hold it
            if self._dropping_c2s:
                self.bytes_dropped += len(data)
                continue
            budget = link.c2s_budget
            if budget is not None and len(data) >= budget:
                if budget:
                    await dst.send(data[:budget])
                    self.bytes_client_to_server += budget
                self.cuts += 1
                link.c2s_budget = 0
                link.scope.cancel()
                return
            if budget is not None:
                link.c2s_budget = budget - len(data)
            await dst.send(data)
            self.bytes_client_to_server += len(data)

    async def _pump_s2c(self, link: _Link) -> None:
        assert link.server is not None
        src, dst = link.server, link.client
        while True:
            await self._wait_flowing()
            try:
                data = await src.receive(_CHUNK)
            except anyio.EndOfStream:
                await _send_eof(dst)
                return
            await self._wait_flowing()
            if self._dropping_s2c:
                self.bytes_dropped_s2c += len(data)
                continue
            budget = link.s2c_budget
            if budget is not None and len(data) >= budget:
                if budget:
                    await dst.send(data[:budget])
                    self.bytes_server_to_client += budget
                self.cuts += 1
                link.s2c_budget = 0
                link.scope.cancel()
                return
            if budget is not None:
                link.s2c_budget = budget - len(data)
            await dst.send(data)
            self.bytes_server_to_client += len(data)


async def _send_eof(stream: anyio.abc.SocketStream) -> None:
    try:
        await stream.send_eof()
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


async def _close(stream: anyio.abc.SocketStream, *, reset: bool) -> None:
    if reset:
        try:
            sock = stream.extra(SocketAttribute.raw_socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except (OSError, anyio.TypedAttributeLookupError):
            pass
    try:
        await stream.aclose()
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


@asynccontextmanager
async def tcp_proxy(
    target_host: str,
    target_port: int,
    *,
    listen_host: str = "127.0.0.1",
    connect_timeout: float = 5.0,
    close_timeout: float = 5.0,
) -> AsyncIterator[TcpProxy]:
    """Run a proxy to target_host:target_port on ``listen_host``, a free port.

    On exit every connection is closed and every task ends, within
    ``close_timeout`` seconds. Exceptions from the body propagate unchanged
    (not wrapped in an ExceptionGroup).
    """
    proxy = TcpProxy(target_host, target_port, connect_timeout=connect_timeout)
    multi = await anyio.create_tcp_listener(local_host=listen_host, local_port=0)
    listener, *extra = multi.listeners
    assert isinstance(listener, anyio.abc.SocketListener)
    for other in extra:  # only one for an address literal; be safe for names
        await other.aclose()
    proxy.host = listen_host
    proxy.port = listener.extra(SocketAttribute.local_port)
    body_exc: BaseException | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(proxy._serve, listener)
        try:
            yield proxy
        except BaseException as exc:
            # Re-raised below, outside the task group, so it is not wrapped.
            body_exc = exc
        finally:
            proxy._close_timeout = close_timeout
            tg.cancel_scope.cancel()
    if body_exc is not None:
        raise body_exc
