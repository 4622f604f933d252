"""Micro-benchmark of the sans-IO core against raw pamqp.  No IO, no broker.

Run from the repository root::

    python -m benchmarks.core_bench [--n 50000] [--rounds 9]

Three workloads, each measured for trio_msg's core and for pamqp doing the
same work by hand:

publish
    ``AMQPChannel.publish`` of a 100-byte body with ``content_type``,
    ``delivery_mode=2`` and ``headers={"k": "v"}`` on a connection that went
    through a complete handshake, draining ``data_to_send()`` every
    ``DRAIN_EVERY`` publishes; against ``pamqp.frame.marshal`` of
    ``Basic.Publish`` + ``ContentHeader`` + ``ContentBody``, joined into one
    byte string at the same cadence.  Each publish is three frames.

deliver
    One byte string of N ``basic.deliver`` + content header + body frames
    (built with pamqp) fed to the core in 64 KiB chunks, counting
    :class:`~trio_msg._protocol.events.Delivery` events; against a loop that
    cuts the same chunks into frames (reading the 7-byte frame header, as any
    pamqp-based client must), calls ``pamqp.frame.unmarshal`` on each frame
    and joins method + header + body into one message tuple.  Before racing,
    the script checks that both decode the same messages.

deliver_varied
    The same, but every message's properties differ (a message id, a
    correlation id, a timestamp and a counter in the headers), as with
    kombu or Celery traffic: the core's cache of decoded property lists
    never hits, so this measures its decoders alone.

Both sides run in the same process, in interleaved rounds (the order of the
two contenders alternates every round); the reported rate is the median of
the rounds.  Results are printed as a table and written to
``benchmarks/results/core.json``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pamqp import body as pbody
from pamqp import commands as pc
from pamqp import frame as pframe
from pamqp import header as pheader

from trio_msg._protocol import AMQPChannel, AMQPConnection, BasicProperties, Delivery

RESULTS = Path(__file__).resolve().parent / "results" / "core.json"

BODY = bytes(range(100))
EXCHANGE = "bench"
ROUTING_KEY = "bench.key"
CONTENT_TYPE = "application/json"
HEADERS = {"k": "v"}
DRAIN_EVERY = 256  # publishes between two data_to_send() calls
CHUNK = 64 * 1024  # bytes fed per receive_data() call
CONSUMER_TAG = "ctag-bench"

_FRAME_HEADER = struct.Struct(">BHI")


# --- setting up a core connection ------------------------------------------------


def _server_frames(*frames: tuple[int, Any]) -> bytes:
    return b"".join(pframe.marshal(f, ch) for ch, f in frames)


def open_core_channel(*, consume: bool = False) -> tuple[AMQPConnection, AMQPChannel]:
    """An AMQPConnection through a complete handshake, with channel 1 open
    (and, with ``consume``, a consumer with acks on it)."""
    conn = AMQPConnection(heartbeat=0)
    conn.initiate()
    conn.receive_data(
        _server_frames(
            (
                0,
                pc.Connection.Start(
                    version_major=0,
                    version_minor=9,
                    server_properties={"product": "bench"},
                    mechanisms="PLAIN AMQPLAIN",
                    locales="en_US",
                ),
            ),
            (0, pc.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=0)),
            (0, pc.Connection.OpenOk()),
        )
    )
    channel = conn.open_channel()
    conn.receive_data(_server_frames((channel.id, pc.Channel.OpenOk())))
    if consume:
        channel.basic_consume("bench-queue", CONSUMER_TAG)
        conn.receive_data(
            _server_frames((channel.id, pc.Basic.ConsumeOk(consumer_tag=CONSUMER_TAG)))
        )
    conn.data_to_send()
    events = conn.next_events()
    assert channel.is_open, (channel, events)
    if consume:
        assert channel.consumers == {CONSUMER_TAG: False}, channel.consumers
    return conn, channel


# --- publish --------------------------------------------------------------------------


CORE_PROPS = BasicProperties(content_type=CONTENT_TYPE, delivery_mode=2, headers=HEADERS)
PAMQP_PROPS = pc.Basic.Properties(content_type=CONTENT_TYPE, delivery_mode=2, headers=HEADERS)


def publish_core(n: int) -> tuple[float, int]:
    conn, channel = open_core_channel()
    publish = channel.publish
    drain = conn.data_to_send
    sent = 0
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        publish(EXCHANGE, ROUTING_KEY, BODY, CORE_PROPS)
        if i % DRAIN_EVERY == DRAIN_EVERY - 1:
            sent += len(drain())
    sent += len(drain())
    return time.perf_counter() - start, sent


def publish_pamqp(n: int) -> tuple[float, int]:
    marshal = pframe.marshal
    publish_cls = pc.Basic.Publish
    header_cls = pheader.ContentHeader
    body_cls = pbody.ContentBody
    size = len(BODY)
    out: list[bytes] = []
    sent = 0
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        out.append(marshal(publish_cls(exchange=EXCHANGE, routing_key=ROUTING_KEY), 1))
        out.append(marshal(header_cls(0, size, PAMQP_PROPS), 1))
        out.append(marshal(body_cls(BODY), 1))
        if i % DRAIN_EVERY == DRAIN_EVERY - 1:
            sent += len(b"".join(out))
            out = []
    sent += len(b"".join(out))
    return time.perf_counter() - start, sent


def check_publish_identical() -> None:
    """Both contenders must produce the same bytes, or the race is unfair."""
    conn, channel = open_core_channel()
    channel.publish(EXCHANGE, ROUTING_KEY, BODY, CORE_PROPS)
    core = conn.data_to_send()
    raw = b"".join(
        (
            pframe.marshal(pc.Basic.Publish(exchange=EXCHANGE, routing_key=ROUTING_KEY), 1),
            pframe.marshal(pheader.ContentHeader(0, len(BODY), PAMQP_PROPS), 1),
            pframe.marshal(pbody.ContentBody(BODY), 1),
        )
    )
    if core != raw:
        raise SystemExit(f"publish bytes differ:\n core  {core!r}\n pamqp {raw!r}")


# --- deliver --------------------------------------------------------------------------


def varied_properties(tag: int) -> pc.Basic.Properties:
    """Properties that differ for every message."""
    return pc.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=2,
        headers={"k": "v", "n": tag},
        correlation_id=f"corr-{tag}",
        message_id=f"msg-{tag:08d}",
        timestamp=datetime.datetime.fromtimestamp(1_700_000_000 + tag, datetime.UTC),
    )


def build_deliveries(n: int, *, varied: bool = False) -> bytes:
    """N basic.deliver + content header + body frames on channel 1, built with pamqp."""
    header = pframe.marshal(pheader.ContentHeader(0, len(BODY), PAMQP_PROPS), 1)
    body = pframe.marshal(pbody.ContentBody(BODY), 1)
    parts: list[bytes] = []
    for tag in range(1, n + 1):
        if varied:
            props = varied_properties(tag)
            header = pframe.marshal(pheader.ContentHeader(0, len(BODY), props), 1)
        deliver = pc.Basic.Deliver(
            consumer_tag=CONSUMER_TAG,
            delivery_tag=tag,
            redelivered=False,
            exchange=EXCHANGE,
            routing_key=ROUTING_KEY,
        )
        parts += (pframe.marshal(deliver, 1), header, body)
    return b"".join(parts)


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def deliver_core(pieces: list[bytes], keep: list[Any] | None = None) -> tuple[float, int]:
    conn, _channel = open_core_channel(consume=True)
    receive = conn.receive_data
    next_events = conn.next_events
    count = 0
    gc.collect()
    start = time.perf_counter()
    for piece in pieces:
        receive(piece)
        for event in next_events():
            if type(event) is Delivery:
                count += 1
                if keep is not None:
                    keep.append(event)
    return time.perf_counter() - start, count


def deliver_pamqp(pieces: list[bytes], keep: list[Any] | None = None) -> tuple[float, int]:
    unmarshal = pframe.unmarshal
    unpack_from = _FRAME_HEADER.unpack_from
    deliver_cls = pc.Basic.Deliver
    header_cls = pheader.ContentHeader
    body_cls = pbody.ContentBody
    messages: list[tuple[Any, Any, bytes]] = []
    buf = b""
    method: Any = None
    props: Any = None
    size = 0
    chunks_: list[bytes] = []
    received = 0
    count = 0
    gc.collect()
    start = time.perf_counter()
    for piece in pieces:
        buf = buf + piece if buf else piece
        pos = 0
        end = len(buf)
        while end - pos >= 7:
            _type, _channel, length = unpack_from(buf, pos)
            stop = pos + length + 8
            if stop > end:
                break
            _used, _ch, frame = unmarshal(buf[pos:stop])
            pos = stop
            kind = type(frame)
            if kind is body_cls:
                chunks_.append(frame.value)
                received += len(frame.value)
                if received == size:
                    messages.append((method, props, b"".join(chunks_)))
                    chunks_ = []
                    method = None
            elif kind is header_cls:
                props = frame.properties
                size = frame.body_size
                received = 0
            elif kind is deliver_cls:
                method = frame
        buf = buf[pos:]
        count += len(messages)
        if keep is not None:
            keep += messages
        messages.clear()
    return time.perf_counter() - start, count


_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)


def check_deliver_identical(n: int, *, varied: bool) -> None:
    """Both contenders must decode the same messages, or the race is unfair."""
    pieces = chunks(build_deliveries(n, varied=varied))
    core: list[Delivery] = []
    raw: list[tuple[Any, Any, bytes]] = []
    deliver_core(pieces, core)
    deliver_pamqp(pieces, raw)
    if len(core) != len(raw) or len(core) != n:
        raise SystemExit(f"deliver: {len(core)} core messages, {len(raw)} pamqp, expected {n}")
    for ours, (method, props, body) in zip(core, raw, strict=True):
        mine = (ours.consumer_tag, ours.delivery_tag, ours.redelivered, ours.exchange)
        theirs = (method.consumer_tag, method.delivery_tag, method.redelivered, method.exchange)
        same = mine == theirs and (ours.routing_key, ours.body) == (method.routing_key, body)
        for name in _PROPERTY_NAMES:
            same = same and getattr(ours.properties, name) == getattr(
                props, "message_type" if name == "type" else name
            )
        if not same:
            raise SystemExit(f"deliver: messages differ:\n core  {ours!r}\n pamqp {dict(props)!r}")


# --- the race -------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "pamqp": importlib.metadata.version("pamqp"),
        "git_commit": commit,
    }


def race(
    rounds: int,
    contenders: dict[str, Callable[[], tuple[float, int]]],
    expect: dict[str, int],
) -> dict[str, list[float]]:
    """Interleaved rounds; the order of the contenders alternates each round."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            elapsed, result = contenders[name]()
            if result != expect[name]:
                raise SystemExit(f"{name}: produced {result}, expected {expect[name]}")
            times[name].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="messages per round (default 50000)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds, at least 5 (default 9)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    n: int = args.n

    check_publish_identical()
    check_deliver_identical(1000, varied=False)
    check_deliver_identical(1000, varied=True)
    t0 = time.perf_counter()
    stream = build_deliveries(n)
    pieces = chunks(stream)
    varied_pieces = chunks(build_deliveries(n, varied=True))
    build_s = time.perf_counter() - t0
    _, publish_bytes = publish_pamqp(1)  # bytes of one publish...
    publish_bytes *= n  # ...every round must produce exactly n of them

    # Warm-up (imports, caches, the interpreter's specialisation).
    publish_core(2000)
    publish_pamqp(2000)
    deliver_core(chunks(build_deliveries(2000)))
    deliver_pamqp(chunks(build_deliveries(2000)))
    deliver_core(chunks(build_deliveries(2000, varied=True)))
    deliver_pamqp(chunks(build_deliveries(2000, varied=True)))

    t0 = time.perf_counter()
    pub = race(
        args.rounds,
        {"trio_msg": lambda: publish_core(n), "pamqp": lambda: publish_pamqp(n)},
        {"trio_msg": publish_bytes, "pamqp": publish_bytes},
    )
    dlv = race(
        args.rounds,
        {"trio_msg": lambda: deliver_core(pieces), "pamqp": lambda: deliver_pamqp(pieces)},
        {"trio_msg": n, "pamqp": n},
    )
    varied = race(
        args.rounds,
        {
            "trio_msg": lambda: deliver_core(varied_pieces),
            "pamqp": lambda: deliver_pamqp(varied_pieces),
        },
        {"trio_msg": n, "pamqp": n},
    )
    race_s = time.perf_counter() - t0

    def summary(times: list[float], frames_per_msg: int) -> dict[str, Any]:
        med = statistics.median(times)
        return {
            "median_s": med,
            "min_s": min(times),
            "max_s": max(times),
            "rounds_s": times,
            "messages_per_s": n / med,
            "frames_per_s": n * frames_per_msg / med,
        }

    results: dict[str, Any] = {
        "machine": _machine(),
        "parameters": {
            "n": n,
            "rounds": args.rounds,
            "body_bytes": len(BODY),
            "properties": {"content_type": CONTENT_TYPE, "delivery_mode": 2, "headers": HEADERS},
            "drain_every": DRAIN_EVERY,
            "chunk_bytes": CHUNK,
            "deliver_stream_bytes": len(stream),
            "deliver_varied_stream_bytes": sum(map(len, varied_pieces)),
            "publish_bytes_per_round": publish_bytes,
        },
        "publish": {
            "trio_msg": summary(pub["trio_msg"], 3),
            "pamqp": summary(pub["pamqp"], 3),
        },
        "deliver": {
            "trio_msg": summary(dlv["trio_msg"], 3),
            "pamqp": summary(dlv["pamqp"], 3),
        },
        "deliver_varied": {
            "trio_msg": summary(varied["trio_msg"], 3),
            "pamqp": summary(varied["pamqp"], 3),
        },
        "wall_s": {"build_input": build_s, "rounds": race_s},
    }
    benches = ("publish", "deliver", "deliver_varied")
    for bench in benches:
        r = results[bench]
        r["ratio_trio_msg_over_pamqp"] = (
            r["trio_msg"]["messages_per_s"] / r["pamqp"]["messages_per_s"]
        )

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    m = results["machine"]
    print(f"core_bench: n={n}, {args.rounds} interleaved rounds, medians")
    print(f"{m['python']}, pamqp {m['pamqp']}, {m['cpu_count']} cpus ({m['cpu']}), {m['date']}")
    print()
    head = f"{'workload':<14} {'contender':<9} {'messages/s':>12} {'frames/s':>12} {'median s':>9} {'spread':>7}"
    print(head)
    print("-" * len(head))
    for bench in benches:
        for who in ("trio_msg", "pamqp"):
            s = results[bench][who]
            spread = (s["max_s"] - s["min_s"]) / s["median_s"]
            print(
                f"{bench:<14} {who:<9} {s['messages_per_s']:>12,.0f} {s['frames_per_s']:>12,.0f} "
                f"{s['median_s']:>9.3f} {spread:>6.1%}"
            )
        print(
            f"{'':<14} {'ratio':<9} {results[bench]['ratio_trio_msg_over_pamqp']:>11.2f}x  (trio_msg / pamqp)"
        )
    print()
    print(f"wrote {args.output}  ({race_s:.1f}s of rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
