"""The floor: the least a Python client can do for workload c (publish, wait
for the confirm, again), to show how much of a round trip is the broker's
and how much the client's.

Not a client anyone would use: the publish is encoded once with pamqp and
sent as it is; inbound frames are cut with pamqp; nothing is checked but
the confirm's delivery tag.  Two ways to wait:

* ``--backend blocking``: a blocking socket (``sendall``, ``recv``), as pika's
  BlockingConnection and kombu wait;
* ``--backend trio``: one trio task on a trio socket (``await send``,
  ``await recv``): the least an event loop client on trio can spend.
"""

from __future__ import annotations

import socket
from typing import Any

import trio
from pamqp import body as pbody
from pamqp import commands, frame, header

from benchmarks.clients._common import (
    CONTENT_ENCODING,
    CONTENT_TYPE,
    DELIVERY_MODE,
    HOST,
    PASSWORD,
    PORT,
    SMALL,
    USER,
    Check,
    emit,
    latency_summary,
    now,
    parse_args,
)

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def encode(channel: int, *methods: Any) -> bytes:
    return b"".join(frame.marshal(m, channel) for m in methods)


def message(queue: str, body: bytes) -> bytes:
    properties = commands.Basic.Properties(
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        delivery_mode=DELIVERY_MODE,
    )
    return encode(
        1,
        commands.Basic.Publish(exchange="", routing_key=queue),
        header.ContentHeader(0, len(body), properties),
        pbody.ContentBody(body),
    )


class Frames:
    """Cuts received bytes into pamqp frames; ``recv`` gives more bytes."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def take(self) -> Any | None:
        if len(self.buffer) < 7:
            return None
        size = int.from_bytes(self.buffer[3:7], "big") + 8
        if len(self.buffer) < size:
            return None
        _, _, value = frame.unmarshal(bytes(self.buffer[:size]))
        del self.buffer[:size]
        return value


# --- one protocol, two ways to wait -------------------------------------------------


class Blocking:
    def __init__(self) -> None:
        self.sock = socket.create_connection((HOST, PORT))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.frames = Frames()

    async def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    async def next_frame(self) -> Any:
        while (value := self.frames.take()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.frames.buffer += data
        return value


class Trio(Blocking):
    def __init__(self) -> None:
        super().__init__()
        self.tsock = trio.socket.from_stdlib_socket(self.sock)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await self.tsock.send(view) :]

    async def next_frame(self) -> Any:
        while (value := self.frames.take()) is None:
            data = await self.tsock.recv(65536)
            if not data:
                raise EOFError
            self.frames.buffer += data
        return value


async def expect(io: Blocking, kind: type) -> Any:
    while True:
        value = await io.next_frame()
        if isinstance(value, kind):
            return value


async def open_channel(io: Blocking) -> None:
    await io.send(PROTOCOL_HEADER)
    await expect(io, commands.Connection.Start)
    await io.send(
        encode(
            0,
            commands.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response=f"\0{USER}\0{PASSWORD}"
            ),
        )
    )
    tune = await expect(io, commands.Connection.Tune)
    await io.send(
        encode(
            0,
            commands.Connection.TuneOk(
                channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0
            ),
            commands.Connection.Open(virtual_host="/"),
        )
    )
    await expect(io, commands.Connection.OpenOk)
    await io.send(encode(1, commands.Channel.Open()))
    await expect(io, commands.Channel.OpenOk)


async def run(args: Any, io: Blocking) -> dict[str, Any]:
    await open_channel(io)
    q, n = args.queue, args.n
    result: dict[str, Any] = {}
    if args.workload == "c":
        await io.send(encode(1, commands.Confirm.Select()))
        await expect(io, commands.Confirm.SelectOk)
        publish = message(q, SMALL)
        lat = []
        t0 = now()
        for tag in range(1, n + 1):
            t = now()
            await io.send(publish)
            ack = await expect(io, commands.Basic.Ack)
            lat.append(now() - t)
            Check.equal(ack.delivery_tag, tag, "floor confirm")
        result["seconds"] = now() - t0
        result.update(latency_summary(lat))
    else:
        raise SystemExit(f"floor: no workload {args.workload}")
    return result


def main() -> None:
    args = parse_args(extra=True, backends=("blocking", "trio"))
    if args.backend == "blocking":
        coro = run(args, Blocking())
        try:
            coro.send(None)  # Blocking never suspends: this runs it to the end
        except StopIteration as stop:
            result = stop.value
        else:
            raise RuntimeError("the blocking floor yielded")
    else:
        result = trio.run(run, args, Trio())
    emit(f"floor[{args.backend}]", args, result)


if __name__ == "__main__":
    main()
