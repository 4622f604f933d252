"""Every state x every input of the transition tables.

A pair in the table moves the machine to the table's state; any other input
raises the library's ProtocolError (or, for the two absorbing end states and
the idempotent close, changes nothing).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import frame as pframe
from pamqp.commands import Basic, Channel, Connection

from trio_msg._protocol import (
    CHANNEL_TRANSITIONS,
    CONNECTION_TRANSITIONS,
    AMQPConnection,
    ChannelState,
    ConnectionState,
)
from trio_msg._protocol.errors import LocalProtocolError, ProtocolError

from .peer import Peer, build, content_frames

CS = ConnectionState
HS = ChannelState

# every method a server may send on channel 0, and a few it may not
CONNECTION_METHODS = {
    "Connection.Start": Connection.Start(server_properties={}, mechanisms="PLAIN", locales="en_US"),
    "Connection.Secure": Connection.Secure(challenge="x"),
    "Connection.Tune": Connection.Tune(channel_max=10, frame_max=8192, heartbeat=0),
    "Connection.OpenOk": Connection.OpenOk(),
    "Connection.Close": Connection.Close(reply_code=320, reply_text="bye", class_id=0, method_id=0),
    "Connection.CloseOk": Connection.CloseOk(),
    "Connection.Blocked": Connection.Blocked(reason="x"),
    "Connection.Unblocked": Connection.Unblocked(),
    "Connection.UpdateSecretOk": Connection.UpdateSecretOk(),
    "Connection.StartOk": Connection.StartOk(client_properties={}, response="x"),
    "Connection.TuneOk": Connection.TuneOk(),
    "Connection.Open": Connection.Open(),
}

CLOSE_METHODS = ("recv Connection.Close", "recv Connection.CloseOk")
# In the table, but refused by design: no supported SASL mechanism uses a
# challenge, so the core answers connection.secure with a 505.
REFUSED = {(CS.AWAIT_TUNE, "recv Connection.Secure")}

CONNECTION_INPUTS = sorted(
    {what for _, what in CONNECTION_TRANSITIONS} | {f"recv {name}" for name in CONNECTION_METHODS}
)


def connection_in(state: ConnectionState) -> AMQPConnection:
    """A connection brought to ``state`` by real traffic."""
    peer = Peer(heartbeat=0)
    conn = peer.conn
    if state is CS.INIT:
        return conn
    conn.initiate()
    if state is not CS.AWAIT_START:
        peer.start()
        if state is not CS.AWAIT_TUNE:
            peer.tune()
            if state is not CS.AWAIT_OPEN_OK:
                peer.send(0, Connection.OpenOk())
    if state is CS.CLOSING:
        conn.close()
    elif state is CS.CLOSED:
        conn.connection_lost()
    elif state is CS.ERROR:
        with pytest.raises(ProtocolError):
            conn.receive_data(b"\x08\x00\x00\x00\x00\x00\x00\x00")
    assert conn.state is state
    conn.data_to_send()
    conn.next_events()
    return conn


def apply_connection_input(conn: AMQPConnection, what: str) -> None:
    if what == "send protocol-header":
        conn.initiate()
    elif what == "send close":
        conn.close()
    elif what == "lost":
        conn.connection_lost()
    elif what == "protocol-error":
        conn.receive_data(b"\x08\x00\x00\x00\x00\x00\x00\x00")  # bad frame-end octet
    elif what == "recv other":
        conn.receive_data(pframe.marshal(Connection.Blocked(reason="x"), 0))
    else:
        name = what.removeprefix("recv ")
        conn.receive_data(pframe.marshal(CONNECTION_METHODS[name], 0))


def check_connection_step(conn: AMQPConnection, what: str) -> None:
    before = conn.state
    key = what
    if what == "recv other" and before is not CS.CLOSING:
        key = "recv Connection.Blocked"
    elif before is CS.CLOSING and what.startswith("recv ") and what not in CLOSE_METHODS:
        key = "recv other"  # discarded after our close
    expected = CONNECTION_TRANSITIONS.get((before, key))
    if (before, what) in REFUSED:
        expected = None
    try:
        apply_connection_input(conn, what)
    except LocalProtocolError:
        # a command the state does not allow: refused, nothing changes
        assert what.startswith("send "), (before, what)
        assert expected is None, (before, what)
        assert conn.state is before
        return
    except ProtocolError:
        assert expected is None or what == "protocol-error", (before, what)
        assert conn.state is (CS.ERROR if before is not CS.CLOSED else CS.CLOSED)
        return
    except Exception as exc:  # pragma: no cover - the assertion below explains
        raise AssertionError(f"{before} x {what!r} raised {exc!r}, not a ProtocolError") from exc
    if expected is not None:
        assert conn.state is expected, (before, what, conn.state)
        return
    # not in the table and no error: only the documented no-ops
    no_ops = {
        (CS.CLOSED, "lost"),
        (CS.CLOSING, "send close"),
        (CS.CLOSED, "send close"),
        (CS.ERROR, "send close"),
    }
    if before is CS.INIT and what == "send close":
        assert conn.state is CS.CLOSED  # nothing was sent, nothing to wait for
    elif before is CS.CLOSED and what.startswith(("recv ", "protocol-error")):
        assert conn.state is CS.CLOSED  # a closed connection ignores input
    else:
        assert (before, what) in no_ops, (before, what, conn.state)
        assert conn.state is before


@pytest.mark.parametrize("what", CONNECTION_INPUTS)
@pytest.mark.parametrize("state", list(CS), ids=lambda s: s.value)
def test_every_connection_state_and_input(state: ConnectionState, what: str) -> None:
    check_connection_step(connection_in(state), what)


def test_table_covers_the_handshake_path() -> None:
    path = [
        "send protocol-header",
        "recv Connection.Start",
        "recv Connection.Tune",
        "recv Connection.OpenOk",
    ]
    state = CS.INIT
    for what in path:
        state = CONNECTION_TRANSITIONS[(state, what)]
    assert state is CS.OPEN


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=st.sampled_from(list(CS)),
    inputs=st.lists(st.sampled_from(CONNECTION_INPUTS), max_size=8),
)
def test_random_connection_input_sequences(start: ConnectionState, inputs: list[str]) -> None:
    conn = connection_in(start)
    for what in inputs:
        check_connection_step(conn, what)
        if conn.state is CS.ERROR:
            with pytest.raises(ProtocolError):
                conn.receive_data(b"")


# --- channels --------------------------------------------------------------------------

CHANNEL_INPUTS = sorted(
    {what for _, what in CHANNEL_TRANSITIONS} | {"recv Channel.Flow", "recv Channel.FlowOk"}
)


def channel_in(state: ChannelState) -> tuple[Peer, int]:
    peer = Peer(heartbeat=0)
    peer.handshake()
    ch = peer.conn.open_channel()
    if state is not HS.OPENING:
        peer.send(ch.id, Channel.OpenOk())
    if state is HS.CLOSING:
        ch.close()
    elif state is HS.CLOSED:
        ch.close()
        peer.send(ch.id, Channel.CloseOk())
    assert ch.state is state
    peer.conn.data_to_send()
    peer.conn.next_events()
    return peer, ch.id


def _channel_payload(what: str, cid: int) -> bytes:
    if what == "recv method":
        return bytes(pframe.marshal(Basic.Ack(delivery_tag=1), cid))
    if what == "recv content":
        deliver = build(
            Basic.Deliver,
            consumer_tag="ct",
            delivery_tag=1,
            redelivered=False,
            exchange="",
            routing_key="",
        )
        return b"".join(content_frames(cid, deliver, b"abc"))
    methods: dict[str, Callable[[], object]] = {
        "recv Channel.OpenOk": Channel.OpenOk,
        "recv Channel.Close": lambda: Channel.Close(
            reply_code=406, reply_text="x", class_id=0, method_id=0
        ),
        "recv Channel.CloseOk": Channel.CloseOk,
        "recv Channel.Flow": lambda: Channel.Flow(active=False),
        "recv Channel.FlowOk": lambda: Channel.FlowOk(active=False),
    }
    return bytes(pframe.marshal(methods[what](), cid))


@pytest.mark.parametrize("what", CHANNEL_INPUTS)
@pytest.mark.parametrize("state", list(HS), ids=lambda s: s.value)
def test_every_channel_state_and_input(state: ChannelState, what: str) -> None:
    peer, cid = channel_in(state)
    conn = peer.conn
    ch = conn.channels.get(cid)
    obj = ch if ch is not None else None
    expected = CHANNEL_TRANSITIONS.get((state, what))
    if state is HS.CLOSED:
        # the channel is forgotten: its number is no longer open
        if what in ("send close", "connection closed"):
            return
        with pytest.raises(ProtocolError) as info:
            conn.receive_data(_channel_payload(what, cid))
        assert info.value.reply_code == 504
        return
    assert obj is not None
    if what == "send close":
        obj.close()
        if state is HS.CLOSING:
            expected = HS.CLOSING  # idempotent: nothing more is sent
    elif what == "connection closed":
        conn.connection_lost()
    else:
        if what == "recv Channel.Flow" and state is HS.OPEN:
            expected = HS.OPEN  # a method the OPEN channel handles
        if what == "recv Channel.Flow" and state is HS.CLOSING:
            expected = HS.CLOSING  # discarded after our close
        if what == "recv Channel.FlowOk" and state is HS.CLOSING:
            expected = HS.CLOSING
        if what == "recv method" and state is HS.OPEN:
            expected = HS.OPEN  # an ack on a channel not confirming: ignored
        try:
            conn.receive_data(_channel_payload(what, cid))
        except ProtocolError:
            assert expected is None, (state, what)
            assert conn.state is CS.ERROR
            assert obj.state is HS.CLOSED
            return
    assert expected is not None, (state, what, obj.state)
    assert obj.state is expected


def test_every_table_pair_is_exercised() -> None:
    seen_conn = {(s, w) for s, w in itertools.product(CS, CONNECTION_INPUTS)}
    assert set(CONNECTION_TRANSITIONS) <= seen_conn
    seen_chan = {(s, w) for s, w in itertools.product(HS, CHANNEL_INPUTS)}
    assert set(CHANNEL_TRANSITIONS) <= seen_chan
