"""The pool: every certificate, key and CSR found in the inputs, each with where it came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from certfleet.certinfo import cert_public_key, describe, fingerprint, key_type, readable
from certfleet.errors import CertfleetError, PasswordError
from certfleet.formats._common import NotNeeded, Unsupported
from certfleet.problems import Problem, ProblemCode, Severity

__all__ = ["InputFormat", "Pool", "PoolCSR", "PoolCert", "PoolKey", "Unread", "Unreadable", "combine"]


class InputFormat(StrEnum):
    """The container an item was found in (a zip member reports its own container, not ``zip``)."""

    PEM = "pem"
    DER = "der"
    PKCS7 = "pkcs7"
    PKCS12 = "pkcs12"
    ZIP = "zip"


_MAX_FRIENDLY_NAME = 128  # what certfleet.export writes


class Unread(StrEnum):
    """Why an item of an input was left unread."""

    DAMAGED = "damaged"  # cut short, broken, or not what its label says
    PASSWORD = "password"  # noqa: S105 (encrypted, and no password given opens it)
    UNSUPPORTED = "unsupported"  # read, but of a kind no TLS client accepts (a DSA certificate)
    NOT_NEEDED = "not-needed"  # recognised, and of no use to a server (a certificate revocation list)


_UNREAD_CODES = {
    Unread.DAMAGED: (ProblemCode.UNREADABLE_ITEM, Severity.WARNING),
    Unread.PASSWORD: (ProblemCode.PASSWORD_NEEDED, Severity.WARNING),
    Unread.UNSUPPORTED: (ProblemCode.UNSUPPORTED_ITEM, Severity.WARNING),
    Unread.NOT_NEEDED: (ProblemCode.IGNORED_ITEM, Severity.INFO),
}


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An item of an input that was not read, and why; the rest of that input was."""

    source: str  # the file, or "pkg.zip!member"
    message: str  # names the item: "block 2 (PRIVATE KEY): damaged or cut short"
    reason: Unread
    hint: str | None = None

    @classmethod
    def from_error(cls, exc: CertfleetError, source: str) -> Unreadable:
        if isinstance(exc, PasswordError):
            reason = Unread.PASSWORD
        elif isinstance(exc, NotNeeded):
            reason = Unread.NOT_NEEDED
        elif isinstance(exc, Unsupported):
            reason = Unread.UNSUPPORTED
        else:
            reason = Unread.DAMAGED
        return cls(exc.source or source, exc.message, reason, exc.hint)

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"

    def problem(self) -> Problem:
        code, severity = _UNREAD_CODES[self.reason]
        return Problem(code, severity, str(self), self.hint or "", self.source)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "message": self.message, "reason": self.reason.value, "hint": self.hint}


@dataclass(frozen=True, slots=True)
class PoolCert:
    cert: x509.Certificate
    source: str
    format: InputFormat
    friendly_name: str | None = None  # the PKCS#12 bag's friendlyName (a keytool alias, a Windows label)

    def __post_init__(self) -> None:
        readable(self.cert)  # a certificate whose names do not decode is refused where it is read

    def to_dict(self) -> dict[str, Any]:
        return {
            **describe(self.cert).to_dict(),
            "source": self.source,
            "format": self.format.value,
            "friendly_name": self.friendly_name,
        }


@dataclass(frozen=True, slots=True)
class PoolKey:
    # repr=False: the key object must never reach a log line, even as an opaque repr
    key: CertificateIssuerPrivateKeyTypes = field(repr=False)
    source: str
    format: InputFormat
    encrypted: bool = False  # reading it needed a password

    @property
    def key_type(self) -> str:
        return key_type(self.key.public_key())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format.value,
            "type": self.key_type,
            "encrypted": self.encrypted,
        }


@dataclass(frozen=True, slots=True)
class PoolCSR:
    csr: x509.CertificateSigningRequest
    source: str
    format: InputFormat

    def __post_init__(self) -> None:
        readable(self.csr)

    def to_dict(self) -> dict[str, Any]:
        try:
            subject = self.csr.subject.rfc4514_string()
        except ValueError:  # undecodable attribute values
            subject = repr(self.csr.subject)
        key = cert_public_key(self.csr)
        ktype = key_type(key) if key is not None else "unknown"
        return {"source": self.source, "format": self.format.value, "subject": subject, "key_type": ktype}


@dataclass(frozen=True, slots=True)
class Pool:
    """Everything read from one or more inputs, in input order (the order a bundle was served in)."""

    certificates: tuple[PoolCert, ...] = ()
    keys: tuple[PoolKey, ...] = ()
    csrs: tuple[PoolCSR, ...] = ()
    # zip members that held nothing usable (README.txt, an invoice PDF), by source
    ignored: tuple[str, ...] = ()
    # items that could not be read (a damaged block, a key without its password), beside usable ones
    unreadable: tuple[Unreadable, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.certificates or self.keys or self.csrs)

    def merge(self, other: Pool) -> Pool:
        return Pool(
            certificates=self.certificates + other.certificates,
            keys=self.keys + other.keys,
            csrs=self.csrs + other.csrs,
            ignored=self.ignored + other.ignored,
            unreadable=self.unreadable + other.unreadable,
        )

    def unique_certificates(self) -> tuple[PoolCert, ...]:
        """Each certificate once (by SHA-256 fingerprint), the first occurrence kept, in order."""
        seen: set[str] = set()
        out: list[PoolCert] = []
        for item in self.certificates:
            fp = fingerprint(item.cert)
            if fp not in seen:
                seen.add(fp)
                out.append(item)
        return tuple(out)

    def problems(self) -> tuple[Problem, ...]:
        """Each unreadable item as a problem naming its file and item (a password needed, a damaged block)."""
        return tuple(u.problem() for u in self.unreadable)

    def friendly_name(self, cert: x509.Certificate) -> str | None:
        """The first friendly name (PKCS#12 alias) given to ``cert`` in the inputs that is plain
        text (no control characters, at most 128 characters), if any."""
        names = (c.friendly_name for c in self.certificates if c.friendly_name and c.cert == cert)
        return next((n for n in names if n.strip() and n.isprintable() and len(n) <= _MAX_FRIENDLY_NAME), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "certificates": [c.to_dict() for c in self.certificates],
            "keys": [k.to_dict() for k in self.keys],
            "csrs": [c.to_dict() for c in self.csrs],
            "ignored": list(self.ignored),
            "unreadable": [u.to_dict() for u in self.unreadable],
        }


def combine(pools: Iterable[Pool]) -> Pool:
    """One pool from many, in order (``merge`` in a loop copies every tuple each time)."""
    pools = list(pools)
    if len(pools) == 1:
        return pools[0]
    return Pool(
        certificates=tuple(c for p in pools for c in p.certificates),
        keys=tuple(k for p in pools for k in p.keys),
        csrs=tuple(c for p in pools for c in p.csrs),
        ignored=tuple(i for p in pools for i in p.ignored),
        unreadable=tuple(u for p in pools for u in p.unreadable),
    )
