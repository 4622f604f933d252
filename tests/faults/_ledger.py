"""What was published, confirmed and consumed, and what that says.

Ids are what the test puts in the message (ints).  ``sent`` is every id a
publish was attempted for (even one whose outcome stayed unknown), so:

- **lost**: confirmed by the broker, never consumed -- must be 0;
- **unexpected**: consumed, never published -- must be 0;
- **duplicates**: deliveries beyond the first of an id -- allowed (at least
  once), counted and reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Ledger"]


class Ledger:
    def __init__(self, name: str = "", record: Callable[[str, Any], None] | None = None) -> None:
        self.name = name
        self._record = record
        self.sent: set[int] = set()
        self.confirmed: set[int] = set()
        self.consumed: Counter[int] = Counter()

    @classmethod
    def for_test(cls, request: Any) -> Ledger:
        """A fresh ledger for the test of *request* (a pytest request);
        ``check()`` records the figures as the test's user properties (junit
        ``<property>`` elements, as ``record_property`` would, without its
        warning under xunit2)."""
        node = request.node
        return cls(node.name, lambda key, value: node.user_properties.append((key, value)))

    def publishing(self, msg_id: int) -> None:
        """A publish of *msg_id* is about to be attempted."""
        self.sent.add(msg_id)

    def confirm(self, msg_id: int) -> None:
        """The broker confirmed *msg_id* (``basic.ack``)."""
        self.sent.add(msg_id)
        self.confirmed.add(msg_id)

    def consume(self, msg_id: int) -> None:
        self.consumed[msg_id] += 1

    def consume_all(self, ids: Iterable[int]) -> None:
        for msg_id in ids:
            self.consume(msg_id)

    # ------------------------------------------------------------- figures

    @property
    def lost(self) -> set[int]:
        return self.confirmed - self.consumed.keys()

    @property
    def unexpected(self) -> set[int]:
        return self.consumed.keys() - self.sent

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.consumed.values())

    def complete(self) -> bool:
        """Every confirmed id has been consumed."""
        return not self.lost

    def figures(self) -> dict[str, int]:
        return {
            "sent": len(self.sent),
            "confirmed": len(self.confirmed),
            "consumed": sum(self.consumed.values()),
            "distinct_consumed": len(self.consumed),
            "lost": len(self.lost),
            "unexpected": len(self.unexpected),
            "duplicates": self.duplicates,
        }

    def check(self, *, min_confirmed: int = 1) -> dict[str, int]:
        """Assert lost == 0 and unexpected == 0 (and that at least
        ``min_confirmed`` messages were confirmed: a scenario that confirmed
        nothing proved nothing).  Records every figure as a junit property
        (``ledger_<figure>``) and returns them."""
        figures = self.figures()
        if self._record is not None:
            for key, value in figures.items():
                self._record(f"ledger_{key}", value)
        print(f"ledger {self.name}: {figures}")
        assert not self.lost, (
            f"lost (confirmed, never consumed): {sorted(self.lost)[:20]} {figures}"
        )
        assert not self.unexpected, (
            f"unexpected (consumed, never published): {sorted(self.unexpected)[:20]} {figures}"
        )
        assert figures["confirmed"] >= min_confirmed, f"too few confirmed: {figures}"
        return figures
