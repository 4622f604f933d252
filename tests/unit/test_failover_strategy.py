"""The order in which a connection tries its hosts (kombu's failover_strategy)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from trio_msg._failover import FailoverCycle
from trio_msg.errors import ConnectionFailed

A, B, C = ("a", 1), ("b", 2), ("c", 3)


def tried(cycle: FailoverCycle, until: tuple[str, int] | None = None) -> list[tuple[str, int]]:
    """One round, stopping at *until* (the host that answers), as the driver does."""
    out = []
    for address in cycle.round():
        out.append(address)
        if address == until:
            break
    return out


def test_round_robin_goes_on_after_the_last_host_tried() -> None:
    cycle = FailoverCycle([A, B, C], "round-robin")
    assert tried(cycle, until=A) == [A]  # the first connect: the first host answers
    assert tried(cycle, until=C) == [B, C]  # lost: the next host first
    assert tried(cycle) == [A, B, C]  # nobody answers: every host once
    assert tried(cycle) == [A, B, C]


def test_shuffle_tries_every_host_once_per_round() -> None:
    cycle = FailoverCycle([A, B, C], "shuffle")
    orders = set()
    for _ in range(200):
        order = tried(cycle)
        assert sorted(order) == [A, B, C]
        orders.add(tuple(order))
    assert len(orders) > 1  # 200 identical random orders: 1 chance in 6**199


def test_callable_strategy_gives_the_order() -> None:
    seen: list[list[tuple[str, int]]] = []

    def backwards(hosts: list[tuple[str, int]]) -> Iterator[tuple[str, int]]:
        seen.append(list(hosts))
        return itertools.cycle(reversed(hosts))

    cycle = FailoverCycle([A, B, C], backwards)
    assert seen == [[A, B, C]]  # called once, with the hosts
    assert tried(cycle, until=B) == [C, B]
    assert tried(cycle) == [A, C, B]
    assert seen == [[A, B, C]]


def test_callable_strategy_may_repeat_and_gives_lists() -> None:
    cycle = FailoverCycle([A, B], lambda hosts: iter([["a", 1], ["a", 1], ("b", 2)]))
    assert tried(cycle) == [A, A]  # a round has as many tries as there are hosts
    assert tried(cycle) == [B]  # the iterator ran out half-way
    with pytest.raises(ConnectionFailed, match="exhausted"):
        tried(cycle)


def test_callable_strategy_giving_a_stranger_is_an_error() -> None:
    cycle = FailoverCycle([A, B], lambda hosts: iter([("evil", 6)]))
    with pytest.raises(ValueError, match="not one of the hosts"):
        tried(cycle)
