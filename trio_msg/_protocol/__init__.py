"""The sans-IO AMQP 0-9-1 core: bytes and a clock in, events and bytes out.

Imports only the standard library and pamqp (``tests/protocol`` checks it).
"""

from .connection import DEFAULT_MAX_BODY_SIZE, AMQPChannel, AMQPConnection
from .events import (
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    Confirmation,
    ConnectionBlocked,
    ConnectionOpened,
    ConnectionTerminated,
    ConnectionUnblocked,
    ConsumerCancelled,
    Delivery,
    Event,
    Outcome,
    Returned,
    RpcReply,
)
from .frames import BasicProperties, FrameReader
from .state import CHANNEL_TRANSITIONS, CONNECTION_TRANSITIONS, ChannelState, ConnectionState

__all__ = [
    "CHANNEL_TRANSITIONS",
    "CONNECTION_TRANSITIONS",
    "DEFAULT_MAX_BODY_SIZE",
    "AMQPChannel",
    "AMQPConnection",
    "BasicProperties",
    "ChannelClosed",
    "ChannelFlow",
    "ChannelOpened",
    "ChannelState",
    "Confirmation",
    "ConnectionBlocked",
    "ConnectionOpened",
    "ConnectionState",
    "ConnectionTerminated",
    "ConnectionUnblocked",
    "ConsumerCancelled",
    "Delivery",
    "Event",
    "FrameReader",
    "Outcome",
    "Returned",
    "RpcReply",
]
