"""Certificates the console knows (the store's versions and anchors, what it serves itself), their
chains as a strict client validates them, drawn from leaf to root; which certificate the console
serves for each name; and what a client's configuration may pin of the certificate it is served."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.certinfo import describe
from certfleet.clock import Clock
from certfleet.console.pictures import ChainBox, chain_svg
from certfleet.console.tls import ServedCertificate, TLSContexts
from certfleet.errors import CertfleetError, InputError, NotFoundError
from certfleet.fleet.health import Health
from certfleet.fleet.nodes import lineage_names
from certfleet.problems import ProblemCode, Severity
from certfleet.store import Store
from certfleet.trust import TrustStore
from certfleet.verify import Verification, verify_chain

__all__ = ["Certificates", "ServedName", "pem_text"]

_HEX = frozenset("0123456789abcdef")


def pem_text(*certs: x509.Certificate) -> str:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode("ascii")


@dataclass(frozen=True, slots=True)
class ServedName:
    """A name the console answers to, and the certificate a client that asks for it gets."""

    name: str  # "" for a client that sends no name (one that connects by IP address)
    label: str  # the lineage, or "bootstrap"
    fingerprint: str
    bootstrap: bool
    not_after: dt.datetime


class Certificates:
    def __init__(
        self,
        store: Store,
        *,
        trust: Callable[[], TrustStore],
        clock: Clock,
        expiring_days: int,
        tls: TLSContexts | None = None,
    ) -> None:
        self._store, self._trust, self._clock = store, trust, clock
        self._expiring_days = expiring_days
        self._tls = tls

    def find(self, sha256: str) -> tuple[x509.Certificate, list[x509.Certificate], str | None]:
        """A certificate known by its fingerprint: (the certificate, its chain as stored, its lineage)."""
        sha256 = sha256.lower()
        if len(sha256) != 64 or not set(sha256) <= _HEX:
            raise InputError("a certificate is named by its SHA-256 fingerprint (64 hex digits)")
        version = self._store.version_by_fingerprint(sha256)
        if version is not None and version.leaf is not None:
            return version.leaf, list(version.chain), version.lineage
        carried = self._store.version_with_chain_certificate(sha256)
        if carried is not None:
            holder, index = carried
            return holder.chain[index], list(holder.chain[index + 1 :]), holder.lineage
        for anchor in self._store.trust_anchors():
            if anchor.fingerprint == sha256:
                return anchor.cert, [], None
        if self._tls is not None:
            for served in self._tls.served:
                if served.fingerprint == sha256:
                    return served.leaf, list(served.chain), None
        raise NotFoundError(f"no certificate {sha256[:16]}… in the store", hint="the dashboard links every certificate")

    def chain_picture(self, leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> tuple[Any, Verification]:
        """The validated chain as boxes (leaf to root), with a dashed box where one is missing."""
        now = self._clock()
        verification = verify_chain(leaf, chain, self._trust(), at=now)
        path = list(verification.chain) or [leaf]
        boxes = []
        for i, cert in enumerate(path):
            info = describe(cert)
            role = "leaf" if i == 0 else ("root" if cert.subject == cert.issuer else "intermediate")
            own = [p for p in verification.problems if p.subject == info.sha256]
            health = (
                Health.BAD if now >= info.not_after or any(p.severity is Severity.ERROR for p in own) else Health.GOOD
            )
            if health is Health.GOOD and info.days_left(now) <= self._expiring_days:
                health = Health.WARN
            boxes.append(
                ChainBox(
                    role,
                    info.common_name or info.subject,
                    f"until {info.not_after:%Y-%m-%d} · {info.key_type} · {info.sha256[:16]}…",
                    health,
                    f"/certificates/{info.sha256}",
                )
            )
        last = path[-1]
        if not verification.valid and last.subject != last.issuer:
            missing = next((p for p in verification.problems if p.code is ProblemCode.INCOMPLETE_CHAIN), None)
            issuer = last.issuer.rfc4514_string() if last.issuer else "unknown"
            boxes.append(
                ChainBox(
                    "missing",
                    issuer,
                    missing.message if missing else "no trusted issuer found",
                    Health.BAD,
                )
            )
        return chain_svg(boxes), verification

    # -- what the console serves ------------------------------------------------------------------

    def served_names(self) -> list[ServedName]:
        """Each name the console's certificates hold and the certificate it gets, then what a client
        that sends no name gets."""
        if self._tls is None:
            return []
        pairs = [*self._tls.by_name(), ("", self._tls.served_for(None))]
        return [ServedName(n, c.label, c.fingerprint, c.bootstrap, c.leaf.not_valid_after_utc) for n, c in pairs]

    def client_values(self, host: str) -> dict[str, str]:
        """The certificate placeholders of a client configuration, for the certificate the console
        serves for ``host``: the issuing CA's public key (SHA-256 of its SubjectPublicKeyInfo, as hex
        and as the base64 "pin-sha256" form), the lineage's names, and the leaf's fingerprint."""
        served = self._tls.served_for(host) if self._tls is not None else None
        if served is None:
            return {}
        issuer = self._issuer(served)
        pin = b""
        if issuer is not None:
            pin = hashlib.sha256(
                issuer.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ).digest()
        return {
            "ca_spki_sha256": pin.hex(),
            "ca_pin_sha256": base64.b64encode(pin).decode("ascii") if pin else "",
            "names": ",".join(self._names(served)),
            "fingerprint": served.fingerprint,
        }

    def _issuer(self, served: ServedCertificate) -> x509.Certificate | None:
        if served.chain:
            return served.chain[0]
        if served.leaf.issuer == served.leaf.subject:
            return served.leaf  # self-signed: its own issuer
        path = verify_chain(served.leaf, (), self._trust(), at=self._clock()).chain  # issued by a root itself
        return path[1] if len(path) > 1 else None

    def _names(self, served: ServedCertificate) -> tuple[str, ...]:
        if not served.bootstrap:
            try:
                record = self._store.lineage(served.label)
                names = lineage_names(record, self._store.nodes(record.name))
            except CertfleetError:  # the lineage went away since it was loaded
                names = ()
            if names:
                return names
        return served.names()
