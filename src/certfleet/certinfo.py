"""What a certificate is, as plain data: the JSON contract every command shares."""

from __future__ import annotations

import binascii
import datetime as dt
import functools
import unicodedata
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from certfleet import extensions
from certfleet.errors import FormatError

__all__ = [
    "NAME_ERRORS",
    "UNPARSABLE",
    "CertInfo",
    "cert_public_key",
    "common_name",
    "describe",
    "fingerprint",
    "is_ca",
    "is_precertificate",
    "is_self_issued",
    "key_name",
    "key_type",
    "lone_pem_der",
    "name_key",
    "other_names",
    "printable",
    "readable",
    "same_name",
    "san_names",
]

_CURVES = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}
# what cryptography raises for bytes that are not a certificate it loads (an unknown version is not a ValueError)
UNPARSABLE = (ValueError, x509.InvalidVersion)
# what decoding a certificate's name can raise: a BIT STRING value under any attribute but
# x500UniqueIdentifier is a TypeError in cryptography, the rest ValueError
NAME_ERRORS = (ValueError, TypeError)
# one PEM certificate, read without certfleet.formats (see lone_pem_der)
_LONE_BEGIN = b"-----BEGIN CERTIFICATE-----"
_LONE_END = b"-----END CERTIFICATE-----"
_LONE_MAX_BYTES = 64 * 1024  # one certificate is a few kilobytes; anything larger takes the full reader
_UTF8_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n\v\f"
_Signed = TypeVar("_Signed", x509.Certificate, x509.CertificateSigningRequest)


def fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the DER: the one identity of a certificate everywhere in certfleet."""
    return cert.fingerprint(hashes.SHA256()).hex()


def key_type(key: PublicKeyTypes) -> str:
    """``rsa:2048``, ``ec:p256``, ``ed25519``...: the same spelling as ``--key`` options take."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa:{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ec:{_CURVES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"dsa:{key.key_size}"
    return "unknown"


def key_name(key: object) -> str:
    """What kind of key ``key`` (public or private) is, in words: ``an X25519 key``, ``a DSA key``."""
    kinds: tuple[tuple[tuple[type, ...], str], ...] = (
        ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "an RSA key"),
        ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "an EC key"),
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "an Ed25519 key"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448 key"),
    )
    found = next((name for classes, name in kinds if isinstance(key, classes)), None)
    return found if found is not None else _rare_key_name(key)


def _rare_key_name(key: object) -> str:
    import warnings

    from cryptography.hazmat.primitives.asymmetric import dh, x448, x25519
    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        # cryptography warns when its DSA and DH classes are so much as named
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        kinds: tuple[tuple[tuple[type, ...], str], ...] = (
            ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA key"),
            ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "an X25519 key"),
            ((x448.X448PrivateKey, x448.X448PublicKey), "an X448 key"),
            ((dh.DHPrivateKey, dh.DHPublicKey), "a Diffie-Hellman (DH) key"),
        )
    return next(
        (name for classes, name in kinds if isinstance(key, classes)), "a key of a kind certfleet does not know"
    )


def san_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) from the subjectAltName extension, in certificate order."""
    san = extensions.get(cert, x509.SubjectAlternativeName)
    if san is None:
        return [], []
    dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, ips


def lone_pem_der(data: bytes) -> bytes | None:
    """The DER of ``data`` when it is one clean PEM certificate, as certfleet.formats would read it; else None.

    Clean: only whitespace (or a UTF-8 BOM) before the BEGIN line, no other PEM block, no RFC 1421
    headers, base64 that decodes strictly. For anything else None: the caller then reads the data
    with the full reader, which gives every other case its result or its error. The common inputs
    (a leaf, an intermediates file, a root) so skip loading the format readers and telling formats apart.
    """
    if len(data) > _LONE_MAX_BYTES:
        return None
    text = data.removeprefix(_UTF8_BOM).lstrip(_WHITESPACE)
    start = len(_LONE_BEGIN)
    # the line ending after the label rules out any other reading of the BEGIN line
    if not text.startswith(_LONE_BEGIN) or text[start : start + 1] not in (b"\r", b"\n"):
        return None
    end = text.find(_LONE_END, start)
    if end < 0 or text.count(b"-----BEGIN ") != 1 or b":" in text[start:end]:
        return None
    try:
        return binascii.a2b_base64(text[start:end].translate(None, _WHITESPACE), strict_mode=True)
    except binascii.Error:
        return None


def printable(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters, unprintable ones escaped (``\\n``, ``\\x1b``): text
    taken from a certificate must never break a one-line message or drive a terminal."""
    cut = text[:limit]
    return cut if cut.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)


def is_self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


NameKey = tuple[frozenset[tuple[str, "str | bytes"]], ...]


def name_key(name: x509.Name) -> NameKey:
    """``name`` as RFC 5280 (section 7.1) compares names: each value case-folded, its spaces
    collapsed and trimmed, its string type ignored (RFC 4518's preparation, in short)."""
    return tuple(frozenset((a.oid.dotted_string, _prepared(a.value)) for a in rdn) for rdn in name.rdns)


def _prepared(value: str | bytes) -> str | bytes:
    if isinstance(value, bytes):
        return value
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def same_name(a: x509.Name, b: x509.Name) -> bool:
    """True when the names are the same (RFC 5280 section 7.1): byte for byte, or once prepared."""
    try:
        return a == b or name_key(a) == name_key(b)
    except NAME_ERRORS:  # undecodable names name nobody
        return False


def readable(item: _Signed) -> _Signed:
    """``item`` (a certificate or CSR), once its names decode; FormatError when they do not.

    cryptography decodes names only when they are first used, so a damaged or forged certificate
    loads fine and fails later, anywhere; what reads or takes certificates checks here first and
    says so in one line.
    """
    try:
        _ = item.subject
        if isinstance(item, x509.Certificate):
            _ = item.issuer
    except NAME_ERRORS as exc:
        what = "a certificate whose subject or issuer" if isinstance(item, x509.Certificate) else "a CSR whose subject"
        raise FormatError(
            f"{what} name does not decode: damaged or forged", hint="get it again from where it came from"
        ) from exc
    return item


def cert_public_key(cert: x509.Certificate | x509.CertificateSigningRequest) -> PublicKeyTypes | None:
    """The public key of ``cert`` (or of a CSR), or None when its algorithm is unknown or the key is broken."""
    try:
        return cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def is_ca(cert: x509.Certificate) -> bool:
    """True when basicConstraints says CA; a broken extension counts as absent."""
    constraints = extensions.get(cert, x509.BasicConstraints)
    return constraints is not None and constraints.ca


def is_precertificate(cert: x509.Certificate) -> bool:
    """True for a CT precertificate: the poison extension (RFC 6962) makes it unusable by design."""
    return extensions.get(cert, x509.PrecertPoison) is not None


def other_names(item: x509.Certificate | x509.CertificateSigningRequest) -> tuple[str, ...]:
    """The subjectAltName entries that are neither DNS names nor IP addresses, worded for a report."""
    found = extensions.decoded(item)
    san = found.find(x509.SubjectAlternativeName)
    out = [_general_name(n) for n in san.value if not isinstance(n, x509.DNSName | x509.IPAddress)] if san else []
    return (*out, *found.unusable_names)


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.RFC822Name):
        text = f"email {name.value}"
    elif isinstance(name, x509.UniformResourceIdentifier):
        text = f"URI {name.value}"
    elif isinstance(name, x509.DirectoryName):
        text = f"directory name {_rfc4514(name.value)}"
    elif isinstance(name, x509.RegisteredID):
        text = f"registered ID {name.value.dotted_string}"
    elif isinstance(name, x509.OtherName):
        text = f"other name {name.type_id.dotted_string}"
    else:
        text = "a name of an unknown type"
    return printable(text, 200)


def _signature_algorithm(cert: x509.Certificate) -> str:
    name = cert.signature_algorithm_oid._name
    return name if name and name != "Unknown OID" else cert.signature_algorithm_oid.dotted_string


def _rfc4514(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:  # undecodable attribute values in hostile certificates
        return repr(name)


def _name_text(cert: x509.Certificate, *, issuer: bool) -> str:
    try:
        name = cert.issuer if issuer else cert.subject
    except NAME_ERRORS:  # the name itself does not decode: describe still answers
        return "an undecodable name"
    return _rfc4514(name)


@dataclass(frozen=True, slots=True)
class CertInfo:
    sha256: str
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool
    key_type: str
    signature_algorithm: str
    common_name: str | None
    # subjectAltName entries beyond DNS names and IP addresses (email, URI, x400Address...)
    other_names: tuple[str, ...] = ()
    # extensions that do not decode, or appear twice
    faults: tuple[str, ...] = ()
    # a CT precertificate (the critical poison extension): logged by the CA, accepted by no client
    precertificate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "is_ca": self.is_ca,
            "key_type": self.key_type,
            "signature_algorithm": self.signature_algorithm,
            "other_names": list(self.other_names),
            "faults": list(self.faults),
            "precertificate": self.precertificate,
        }

    def days_left(self, now: dt.datetime) -> int:
        return (self.not_after - now).days


def common_name(cert: x509.Certificate) -> str | None:
    """The first common name of the subject, or None (also when the subject does not decode)."""
    try:
        attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except NAME_ERRORS:
        return None
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def describe(cert: x509.Certificate) -> CertInfo:
    # Lint, verification and the report all describe the same certificates again and again
    # (``check`` of 1,000 endpoints asked 4,000 times for 1,002 certificates); a CertInfo is
    # frozen, so one per certificate is shared. Certificates hash and compare by their DER.
    return _describe(cert)


@functools.lru_cache(maxsize=8192)
def _describe(cert: x509.Certificate) -> CertInfo:
    dns, ips = san_names(cert)
    key = cert_public_key(cert)
    return CertInfo(
        sha256=fingerprint(cert),
        subject=_name_text(cert, issuer=False),
        issuer=_name_text(cert, issuer=True),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=tuple(dns),
        ip_addresses=tuple(ips),
        is_ca=is_ca(cert),
        key_type=key_type(key) if key is not None else "unknown",
        signature_algorithm=_signature_algorithm(cert),
        common_name=common_name(cert),
        other_names=other_names(cert),
        faults=extensions.decoded(cert).faults,
        precertificate=is_precertificate(cert),
    )
