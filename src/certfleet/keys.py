"""Private keys: the kinds a web certificate may have, making them, and telling which key is whose."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from certfleet.certinfo import cert_public_key, describe, key_name, key_type
from certfleet.errors import InputError
from certfleet.problems import Problem, ProblemCode, Severity

__all__ = [
    "CsrMatch",
    "KeyMatch",
    "KeySpec",
    "MatchResult",
    "WebKey",
    "generate_key",
    "key_matches",
    "match",
    "parse_key_spec",
    "public_half",
    "public_key_id",
    "require_web_key",
    "security_bits",
]

# the private keys certfleet makes and puts in CSRs
WebKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class KeySpec(StrEnum):
    """Key kinds public CAs issue web certificates for, spelled as ``--key`` takes them."""

    RSA_2048 = "rsa:2048"
    RSA_3072 = "rsa:3072"
    RSA_4096 = "rsa:4096"
    EC_P256 = "ec:p256"
    EC_P384 = "ec:p384"


_ED_REASON = (
    "{name} keys are not accepted by public CAs or most TLS clients for web certificates; use ec:p256 or rsa:2048"
)
_ACCEPTED = ", ".join(s.value for s in KeySpec)
_RSA_SIZES = {"2048": KeySpec.RSA_2048, "3072": KeySpec.RSA_3072, "4096": KeySpec.RSA_4096}
_CURVES = {
    "p256": KeySpec.EC_P256,
    "256": KeySpec.EC_P256,
    "prime256v1": KeySpec.EC_P256,
    "secp256r1": KeySpec.EC_P256,
    "p384": KeySpec.EC_P384,
    "384": KeySpec.EC_P384,
    "secp384r1": KeySpec.EC_P384,
}


def parse_key_spec(text: str) -> KeySpec:
    """Read a key kind the way people write it: ``rsa``, ``rsa2048``, ``RSA:4096``, ``ec``, ``p256``,
    ``ecdsa:p-384``, ``prime256v1``. Ed25519/Ed448, RSA under 2048 bits and other curves are refused
    with the reason."""
    raw = text.strip()
    t = re.sub(r"[\s_\-:/]", "", raw.lower())
    if len(raw) > 40 or not t:
        raise InputError(f"{raw[:40]!r} is not a key type", hint=f"use one of {_ACCEPTED}")
    if t in {"ed25519", "ed448", "eddsa"}:
        name = "Ed448" if t == "ed448" else "Ed25519"
        raise InputError(_ED_REASON.format(name=name), hint="use ec:p256 or rsa:2048")
    if t == "rsa":
        return KeySpec.RSA_2048
    if t.startswith("rsa") and t[3:].isdigit():
        bits = t[3:]
        if bits in _RSA_SIZES:
            return _RSA_SIZES[bits]
        if int(bits) < 2048:
            raise InputError(
                f"RSA keys of {bits} bits are refused by public CAs and browsers; at least 2048 bits are needed",
                hint="use rsa:2048, rsa:3072 or rsa:4096",
            )
        raise InputError(f"RSA keys of {bits} bits are not offered", hint="use rsa:2048, rsa:3072 or rsa:4096")
    curve = t
    for prefix in ("ecdsa", "ec"):
        if curve.startswith(prefix):
            curve = curve[len(prefix) :]
            break
    if curve == "":
        return KeySpec.EC_P256
    if curve in _CURVES:
        return _CURVES[curve]
    if curve in {"p521", "521", "secp521r1"}:
        raise InputError(
            "P-521 keys are not accepted by public CAs for web certificates (only P-256 and P-384 are)",
            hint="use ec:p256 or ec:p384",
        )
    raise InputError(f"{raw!r} is not a key type", hint=f"use one of {_ACCEPTED}")


# NIST SP 800-57's levels: what a key of each kind is worth against the best known attack
_RSA_LEVELS = ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80))
_CURVE_LEVELS = {"p256": 128, "p384": 192, "p521": 256, "secp256k1": 128}


def security_bits(spelled: str) -> int | None:
    """The NIST security level of a key spelled as :func:`certfleet.certinfo.key_type` spells it
    (``rsa:4096`` → 128, ``ec:p384`` → 192); None for a kind it does not know. Keys are compared
    by level, so RSA 4096 and P-256 are equal: moving from one to the other weakens nothing."""
    kind, _, size = spelled.partition(":")
    if kind == "rsa" and size.isdigit():
        return next((level for bits, level in _RSA_LEVELS if int(size) >= bits), 0)
    if kind == "ec":
        return _CURVE_LEVELS.get(size)
    return {"ed25519": 128, "ed448": 224}.get(spelled)


def generate_key(spec: KeySpec | str) -> WebKey:
    """A new private key of kind ``spec`` (a KeySpec, or text for :func:`parse_key_spec`)."""
    kind = spec if isinstance(spec, KeySpec) else parse_key_spec(spec)
    if kind is KeySpec.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if kind is KeySpec.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(kind.value.split(":")[1]))


def public_half(key: PrivateKeyTypes | PublicKeyTypes) -> PublicKeyTypes:
    """The public key of a private key; a public key as it is."""
    # every private key class has private_bytes and no public one does; isinstance on the unions
    # would have to list every algorithm cryptography may add
    return cast("PublicKeyTypes", key.public_key() if hasattr(key, "private_bytes") else key)  # type: ignore[union-attr]


def _spki(key: PrivateKeyTypes | PublicKeyTypes) -> bytes:
    return public_half(key).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_id(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    """Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER: the same for a key, its certificates and CSRs."""
    return hashlib.sha256(_spki(key)).hexdigest()


def _spki_of(item: x509.Certificate | x509.CertificateSigningRequest) -> bytes | None:
    key = cert_public_key(item)
    # a key algorithm cryptography cannot load matches nothing of ours
    return None if key is None else _spki(key)


def key_matches(key: PrivateKeyTypes | PublicKeyTypes, cert: x509.Certificate | x509.CertificateSigningRequest) -> bool:
    """True when ``key`` (private or public) is the key of ``cert`` (or of a CSR)."""
    return _spki_of(cert) == _spki(key)


class _PoolCert(Protocol):
    @property
    def cert(self) -> x509.Certificate: ...
    @property
    def source(self) -> str: ...


class _PoolKey(Protocol):
    @property
    def key(self) -> PrivateKeyTypes: ...
    @property
    def source(self) -> str: ...


class _PoolCSR(Protocol):
    @property
    def csr(self) -> x509.CertificateSigningRequest: ...
    @property
    def source(self) -> str: ...


class _Pool(Protocol):
    """What :func:`match` needs of ``certfleet.formats.Pool``."""

    @property
    def certificates(self) -> Sequence[_PoolCert]: ...
    @property
    def keys(self) -> Sequence[_PoolKey]: ...
    @property
    def csrs(self) -> Sequence[_PoolCSR]: ...


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """A key and a certificate made for it."""

    key_source: str
    key_type: str
    key_id: str  # public_key_id of the key
    cert_source: str
    cert_sha256: str
    cert_subject: str
    cert_is_ca: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": {"source": self.key_source, "type": self.key_type, "id": self.key_id},
            "certificate": {
                "source": self.cert_source,
                "sha256": self.cert_sha256,
                "subject": self.cert_subject,
                "is_ca": self.cert_is_ca,
            },
        }


@dataclass(frozen=True, slots=True)
class CsrMatch:
    """A key and a certificate request signed with it."""

    key_source: str
    csr_source: str
    csr_subject: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key_source, "csr": self.csr_source, "subject": self.csr_subject}


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Which key belongs to which certificate and CSR; a ``key-mismatch`` problem for each lone key."""

    pairs: tuple[KeyMatch, ...]
    csrs: tuple[CsrMatch, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pairs": [p.to_dict() for p in self.pairs],
            "csrs": [c.to_dict() for c in self.csrs],
            "problems": [p.to_dict() for p in self.problems],
        }


def _subject_label(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    try:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if cns:
            value = cns[0].value
            return f"CN={value if isinstance(value, str) else value.decode('utf-8', 'replace')}"
        return cert.subject.rfc4514_string() or "no subject"
    except ValueError:
        return "unreadable subject"


def _mismatch(key_source: str, against: Sequence[tuple[str, str]], what: str) -> Problem:
    listed = ", ".join(f"{src} ({label})" for src, label in against[:5])
    if len(against) > 5:
        listed += f" and {len(against) - 5} more"
    if what == "certificate":
        tail = "the certificate was issued for another key or CSR"
        hint = "find the key whose CSR was sent to the CA, or request a new certificate with this key's CSR"
    else:
        tail = "the CSR was made with another key"
        hint = "use the key the CSR was made with, or make a new CSR with this key"
    if len(against) > 1:
        tail = tail.replace("the certificate was", "each certificate was").replace("the CSR was", "each CSR was")
    return Problem(
        code=ProblemCode.KEY_MISMATCH,
        severity=Severity.ERROR,
        message=f"{key_source} does not match {listed}: {tail}",
        hint=hint,
        subject=key_source,
    )


def match(pool: _Pool) -> MatchResult:
    """Pair every key in ``pool`` with the certificates and CSRs made for it.

    A key that matches no certificate is a ``key-mismatch`` problem naming the key's file and the
    end-entity certificate file(s) it was compared with (every certificate when there is no
    end-entity one). With no certificate at all, a key that matches none of the CSRs is the problem.
    """
    certs = [(pc, describe(pc.cert), _spki_of(pc.cert)) for pc in pool.certificates]
    csrs = [(pc, _spki_of(pc.csr)) for pc in pool.csrs]
    pairs: list[KeyMatch] = []
    csr_pairs: list[CsrMatch] = []
    problems: list[Problem] = []
    leaves = [(pc.source, _subject_label(pc.cert)) for pc, info, _ in certs if not info.is_ca]
    compared = leaves or [(pc.source, _subject_label(pc.cert)) for pc, _, _ in certs]
    compared = list(dict.fromkeys(compared))
    for pk in pool.keys:
        spki = _spki(pk.key)
        kid = hashlib.sha256(spki).hexdigest()
        ktype = key_type(pk.key.public_key())
        found = False
        for pc, info, cert_spki in certs:
            if cert_spki == spki:
                found = True
                pair = KeyMatch(pk.source, ktype, kid, pc.source, info.sha256, info.subject, info.is_ca)
                if pair not in pairs:
                    pairs.append(pair)
        csr_found = False
        for pcsr, csr_spki in csrs:
            if csr_spki == spki:
                csr_found = True
                cm = CsrMatch(pk.source, pcsr.source, _subject_label(pcsr.csr))
                if cm not in csr_pairs:
                    csr_pairs.append(cm)
        if not found and compared:
            problems.append(_mismatch(pk.source, compared, "certificate"))
        elif not found and not csr_found and csrs:
            against = list(dict.fromkeys((pc.source, _subject_label(pc.csr)) for pc, _ in csrs))
            problems.append(_mismatch(pk.source, against, "csr"))
    return MatchResult(pairs=tuple(pairs), csrs=tuple(csr_pairs), problems=tuple(problems))


def require_web_key(key: PrivateKeyTypes) -> WebKey:
    """``key`` when a public CA would certify it for the web, else InputError saying why."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        name = "Ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "Ed448"
        raise InputError(_ED_REASON.format(name=name), hint="use ec:p256 or rsa:2048")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise InputError(
                f"RSA keys of {key.key_size} bits are refused by public CAs and browsers; 2048 bits at least",
                hint="make a new key of type rsa:2048 or ec:p256",
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in {"secp256r1", "secp384r1"}:
            raise InputError(
                f"EC keys on {key.curve.name} are not accepted by public CAs for web certificates",
                hint="use ec:p256 or ec:p384",
            )
        return key
    raise InputError(f"{key_name(key)} cannot be used for a web certificate", hint="use ec:p256 or rsa:2048")
