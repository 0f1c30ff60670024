"""Real TLS servers on loopback for the probe and check tests (and the check benchmark).

- :func:`run_nginx`: one nginx with one ``server`` block per site, each on its own port; its
  config, pid and logs live in a folder the caller owns, and it is stopped on exit.
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
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.testing import make_key
from servers import free_port

__all__ = [
    "Faults",
    "Mode",
    "Nginx",
    "Site",
    "TLSServer",
    "free_port",
    "has_ipv6_loopback",
    "nginx_binary",
    "planted_faults",
    "run_nginx",
    "self_signed",
    "serve_tls",
    "silent_port",
    "write_pair",
]


def _free_ports(hosts: Sequence[str]) -> list[int]:
    """One distinct free port per host: every socket is held until all are chosen, so the kernel
    cannot hand out the same port twice (nginx would quietly share it between two server blocks)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def write_pair(folder: Path, stem: str, fullchain_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    """Write ``stem.crt`` (the chain as it will be served) and ``stem.key`` (0600 from birth)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert = folder / f"{stem}.crt"
    cert.write_bytes(fullchain_pem)
    key = folder / f"{stem}.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    return cert, key


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


# ---------------------------------------------------------------------------------------- nginx


@dataclass(frozen=True)
class Site:
    """One nginx ``server`` block: the chain it serves (leaf first, as sent) and its key."""

    name: str
    fullchain_pem: bytes
    key_pem: bytes
    # OpenSSL 3 refuses to load SHA-1 signed certificates at its default security level
    weak: bool = False
    host: str = "127.0.0.1"
    protocols: str = "TLSv1.2 TLSv1.3"


@dataclass
class Nginx:
    folder: Path
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    hosts: dict[str, str]

    def target(self, site: str) -> str:
        host = self.hosts[site]
        return f"[{host}]:{self.ports[site]}" if ":" in host else f"{host}:{self.ports[site]}"

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx (the tests need the real server)")
    return found


def _nginx_conf(folder: Path, blocks: str, *, workers: int, rlimit: int, connections: int) -> str:
    temp = folder / "temp"
    temp.mkdir(exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {rlimit};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type text/plain;
{blocks}
}}
"""


def _wait_listening(process: subprocess.Popen[bytes], addresses: Sequence[tuple[str, int]], folder: Path) -> None:
    deadline = time.monotonic() + 60
    pending = list(addresses)
    while pending:
        if process.poll() is not None:
            log = (folder / "error.log").read_text(errors="replace") if (folder / "error.log").exists() else ""
            raise RuntimeError(f"nginx exited with {process.returncode}: {log[-2000:]}")
        host, port = pending[-1]
        try:
            with socket.create_connection((host, port), timeout=1):
                pending.pop()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not listen on {host}:{port} within 60 s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def run_nginx(
    folder: Path,
    sites: Sequence[Site],
    *,
    workers: int = 1,
    rlimit: int = 4096,
    connections: int = 1024,
) -> Iterator[Nginx]:
    """Start nginx with one TLS ``server`` block per site on a free port; stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    ports: dict[str, int] = {}
    hosts: dict[str, str] = {}
    blocks: list[str] = []
    chosen = _free_ports([site.host for site in sites])
    for site, port in zip(sites, chosen, strict=True):
        cert, key = write_pair(folder / "sites", site.name, site.fullchain_pem, site.key_pem)
        ports[site.name] = port
        hosts[site.name] = site.host
        listen = f"[{site.host}]:{port}" if ":" in site.host else f"{site.host}:{port}"
        ciphers = "    ssl_ciphers DEFAULT:@SECLEVEL=0;\n" if site.weak else ""
        blocks.append(
            f"  server {{\n    listen {listen} ssl;\n    server_name _;\n"
            f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n{ciphers}"
            f"    ssl_protocols {site.protocols};\n"
            f'    location / {{ return 200 "{site.name}\\n"; }}\n  }}\n'
        )
    conf = folder / "nginx.conf"
    conf.write_text(_nginx_conf(folder, "".join(blocks), workers=workers, rlimit=rlimit, connections=connections))
    process = subprocess.Popen(
        [nginx_binary(), "-c", str(conf), "-p", str(folder), "-e", str(folder / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(process, [(hosts[s.name], ports[s.name]) for s in sites], folder)
        yield Nginx(folder=folder, process=process, ports=ports, hosts=hosts)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # fast shutdown of master and workers
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
