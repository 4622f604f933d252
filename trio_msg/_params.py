"""Connection parameters: AMQP URL parsing, secret hygiene and TLS contexts.

Everything here is plain stdlib and does no IO (apart from
:func:`make_ssl_context` reading certificate files): the driver turns a
:class:`ConnectionParameters` into sockets, the sans-IO core into a
handshake.

URL form (RabbitMQ's URI spec, plus comma-separated failover hosts)::

    amqp[s]://[user[:password]@][host[:port][,host[:port]...]][/vhost][?option=value&...]

Failover hosts can also be given as kombu writes them: several URLs joined
by ``;``, a list of URLs, or ``alternates=[...]`` (more URLs, tried after
those of *url*).  All of these URLs must agree on everything but their
hosts and ports (scheme, credentials, vhost and query options: trio_msg
keeps one set of those per connection); a URL that differs is a
:exc:`ValueError`.  A host given twice is tried once.  The order in which
the hosts are tried is ``failover_strategy``'s (see ``_failover``).

* ``user``, ``password``, ``host`` and ``vhost`` are percent-decoded.
  Characters such as ``@ : / ? #`` in a user name or password must be
  percent-encoded (``urllib.parse.quote(s, safe="")``).
* The vhost is the path after the first ``/``: ``//``, ``/%2F``, ``/`` and
  no path at all mean the default vhost ``/``; ``/foo`` means ``foo``.
* The port defaults to 5672 (``amqp``) or 5671 (``amqps``).

Secret hygiene: the password is left out of ``repr()`` and ``str()``, error
messages raised while parsing never quote the user-info part of a URL, and
:func:`redact` scrubs the password out of arbitrary text (e.g. an exception
message from a lower layer) before it is logged or re-raised.
"""

from __future__ import annotations

import dataclasses
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ssl import SSLContext
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from ._failover import FailoverStrategy, check_strategy

__all__ = [
    "AUTH_MECHANISMS",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "DEFAULT_URL",
    "KOMBU_SSL_KEYS",
    "ConnectionParameters",
    "make_ssl_context",
    "parse_url",
    "redact",
    "sni_hostname",
]

DEFAULT_URL = "amqp://guest:guest@localhost:5672//"
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
DEFAULT_HEARTBEAT = 60
DEFAULT_CONNECTION_TIMEOUT = 10.0
DEFAULT_FRAME_MAX = 131072
DEFAULT_CHANNEL_MAX = 2047
DEFAULT_MAX_BODY_SIZE = 128 * 1024 * 1024
#: Seconds a task about to wait for the broker's answer polls the socket
#: before it sleeps (see ``ConnectionParameters.busy_poll``): none unless
#: asked for, since it costs CPU on every wait.
DEFAULT_BUSY_POLL = 0.0
#: The largest ``busy_poll`` accepted: polling is for answers that come
#: within a round trip or two, and a larger value is more likely
#: microseconds given as seconds than a wish to spin for that long.
MAX_BUSY_POLL = 0.01
#: AMQP 0-9-1's smallest allowed frame_max (``FRAME_MIN_SIZE``).
FRAME_MIN_SIZE = 4096
#: The SASL mechanisms the core implements.
AUTH_MECHANISMS = frozenset({"PLAIN", "AMQPLAIN", "EXTERNAL"})

_REDACTED = "***"
_SCHEMES = {"amqp": False, "amqps": True}


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


def _check_opt_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")


@dataclass(frozen=True)
class ConnectionParameters:
    """Everything needed to open one AMQP connection.

    Instances are immutable and validated on construction.  Build them
    directly or with :func:`parse_url`; derive variants with
    :func:`dataclasses.replace`.

    ``port=0`` (the default) means "the scheme's default": 5672, or 5671
    when ``ssl`` is true; it is resolved at construction, so ``port`` is
    always a real port afterwards.
    """

    host: str = "localhost"
    #: 0 means 5672 (or 5671 with ``ssl``); resolved in ``__post_init__``.
    port: int = 0
    username: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str = "/"
    ssl: bool = False
    #: Seconds; 0 disables heartbeats; None accepts the server's proposal.
    heartbeat: int | None = DEFAULT_HEARTBEAT
    #: Seconds allowed for TCP connect + TLS + the AMQP handshake.
    connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT
    frame_max: int = DEFAULT_FRAME_MAX
    channel_max: int = DEFAULT_CHANNEL_MAX
    #: Shown in the RabbitMQ management UI (``connection_name`` property).
    connection_name: str | None = None
    #: None picks PLAIN, else AMQPLAIN, from what the server offers.
    #: EXTERNAL (e.g. client-certificate auth) is used only when asked for.
    auth_mechanism: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    #: Verify the server's certificate chain and host name.
    verify: bool = True
    #: SNI and host-name-check override; defaults to the host dialled.
    server_hostname: str | None = None
    #: A ready-made context; when given it is used as is (cafile, certfile,
    #: keyfile and verify are then not applied).
    ssl_context: SSLContext | None = None
    #: Largest message body accepted from the broker, in bytes.
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    #: Further brokers to try, in order, after ``(host, port)``.  Port 0
    #: means the scheme's default, as for ``port``.
    hosts: tuple[tuple[str, int], ...] = ()
    #: The order in which ``addresses`` are tried on each connection
    #: attempt: ``"round-robin"`` (default), ``"shuffle"`` or a callable
    #: (kombu's ``failover_strategy``; :doc:`guide` says how each orders them).
    failover_strategy: FailoverStrategy = "round-robin"
    #: Extra client properties sent in ``connection.start-ok``.
    client_properties: Mapping[str, Any] | None = field(default=None, hash=False)
    #: Seconds (0 to ``MAX_BUSY_POLL``) that a task about to wait for what
    #: the broker sends -- a confirm, a reply, a delivery -- keeps polling
    #: the socket, yielding to the event loop between tries, before it
    #: sleeps; 0 (the default) never polls.  On plain TCP only.  It trades
    #: CPU for latency: see ``busy_poll`` in docs/guide.rst for its cost.
    busy_poll: float = DEFAULT_BUSY_POLL
    #: The name of an embedded broker in this process to connect to instead
    #: of a network address (``memory://NAME``; see docs/memory.rst).
    memory: str | None = None

    def __post_init__(self) -> None:
        default_port = DEFAULT_TLS_PORT if self.ssl else DEFAULT_PORT
        for name in ("host", "username", "password", "vhost"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str")
        if not self.host:
            raise ValueError("host must not be empty")
        port = _check_int("port", self.port, 0, 65535) or default_port
        object.__setattr__(self, "port", port)

        hosts: list[tuple[str, int]] = []
        for i, entry in enumerate(self.hosts, start=1):
            try:
                alt_host, alt_port = entry
            except (TypeError, ValueError):
                raise TypeError(f"hosts[{i - 1}] must be a (host, port) pair") from None
            if not isinstance(alt_host, str) or not alt_host:
                raise ValueError(f"hosts[{i - 1}]: host must be a non-empty str")
            alt_port = _check_int(f"hosts[{i - 1}] port", alt_port, 0, 65535)
            hosts.append((alt_host, alt_port or default_port))
        object.__setattr__(self, "hosts", tuple(hosts))
        check_strategy(self.failover_strategy)

        if self.heartbeat is not None:
            _check_int("heartbeat", self.heartbeat, 0, 65535)
        timeout = self.connection_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError("connection_timeout must be a number of seconds")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"connection_timeout must be > 0 seconds, got {timeout}")
        _check_int("frame_max", self.frame_max, FRAME_MIN_SIZE, 2**32 - 1)
        _check_int("channel_max", self.channel_max, 1, 65535)
        _check_int("max_body_size", self.max_body_size, 1, 2**63 - 1)
        poll = self.busy_poll
        if isinstance(poll, bool) or not isinstance(poll, int | float):
            raise TypeError("busy_poll must be a number of seconds")
        if not (math.isfinite(poll) and 0 <= poll <= MAX_BUSY_POLL):
            raise ValueError(
                f"busy_poll must be 0 to {MAX_BUSY_POLL} seconds, got {poll} "
                "(it is in seconds: 0.0005 is half a millisecond)"
            )

        for name in ("connection_name", "cafile", "certfile", "keyfile", "server_hostname"):
            _check_opt_str(name, getattr(self, name))
        _check_opt_str("auth_mechanism", self.auth_mechanism)
        if self.auth_mechanism is not None:
            mechanism = self.auth_mechanism.upper()
            if mechanism not in AUTH_MECHANISMS:
                raise ValueError(
                    f"unsupported auth_mechanism {self.auth_mechanism!r}; "
                    f"use one of {', '.join(sorted(AUTH_MECHANISMS))}"
                )
            object.__setattr__(self, "auth_mechanism", mechanism)

        if not isinstance(self.ssl, bool):
            # A dict here would be truthy and silently replaced by the default
            # context: kombu's ssl={...} is translated by parse_url/connect.
            raise TypeError(
                "ssl must be a bool here; pass kombu's ssl={...} dict or an SSLContext "
                "to connect() or parse_url()"
            )
        if self.ssl_context is not None and not isinstance(self.ssl_context, SSLContext):
            raise TypeError("ssl_context must be an ssl.SSLContext")
        if not self.ssl:
            # TLS material without TLS would be silently ignored: refuse it,
            # the caller almost certainly meant amqps://.
            for name in ("ssl_context", "cafile", "certfile", "keyfile"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} given but TLS is off (use amqps:// or ssl=True)")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile given without certfile")

        if self.client_properties is not None:
            if not isinstance(self.client_properties, Mapping):
                raise TypeError("client_properties must be a mapping or None")
            object.__setattr__(
                self, "client_properties", MappingProxyType(dict(self.client_properties))
            )

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every broker to try, in order: ``(host, port)`` then ``hosts``."""
        return ((self.host, self.port), *self.hosts)

    def url_redacted(self) -> str:
        """This connection as a URL, with the password replaced by ``***``.

        Options that differ from their defaults and have a URL form are
        included as query options, so ``parse_url(p.url_redacted(),
        password=p.password)`` rebuilds ``p`` (``ssl_context``,
        ``client_properties`` and ``heartbeat=None`` have no URL form).
        """
        scheme = "amqps" if self.ssl else "amqp"
        userinfo = f"{quote(self.username, safe='')}:{_REDACTED}@"
        netloc = ",".join(f"{_url_host(h)}:{p}" for h, p in self.addresses)
        path = "/" + quote(self.vhost, safe="")
        query: list[tuple[str, str]] = []
        if self.heartbeat is not None and self.heartbeat != DEFAULT_HEARTBEAT:
            query.append(("heartbeat", str(self.heartbeat)))
        if self.connection_timeout != DEFAULT_CONNECTION_TIMEOUT:
            query.append(("connection_timeout", repr(float(self.connection_timeout))))
        if self.frame_max != DEFAULT_FRAME_MAX:
            query.append(("frame_max", str(self.frame_max)))
        if self.channel_max != DEFAULT_CHANNEL_MAX:
            query.append(("channel_max", str(self.channel_max)))
        if self.max_body_size != DEFAULT_MAX_BODY_SIZE:
            query.append(("max_body_size", str(self.max_body_size)))
        if self.busy_poll != DEFAULT_BUSY_POLL:
            query.append(("busy_poll", repr(float(self.busy_poll))))
        for name in ("connection_name", "auth_mechanism", "cafile", "certfile", "keyfile"):
            value = getattr(self, name)
            if value is not None:
                query.append((name, value))
        if not self.verify:
            query.append(("verify", "false"))
        if self.server_hostname is not None:
            query.append(("server_name_indication", self.server_hostname))
        url = f"{scheme}://{userinfo}{netloc}{path}"
        if self.memory is not None:
            url = f"memory://{quote(self.memory, safe='')}"
        if query:
            url += "?" + urlencode(query, quote_via=quote)
        return url

    def __str__(self) -> str:
        return self.url_redacted()


def _url_host(host: str) -> str:
    if ":" in host:  # IPv6 literal
        return f"[{host}]"
    return quote(host, safe="")


# --- URL parsing ------------------------------------------------------------

_INT_OPTIONS = {"heartbeat", "frame_max", "channel_max", "max_body_size"}
_STR_OPTIONS = {"connection_name", "cafile", "certfile", "keyfile"}
#: URL query option -> ConnectionParameters field.
_QUERY_OPTIONS = {
    **{name: name for name in _INT_OPTIONS | _STR_OPTIONS},
    "connection_timeout": "connection_timeout",
    "busy_poll": "busy_poll",
    "auth_mechanism": "auth_mechanism",
    "authMechanism": "auth_mechanism",
    "verify": "verify",
    "server_name_indication": "server_hostname",
    "server_hostname": "server_hostname",
}
_TRUE = {"true", "1", "yes", "on", "verify_peer"}
_FALSE = {"false", "0", "no", "off", "verify_none"}
_FIELDS = frozenset(f.name for f in dataclasses.fields(ConnectionParameters))
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}")
#: The fields a URL can set.
_FIELDS_FROM_URL = frozenset(
    {"ssl", "username", "password", "host", "port", "hosts", "vhost", *_QUERY_OPTIONS.values()}
)


def parse_url(
    url: str | Sequence[str] = DEFAULT_URL,
    *,
    alternates: Sequence[str] | None = None,
    **overrides: Any,
) -> ConnectionParameters:
    """Parse an ``amqp://`` or ``amqps://`` URL into :class:`ConnectionParameters`.

    *url* may also be several URLs joined by ``;`` or a list of URLs, and
    *alternates* more URLs (kombu's failover forms): their hosts are tried
    in turn (see the module docs).  They must agree on everything but their
    hosts and ports.

    Query options: ``heartbeat``, ``connection_timeout`` and ``busy_poll``
    (seconds), ``frame_max``, ``channel_max``, ``max_body_size``,
    ``connection_name``, ``auth_mechanism`` (or ``authMechanism``),
    ``cafile``, ``certfile``, ``keyfile``, ``verify`` (``true``/``false``/
    ``1``/``0``/``verify_peer``/``verify_none``) and
    ``server_name_indication`` (or ``server_hostname``).

    Keyword *overrides* name :class:`ConnectionParameters` fields and win
    over values from the URL.  ``ssl`` may also be given kombu's way: an
    :class:`ssl.SSLContext` (used as ``ssl_context``), or a dict of
    :data:`KOMBU_SSL_KEYS` (``ca_certs``, ``certfile``, ``keyfile``,
    ``cert_reqs``, ``server_hostname``), which turns TLS on with those
    settings; any other key is an error.

    Raises:
        ValueError: the URL is malformed, has an unknown scheme or query
            option, or a value is invalid or out of range; failover URLs
            disagree on more than their hosts.  The message never contains
            a password.
        TypeError: an override names no field.
    """
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise TypeError(f"parse_url() got unexpected keyword argument(s): {', '.join(unknown)}")
    urls = _split_urls("url", url) + _split_urls("alternates", alternates or [])
    hints = [_password_hint(u) for u in urls]
    try:
        values = _parse_all(urls)
        values.update(_kombu_ssl(overrides))
        return ConnectionParameters(**values)
    except (ValueError, TypeError) as exc:
        # Belt and braces: scrub anything that looks like a password, and
        # drop the chained context (its messages are not scrubbed).
        message = str(exc)
        for hint in hints:
            message = _redact_secret(message, hint)
        if isinstance(overrides.get("password"), str):
            message = _redact_secret(message, overrides["password"])
        error = ValueError if isinstance(exc, ValueError) else TypeError
        raise error(message) from None


#: The keys of kombu's (py-amqp's) ``ssl={...}`` dict that map onto
#: :class:`ConnectionParameters` fields.
KOMBU_SSL_KEYS = {
    "ca_certs": "cafile",
    "certfile": "certfile",
    "keyfile": "keyfile",
    "cert_reqs": "verify",
    "server_hostname": "server_hostname",
}


def _kombu_ssl(overrides: dict[str, Any]) -> dict[str, Any]:
    """*overrides* with kombu's ``ssl=`` forms (a dict of TLS settings, or
    an SSLContext) turned into fields; an unknown key or a setting given
    twice is an error (never dropped: TLS set up otherwise than asked)."""
    given = overrides.get("ssl")
    if isinstance(given, SSLContext):
        if overrides.get("ssl_context") not in (None, given):
            raise ValueError("ssl=<SSLContext> and ssl_context= both given")
        return {**overrides, "ssl": True, "ssl_context": given}
    if not isinstance(given, Mapping):
        return overrides
    unknown = sorted(str(key) for key in given if key not in KOMBU_SSL_KEYS)
    if unknown:
        raise ValueError(
            f"unsupported ssl option(s) {', '.join(unknown)}: trio_msg takes "
            f"{', '.join(KOMBU_SSL_KEYS)}; for anything else pass ssl_context=<ssl.SSLContext>"
        )
    result = {**overrides, "ssl": True}
    for key, value in given.items():
        name = KOMBU_SSL_KEYS[key]
        if key == "cert_reqs":
            if value is None:
                continue
            if value not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
                raise ValueError(f"ssl cert_reqs must be an ssl.CERT_* constant, not {value!r}")
            # A client always gets the server's certificate: OPTIONAL verifies it too.
            value = value != ssl.CERT_NONE
        elif value is None:
            continue  # kombu: server_hostname=None means the host dialled (our default)
        if name in overrides and overrides[name] != value:
            raise ValueError(f"ssl[{key!r}] and {name}= both given, and they differ")
        result[name] = value
    return result


def _split_urls(what: str, urls: object) -> list[str]:
    """*urls* (one URL, ``;``-joined URLs or a list of them) as a list of URLs."""
    if isinstance(urls, str):
        items: list[object] = [urls]
    elif isinstance(urls, Sequence):
        items = list(urls)
        if what == "url" and not items:
            raise ValueError("url: the list of URLs is empty")
    else:
        raise TypeError(f"{what} must be a str or a list of str, not {type(urls).__name__}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{what} must hold URLs as str, not {type(item).__name__}")
        out.extend(part.strip() for part in item.split(";"))
    return out


#: What failover URLs may differ in.
_PER_HOST = frozenset({"host", "port", "hosts"})
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ConnectionParameters)}


def _parse_all(urls: list[str]) -> dict[str, Any]:
    """Parse every URL; all but the first add only their hosts."""
    count = len(urls)
    values: dict[str, Any] = {}
    addresses: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    shared: dict[str, Any] = {}
    for index, url in enumerate(urls, start=1):
        if not url:
            raise ValueError(f"URL #{index} of {count} is empty")
        try:
            parsed = _parse(url)
        except ValueError as exc:
            raise ValueError(f"URL #{index} of {count}: {exc}" if count > 1 else str(exc)) from None
        default_port = DEFAULT_TLS_PORT if parsed["ssl"] else DEFAULT_PORT
        for host, port in ((parsed["host"], parsed["port"]), *parsed["hosts"]):
            # Port 0 stays 0 (the scheme's default, resolved later: an ssl=
            # override moves it), but a host is tried once whichever way
            # its port was written.
            key = (host, port or default_port)
            if key not in seen:
                seen.add(key)
                addresses.append((host, port))
        rest = {name: parsed.get(name, _DEFAULTS[name]) for name in _FIELDS_FROM_URL - _PER_HOST}
        if index == 1:
            values, shared = parsed, rest
            continue
        differing = sorted(name for name in rest if rest[name] != shared[name])
        if differing:
            raise ValueError(
                f"URL #{index} of {count} differs from the first in {', '.join(differing)}: "
                "failover URLs may differ only in their hosts and ports"
            )
    values["host"], values["port"] = addresses[0]
    values["hosts"] = tuple(addresses[1:])
    return values


def _password_hint(url: str) -> str:
    # (one URL; parse_url takes the hint of each)
    """The raw password part of *url*, found as leniently as possible."""
    _, _, rest = url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    if not at:
        return ""
    _, colon, password = userinfo.partition(":")
    return password if colon else ""


def _parse(url: str) -> dict[str, Any]:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not an AMQP URL: expected 'amqp://...' or 'amqps://...'")
    if scheme.lower() == "memory":
        # memory://NAME?options: the embedded broker NAME in this process
        # (guest/guest, vhost "/"), with the same query options.
        name, question, query = rest.partition("?")
        options = _parse("amqp://localhost/" + question + query)
        options["memory"] = unquote(name.rstrip("/"))
        return options
    if scheme.lower() not in _SCHEMES:
        shown = f" {scheme!r}" if _SCHEME_RE.fullmatch(scheme) else ""
        raise ValueError(f"unsupported URL scheme{shown}: use 'amqp', 'amqps' or 'memory'")
    values: dict[str, Any] = {"ssl": _SCHEMES[scheme.lower()]}

    rest, hash_sign, _ = rest.partition("#")
    if hash_sign:
        raise ValueError(
            "AMQP URLs take no '#fragment'; percent-encode '#' in a user name or password as %23"
        )
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if "@" in path or "@" in query:
        raise ValueError(
            "'@' found after the host part: percent-encode '/', '?', '#' and '@' "
            "in user names, passwords and vhosts"
        )

    userinfo, at, hostpart = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        values["username"] = unquote(user)
        if colon:
            values["password"] = unquote(password)

    entries = hostpart.split(",")
    parsed = [_parse_host(entry, i, len(entries)) for i, entry in enumerate(entries, start=1)]
    values["host"], values["port"] = parsed[0]
    values["hosts"] = tuple(parsed[1:])

    if slash and path not in ("", "/"):
        values["vhost"] = unquote(path)

    seen: set[str] = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _QUERY_OPTIONS:
            raise ValueError(f"unknown URL query option {name!r}")
        target = _QUERY_OPTIONS[name]
        if target in seen:
            raise ValueError(f"URL query option {name!r} given more than once")
        seen.add(target)
        values[target] = _convert_option(name, target, value)
    return values


def _parse_host(entry: str, index: int, count: int) -> tuple[str, int]:
    # Host and port text is never echoed: with an unencoded '/' or '@' in a
    # password, it may hold part of the password.
    where = f"host #{index}" if count > 1 else "host"
    if entry.startswith("["):
        end = entry.find("]")
        if end < 0:
            raise ValueError(f"{where}: unclosed '[' in IPv6 address")
        host, after = entry[1:end], entry[end + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(f"{where}: unexpected text after IPv6 address")
        port_text = after[1:]
    else:
        host, _, port_text = entry.partition(":")
        if ":" in port_text:
            raise ValueError(f"{where}: IPv6 addresses must be in [brackets]")
    host = unquote(host)
    if not host:
        if count > 1:
            raise ValueError(f"{where}: empty host name")
        host = "localhost"
    if not port_text:
        return host, 0
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"{where}: port is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{where}: port must be in 1..65535")
    return host, port


def _convert_option(name: str, target: str, value: str) -> Any:
    if target in _INT_OPTIONS:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"URL query option {name!r} must be an integer") from None
    if target in ("connection_timeout", "busy_poll"):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"URL query option {name!r} must be a number of seconds") from None
    if target == "verify":
        flag = value.lower()
        if flag in _TRUE:
            return True
        if flag in _FALSE:
            return False
        raise ValueError(
            f"URL query option {name!r} must be true/false/1/0/verify_peer/verify_none"
        )
    if not value:
        raise ValueError(f"URL query option {name!r} must not be empty")
    return value


# --- secrets ----------------------------------------------------------------


def _redact_secret(text: str, secret: str) -> str:
    if not secret:
        return text
    forms = {secret, quote(secret, safe=""), quote(secret), unquote(secret)}
    forms.update({f.lower() for f in set(forms) if "%" in f})
    forms.update({f.upper() for f in set(forms) if "%" in f and f.upper() != f})
    for form in sorted((f for f in forms if f), key=len, reverse=True):
        text = text.replace(form, _REDACTED)
    return text


def redact(text: str, params: ConnectionParameters) -> str:
    """Return *text* with ``params.password`` replaced by ``***``.

    Both the raw password and its percent-encoded forms are replaced, so
    exception messages quoting a URL are scrubbed too.  An empty password
    leaves *text* unchanged.
    """
    return _redact_secret(text, params.password)


# --- TLS --------------------------------------------------------------------


def make_ssl_context(params: ConnectionParameters) -> SSLContext | None:
    """The TLS context to connect with, or None when TLS is off.

    A user-supplied ``params.ssl_context`` is returned unchanged.  Otherwise
    the context trusts ``params.cafile`` (or the system store), presents
    ``certfile``/``keyfile`` as the client certificate when given, requires
    TLS 1.2 or later, and verifies the chain and host name unless
    ``params.verify`` is false.
    """
    if not params.ssl:
        return None
    if params.ssl_context is not None:
        return params.ssl_context
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=params.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if params.certfile is not None:
        context.load_cert_chain(params.certfile, params.keyfile)
    if not params.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def sni_hostname(params: ConnectionParameters, host: str | None = None) -> str | None:
    """The name to send as SNI and check the certificate against.

    ``params.server_hostname`` when set, else *host* (the broker being
    dialled, for failover alternates) or ``params.host``.  None when TLS is
    off.
    """
    if not params.ssl:
        return None
    return params.server_hostname or host or params.host
