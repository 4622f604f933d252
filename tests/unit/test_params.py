"""Connection parameters: URL parsing, secret hygiene, TLS contexts."""

from __future__ import annotations

import dataclasses
import ssl
import traceback
from pathlib import Path
from urllib.parse import quote

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from trio_msg._params import (
    DEFAULT_URL,
    ConnectionParameters,
    make_ssl_context,
    parse_url,
    redact,
    sni_hostname,
)

SECRET = "s3cr3t-Pa55"


# --- defaults and basic forms ----------------------------------------------


def test_defaults() -> None:
    p = ConnectionParameters()
    assert (p.host, p.port, p.username, p.password, p.vhost) == (
        "localhost",
        5672,
        "guest",
        "guest",
        "/",
    )
    assert p.ssl is False
    assert p.heartbeat == 60
    assert p.connection_timeout == 10.0
    assert p.frame_max == 131072
    assert p.channel_max == 2047
    assert p.connection_name is None
    assert p.auth_mechanism is None
    assert (p.cafile, p.certfile, p.keyfile) == (None, None, None)
    assert p.verify is True
    assert p.server_hostname is None
    assert p.ssl_context is None
    assert p.max_body_size == 128 * 1024 * 1024
    assert p.hosts == ()
    assert p.addresses == (("localhost", 5672),)
    assert p.client_properties is None
    assert p.busy_poll == 0.0  # off unless asked for (see docs/guide.rst)


def test_parse_url_default_equals_constructor_defaults() -> None:
    assert parse_url() == ConnectionParameters()
    assert parse_url(DEFAULT_URL) == ConnectionParameters()
    assert parse_url("amqp://") == ConnectionParameters()


def test_amqps_default_port() -> None:
    p = parse_url("amqps://broker.example")
    assert p.ssl is True
    assert p.port == 5671
    assert ConnectionParameters(ssl=True).port == 5671
    assert parse_url("amqp://broker.example").port == 5672


def test_explicit_port_kept_with_tls() -> None:
    assert parse_url("amqps://h:5672").port == 5672
    assert parse_url("amqp://h:15672").port == 15672


def test_scheme_case_insensitive_and_whitespace_stripped() -> None:
    p = parse_url("  AMQPS://h  ")
    assert p.ssl is True
    assert p.host == "h"


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://h", "/"),
        ("amqp://h/", "/"),
        ("amqp://h//", "/"),
        ("amqp://h/%2F", "/"),
        ("amqp://h/%2f", "/"),
        ("amqp://h/foo", "foo"),
        ("amqp://h/foo%2Fbar", "foo/bar"),
        ("amqp://h/%2Ffoo", "/foo"),
        ("amqp://h/caf%C3%A9", "café"),
        ("amqp://h?heartbeat=5", "/"),
        ("amqp://h/vh?heartbeat=5", "vh"),
    ],
)
def test_vhost_forms(url: str, vhost: str) -> None:
    assert parse_url(url).vhost == vhost


def test_percent_decoded_credentials() -> None:
    p = parse_url("amqp://us%40er:p%3Ass%2Fw@h/")
    assert p.username == "us@er"
    assert p.password == "p:ss/w"


def test_plus_is_not_a_space_in_userinfo() -> None:
    p = parse_url("amqp://a+b:c+d@h")
    assert (p.username, p.password) == ("a+b", "c+d")


def test_user_without_password_keeps_default_password() -> None:
    p = parse_url("amqp://alice@h")
    assert (p.username, p.password) == ("alice", "guest")
    assert parse_url("amqp://alice:@h").password == ""


def test_host_and_port() -> None:
    p = parse_url("amqp://u:p@rabbit.internal:5673/vh")
    assert (p.host, p.port, p.vhost) == ("rabbit.internal", 5673, "vh")
    assert parse_url("amqp://h:/").port == 5672  # empty port = default


def test_ipv6_host() -> None:
    p = parse_url("amqp://[::1]:5673/")
    assert (p.host, p.port) == ("::1", 5673)
    assert parse_url("amqps://[fe80::1]").port == 5671
    assert "[::1]:5673" in p.url_redacted()


def test_failover_hosts() -> None:
    p = parse_url("amqp://u:p@h1:5672,h2:5673,h3/vh")
    assert (p.host, p.port) == ("h1", 5672)
    assert p.hosts == (("h2", 5673), ("h3", 5672))
    assert p.addresses == (("h1", 5672), ("h2", 5673), ("h3", 5672))
    assert p.vhost == "vh"
    tls = parse_url("amqps://h1,h2:6000")
    assert tls.addresses == (("h1", 5671), ("h2", 6000))


def test_constructor_hosts_default_port_and_validation() -> None:
    p = ConnectionParameters(host="a", hosts=(("b", 0), ("c", 7000)), ssl=True)
    assert p.addresses == (("a", 5671), ("b", 5671), ("c", 7000))
    with pytest.raises(ValueError, match=r"hosts\[0\] port"):
        ConnectionParameters(hosts=(("b", 70000),))
    with pytest.raises(TypeError, match="pair"):
        ConnectionParameters(hosts=(("b", 1, 2),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        ConnectionParameters(hosts=(("", 1),))


# --- query options -----------------------------------------------------------


def test_all_query_options() -> None:
    url = (
        "amqps://h/?heartbeat=15&connection_timeout=2.5&frame_max=8192&channel_max=16"
        "&connection_name=my%20app&auth_mechanism=amqplain&cafile=%2Fca.pem"
        "&certfile=%2Fc.pem&keyfile=%2Fk.pem&verify=false"
        "&server_name_indication=broker.example&max_body_size=1000&busy_poll=0.002"
    )
    p = parse_url(url)
    assert p.busy_poll == 0.002
    assert p.heartbeat == 15
    assert p.connection_timeout == 2.5
    assert p.frame_max == 8192
    assert p.channel_max == 16
    assert p.connection_name == "my app"
    assert p.auth_mechanism == "AMQPLAIN"
    assert (p.cafile, p.certfile, p.keyfile) == ("/ca.pem", "/c.pem", "/k.pem")
    assert p.verify is False
    assert p.server_hostname == "broker.example"
    assert p.max_body_size == 1000


def test_query_option_aliases() -> None:
    assert parse_url("amqp://h?authMechanism=EXTERNAL").auth_mechanism == "EXTERNAL"
    assert parse_url("amqps://h?server_hostname=x.example").server_hostname == "x.example"


def test_heartbeat_zero_disables() -> None:
    assert parse_url("amqp://h?heartbeat=0").heartbeat == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("1", True),
        ("TRUE", True),
        ("verify_peer", True),
        ("false", False),
        ("0", False),
        ("False", False),
        ("verify_none", False),
    ],
)
def test_verify_values(value: str, expected: bool) -> None:
    assert parse_url(f"amqps://h?verify={value}").verify is expected


def test_bad_verify_value() -> None:
    with pytest.raises(ValueError, match="'verify'"):
        parse_url("amqps://h?verify=maybe")


def test_auth_mechanism_default_and_explicit() -> None:
    # None = negotiate PLAIN/AMQPLAIN; EXTERNAL only when asked for.
    assert parse_url("amqps://h").auth_mechanism is None
    assert parse_url("amqps://h?auth_mechanism=external").auth_mechanism == "EXTERNAL"
    assert ConnectionParameters(auth_mechanism="plain").auth_mechanism == "PLAIN"
    with pytest.raises(ValueError, match="unsupported auth_mechanism"):
        parse_url("amqp://h?auth_mechanism=CRAM-MD5")


def test_unknown_query_option() -> None:
    with pytest.raises(ValueError, match="unknown URL query option 'bogus'"):
        parse_url("amqp://h/?bogus=1")


def test_duplicate_query_option() -> None:
    with pytest.raises(ValueError, match="more than once"):
        parse_url("amqps://h/?auth_mechanism=PLAIN&authMechanism=EXTERNAL")


@pytest.mark.parametrize(
    "option",
    ["heartbeat", "frame_max", "channel_max", "max_body_size", "connection_timeout", "busy_poll"],
)
@pytest.mark.parametrize("bad", ["abc", "", "1.5e", "0x10"])
def test_bad_numbers_name_the_option(option: str, bad: str) -> None:
    with pytest.raises(ValueError, match=f"'{option}'"):
        parse_url(f"amqp://h/?{option}={bad}")


def test_empty_string_option_rejected() -> None:
    with pytest.raises(ValueError, match="'connection_name'"):
        parse_url("amqp://h/?connection_name=")


# --- ranges ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("frame_max=4095", "frame_max"),
        (f"frame_max={2**32}", "frame_max"),
        ("channel_max=0", "channel_max"),
        ("channel_max=65536", "channel_max"),
        ("heartbeat=-1", "heartbeat"),
        ("heartbeat=65536", "heartbeat"),
        ("connection_timeout=0", "connection_timeout"),
        ("connection_timeout=-1", "connection_timeout"),
        ("connection_timeout=nan", "connection_timeout"),
        ("connection_timeout=inf", "connection_timeout"),
        ("max_body_size=0", "max_body_size"),
        ("busy_poll=-0.001", "busy_poll"),
        ("busy_poll=nan", "busy_poll"),
        ("busy_poll=inf", "busy_poll"),
        ("busy_poll=0.011", "busy_poll"),
    ],
)
def test_out_of_range(query: str, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        parse_url(f"amqp://h/?{query}")


@pytest.mark.parametrize(
    ("query", "attr", "value"),
    [
        ("frame_max=4096", "frame_max", 4096),
        (f"frame_max={2**32 - 1}", "frame_max", 2**32 - 1),
        ("channel_max=1", "channel_max", 1),
        ("channel_max=65535", "channel_max", 65535),
        ("heartbeat=65535", "heartbeat", 65535),
        ("busy_poll=0", "busy_poll", 0.0),
        ("busy_poll=0.01", "busy_poll", 0.01),
    ],
)
def test_range_bounds_accepted(query: str, attr: str, value: int) -> None:
    assert getattr(parse_url(f"amqp://h/?{query}"), attr) == value


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_port_out_of_range(port: str) -> None:
    with pytest.raises(ValueError, match=r"port must be in 1\.\.65535"):
        parse_url(f"amqp://h:{port}/")


def test_port_range_in_constructor() -> None:
    with pytest.raises(ValueError, match="port"):
        ConnectionParameters(port=65536)
    with pytest.raises(ValueError, match="port"):
        ConnectionParameters(port=-1)
    assert ConnectionParameters(port=65535).port == 65535


def test_busy_poll_in_microseconds_is_refused_with_the_unit() -> None:
    """500 meant as microseconds would spin for minutes: the error says
    the unit, and what half a millisecond is."""
    with pytest.raises(ValueError, match=r"in seconds: 0\.0005 is half a millisecond"):
        ConnectionParameters(busy_poll=500)
    with pytest.raises(TypeError, match="busy_poll must be a number of seconds"):
        ConnectionParameters(busy_poll=True)
    with pytest.raises(TypeError, match="busy_poll"):
        ConnectionParameters(busy_poll="0.001")  # type: ignore[arg-type]
    assert ConnectionParameters(busy_poll=0).busy_poll == 0


def test_constructor_type_checks() -> None:
    with pytest.raises(TypeError, match="heartbeat"):
        ConnectionParameters(heartbeat=True)
    with pytest.raises(TypeError, match="frame_max"):
        ConnectionParameters(frame_max="4096")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client_properties"):
        ConnectionParameters(client_properties=[1])  # type: ignore[arg-type]
    assert ConnectionParameters(heartbeat=None).heartbeat is None


# --- malformed URLs --------------------------------------------------------


@pytest.mark.parametrize("url", ["http://h/", "amqpx://h", "redis://h:6379/0"])
def test_unknown_scheme(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported URL scheme") as info:
        parse_url(url)
    assert "amqp" in str(info.value)


def test_not_a_url() -> None:
    with pytest.raises(ValueError, match="not an AMQP URL"):
        parse_url("localhost:5672")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("amqp://h:abc/", "port is not a number"),
        ("amqp://h:5672:1/", "brackets"),
        ("amqp://[::1/", "unclosed"),
        ("amqp://[::1]x/", "after IPv6"),
        ("amqp://h1,,h2/", "host #2: empty"),
        ("amqp://h/#frag", "fragment"),
        ("amqp://h/v@x", "'@' found after the host"),
    ],
)
def test_malformed_netloc(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_url(url)


def test_tls_material_without_tls_rejected() -> None:
    with pytest.raises(ValueError, match="cafile given but TLS is off"):
        parse_url("amqp://h/?cafile=/ca.pem")
    with pytest.raises(ValueError, match="ssl_context given but TLS is off"):
        ConnectionParameters(ssl_context=ssl.create_default_context())
    with pytest.raises(ValueError, match="keyfile given without certfile"):
        parse_url("amqps://h/?keyfile=/k.pem")


# --- overrides --------------------------------------------------------------


def test_overrides_win_over_url() -> None:
    p = parse_url(
        "amqp://u:p@h:5673/vh?heartbeat=5",
        heartbeat=None,
        vhost="other",
        password="pw2",
        client_properties={"product": "x"},
        connection_name="svc",
    )
    assert p.heartbeat is None
    assert p.vhost == "other"
    assert (p.username, p.password) == ("u", "pw2")
    assert p.port == 5673
    assert p.connection_name == "svc"
    assert dict(p.client_properties or {}) == {"product": "x"}


def test_ssl_override_moves_default_port() -> None:
    p = parse_url("amqp://h", ssl=True)
    assert (p.ssl, p.port) == (True, 5671)


def test_overrides_are_validated() -> None:
    with pytest.raises(ValueError, match="channel_max"):
        parse_url("amqp://h", channel_max=0)


def test_unknown_keyword() -> None:
    with pytest.raises(TypeError, match="frobnicate"):
        parse_url("amqp://h", frobnicate=1)


def test_client_properties_frozen_copy() -> None:
    props = {"a": 1}
    p = ConnectionParameters(client_properties=props)
    props["a"] = 2
    assert p.client_properties is not None
    assert p.client_properties["a"] == 1
    with pytest.raises(TypeError):
        p.client_properties["a"] = 3  # type: ignore[index]


def test_frozen() -> None:
    p = ConnectionParameters()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.host = "x"  # type: ignore[misc]
    assert dataclasses.replace(p, host="x").host == "x"


# --- secret hygiene -------------------------------------------------------


def test_repr_and_str_hide_password() -> None:
    p = parse_url(f"amqps://alice:{SECRET}@h/vh")
    assert p.password == SECRET
    assert SECRET not in repr(p)
    assert SECRET not in str(p)
    assert SECRET not in f"{p!r} {p!s} {p}"
    assert "alice" in repr(p)
    assert "***" in str(p)


def test_url_redacted() -> None:
    p = parse_url(f"amqps://us%40er:{SECRET}@h1:5673,h2/my%2Fvh?heartbeat=5&verify=false")
    url = p.url_redacted()
    assert SECRET not in url
    assert url == "amqps://us%40er:***@h1:5673,h2:5671/my%2Fvh?heartbeat=5&verify=false"
    # Everything but the password survives the round trip.
    assert parse_url(url, password=SECRET) == p
    assert ConnectionParameters().url_redacted() == "amqp://guest:***@localhost:5672/%2F"


def test_url_redacted_round_trips_all_options() -> None:
    p = ConnectionParameters(
        host="h",
        ssl=True,
        heartbeat=0,
        connection_timeout=3.0,
        frame_max=4096,
        channel_max=10,
        connection_name="a b&c",
        auth_mechanism="EXTERNAL",
        cafile="/ca",
        certfile="/c",
        keyfile="/k",
        verify=False,
        server_hostname="sni.example",
        max_body_size=99,
        busy_poll=0.001,
        password=SECRET,
    )
    url = p.url_redacted()
    assert SECRET not in url
    assert parse_url(url, password=SECRET) == p


MALFORMED_WITH_SECRET = [
    f"http://user:{SECRET}@host/",
    f"amqp://user:{SECRET}@host:notaport/",
    f"amqp://user:{SECRET}@host:70000/",
    f"amqp://user:{SECRET}@host/?bogus=1",
    f"amqp://user:{SECRET}@host/?heartbeat=abc",
    f"amqp://user:{SECRET}@host/?heartbeat={SECRET}",
    f"amqp://user:{SECRET}@host/?frame_max=100",
    f"amqp://user:{SECRET}@host/?cafile=/x",
    f"amqp://user:{SECRET}@h1,,h2/",
    f"amqp://user:{SECRET}@[::1/",
    f"amqp://user:{SECRET}host:5672/",  # forgot the '@'
    f"amqp://user:{SECRET}:5672/",
    f"amqp://user:{SECRET[:4]}#{SECRET[4:]}@host/",  # unencoded '#'
    f"amqp://user:{SECRET[:4]}/{SECRET[4:]}@host/",  # unencoded '/'
    f"amqp://user:{SECRET[:4]}?{SECRET[4:]}@host/",  # unencoded '?'
    f"amqp://user:{quote(SECRET + '/')}@host/?heartbeat=x",
    f"amqp//user:{SECRET}@host/",
]


@pytest.mark.parametrize("url", MALFORMED_WITH_SECRET)
def test_parse_errors_never_leak_password(url: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_url(url)
    exc = info.value
    rendered = "".join(traceback.format_exception(exc))
    for fragment in (SECRET, SECRET[:4], SECRET[4:]):
        assert fragment not in str(exc)
        assert fragment not in repr(exc)
        assert fragment not in rendered
    assert exc.__cause__ is None
    assert exc.__suppress_context__


def test_override_password_not_in_errors() -> None:
    with pytest.raises(ValueError) as info:
        parse_url("amqp://h/?bogus=1", password=SECRET)
    assert SECRET not in str(info.value)


def test_redact() -> None:
    p = ConnectionParameters(password="p@ss/w:rd")
    text = "failed amqp://u:p%40ss%2Fw%3Ard@h (raw p@ss/w:rd, lower p%40ss%2fw%3ard)"
    out = redact(text, p)
    assert "p@ss" not in out
    assert "p%40ss" not in out.lower()
    assert out == "failed amqp://u:***@h (raw ***, lower ***)"


def test_redact_empty_password_is_noop() -> None:
    assert redact("nothing to see", ConnectionParameters(password="")) == "nothing to see"


# --- property: round-trip of encoded userinfo and vhost -------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@given(username=_text, password=_text, vhost=_text.filter(lambda s: s != ""))
def test_round_trip_percent_encoded(username: str, password: str, vhost: str) -> None:
    url = (
        f"amqp://{quote(username, safe='')}:{quote(password, safe='')}"
        f"@broker:5672/{quote(vhost, safe='')}"
    )
    p = parse_url(url)
    assert (p.username, p.password, p.vhost) == (username, password, vhost)
    assert (p.host, p.port) == ("broker", 5672)
    assert p.url_redacted().startswith(f"amqp://{quote(username, safe='')}:***@broker:5672/")
    assert parse_url(p.url_redacted(), password=password) == p


# --- TLS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client = ca.issue_cert("client.example")
    cert_path = tmp_path / "client.pem"
    key_path = tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_path))
    client.private_key_pem.write_to_path(str(key_path))
    return {"cafile": str(ca_path), "certfile": str(cert_path), "keyfile": str(key_path)}


def _server_context(ca: trustme.CA, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("broker.example").configure_cert(ctx)
    if require_client_cert:
        ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _handshake(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, server_hostname: str | None
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A full TLS handshake over memory BIOs; raises on failure."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    c_done = s_done = False
    for _ in range(20):
        if not c_done:
            try:
                client.do_handshake()
                c_done = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        if not s_done:
            try:
                server.do_handshake()
                s_done = True
            except ssl.SSLWantReadError:
                pass
        c_in.write(s_out.read())
        if c_done and s_done:
            # TLS 1.3: the server checks the client certificate after the
            # client finishes; push one record through to surface errors.
            client.write(b"x")
            s_in.write(c_out.read())
            assert server.read(1) == b"x"
            return client, server
    raise AssertionError("handshake did not finish")


def test_no_context_without_tls() -> None:
    assert make_ssl_context(ConnectionParameters()) is None
    assert sni_hostname(ConnectionParameters(server_hostname="x")) is None


def test_user_context_wins() -> None:
    ctx = ssl.create_default_context()
    p = ConnectionParameters(ssl=True, ssl_context=ctx, cafile="/nonexistent")
    assert make_ssl_context(p) is ctx


def test_default_context_verifies(ca: trustme.CA, tls_files: dict[str, str]) -> None:
    p = ConnectionParameters(host="broker.example", ssl=True, cafile=tls_files["cafile"])
    ctx = make_ssl_context(p)
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    client, _ = _handshake(ctx, _server_context(ca), sni_hostname(p))
    assert client.getpeercert() is not None
    # Wrong host name: refused.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(make_ssl_context(p), _server_context(ca), "other.example")  # type: ignore[arg-type]


def test_untrusted_ca_refused(ca: trustme.CA) -> None:
    other_ca = trustme.CA()
    p = ConnectionParameters(host="broker.example", ssl=True)
    ctx = make_ssl_context(p)
    assert ctx is not None
    other_ca.configure_trust(ctx)  # trusts a CA that did not sign the broker
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ctx, _server_context(ca), sni_hostname(p))


def test_verify_false(ca: trustme.CA) -> None:
    p = parse_url("amqps://wrong.example/?verify=false")
    ctx = make_ssl_context(p)
    assert ctx is not None
    assert ctx.check_hostname is False
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    # Neither the chain (no cafile) nor the name matches, yet it connects.
    _handshake(ctx, _server_context(ca), sni_hostname(p))


def test_client_certificate(ca: trustme.CA, tls_files: dict[str, str]) -> None:
    p = ConnectionParameters(
        host="broker.example",
        ssl=True,
        auth_mechanism="EXTERNAL",
        cafile=tls_files["cafile"],
        certfile=tls_files["certfile"],
        keyfile=tls_files["keyfile"],
    )
    ctx = make_ssl_context(p)
    assert ctx is not None
    _, server = _handshake(ctx, _server_context(ca, require_client_cert=True), sni_hostname(p))
    peer = server.getpeercert()
    assert peer is not None
    assert ("DNS", "client.example") in peer["subjectAltName"]


def test_no_client_certificate_refused_by_server(ca: trustme.CA, tls_files: dict[str, str]) -> None:
    p = ConnectionParameters(host="broker.example", ssl=True, cafile=tls_files["cafile"])
    ctx = make_ssl_context(p)
    assert ctx is not None
    with pytest.raises(ssl.SSLError):
        _handshake(ctx, _server_context(ca, require_client_cert=True), sni_hostname(p))


def test_client_certificate_from_url(tls_files: dict[str, str]) -> None:
    url = (
        "amqps://broker.example/?auth_mechanism=EXTERNAL"
        f"&cafile={quote(tls_files['cafile'], safe='')}"
        f"&certfile={quote(tls_files['certfile'], safe='')}"
        f"&keyfile={quote(tls_files['keyfile'], safe='')}"
    )
    p = parse_url(url)
    assert p.certfile == tls_files["certfile"]
    assert make_ssl_context(p) is not None


def test_missing_cafile_raises() -> None:
    with pytest.raises(OSError):
        make_ssl_context(ConnectionParameters(ssl=True, cafile="/nonexistent/ca.pem"))


def test_sni_hostname() -> None:
    p = parse_url("amqps://h1,h2/")
    assert sni_hostname(p) == "h1"
    assert sni_hostname(p, host="h2") == "h2"
    q = parse_url("amqps://10.0.0.1/?server_name_indication=broker.example")
    assert sni_hostname(q) == "broker.example"
    assert sni_hostname(q, host="10.0.0.2") == "broker.example"


# --- kombu's ssl={...} --------------------------------------------------------


def test_kombu_ssl_dict_is_honoured(ca: trustme.CA, tls_files: dict[str, str]) -> None:
    """kombu's ssl dict turns TLS on with its settings (it was once truthy and
    silently replaced by the default context)."""
    p = parse_url(
        "amqp://broker.example/",
        ssl={
            "ca_certs": tls_files["cafile"],
            "certfile": tls_files["certfile"],
            "keyfile": tls_files["keyfile"],
            "cert_reqs": ssl.CERT_REQUIRED,
            "server_hostname": "broker.example",
        },
    )
    assert p.ssl is True and p.port == 5671
    assert (p.cafile, p.certfile, p.keyfile) == (
        tls_files["cafile"],
        tls_files["certfile"],
        tls_files["keyfile"],
    )
    ctx = make_ssl_context(p)
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED
    _, server = _handshake(ctx, _server_context(ca, require_client_cert=True), sni_hostname(p))
    peer = server.getpeercert()
    assert peer is not None and ("DNS", "client.example") in peer["subjectAltName"]


def test_kombu_ssl_dict_wrong_ca_is_refused(ca: trustme.CA, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    p = parse_url("amqps://broker.example/", ssl={"ca_certs": str(other)})
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(make_ssl_context(p), _server_context(ca), sni_hostname(p))  # type: ignore[arg-type]


def test_kombu_ssl_cert_reqs() -> None:
    assert parse_url("amqp://h/", ssl={"cert_reqs": ssl.CERT_NONE}).verify is False
    assert parse_url("amqp://h/", ssl={"cert_reqs": ssl.CERT_OPTIONAL}).verify is True
    assert parse_url("amqp://h/", ssl={"cert_reqs": ssl.CERT_REQUIRED}).verify is True
    assert parse_url("amqp://h/", ssl={}).ssl is True
    # kombu: server_hostname=None means the host dialled.
    assert sni_hostname(parse_url("amqp://h/", ssl={"server_hostname": None})) == "h"
    with pytest.raises(ValueError, match="cert_reqs"):
        parse_url("amqp://h/", ssl={"cert_reqs": 7})


def test_kombu_ssl_unknown_key_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"ciphers.*ssl_context"):
        parse_url("amqp://h/", ssl={"ca_certs": "/x", "ciphers": "HIGH"})


def test_kombu_ssl_conflicting_settings() -> None:
    with pytest.raises(ValueError, match="differ"):
        parse_url("amqp://h/", ssl={"ca_certs": "/a"}, cafile="/b")
    assert parse_url("amqp://h/", ssl={"ca_certs": "/a"}, cafile="/a").cafile == "/a"


def test_ssl_context_as_ssl() -> None:
    ctx = ssl.create_default_context()
    p = parse_url("amqp://h/", ssl=ctx)
    assert p.ssl is True and make_ssl_context(p) is ctx


def test_ssl_field_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="connect"):
        ConnectionParameters(ssl={"ca_certs": "/x"})  # type: ignore[arg-type]


# --- failover as kombu writes it ----------------------------------------------


@pytest.mark.parametrize(
    ("url", "alternates"),
    [
        ("amqp://u:p@h1:5673,h2,h3:7000/vh", None),
        ("amqp://u:p@h1:5673/vh;amqp://u:p@h2/vh;amqp://u:p@h3:7000/vh", None),
        ("amqp://u:p@h1:5673/vh ; amqp://u:p@h2,h3:7000/vh", None),
        (["amqp://u:p@h1:5673/vh", "amqp://u:p@h2/vh", "amqp://u:p@h3:7000/vh"], None),
        ("amqp://u:p@h1:5673/vh", ["amqp://u:p@h2/vh", "amqp://u:p@h3:7000/vh"]),
        (["amqp://u:p@h1:5673/vh;amqp://u:p@h2/vh"], ["amqp://u:p@h3:7000/vh"]),
    ],
)
def test_failover_url_forms_give_the_same_hosts(
    url: str | list[str], alternates: list[str] | None
) -> None:
    p = parse_url(url, alternates=alternates)
    assert p.addresses == (("h1", 5673), ("h2", 5672), ("h3", 7000))
    assert (p.username, p.password, p.vhost) == ("u", "p", "vh")


def test_failover_hosts_are_tried_once_each() -> None:
    # kombu users often list the first URL again in alternates
    p = parse_url("amqp://h1,h2:5672", alternates=["amqp://h1:5672", "amqp://h3"])
    assert p.addresses == (("h1", 5672), ("h2", 5672), ("h3", 5672))
    # the default port stays "the scheme's default" until ssl is known
    assert parse_url("amqp://h1;amqp://h2", ssl=True).addresses == (("h1", 5671), ("h2", 5671))


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ("amqps://u:pw0rd@h2/vh", "ssl"),
        ("amqp://other:pw0rd@h2/vh", "username"),
        ("amqp://u@h2/vh", "password"),
        ("amqp://h2/vh", "password, username"),
        ("amqp://u:pw0rd@h2/", "vhost"),
        ("amqp://u:pw0rd@h2/vh?heartbeat=5", "heartbeat"),
    ],
)
def test_failover_urls_must_agree_but_for_hosts(second: str, field: str) -> None:
    with pytest.raises(ValueError, match=f"URL #2 of 2 differs from the first in {field}:"):
        parse_url(f"amqp://u:pw0rd@h1/vh;{second}")


def test_failover_url_errors_never_leak_any_password() -> None:
    other = "0ther-Pa55"
    cases = [
        f"amqp://u:{SECRET}@h1/;amqp://u:{other}@h2/",  # differ in password
        f"amqp://u:{SECRET}@h1/;amqp://u:{other}@h2:x/",  # bad port
        f"amqp://u:{SECRET}@h1/;amqp://u:{other[:3]}/{other[3:]}@h2/",  # unencoded '/'
    ]
    for url in cases:
        with pytest.raises(ValueError) as info:
            parse_url(url)
        rendered = "".join(traceback.format_exception(info.value))
        for fragment in (SECRET, other, other[:3], other[3:]):
            assert fragment not in rendered, (url, rendered)
    with pytest.raises(ValueError) as info:
        parse_url(f"amqp://u:{SECRET}@h1/", alternates=[f"amqp://u:{other}@h2/"])
    assert SECRET not in str(info.value)
    assert other not in str(info.value)
    p = parse_url(f"amqp://u:{SECRET}@h1/;amqp://u:{SECRET}@h2/")
    assert SECRET not in repr(p)
    assert SECRET not in str(p)


def test_failover_url_form_errors() -> None:
    with pytest.raises(ValueError, match="URL #2 of 2 is empty"):
        parse_url("amqp://h1;")
    with pytest.raises(ValueError, match="empty"):
        parse_url([])
    with pytest.raises(TypeError, match="as str"):
        parse_url(["amqp://h1", 5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="alternates"):
        parse_url("amqp://h1", alternates=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="URL #2 of 2: unsupported URL scheme"):
        parse_url("amqp://h1;redis://h2")


def test_failover_strategy_validation() -> None:
    assert parse_url("amqp://h").failover_strategy == "round-robin"
    assert parse_url("amqp://h", failover_strategy="shuffle").failover_strategy == "shuffle"
    assert ConnectionParameters(failover_strategy=iter).failover_strategy is iter
    with pytest.raises(ValueError, match="unknown failover_strategy 'random'"):
        parse_url("amqp://h", failover_strategy="random")
    with pytest.raises(TypeError, match="failover_strategy must be"):
        ConnectionParameters(failover_strategy=5)  # type: ignore[arg-type]
