"""trio_msg.errors is the one public home of every exception.

Users import them from ``trio_msg.errors``; tracebacks and pickles name that
module, never the sans-IO core's internal ``trio_msg._protocol.errors``; and
an exception survives a pickle round trip with its text and fields (a
worker pool or a process boundary may carry one).
"""

from __future__ import annotations

import pickle
import traceback
import uuid

import pytest

import trio_msg
import trio_msg._protocol.errors as core
import trio_msg.errors as errors
from trio_msg._broker import drop_broker

PUBLIC = [getattr(errors, name) for name in errors.__all__]


def test_every_public_name_is_an_exception_of_the_family() -> None:
    assert PUBLIC
    for cls in PUBLIC:
        assert isinstance(cls, type) and issubclass(cls, errors.TrioMsgError), cls


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_each_exception_names_the_public_module(cls: type[Exception]) -> None:
    assert cls.__module__ == "trio_msg.errors"
    assert f"{cls.__module__}.{cls.__qualname__}" == f"trio_msg.errors.{cls.__name__}"


def test_the_core_and_the_package_hand_out_the_same_classes() -> None:
    # The older spellings keep working and are the very same classes.
    assert trio_msg.TrioMsgError is errors.TrioMsgError
    for name in core.__all__:
        obj = getattr(core, name)
        if isinstance(obj, type):
            assert getattr(errors, name) is obj


def test_the_core_builders_give_the_public_classes() -> None:
    error = core.channel_closed(404, "NOT_FOUND - no queue 'q' in vhost '/'")
    assert type(error) is errors.NotFound
    assert type(core.connection_closed(320, "CONNECTION_FORCED")) is errors.ConnectionForced


def _samples() -> list[errors.TrioMsgError]:
    return [
        errors.NotFound("NOT_FOUND - no queue 'q' in vhost '/'", 404, 50, 10),
        errors.ConnectionForced("CONNECTION_FORCED - shutdown", 320, by_peer=True),
        errors.ConnectionClosed("Normal shutdown", 200, by_peer=False),
        errors.AccessRefused("ACCESS_REFUSED - login refused", 403),
        errors.ChannelNotOpen(),
        errors.ConnectionLost("connection reset"),
        errors.HeartbeatTimeout("no frame for 120 s"),
        errors.FrameError("bad frame-end octet"),
        errors.UnexpectedFrame("content header on channel 3"),
        errors.ConnectionFailed("localhost:5672: connection refused"),
        errors.Unroutable("NO_ROUTE", 312, "media", "video", message={"k": 1}),
        errors.MessageOutcomeUnknown("channel closed before confirm"),
        errors.PipelineFailed([], 10, 2, 1, 0),
        errors.Empty("no message in 1 s"),
        errors.SerializerNotInstalled("no serializer 'msgpack'"),
    ]


@pytest.mark.parametrize("error", _samples(), ids=lambda e: type(e).__name__)
def test_exceptions_survive_a_pickle_round_trip(error: errors.TrioMsgError) -> None:
    data = pickle.dumps(error)
    assert b"trio_msg.errors" in data and b"_protocol" not in data
    again = pickle.loads(data)
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert again.args == error.args
    assert vars(again) == vars(error)


@pytest.mark.anyio
async def test_a_real_error_traceback_names_trio_msg_errors() -> None:
    name = f"test-{uuid.uuid4().hex[:12]}"
    try:
        async with (
            trio_msg.connect(f"memory://{name}", revive=False) as conn,
            conn.channel() as channel,
        ):
            with pytest.raises(errors.NotFound) as caught:
                await channel.queue_declare("missing", passive=True)
    finally:
        drop_broker(name)
    text = "".join(traceback.format_exception(caught.value))
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("trio_msg.errors.NotFound: (404) NOT_FOUND"), last
    assert "_protocol.errors" not in last
