"""SASL mechanisms for ``connection.start-ok``.

The mechanism is chosen from what the server offers: the one the user asked
for, or else PLAIN, then AMQPLAIN.  There is never a silent fallback from a
requested mechanism to another.
"""

from __future__ import annotations

from pamqp import encode as _pencode

from .errors import AuthenticationError

__all__ = ["SUPPORTED", "choose_mechanism", "initial_response"]

SUPPORTED = ("PLAIN", "AMQPLAIN", "EXTERNAL")
_DEFAULT_ORDER = ("PLAIN", "AMQPLAIN")


def choose_mechanism(offered: str, requested: str | None) -> str:
    """Pick a mechanism from the server's space-separated offer."""
    names = offered.split()
    if requested is not None:
        requested = requested.upper()
        if requested not in SUPPORTED:
            raise AuthenticationError(
                f"unsupported SASL mechanism {requested!r}; trio_msg supports {', '.join(SUPPORTED)}",
                by_peer=False,
            )
        if requested not in names:
            raise AuthenticationError(
                f"the server does not offer SASL mechanism {requested!r} (it offers {offered!r})",
                by_peer=False,
            )
        return requested
    for name in _DEFAULT_ORDER:
        if name in names:
            return name
    raise AuthenticationError(
        f"the server offers no SASL mechanism trio_msg can use without being asked "
        f"(it offers {offered!r}; pass auth_mechanism='EXTERNAL' for certificate login)",
        by_peer=False,
    )


def initial_response(mechanism: str, username: str, password: str) -> bytes:
    """The ``response`` field of ``connection.start-ok``."""
    if mechanism == "PLAIN":
        return b"\x00" + username.encode("utf-8") + b"\x00" + password.encode("utf-8")
    if mechanism == "AMQPLAIN":
        # A field table without its 4-byte length prefix.
        table = _pencode.field_table({"LOGIN": username, "PASSWORD": password})
        return bytes(table[4:])
    if mechanism == "EXTERNAL":
        return b""
    raise AuthenticationError(f"unsupported SASL mechanism {mechanism!r}", by_peer=False)
