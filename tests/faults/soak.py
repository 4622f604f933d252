"""The soak: a producer and a consumer on reviving connections, a random fault
every few seconds, for ten minutes; then drain and report.

    python tests/faults/soak.py [--duration 600] [--seed N] [--json out.json]

(``nox -s soak`` runs it.)  It starts a private RabbitMQ node of its own
(tests/_support/_node.py; port 5681 unless that slot is taken) and puts the
TCP proxy between it and the clients, so it may cut, stall, drop one way,
refuse, truncate handshakes, force-close, restart, crash and alarm at will.
The shared node on 5672 is never touched.

The producer publishes persistent messages with confirms and ``retry=True``
to a durable queue, paced at ``--rate`` a second; the consumer acks each one.
Every ``--every`` seconds (random in that range) a fault is chosen at random
and applied; lasting faults hold for a few seconds and are then lifted.  At
the end the faults stop, the producer stops, and the consumer drains until
every confirmed message has arrived (or ``--drain`` seconds pass).

The report (JSON, on stdout and in ``--json``): faults injected (by kind),
messages published / confirmed / consumed, **lost** (confirmed, never
consumed), **unexpected** (consumed, never published), **duplicates**, and
recovery times: from the moment a fault is lifted to the next confirmed
publish, and to the next delivery of a message confirmed after it (p50,
p99, max).  Errors that escaped the client (a connection that gave up, a
consumer that raised) are listed too: the soak then starts that side again,
so one bug does not end the run, but they are a failure.  The exit status
is 1 if anything was lost, unexpected, or escaped.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent / "_support"), str(_HERE)]

import anyio  # noqa: E402
from _broker import DEFAULT_MEMORY_WATERMARK  # noqa: E402
from _ledger import Ledger  # noqa: E402
from _node import PrivateNode  # noqa: E402
from _proxy import TcpProxy, tcp_proxy  # noqa: E402

import trio_msg  # noqa: E402
from trio_msg.errors import TrioMsgError  # noqa: E402

POLICY = trio_msg.RetryPolicy(interval_start=0.1, interval_step=0.2, interval_max=1.0)
CONN_OPTIONS: dict[str, Any] = {"heartbeat": 2, "connection_timeout": 3}


class Soak:
    def __init__(self, args: argparse.Namespace, node: PrivateNode, proxy: TcpProxy) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.node = node
        self.proxy = proxy
        self.url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
        self.queue = trio_msg.Queue("trio_msg.soak", durable=True)
        self.ledger = Ledger("soak")
        self.confirms: list[tuple[float, int]] = []  # (time, id), in time order
        self.confirm_time: dict[int, float] = {}
        self.deliveries: list[tuple[float, int]] = []
        self.faults: list[dict[str, Any]] = []
        self.escaped: list[dict[str, Any]] = []
        self.incarnations = Counter[str]()
        self.stop_publishing = anyio.Event()
        self.next_id = 0
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ---------------------------------------------------------------- clients

    async def supervised(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run a client side; if an error escapes it, record it and start again."""
        while True:
            try:
                await body()
                return
            except (TrioMsgError, OSError, TimeoutError) as exc:
                self.escaped.append(
                    {
                        "side": name,
                        "at_s": round(self.now(), 3),
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                )
                print(
                    f"[{self.now():7.1f}] {name}: ESCAPED {type(exc).__name__}: {exc}", flush=True
                )
                await anyio.sleep(1)

    async def produce(self) -> None:
        async with (
            trio_msg.connect(self.url, revive=POLICY, **CONN_OPTIONS) as conn,
            trio_msg.Producer(conn) as producer,
        ):
            try:
                while not self.stop_publishing.is_set():
                    i = self.next_id
                    self.next_id += 1
                    self.ledger.publishing(i)
                    await producer.publish(
                        i,
                        routing_key=self.queue.name,
                        declare=[self.queue],
                        delivery_mode=2,
                        retry=True,
                    )
                    t = self.now()
                    self.ledger.confirm(i)
                    self.confirms.append((t, i))
                    self.confirm_time[i] = t
                    await anyio.sleep(1 / self.args.rate)  # pacing
            finally:
                self.incarnations["producer"] += conn.incarnation

    async def consume(self) -> None:
        async with (
            trio_msg.connect(self.url, revive=POLICY, **CONN_OPTIONS) as conn,
            trio_msg.Consumer(conn, queues=[self.queue], prefetch_count=50) as consumer,
        ):
            try:
                async for message in consumer:
                    self.ledger.consume(message.payload)
                    self.deliveries.append((self.now(), message.payload))
                    try:
                        await message.ack()
                    except TrioMsgError:
                        pass  # its channel is gone: the broker redelivers it
            finally:
                self.incarnations["consumer"] += conn.incarnation

    # ----------------------------------------------------------------- faults

    async def _hold(self) -> None:
        await anyio.sleep(self.rng.uniform(1.5, 4.0))

    async def _thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    async def cut(self) -> None:
        self.proxy.cut()

    async def cut_rst(self) -> None:
        self.proxy.cut(reset=True)

    async def half_close(self) -> None:
        self.proxy.half_close(client_to_server=self.rng.random() < 0.5)

    async def stall(self) -> None:
        self.proxy.stall()
        await self._hold()
        self.proxy.resume()

    async def drop_one_way(self) -> None:
        if self.rng.random() < 0.5:
            self.proxy.drop_client_to_server()
        else:
            self.proxy.drop_server_to_client()
        await self._hold()
        self.proxy.heal()
        # Bytes thrown away mid-stream leave a connection no TCP loss could
        # (TCP retransmits): one the heartbeat has not ended yet is cut.
        self.proxy.cut()

    async def refuse(self) -> None:
        self.proxy.refuse_new()
        self.proxy.cut()
        await self._hold()
        self.proxy.heal()

    async def truncate_reconnect(self) -> None:
        cuts = self.proxy.cuts
        self.proxy.truncate_after(
            self.rng.randrange(0, 900),
            client_to_server=self.rng.random() < 0.3,
            live=False,
        )
        self.proxy.cut()
        with anyio.move_on_after(5):
            while self.proxy.cuts == cuts:
                await anyio.sleep(0.01)
        self.proxy.heal()

    async def forced_close(self) -> None:
        for conn in await self._thread(self.node.list_connections):
            try:
                await self._thread(self.node.ctl, "close_connection", conn["pid"], "trio_msg soak")
            except Exception:
                pass  # gone by itself meanwhile

    async def restart(self) -> None:
        await self._thread(self.node.restart)

    async def crash(self) -> None:
        await self._thread(self.node.crash_restart)

    async def alarm(self) -> None:
        try:
            await self._thread(self.node.set_memory_watermark, "0")
            await self._hold()
        finally:
            with anyio.CancelScope(shield=True):
                await self._thread(self.node.set_memory_watermark, DEFAULT_MEMORY_WATERMARK)

    FAULTS: dict[str, int] = {
        "cut": 3,
        "cut_rst": 2,
        "half_close": 2,
        "stall": 2,
        "drop_one_way": 2,
        "refuse": 2,
        "truncate_reconnect": 3,
        "forced_close": 2,
        "restart": 1,
        "crash": 1,
        "alarm": 1,
    }

    async def inject(self) -> None:
        kinds = list(self.FAULTS)
        weights = [self.FAULTS[k] for k in kinds]
        end = self.args.duration
        while True:
            await anyio.sleep(self.rng.uniform(*self.args.every))
            if self.now() >= end:
                return
            kind = self.rng.choices(kinds, weights)[0]
            start = self.now()
            try:
                await getattr(self, kind)()
            except Exception as exc:  # the tooling failed, not the client: note it, go on
                print(f"[{start:7.1f}] {kind} FAILED TO INJECT: {exc!r}", flush=True)
                self.proxy.heal()
                await anyio.to_thread.run_sync(self.node.heal)
                continue
            lifted = self.now()
            self.faults.append({"kind": kind, "start_s": start, "lifted_s": lifted})
            print(f"[{start:7.1f}] {kind} (lifted after {lifted - start:.1f} s)", flush=True)

    # ----------------------------------------------------------------- report

    def recovery(self) -> dict[str, Any]:
        confirm_times = [t for t, _ in self.confirms]
        pub: list[float] = []
        dlv: list[float] = []
        for fault in self.faults:
            t0 = fault["lifted_s"]
            k = bisect.bisect_left(confirm_times, t0)
            if k < len(confirm_times):
                pub.append(confirm_times[k] - t0)
                fault["publish_recovered_s"] = round(confirm_times[k] - t0, 3)
            for t, msg_id in self.deliveries:
                if t >= t0 and self.confirm_time.get(msg_id, -1) >= t0:
                    dlv.append(t - t0)
                    fault["delivery_recovered_s"] = round(t - t0, 3)
                    break
        return {"publish_s": _quantiles(pub), "delivery_s": _quantiles(dlv)}

    def report(self, drained: bool, queue_left: int | None) -> dict[str, Any]:
        figures = self.ledger.figures()
        return {
            "duration_s": self.args.duration,
            "seed": self.args.seed,
            "rate_per_s": self.args.rate,
            "faults": len(self.faults),
            "faults_by_kind": dict(Counter(f["kind"] for f in self.faults)),
            "published": figures["sent"],
            "confirmed": figures["confirmed"],
            "consumed": figures["consumed"],
            "lost": figures["lost"],
            "unexpected": figures["unexpected"],
            "duplicates": figures["duplicates"],
            "drained": drained,
            "left_in_queue": queue_left,
            "recovery": self.recovery(),
            "escaped_errors": self.escaped,
            "incarnations": dict(self.incarnations),
            "fault_log": self.faults,
        }


def _quantiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    values = sorted(values)
    if len(values) > 1:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    else:
        p50 = p99 = values[0]
    return {
        "n": len(values),
        "p50": round(p50, 3),
        "p99": round(p99, 3),
        "max": round(values[-1], 3),
    }


async def run(args: argparse.Namespace, node: PrivateNode) -> dict[str, Any]:
    async with tcp_proxy("127.0.0.1", node.port) as proxy:
        soak = Soak(args, node, proxy)
        async with anyio.create_task_group() as tg:
            tg.start_soon(soak.supervised, "consumer", soak.consume)
            async with anyio.create_task_group() as work:
                work.start_soon(soak.supervised, "producer", soak.produce)
                await soak.inject()
                proxy.heal()
                await anyio.to_thread.run_sync(node.heal)
                soak.stop_publishing.set()
                # the publish in progress has this long to finish
                work.cancel_scope.deadline = anyio.current_time() + args.drain
            if work.cancel_scope.cancelled_caught:
                soak.escaped.append(
                    {"side": "producer", "at_s": round(soak.now(), 3),
                     "error": f"a publish still waiting {args.drain} s after the faults ended"}
                )  # fmt: skip
            print(f"[{soak.now():7.1f}] faults over; draining", flush=True)
            drained = False
            with anyio.move_on_after(args.drain):
                while not soak.ledger.complete():
                    await anyio.sleep(0.05)
                drained = True
            tg.cancel_scope.cancel()
        queue_left = None
        try:
            async with trio_msg.connect(node.url) as conn, conn.channel() as ch:
                queue_left = (await ch.queue_declare(soak.queue.name, passive=True)).message_count
        except TrioMsgError:
            pass
        return soak.report(drained, queue_left)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults (600)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--rate", type=float, default=200.0, help="publishes a second, at most")
    parser.add_argument(
        "--every", type=float, nargs=2, default=(3.0, 6.0), metavar=("MIN", "MAX"),
        help="seconds between faults (random in [MIN, MAX])",
    )  # fmt: skip
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to drain at the end")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--backend", default="trio", choices=["trio", "asyncio"])
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(2**32)
    print(f"soak: {args.duration:.0f} s, seed {args.seed}, backend {args.backend}", flush=True)
    # SIGTERM (timeout, CI) unwinds like Ctrl-C, so the private node is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    node = PrivateNode.start_free(prefer=1)
    try:
        print(f"soak: private node {node.name} on port {node.port}", flush=True)
        report = anyio.run(run, args, node, backend=args.backend)
    finally:
        node.stop()
    report["backend"] = args.backend
    text = json.dumps(report, indent=2)
    summary = {k: v for k, v in report.items() if k != "fault_log"}
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(text + "\n")
    ok = report["lost"] == 0 and report["unexpected"] == 0 and not report["escaped_errors"]
    return 0 if ok and report["drained"] else 1


if __name__ == "__main__":
    sys.exit(main())
