"""DER: tell the kind of an object from its ASN.1 shape, then hand it to the one loader that fits.

Looking at the first two or three tags is enough to tell a certificate, a CSR, a PKCS#7, a PKCS#12
and the key structures apart, so nothing is decoded twice, a truncated object is reported as such
(not as "unknown"), and random bytes are refused without running every parser over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from cryptography import x509

from certfleet.certinfo import UNPARSABLE
from certfleet.errors import CertfleetError, FormatError, LimitError
from certfleet.formats._common import HINT_DAMAGED, HINT_DSA, NothingUsable, Unsupported, crl, damaged, named
from certfleet.formats._model import InputFormat, Pool, PoolCert, PoolCSR, PoolKey, Unreadable, combine

_SEQUENCE, _INTEGER, _OCTET_STRING, _OID, _CONTEXT_0 = 0x30, 0x02, 0x04, 0x06, 0xA0
_TIMES = (0x17, 0x18)  # UTCTime, GeneralizedTime
_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")  # 1.2.840.113549.1.7.2
_DSA = bytes.fromhex("2a8648ce380401")  # 1.2.840.10040.4.1, a DSA subjectPublicKeyInfo
_PADDING = b"\x00\r\n\t "  # what tools leave after a DER object


class DerKind(Enum):
    CERTIFICATE = "DER certificate"
    CSR = "DER CSR"
    PKCS7 = "PKCS#7"
    PKCS12 = "PKCS#12"
    KEY = "DER private key"
    ENCRYPTED_KEY = "encrypted DER private key"
    CRL = "DER CRL"


# structures that open with a small version INTEGER: (version, tag of the next field) -> kind
_VERSIONED = {
    (3, _SEQUENCE): DerKind.PKCS12,  # PFX: version 3, authSafe
    (0, _SEQUENCE): DerKind.KEY,  # PKCS#8 PrivateKeyInfo
    (1, _SEQUENCE): DerKind.KEY,  # PKCS#8 v2 (OneAsymmetricKey)
    (0, _INTEGER): DerKind.KEY,  # PKCS#1 RSAPrivateKey (or a DSA key)
    (1, _OCTET_STRING): DerKind.KEY,  # SEC1 ECPrivateKey
}


@dataclass(frozen=True, slots=True)
class _Tlv:
    tag: int
    content: int  # offset of the value
    end: int | None  # offset just past the value; None for a BER indefinite length


@dataclass(frozen=True, slots=True)
class Sniffed:
    kind: DerKind
    end: int  # offset just past the object (the end of the data for an indefinite length)
    truncated: bool
    needed: int  # bytes the header promises


def _tlv(data: bytes, pos: int) -> _Tlv | None:
    if pos + 2 > len(data):
        return None
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:  # high tag numbers: never at the places we look
        return None
    if first < 0x80:
        return _Tlv(tag, pos + 2, pos + 2 + first)
    if first == 0x80:
        return _Tlv(tag, pos + 2, None) if tag & 0x20 else None
    count = first & 0x7F
    if count > 4 or pos + 2 + count > len(data):
        return None
    length = int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
    return _Tlv(tag, pos + 2 + count, pos + 2 + count + length)


def sniff(data: bytes, pos: int = 0) -> Sniffed | None:
    """The kind of the DER object at ``pos``, or None when it is not one we read."""
    outer = _tlv(data, pos)
    if outer is None or outer.tag != _SEQUENCE:
        return None
    kind = _classify(data, outer)
    if kind is None:
        return None
    if outer.end is None:
        return Sniffed(kind, len(data), truncated=False, needed=len(data) - pos)
    return Sniffed(kind, min(outer.end, len(data)), truncated=outer.end > len(data), needed=outer.end - pos)


def _classify(data: bytes, outer: _Tlv) -> DerKind | None:
    first = _tlv(data, outer.content)
    if first is None or first.end is None:
        return None
    if first.tag == _OID:
        return DerKind.PKCS7 if data[first.content : first.end] == _SIGNED_DATA else None
    if first.tag == _INTEGER:
        if first.end - first.content != 1 or first.end > len(data):
            return None  # every version number we look for is one byte
        second = _tlv(data, first.end)
        return None if second is None else _VERSIONED.get((data[first.content], second.tag))
    if first.tag != _SEQUENCE:
        return None
    second = _tlv(data, first.end)
    if second is not None and second.tag == _OCTET_STRING:
        return DerKind.ENCRYPTED_KEY  # EncryptedPrivateKeyInfo: algorithm, encrypted data
    if second is not None and second.tag != _SEQUENCE:
        return None
    # a signed object: the TBS part says which; a v3 certificate starts with its [0] version
    inner = _tlv(data, first.content)
    if inner is None:
        return None
    if inner.tag == _CONTEXT_0:
        return DerKind.CERTIFICATE
    if _is_crl(data, first):
        return DerKind.CRL
    if inner.tag != _INTEGER or inner.end is None:
        return None
    is_zero = inner.end - inner.content == 1 and inner.end <= len(data) and data[inner.content] == 0
    return DerKind.CSR if is_zero else DerKind.CERTIFICATE  # a CSR's version 0, a v1 certificate's serial


def _is_crl(data: bytes, tbs: _Tlv) -> bool:
    """A CRL's TBS: an optional version, the signature algorithm, the issuer, then a time
    (a certificate has its validity there as a SEQUENCE, a CSR its [0] attributes)."""
    tags: list[int] = []
    pos = tbs.content
    while len(tags) < 4:
        item = _tlv(data, pos)
        if item is None or item.end is None:
            return False
        tags.append(item.tag)
        pos = item.end
    if tags[0] == _INTEGER:
        tags = tags[1:]
    return tags[:3] == [_SEQUENCE, _SEQUENCE, tags[2]] and tags[2] in _TIMES


def key_algorithm(der: bytes) -> bytes | None:
    """The OID (its DER value) of the subjectPublicKeyInfo algorithm of the certificate ``der``, or None."""
    cert = _tlv(der, 0)
    tbs = _tlv(der, cert.content) if cert is not None else None
    if tbs is None or tbs.end is None:
        return None
    pos = tbs.content
    fields: list[_Tlv] = []
    while len(fields) < 7:
        item = _tlv(der, pos)
        if item is None or item.end is None:
            return None
        fields.append(item)
        pos = item.end
    spki = fields[6] if fields[0].tag == _CONTEXT_0 else fields[5]
    algorithm = _tlv(der, spki.content)
    oid = _tlv(der, algorithm.content) if algorithm is not None else None
    if oid is None or oid.end is None or oid.tag != _OID:
        return None
    return der[oid.content : oid.end]


def unloadable(der: bytes, what: str) -> FormatError:
    """Why cryptography refused the certificate ``der``: a DSA key whose parameters it inherits
    (RFC 3279, which cryptography cannot read), else damage."""
    if key_algorithm(der) == _DSA:
        return Unsupported(f"{what}: uses DSA, which no TLS client accepts", hint=HINT_DSA)
    return damaged(what)


def object_end(data: bytes) -> int | None:
    """Where the first DER object of ``data`` ends (OpenSSL's TRUSTED CERTIFICATE appends data)."""
    outer = _tlv(data, 0)
    if outer is None or outer.end is None or outer.end > len(data):
        return None
    return outer.end


def read_der(source: str, data: bytes, passwords: Sequence[bytes]) -> Pool:
    """Every DER object in ``data`` (usually one; a few tools concatenate certificates).

    An object that does not load, and bytes between objects, are reported beside the objects
    that do; the data is refused only when nothing in it is usable.
    """
    objects: list[Pool] = []
    failed: list[CertfleetError] = []
    pos = 0
    number = 0
    while pos < len(data):
        found = sniff(data, pos)
        if found is None:
            if pos == 0:
                raise NothingUsable()
            resume = _next_certificate(data, pos)
            where = f"at byte {pos:,}" if resume is None else f"from byte {pos:,} to {resume:,}"
            failed.append(FormatError(f"unexpected bytes after the DER data, {where}", hint=HINT_DAMAGED))
            if resume is None:
                break
            pos = resume
            continue
        number += 1
        what = found.kind.value if number == 1 else f"object {number} ({found.kind.value})"
        if found.truncated:
            have = len(data) - pos
            failed.append(FormatError(f"{what}: cut short ({have:,} of {found.needed:,} bytes)", hint=HINT_DAMAGED))
            break
        try:
            objects.append(load(found.kind, data[pos : found.end], source, passwords, what))
        except LimitError:
            raise
        except CertfleetError as exc:
            # the first object's errors name it already ("PKCS#12: ...", "DER certificate: ...")
            failed.append(named(exc, what) if number > 1 else exc)
        pos = found.end
        while pos < len(data) and data[pos] in _PADDING:
            pos += 1
    pool = combine(objects)
    if not pool:
        raise failed[0] if failed else NothingUsable()
    return combine([pool, Pool(unreadable=tuple(Unreadable.from_error(e, source) for e in failed))])


def _next_certificate(data: bytes, pos: int) -> int | None:
    """Where the next whole DER certificate starts after junk at ``pos``, if one does."""
    at = data.find(b"\x30", pos + 1)
    while at >= 0:
        found = sniff(data, at)
        if found is not None and found.kind is DerKind.CERTIFICATE and not found.truncated:
            return at
        at = data.find(b"\x30", at + 1)
    return None


def load(kind: DerKind, der: bytes, source: str, passwords: Sequence[bytes], what: str | None = None) -> Pool:
    """Load one DER object of a known kind; ``what`` names it in errors (default: its kind)."""
    what = what or kind.value
    # the readers of everything but certificates and CSRs load on demand (see the package docstring)
    if kind is DerKind.CRL:
        raise crl(what)
    if kind is DerKind.PKCS7:
        from certfleet.formats import _pkcs7

        return _pkcs7.read(der, source, what)
    if kind is DerKind.PKCS12:
        from certfleet.formats import _pkcs12

        return _pkcs12.read(der, source, passwords)
    if kind in (DerKind.KEY, DerKind.ENCRYPTED_KEY):
        from certfleet.formats._keys import load_key

        encrypted = kind is DerKind.ENCRYPTED_KEY
        key = load_key(der, pem=False, encrypted=encrypted, passwords=passwords, what=what)
        return Pool(keys=(PoolKey(key, source, InputFormat.DER, encrypted=encrypted),))
    # certificate or CSR: the guess from the first TBS field is wrong for v1 certificates with
    # serial 0 (old appliances made those), so the other loader gets a turn
    first, second = (_certificate, _csr) if kind is DerKind.CERTIFICATE else (_csr, _certificate)
    for loader in (first, second):
        try:
            return loader(der, source)
        except UNPARSABLE:
            continue
    try:
        x509.load_der_x509_crl(der)  # a CRL whose shape the sniffing did not foresee
    except UNPARSABLE:
        raise unloadable(der, what) from None
    raise crl(what)


def _certificate(der: bytes, source: str) -> Pool:
    return Pool(certificates=(PoolCert(x509.load_der_x509_certificate(der), source, InputFormat.DER),))


def _csr(der: bytes, source: str) -> Pool:
    return Pool(csrs=(PoolCSR(x509.load_der_x509_csr(der), source, InputFormat.DER),))
