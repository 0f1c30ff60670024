"""The one place certfleet reads the extensions of a certificate or CSR.

cryptography decodes every extension at once, and one it cannot decode (a subjectAltName holding
an x400Address, an extension present twice, a malformed value) makes all of them fail: a
certificate would then have no names, no basicConstraints, no usages, wherever it is looked at.
Here, when that happens, each extension is decoded on its own; what still fails is a fault
worded for a report, and the rest is read as usual. A subjectAltName keeps its DNS names and IP
addresses, and the entries cryptography cannot represent are reported as values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509

from certfleet.asn1 import SEQUENCE, Tlv, children, encode, read_tlv

__all__ = ["DECODE_ERRORS", "Decoded", "decoded", "get"]

# what cryptography raises when it decodes extensions (an unknown GeneralName type is none of the others)
DECODE_ERRORS = (x509.DuplicateExtension, x509.UnsupportedGeneralNameType, ValueError, TypeError)

_E = TypeVar("_E", bound=x509.ExtensionType)
_Item = x509.Certificate | x509.CertificateSigningRequest

_BOOLEAN, _OCTET_STRING, _OID, _SET = 0x01, 0x04, 0x06, 0x31
_EXTENSIONS_FIELD = 0xA3  # TBSCertificate [3] extensions
_ATTRIBUTES_FIELD = 0xA0  # CertificationRequestInfo [0] attributes
_EXTENSION_REQUESTS = (
    bytes.fromhex("2a864886f70d01090e"),  # PKCS#9 extensionRequest
    bytes.fromhex("2b06010401823702010e"),  # Microsoft's older msExtReq
)
# GeneralName types cryptography cannot represent: [3] x400Address and [5] ediPartyName
_UNUSABLE_NAMES = {0xA3: "an x400Address", 0xA5: "an EDIPartyName"}

# A certificate that holds nothing but the extension to decode: cryptography reads extensions
# only from a certificate, and checks no signature to do it. Ed25519 key and signature (all zero).
_ED25519 = encode(SEQUENCE, encode(_OID, bytes.fromhex("2b6570")))
_TEMPLATE_HEAD = b"".join(
    [
        encode(0xA0, encode(0x02, b"\x02")),  # version 3
        encode(0x02, b"\x01"),  # serial 1
        _ED25519,
        encode(SEQUENCE, b""),  # issuer: empty
        encode(SEQUENCE, encode(0x17, b"250101000000Z") * 2),  # validity
        encode(SEQUENCE, b""),  # subject: empty
        encode(SEQUENCE, _ED25519 + encode(0x03, bytes(33))),  # subjectPublicKeyInfo
    ]
)
_TEMPLATE_TAIL = _ED25519 + encode(0x03, bytes(65))


@dataclass(frozen=True, slots=True)
class Decoded:
    """The extensions of a certificate or CSR that decode, and what did not."""

    extensions: tuple[x509.Extension[x509.ExtensionType], ...]
    # what could not be read, worded for a report ("the subjectAltName extension appears twice")
    faults: tuple[str, ...] = ()
    # subjectAltName entries cryptography cannot represent ("an x400Address, which no TLS client uses")
    unusable_names: tuple[str, ...] = ()

    def find(self, kind: type[_E]) -> x509.Extension[_E] | None:
        for ext in self.extensions:
            if isinstance(ext.value, kind):
                return ext  # type: ignore[return-value]  # the value's type is the extension's
        return None


def get(item: _Item, kind: type[_E]) -> _E | None:
    """The value of the extension ``kind`` of ``item``, or None when it is absent or does not decode."""
    try:
        return item.extensions.get_extension_for_class(kind).value  # the common case, cached by cryptography
    except x509.ExtensionNotFound:
        return None
    except DECODE_ERRORS:
        found = _one_by_one(item).find(kind)
        return None if found is None else found.value


def decoded(item: _Item) -> Decoded:
    """Every extension of ``item`` that decodes, with the faults of those that do not; never raises."""
    try:
        return Decoded(tuple(item.extensions))
    except DECODE_ERRORS:
        return _one_by_one(item)


@functools.lru_cache(maxsize=256)
def _one_by_one(item: _Item) -> Decoded:
    extensions: list[x509.Extension[x509.ExtensionType]] = []
    faults: list[str] = []
    unusable: list[str] = []
    seen: set[bytes] = set()
    raw = _raw_extensions(item)
    if raw is None:
        return Decoded((), ("its extensions do not decode",))
    for oid, whole, value in raw:
        if oid in seen:
            faults.append(f"the {_name(whole)} extension appears twice (RFC 5280 allows it once)")
            continue
        seen.add(oid)
        ext = _decode(whole)
        if ext is None and value is not None:
            kept, dropped = _usable_general_names(value)
            if dropped:
                unusable.extend(f"{what}, which no TLS client uses" for what in dropped)
                ext = _decode(_with_value(whole, kept))
        if ext is None:
            faults.append(f"the {_name(whole)} extension does not decode")
        else:
            extensions.append(ext)
    return Decoded(tuple(extensions), tuple(faults), tuple(unusable))


def _raw_extensions(item: _Item) -> list[tuple[bytes, bytes, bytes | None]] | None:
    """(OID, the whole Extension, its value) for each extension in the DER of ``item``, in order."""
    if isinstance(item, x509.Certificate):
        data = item.tbs_certificate_bytes
        found = _field(data, _EXTENSIONS_FIELD)
        inner = read_tlv(data, found.content, found.end) if found is not None else None
    else:
        data = item.tbs_certrequest_bytes
        inner = _extension_request(data)
    if inner is None:
        return None
    out: list[tuple[bytes, bytes, bytes | None]] = []
    for ext in children(data, inner):
        parts = list(children(data, ext))
        if not parts or parts[0].tag != _OID:
            return None
        value = next((p.value(data) for p in parts[1:] if p.tag == _OCTET_STRING), None)
        out.append((parts[0].value(data), ext.whole(data), value))
    return out


def _field(data: bytes, tag: int) -> Tlv | None:
    outer = read_tlv(data)
    if outer is None:
        return None
    return next((child for child in children(data, outer) if child.tag == tag), None)


def _extension_request(data: bytes) -> Tlv | None:
    attributes = _field(data, _ATTRIBUTES_FIELD)
    if attributes is None:
        return None
    for attribute in children(data, attributes):
        parts = list(children(data, attribute))
        if len(parts) == 2 and parts[0].tag == _OID and parts[0].value(data) in _EXTENSION_REQUESTS:
            return next(children(data, parts[1]), None) if parts[1].tag == _SET else None
    return None


def _decode(extension: bytes) -> x509.Extension[x509.ExtensionType] | None:
    tbs = encode(SEQUENCE, _TEMPLATE_HEAD + encode(_EXTENSIONS_FIELD, encode(SEQUENCE, extension)))
    try:
        shadow = x509.load_der_x509_certificate(encode(SEQUENCE, tbs + _TEMPLATE_TAIL))
        found: x509.Extension[x509.ExtensionType] = next(iter(shadow.extensions))
    except (*DECODE_ERRORS, x509.InvalidVersion, StopIteration):
        return None
    return found


def _usable_general_names(value: bytes) -> tuple[bytes, list[str]]:
    """A GeneralNames value without the entries cryptography cannot represent, and what those were."""
    outer = read_tlv(value)
    if outer is None or outer.tag != SEQUENCE or outer.end != len(value):
        return value, []
    kept: list[bytes] = []
    dropped: list[str] = []
    for entry in children(value, outer):
        what = _UNUSABLE_NAMES.get(entry.tag)
        if what is None:
            kept.append(entry.whole(value))
        else:
            dropped.append(what)
    return encode(SEQUENCE, b"".join(kept)), dropped


def _with_value(extension: bytes, value: bytes) -> bytes:
    outer = read_tlv(extension)
    if outer is None:
        return extension
    parts = [
        encode(_OCTET_STRING, value) if p.tag == _OCTET_STRING else p.whole(extension)
        for p in children(extension, outer)
    ]
    return encode(SEQUENCE, b"".join(parts))


def _name(extension: bytes) -> str:
    outer = read_tlv(extension)
    first = read_tlv(extension, outer.content, outer.end) if outer is not None else None
    if first is None or first.tag != _OID:
        return "an unnamed"
    oid = _dotted(first.value(extension))
    try:
        name = x509.ObjectIdentifier(oid)._name
    except ValueError:
        return oid
    return name if name != "Unknown OID" else oid


def _dotted(der: bytes) -> str:
    if not der:
        return "?"
    arcs: list[int] = []
    value = 0
    for byte in der:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))
