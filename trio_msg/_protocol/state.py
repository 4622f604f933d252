"""The state machines as data.

Each table maps ``(state, input)`` to the next state.  An input is the name of
a method received from the peer (``"recv Connection.Tune"``), a command from
the driver (``"send close"``) or a transport event (``"lost"``).  The core
looks method and command transitions up here, so a pair missing from a table
is a protocol error; the tests enumerate the tables, and ``docs/`` draws its
state diagrams from these same dicts.

Three kinds of row describe what the code does without a look-up: the
connection's ``"lost"`` and ``"protocol-error"`` rows (any state to CLOSED or
ERROR, set directly when the transport fails or the peer breaks the
protocol), and the channel's ``"recv method"`` / ``"recv content"`` rows (the
channel checks for OPEN, or drops the frame while CLOSING).
``tests/protocol/test_transitions.py`` checks that the code agrees with them.
"""

from __future__ import annotations

import enum

__all__ = [
    "CHANNEL_TRANSITIONS",
    "CONNECTION_TRANSITIONS",
    "ChannelState",
    "ConnectionState",
]


class ConnectionState(enum.Enum):
    INIT = "INIT"
    AWAIT_START = "AWAIT_START"
    AWAIT_TUNE = "AWAIT_TUNE"
    AWAIT_OPEN_OK = "AWAIT_OPEN_OK"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


class ChannelState(enum.Enum):
    OPENING = "OPENING"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


_C = ConnectionState

CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, str], ConnectionState] = {
    (_C.INIT, "send protocol-header"): _C.AWAIT_START,
    (_C.AWAIT_START, "recv Connection.Start"): _C.AWAIT_TUNE,
    (_C.AWAIT_TUNE, "recv Connection.Secure"): _C.AWAIT_TUNE,
    (_C.AWAIT_TUNE, "recv Connection.Tune"): _C.AWAIT_OPEN_OK,
    (_C.AWAIT_OPEN_OK, "recv Connection.OpenOk"): _C.OPEN,
    # The peer may close at any point of the handshake (e.g. 403 for a
    # refused login, 530 for a forbidden vhost) or once open.
    (_C.AWAIT_TUNE, "recv Connection.Close"): _C.CLOSED,
    (_C.AWAIT_OPEN_OK, "recv Connection.Close"): _C.CLOSED,
    (_C.OPEN, "recv Connection.Close"): _C.CLOSED,
    (_C.OPEN, "recv Connection.Blocked"): _C.OPEN,
    (_C.OPEN, "recv Connection.Unblocked"): _C.OPEN,
    (_C.OPEN, "recv Connection.UpdateSecretOk"): _C.OPEN,
    (_C.OPEN, "send close"): _C.CLOSING,
    (_C.AWAIT_START, "send close"): _C.CLOSED,
    (_C.AWAIT_TUNE, "send close"): _C.CLOSING,
    (_C.AWAIT_OPEN_OK, "send close"): _C.CLOSING,
    # After our close, everything but close and close-ok is discarded.
    (_C.CLOSING, "recv Connection.CloseOk"): _C.CLOSED,
    (_C.CLOSING, "recv Connection.Close"): _C.CLOSED,
    (_C.CLOSING, "recv other"): _C.CLOSING,
    # Any state: the transport went away, or the peer broke the protocol.
    **{(s, "lost"): _C.CLOSED for s in _C if s is not _C.CLOSED},
    **{(s, "protocol-error"): _C.ERROR for s in _C if s not in (_C.CLOSED, _C.ERROR)},
    (_C.ERROR, "lost"): _C.CLOSED,
}

_H = ChannelState

CHANNEL_TRANSITIONS: dict[tuple[ChannelState, str], ChannelState] = {
    (_H.OPENING, "recv Channel.OpenOk"): _H.OPEN,
    (_H.OPENING, "recv Channel.Close"): _H.CLOSED,
    (_H.OPENING, "send close"): _H.CLOSING,
    (_H.OPEN, "recv method"): _H.OPEN,
    (_H.OPEN, "recv content"): _H.OPEN,
    (_H.OPEN, "recv Channel.Close"): _H.CLOSED,
    (_H.OPEN, "send close"): _H.CLOSING,
    # After our close, everything but close and close-ok is discarded.
    (_H.CLOSING, "recv method"): _H.CLOSING,
    (_H.CLOSING, "recv content"): _H.CLOSING,
    (_H.CLOSING, "recv Channel.OpenOk"): _H.CLOSING,
    (_H.CLOSING, "recv Channel.Close"): _H.CLOSED,
    (_H.CLOSING, "recv Channel.CloseOk"): _H.CLOSED,
    # The connection went away under the channel.
    (_H.OPENING, "connection closed"): _H.CLOSED,
    (_H.OPEN, "connection closed"): _H.CLOSED,
    (_H.CLOSING, "connection closed"): _H.CLOSED,
}
