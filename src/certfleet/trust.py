"""Trust stores: the roots a client starts from (Mozilla's by default, the system's, or the user's),
and reading them from files. The search for paths up to them is :mod:`certfleet.paths`; who signed
what is :mod:`certfleet.signatures`."""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

# the same enums as serialization's, from the module that defines them: the public package also
# loads SSH keys and ciphers, which every start of a command that only compares certificates would
# pay for; should cryptography move them, the public package still has them
try:
    from cryptography.hazmat.primitives._serialization import Encoding
except ImportError:  # pragma: no cover - another cryptography
    from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from certfleet.certinfo import NAME_ERRORS, UNPARSABLE, NameKey, lone_pem_der, name_key, readable
from certfleet.errors import EnvError, FormatError, InputError
from certfleet.signatures import spki

# certifi, ssl and certfleet.formats are imported where they are used (the Mozilla roots, the
# system's roots, a file that is not one plain PEM certificate): ``verify --each`` given one PEM
# file of roots and one of intermediates needs none of them, and its start is measured

__all__ = ["TrustStore", "load_trust", "read_certificates"]

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
                anchors.add((subject, spki(cert)))
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
    def mozilla_plus(cls, anchors: Sequence[x509.Certificate]) -> TrustStore:
        """Mozilla's roots and ``anchors`` (a store's trust anchors, and any others the caller trusts)."""
        mozilla = _mozilla()
        return mozilla.plus(anchors, source="mozilla + store anchors") if anchors else mozilla

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
            return subject in self._by_subject and (subject, spki(cert)) in self._anchors
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
