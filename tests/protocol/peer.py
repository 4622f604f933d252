"""A scripted broker peer for the sans-IO core, built from pamqp frames.

The peer plays the server: it marshals frames with :func:`pamqp.frame.marshal`
(independently of ``trio_msg._protocol.frames``), feeds them to an
:class:`AMQPConnection` and decodes whatever the client queued with
:func:`pamqp.frame.unmarshal`, so tests assert on the client's real frames.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pamqp import base, body, commands, frame, header, heartbeat
from pamqp.commands import Basic, Channel, Confirm, Connection

from trio_msg._protocol import AMQPChannel, AMQPConnection, events

__all__ = [
    "Peer",
    "Sent",
    "build",
    "connected",
    "content_frames",
    "decode_client_bytes",
    "normalize",
    "raw_content_header",
    "raw_frame",
    "seq",
    "state",
]

FRAME_END = b"\xce"


_LENIENT: dict[type[Any], type[Any]] = {}


def _no_validation(self: object) -> None:
    pass


def _lenient(cls: type[Any]) -> type[Any]:
    """``cls`` with pamqp's marshal-time validation switched off."""
    if cls not in _LENIENT:
        _LENIENT[cls] = type(cls.__name__, (cls,), {"validate": _no_validation})
    return _LENIENT[cls]


def build(cls: type[base.Frame], **fields: Any) -> base.Frame:
    """A pamqp method object without pamqp's own (stricter than RabbitMQ)
    name validation: the peer must be able to send anything a broker may."""
    obj: base.Frame = object.__new__(_lenient(cls))
    defaults = cls.__init__.__defaults__ or ()
    names = cls.__init__.__code__.co_varnames[1 : cls.__init__.__code__.co_argcount]
    for name, default in zip(names[len(names) - len(defaults) :], defaults, strict=True):
        setattr(obj, name, default)
    for name, value in fields.items():
        if name not in names:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        setattr(obj, name, value)
    return obj


def raw_frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + FRAME_END


def raw_content_header(channel: int, body_size: int, flags: int = 0, props: bytes = b"") -> bytes:
    """A content header frame with a hand-made property list (for values
    pamqp itself refuses to encode, e.g. a timestamp beyond year 9999)."""
    payload = struct.pack(">HHQH", 60, 0, body_size, flags) + props
    return raw_frame(2, channel, payload)


def content_frames(
    channel: int,
    method: base.Frame,
    data: bytes,
    properties: commands.Basic.Properties | None = None,
    chunk: int = 131072 - 8,
) -> list[bytes]:
    """A method frame followed by its content header and body frames."""
    out = [
        frame.marshal(method, channel),
        frame.marshal(header.ContentHeader(0, len(data), properties), channel),
    ]
    for start in range(0, len(data), chunk):
        out.append(frame.marshal(body.ContentBody(data[start : start + chunk]), channel))
    return out


@dataclass
class Sent:
    """One frame the client sent, decoded by pamqp."""

    channel: int
    frame: Any

    @property
    def name(self) -> str:
        return str(self.frame.name)


def decode_client_bytes(data: bytes) -> list[Sent]:
    """Every frame in ``data``, decoded with pamqp (protocol header included)."""
    out: list[Sent] = []
    view = bytes(data)
    while view:
        consumed, channel, value = frame.unmarshal(view)
        assert consumed > 0
        out.append(Sent(channel, value))
        view = view[consumed:]
    return out


def normalize(items: Iterable[events.Event]) -> list[Any]:
    """Events as comparable values (errors compare by identity, so an error
    becomes its class and fields)."""
    out: list[Any] = []
    for e in items:
        if isinstance(e, events.RpcReply):
            out.append(
                (
                    "RpcReply",
                    e.channel_id,
                    e.token,
                    e.name,
                    e.fields,
                    e.properties,
                    e.body,
                )
            )
        elif isinstance(e, events.ConnectionTerminated | events.ChannelClosed):
            err = e.error
            out.append(
                (
                    type(e).__name__,
                    e.channel_id,
                    type(err).__name__,
                    getattr(err, "reply_code", None),
                )
            )
        else:
            out.append(e)
    return out


class Peer:
    """The broker side of one :class:`AMQPConnection`."""

    def __init__(self, conn: AMQPConnection | None = None, **kwargs: Any) -> None:
        self.conn = conn if conn is not None else AMQPConnection(**kwargs)
        self.frame_max = 131072

    # --- moving bytes -------------------------------------------------------

    def feed(self, data: bytes) -> list[Any]:
        """Feed raw bytes to the client; return the events they produced."""
        self.conn.receive_data(data)
        return self.conn.next_events()

    def send(self, channel: int, *methods: base.Frame) -> list[Any]:
        """Marshal methods with pamqp and feed them to the client."""
        return self.feed(b"".join(frame.marshal(m, channel) for m in methods))

    def events(self) -> list[Any]:
        """Events produced by commands (not by received bytes)."""
        return self.conn.next_events()

    def received(self) -> list[Sent]:
        """Decode everything the client queued since the last call."""
        return decode_client_bytes(self.conn.data_to_send())

    def received_names(self) -> list[tuple[int, str]]:
        return [(s.channel, s.name) for s in self.received()]

    # --- content ------------------------------------------------------------

    def content(
        self,
        channel: int,
        method: base.Frame,
        data: bytes,
        properties: commands.Basic.Properties | None = None,
        chunk: int | None = None,
    ) -> bytes:
        return b"".join(
            content_frames(channel, method, data, properties, chunk or self.frame_max - 8)
        )

    def deliver(
        self,
        channel: int,
        consumer_tag: str,
        delivery_tag: int,
        data: bytes = b"body",
        properties: commands.Basic.Properties | None = None,
        *,
        exchange: str = "ex",
        routing_key: str = "rk",
        redelivered: bool = False,
        chunk: int | None = None,
    ) -> list[Any]:
        method = build(
            Basic.Deliver,
            consumer_tag=consumer_tag,
            delivery_tag=delivery_tag,
            redelivered=redelivered,
            exchange=exchange,
            routing_key=routing_key,
        )
        return self.feed(self.content(channel, method, data, properties, chunk))

    def returned(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        data: bytes = b"body",
        reply_code: int = 312,
        reply_text: str = "NO_ROUTE",
    ) -> list[Any]:
        method = build(
            Basic.Return,
            reply_code=reply_code,
            reply_text=reply_text,
            exchange=exchange,
            routing_key=routing_key,
        )
        return self.feed(self.content(channel, method, data))

    # --- the handshake --------------------------------------------------------

    def start(
        self,
        mechanisms: str = "PLAIN AMQPLAIN",
        server_properties: dict[str, Any] | None = None,
    ) -> list[Any]:
        if self.conn.state.value == "INIT":
            self.conn.initiate()
        props = server_properties if server_properties is not None else {"product": "RabbitMQ"}
        return self.send(
            0,
            Connection.Start(server_properties=props, mechanisms=mechanisms, locales="en_US"),
        )

    def tune(
        self, channel_max: int = 2047, frame_max: int = 131072, heartbeat: int = 60
    ) -> list[Any]:
        return self.send(
            0, Connection.Tune(channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat)
        )

    def handshake(
        self,
        mechanisms: str = "PLAIN AMQPLAIN",
        channel_max: int = 2047,
        frame_max: int = 131072,
        heartbeat: int = 60,
    ) -> list[Any]:
        """Run the whole handshake; the client's frames are consumed and
        checked for the expected shape."""
        evs = self.start(mechanisms)
        sent = self.received()
        assert [s.name for s in sent] == ["ProtocolHeader", "Connection.StartOk"], sent
        evs += self.tune(channel_max, frame_max, heartbeat)
        sent = self.received()
        assert [s.name for s in sent] == ["Connection.TuneOk", "Connection.Open"], sent
        self.frame_max = self.conn.frame_max
        evs += self.send(0, Connection.OpenOk())
        assert self.conn.is_open
        return evs

    def open_channel(self, channel_id: int | None = None) -> AMQPChannel:
        """Open a channel and answer with open-ok."""
        ch = self.conn.open_channel(channel_id)
        assert self.received_names() == [(ch.id, "Channel.Open")]
        evs = self.send(ch.id, Channel.OpenOk())
        assert evs == [events.ChannelOpened(ch.id)]
        assert ch.is_open
        return ch

    def confirm_channel(self, channel_id: int | None = None) -> AMQPChannel:
        ch = self.open_channel(channel_id)
        token = ch.confirm_select()
        assert self.received_names() == [(ch.id, "Confirm.Select")]
        evs = self.send(ch.id, Confirm.SelectOk())
        assert len(evs) == 1 and isinstance(evs[0], events.RpcReply) and evs[0].token == token
        return ch

    def consume(self, ch: AMQPChannel, consumer_tag: str, *, no_ack: bool = False) -> None:
        token = ch.basic_consume("q", consumer_tag, no_ack=no_ack)
        assert self.received_names() == [(ch.id, "Basic.Consume")]
        evs = self.send(ch.id, build(Basic.ConsumeOk, consumer_tag=consumer_tag))
        assert len(evs) == 1 and isinstance(evs[0], events.RpcReply) and evs[0].token == token

    def heartbeat(self) -> list[Any]:
        return self.feed(frame.marshal(heartbeat.Heartbeat(), 0))


def state(obj: AMQPConnection | AMQPChannel) -> Any:
    """``obj.state``, untyped: lets a test assert a state change that mypy's
    narrowing of an earlier assertion would call unreachable."""
    return obj.state


def seq(value: int | None) -> int:
    """A publish's sequence number (the channel is in confirm mode)."""
    assert value is not None
    return value


def connected(**kwargs: Any) -> Peer:
    """A peer whose client finished the handshake."""
    peer = Peer(**kwargs)
    peer.handshake()
    return peer
