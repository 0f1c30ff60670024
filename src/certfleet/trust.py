"""Trust stores: the roots a client starts from (Mozilla's by default, the system's, or the user's)."""

from __future__ import annotations

import contextlib
import functools
import re
import ssl
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning

from certfleet.errors import EnvError, InputError
from certfleet.formats import read_pool

__all__ = ["TrustStore", "is_self_signed", "load_trust", "signed_by"]

# Where Linux distributions and BSDs keep the bundle of their trusted roots.
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, FreeBSD, OpenBSD
)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)
# a trust bundle is a few hundred roots; anything far larger is not one
_MAX_BUNDLE_BYTES = 16 * 1024 * 1024


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s name and key made ``cert``'s signature (names alone prove nothing).

    Checked with the issuer's public key directly: cryptography's own check refuses SHA-1 and MD5
    signatures, and lint must still see who made them. Whether an algorithm is acceptable is
    for verification and lint to say, not for this.
    """
    try:
        if cert.issuer != issuer.subject:
            return False
        key = issuer.public_key()
        params = cert.signature_algorithm_parameters
        algorithm = cert.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            # md5WithRSAEncryption comes without parameters: it is PKCS#1 v1.5, like every RSA scheme but PSS
            key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                params if isinstance(params, padding.PSS) else padding.PKCS1v15(),
                algorithm,
            )
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(cert.signature, cert.tbs_certificate_bytes, params)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) and params is None:
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and signed_by(cert, cert)


@dataclass(frozen=True)
class TrustStore:
    """A set of trust anchors; a certificate is trusted when a path from it ends at one of these."""

    certs: tuple[x509.Certificate, ...]
    source: str = "custom"
    _by_subject: Mapping[bytes, tuple[x509.Certificate, ...]] = field(init=False, repr=False, compare=False)
    # an anchor is a name and a key: a re-issued root (new dates, same key) is the same anchor
    _anchors: frozenset[tuple[bytes, bytes]] = field(init=False, repr=False, compare=False)
    _ders: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_subject: dict[bytes, list[x509.Certificate]] = {}
        anchors: set[tuple[bytes, bytes]] = set()
        ders: set[bytes] = set()
        unique: list[x509.Certificate] = []
        for cert in self.certs:
            der = cert.public_bytes(serialization.Encoding.DER)
            if der in ders:
                continue
            ders.add(der)
            unique.append(cert)
            subject = cert.subject.public_bytes()
            by_subject.setdefault(subject, []).append(cert)
            # a key type we cannot read still anchors by its DER
            with contextlib.suppress(ValueError, UnsupportedAlgorithm):
                anchors.add((subject, _spki(cert)))
        object.__setattr__(self, "certs", tuple(unique))
        object.__setattr__(self, "_by_subject", {k: tuple(v) for k, v in by_subject.items()})
        object.__setattr__(self, "_anchors", frozenset(anchors))
        object.__setattr__(self, "_ders", frozenset(ders))

    def __len__(self) -> int:
        return len(self.certs)

    @classmethod
    def mozilla(cls) -> TrustStore:
        """Mozilla's roots as shipped by certifi, parsed once per process."""
        return _mozilla()

    @classmethod
    def system(cls) -> TrustStore:
        """The operating system's bundle of trusted roots."""
        candidates = [ssl.get_default_verify_paths().cafile, *_SYSTEM_BUNDLES]
        for candidate in candidates:
            if candidate and Path(candidate).is_file():
                data = Path(candidate).read_bytes()
                return cls.from_pem(data, source=f"system ({candidate})", strict=False)
        raise EnvError(
            "no system trust bundle found",
            hint="install the ca-certificates package, or use the default Mozilla roots",
        )

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "custom", strict: bool = True) -> TrustStore:
        """Every ``CERTIFICATE`` block of a PEM bundle; ``strict=False`` skips blocks that do not parse."""
        if len(data) > _MAX_BUNDLE_BYTES:
            raise InputError("this trust bundle is too large to be one", source=source)
        certs: list[x509.Certificate] = []
        for block in _PEM_CERT.finditer(data):
            try:
                with warnings.catch_warnings():
                    # old roots with quirks (a negative serial) are still anchors people rely on
                    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                    certs.append(x509.load_pem_x509_certificate(block.group(0)))
            except ValueError as exc:
                if strict:
                    raise InputError(
                        f"certificate {len(certs) + 1} of the bundle does not parse", source=source
                    ) from exc
        return cls(certs=tuple(certs), source=source)

    def plus(self, certs: Iterable[x509.Certificate], *, source: str | None = None) -> TrustStore:
        """This store with ``certs`` added as anchors too."""
        extra = tuple(certs)
        return TrustStore(certs=self.certs + extra, source=source or self.source)

    def contains(self, cert: x509.Certificate) -> bool:
        """True when ``cert`` is one of the anchors (the same name and key, or the same bytes)."""
        if cert.public_bytes(serialization.Encoding.DER) in self._ders:
            return True
        try:
            return (cert.subject.public_bytes(), _spki(cert)) in self._anchors
        except (ValueError, UnsupportedAlgorithm):
            return False

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The anchors whose name and key issued ``cert``."""
        named = self._by_subject.get(cert.issuer.public_bytes(), ())
        return [anchor for anchor in named if signed_by(cert, anchor)]

    def named(self, name: x509.Name) -> tuple[x509.Certificate, ...]:
        """The anchors whose subject is ``name`` (no signature check)."""
        return self._by_subject.get(name.public_bytes(), ())


@functools.cache
def _mozilla() -> TrustStore:
    return TrustStore.from_pem(Path(certifi.where()).read_bytes(), source="mozilla (certifi)", strict=False)


def _certs_of(inputs: Sequence[tuple[str, bytes]]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for name, data in inputs:
        pool = read_pool([(name, data)])
        if not pool.certificates:
            raise InputError(
                "holds no certificate to trust", hint="give the root CA certificate (PEM or DER)", source=name
            )
        out.extend(item.cert for item in pool.certificates)
    return out


def load_trust(
    trust: Sequence[tuple[str, bytes]] = (),
    trust_only: Sequence[tuple[str, bytes]] = (),
    system: bool = False,
) -> TrustStore:
    """The trust store a command asked for.

    ``trust`` files add roots to the base (Mozilla's, or the system's with ``system``);
    ``trust_only`` files replace the base; files are ``(name, bytes)`` in any format certfleet reads.
    """
    if trust_only and system:
        raise InputError("--trust-only and --system cannot be used together", hint="choose one base set of roots")
    if trust_only:
        base = TrustStore(certs=tuple(_certs_of(trust_only)), source=" + ".join(name for name, _ in trust_only))
    else:
        base = TrustStore.system() if system else TrustStore.mozilla()
    if not trust:
        return base
    names = " + ".join(name for name, _ in trust)
    return base.plus(_certs_of(trust), source=f"{base.source} + {names}")
