"""The connection handshake, SASL, tuning, close and heartbeats."""

from __future__ import annotations

import platform
import struct
from typing import Any

import pytest
from pamqp import heartbeat as pheartbeat
from pamqp.commands import Channel, Connection

from trio_msg._protocol import AMQPConnection, ConnectionState, Outcome, events
from trio_msg._protocol.errors import (
    AuthenticationError,
    ChannelClosed,
    ConnectionClosed,
    ConnectionForced,
    ConnectionLost,
    FrameError,
    HeartbeatTimeout,
    LocalProtocolError,
    MessageStateError,
    NotAllowed,
    WrongProtocol,
)

from .peer import Peer, connected, seq, state


def _amqplain(login: bytes, password: bytes) -> bytes:
    return (
        b"\x05LOGINS"
        + struct.pack(">I", len(login))
        + login
        + b"\x08PASSWORDS"
        + struct.pack(">I", len(password))
        + password
    )


def _response_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


@pytest.mark.parametrize(
    ("offered", "requested", "chosen", "response"),
    [
        ("PLAIN AMQPLAIN", None, "PLAIN", b"\x00us\xc3\xa9r\x00p\xc3\xa4ss"),
        ("AMQPLAIN PLAIN", None, "PLAIN", b"\x00us\xc3\xa9r\x00p\xc3\xa4ss"),
        ("AMQPLAIN", None, "AMQPLAIN", _amqplain(b"us\xc3\xa9r", b"p\xc3\xa4ss")),
        ("PLAIN AMQPLAIN", "AMQPLAIN", "AMQPLAIN", _amqplain(b"us\xc3\xa9r", b"p\xc3\xa4ss")),
        ("PLAIN EXTERNAL", "EXTERNAL", "EXTERNAL", b""),
        ("EXTERNAL PLAIN", "external", "EXTERNAL", b""),
    ],
)
def test_sasl_mechanisms(offered: str, requested: str | None, chosen: str, response: bytes) -> None:
    peer = Peer(username="usér", password="päss", auth_mechanism=requested)
    assert peer.start(mechanisms=offered) == []
    header, start_ok = peer.received()
    assert header.name == "ProtocolHeader"
    assert (header.frame.major_version, header.frame.minor_version, header.frame.revision) == (
        0,
        9,
        1,
    )
    assert start_ok.channel == 0
    assert start_ok.name == "Connection.StartOk"
    assert start_ok.frame.mechanism == chosen
    assert _response_bytes(start_ok.frame.response) == response
    assert start_ok.frame.locale == "en_US"
    peer.tune()
    peer.received()
    (opened,) = peer.send(0, Connection.OpenOk())
    assert isinstance(opened, events.ConnectionOpened)
    assert opened.mechanism == chosen


@pytest.mark.parametrize(
    ("offered", "requested"),
    [
        ("AMQPLAIN", "PLAIN"),
        ("PLAIN AMQPLAIN", "EXTERNAL"),
        ("PLAIN", "CRAM-MD5"),
        ("EXTERNAL", None),  # EXTERNAL is never picked unless asked for
        ("", None),
    ],
)
def test_mechanism_not_offered_is_an_authentication_error(
    offered: str, requested: str | None
) -> None:
    peer = Peer(username="u", password="secret-pw", auth_mechanism=requested)
    evs = peer.start(mechanisms=offered)
    (terminated,) = evs
    assert isinstance(terminated, events.ConnectionTerminated)
    assert isinstance(terminated.error, AuthenticationError)
    assert "secret-pw" not in str(terminated.error)
    # never a silent fallback: no start-ok with another mechanism went out
    assert [s.name for s in peer.received()] == ["ProtocolHeader"]
    assert peer.conn.state is ConnectionState.CLOSED


def test_client_properties() -> None:
    peer = Peer(connection_name="my-conn", client_properties={"extra": "yes"})
    peer.start()
    _, start_ok = peer.received()
    props = start_ok.frame.client_properties
    assert props["product"] == "trio_msg"
    assert isinstance(props["version"], str) and props["version"]
    assert platform.python_version() in props["platform"]
    assert props["connection_name"] == "my-conn"
    assert props["extra"] == "yes"
    assert props["capabilities"] == {
        "publisher_confirms": True,
        "consumer_cancel_notify": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "connection.blocked": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
    }


def test_server_properties_reach_the_opened_event() -> None:
    peer = Peer()
    peer.start(server_properties={"product": "RabbitMQ", "version": "3.13.0"})
    peer.received()
    peer.tune(channel_max=100, frame_max=8192, heartbeat=30)
    peer.received()
    (opened,) = peer.send(0, Connection.OpenOk())
    assert opened == events.ConnectionOpened(
        {"product": "RabbitMQ", "version": "3.13.0"}, 8192, 100, 30, "PLAIN"
    )


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ((2047, 131072, 60), (2047, 131072, 60), (2047, 131072, 60)),
        ((100, 131072, 60), (2047, 8192, 30), (100, 8192, 30)),
        ((2047, 8192, 10), (50, 131072, 60), (50, 8192, 10)),
        # zero means "no limit" / "no heartbeat" on that side: take the other
        ((0, 0, 0), (2047, 131072, 60), (2047, 131072, 60)),
        ((2047, 131072, 60), (0, 0, 0), (2047, 131072, 60)),
        ((0, 0, 0), (0, 0, 0), (65535, 0xFFFFFFFF, 0)),
        ((10, 65536, 0), (20, 0, 580), (10, 65536, 580)),
        # heartbeat=None: take the server's value whatever it is
        ((2047, 131072, None), (2047, 131072, 0), (2047, 131072, 0)),
        ((2047, 131072, None), (2047, 131072, 580), (2047, 131072, 580)),
    ],
)
def test_tune_negotiation(
    client: tuple[int, int, int | None],
    server: tuple[int, int, int],
    expected: tuple[int, int, int],
) -> None:
    channel_max, frame_max, hb = client
    peer = Peer(channel_max=channel_max, frame_max=frame_max, heartbeat=hb, vhost="/prod")
    peer.start()
    peer.received()
    assert peer.tune(*server) == []
    tune_ok, open_ = peer.received()
    assert tune_ok.name == "Connection.TuneOk"
    assert (tune_ok.frame.channel_max, tune_ok.frame.frame_max, tune_ok.frame.heartbeat) == expected
    assert open_.name == "Connection.Open"
    assert open_.frame.virtual_host == "/prod"
    assert (peer.conn.channel_max, peer.conn.frame_max, peer.conn.heartbeat) == expected


def test_tuned_limits_apply_to_the_reader() -> None:
    peer = Peer(channel_max=5)
    peer.handshake(channel_max=2047, frame_max=8192)
    ch = peer.open_channel(5)
    assert ch.id == 5
    with pytest.raises(Exception, match="in use or out of range"):
        peer.conn.open_channel(6)


def test_open_carries_unicode_vhost() -> None:
    peer = Peer(vhost="прод/ü")
    peer.start()
    peer.received()
    peer.tune()
    _, open_ = peer.received()
    assert open_.frame.virtual_host == "прод/ü"


@pytest.mark.parametrize("when", ["after start", "after tune"])
def test_403_during_handshake(when: str) -> None:
    peer = Peer(username="u", password="hunter2")
    peer.start()
    peer.received()
    if when == "after tune":
        peer.tune()
        peer.received()
    evs = peer.send(
        0,
        Connection.Close(
            reply_code=403, reply_text="ACCESS_REFUSED - Login was refused", class_id=0, method_id=0
        ),
    )
    (terminated,) = evs
    assert isinstance(terminated, events.ConnectionTerminated)
    if when == "after start":
        assert isinstance(terminated.error, AuthenticationError)
    assert isinstance(terminated.error, ConnectionClosed)
    assert terminated.error.reply_code == 403
    assert "hunter2" not in str(terminated.error)
    assert [s.name for s in peer.received()] == ["Connection.CloseOk"]
    assert peer.conn.state is ConnectionState.CLOSED


def test_vhost_refused_during_handshake() -> None:
    peer = Peer(vhost="/nope")
    peer.start()
    peer.received()
    peer.tune()
    peer.received()
    (terminated,) = peer.send(
        0, Connection.Close(reply_code=530, reply_text="NOT_ALLOWED", class_id=10, method_id=40)
    )
    assert isinstance(terminated.error, NotAllowed)
    assert (terminated.error.class_id, terminated.error.method_id) == (10, 40)


@pytest.mark.parametrize("after", ["protocol header", "start", "tune"])
def test_eof_during_the_handshake_is_a_loss_not_a_refused_login(after: str) -> None:
    """We ask for authentication_failure_close: a broker refusing our
    credentials says so with a 403 (test_403_during_handshake).  A socket
    that ends meanwhile is a loss, which a reviving connection retries."""
    peer = Peer()
    peer.conn.initiate()
    if after != "protocol header":
        peer.start()
    if after == "tune":
        peer.tune()
    peer.conn.connection_lost()
    (terminated,) = peer.events()
    assert type(terminated.error) is ConnectionLost
    assert "during the handshake" in str(terminated.error)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x16\x03\x01\x00\x2a\x02\x00\x00\x26\x03\x03",  # a TLS server's hello
    ],
)
@pytest.mark.parametrize("split", [False, True])
def test_a_server_that_does_not_speak_amqp(answer: bytes, split: bool) -> None:
    """Whatever the first bytes are, if they are no AMQP frame the error says
    the server does not speak AMQP and quotes them (not "unknown frame type 72")."""
    conn = AMQPConnection()
    conn.initiate()
    conn.data_to_send()
    with pytest.raises(WrongProtocol) as info:
        for piece in [answer[:3], answer[3:]] if split else [answer]:
            conn.receive_data(piece)
    assert "does not speak AMQP 0-9-1" in str(info.value)
    assert repr(answer[:7])[:-1] in str(info.value)  # quoted (without the closing quote)
    assert isinstance(info.value, FrameError)
    (terminated,) = conn.next_events()
    assert terminated.error is info.value
    assert conn.data_to_send() == b""  # no connection.close to a stranger


def test_a_server_of_another_amqp_version() -> None:
    conn = AMQPConnection()
    conn.initiate()
    with pytest.raises(WrongProtocol) as info:
        conn.receive_data(b"AMQP\x00\x01\x00\x00")
    assert "protocol header b'AMQP\\x00\\x01\\x00\\x00'" in str(info.value)


def test_client_close() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.conn.close()
    (close,) = peer.received()
    assert (close.channel, close.name) == (0, "Connection.Close")
    assert close.frame.reply_code == 200
    assert peer.conn.state is ConnectionState.CLOSING
    # everything but close / close-ok is discarded while closing
    assert peer.deliver(ch.id, "ct", 1) == []
    assert peer.send(0, Connection.Blocked(reason="x")) == []
    evs = peer.send(0, Connection.CloseOk())
    assert [type(e) for e in evs] == [events.ChannelClosed, events.ConnectionTerminated]
    err = evs[-1].error
    assert type(err) is ConnectionClosed
    assert err.reply_code == 200
    assert err.by_peer is False
    assert state(peer.conn) is ConnectionState.CLOSED
    assert peer.received() == []
    # a closed connection ignores whatever still arrives
    assert peer.heartbeat() == []


def test_server_close_while_client_closing() -> None:
    peer = connected()
    peer.conn.close()
    peer.received()
    (terminated,) = peer.send(
        0, Connection.Close(reply_code=320, reply_text="shutdown", class_id=0, method_id=0)
    )
    assert isinstance(terminated.error, ConnectionForced)
    assert [s.name for s in peer.received()] == ["Connection.CloseOk"]


def test_server_close() -> None:
    peer = connected()
    ch = peer.confirm_channel()
    tag = seq(ch.publish("", "q", b"x"))
    peer.received()
    evs = peer.send(
        0,
        Connection.Close(
            reply_code=320, reply_text="CONNECTION_FORCED - shutdown", class_id=0, method_id=0
        ),
    )
    assert [s.name for s in peer.received()] == ["Connection.CloseOk"]
    confirmation, ch_closed, terminated = evs
    assert confirmation == events.Confirmation(ch.id, (tag,), Outcome.UNKNOWN)
    assert isinstance(ch_closed, events.ChannelClosed)
    assert isinstance(terminated, events.ConnectionTerminated)
    assert isinstance(terminated.error, ConnectionForced)
    assert terminated.error.reply_code == 320
    assert terminated.error.by_peer is True
    assert isinstance(ch_closed.error, ConnectionForced)
    assert not ch.is_open
    with pytest.raises(ConnectionForced):
        ch.publish("", "q", b"x")


def test_blocked_and_unblocked() -> None:
    peer = connected()
    assert peer.send(0, Connection.Blocked(reason="low on memory")) == [
        events.ConnectionBlocked("low on memory")
    ]
    assert peer.conn.blocked
    assert peer.send(0, Connection.Unblocked()) == [events.ConnectionUnblocked()]
    assert not peer.conn.blocked


def test_close_before_handshake() -> None:
    conn = AMQPConnection()
    conn.close()
    terminated: Any
    (terminated,) = conn.next_events()
    assert isinstance(terminated.error, ConnectionClosed)
    assert conn.data_to_send() == b""
    conn = AMQPConnection()
    conn.initiate()
    conn.data_to_send()
    conn.close()
    assert conn.data_to_send() == b""  # no method may precede connection.start
    assert conn.state is ConnectionState.CLOSED


# --- heartbeats ---------------------------------------------------------------


def _heartbeat_peer(hb: int = 10) -> Peer:
    peer = Peer(heartbeat=hb)
    peer.handshake(heartbeat=hb)
    return peer


def test_heartbeat_queued_after_half_an_interval_without_sending() -> None:
    peer = _heartbeat_peer(10)
    conn = peer.conn
    conn.tick(100.0)  # establishes the clock
    assert conn.data_to_send() == b""
    peer.heartbeat()
    conn.tick(104.9)
    assert conn.data_to_send() == b""
    peer.heartbeat()
    conn.tick(105.0)
    sent = peer.received()
    assert [(s.channel, type(s.frame)) for s in sent] == [(0, pheartbeat.Heartbeat)]
    # it was just sent, so not again right away
    peer.heartbeat()
    conn.tick(106.0)  # notices that data went out (send times are seen at ticks)
    assert conn.data_to_send() == b""
    assert conn.next_deadline() == 111.0
    peer.heartbeat()
    conn.tick(110.9)
    assert conn.data_to_send() == b""
    conn.tick(111.0)
    assert [type(s.frame) for s in peer.received()] == [pheartbeat.Heartbeat]


def test_sending_data_postpones_the_heartbeat() -> None:
    peer = _heartbeat_peer(10)
    ch = peer.open_channel()
    conn = peer.conn
    conn.tick(0.0)
    ch.publish("", "q", b"x")
    peer.received()
    conn.tick(3.0)  # data went out since the last tick
    peer.heartbeat()
    conn.tick(7.0)
    assert conn.data_to_send() == b""
    conn.tick(8.0)
    assert [type(s.frame) for s in peer.received()] == [pheartbeat.Heartbeat]


def test_any_inbound_frame_counts_as_life() -> None:
    peer = _heartbeat_peer(10)
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    conn = peer.conn
    conn.tick(0.0)
    for now in range(5, 100, 5):
        # a delivery, not a heartbeat frame, keeps the connection alive
        peer.deliver(ch.id, "ct", now)
        conn.tick(float(now))
        conn.data_to_send()
    assert conn.is_open


def test_two_silent_intervals_kill_the_connection() -> None:
    peer = _heartbeat_peer(10)
    ch = peer.confirm_channel()
    peer.consume(ch, "ct")
    peer.deliver(ch.id, "ct", 1)
    tags = [seq(ch.publish("", "q", b"x")), seq(ch.publish("", "q", b"y"))]
    peer.received()
    conn = peer.conn
    conn.tick(50.0)
    conn.tick(60.0)
    assert conn.next_events() == []
    conn.tick(69.9)
    assert conn.next_events() == []
    assert conn.is_open
    conn.tick(70.0)
    evs: list[Any] = conn.next_events()
    confirmation, ch_closed, terminated = evs
    assert confirmation == events.Confirmation(ch.id, tuple(tags), Outcome.UNKNOWN)
    assert isinstance(ch_closed, events.ChannelClosed)
    assert isinstance(ch_closed.error, HeartbeatTimeout)
    assert isinstance(terminated.error, HeartbeatTimeout)
    assert conn.state is ConnectionState.CLOSED
    assert conn.channels == {}
    assert not ch.is_open
    # the delivery of the dead channel can no longer be settled
    with pytest.raises(MessageStateError):
        ch.ack(1)
    # nothing more happens afterwards
    conn.tick(200.0)
    assert conn.next_events() == []


def test_no_heartbeats_when_disabled() -> None:
    peer = Peer(heartbeat=0)
    peer.handshake(heartbeat=0)
    assert peer.conn.heartbeat == 0
    assert peer.conn.next_deadline() is None
    peer.conn.tick(1e9)
    assert peer.conn.data_to_send() == b""
    assert peer.conn.is_open


def test_next_deadline() -> None:
    peer = _heartbeat_peer(10)
    conn = peer.conn
    assert conn.next_deadline() == 0.0  # tick at once to start the clock
    conn.tick(100.0)
    assert conn.next_deadline() == 105.0


def test_connection_lost_resolves_everything() -> None:
    peer = connected()
    ch = peer.confirm_channel()
    t1 = seq(ch.publish("", "q", b"1"))
    token = ch.queue_declare("q")
    peer.received()
    peer.conn.connection_lost()
    confirmation, ch_closed, terminated = peer.events()
    assert confirmation == events.Confirmation(ch.id, (t1,), Outcome.UNKNOWN)
    assert isinstance(ch_closed.error, ConnectionLost)
    assert isinstance(terminated.error, ConnectionLost)
    assert ch.pending_requests == 0
    assert token  # the token is simply never answered
    peer.conn.connection_lost()
    assert peer.events() == []


def test_channel_close_event_error_type() -> None:
    peer = connected()
    ch = peer.open_channel()
    ch.close()
    peer.received()
    (closed,) = peer.send(ch.id, Channel.CloseOk())
    assert isinstance(closed.error, ChannelClosed)
    assert closed.error.reply_code == 200


def test_initiate_twice_is_a_local_error() -> None:
    peer = connected()
    with pytest.raises(LocalProtocolError):
        peer.conn.initiate()
    assert peer.conn.is_open
    assert peer.received() == []
