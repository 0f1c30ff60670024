"""Odd files as the world sends them, made at run time.

cryptography refuses to build most of these (an x400Address in a subjectAltName, an extension
twice, a DSA key without its parameters, a country code of three letters), so they are assembled
here from DER, with a small encoder of their own: the tests must not lean on the code they test.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.x509.oid import NameOID

from certfleet.testing import TestCA, make_key

SAN_OID = bytes.fromhex("551d11")
ECDSA_SHA256 = bytes.fromhex("2a8648ce3d040302")
EXTENSION_REQUEST = bytes.fromhex("2a864886f70d01090e")
X400_ADDRESS = bytes.fromhex("a3023000")  # [3] an empty ORAddress
EDI_PARTY_NAME = bytes.fromhex("a504a1020c00")  # [5] partyName: an empty UTF8String


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def split(der: bytes) -> list[bytes]:
    """The elements of the SEQUENCE ``der``, each whole."""
    first = der[1]
    pos = 2 + (first & 0x7F if first & 0x80 else 0)
    out = []
    while pos < len(der):
        length = der[pos + 1]
        head = 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(der[pos + 2 : pos + 2 + count], "big")
            head += count
        out.append(der[pos : pos + head + length])
        pos += head + length
    return out


def pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN " + label.encode() + b"-----\n" + lines + b"\n-----END " + label.encode() + b"-----\n"


def dns(name: str) -> bytes:
    return tlv(0x82, name.encode())


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def resign(cert: x509.Certificate, tbs: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """``cert`` with its TBS replaced by ``tbs``, signed again with its issuer's (EC) ``key``."""
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return seq(tbs, seq(tlv(0x06, ECDSA_SHA256)), tlv(0x03, b"\x00" + signature))


def with_extension_value(
    ca: TestCA, leaf: x509.Certificate, oid: bytes, value: bytes, *, twice: bool = False
) -> x509.Certificate:
    """``leaf`` (issued by ``ca``, EC) with the extension ``oid`` holding ``value``; ``twice``: added a second time."""
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    tbs = split(der_of(leaf))[0]
    fields = split(tbs)
    assert fields[-1][0] == 0xA3
    extensions = split(split(fields[-1])[0])
    new = seq(tlv(0x06, oid), tlv(0x04, value))
    kept = [e for e in extensions if split(e)[0] != tlv(0x06, oid)]
    kept += [new, new] if twice else [new]
    fields[-1] = tlv(0xA3, seq(*kept))
    return x509.load_der_x509_certificate(resign(leaf, seq(*fields), ca.key))


def leaf_with_san(ca: TestCA, *entries: bytes) -> x509.Certificate:
    """A leaf of ``ca`` for a.example.test whose subjectAltName holds exactly ``entries`` (raw GeneralNames)."""
    leaf = ca.leaf("a.example.test").cert
    return with_extension_value(ca, leaf, SAN_OID, seq(*entries))


def csr_with_extensions(*extensions: bytes, cn: str = "dup.example.test") -> x509.CertificateSigningRequest:
    """A CSR (EC P-256, correctly signed) whose extensionRequest holds ``extensions`` as given."""
    key = make_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]).public_bytes()
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    attribute = seq(tlv(0x06, EXTENSION_REQUEST), tlv(0x31, seq(*extensions)))
    info = seq(tlv(0x02, b"\x00"), name, spki, tlv(0xA0, attribute))
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    return x509.load_der_x509_csr(seq(info, seq(tlv(0x06, ECDSA_SHA256)), tlv(0x03, b"\x00" + signature)))


def san_extension(*names: str) -> bytes:
    return seq(tlv(0x06, SAN_OID), tlv(0x04, seq(*(dns(n) for n in names))))


def dsa_inherited(*, days: int = 30, key_size: int = 2048) -> tuple[bytes, x509.Certificate]:
    """A DSA CA (as cryptography loads it) and the DER of a leaf it issued whose key inherits the
    CA's DSA parameters (RFC 3279: the parameters are left out of the leaf's key)."""
    ca_key = dsa.generate_private_key(key_size)
    leaf_key = dsa.generate_private_key(key_size)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def builder(cn: str, public: dsa.DSAPublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old DSA CA")]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
        )

    ca = (
        builder("Old DSA CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = builder("dsa.example.test", leaf_key.public_key()).sign(ca_key, hashes.SHA256())
    tbs, algorithm, _ = split(der_of(leaf))
    fields = split(tbs)
    spki = split(fields[6])
    fields[6] = seq(seq(split(spki[0])[0]), spki[1])  # the algorithm's OID alone, no parameters
    new_tbs = seq(*fields)
    signature = ca_key.sign(new_tbs, hashes.SHA256())
    return seq(new_tbs, algorithm, tlv(0x03, b"\x00" + signature)), ca


def crl(ca: TestCA, *, days: int = 7) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(1), critical=False)
        .sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    )


def leaf_with_subject(ca: TestCA, subject: Sequence[tuple[bytes, int, bytes]], *names: str) -> x509.Certificate:
    """A leaf of ``ca`` whose subject is ``subject``: (attribute OID, string tag, value) one RDN each,
    encoded as given (cryptography refuses to build a country code of three letters)."""
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    leaf = ca.leaf(*names).cert
    fields = split(split(der_of(leaf))[0])
    fields[5] = seq(*(tlv(0x31, seq(tlv(0x06, oid), tlv(tag, value))) for oid, tag, value in subject))
    return x509.load_der_x509_certificate(resign(leaf, seq(*fields), ca.key))


COUNTRY = bytes.fromhex("550406")
COMMON_NAME = bytes.fromhex("550403")
PRINTABLE, UTF8 = 0x13, 0x0C

__all__ = [
    "COMMON_NAME",
    "COUNTRY",
    "EDI_PARTY_NAME",
    "PRINTABLE",
    "UTF8",
    "X400_ADDRESS",
    "crl",
    "csr_with_extensions",
    "der_of",
    "dns",
    "dsa_inherited",
    "leaf_with_san",
    "leaf_with_subject",
    "pem",
    "san_extension",
    "seq",
    "split",
    "tlv",
    "with_extension_value",
]
