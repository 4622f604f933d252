"""Retry policies (kombu's ``ensure()`` keywords) and which errors revive.

A :class:`RetryPolicy` says how often to try again and how long to wait in
between; it is used twice:

- by a reviving connection (``connect(url, revive=...)``) between its
  reconnection attempts, and
- by ``Producer.publish(retry=True, retry_policy=...)`` between attempts to
  publish the same message when the connection was lost under it.

Both only ever retry the failures in :data:`REVIVABLE`: the connection was
lost or forced closed, or no connection could be made.  A wrong password, a
vhost the user may not use, or a channel error caused by the request itself
would fail the same way again, and are raised at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._protocol.errors import (
    AuthenticationError,
    ConnectionForced,
    ConnectionLost,
    InternalError,
    TrioMsgError,
)
from .errors import ConnectionFailed

__all__ = ["REVIVABLE", "RetryPolicy", "is_revivable"]

#: Connection-level failures that a new connection can cure.
REVIVABLE: tuple[type[TrioMsgError], ...] = (
    ConnectionLost,  # socket closed or broken; HeartbeatTimeout is one
    ConnectionForced,  # 320: rabbitmqctl close_connection, node shutdown
    InternalError,  # 541: the broker's own fault
    ConnectionFailed,  # refused, unreachable, timed out, TLS handshake failed
)


def is_revivable(error: BaseException | None) -> bool:
    """Whether *error* is a connection failure that reconnecting may cure."""
    return isinstance(error, REVIVABLE) and not isinstance(error, AuthenticationError)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry, and how long to wait before each retry.

    The waits are ``interval_start``, then ``interval_step`` longer each time,
    never more than ``interval_max`` seconds (kombu's ``ensure()`` keywords).
    ``max_retries=None`` retries until the caller's cancel scope says stop.
    """

    max_retries: int | None = None
    interval_start: float = 0.0
    interval_step: float = 1.0
    interval_max: float = 10.0

    def __post_init__(self) -> None:
        if self.max_retries is not None and (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError(f"max_retries must be None or an int >= 0, not {self.max_retries!r}")
        for name in ("interval_start", "interval_step", "interval_max"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")

    @classmethod
    def coerce(cls, value: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy:
        """A policy from a policy, kombu's keyword dict, or ``None`` (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {
                "max_retries",
                "interval_start",
                "interval_step",
                "interval_max",
            }
            if unknown:
                raise TypeError(f"unknown retry policy keys: {', '.join(sorted(unknown))}")
            return cls(**value)
        raise TypeError(
            f"a retry policy is a RetryPolicy or a dict of its fields, not {type(value).__name__}"
        )

    def intervals(self) -> Iterator[float]:
        """The wait before each retry, as many as ``max_retries`` allows."""
        wait = self.interval_start
        count = 0
        while self.max_retries is None or count < self.max_retries:
            yield min(wait, self.interval_max)
            wait += self.interval_step
            count += 1
