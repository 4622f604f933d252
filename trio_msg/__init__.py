"""trio_msg: AMQP 0-9-1 messaging for structured concurrency.

kombu's Producer / Consumer API as async context managers, on trio first and
on asyncio through anyio, over a sans-IO protocol core built on pamqp.
"""

import importlib
from typing import Any

from ._observe import (
    Blocked,
    Closed,
    ConnectionEvent,
    ConnectionStatistics,
    Lost,
    Missed,
    Revived,
    Reviving,
    Unblocked,
    Watcher,
)
from ._params import ConnectionParameters, parse_url
from ._protocol.events import Outcome
from ._protocol.frames import BasicProperties
from ._retry import RetryPolicy
from .channel import Channel, PublishResult, QueueDeclareOk
from .connection import Connection, connect
from .entity import Exchange, Queue, binding, maybe_declare
from .errors import TrioMsgError
from .message import Message, MessageState
from .messaging import Consumer, Pipeline, Producer
from .simple import SimpleBuffer, SimpleQueue
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "BasicProperties",
    "Blocked",
    "Channel",
    "Closed",
    "Connection",
    "ConnectionEvent",
    "ConnectionParameters",
    "ConnectionStatistics",
    "Consumer",
    "Exchange",
    "Lost",
    "Message",
    "MessageState",
    "Missed",
    "Outcome",
    "Pipeline",
    "Producer",
    "PublishResult",
    "Queue",
    "QueueDeclareOk",
    "RetryPolicy",
    "Revived",
    "Reviving",
    "SimpleBuffer",
    "SimpleQueue",
    "TrioMsgError",
    "Unblocked",
    "Watcher",
    "Worker",
    "__version__",
    "binding",
    "connect",
    "maybe_declare",
    "parse_url",
]

#: Submodules imported on first use, not with the package: the codecs are
#: needed only once a body is encoded or decoded (see ``_content``).
_LAZY = frozenset({"compression", "serialization"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
