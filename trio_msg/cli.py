"""``python -m trio_msg`` (and the ``trio-msg`` script): AMQP from the shell.

Every command speaks AMQP 0-9-1 through trio_msg itself, so it needs no
management plugin: ``publish``, ``consume``, ``get``, ``declare``, ``bind``,
``unbind``, ``purge``, ``delete`` and ``bench``.  ``--url`` defaults to
``$TRIO_MSG_URL``, then to ``amqp://guest:guest@localhost:5672//``.

Exit codes (:data:`EXIT_CODES`): 0 done; 2 bad usage; 3 no connection
(refused, lost, wrong credentials); 4 the broker refused the operation (a
channel error such as 404 or 406); 5 nothing came (``get`` on an empty
queue, ``consume --timeout`` before ``--count`` messages); 6 a published
message was nacked or returned unroutable; 130 interrupted.

Progress lines (counts and rates) go to standard error, only when it is a
terminal; standard output carries only what was asked for, so it can be
piped.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO

import trio

from ._protocol.errors import ChannelClosed, ConnectionClosed, ConnectionLost, TrioMsgError
from .connection import Connection, connect
from .entity import Queue
from .errors import ConnectionFailed, MessageNacked, Unroutable
from .message import Message
from .messaging import Consumer, Pipeline, Producer

__all__ = ["EXIT_CODES", "main"]

DEFAULT_URL = "amqp://guest:guest@localhost:5672//"

#: What each exit status means.
EXIT_CODES = {
    0: "done",
    2: "bad usage",
    3: "no connection to the broker (refused, lost or not allowed)",
    4: "the broker refused the operation",
    5: "nothing came (empty queue, or --timeout before --count messages)",
    6: "a published message was nacked or returned unroutable",
    130: "interrupted",
}

#: Content types whose bodies ``consume`` and ``get`` decode; pickle is
#: left out on purpose (a message from the broker is untrusted input).
DISPLAY_ACCEPT = ["application/json", "text/plain", "application/x-msgpack", "application/x-yaml"]


class CliError(Exception):
    """An error the command reports in one line, with its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Nothing(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 5)


# --- argument parsing ----------------------------------------------------------


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key, value


def _argument(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` where VALUE is read as JSON when it parses (``x-max-length=10``
    is an int, ``x-queue-type=quorum`` a string)."""
    key, value = _pair(text)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number above 0, not {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-msg",
        description="AMQP 0-9-1 from the shell, spoken by trio_msg (no management plugin).",
        epilog="Exit codes: "
        + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()),
    )
    url_help = "AMQP URL (default: $TRIO_MSG_URL, else amqp://guest:guest@localhost:5672//)"
    parser.add_argument("--url", default=None, help=url_help)
    # Also accepted after the command; SUPPRESS keeps a --url given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=url_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "publish",
        parents=[common],
        help="publish messages, with publisher confirms",
        description="Publish BODY (or, with '-', each line of standard input) and wait "
        "for the broker to confirm every message.",
    )
    p.add_argument("body", metavar="BODY|-", help="the body, or - to read lines from stdin")
    p.add_argument("--exchange", "-e", default="", help="exchange (default: the default exchange)")
    p.add_argument("--routing-key", "-k", default="", help="routing key")
    p.add_argument("--declare-queue", metavar="QUEUE", help="declare this durable queue first")
    p.add_argument("--header", "-H", action="append", type=_pair, default=[], metavar="K=V")
    p.add_argument("--content-type", default="text/plain", help="default: text/plain")
    p.add_argument("--count", "-n", type=_positive(int), default=1, help="publish BODY N times")
    p.add_argument("--rate", type=_positive(float), help="at most R messages a second")
    p.add_argument("--transient", action="store_true", help="delivery_mode 1 (default: 2)")
    p.add_argument("--mandatory", action="store_true", help="fail when a message is unroutable")

    c = sub.add_parser(
        "consume",
        parents=[common],
        help="print messages from queues",
        description="Print each message from the queues (its body decoded by its content "
        "type; with --json, one JSON object a line with its properties), and ack it.",
    )
    c.add_argument("queues", nargs="+", metavar="QUEUE")
    c.add_argument("--count", "-n", type=_positive(int), help="stop after N messages")
    c.add_argument("--timeout", type=_positive(float), help="give up after T seconds")
    c.add_argument("--prefetch", type=_positive(int), default=100, help="default: 100")
    mode = c.add_mutually_exclusive_group()
    mode.add_argument("--no-ack", action="store_true", help="consume without acknowledgements")
    mode.add_argument(
        "--requeue", action="store_true", help="leave the messages in the queue (peek)"
    )
    c.add_argument("--json", action="store_true", help="one JSON object a line")

    g = sub.add_parser("get", parents=[common], help="take one message (basic.get)")
    g.add_argument("queue", metavar="QUEUE")
    g.add_argument("--requeue", action="store_true", help="put it back (peek)")
    g.add_argument("--json", action="store_true", help="print it as a JSON object")

    d = sub.add_parser("declare", parents=[common], help="declare an exchange or a queue")
    dsub = d.add_subparsers(dest="kind", required=True, metavar="exchange|queue")
    de = dsub.add_parser("exchange", parents=[common], help="declare an exchange")
    de.add_argument("name")
    de.add_argument("--type", "-t", default="direct", help="direct, fanout, topic, headers, ...")
    dq = dsub.add_parser("queue", parents=[common], help="declare a queue")
    dq.add_argument("name", nargs="?", default="", help="omit to let the broker name it")
    dq.add_argument("--exclusive", action="store_true")
    for each in (de, dq):
        each.add_argument("--transient", action="store_true", help="not durable")
        each.add_argument("--auto-delete", action="store_true")
        each.add_argument("--argument", "-a", action="append", type=_argument, default=[])
        each.add_argument("--passive", action="store_true", help="only check that it exists")

    for name, text in (("bind", "bind"), ("unbind", "remove the binding of")):
        b = sub.add_parser(
            name, parents=[common], help=f"{text} a queue or exchange to an exchange"
        )
        b.add_argument("kind", choices=["queue", "exchange"], help="what the destination is")
        b.add_argument("destination")
        b.add_argument("source", metavar="EXCHANGE")
        b.add_argument("--routing-key", "-k", default="")
        b.add_argument("--argument", "-a", action="append", type=_argument, default=[])

    pg = sub.add_parser("purge", parents=[common], help="delete a queue's ready messages")
    pg.add_argument("queue", metavar="QUEUE")

    dl = sub.add_parser("delete", parents=[common], help="delete an exchange or a queue")
    dl.add_argument("kind", choices=["queue", "exchange"])
    dl.add_argument("name")
    dl.add_argument("--if-unused", action="store_true")
    dl.add_argument("--if-empty", action="store_true", help="queues only")

    bn = sub.add_parser(
        "bench",
        parents=[common],
        help="publish and consume rates",
        description="Publish N messages of SIZE bytes to a server-named, exclusive queue "
        "with a window of confirms, then consume them; print both rates.",
    )
    bn.add_argument("--count", "-n", type=_positive(int), default=10_000)
    bn.add_argument("--size", type=int, default=64, help="body size in bytes (default: 64)")
    bn.add_argument("--window", type=_positive(int), default=1000, help="unconfirmed at most")
    bn.add_argument("--prefetch", type=_positive(int), default=1000)
    bn.add_argument("--json", action="store_true", help="print the figures as JSON")
    br = sub.add_parser(
        "broker",
        help="run the embedded broker on a TCP port",
        description="Run trio_msg's embedded broker (the one behind memory://) on a TCP "
        "port, for any AMQP 0-9-1 client to use as a test broker; until interrupted.",
    )
    br.add_argument("--port", "-p", type=int, default=5672, help="default: 5672 (0: any free)")
    br.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    br.add_argument(
        "--user",
        action="append",
        type=_pair,
        default=[],
        metavar="USER=PASSWORD",
        help="accepted credentials (default: guest=guest)",
    )
    br.add_argument("--heartbeat", type=int, default=60, help="proposed heartbeat (default: 60)")
    return parser


# --- output ---------------------------------------------------------------------


class Progress:
    """A counter with a rate on one line of standard error, redrawn at most
    ten times a second; silent when standard error is not a terminal."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.total = total
        self.count = 0
        self.start = time.monotonic()
        self._drawn = 0.0

    def step(self, n: int = 1) -> None:
        self.count += n
        if self.enabled:
            now = time.monotonic()
            if now - self._drawn >= 0.1:
                self._drawn = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.count / max(now - self.start, 1e-9)
        if self.total:
            filled = int(20 * self.count / self.total)
            bar = "#" * filled + "." * (20 - filled)
            text = f"{self.label} [{bar}] {self.count}/{self.total}  {rate:,.0f} msg/s"
        else:
            text = f"{self.label} {self.count}  {rate:,.0f} msg/s"
        self.stream.write("\r" + text)
        self.stream.flush()

    def done(self) -> float:
        """End the line; the seconds since the start."""
        elapsed = time.monotonic() - self.start
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
        return elapsed


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # datetimes, decimals


def _payload(message: Message) -> Any:
    """The body decoded by its content type where that is safe, else bytes."""
    if message.content_type in DISPLAY_ACCEPT:
        try:
            return message.decode()
        except TrioMsgError:
            pass
    return message.body


def render(message: Message, as_json: bool) -> str:
    """One message as ``consume`` and ``get`` print it."""
    payload = _payload(message)
    if as_json:
        record = {
            "exchange": message.exchange,
            "routing_key": message.routing_key,
            "redelivered": message.redelivered,
            "properties": _jsonable(message.properties),
            "headers": _jsonable(message.headers),
            "body": _jsonable(payload),
        }
        return json.dumps(record, ensure_ascii=False, sort_keys=True)
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes):
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(payload).decode("ascii")
    return json.dumps(_jsonable(payload), ensure_ascii=False)


def _emit(line: str) -> None:
    print(line, flush=True)


# --- commands ----------------------------------------------------------------------


async def _lines(body: str, count: int) -> AsyncIterator[str]:
    """BODY *count* times, or with ``-`` each line of standard input, read in
    a worker thread so the connection is served while the input waits."""
    if body == "-":
        async for line in trio.wrap_file(sys.stdin):
            yield line.rstrip("\n")
    else:
        for _ in range(count):
            await trio.lowlevel.checkpoint()
            yield body


async def cmd_publish(conn: Connection, args: argparse.Namespace) -> None:
    headers = dict(args.header) or None
    declare = [Queue(args.declare_queue)] if args.declare_queue else []
    total = None if args.body == "-" else args.count
    progress = Progress("published", total)
    interval = 1.0 / args.rate if args.rate else 0.0
    next_at = trio.current_time()
    producer = Producer(conn, exchange=args.exchange, auto_declare=False)
    # (the command reports failures itself: _check_pipeline)
    async with producer, producer.pipeline(raise_on_failure=False) as pipeline:
        async for line in _lines(args.body, args.count):
            if interval:
                await trio.sleep_until(next_at)
                next_at = max(next_at + interval, trio.current_time() - interval)
            await pipeline.publish(
                line.encode("utf-8"),
                routing_key=args.routing_key,
                content_type=args.content_type,
                content_encoding="utf-8",
                headers=headers,
                delivery_mode=1 if args.transient else 2,
                mandatory=args.mandatory,
                declare=declare,
            )
            declare = []
            progress.step()
        await pipeline.wait_all()
    progress.done()
    _check_pipeline(pipeline)


def _check_pipeline(pipeline: Pipeline) -> None:
    """A pipeline counts its failures; the command reports them (the first one's
    cause when the channel or connection went away under it)."""
    if not pipeline.failures:
        return
    first = pipeline.failures[0]
    summary = (
        f"{pipeline.acked} confirmed, {pipeline.nacked} nacked, "
        f"{pipeline.returned} returned unroutable, {pipeline.unknown} unknown"
    )
    if first.reason is not None:
        # the channel or connection went away under it, or the broker
        # refused it by closing the channel (a missing exchange): say why
        raise first.reason
    raise CliError(summary, 6)


async def cmd_consume(conn: Connection, args: argparse.Namespace) -> None:
    queues = [Queue(name) for name in args.queues]
    prefetch = args.prefetch
    if args.requeue and args.count:
        prefetch = max(prefetch, args.count)  # held unacked until the end
    held: list[Message] = []
    progress = Progress("consumed", args.count)
    with trio.move_on_after(args.timeout or math.inf) as scope:
        async with Consumer(
            conn,
            queues,
            no_ack=args.no_ack,
            auto_declare=False,
            prefetch_count=None if args.no_ack else prefetch,
            accept=DISPLAY_ACCEPT,
        ) as consumer:
            try:
                async for message in consumer:
                    _emit(render(message, args.json))
                    progress.step()
                    if args.requeue:
                        held.append(message)
                    elif not args.no_ack:
                        await message.ack()
                    if args.count and progress.count >= args.count:
                        break
            finally:
                with trio.CancelScope(shield=True):
                    for message in held:
                        if not message.acknowledged:
                            await message.reject(requeue=True)
    progress.done()
    if scope.cancelled_caught:
        raise Nothing(f"{progress.count} of {args.count or 'any'} messages in {args.timeout} s")


async def cmd_get(conn: Connection, args: argparse.Namespace) -> None:
    async with conn.channel() as channel:
        message = await channel.basic_get(args.queue, accept=DISPLAY_ACCEPT)
        if message is None:
            raise Nothing(f"queue {args.queue!r} is empty")
        _emit(render(message, args.json))
        if args.requeue:
            await message.reject(requeue=True)
        else:
            await message.ack()


async def cmd_declare(conn: Connection, args: argparse.Namespace) -> None:
    arguments = dict(args.argument) or None
    async with conn.channel() as channel:
        if args.kind == "exchange":
            await channel.exchange_declare(
                args.name,
                args.type,
                passive=args.passive,
                durable=not args.transient,
                auto_delete=args.auto_delete,
                arguments=arguments,
            )
            return
        ok = await channel.queue_declare(
            args.name,
            passive=args.passive,
            durable=not args.transient,
            exclusive=args.exclusive,
            auto_delete=args.auto_delete,
            arguments=arguments,
        )
        _emit(
            json.dumps(
                {
                    "queue": ok.queue,
                    "message_count": ok.message_count,
                    "consumer_count": ok.consumer_count,
                }
            )
        )


async def cmd_bind(conn: Connection, args: argparse.Namespace) -> None:
    arguments = dict(args.argument) or None
    async with conn.channel() as channel:
        method: Callable[[str, str, str, dict[str, Any] | None], Awaitable[None]]
        if args.kind == "queue":
            method = channel.queue_bind if args.command == "bind" else channel.queue_unbind
        else:
            method = channel.exchange_bind if args.command == "bind" else channel.exchange_unbind
        await method(args.destination, args.source, args.routing_key, arguments)


async def cmd_purge(conn: Connection, args: argparse.Namespace) -> None:
    async with conn.channel() as channel:
        count = await channel.queue_purge(args.queue)
    _emit(json.dumps({"queue": args.queue, "purged": count}))


async def cmd_delete(conn: Connection, args: argparse.Namespace) -> None:
    async with conn.channel() as channel:
        if args.kind == "exchange":
            if args.if_empty:
                raise CliError("--if-empty applies to queues only", 2)
            await channel.exchange_delete(args.name, if_unused=args.if_unused)
            return
        count = await channel.queue_delete(
            args.name, if_unused=args.if_unused, if_empty=args.if_empty
        )
    _emit(json.dumps({"queue": args.name, "deleted_messages": count}))


async def cmd_bench(conn: Connection, args: argparse.Namespace) -> None:
    if args.size < 0:
        raise CliError("--size must be 0 or more", 2)
    body = b"x" * args.size
    async with conn.channel() as channel:
        name = (await channel.queue_declare("", durable=False, exclusive=True)).queue
        queue = Queue(name, durable=False, exclusive=True)
        progress = Progress("publish", args.count)
        producer = Producer(channel)
        async with (
            producer,
            producer.pipeline(max_unconfirmed=args.window, raise_on_failure=False) as pipeline,
        ):
            for _ in range(args.count):
                await pipeline.publish(body, routing_key=name, content_type="raw")
                progress.step()
            await pipeline.wait_all()
        published = progress.done()
        progress = Progress("consume", args.count)
        async with Consumer(
            channel, [queue], auto_declare=False, prefetch_count=args.prefetch
        ) as consumer:
            async for message in consumer:
                progress.step()
                if progress.count >= args.count:
                    await message.ack(multiple=True)
                    break
                if progress.count % 100 == 0:
                    await message.ack(multiple=True)
        consumed = progress.done()
        await channel.queue_delete(name)
    figures = {
        "messages": args.count,
        "size": args.size,
        "publish_per_second": round(args.count / published, 1),
        "consume_per_second": round(args.count / consumed, 1),
    }
    if args.json:
        _emit(json.dumps(figures))
    else:
        _emit(
            f"published {args.count} x {args.size} B: {figures['publish_per_second']:,.0f} msg/s "
            "(confirmed)"
        )
        _emit(f"consumed  {args.count} x {args.size} B: {figures['consume_per_second']:,.0f} msg/s")


COMMANDS: dict[str, Callable[[Connection, argparse.Namespace], Any]] = {
    "publish": cmd_publish,
    "consume": cmd_consume,
    "get": cmd_get,
    "declare": cmd_declare,
    "bind": cmd_bind,
    "unbind": cmd_bind,
    "purge": cmd_purge,
    "delete": cmd_delete,
    "bench": cmd_bench,
}


async def run_broker(args: argparse.Namespace) -> None:
    from ._broker import BrokerServer

    server = BrokerServer(users=dict(args.user) or None, heartbeat=args.heartbeat)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve_tcp, args.port, args.host)
        print(f"trio_msg broker listening on {args.host}:{port}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> None:
    """Run one parsed command on a connection of its own (revive off: a
    command that loses its connection fails, with status 3)."""
    if args.command == "broker":
        await run_broker(args)
        return
    url = args.url or os.environ.get("TRIO_MSG_URL") or DEFAULT_URL
    async with connect(url, revive=False) as conn:
        await COMMANDS[args.command](conn, args)


def _status(error: BaseException) -> int:
    if isinstance(error, CliError):
        return error.status
    if isinstance(error, MessageNacked | Unroutable):
        return 6
    if isinstance(error, ChannelClosed) and not isinstance(error, ConnectionClosed):
        return 4
    if isinstance(error, ConnectionClosed | ConnectionLost | ConnectionFailed | OSError):
        return 3
    if isinstance(error, ValueError | TypeError):
        return 2
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        trio.run(run, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (TrioMsgError, CliError, OSError, ValueError, TypeError) as error:
        what = str(error) if isinstance(error, CliError) else f"{type(error).__name__}: {error}"
        print(f"trio-msg {args.command}: {what}", file=sys.stderr)
        return _status(error)
    return 0


def console() -> NoReturn:
    """The ``trio-msg`` console script."""
    sys.exit(main())
