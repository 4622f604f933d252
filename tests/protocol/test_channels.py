"""Channel life, synchronous requests, abandon, consumers, flow and settling."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pamqp.commands import Basic, Channel, Queue

from trio_msg._protocol import AMQPChannel, ChannelState, Outcome, events
from trio_msg._protocol.errors import (
    ChannelClosed,
    ChannelNotOpen,
    LocalProtocolError,
    MessageStateError,
    NotFound,
    PreconditionFailed,
    ProtocolError,
)

from .peer import build, connected, seq, state


def _declare_ok(name: str = "q") -> Queue.DeclareOk:
    return build(Queue.DeclareOk, queue=name, message_count=0, consumer_count=0)


# --- open and close ------------------------------------------------------------


def test_open_assigns_lowest_free_id_and_emits_opened() -> None:
    peer = connected()
    a = peer.open_channel()
    b = peer.open_channel()
    assert (a.id, b.id) == (1, 2)
    assert a.state is ChannelState.OPEN
    a.close()
    peer.received()
    peer.send(1, Channel.CloseOk())
    c = peer.open_channel()
    assert c.id == 1
    assert c is not a


def test_client_close() -> None:
    peer = connected()
    ch = peer.open_channel()
    ch.close(200, "bye")
    (close,) = peer.received()
    assert (close.channel, close.name) == (ch.id, "Channel.Close")
    assert (close.frame.reply_code, close.frame.reply_text) == (200, "bye")
    assert ch.state is ChannelState.CLOSING
    ch.close()  # idempotent
    assert peer.received() == []
    (closed,) = peer.send(ch.id, Channel.CloseOk())
    assert isinstance(closed, events.ChannelClosed)
    assert closed.channel_id == ch.id
    assert isinstance(closed.error, ChannelClosed)
    assert closed.error.reply_code == 200
    assert closed.error.by_peer is False
    assert state(ch) is ChannelState.CLOSED
    assert ch.id not in peer.conn.channels
    with pytest.raises(ChannelClosed) as info:
        ch.queue_declare("q")
    assert info.value.reply_code == 200
    assert peer.received() == []


def test_server_close() -> None:
    peer = connected()
    ch = peer.open_channel()
    token = ch.queue_declare("missing", passive=True)
    peer.received()
    evs = peer.send(
        ch.id,
        Channel.Close(
            reply_code=404, reply_text="NOT_FOUND - no queue 'missing'", class_id=50, method_id=10
        ),
    )
    assert [(s.channel, s.name) for s in peer.received()] == [(ch.id, "Channel.CloseOk")]
    (closed,) = evs
    assert isinstance(closed.error, NotFound)
    assert (closed.error.class_id, closed.error.method_id) == (50, 10)
    assert closed.error.by_peer
    assert ch.state is ChannelState.CLOSED
    assert ch.pending_requests == 0
    assert token
    with pytest.raises(NotFound):
        ch.publish("", "q", b"x")
    # the connection is still fine; a new channel takes another number
    # while one is free (the broker may still send on the closed one)
    ch2 = peer.open_channel()
    assert ch2.id != ch.id
    assert ch2.state is ChannelState.OPEN


def test_deliveries_after_the_brokers_close_are_dropped() -> None:
    """RabbitMQ can send a delivery its queue had in flight after the
    channel.close it sent over an error: the client answered the close and
    drops it; the connection goes on.  The number is reused once no other
    is free."""
    peer = connected()
    peer.conn.channel_max = 2
    ch = peer.open_channel()
    ch.basic_consume("q", "ctag")
    peer.send(ch.id, build(Basic.ConsumeOk, consumer_tag="ctag"))
    peer.received()
    peer.send(
        ch.id,
        Channel.Close(reply_code=406, reply_text="PRECONDITION_FAILED", class_id=60, method_id=80),
    )
    assert [s.name for s in peer.received()] == ["Channel.CloseOk"]
    assert peer.deliver(ch.id, "ctag", 3) == []
    other = peer.open_channel()
    assert other.id == 2
    again = peer.open_channel()  # no other number is free: the closed one is reused
    assert again.id == ch.id
    assert again.state is ChannelState.OPEN


def test_server_close_while_opening() -> None:
    peer = connected()
    ch = peer.conn.open_channel()
    peer.received()
    (closed,) = peer.send(
        ch.id, Channel.Close(reply_code=406, reply_text="PRECONDITION", class_id=20, method_id=10)
    )
    assert isinstance(closed.error, PreconditionFailed)
    assert peer.received_names() == [(ch.id, "Channel.CloseOk")]


def test_requests_on_an_opening_channel_are_refused() -> None:
    peer = connected()
    ch = peer.conn.open_channel()
    with pytest.raises(ChannelNotOpen):
        ch.queue_declare("q")
    with pytest.raises(ChannelNotOpen):
        ch.publish("", "q", b"x")


def test_close_while_opening_discards_open_ok() -> None:
    peer = connected()
    ch = peer.conn.open_channel()
    ch.close()
    assert peer.received_names() == [(ch.id, "Channel.Open"), (ch.id, "Channel.Close")]
    assert peer.send(ch.id, Channel.OpenOk()) == []
    (closed,) = peer.send(ch.id, Channel.CloseOk())
    assert isinstance(closed, events.ChannelClosed)


def test_after_client_close_only_close_and_close_ok_count() -> None:
    peer = connected()
    ch = peer.confirm_channel()
    peer.consume(ch, "ct")
    t1 = seq(ch.publish("", "q", b"1"))
    t2 = seq(ch.publish("", "q", b"2"))
    token = ch.queue_declare("q")
    ch.close()
    assert [name for _, name in peer.received_names()] == [
        "Basic.Publish",
        "ContentHeader",
        "ContentBody",
        "Basic.Publish",
        "ContentHeader",
        "ContentBody",
        "Queue.Declare",
        "Channel.Close",
    ]
    # deliveries (even split over frames), replies, cancel and flow: dropped
    assert peer.deliver(ch.id, "ct", 1, b"x" * 10, chunk=3) == []
    assert peer.deliver(ch.id, "ct", 2, b"") == []
    assert peer.send(ch.id, _declare_ok()) == []
    assert peer.send(ch.id, Channel.Flow(active=False)) == []
    assert peer.send(ch.id, build(Basic.Cancel, consumer_tag="ct", nowait=False)) == []
    assert peer.received() == []
    # acks still resolve confirms
    assert peer.send(ch.id, Basic.Ack(delivery_tag=t1)) == [
        events.Confirmation(ch.id, (t1,), Outcome.ACK)
    ]
    evs = peer.send(ch.id, Channel.CloseOk())
    assert evs[0] == events.Confirmation(ch.id, (t2,), Outcome.UNKNOWN)
    assert isinstance(evs[1], events.ChannelClosed)
    assert len(evs) == 2
    assert token  # never answered
    # no delivery of the closed channel can be settled
    with pytest.raises(MessageStateError):
        ch.ack(1)
    assert peer.received() == []


def test_crossing_closes() -> None:
    peer = connected()
    ch = peer.open_channel()
    ch.close()
    peer.received()
    (closed,) = peer.send(
        ch.id,
        Channel.Close(reply_code=406, reply_text="PRECONDITION_FAILED", class_id=60, method_id=80),
    )
    assert isinstance(closed.error, PreconditionFailed)
    assert peer.received_names() == [(ch.id, "Channel.CloseOk")]
    assert ch.state is ChannelState.CLOSED
    # The number is not reused while the broker's close-ok for our close is
    # still to come; that close-ok is swallowed, not a 504 connection error.
    assert peer.open_channel().id != ch.id
    assert peer.send(ch.id, Channel.CloseOk()) == []
    assert peer.conn.is_open
    assert peer.conn.open_channel().id == ch.id


# --- one synchronous request at a time ---------------------------------------------


def test_one_request_in_flight_per_channel() -> None:
    peer = connected()
    ch = peer.open_channel()
    other = peer.open_channel()
    t1 = ch.queue_declare("a")
    t2 = ch.queue_bind("a", "ex", "rk")
    t3 = ch.basic_qos(prefetch_count=10)
    t4 = other.queue_declare("b")  # another channel is independent
    assert len({t1, t2, t3, t4}) == 4
    assert peer.received_names() == [(ch.id, "Queue.Declare"), (other.id, "Queue.Declare")]
    assert ch.pending_requests == 3
    (reply,) = peer.send(ch.id, _declare_ok("a"))
    assert isinstance(reply, events.RpcReply)
    assert (reply.channel_id, reply.token, reply.name, reply.fields["queue"]) == (
        ch.id,
        t1,
        "queue.declare-ok",
        "a",
    )
    assert peer.received_names() == [(ch.id, "Queue.Bind")]
    (reply,) = peer.send(ch.id, Queue.BindOk())
    assert reply.token == t2
    sent = peer.received()
    assert [s.name for s in sent] == ["Basic.Qos"]
    assert sent[0].frame.prefetch_count == 10
    (reply,) = peer.send(ch.id, Basic.QosOk())
    assert reply.token == t3
    assert peer.received() == []
    assert ch.pending_requests == 0
    (reply,) = peer.send(other.id, _declare_ok("b"))
    assert reply.token == t4


def test_wrong_reply_type_is_a_protocol_error() -> None:
    peer = connected()
    ch = peer.open_channel()
    ch.queue_declare("a")
    with pytest.raises(ProtocolError) as info:
        peer.send(ch.id, Queue.BindOk())
    assert info.value.reply_code == 505


def test_abandon_queued_request_is_never_sent() -> None:
    peer = connected()
    ch = peer.open_channel()
    t1 = ch.queue_declare("a")
    t2 = ch.queue_declare("b")
    t3 = ch.queue_declare("c")
    peer.received()
    ch.abandon(t2)
    (reply,) = peer.send(ch.id, _declare_ok("a"))
    assert reply.token == t1
    sent = peer.received()
    assert [s.frame.queue for s in sent] == ["c"]
    (reply,) = peer.send(ch.id, _declare_ok("c"))
    assert reply.token == t3


def test_abandon_in_flight_request_swallows_its_reply() -> None:
    peer = connected()
    ch = peer.open_channel()
    t1 = ch.queue_declare("a")
    t2 = ch.queue_declare("b")
    peer.received()
    ch.abandon(t1)
    assert peer.send(ch.id, _declare_ok("a")) == []  # no RpcReply
    assert [s.frame.queue for s in peer.received()] == ["b"]
    (reply,) = peer.send(ch.id, _declare_ok("b"))
    assert reply.token == t2
    assert ch.is_open
    # still usable afterwards
    t3 = ch.queue_purge("b")
    assert peer.received_names() == [(ch.id, "Queue.Purge")]
    (reply,) = peer.send(ch.id, build(Queue.PurgeOk, message_count=0))
    assert reply.token == t3


def test_abandon_unknown_token_is_harmless() -> None:
    peer = connected()
    ch = peer.open_channel()
    t1 = ch.queue_declare("a")
    ch.abandon(9999)
    peer.received()
    (reply,) = peer.send(ch.id, _declare_ok("a"))
    assert reply.token == t1


def test_abandoned_consume_is_cancelled_and_its_deliveries_rejected() -> None:
    peer = connected()
    ch = peer.open_channel()
    token = ch.basic_consume("q", "ct")
    peer.received()
    ch.abandon(token)
    assert peer.send(ch.id, build(Basic.ConsumeOk, consumer_tag="ct")) == []
    sent = peer.received()
    assert [(s.name, s.frame.consumer_tag) for s in sent] == [("Basic.Cancel", "ct")]
    # deliveries racing the cancel go back to the queue
    assert peer.deliver(ch.id, "ct", 1) == []
    assert peer.deliver(ch.id, "ct", 2) == []
    sent = peer.received()
    assert [(s.name, s.frame.delivery_tag, s.frame.requeue) for s in sent] == [
        ("Basic.Reject", 1, True),
        ("Basic.Reject", 2, True),
    ]
    assert peer.send(ch.id, build(Basic.CancelOk, consumer_tag="ct")) == []
    assert ch.pending_requests == 0
    assert ch.consumers == {}
    assert ch.is_open


def test_abandoned_consume_with_a_queued_request_behind_it() -> None:
    peer = connected()
    ch = peer.open_channel()
    t1 = ch.basic_consume("q", "ct")
    t2 = ch.queue_declare("other")
    peer.received()
    ch.abandon(t1)
    assert peer.send(ch.id, build(Basic.ConsumeOk, consumer_tag="ct")) == []
    # the cancel goes first; the declare waits for its cancel-ok
    assert peer.received_names() == [(ch.id, "Basic.Cancel")]
    assert peer.send(ch.id, build(Basic.CancelOk, consumer_tag="ct")) == []
    assert peer.received_names() == [(ch.id, "Queue.Declare")]
    # the declare's reply reaches its caller; the cancel's never surfaced
    (reply,) = peer.send(ch.id, _declare_ok("other"))
    assert isinstance(reply, events.RpcReply)
    assert reply.token == t2
    assert ch.pending_requests == 0


def test_abandoned_get_is_requeued() -> None:
    peer = connected()
    ch = peer.open_channel()
    token = ch.basic_get("q")
    peer.received()
    ch.abandon(token)
    get_ok = build(
        Basic.GetOk,
        delivery_tag=7,
        redelivered=False,
        exchange="",
        routing_key="q",
        message_count=0,
    )
    assert peer.feed(peer.content(ch.id, get_ok, b"payload")) == []
    sent = peer.received()
    assert [(s.name, s.frame.delivery_tag, s.frame.requeue) for s in sent] == [
        ("Basic.Reject", 7, True)
    ]
    assert ch.pending_requests == 0
    with pytest.raises(MessageStateError):
        ch.ack(7)


def test_abandoned_get_empty_is_swallowed() -> None:
    peer = connected()
    ch = peer.open_channel()
    token = ch.basic_get("q")
    peer.received()
    ch.abandon(token)
    assert peer.send(ch.id, Basic.GetEmpty()) == []
    assert peer.received() == []


def test_get_ok_and_get_empty() -> None:
    peer = connected()
    ch = peer.open_channel()
    t1 = ch.basic_get("q")
    t2 = ch.basic_get("q", no_ack=True)
    peer.received()
    get_ok = build(
        Basic.GetOk,
        delivery_tag=3,
        redelivered=True,
        exchange="ex",
        routing_key="q",
        message_count=4,
    )
    (reply,) = peer.feed(peer.content(ch.id, get_ok, b"abc" * 5000, chunk=1000))
    assert reply.token == t1
    assert reply.name == "basic.get-ok"
    assert reply.fields["delivery_tag"] == 3
    assert reply.fields["message_count"] == 4
    assert reply.body == b"abc" * 5000
    assert ch.is_unsettled(3)
    ch.ack(3)
    sent = peer.received()
    assert [s.name for s in sent] == ["Basic.Get", "Basic.Ack"]
    assert sent[0].frame.no_ack is True
    assert sent[1].frame.delivery_tag == 3
    (reply,) = peer.send(ch.id, Basic.GetEmpty())
    assert reply.token == t2
    assert reply.name == "basic.get-empty"


# --- consumers -------------------------------------------------------------------------


def test_server_cancel() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    assert peer.send(ch.id, build(Basic.Cancel, consumer_tag="ct", nowait=False)) == [
        events.ConsumerCancelled(ch.id, "ct")
    ]
    sent = peer.received()
    assert [(s.name, s.frame.consumer_tag) for s in sent] == [("Basic.CancelOk", "ct")]
    assert "ct" not in ch.consumers
    # nowait: no cancel-ok
    peer.consume(ch, "ct2")
    assert peer.send(ch.id, build(Basic.Cancel, consumer_tag="ct2", nowait=True)) == [
        events.ConsumerCancelled(ch.id, "ct2")
    ]
    assert peer.received() == []


def test_client_cancel() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    token = ch.basic_cancel("ct")
    assert peer.received_names() == [(ch.id, "Basic.Cancel")]
    (reply,) = peer.send(ch.id, build(Basic.CancelOk, consumer_tag="ct"))
    assert reply.token == token
    assert ch.consumers == {}


def test_server_flow() -> None:
    peer = connected()
    ch = peer.open_channel()
    assert peer.send(ch.id, Channel.Flow(active=False)) == [events.ChannelFlow(ch.id, False)]
    sent = peer.received()
    assert [(s.name, s.frame.active) for s in sent] == [("Channel.FlowOk", False)]
    assert not ch.flow_active
    assert peer.send(ch.id, Channel.Flow(active=True)) == [events.ChannelFlow(ch.id, True)]
    assert [(s.name, s.frame.active) for s in peer.received()] == [("Channel.FlowOk", True)]
    assert ch.flow_active


# --- settling ----------------------------------------------------------------------------


def test_settle_each_delivery_once() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    for tag in range(1, 6):
        peer.deliver(ch.id, "ct", tag)
    ch.ack(1)
    ch.nack(2, requeue=False)
    ch.reject(3, requeue=True)
    ch.ack(5, multiple=True)  # settles 4 and 5
    sent = peer.received()
    assert [(s.name, s.frame.delivery_tag) for s in sent] == [
        ("Basic.Ack", 1),
        ("Basic.Nack", 2),
        ("Basic.Reject", 3),
        ("Basic.Ack", 5),
    ]
    assert (sent[0].frame.multiple, sent[1].frame.requeue, sent[1].frame.multiple) == (
        False,
        False,
        False,
    )
    assert sent[2].frame.requeue is True
    assert sent[3].frame.multiple is True
    for settle in (ch.ack, ch.nack, ch.reject):
        for tag in (1, 2, 3, 4, 5, 99):
            with pytest.raises(MessageStateError):
                settle(tag)
    with pytest.raises(MessageStateError):
        ch.ack(5, multiple=True)
    assert peer.received() == []
    assert ch.is_open


def test_no_ack_deliveries_are_not_tracked() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "auto", no_ack=True)
    (delivery,) = peer.deliver(ch.id, "auto", 1)
    assert isinstance(delivery, events.Delivery)
    assert not ch.is_unsettled(1)
    with pytest.raises(MessageStateError):
        ch.ack(1)
    assert peer.received() == []


def test_delivery_tag_of_closed_channel_cannot_be_acked() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    peer.deliver(ch.id, "ct", 1)
    assert ch.is_unsettled(1)
    peer.send(ch.id, Channel.Close(reply_code=406, reply_text="x", class_id=0, method_id=0))
    peer.received()
    with pytest.raises(MessageStateError):
        ch.ack(1)
    # the new channel with the same number is a different incarnation
    ch2 = peer.open_channel(ch.id)
    with pytest.raises(MessageStateError):
        ch2.ack(1)
    assert peer.received() == []


def test_settle_while_closing_is_refused() -> None:
    peer = connected()
    ch = peer.open_channel()
    peer.consume(ch, "ct")
    peer.deliver(ch.id, "ct", 1)
    ch.close()
    peer.received()
    with pytest.raises(MessageStateError):
        ch.ack(1)
    assert peer.received() == []


# --- names ---------------------------------------------------------------------------------


NAME = "ключ/с пробелами*?"


def test_rabbitmq_names_are_accepted() -> None:
    peer = connected()
    calls: list[Callable[[AMQPChannel], int]] = [
        lambda ch: ch.exchange_declare(NAME, "topic"),
        lambda ch: ch.exchange_bind(NAME, NAME + "2", NAME),
        lambda ch: ch.exchange_unbind(NAME, NAME + "2", NAME),
        lambda ch: ch.exchange_delete(NAME),
        lambda ch: ch.queue_declare(NAME),
        lambda ch: ch.queue_bind(NAME, NAME, NAME),
        lambda ch: ch.queue_unbind(NAME, NAME, NAME),
        lambda ch: ch.queue_purge(NAME),
        lambda ch: ch.queue_delete(NAME),
        lambda ch: ch.basic_consume(NAME, NAME),
        lambda ch: ch.basic_get(NAME),
    ]
    for call in calls:
        ch = peer.open_channel()  # one request each: the peer never answers
        call(ch)
        (sent,) = peer.received()
        fields = dict(sent.frame)
        names = [
            fields[k]
            for k in ("exchange", "queue", "routing_key", "destination", "consumer_tag")
            if k in fields
        ]
        assert names and all(n == NAME for n in names), sent.name
    ch = peer.open_channel()
    ch.publish(NAME, NAME, b"x")
    published = peer.received()
    assert (published[0].frame.exchange, published[0].frame.routing_key) == (NAME, NAME)
    # deliveries and returns carrying such names decode too
    peer.consume(ch, NAME)
    (delivery,) = peer.deliver(ch.id, NAME, 1, exchange=NAME, routing_key=NAME)
    assert (delivery.consumer_tag, delivery.exchange, delivery.routing_key) == (NAME, NAME, NAME)


@pytest.mark.parametrize("field", ["exchange", "queue", "routing_key"])
def test_name_of_256_bytes_is_refused(field: str) -> None:
    peer = connected()
    ch = peer.open_channel()
    ok = "é" * 127 + "x"  # 255 bytes
    bad = "é" * 128  # 256 bytes
    calls = {
        "exchange": lambda n: ch.exchange_declare(n),
        "queue": lambda n: ch.queue_declare(n),
        "routing_key": lambda n: ch.queue_bind("q", "ex", n),
    }
    with pytest.raises(LocalProtocolError):
        calls[field](bad)
    assert peer.received() == []
    with pytest.raises(LocalProtocolError):
        ch.publish(bad if field == "exchange" else "", bad if field != "exchange" else "", b"")
    assert peer.received() == []
    calls[field](ok)
    assert len(peer.received()) == 1
