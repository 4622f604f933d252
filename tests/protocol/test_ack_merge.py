"""Acks in a row are merged into one ``basic.ack`` with ``multiple`` set
(``AMQPChannel.ack``), and the broker settles exactly what the caller
settled: checked against a model of the broker's unacked set."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic

from trio_msg._protocol import AMQPChannel

from .peer import Peer, Sent, connected


def _acks(sent: list[Sent]) -> list[tuple[int, str, int, bool]]:
    return [
        (s.channel, s.name, s.frame.delivery_tag, bool(getattr(s.frame, "multiple", False)))
        for s in sent
    ]


def _consuming(peer: Peer, n: int, tag: str = "ct") -> AMQPChannel:
    ch = peer.open_channel()
    peer.consume(ch, tag)
    for delivery_tag in range(1, n + 1):
        peer.deliver(ch.id, tag, delivery_tag)
    return ch


def test_acks_in_order_go_out_as_one_frame() -> None:
    peer = connected()
    ch = _consuming(peer, 5)
    for tag in range(1, 6):
        ch.ack(tag)
    assert _acks(peer.received()) == [(ch.id, "Basic.Ack", 5, True)]
    assert not any(ch.is_unsettled(tag) for tag in range(1, 6))


def test_a_flush_ends_the_run() -> None:
    peer = connected()
    ch = _consuming(peer, 4)
    ch.ack(1)
    assert _acks(peer.received()) == [(ch.id, "Basic.Ack", 1, False)]
    ch.ack(2)
    ch.ack(3)
    ch.ack(4)
    assert _acks(peer.received()) == [(ch.id, "Basic.Ack", 4, True)]


def test_a_flush_ends_the_run_whatever_is_queued_next() -> None:
    peer = connected()
    ch = _consuming(peer, 2)
    other = _consuming(peer, 1, "other")
    ch.ack(1)
    peer.received()
    other.reject(1)  # as many pieces queued as before the flush
    ch.ack(2)
    assert _acks(peer.received()) == [
        (other.id, "Basic.Reject", 1, False),
        (ch.id, "Basic.Ack", 2, False),
    ]


def test_an_ack_of_a_later_delivery_is_not_merged_over_an_earlier_one() -> None:
    peer = connected()
    ch = _consuming(peer, 4)
    ch.ack(2)  # 1 is still unsettled: an ack(2, multiple) would settle it
    ch.ack(3)
    ch.ack(1)  # now the oldest
    ch.ack(4)  # the oldest again: merges into ack(1)
    assert _acks(peer.received()) == [
        (ch.id, "Basic.Ack", 2, False),
        (ch.id, "Basic.Ack", 3, False),
        (ch.id, "Basic.Ack", 4, True),
    ]


def test_anything_queued_in_between_ends_the_run() -> None:
    peer = connected()
    ch = _consuming(peer, 4)
    other = _consuming(peer, 2, "other")
    ch.ack(1)
    other.ack(1)  # another channel's frame
    ch.ack(2)
    ch.publish("", "q", b"x")
    ch.ack(3)
    ch.nack(4)
    sent = peer.received()
    assert [s.name for s in sent] == [
        "Basic.Ack",
        "Basic.Ack",
        "Basic.Ack",
        "Basic.Publish",
        "ContentHeader",
        "ContentBody",
        "Basic.Ack",
        "Basic.Nack",
    ]
    settling = [s for s in sent if s.name in ("Basic.Ack", "Basic.Nack")]
    assert _acks(settling) == [
        (ch.id, "Basic.Ack", 1, False),
        (other.id, "Basic.Ack", 1, False),
        (ch.id, "Basic.Ack", 2, False),
        (ch.id, "Basic.Ack", 3, False),
        (ch.id, "Basic.Nack", 4, False),
    ]


def test_falling_tags_turn_merging_off() -> None:
    """A broker that breaks the spec with a tag lower than an earlier one:
    "the oldest unsettled" no longer means "every earlier one is settled"."""
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    for tag in (2, 7, 4):
        peer.deliver(ch.id, "ct", tag)
    ch.ack(2)
    ch.ack(7)  # merged, ack(7, multiple) would settle 4 too
    ch.ack(4)
    assert _acks(peer.received()) == [
        (ch.id, "Basic.Ack", 2, False),
        (ch.id, "Basic.Ack", 7, False),
        (ch.id, "Basic.Ack", 4, False),
    ]


def test_recover_ends_the_run() -> None:
    """recover-ok (for a recover sent earlier) arrives while an ack waits to
    be sent: the broker has new tags for everything unacked, and a
    delivery after it must not be merged into an ack from before it."""
    peer = connected()
    ch = _consuming(peer, 2)
    ch.basic_recover(requeue=True)
    assert [s.name for s in peer.received()] == ["Basic.Recover"]
    ch.ack(1)
    peer.send(ch.id, Basic.RecoverOk())
    assert not ch.is_unsettled(2)
    peer.deliver(ch.id, "ct", 3, redelivered=True)
    ch.ack(3)
    assert _acks(peer.received()) == [
        (ch.id, "Basic.Ack", 1, False),
        (ch.id, "Basic.Ack", 3, False),
    ]


# --- the property -------------------------------------------------------------------


def _broker_settles(
    unacked: dict[int, list[int]], outcome: dict[tuple[int, int], Any], s: Sent
) -> None:
    """What RabbitMQ does with one settling frame (an unknown tag is a
    channel error, which the client must never cause)."""
    pending = unacked[s.channel]
    f = s.frame
    if s.name == "Basic.Ack":
        result: Any = "ack"
    elif s.name == "Basic.Nack":
        result = ("nack", bool(f.requeue))
    else:
        assert s.name == "Basic.Reject"
        result = ("reject", bool(f.requeue))
    if getattr(f, "multiple", False):
        done = [t for t in pending if f.delivery_tag == 0 or t <= f.delivery_tag]
        assert done, f"multiple {s.name} {f.delivery_tag} settles nothing"
    else:
        assert f.delivery_tag in pending, f"{s.name} of unknown tag {f.delivery_tag}"
        done = [f.delivery_tag]
    for t in done:
        pending.remove(t)
        outcome[(s.channel, t)] = result


op = st.one_of(
    st.tuples(st.just("deliver"), st.integers(0, 1), st.integers(1, 3)),
    st.tuples(
        st.sampled_from(["ack", "nack", "reject", "ack_multiple"]),
        st.integers(0, 1),
        st.integers(0, 5),
        st.booleans(),
    ),
    st.tuples(st.just("take")),
    st.tuples(st.just("publish"), st.integers(0, 1)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=60))
def test_the_broker_settles_what_the_caller_settled(plan: list[tuple[Any, ...]]) -> None:
    peer = connected()
    chans = [peer.open_channel(), peer.open_channel()]
    for ch in chans:
        peer.consume(ch, "ct")
    next_tag = [1, 1]
    unsettled: list[list[int]] = [[], []]  # the caller's view, oldest first
    expected: dict[tuple[int, int], Any] = {}
    broker_unacked: dict[int, list[int]] = {ch.id: [] for ch in chans}
    got: dict[tuple[int, int], Any] = {}
    calls = frames = 0

    def take() -> None:
        nonlocal frames
        for s in peer.received():
            if s.name in ("Basic.Ack", "Basic.Nack", "Basic.Reject"):
                frames += 1
                _broker_settles(broker_unacked, got, s)

    for step in plan:
        kind = step[0]
        if kind == "take":
            take()
            continue
        i = step[1]
        ch = chans[i]
        if kind == "deliver":
            take()  # the broker sent these after what it has read so far
            for _ in range(step[2]):
                tag = next_tag[i]
                next_tag[i] += 1
                peer.deliver(ch.id, "ct", tag)
                unsettled[i].append(tag)
                broker_unacked[ch.id].append(tag)
        elif kind == "publish":
            ch.publish("", "q", b"x")
        else:
            if not unsettled[i]:
                continue
            tag = unsettled[i][min(step[2], len(unsettled[i]) - 1)]
            calls += 1
            if kind == "ack_multiple":
                ch.ack(tag, multiple=True)
                done, result = [t for t in unsettled[i] if t <= tag], "ack"
            elif kind == "ack":
                ch.ack(tag)
                done, result = [tag], "ack"
            elif kind == "nack":
                ch.nack(tag, requeue=step[3])
                done, result = [tag], ("nack", step[3])
            else:
                ch.reject(tag, requeue=step[3])
                done, result = [tag], ("reject", step[3])
            for t in done:
                unsettled[i].remove(t)
                expected[(ch.id, t)] = result
    take()
    assert got == expected
    assert frames <= calls
    for i, ch in enumerate(chans):
        assert broker_unacked[ch.id] == unsettled[i]
        assert all(ch.is_unsettled(t) for t in unsettled[i])


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["deliver", "ack", "ack_multiple", "nack", "reject"]),
            st.integers(0, 12),
        ),
        max_size=50,
    )
)
def test_the_unsettled_tags_match_a_set(plan: list[tuple[str, int]]) -> None:
    """The channel's unsettled tags (a sorted list) against a plain set,
    tags in any order (a broker breaking the spec included), repeated or
    unknown: the same tags unsettled after every step, the same refusals."""
    from trio_msg.errors import MessageStateError

    ch = connected().open_channel()
    model: set[int] = set()
    for kind, tag in plan:
        if kind == "deliver":
            if tag:
                ch._unsettle(tag)
                model.add(tag)
            continue
        multiple = kind == "ack_multiple"
        if multiple:
            done = set(model) if tag == 0 else {t for t in model if t <= tag}
            expect_error = tag != 0 and not done
        else:
            done = {tag} & model
            expect_error = not done
        try:
            if kind == "nack":
                ch.nack(tag)
            elif kind == "reject":
                ch.reject(tag)
            else:
                ch.ack(tag, multiple=multiple)
        except MessageStateError:
            assert expect_error
        else:
            assert not expect_error
            model -= done
        assert ch._unsettled == sorted(model)
        assert all(ch.is_unsettled(t) == (t in model) for t in range(14))
