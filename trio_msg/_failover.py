"""The order in which a connection tries its brokers (kombu's ``failover_strategy``).

Plain stdlib, no IO.  A :class:`FailoverCycle` belongs to one
:class:`~trio_msg.Connection` and lives as long as it does: each connection
attempt (the first one, and each attempt of a reviving connection) takes one
*round* from it and tries those hosts in order until one answers.  A round
has as many hosts as the connection has (kombu also waits its retry
interval only after a whole cycle of hosts):

* ``"round-robin"`` (the default, as in kombu): the hosts in the order
  given, cycling; each round starts with the host after the last one tried,
  so after a loss the next host is tried first.
* ``"shuffle"``: every round is a fresh random order of all the hosts (each
  host once per round; kombu's ``shufflecycle`` draws each host at random,
  so it may try one host twice and another not at all).
* a callable: called once, with the list of ``(host, port)`` pairs, it
  returns an iterator of those pairs (kombu passes URLs instead); rounds
  take its items in order, as many as there are hosts.  Unlike kombu,
  which always starts with the first URL and then skips the iterator's
  first item, the iterator's order is used from the first attempt.  An item
  that is not one of the hosts is a :exc:`ValueError`; an exhausted
  iterator leaves no host to try (:class:`~trio_msg.errors.ConnectionFailed`).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeAlias

from .errors import ConnectionFailed

__all__ = ["FAILOVER_STRATEGIES", "FailoverCycle", "FailoverStrategy", "check_strategy"]

Address: TypeAlias = tuple[str, int]
#: A strategy: one of :data:`FAILOVER_STRATEGIES`, or a callable taking the
#: list of ``(host, port)`` pairs and returning an iterator of them.
FailoverStrategy: TypeAlias = str | Callable[[list[Address]], Iterable[Address]]
#: The strategies known by name.
FAILOVER_STRATEGIES = frozenset({"round-robin", "shuffle"})


def check_strategy(strategy: object) -> None:
    """:exc:`ValueError` / :exc:`TypeError` unless *strategy* is a known
    name or a callable."""
    if isinstance(strategy, str):
        if strategy not in FAILOVER_STRATEGIES:
            raise ValueError(
                f"unknown failover_strategy {strategy!r}: use "
                f"{' or '.join(repr(s) for s in sorted(FAILOVER_STRATEGIES))}, or a callable"
            )
    elif not callable(strategy):
        raise TypeError(
            "failover_strategy must be 'round-robin', 'shuffle' or a callable, "
            f"not {type(strategy).__name__}"
        )


class FailoverCycle:
    """The hosts a connection tries, round after round (see the module docs)."""

    def __init__(self, addresses: Sequence[Address], strategy: FailoverStrategy) -> None:
        check_strategy(strategy)
        self._addresses = tuple(addresses)
        self._shuffle = strategy == "shuffle"
        self._items: Iterator[Address] | None = None
        if strategy == "round-robin":
            self._items = itertools.cycle(self._addresses)
        elif callable(strategy):
            self._items = iter(strategy(list(self._addresses)))

    def round(self) -> Iterator[Address]:
        """The hosts for one connection attempt, produced as they are tried
        (a host that answers ends the round, and the next round goes on
        from there)."""
        if self._shuffle:
            yield from random.sample(self._addresses, len(self._addresses))
            return
        assert self._items is not None
        for i in range(len(self._addresses)):
            try:
                item = next(self._items)
            except StopIteration:
                if i == 0:
                    raise ConnectionFailed(
                        "the failover_strategy's iterator is exhausted: no host left to try"
                    ) from None
                return
            address = self._known(item)
            if address is None:
                raise ValueError(
                    f"failover_strategy gave {item!r}, which is not one of the hosts "
                    "(it must yield the (host, port) pairs it was given)"
                )
            yield address

    def _known(self, item: object) -> Address | None:
        for address in self._addresses:
            if item == address or (isinstance(item, list) and tuple(item) == address):
                return address
        return None
