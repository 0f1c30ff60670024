"""Probe a TLS endpoint: what does the server actually send?

One connection, one handshake, and the certificates exactly as the server sent them, in its order.
The probe does not verify anything: OpenSSL is told to accept whatever comes, because certfleet
verifies the served chain itself (``verify.verify_chain``, as a strict client without AIA fetching)
and must be able to see and report a broken chain rather than only "handshake failed".

A probe never raises for a failing endpoint: a refused connection, a silent port or a failed
handshake is a :class:`ProbeResult` with ``ok=False`` and a problem (``unreachable``, ``timeout``,
``handshake-failed``), so that one bad server never stops a run over a thousand.

Plain-text protocols upgrade with STARTTLS first (SMTP on 25/587, IMAP on 143); SMTPS (465),
IMAPS (993), LDAPS (636), SIP over TLS (5061) and HTTPS speak TLS from the first byte.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509

from certfleet.certinfo import UNPARSABLE, describe
from certfleet.names import is_ip
from certfleet.problems import Problem, ProblemCode, Severity

__all__ = [
    "MAX_CHAIN",
    "CertCache",
    "ProbeResult",
    "StartTLS",
    "default_starttls",
    "format_target",
    "probe",
]

# A TLS certificate list is bounded by the handshake itself (OpenSSL refuses more than 100 KiB);
# this bounds what we parse and report. Real chains have 2 to 4 certificates.
MAX_CHAIN = 32
# Bounds on what a plain-text server may send before STARTTLS: SMTP allows 512-byte lines, IMAP
# greetings are one line; anything larger or longer is not a server we want to talk to.
MAX_LINE = 4096
MAX_LINES = 100
_EHLO_NAME = "certfleet.invalid"


class StartTLS(StrEnum):
    """How the connection reaches TLS: at once (``none``), or upgraded after a plain greeting."""

    NONE = "none"  # implicit TLS: HTTPS, SMTPS 465, IMAPS 993, LDAPS 636, SIP over TLS 5061
    SMTP = "smtp"  # EHLO, STARTTLS (RFC 3207): ports 25 and 587
    IMAP = "imap"  # a001 STARTTLS (RFC 9051): port 143


_STARTTLS_PORTS: Mapping[int, StartTLS] = {25: StartTLS.SMTP, 587: StartTLS.SMTP, 143: StartTLS.IMAP}


def default_starttls(port: int) -> StartTLS:
    """The protocol a port speaks by convention: STARTTLS for 25, 587 and 143, TLS at once otherwise."""
    return _STARTTLS_PORTS.get(port, StartTLS.NONE)


def format_target(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets (``[::1]:443``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CertCache:
    """Parsed certificates by their DER bytes.

    Endpoints of one fleet send the same intermediates again and again; parsing each once means
    every endpoint holds the very same object, so whatever is derived from it later (descriptions,
    signature checks) can be shared as well.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._by_der: dict[bytes, x509.Certificate] = {}
        self._max = max_entries

    def load(self, der: bytes) -> x509.Certificate:
        cert = self._by_der.get(der)
        if cert is None:
            cert = x509.load_der_x509_certificate(der)
            if len(self._by_der) < self._max:
                self._by_der[der] = cert
        return cert

    def __len__(self) -> int:
        return len(self._by_der)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one endpoint presented (``ok``: the TLS handshake completed)."""

    target: str  # host:port as probed, IPv6 in brackets
    host: str
    port: int
    server_name: str | None  # the SNI sent; None when none was (an IP address)
    ok: bool
    chain: tuple[x509.Certificate, ...] = ()  # exactly as sent, in the order sent, leaf first
    tls_version: str | None = None  # "TLSv1.3"
    cipher: str | None = None  # "TLS_AES_256_GCM_SHA384"
    problems: tuple[Problem, ...] = ()
    elapsed: float = 0.0  # seconds, connection to chain in hand
    starttls: StartTLS = StartTLS.NONE
    # the raw DER as sent, kept so that callers never need to re-encode
    chain_der: tuple[bytes, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "host": self.host,
            "port": self.port,
            "server_name": self.server_name,
            "starttls": self.starttls.value,
            "ok": self.ok,
            "chain": [describe(c).to_dict() for c in self.chain],
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "problems": [p.to_dict() for p in self.problems],
            "elapsed": round(self.elapsed, 4),
        }


class _Refused(Exception):
    """The plain-text server would not upgrade to TLS; the message says what it answered."""



@functools.cache
def _client_context(minimum: ssl.TLSVersion) -> ssl.SSLContext:
    # One context for every connection: building one loads OpenSSL defaults each time and would
    # cost more than the handshake at fleet scale. No verification here, on purpose: certfleet
    # verifies the served chain itself and must see broken chains to report them.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = minimum
    return ctx


def _served_der(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """DER of every certificate the server sent, in the order it sent them.

    The public ``ssl`` API of Python 3.11 gives only the leaf (``getpeercert``); the list as sent
    is on the private ``_sslobj.get_unverified_chain()`` (CPython 3.10+, public from 3.13). When
    neither exists (another interpreter) the leaf alone is returned: every chain then looks
    incomplete, which is visible and safe, rather than wrong in a way nobody notices.
    """
    getter = getattr(ssl_object, "get_unverified_chain", None)  # public in 3.13+: DER bytes
    if getter is not None:
        return tuple(bytes(d) for d in (getter() or ())[:MAX_CHAIN])
    inner = getattr(ssl_object, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        import _ssl

        return tuple(c.public_bytes(_ssl.ENCODING_DER) for c in (getter() or ())[:MAX_CHAIN])
    leaf = ssl_object.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()


def _clean(text: str, limit: int = 200) -> str:
    """Text from the network made safe to print: printable, one line, bounded."""
    out = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return out if len(out) <= limit else out[: limit - 3] + "..."


async def _readline(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise _Refused(f"the server sent a line longer than {MAX_LINE} bytes before STARTTLS") from exc
    except asyncio.IncompleteReadError as exc:
        raise _Refused("the server closed the connection before STARTTLS") from exc
    return raw.decode("latin-1").rstrip("\r\n")


async def _smtp_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One SMTP reply (possibly multi-line, ``250-...`` then ``250 ...``): its code and last line."""
    for _ in range(MAX_LINES):
        line = await _readline(reader)
        if len(line) < 3 or not line[:3].isdigit():
            raise _Refused(f"not an SMTP server: {_clean(line)!r}")
        if line[3:4] != "-":
            return int(line[:3]), line
    raise _Refused(f"the SMTP server sent more than {MAX_LINES} lines in one reply")


async def _smtp_starttls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    code, line = await _smtp_reply(reader)
    if code != 220:
        raise _Refused(f"the SMTP server did not greet: {_clean(line)!r}")
    writer.write(f"EHLO {_EHLO_NAME}\r\n".encode())
    code, line = await _smtp_reply(reader)
    if code != 250:
        raise _Refused(f"the SMTP server refused EHLO: {_clean(line)!r}")
    writer.write(b"STARTTLS\r\n")
    code, line = await _smtp_reply(reader)
    if code != 220:
        raise _Refused(f"the SMTP server refused STARTTLS: {_clean(line)!r}")


async def _imap_starttls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    greeting = await _readline(reader)
    if not greeting.upper().startswith("* OK"):
        raise _Refused(f"not an IMAP server ready for STARTTLS: {_clean(greeting)!r}")
    writer.write(b"a001 STARTTLS\r\n")
    for _ in range(MAX_LINES):  # untagged lines may come first
        line = await _readline(reader)
        if line.startswith("a001 "):
            if line[5:].upper().startswith("OK"):
                return
            raise _Refused(f"the IMAP server refused STARTTLS: {_clean(line)!r}")
    raise _Refused(f"the IMAP server sent more than {MAX_LINES} lines without answering STARTTLS")


_UPGRADES = {StartTLS.SMTP: _smtp_starttls, StartTLS.IMAP: _imap_starttls}

# OpenSSL reasons a user meets, said plainly
_SSL_REASONS: Mapping[str, tuple[str, str]] = {
    "WRONG_VERSION_NUMBER": (
        "the server did not answer in TLS",
        "is this a plain-text port? SMTP and IMAP need --starttls smtp|imap",
    ),
    "UNSUPPORTED_PROTOCOL": (
        "the server offers only TLS versions older than the client accepts",
        "enable TLS 1.2 and 1.3 on the server; strict clients refuse TLS 1.0 and 1.1",
    ),
    "TLSV1_ALERT_PROTOCOL_VERSION": (
        "the server refused every TLS version the client offers",
        "enable TLS 1.2 and 1.3 on the server",
    ),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "the server refused the handshake (no shared cipher, or no certificate for this name)",
        "check the server's TLS configuration and that it has a certificate for the name sent (--name)",
    ),
    "TLSV1_UNRECOGNIZED_NAME": (
        "the server has no certificate for the name sent (SNI)",
        "give the name the server expects with --name",
    ),
}


def _failed(code: ProblemCode, message: str, hint: str) -> Problem:
    return Problem(code=code, severity=Severity.ERROR, message=message, hint=hint)


def _handshake_problem(exc: BaseException) -> Problem:
    if isinstance(exc, _Refused):
        return _failed(ProblemCode.HANDSHAKE_FAILED, str(exc), "check that this port speaks the protocol chosen")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _SSL_REASONS:
            message, hint = _SSL_REASONS[reason]
            return _failed(ProblemCode.HANDSHAKE_FAILED, f"{message} ({reason})", hint)
        detail = reason or exc.strerror or type(exc).__name__
        return _failed(
            ProblemCode.HANDSHAKE_FAILED,
            f"TLS handshake failed: {_clean(str(detail))}",
            "check the server's TLS configuration and its error log",
        )
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError | asyncio.IncompleteReadError):
        message = "the server closed the connection during the TLS handshake"
    else:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        message = f"the connection broke during the TLS handshake: {_clean(str(detail))}"
    return _failed(
        ProblemCode.HANDSHAKE_FAILED,
        message,
        "check that this port speaks TLS (or use --starttls), and the server's TLS versions and error log",
    )


def _connect_problem(exc: OSError, target: str) -> Problem:
    if isinstance(exc, socket.gaierror):
        return _failed(
            ProblemCode.UNREACHABLE,
            f"cannot resolve the host name of {target}",
            "check the spelling and the DNS record of the host",
        )
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        message = "connection refused"
    elif exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        message = "no route to the host"
    else:
        message = f"cannot connect: {_clean(exc.strerror or str(exc))}"
    return _failed(
        ProblemCode.UNREACHABLE,
        message,
        "check that the server is running, listens on this port, and that no firewall is in the way",
    )


async def probe(
    host: str,
    port: int,
    *,
    server_name: str | None = None,
    timeout: float = 5.0,
    starttls: StartTLS | None = None,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    certs: CertCache | None = None,
) -> ProbeResult:
    """Connect to ``host:port``, complete a TLS handshake and return what the server presented.

    ``server_name`` is sent as SNI; by default the host when it is a DNS name, and no SNI for an
    IP address (or for ""). ``starttls`` None chooses by port (:func:`default_starttls`).
    ``timeout`` bounds the whole exchange (connection, STARTTLS, handshake). ``certs`` shares
    parsed certificates between probes. Never raises for a failing endpoint.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    mode = default_starttls(port) if starttls is None else starttls
    sni = (server_name if server_name is not None else (None if is_ip(host) else host)) or None
    target = format_target(host, port)
    cache = certs if certs is not None else CertCache(max_entries=0)
    started = time.monotonic()
    phase = "connecting"

    def result(ok: bool, problems: tuple[Problem, ...], **kw: Any) -> ProbeResult:
        return ProbeResult(
            target=target,
            host=host,
            port=port,
            server_name=sni,
            ok=ok,
            problems=problems,
            elapsed=time.monotonic() - started,
            starttls=mode,
            **kw,
        )

    context = _client_context(minimum_version)
    transport: asyncio.WriteTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            if mode is StartTLS.NONE:
                # the plain protocol API, not streams: a thousand endpoints pay for every object
                loop = asyncio.get_running_loop()
                transport, protocol = await loop.create_connection(asyncio.Protocol, host, port)
                phase = "the TLS handshake"
                transport = await loop.start_tls(transport, protocol, context, server_hostname=sni)
            else:
                reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
                transport = writer.transport
                phase = f"the {mode.value.upper()} greeting"
                await _UPGRADES[mode](reader, writer)
                phase = "the TLS handshake"
                # "" (not None): asyncio would otherwise send the host as SNI, even an IP address
                await writer.start_tls(context, server_hostname=sni or "")
                transport = writer.transport
            if transport is None:  # start_tls found the connection already closed
                raise ConnectionResetError("the server closed the connection")
            ssl_object = transport.get_extra_info("ssl_object")
            ders = _served_der(ssl_object)
            version, cipher = ssl_object.version(), (ssl_object.cipher() or (None,))[0]
    except TimeoutError:
        return result(
            False,
            (
                _failed(
                    ProblemCode.TIMEOUT,
                    f"no answer within {timeout:g} s ({phase})",
                    "the port is open but the server does not answer: check the service, or raise --timeout",
                ),
            ),
        )
    except OSError as exc:  # ssl.SSLError is an OSError too
        if phase == "connecting":
            return result(False, (_connect_problem(exc, target),))
        return result(False, (_handshake_problem(exc),))
    except (_Refused, EOFError, asyncio.IncompleteReadError) as exc:
        return result(False, (_handshake_problem(exc),))
    finally:
        if transport is not None:
            # the chain is in hand: no close_notify exchange for a server that may never answer it
            transport.abort()

    chain: list[x509.Certificate] = []
    problems: list[Problem] = []
    for position, der in enumerate(ders, 1):
        try:
            chain.append(cache.load(der))
        except UNPARSABLE as exc:
            problems.append(
                Problem(
                    code=ProblemCode.INVALID,
                    severity=Severity.ERROR,
                    message=f"certificate {position} as sent cannot be read: {_clean(str(exc))}",
                    hint="the server sends a damaged certificate: reinstall the certificate files",
                )
            )
    if not ders:
        problems.append(
            _failed(
                ProblemCode.HANDSHAKE_FAILED,
                "the server sent no certificate",
                "configure a certificate on the server",
            )
        )
    return result(
        bool(ders),
        tuple(problems),
        chain=tuple(chain),
        chain_der=ders,
        tls_version=version,
        cipher=cipher,
    )
