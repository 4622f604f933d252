"""The core's value classes (``_build.value`` and ``record``) behave as the
frozen, slotted dataclasses they replaced: the same constructor, repr,
equality, hash, frozenness, pickling and pattern matching."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_msg._protocol import events
from trio_msg._protocol._build import field_names, record, value

EVENT_CLASSES = [
    getattr(events, name)
    for name in events.__all__
    if inspect.isclass(getattr(events, name)) and name not in ("Outcome",)
]

# hashable, comparable field values
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.binary(max_size=5)
)


def twin(cls: type[Any]) -> type[Any]:
    """The frozen, slotted dataclass *cls* was, with its fields and defaults."""
    probe = inspect.signature(cls)
    fields = [
        (name, Any)
        if p.default is inspect.Parameter.empty
        else (name, Any, dataclasses.field(default=p.default))
        for name, p in probe.parameters.items()
    ]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


def test_every_event_is_a_value_class() -> None:
    assert len(EVENT_CLASSES) == 12
    for cls in EVENT_CLASSES:
        assert field_names(cls) == cls.__match_args__ == cls.__slots__
        assert cls.__mro__ == (cls, object)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_events_behave_as_the_dataclasses_they_were(cls: type[Any], data: st.DataObject) -> None:
    names = field_names(cls)
    a = data.draw(st.tuples(*[VALUES for _ in names]))
    b = data.draw(st.tuples(*[VALUES for _ in names]) | st.just(a))
    ours_a, ours_b = cls(*a), cls(*b)
    twin_cls = twin(cls)
    theirs_a, theirs_b = twin_cls(*a), twin_cls(*b)
    assert repr(ours_a) == repr(theirs_a)
    assert (ours_a == ours_b) == (theirs_a == theirs_b) == (a == b)
    assert (ours_a != ours_b) == (a != b)
    assert hash(ours_a) == hash(theirs_a)
    assert ours_a != theirs_a  # another class, as between two dataclasses
    assert pickle.loads(pickle.dumps(ours_a)) == ours_a
    assert copy.copy(ours_a) == ours_a and copy.deepcopy(ours_a) == ours_a
    by_name = cls(**dict(zip(names, a, strict=True)))
    assert by_name == ours_a
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(ours_a, names[0], "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(ours_a, names[0])
    with pytest.raises(AttributeError):
        ours_a.not_a_field = 1
    assert not hasattr(ours_a, "__dict__")


def test_defaults_keyword_arguments_and_matching() -> None:
    assert events.ConnectionBlocked("memory") == events.ConnectionBlocked("memory", channel_id=0)
    assert events.RpcReply(1, 2, "basic.qos-ok", {}).properties is None
    with pytest.raises(TypeError):
        events.ChannelOpened()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        events.ChannelOpened(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        events.ChannelOpened(1, channel_id=2)  # type: ignore[misc]
    match events.ChannelFlow(3, active=False):
        case events.ChannelFlow(channel, active):
            assert (channel, active) == (3, False)
        case _:  # pragma: no cover
            pytest.fail("no match")
    assert events.ChannelOpened.__init__.__qualname__ == "ChannelOpened.__init__"


def test_a_value_class_is_frozen_and_a_record_is_not() -> None:
    @value
    class Point:
        """A point."""

        x: int
        y: int = 0

    @record
    class Box:
        items: list[int]
        full: bool = False

    p = Point(1)
    assert (p.x, p.y, repr(p), Point.__doc__) == (1, 0, "Point(x=1, y=0)", "A point.")
    assert {p, Point(1, 0)} == {p}
    box = Box([1])
    box.full = True
    box.items.append(2)
    assert repr(box) == "Box(items=[1, 2], full=True)"
    assert box != Box([1, 2], True)  # records compare by identity
    with pytest.raises(AttributeError):
        box.other = 1  # type: ignore[attr-defined]


def test_value_classes_refuse_inheritance() -> None:
    class Base:
        pass

    with pytest.raises(TypeError, match="do not inherit"):

        @value
        class Child(Base):
            x: int
