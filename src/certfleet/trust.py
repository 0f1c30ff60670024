"""Trust stores: the roots a client starts from (Mozilla's by default, the system's, or the user's).

Also the search for paths from a certificate up to them, which verification and chain building share.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

# the same enums as serialization's, from the module that defines them: the public package also
# loads SSH keys and ciphers, which every start of a command that only compares certificates would
# pay for; should cryptography move them, the public package still has them
try:
    from cryptography.hazmat.primitives._serialization import Encoding, PublicFormat
except ImportError:  # pragma: no cover - another cryptography
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning

from certfleet import extensions
from certfleet.certinfo import NAME_ERRORS, UNPARSABLE, NameKey, lone_pem_der, name_key, readable, same_name
from certfleet.errors import EnvError, FormatError, InputError

# certifi, ssl and certfleet.formats are imported where they are used (the Mozilla roots, the
# system's roots, a file that is not one plain PEM certificate): ``verify --each`` given one PEM
# file of roots and one of intermediates needs none of them, and its start is measured

__all__ = [
    "MAX_PATH_LENGTH",
    "WEAK_SIGNATURES",
    "CertPath",
    "PathEnd",
    "Signature",
    "TrustStore",
    "check_signature",
    "extension",
    "find_paths",
    "is_self_signed",
    "load_trust",
    "read_certificates",
    "signed_by",
    "weak_signature",
]

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
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


# signature algorithms whose hash clients refuse: a certificate signed so is refused whoever made it
WEAK_SIGNATURES: Mapping[str, str] = MappingProxyType(
    {
        "1.2.840.113549.1.1.2": "MD2",  # md2WithRSAEncryption
        "1.2.840.113549.1.1.4": "MD5",  # md5WithRSAEncryption
        "1.2.840.113549.1.1.5": "SHA-1",  # sha1WithRSAEncryption
        "1.3.14.3.2.29": "SHA-1",  # sha1WithRSASignature (OIW)
        "1.2.840.10045.4.1": "SHA-1",  # ecdsa-with-SHA1
        "1.2.840.10040.4.3": "SHA-1",  # dsa-with-sha1
    }
)


def weak_signature(cert: x509.Certificate) -> str | None:
    """The weak hash ``cert`` is signed with (``SHA-1``, ``MD5``, ``MD2``), or None."""
    return WEAK_SIGNATURES.get(cert.signature_algorithm_oid.dotted_string)


class Signature(StrEnum):
    """What checking one certificate's signature with a candidate issuer found."""

    GOOD = "good"  # the issuer's name and key made it, with an algorithm clients accept
    WEAK = "weak"  # the issuer's name and key made it, but over SHA-1 or MD5, which clients refuse
    UNCHECKED = "unchecked"  # the names fit, but the algorithm is one certfleet cannot check (MD2, GOST)
    BAD = "bad"  # the names differ, or that key did not make this signature

    @property
    def made(self) -> bool:
        """True when the issuer is proven to have made the signature, strong or weak."""
        return self in (Signature.GOOD, Signature.WEAK)


def check_signature(cert: x509.Certificate, issuer: x509.Certificate) -> Signature:
    """Whether ``issuer``'s name and key made ``cert``'s signature (names alone prove nothing).

    Checked with the issuer's public key directly: cryptography's own check refuses SHA-1 and MD5
    signatures, and a SHA-1 intermediate must still be put in its place (and reported as weak,
    not as out of order). Remembered per pair: lint, path search and verification ask again.
    """
    return _check_signature(cert, issuer)


@functools.lru_cache(maxsize=2048)
def _check_signature(cert: x509.Certificate, issuer: x509.Certificate) -> Signature:
    if not same_name(cert.issuer, issuer.subject):  # as RFC 5280 compares names; undecodable ones name nobody
        return Signature.BAD
    try:
        key = issuer.public_key()
        params = cert.signature_algorithm_parameters
        algorithm = cert.signature_hash_algorithm
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return Signature.UNCHECKED
    data, signature = cert.tbs_certificate_bytes, cert.signature
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            # md5WithRSAEncryption comes without parameters: it is PKCS#1 v1.5, like every RSA scheme but PSS
            key.verify(signature, data, params if isinstance(params, padding.PSS) else padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(signature, data, params)
        elif isinstance(key, dsa.DSAPublicKey) and algorithm is not None:
            key.verify(signature, data, algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) and params is None:
            key.verify(signature, data)
        else:  # an algorithm this kind of key cannot make
            return Signature.BAD
    except InvalidSignature:
        return Signature.BAD
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return Signature.UNCHECKED
    return Signature.WEAK if weak_signature(cert) is not None else Signature.GOOD


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s name and key made ``cert``'s signature, with any hash (see :func:`check_signature`)."""
    return check_signature(cert, issuer).made


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
    _loose: dict[NameKey, list[x509.Certificate]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_subject: dict[bytes, list[x509.Certificate]] = {}
        anchors: set[tuple[bytes, bytes]] = set()
        ders: set[bytes] = set()
        unique: list[x509.Certificate] = []
        for cert in self.certs:
            readable(cert)
            der = cert.public_bytes(Encoding.DER)
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
        import ssl

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
                    certs.append(readable(x509.load_pem_x509_certificate(block.group(0))))
            except (*UNPARSABLE, FormatError) as exc:
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
        if cert.public_bytes(Encoding.DER) in self._ders:
            return True
        try:
            subject = cert.subject.public_bytes()
            # most certificates asked about (leaves, intermediates) share no name with an anchor
            return subject in self._by_subject and (subject, _spki(cert)) in self._anchors
        except (ValueError, UnsupportedAlgorithm):
            return False

    def named(self, name: x509.Name) -> tuple[x509.Certificate, ...]:
        """The anchors whose subject is ``name`` (no signature check)."""
        return self._by_subject.get(name.public_bytes(), ())

    def named_loosely(self, name: x509.Name) -> tuple[x509.Certificate, ...]:
        """The anchors whose subject is ``name`` as RFC 5280 compares names (case, spaces, string type)."""
        if not self._loose:  # made on first use: an issuer named byte for byte, the usual case, never needs it
            for cert in self.certs:
                with contextlib.suppress(*NAME_ERRORS):
                    self._loose.setdefault(name_key(cert.subject), []).append(cert)
        try:
            return tuple(self._loose.get(name_key(name), ()))
        except NAME_ERRORS:
            return ()


@functools.cache
def _mozilla() -> TrustStore:
    import certifi

    return TrustStore.from_pem(Path(certifi.where()).read_bytes(), source="mozilla (certifi)", strict=False)


def _lone_pem_certificate(data: bytes) -> x509.Certificate | None:
    """The certificate of ``data`` when it is one clean PEM certificate (:func:`certinfo.lone_pem_der`)."""
    der = lone_pem_der(data)
    if der is None:
        return None
    try:
        return readable(x509.load_der_x509_certificate(der))
    except (*UNPARSABLE, FormatError):
        return None


def _certs_in(name: str, data: bytes, passwords: Sequence[bytes]) -> list[x509.Certificate]:
    lone = _lone_pem_certificate(data)
    if lone is not None:
        return [lone]
    from certfleet.formats import read_bytes

    return [item.cert for item in read_bytes(name, data, passwords=passwords).certificates]


def read_certificates(
    inputs: Iterable[tuple[str, bytes]], *, passwords: Sequence[bytes] = ()
) -> list[x509.Certificate]:
    """Every certificate of ``inputs`` (``(name, bytes)``, in any format certfleet reads), each once, in order.

    What ``read_pool(inputs, passwords=passwords).unique_certificates()`` gives, errors included;
    a file of one PEM certificate (the usual intermediates file) is read without the format readers.
    """
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for name, data in inputs:
        for cert in _certs_in(name, data, passwords):
            der = cert.public_bytes(Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(cert)
    return out


def _certs_of(inputs: Sequence[tuple[str, bytes]]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for name, data in inputs:
        certs = _certs_in(name, data, ())
        if not certs:
            raise InputError(
                "holds no certificate to trust", hint="give the root CA certificate (PEM or DER)", source=name
            )
        out.extend(certs)
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


# --- paths up to an anchor ----------------------------------------------------------------------

_E = TypeVar("_E", bound=x509.ExtensionType)

MAX_PATH_LENGTH = 8  # certificates in a path, leaf and anchor included; real chains have 3 or 4
_SEARCH_BUDGET = 512  # issuer look-ups per search, so hostile input cannot blow up
_MAX_PATHS = 32
_MAX_SIGNATURE_CHECKS = 1024  # per search; an honest pool needs a handful


class PathEnd(StrEnum):
    TRUSTED = "trusted"  # the last certificate is a trust anchor
    UNTRUSTED_ROOT = "untrusted-root"  # the last certificate is self-signed and not an anchor
    MISSING_ISSUER = "missing-issuer"  # no certificate at hand issued the last one
    TOO_LONG = "too-long"  # the search stopped at MAX_PATH_LENGTH


@dataclass(frozen=True)
class CertPath:
    certs: tuple[x509.Certificate, ...]  # leaf first; the anchor is included when the end is TRUSTED
    end: PathEnd

    @property
    def trusted(self) -> bool:
        return self.end is PathEnd.TRUSTED


def _key_id(cert: x509.Certificate) -> tuple[bytes, bytes] | None:
    try:
        return cert.subject.public_bytes(), _spki(cert)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    """The extension ``kind`` of ``cert``, or None when it is absent or does not parse.

    Hostile certificates break extension parsing in many ways (duplicates, malformed name
    constraints); for certfleet's explanations a broken extension is an absent one, and the
    others are read all the same (see :mod:`certfleet.extensions`).
    """
    return extensions.get(cert, kind)


def _aki(cert: x509.Certificate) -> bytes | None:
    aki = extension(cert, x509.AuthorityKeyIdentifier)
    return aki.key_identifier if aki is not None else None


def _ski(cert: x509.Certificate) -> bytes | None:
    ski = extension(cert, x509.SubjectKeyIdentifier)
    return ski.digest if ski is not None else None


def _valid_at(cert: x509.Certificate, at: dt.datetime | None) -> bool:
    return at is None or cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def find_paths(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    trust: TrustStore,
    *,
    at: dt.datetime | None = None,
    max_depth: int = MAX_PATH_LENGTH,
    first_trusted: bool = False,
) -> list[CertPath]:
    """Every path up from ``leaf`` through ``pool`` towards ``trust``, best first (bounded search).

    Issuers are proven by signature, not by name; AKI/SKI only orders the candidates. Best is a
    path that ends at an anchor, then one whose certificates are all valid at ``at``, then the
    shorter; among paths that end nowhere, the one that got furthest. ``first_trusted`` stops at
    the first path that reaches an anchor (anchors and matching key identifiers are tried first).
    """
    readable(leaf)
    by_subject: dict[bytes, list[x509.Certificate]] = {}
    seen_der: set[bytes] = set()
    for cert in pool:
        readable(cert)
        der = cert.public_bytes(Encoding.DER)
        if der not in seen_der:
            seen_der.add(der)
            by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
    # the same, by names as RFC 5280 compares them: for an issuer named with other case, spaces or
    # string type than its subject (made when first needed)
    loose: dict[NameKey, list[x509.Certificate]] = {}

    budget = _SEARCH_BUDGET
    signed: dict[tuple[int, int], bool] = {}
    paths: list[CertPath] = []

    def candidates(cert: x509.Certificate) -> list[tuple[x509.Certificate, bool]]:
        """Certificates named as ``cert``'s issuer, best first; signatures are checked as they are used."""
        nonlocal budget
        budget -= 1
        aki = _aki(cert)
        issuer_name = cert.issuer.public_bytes()
        found = [(a, True) for a in trust.named(cert.issuer)]
        found += [(c, trust.contains(c)) for c in by_subject.get(issuer_name, ())]
        if not found:
            found = [(a, True) for a in trust.named_loosely(cert.issuer)]
            found += [(c, trust.contains(c)) for c in _loosely(cert.issuer)]
        # anchors first, then a matching key identifier, then those valid now
        found.sort(key=lambda item: (not item[1], aki is not None and _ski(item[0]) != aki, not _valid_at(item[0], at)))
        return found

    def _loosely(name: x509.Name) -> list[x509.Certificate]:
        if not loose:
            for certs in by_subject.values():
                for cert in certs:
                    loose.setdefault(name_key(cert.subject), []).append(cert)
        return loose.get(name_key(name), [])

    def issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        key = (id(cert), id(issuer))
        if key not in signed:
            if len(signed) >= _MAX_SIGNATURE_CHECKS:
                return False  # a maze of look-alike certificates: stop proving, report what was found
            signed[key] = signed_by(cert, issuer)
        return signed[key]

    def stop() -> bool:
        return len(paths) >= _MAX_PATHS or (first_trusted and bool(paths) and paths[-1].trusted)

    def walk(path: list[x509.Certificate], keys: set[tuple[bytes, bytes] | None]) -> None:
        cert = path[-1]
        if trust.contains(cert):
            paths.append(CertPath(tuple(path), PathEnd.TRUSTED))
            return
        if is_self_signed(cert):
            paths.append(CertPath(tuple(path), PathEnd.UNTRUSTED_ROOT))
            return
        if len(path) >= max_depth or budget <= 0:
            paths.append(CertPath(tuple(path), PathEnd.TOO_LONG))
            return
        went_on = False
        for issuer, is_anchor in candidates(cert):
            if _key_id(issuer) in keys or not issued(cert, issuer):
                continue
            went_on = True
            if is_anchor:
                paths.append(CertPath((*path, issuer), PathEnd.TRUSTED))
            else:
                walk([*path, issuer], keys | {_key_id(issuer)})
            if stop():
                return
        if not went_on:
            paths.append(CertPath(tuple(path), PathEnd.MISSING_ISSUER))

    walk([leaf], {_key_id(leaf)})
    rank = {PathEnd.TRUSTED: 0, PathEnd.UNTRUSTED_ROOT: 1, PathEnd.MISSING_ISSUER: 2, PathEnd.TOO_LONG: 3}

    def order(p: CertPath) -> tuple[int, bool, int]:
        length = len(p.certs) if p.trusted else -len(p.certs)
        return rank[p.end], not all(_valid_at(c, at) for c in p.certs), length

    return sorted(paths, key=order)
