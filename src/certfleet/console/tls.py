"""The console's own TLS: the bootstrap certificate, SNI per lineage, and switching without restart.

SNI picks the certificate: a name a lineage's active certificate covers gets that one; the names
none covers keep the self-signed bootstrap certificate when it covers them (``localhost``, the
machine's name) and so does a client that sends no name (one that connects by IP address, as to
the ``https://127.0.0.1:8443`` that ``certfleet serve`` prints): the console keeps answering at the
address it printed after the first import. Any other name gets the default lineage's.

``ssl.SSLContext`` only loads keys from files, so each key is written, encrypted with a one-off
random password, into an anonymous in-memory file (``memfd``) that lives for the call; the clear
key never touches a disk.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.certinfo import fingerprint, san_names
from certfleet.errors import InputError, StoreError

__all__ = [
    "BOOTSTRAP_LABEL",
    "CertificateSource",
    "ServedCertificate",
    "TLSContexts",
    "bootstrap_certificate",
    "server_context",
]

log = logging.getLogger("certfleet.console")

BOOTSTRAP_LABEL = "bootstrap"
# TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 suites are all fine and not configurable here)
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass(frozen=True, slots=True)
class ServedCertificate:
    """One certificate the console can present: a lineage's active version, or the bootstrap one."""

    label: str
    key: CertificateIssuerPrivateKeyTypes
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # intermediates, leaf's issuer first
    bootstrap: bool = False  # the console's self-signed certificate (``label`` is then BOOTSTRAP_LABEL)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.leaf)

    def names(self) -> tuple[str, ...]:
        dns, ips = san_names(self.leaf)
        return (*dns, *ips)

    def __repr__(self) -> str:  # the key never shows, not even in a traceback
        return f"ServedCertificate(label={self.label!r}, fingerprint={self.fingerprint[:16]!r})"


class CertificateSource(Protocol):
    """Where the certificates come from (the store, in the console)."""

    def generation(self) -> str:
        """A cheap value that changes whenever :meth:`certificates` would return something else."""
        ...

    def certificates(self) -> Sequence[ServedCertificate]:
        """Every certificate to serve: the lineages' (the first is the default for a name none
        covers) and the bootstrap one."""
        ...


def server_context() -> ssl.SSLContext:
    """A server context with certfleet's settings: TLS 1.2 and 1.3 only, no compression, HTTP/1.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@contextlib.contextmanager
def _secret_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` that exists only for the ``with`` block, in memory when the OS allows."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("certfleet-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="certfleet-tls-") as folder:  # created 0700
        path = Path(folder) / "material.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        yield str(path)


def _load(ctx: ssl.SSLContext, served: ServedCertificate) -> None:
    password = secrets.token_bytes(32)
    key_pem = served.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    certs = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (served.leaf, *served.chain))
    with _secret_file(certs) as cert_path, _secret_file(key_pem) as key_path:
        try:
            ctx.load_cert_chain(cert_path, key_path, password=password)
        except ssl.SSLError as exc:
            raise StoreError(
                f"cannot serve the certificate of {served.label}: {exc.reason or exc}",
                hint="check that the active version's key matches its certificate",
            ) from exc


def _is_ip(name: str) -> bool:
    from certfleet.names import is_ip

    return is_ip(name)


def _covers(pattern: str, name: str) -> bool:
    from certfleet.names import covers

    try:
        return covers(pattern, name)
    except InputError:
        return False


class TLSContexts:
    """The console's server context: SNI picks a certificate by name, new versions apply at once.

    The handshake callback asks the source for its generation (a cheap query) at most once per
    ``check_interval`` seconds and rebuilds the per-certificate contexts when it changed, so a newly
    activated version is served to the next connections without a restart.
    """

    def __init__(
        self,
        source: CertificateSource,
        *,
        check_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._generation: str | None = None
        self._checked = float("-inf")
        self._contexts: list[tuple[ServedCertificate, ssl.SSLContext]] = []
        self.reload()
        self.context = server_context()
        _load(self.context, self._contexts[0][0])
        self.context.sni_callback = self._on_client_hello

    @property
    def served(self) -> tuple[ServedCertificate, ...]:
        return tuple(s for s, _ in self._contexts)

    def reload(self) -> bool:
        """Rebuild the contexts if the source changed; True when it did."""
        with self._lock:
            self._checked = self._clock()
            generation = self._source.generation()
            if generation == self._generation and self._contexts:
                return False
            served = list(self._source.certificates())
            if not served:
                raise StoreError("no certificate to serve", hint="import a certificate or let the console bootstrap")
            contexts = []
            for item in sorted(served, key=lambda item: item.bootstrap):  # the bootstrap one last
                ctx = server_context()
                _load(ctx, item)
                contexts.append((item, ctx))
            self._contexts = contexts
            self._generation = generation
            log.info("serving %s", ", ".join(f"{s.label} ({s.fingerprint[:16]})" for s in served))
            return True

    @property
    def bootstrap(self) -> ServedCertificate | None:
        """The bootstrap certificate, when the source serves one."""
        return next((s for s, _ in self._contexts if s.bootstrap), None)

    def _pick(self, server_name: str | None) -> tuple[ServedCertificate, ssl.SSLContext]:
        contexts = self._contexts  # the lineages' first, the bootstrap one last
        wanted = (server_name or "").rstrip(".").lower()
        if wanted and not _is_ip(wanted):
            for served, ctx in contexts:
                if any(_covers(pattern, wanted) for pattern in served.names()):
                    return served, ctx
            return contexts[0]
        # no name: a client that connects by IP address (clients send no SNI for one)
        return next(((s, c) for s, c in contexts if s.bootstrap), contexts[0])

    def pick(self, server_name: str | None) -> ssl.SSLContext:
        """The context a client asking for ``server_name`` (SNI) gets: the first certificate that
        covers the name (a lineage's before the bootstrap one), the default lineage's for a name
        none covers, the bootstrap certificate for a client that sends no name."""
        return self._pick(server_name)[1]

    def served_for(self, server_name: str | None) -> ServedCertificate:
        """The certificate a client connecting to ``server_name`` (a name, an IP address, or None)
        is served."""
        return self._pick(server_name)[0]

    def by_name(self) -> list[tuple[str, ServedCertificate]]:
        """Each name a served certificate holds, and the certificate a client asking for it gets
        (a wildcard stands for the names it covers)."""
        out: dict[str, ServedCertificate] = {}
        for served in self.served:
            for name in served.names():
                if name not in out:
                    out[name] = served if name.startswith("*.") else self.served_for(name)
        return list(out.items())

    def _on_client_hello(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        if self._clock() - self._checked >= self._interval:
            try:
                self.reload()
            except Exception:  # a broken store must not take the console off the air
                log.exception("keeping the certificates already loaded")
        conn.context = self.pick(server_name)


def _hostname() -> str | None:
    name = socket.gethostname().strip().lower().rstrip(".")
    if not name or name == "localhost":
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


def bootstrap_certificate(
    *, now: dt.datetime, hostname: str | None = None, days: int = 365
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed ECDSA P-256 certificate for localhost, this host's name and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    host = hostname if hostname is not None else _hostname()
    dns = ["localhost"] + ([host] if host and host != "localhost" else [])
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    alt += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet console (bootstrap)"),
            x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost"),
        ]
    )
    start = now - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert
