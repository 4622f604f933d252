"""A stateful model of channel life, confirms, returns, settling and closes.

Invariants: every publish in confirm mode resolves exactly once (ack, nack or
unknown); no delivery tag of a channel that is not open is ever acked, nacked
or rejected on the wire.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pamqp.commands import Basic, Channel

from trio_msg._protocol import AMQPChannel, ChannelState, Outcome, events
from trio_msg._protocol.errors import MessageStateError

from .peer import Peer, build, connected

_uids = itertools.count()


@dataclass
class ChannelModel:
    ch: AMQPChannel
    uid: int = field(default_factory=lambda: next(_uids))
    published: dict[int, tuple[str, bool]] = field(default_factory=dict)  # tag -> (rk, mandatory)
    unresolved: set[int] = field(default_factory=set)
    returned: set[int] = field(default_factory=set)
    delivered: set[int] = field(default_factory=set)
    unsettled: set[int] = field(default_factory=set)
    next_delivery: int = 1
    state: str = "open"  # open, closing, closed


class ProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.resolutions: Counter[tuple[int, int]] = Counter()
        self.dead: list[ChannelModel] = []
        self.peer: Peer = connected(heartbeat=0)
        self.models: dict[int, ChannelModel] = {}

    # --- helpers ----------------------------------------------------------------

    def live(self, *states: str) -> list[ChannelModel]:
        return [m for m in self.models.values() if m.state in states]

    def process(self, evs: list[events.Event]) -> list[events.Event]:
        for e in evs:
            if isinstance(e, events.Confirmation):
                model = self.models[e.channel_id]
                for tag in e.delivery_tags:
                    assert tag in model.published
                    self.resolutions[(model.uid, tag)] += 1
                    assert self.resolutions[(model.uid, tag)] == 1, "resolved twice"
                    model.unresolved.discard(tag)
            elif isinstance(e, events.ChannelClosed):
                model = self.models.pop(e.channel_id)
                assert not model.unresolved
                model.state = "closed"
                self.dead.append(model)
            elif isinstance(e, events.ConnectionTerminated):
                assert not self.models
        self.check_sent()
        return evs

    def check_sent(self) -> None:
        for sent in self.peer.received():
            if sent.name not in ("Basic.Ack", "Basic.Nack", "Basic.Reject"):
                continue
            model = self.models.get(sent.channel)
            assert model is not None and model.state == "open", (
                "settled on a channel that is not open"
            )
            tag = sent.frame.delivery_tag
            if getattr(sent.frame, "multiple", False):
                done = {t for t in model.unsettled if t <= tag}
            else:
                done = {tag}
            assert done and done <= model.unsettled, "settled a tag that is not outstanding"
            model.unsettled -= done

    # --- rules ---------------------------------------------------------------------

    @initialize()
    def two_channels(self) -> None:
        self.open_channel()
        self.open_channel()

    @precondition(lambda self: len(self.models) < 3)
    @rule()
    def open_channel(self) -> None:
        ch = self.peer.confirm_channel()
        self.peer.consume(ch, "ct")
        self.models[ch.id] = ChannelModel(ch)

    @rule(data=st.data(), count=st.integers(1, 4))
    def publish(self, data: st.DataObject, count: int) -> None:
        opened = self.live("open")
        if not opened:
            return
        model = data.draw(st.sampled_from(opened))
        for _ in range(count):
            mandatory = data.draw(st.booleans())
            rk = data.draw(st.sampled_from(["a", "b"]))
            tag = model.ch.publish("ex", rk, b"payload", mandatory=mandatory)
            assert tag == len(model.published) + 1
            model.published[tag] = (rk, mandatory)
            model.unresolved.add(tag)
        self.check_sent()

    @rule(data=st.data(), multiple=st.booleans(), nack=st.booleans())
    def broker_confirms(self, data: st.DataObject, multiple: bool, nack: bool) -> None:
        candidates = [m for m in self.live("open", "closing") if m.published]
        if not candidates:
            return
        model = data.draw(st.sampled_from(candidates))
        # mostly unresolved tags, sometimes one already resolved
        pool = sorted(model.unresolved) or sorted(model.published)
        tag = data.draw(st.sampled_from(pool))
        expected = (
            tuple(sorted(t for t in model.unresolved if t <= tag))
            if multiple
            else ((tag,) if tag in model.unresolved else ())
        )
        method = (
            Basic.Nack(delivery_tag=tag, multiple=multiple)
            if nack
            else Basic.Ack(delivery_tag=tag, multiple=multiple)
        )
        evs = self.process(self.peer.send(model.ch.id, method))
        outcome = Outcome.NACK if nack else Outcome.ACK
        assert evs == ([events.Confirmation(model.ch.id, expected, outcome)] if expected else [])

    @rule(data=st.data())
    def broker_returns(self, data: st.DataObject) -> None:
        eligible = [
            (m, t)
            for m in self.live("open")
            for t in sorted(m.unresolved)
            if m.published[t][1] and t not in m.returned
        ]
        if not eligible:
            return
        model, tag = data.draw(st.sampled_from(eligible))
        rk = model.published[tag][0]
        # the broker returns in publish order: the earliest such publish
        tag = min(t for m, t in eligible if m is model and m.published[t][0] == rk)
        (returned,) = self.process(self.peer.returned(model.ch.id, "ex", rk, b"payload"))
        assert isinstance(returned, events.Returned)
        assert returned.publish_tag == tag
        model.returned.add(tag)

    @rule(data=st.data())
    def broker_delivers(self, data: st.DataObject) -> None:
        candidates = self.live("open", "closing")
        if not candidates:
            return
        model = data.draw(st.sampled_from(candidates))
        tag = model.next_delivery
        model.next_delivery += 1
        evs = self.process(self.peer.deliver(model.ch.id, "ct", tag))
        if model.state == "open":
            assert [(type(e), e.delivery_tag) for e in evs] == [(events.Delivery, tag)]  # type: ignore[union-attr]
            model.delivered.add(tag)
            model.unsettled.add(tag)
        else:
            assert evs == []  # dropped after our close

    @rule(data=st.data(), how=st.sampled_from(["ack", "nack", "reject", "ack-multiple"]))
    def client_settles(self, data: st.DataObject, how: str) -> None:
        candidates = [m for m in self.live("open") if m.unsettled]
        if not candidates:
            return
        model = data.draw(st.sampled_from(candidates))
        tag = data.draw(st.sampled_from(sorted(model.unsettled)))
        ch = model.ch
        if how == "ack":
            ch.ack(tag)
        elif how == "nack":
            ch.nack(tag, requeue=False)
        elif how == "reject":
            ch.reject(tag)
        else:
            ch.ack(tag, multiple=True)
        self.check_sent()
        assert tag not in model.unsettled

    @rule(data=st.data())
    def client_settles_twice(self, data: st.DataObject) -> None:
        done = [(m, t) for m in self.live("open") for t in m.delivered - m.unsettled]
        if not done:
            return
        model, tag = data.draw(st.sampled_from(done))
        with pytest.raises(MessageStateError):
            model.ch.ack(tag)
        assert self.peer.received() == []

    @rule(data=st.data())
    def client_settles_on_dead_channel(self, data: st.DataObject) -> None:
        dead = [m for m in self.dead if m.delivered]
        if not dead:
            return
        model = data.draw(st.sampled_from(dead))
        tag = data.draw(st.sampled_from(sorted(model.delivered)))
        with pytest.raises(MessageStateError):
            model.ch.ack(tag)
        with pytest.raises(MessageStateError):
            model.ch.reject(tag)
        assert self.peer.received() == []

    @rule(data=st.data())
    def client_closes_channel(self, data: st.DataObject) -> None:
        opened = self.live("open")
        if not opened:
            return
        model = data.draw(st.sampled_from(opened))
        model.ch.close()
        model.state = "closing"
        assert self.peer.received_names() == [(model.ch.id, "Channel.Close")]

    @rule(data=st.data())
    def broker_close_ok(self, data: st.DataObject) -> None:
        closing = self.live("closing")
        if not closing:
            return
        model = data.draw(st.sampled_from(closing))
        unresolved = tuple(sorted(model.unresolved))
        evs = self.process(self.peer.send(model.ch.id, Channel.CloseOk()))
        self.check_close_events(model, evs, unresolved)

    @rule(data=st.data(), code=st.sampled_from([404, 406, 405]))
    def broker_closes_channel(self, data: st.DataObject, code: int) -> None:
        candidates = self.live("open", "closing")
        if not candidates:
            return
        model = data.draw(st.sampled_from(candidates))
        unresolved = tuple(sorted(model.unresolved))
        close = Channel.Close(reply_code=code, reply_text="closed", class_id=60, method_id=40)
        sent_before = self.peer.conn.data_to_send()
        assert sent_before == b""
        evs = self.peer.send(model.ch.id, close)
        assert self.peer.conn.data_to_send().count(b"\x00\x14\x00\x29") == 1  # channel.close-ok
        self.process(evs)
        self.check_close_events(model, evs, unresolved)

    def check_close_events(
        self, model: ChannelModel, evs: list[events.Event], unresolved: tuple[int, ...]
    ) -> None:
        expected: list[type] = [events.ChannelClosed]
        if unresolved:
            expected.insert(0, events.Confirmation)
            assert evs[0] == events.Confirmation(model.ch.id, unresolved, Outcome.UNKNOWN)
        assert [type(e) for e in evs] == expected
        assert model.ch.state is ChannelState.CLOSED

    @precondition(lambda self: sum(len(m.unresolved) for m in self.models.values()) >= 4)
    @rule()
    def connection_lost(self) -> None:
        self.peer.conn.connection_lost()
        evs = self.process(self.peer.conn.next_events())
        assert isinstance(evs[-1], events.ConnectionTerminated)
        assert not self.models
        self.peer = connected(heartbeat=0)

    @rule(data=st.data())
    def stray_server_ack_after_connection_reopen(self, data: st.DataObject) -> None:
        # a fresh incarnation's channel never resolves an old incarnation's tag
        opened = self.live("open")
        if not opened:
            return
        model = data.draw(st.sampled_from(opened))
        if model.published:
            return
        assert self.process(self.peer.send(model.ch.id, Basic.Ack(delivery_tag=1))) == []

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def publishes_resolve_exactly_once(self) -> None:
        assert all(n == 1 for n in self.resolutions.values())
        for model in self.dead:
            for tag in model.published:
                assert self.resolutions[(model.uid, tag)] == 1, (model.uid, tag)
        for model in self.models.values():
            assert len(model.unresolved) == model.ch.unconfirmed
            for tag in model.published:
                assert self.resolutions[(model.uid, tag)] == (tag not in model.unresolved)

    @invariant()
    def unsettled_matches(self) -> None:
        for model in self.live("open"):
            assert all(model.ch.is_unsettled(t) for t in model.unsettled)
            assert not any(model.ch.is_unsettled(t) for t in model.delivered - model.unsettled)

    def teardown(self) -> None:
        self.peer.conn.connection_lost()
        self.process(self.peer.conn.next_events())
        for model in self.dead:
            for tag in model.published:
                assert self.resolutions[(model.uid, tag)] == 1


ProtocolMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestProtocolMachine = ProtocolMachine.TestCase


def test_peer_build_is_lenient() -> None:
    # the model relies on the peer sending names pamqp itself would refuse
    assert build(Basic.Cancel, consumer_tag="ключ", nowait=False).consumer_tag == "ключ"
