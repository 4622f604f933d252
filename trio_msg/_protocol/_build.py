"""The core's small value classes, and building them fast.

:func:`value` and :func:`record` make the core's events and the driver's
internal records: a class body of annotated fields (with defaults, if any)
becomes a slotted class with an ``__init__`` taking every field, a
``__repr__`` and ``__match_args__``; :func:`value` classes are also frozen,
compare and hash by their fields and pickle.  This is what
``@dataclass(frozen=True, slots=True)`` gave them, for about a quarter of the
memory: a dataclass compiles six methods of its own for every class (and
keeps its field objects), about 14 KiB per class against 3.6 KiB here, where
one ``__init__`` is compiled and the rest is shared.  Over the 15 classes
imported on every run that was about 0.1 MiB of a process's peak resident
set, about the margin by which trio_msg on asyncio was heavier than aiormq
(``docs/performance.rst``).  Type checkers see dataclasses
(``typing.dataclass_transform``).  :class:`~.frames.BasicProperties`, which
users build and may pass to :func:`dataclasses.replace`, stays a dataclass.

The receive path builds a :class:`~.events.Delivery` and often a
:class:`~.frames.BasicProperties` for every message.  A frozen class's
``__init__`` sets each field with ``object.__setattr__``, which costs about
1.4 µs for the 14 content properties and 0.9 µs for a delivery, more than
decoding their frames.

:func:`fast_constructor` returns a function that takes every field
positionally and builds the *same* object about five times faster: it fills
a plain slotted "shell" class with the same slots (ordinary attribute stores)
and then sets the instance's ``__class__`` to the real class.  CPython allows
that assignment exactly when the two layouts are identical, which they are
by construction.  The result is an ordinary instance of the class
(``type(obj) is cls``; equality, hashing, repr, pickling and frozenness are
the class's own), and nothing of the shell remains.

The constructor checks itself when it is made; on an interpreter that
refuses the assignment it falls back to the class itself, so it is never
wrong, at worst not faster.  No defaults, no ``__post_init__``: it is meant
for the plain value classes of this package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

__all__ = ["fast_constructor", "record", "value"]

T = TypeVar("T")

_set = object.__setattr__


# The methods every class shares.  They are put in each class's own
# namespace, not inherited from a base class: the classes then have the
# layout of a plain slotted class, which fast_constructor's shell shares.


def _repr(self: Any) -> str:
    fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
    return f"{self.__class__.__qualname__}({fields})"


def _fields(self: Any) -> tuple[Any, ...]:
    return tuple([getattr(self, name) for name in self.__match_args__])


def _eq(self: Any, other: object) -> Any:  # a bool, or NotImplemented
    if other.__class__ is self.__class__:
        return _fields(self) == _fields(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(_fields(self))


def _setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _reduce(self: Any) -> tuple[Any, ...]:
    return (self.__class__, _fields(self))


_RECORD = {"__repr__": _repr}
_VALUE = {
    "__repr__": _repr,
    "__eq__": _eq,
    "__hash__": _hash,
    "__setattr__": _setattr,
    "__delattr__": _delattr,
    "__reduce__": _reduce,
}


def _make(cls: type[Any], methods: dict[str, Any], setter: str) -> type[Any]:
    body = cls.__dict__
    names = tuple(body.get("__annotations__", ()))
    if cls.__bases__ != (object,):
        raise TypeError(f"{cls.__name__}: value classes do not inherit")
    defaults = {name: body[name] for name in names if name in body}
    namespace = {k: v for k, v in body.items() if k not in defaults}
    for k in ("__dict__", "__weakref__"):
        namespace.pop(k, None)
    namespace.update(methods, __slots__=names, __match_args__=names)
    params = ", ".join(f"{n}=_defaults[{n!r}]" if n in defaults else n for n in names)
    stores = "".join(f"    {setter.format(n)}\n" for n in names) or "    pass\n"
    scope: dict[str, Any] = {"_defaults": defaults, "_set": _set}
    exec(f"def __init__(self, {params}):\n{stores}", scope)  # as dataclasses does
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    namespace["__init__"] = init
    return type(cls.__name__, (object,), namespace)


@dataclass_transform(frozen_default=True)
def value(cls: type[T]) -> type[T]:
    """A frozen, slotted value class from *cls*'s annotated fields (see the
    module's docstring).  *cls* inherits from nothing and has no methods
    that use ``super()``."""
    return _make(cls, _VALUE, "_set(self, {0!r}, {0})")


@dataclass_transform()
def record(cls: type[T]) -> type[T]:
    """A mutable, slotted record class from *cls*'s annotated fields:
    ``__init__``, ``__repr__`` and nothing else (compared by identity)."""
    return _make(cls, _RECORD, "self.{0} = {0}")


def field_names(cls: type[Any]) -> tuple[str, ...]:
    """The fields of a :func:`value` class or a dataclass, in order."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    if cls.__dict__.get("__repr__") is _repr:
        names: tuple[str, ...] = cls.__match_args__
        return names
    raise TypeError(f"{cls.__name__} is neither a value class nor a dataclass")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A positional constructor for the frozen, slotted class ``cls`` (a
    :func:`value` class or a dataclass) taking every field in declaration
    order (or ``cls`` itself if the fast way does not work here)."""
    names = field_names(cls)
    if tuple(getattr(cls, "__slots__", ())) != names or hasattr(cls, "__post_init__"):
        return cls
    shell = type(f"_{cls.__name__}Shell", (), {"__slots__": names, "__module__": __name__})
    params = ", ".join(names)
    stores = "".join(f"    obj.{name} = {name}\n" for name in names)
    source = (
        f"def make_{cls.__name__}({params}):\n"
        "    obj = shell()\n"
        f"{stores}"
        "    obj.__class__ = cls\n"
        "    return obj\n"
    )
    namespace: dict[str, Any] = {"shell": shell, "cls": cls}
    exec(source, namespace)  # the same technique dataclasses uses for __init__
    make: Callable[..., T] = namespace[f"make_{cls.__name__}"]
    sample = tuple(object() for _ in names)
    try:
        built = make(*sample)
    except TypeError:  # this interpreter refuses the __class__ assignment
        return cls
    if type(built) is not cls or built != cls(*sample):
        return cls
    return make
