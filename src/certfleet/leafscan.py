"""What a verifier needs from a leaf, read straight from its DER: names, serverAuth, subject and key.

cryptography decodes a certificate's extensions and names into Python objects all at once, and
for a leaf that costs more than checking its signature: in a batch of thousands of leaves
(``verify --each``) it was most of the time spent outside the signature check. The verifier
needs little of it: the subjectAltName's DNS names and IP addresses, whether an extended key usage
names serverAuth, whether the subject will decode when a report shows it, and whether the key is
a valid point on a curve phones accept (OpenSSL takes longer to load an EC key than to check that).

:func:`leaf_facts` reads those from the DER, exactly or not at all. Anything it was not written
for (a string type other than UTF8String, PrintableString or IA5String, a multi-valued RDN, a SAN
entry that is neither a DNS name nor an IP address, an extension present twice, a long tag or
length) makes it return None, and the caller asks cryptography, as it always did. Its answers
never decide validity on their own: cryptography's verifier parses the same fields again, strictly,
when it checks the leaf, and only a leaf it accepts is judged on these facts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["LeafFacts", "leaf_facts"]

_SEQUENCE, _SET, _OID, _OCTET_STRING, _BOOLEAN = 0x30, 0x31, 0x06, 0x04, 0x01
_VERSION, _ISSUER_UID, _SUBJECT_UID, _EXTENSIONS = 0xA0, 0x81, 0x82, 0xA3
_DNS_NAME, _IP_ADDRESS = 0x82, 0x87  # [2] IA5String and [7] OCTET STRING, implicitly tagged
# the string types whose value cryptography decodes as UTF-8 into a name attribute
_PLAIN_STRINGS = frozenset({0x0C, 0x13, 0x16})  # UTF8String, PrintableString, IA5String

_SAN = bytes.fromhex("551d11")  # 2.5.29.17
_EKU = bytes.fromhex("551d25")  # 2.5.29.37
_SERVER_AUTH = bytes.fromhex("2b06010505070301")  # 1.3.6.1.5.5.7.3.1
# attributes whose value cryptography checks when it builds the name: (least, most) UTF-8 bytes
# (outside them it warns, and the caller's own path should be the one to do so)
_LENGTH_LIMITS = {
    bytes.fromhex("550406"): (2, 2),  # countryName
    bytes.fromhex("2b0601040182373c020103"): (2, 2),  # jurisdictionCountryName
    bytes.fromhex("550403"): (1, 64),  # commonName
}
_UNIQUE_IDENTIFIER = bytes.fromhex("55042d")  # x500UniqueIdentifier: a BIT STRING, not text
_BIT_STRING = 0x03


@dataclass(frozen=True, slots=True)
class _Curve:
    """A NIST prime curve y^2 = x^3 - 3x + b over GF(p) (FIPS 186-4 D.1.2), points of ``size`` bytes a coordinate."""

    name: str  # as cryptography names it
    p: int
    b: int
    size: int

    def holds(self, x: int, y: int) -> bool:
        # the curves have cofactor 1: a point on the curve is a valid public key
        p = self.p
        return x < p and y < p and (y * y - (x * x - 3) * x - self.b) % p == 0


# the subjectPublicKeyInfo algorithm (id-ecPublicKey with a named curve), encoded whole, and its curve
_EC_KEYS = {
    bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107"): _Curve(
        "secp256r1",
        2**256 - 2**224 + 2**192 + 2**96 - 1,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        32,
    ),
    bytes.fromhex("301006072a8648ce3d020106052b81040022"): _Curve(
        "secp384r1",
        2**384 - 2**128 - 2**96 + 2**32 - 1,
        0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
        48,
    ),
    bytes.fromhex("301006072a8648ce3d020106052b81040023"): _Curve(
        "secp521r1",
        2**521 - 1,
        0x0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF109E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00,
        66,
    ),
}


@dataclass(frozen=True, slots=True)
class LeafFacts:
    """The parts of a leaf the verifier looks at, as cryptography would decode them."""

    dns_names: tuple[str, ...]  # the subjectAltName's DNS names, in order
    ip_addresses: tuple[bytes, ...]  # its IP addresses, 4 or 16 bytes each, in order
    server_auth: bool  # an extended key usage is present and names serverAuth
    # the named curve of the subject's key when it is a valid point on P-256, P-384 or P-521; None
    # for any other key (RSA, another curve, a damaged point), which the caller decodes itself
    ec_curve: str | None = None

    def ip_texts(self) -> list[str]:
        return [str(ipaddress.ip_address(raw)) for raw in self.ip_addresses]


class _Abstain(Exception):
    """The DER holds something :func:`leaf_facts` does not read; cryptography will."""


def _tlv(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the element at ``pos``, inside ``end``.

    The tags it is asked about are all one byte; a multi-byte tag reads as a tag no caller
    accepts. Reading past the end of ``der`` raises IndexError, which abstains too.
    """
    length = der[pos + 1]
    if length < 0x80:
        stop = pos + 2 + length
        if stop > end:
            raise _Abstain
        return der[pos], pos + 2, stop
    if length == 0x81:
        start = pos + 3
        stop = start + der[pos + 2]
    elif length == 0x82:
        start = pos + 4
        stop = start + (der[pos + 2] << 8 | der[pos + 3])
    else:  # indefinite, or 64 KiB or more: not a leaf this reads
        raise _Abstain
    if stop > end:
        raise _Abstain
    return der[pos], start, stop


def _skip(der: bytes, pos: int, end: int, count: int) -> int:
    """Where the element ``count`` elements after the one at ``pos`` starts: :func:`_tlv` in one call."""
    for _ in range(count):
        length = der[pos + 1]
        if length < 0x80:
            pos += 2 + length
        else:
            pos = _tlv(der, pos, end)[2]
    if pos > end:
        raise _Abstain
    return pos


def leaf_facts(der: bytes) -> LeafFacts | None:
    """The facts of the certificate (or TBSCertificate) ``der``; None when it holds anything unusual.

    ``der`` must be the encoding of a certificate cryptography has loaded: this reads its shape,
    it does not check it. A LeafFacts also says that the subject name decodes.
    """
    try:
        return _facts(der)
    except (_Abstain, IndexError, UnicodeDecodeError):
        return None


def _facts(der: bytes) -> LeafFacts:
    tag, start, end = _tlv(der, 0, len(der))
    if tag != _SEQUENCE:
        raise _Abstain
    tag, pos, tbs_end = _tlv(der, start, end)
    if tag == _SEQUENCE:  # a whole certificate: step into its TBSCertificate
        start, end = pos, tbs_end
    # [0] version, serial number, signature algorithm, issuer, validity
    pos = _skip(der, start, end, 5 if der[start] == _VERSION else 4)
    tag, subject, pos = _tlv(der, pos, end)
    if tag != _SEQUENCE:
        raise _Abstain
    _check_name(der, subject, pos)
    tag, spki, pos = _tlv(der, pos, end)
    if tag != _SEQUENCE:
        raise _Abstain
    ec_curve = _ec_curve(der, spki, pos)
    dns: list[str] = []
    ips: list[bytes] = []
    server_auth = False
    while pos < end:
        tag, start, pos = _tlv(der, pos, end)
        if tag in (_ISSUER_UID, _SUBJECT_UID):
            continue
        if tag != _EXTENSIONS:
            raise _Abstain
        tag, ext, exts_end = _tlv(der, start, pos)
        if tag != _SEQUENCE or exts_end != pos:
            raise _Abstain
        seen: set[bytes] = set()
        while ext < exts_end:
            # most extensions are short: their header is read here rather than by a call of _tlv
            tag, length = der[ext], der[ext + 1]
            if length < 0x80:
                field, ext = ext + 2, ext + 2 + length
            else:
                tag, field, ext = _tlv(der, ext, exts_end)
            oid_end = field + 2 + der[field + 1]
            oid = der[field + 2 : oid_end]
            # cryptography refuses a certificate with an extension twice
            if tag != _SEQUENCE or ext > exts_end or der[field] != _OID or oid_end > ext or oid in seen:
                raise _Abstain
            seen.add(oid)
            if oid in (_SAN, _EKU):
                tag, value, value_end = _tlv(der, oid_end, ext)
                if tag == _BOOLEAN:  # critical
                    tag, value, value_end = _tlv(der, value_end, ext)
                if tag != _OCTET_STRING or value_end != ext:
                    raise _Abstain
                if oid == _SAN:
                    _read_san(der, value, value_end, dns, ips)
                else:
                    server_auth = _names_server_auth(der, value, value_end)
    return LeafFacts(tuple(dns), tuple(ips), server_auth, ec_curve)


def _check_name(der: bytes, pos: int, end: int) -> None:
    """Abstain unless every attribute of the Name at ``pos`` decodes as cryptography decodes it."""
    while pos < end:
        # SET { SEQUENCE { OID, value } }: one attribute in the RDN, every length in one byte, which
        # is how names are written; anything else is left to cryptography
        rdn_end = pos + 2 + der[pos + 1]
        oid_start = pos + 6
        value_pos = oid_start + der[pos + 5]
        value = value_pos + 2
        value_end = value + der[value_pos + 1]
        if (
            der[pos] != _SET
            or der[pos + 2] != _SEQUENCE
            or der[pos + 4] != _OID
            or der[value_pos] not in _PLAIN_STRINGS
            or value_end != rdn_end
            or rdn_end != pos + 4 + der[pos + 3]
            or rdn_end > end
            or (der[pos + 1] | der[pos + 3] | der[pos + 5] | der[value_pos + 1]) & 0x80
        ):
            raise _Abstain
        oid = der[oid_start:value_pos]
        der[value:value_end].decode("utf-8")  # strict, as cryptography is
        limits = _LENGTH_LIMITS.get(oid)
        if oid == _UNIQUE_IDENTIFIER or (limits is not None and not limits[0] <= value_end - value <= limits[1]):
            raise _Abstain
        pos = rdn_end


def _ec_curve(der: bytes, pos: int, end: int) -> str | None:
    """The curve of the subjectPublicKeyInfo at ``pos`` when it holds a valid uncompressed point
    on one of :data:`_EC_KEYS`; None otherwise, for cryptography to decode."""
    _, _, algorithm_end = _tlv(der, pos, end)
    curve = _EC_KEYS.get(der[pos:algorithm_end])
    if curve is None:
        return None
    tag, bits, bits_end = _tlv(der, algorithm_end, end)
    size = curve.size
    # no unused bits, then 0x04 (uncompressed) and the two coordinates
    if tag != _BIT_STRING or bits_end != end or bits_end - bits != 2 + 2 * size or der[bits : bits + 2] != b"\x00\x04":
        return None
    x = int.from_bytes(der[bits + 2 : bits + 2 + size], "big")
    y = int.from_bytes(der[bits + 2 + size : bits_end], "big")
    return curve.name if curve.holds(x, y) else None


def _read_san(der: bytes, pos: int, end: int, dns: list[str], ips: list[bytes]) -> None:
    tag, pos, names_end = _tlv(der, pos, end)
    if tag != _SEQUENCE or names_end != end or pos == names_end:
        raise _Abstain
    while pos < names_end:
        # a name is short: its header is read here rather than by a call of _tlv
        tag, length = der[pos], der[pos + 1]
        if length < 0x80:
            value, pos = pos + 2, pos + 2 + length
            if pos > names_end:
                raise _Abstain
        else:
            tag, value, pos = _tlv(der, pos, names_end)
        if tag == _DNS_NAME:
            dns.append(der[value:pos].decode("utf-8"))
        elif tag == _IP_ADDRESS and pos - value in (4, 16):
            ips.append(der[value:pos])
        else:
            raise _Abstain


def _names_server_auth(der: bytes, pos: int, end: int) -> bool:
    tag, pos, usages_end = _tlv(der, pos, end)
    if tag != _SEQUENCE or usages_end != end or pos == usages_end:
        raise _Abstain
    found = False
    while pos < usages_end:
        # an OID of a usage is short, and so read here (a long length abstains)
        length = der[pos + 1]
        value, pos = pos + 2, pos + 2 + length
        if der[value - 2] != _OID or length >= 0x80 or pos > usages_end:
            raise _Abstain
        found = found or der[value:pos] == _SERVER_AUTH
    return found
