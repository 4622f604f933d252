"""The floor: the least a Python client can do for workloads c (publish, wait
for the confirm, again) and e (RPC: a request, then its reply, from a floor
server), to show how much of a round trip is the broker's and how much the
client's.

Not a client anyone would use.  For c, the publish is encoded once with
pamqp and sent as it is, inbound frames are cut with pamqp, and nothing is
checked but the confirm's delivery tag.  For e, the request is encoded once
with a placeholder correlation id, which each call overwrites; inbound
frames are cut by their headers, and only the content header's properties
are decoded, with trio_msg's hand-written decoder (pamqp's would make this
floor slower than trio_msg itself); the server encodes its reply and ack
with pamqp, as the client its request; nothing is checked but the reply's
correlation id and body.  Two ways to wait:

* ``--backend blocking``: a blocking socket (``sendall``, ``recv``), as pika's
  BlockingConnection and kombu wait;
* ``--backend trio``: one trio task on a trio socket (``await send``,
  ``await recv``): the least an event loop client on trio can spend;
* ``--backend poll``: the blocking socket, but each wait for what the
  broker sends first polls it (``recv`` with ``MSG_DONTWAIT``, in a loop)
  for up to ``POLL`` seconds (0.5 ms), as trio_msg's ``busy_poll`` does
  between its event loop's passes: the least a client that polls can wait.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
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
    RPC_SERVER_PREFETCH,
    SMALL,
    USER,
    Check,
    cpu_stop,
    emit,
    latency_summary,
    now,
    parse_args,
    ready,
    start,
    stop,
)
from trio_msg._protocol.frames import decode_properties

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
#: Stands for the correlation id in the encoded request (a uuid4's hex).
PLACEHOLDER = b"X" * 32
_FRAME_HEAD = struct.Struct(">BHI")
#: How long ``--backend poll`` polls before it blocks: 0.5 ms, what
#: trio_msg's ``busy_poll=0.0005`` polls (the reference for what spinning
#: buys; trio_msg itself is measured with ``busy_poll=0`` unless told).
POLL = 0.0005


def encode(channel: int, *methods: Any) -> bytes:
    return b"".join(frame.marshal(m, channel) for m in methods)


def message(queue: str, body: bytes, **properties: Any) -> bytes:
    props = commands.Basic.Properties(
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        delivery_mode=DELIVERY_MODE,
        **properties,
    )
    return encode(
        1,
        commands.Basic.Publish(exchange="", routing_key=queue),
        header.ContentHeader(0, len(body), props),
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

    def cut(self) -> list[tuple[int, bytes]]:
        """Every whole frame in the buffer, as (frame type, payload), cut by
        the headers alone (no pamqp)."""
        buf = bytes(self.buffer)
        out = []
        pos = 0
        while len(buf) - pos >= 8:
            frame_type, _channel, size = _FRAME_HEAD.unpack_from(buf, pos)
            stop = pos + 7 + size
            if stop >= len(buf):
                break
            out.append((frame_type, buf[pos + 7 : stop]))
            pos = stop + 1
        del self.buffer[:pos]
        return out


# --- one protocol, two ways to wait -------------------------------------------------


class Blocking:
    def __init__(self) -> None:
        self.sock = socket.create_connection((HOST, PORT))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.frames = Frames()

    async def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    async def receive(self) -> None:
        """Read what has come into the frame buffer (waiting for it)."""
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.frames.buffer += data

    async def next_frame(self) -> Any:
        while (value := self.frames.take()) is None:
            await self.receive()
        return value

    async def next_frames(self) -> list[tuple[int, bytes]]:
        """The whole frames received (at least one), cut without pamqp."""
        while not (got := self.frames.cut()):
            await self.receive()
        return got


class Polling(Blocking):
    async def receive(self) -> None:
        sock = self.sock
        end = time.perf_counter() + POLL
        data = None
        while data is None:
            try:
                data = sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() >= end:
                    data = sock.recv(65536)
        if not data:
            raise EOFError
        self.frames.buffer += data


class Trio(Blocking):
    def __init__(self) -> None:
        super().__init__()
        self.tsock = trio.socket.from_stdlib_socket(self.sock)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await self.tsock.send(view) :]

    async def receive(self) -> None:
        data = await self.tsock.recv(65536)
        if not data:
            raise EOFError
        self.frames.buffer += data


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
        t0 = start()
        for tag in range(1, n + 1):
            t = now()
            await io.send(publish)
            ack = await expect(io, commands.Basic.Ack)
            lat.append(now() - t)
            Check.equal(ack.delivery_tag, tag, "floor confirm")
        result["seconds"] = stop(t0)
        result.update(latency_summary(lat))
    elif args.workload == "e":
        await io.send(encode(1, commands.Queue.Declare(queue="", exclusive=True)))
        reply_queue = (await expect(io, commands.Queue.DeclareOk)).queue
        await io.send(
            encode(1, commands.Basic.Consume(queue=reply_queue, consumer_tag="r", no_ack=True))
        )
        await expect(io, commands.Basic.ConsumeOk)
        request = message(q, SMALL, reply_to=reply_queue, correlation_id=PLACEHOLDER.decode())
        at = request.index(PLACEHOLDER)
        head, tail = request[:at], request[at + len(PLACEHOLDER) :]
        lat = []
        t0 = start()
        for _ in range(n):
            t = now()
            corr = uuid.uuid4().hex
            await io.send(b"".join((head, corr.encode(), tail)))
            reply = got = None
            while reply is None:
                for frame_type, payload in await io.next_frames():
                    if frame_type == 2:  # the content header: its properties
                        flags = int.from_bytes(payload[12:14], "big")
                        got = decode_properties(flags, payload, 14).correlation_id
                    elif frame_type == 3:
                        reply = payload
            lat.append(now() - t)
            Check.equal(got, corr, "floor rpc correlation id")
            Check.body(reply, SMALL, "floor rpc reply")
        result["seconds"] = stop(t0)
        result.update(latency_summary(lat))
    elif args.workload == "rpc-server":
        await io.send(encode(1, commands.Basic.Qos(prefetch_count=RPC_SERVER_PREFETCH)))
        await expect(io, commands.Basic.QosOk)
        await io.send(encode(1, commands.Basic.Consume(queue=q, consumer_tag="s")))
        await expect(io, commands.Basic.ConsumeOk)
        ready()
        served = tag = 0
        props: Any = None
        while served < n:
            for frame_type, payload in await io.next_frames():
                if frame_type == 1:  # basic.deliver (the only method that comes)
                    tag = int.from_bytes(payload[5 + payload[4] : 13 + payload[4]], "big")
                elif frame_type == 2:
                    flags = int.from_bytes(payload[12:14], "big")
                    props = decode_properties(flags, payload, 14)
                elif frame_type == 3:
                    await io.send(
                        message(props.reply_to, payload, correlation_id=props.correlation_id)
                    )
                    await io.send(encode(1, commands.Basic.Ack(delivery_tag=tag)))
                    served += 1
        cpu_stop()
        result["served"] = served
    else:
        raise SystemExit(f"floor: no workload {args.workload}")
    return result


def main() -> None:
    args = parse_args(extra=True, backends=("blocking", "poll", "trio"))
    if args.backend != "trio":
        coro = run(args, Blocking() if args.backend == "blocking" else Polling())
        try:
            coro.send(None)  # Blocking never suspends: this runs it to the end
        except StopIteration as stop:
            result = stop.value
        else:
            raise RuntimeError(f"the {args.backend} floor yielded")
    else:
        result = trio.run(run, args, Trio())
    emit(f"floor[{args.backend}]", args, result)


if __name__ == "__main__":
    main()
