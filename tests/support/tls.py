"""Small TLS servers on loopback for the probe and check tests, and the faults nginx serves for them
(nginx itself is started by :mod:`support.servers`).

- :func:`serve_tls`: a small asyncio server in a thread of its own that speaks TLS at once
  (LDAPS, SIP over TLS, SMTPS...) or upgrades with STARTTLS after an SMTP or IMAP greeting, the way
  Postfix and Dovecot do; or refuses STARTTLS, for the failure paths.
- :func:`silent_port`: a listening socket that never answers (the kernel completes the TCP
  handshake, nobody ever reads).
- :func:`planted_faults`: nginx sites for every fault a strict client refuses, and the codes
  ``check`` must report for each.
- the fixtures ``faults``, ``nginx`` (serving them) and ``roots`` (a PEM file of the roots to
  trust), one set per test module that imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.testing import make_key
from support.servers import Nginx, Site, free_port, run_nginx, write_pair

__all__ = [
    "Faults",
    "Mode",
    "Nginx",
    "Site",
    "TLSServer",
    "free_port",
    "has_ipv6_loopback",
    "planted_faults",
    "run_nginx",
    "self_signed",
    "serve_tls",
    "silent_port",
    "write_pair",
]


def self_signed(*names: str, key: str = "ec:p256", days: int = 90) -> tuple[bytes, bytes]:
    """A self-signed server certificate for ``names`` (not a CA): (cert PEM, key PEM)."""
    pkey = make_key(key)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(pkey, hashes.SHA256())
    )
    key_pem = pkey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# ------------------------------------------------------------------------- small Python servers


class Mode(StrEnum):
    TLS = "tls"  # TLS from the first byte: LDAPS, SIP over TLS, SMTPS, IMAPS
    SMTP = "smtp"  # SMTP greeting, EHLO, STARTTLS
    IMAP = "imap"  # IMAP greeting, a001 STARTTLS
    SMTP_NO_STARTTLS = "smtp-no-starttls"  # an SMTP server that does not offer STARTTLS
    PLAIN = "plain"  # a plain-text banner and nothing else: not TLS at all
    FLOOD = "flood"  # an endless greeting line: the client must stop reading
    SILENT = "silent"  # accepts the connection and never says a word


@dataclass
class TLSServer:
    host: str
    port: int
    connections: int = 0
    server_names: list[str | None] = field(default_factory=list)  # SNI of each TLS handshake

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


async def _line(reader: asyncio.StreamReader) -> bytes:
    return (await reader.readuntil(b"\n")).rstrip(b"\r\n")


async def _smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, offer: bool) -> bool:
    writer.write(b"220 mail.example.test ESMTP ready\r\n")
    while True:
        command = (await _line(reader)).upper()
        if command.startswith(b"EHLO"):
            writer.write(b"250-mail.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n")
            writer.write(b"250 STARTTLS\r\n" if offer else b"250 8BITMIME\r\n")
        elif command == b"STARTTLS" and offer:
            writer.write(b"220 2.0.0 Ready to start TLS\r\n")
            return True
        elif command == b"QUIT":
            writer.write(b"221 2.0.0 Bye\r\n")
            return False
        else:
            writer.write(b"502 5.5.2 Error: command not recognized\r\n")


async def _imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready\r\n")
    while True:
        tag, _, command = (await _line(reader)).partition(b" ")
        if command.upper() == b"STARTTLS":
            writer.write(b"* NOTE upgrading\r\n" + tag + b" OK Begin TLS negotiation now\r\n")
            return True
        writer.write(tag + b" BAD unknown command\r\n")


@contextlib.contextmanager
def serve_tls(
    mode: Mode,
    cert_file: Path,
    key_file: Path,
    *,
    host: str = "127.0.0.1",
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> Iterator[TLSServer]:
    """Serve ``mode`` on a free port of ``host`` from a thread with its own event loop."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = maximum
    context.load_cert_chain(cert_file, key_file)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state = TLSServer(host=host, port=0)

    def record_sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        state.server_names.append(name)

    context.sni_callback = record_sni

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            if mode is Mode.SMTP or mode is Mode.SMTP_NO_STARTTLS:
                if not await _smtp(reader, writer, offer=mode is Mode.SMTP):
                    return
            elif mode is Mode.IMAP:
                if not await _imap(reader, writer):
                    return
            elif mode is Mode.SILENT:
                await reader.read()
                return
            elif mode is Mode.FLOOD:
                while True:
                    writer.write(b"220-" + b"x" * 65536)
                    await writer.drain()
            elif mode is Mode.PLAIN:
                writer.write(b"220 plain text only\r\n")
                await writer.drain()
                await reader.read(1024)
                return
            if mode is not Mode.TLS:
                await writer.drain()
                await writer.start_tls(context)
            await reader.read(1024)  # until the client goes away
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server: asyncio.Server | None = None

    async def start() -> None:
        nonlocal server
        tls = context if mode is Mode.TLS else None
        server = await asyncio.start_server(handle, host, 0, ssl=tls)
        state.port = int(server.sockets[0].getsockname()[1])
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name=f"tls-server-{mode.value}", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the test server did not start")
    try:
        yield state
    finally:

        async def stop() -> None:
            assert server is not None
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def silent_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that accepts TCP connections (in the kernel's backlog) and never says a word."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


# ------------------------------------------------------------------------------ planted faults


@dataclass
class Faults:
    """One site per fault a strict client refuses (and a good one), all for www.example.test."""

    name: str
    sites: list[Site]
    roots_pem: bytes  # what the checking side trusts: the test roots, nothing else
    codes: dict[str, set[str]]  # site -> the problem codes it must show (empty: none at all)


def planted_faults(*, ipv6: bool = False) -> Faults:
    from certfleet.testing import TestCA, pem

    name = "www.example.test"
    root = TestCA.root("Faults Root")
    upper = root.intermediate("Faults Upper Intermediate", path_length=1)
    issuing = upper.intermediate("Faults Issuing Intermediate")
    good = issuing.leaf(name)
    now = dt.datetime.now(dt.UTC)
    expired = issuing.leaf(name, not_before=now - dt.timedelta(days=100), days=30)
    soon = issuing.leaf(name, days=10)
    other = issuing.leaf("other.example.test")
    weak_root = TestCA.root("Faults SHA-1 Root", key="rsa:2048")
    weak_issuing = weak_root.intermediate("Faults SHA-1 Intermediate", key="rsa:2048")
    sha1 = weak_issuing.leaf(name, key="rsa:2048", hash_alg=hashes.SHA1())  # noqa: S303 (the fault planted)
    own_cert, own_key = self_signed(name)
    sites = [
        Site("good", good.fullchain_pem(), good.key_pem()),
        Site("incomplete", good.cert_pem(), good.key_pem()),
        Site("wrong-order", pem(good.cert, upper.cert, issuing.cert), good.key_pem()),
        Site("root-sent", pem(good.cert, issuing.cert, upper.cert, root.cert), good.key_pem()),
        Site("expired", expired.fullchain_pem(), expired.key_pem()),
        Site("expiring", soon.fullchain_pem(), soon.key_pem()),
        Site("wrong-name", other.fullchain_pem(), other.key_pem()),
        Site("sha1", sha1.fullchain_pem(), sha1.key_pem(), weak=True),
        Site("self-signed", own_cert, own_key),
    ]
    if ipv6:
        sites.append(Site("ipv6", good.fullchain_pem(), good.key_pem(), host="::1"))
    codes = {
        "good": set(),
        "ipv6": set(),
        "incomplete": {"incomplete-chain"},
        "wrong-order": {"wrong-order"},
        "root-sent": {"root-included"},
        "expired": {"expired"},
        "expiring": {"expiring-soon"},
        "wrong-name": {"name-mismatch"},
        "sha1": {"weak-signature"},
        "self-signed": {"self-signed"},
    }
    return Faults(name=name, sites=sites, roots_pem=pem(root.cert, weak_root.cert), codes=codes)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def faults() -> Faults:
    return planted_faults()


@pytest.fixture(scope="module")
def nginx(faults: Faults, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with run_nginx(tmp_path_factory.mktemp("nginx"), faults.sites) as server:
        yield server


@pytest.fixture(scope="module")
def roots(faults: Faults, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "roots.pem"
    path.write_bytes(faults.roots_pem)
    return path
