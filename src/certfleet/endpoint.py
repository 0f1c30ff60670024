"""An endpoint: where a TLS server answers (host, port), the name a client asks it for (SNI), and
how it reaches TLS. Parsed from what people write (``host``, ``host:port``, ``[v6]:port``, a URL),
shared by ``check``, the fleet's probes and the console."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from certfleet.errors import CertfleetError, InputError, LimitError
from certfleet.names import is_ip, normalize_name
from certfleet.probe import StartTLS, format_target

__all__ = [
    "DEFAULT_PORT",
    "MAX_ENDPOINTS",
    "Endpoint",
    "parse_endpoint",
    "read_endpoints",
    "server_name",
    "unique",
]

DEFAULT_PORT = 443
MAX_ENDPOINTS = 100_000  # a fleet is large; a list longer than this is a mistake
_MAX_ENDPOINT_CHARS = 1100  # a 253-octet name as U-labels, a port, a URL path we ignore

# URL schemes a target may use: the port they imply, and how they reach TLS
_SCHEMES: Mapping[str, tuple[int, StartTLS]] = {
    "https": (443, StartTLS.NONE),
    "smtp": (25, StartTLS.SMTP),
    "submission": (587, StartTLS.SMTP),
    "smtps": (465, StartTLS.NONE),
    "imap": (143, StartTLS.IMAP),
    "imaps": (993, StartTLS.NONE),
    "ldaps": (636, StartTLS.NONE),
    "sips": (5061, StartTLS.NONE),
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One TLS endpoint."""

    host: str  # canonical DNS name (A-label) or IP address
    port: int
    name: str | None = None  # sent as SNI and expected in the certificate; None: the host itself
    starttls: StartTLS | None = None  # None: chosen by port
    label: str | None = None  # what the user calls it (a node's name)

    def __str__(self) -> str:
        return format_target(self.host, self.port)

    @property
    def host_is_ip(self) -> bool:
        return is_ip(self.host)

    @property
    def server_name(self) -> str | None:
        """The SNI to send: the name given, else the host when it is a name."""
        if self.name is not None:
            return None if is_ip(self.name) else self.name
        return None if self.host_is_ip else self.host

    @property
    def expected_name(self) -> str:
        """The name the certificate must cover: the name given, else the host (a name or an IP)."""
        return self.name if self.name is not None else self.host



def _bad_target(text: str, why: str) -> InputError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return InputError(
        f"{shown!r} is not a target: {why}",
        hint="write host, host:port, [v6-address]:port or https://host[:port]",
    )


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise _bad_target(text, f"the port {value[:10]!r} is not a number from 1 to 65535")
    return int(value)


def _host(text: str, value: str) -> str:
    if not value:
        raise _bad_target(text, "the host is missing")
    if "*" in value:
        raise _bad_target(text, "a wildcard is a pattern, not a host to connect to")
    try:
        return normalize_name(value)
    except CertfleetError as exc:
        raise _bad_target(text, exc.message) from exc


def parse_endpoint(
    text: str,
    *,
    name: str | None = None,
    starttls: StartTLS | None = None,
    default_port: int = DEFAULT_PORT,
    label: str | None = None,
) -> Endpoint:
    """``host``, ``host:port``, ``[v6]:port``, a bare IPv6 address, or a URL (``https://host:8443/``;
    also ``smtp``, ``submission``, ``smtps``, ``imap``, ``imaps``, ``ldaps``, ``sips``)."""
    raw = text.strip()
    if len(raw) > _MAX_ENDPOINT_CHARS:
        raise LimitError(f"a target of {len(raw)} characters is not a host and port")
    if not raw:
        raise _bad_target(text, "it is empty")
    port = default_port
    mode = starttls
    if "://" in raw:
        try:
            url = urlsplit(raw)
            url_port = url.port
        except ValueError as exc:
            raise _bad_target(raw, str(exc)) from exc
        scheme = url.scheme.lower()
        if scheme not in _SCHEMES:
            raise _bad_target(raw, f"certfleet checks {', '.join(_SCHEMES)} URLs, not {scheme}://")
        if url.username is not None or url.password is not None:
            raise _bad_target(raw, "a target carries no user name or password")
        implied_port, implied_mode = _SCHEMES[scheme]
        port = url_port or implied_port
        mode = starttls if starttls is not None else implied_mode
        host = url.hostname or ""
    elif raw.startswith("["):
        inside, bracket, rest = raw[1:].partition("]")
        if not bracket or not is_ip(inside) or ":" not in inside:
            raise _bad_target(raw, "only an IPv6 address goes in brackets")
        host = inside
        if rest:
            if not rest.startswith(":"):
                raise _bad_target(raw, "write [v6-address]:port")
            port = _port(raw, rest[1:])
    elif raw.count(":") > 1:
        # a bare IPv6 address; with a port it must be in brackets, or "::1:443" would be ambiguous
        if not is_ip(raw):
            raise _bad_target(raw, "an IPv6 address with a port goes in brackets: [2001:db8::1]:443")
        host = raw
    else:
        host, colon, port_text = raw.partition(":")
        if colon:
            port = _port(raw, port_text)
    canonical = _host(raw, host)
    expected = None
    if name is not None:
        try:
            expected = normalize_name(name)
        except CertfleetError as exc:
            raise InputError(f"--name {name[:80]!r}: {exc.message}", hint=exc.hint) from exc
        if expected.startswith("*."):
            raise InputError(f"--name {name[:80]!r} is a wildcard", hint="give the name a client connects to")
    return Endpoint(host=canonical, port=port, name=expected, starttls=mode, label=label)


def read_endpoints(
    text: str,
    *,
    source: str = "<targets>",
    name: str | None = None,
    starttls: StartTLS | None = None,
) -> list[Endpoint]:
    """One target a line, optionally followed by the name to check (``10.0.0.5:443 www.example.com``);
    ``#`` starts a comment; blank lines are skipped."""
    out: list[Endpoint] = []
    for number, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        if len(out) >= MAX_ENDPOINTS:
            raise LimitError(f"more than {MAX_ENDPOINTS} targets", source=source, hint="split the list")
        fields = body.split()
        if len(fields) > 2:
            raise InputError(
                f"line {number}: expected a target and at most one name", source=source, hint="one target a line"
            )
        try:
            out.append(parse_endpoint(fields[0], name=fields[1] if len(fields) == 2 else name, starttls=starttls))
        except CertfleetError as exc:
            raise InputError(f"line {number}: {exc.message}", hint=exc.hint, source=source) from exc
    return out


def unique(targets: Iterable[Endpoint]) -> list[Endpoint]:
    """``targets`` without repeats (same host, port and name), in order."""
    seen: set[tuple[str, int, str | None]] = set()
    out: list[Endpoint] = []
    for target in targets:
        key = (target.host, target.port, target.name)
        if key not in seen:
            seen.add(key)
            out.append(target)
    return out


def server_name(names: Iterable[str]) -> str | None:
    """What a probe of a node with these names sends as SNI: its first DNS name (never an IP
    address, nor a wildcard, which no client asks for)."""
    for name in names:
        if name.startswith("*.") or is_ip(name):
            continue
        return name
    return None
