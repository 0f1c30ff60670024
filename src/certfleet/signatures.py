"""Who signed a certificate, and how: a signature checked as a client checks it (a weak hash told
apart from a wrong issuer), remembered per pair. Pure: certificates in, a verdict out."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

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

from certfleet.certinfo import same_name

__all__ = [
    "WEAK_SIGNATURES",
    "Signature",
    "check_signature",
    "is_self_signed",
    "signed_by",
    "spki",
    "weak_signature",
]


def spki(cert: x509.Certificate) -> bytes:
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
