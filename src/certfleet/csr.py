"""Certificate signing requests: the subject fields, building one for a key and names, reading one back."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from certfleet import extensions
from certfleet.certinfo import NAME_ERRORS, cert_public_key, key_type, other_names
from certfleet.errors import InputError, LimitError
from certfleet.keys import public_key_id, require_web_key
from certfleet.names import check_wildcard, is_ip, normalize_name, normalize_names

__all__ = ["CsrInfo", "Subject", "build_csr", "describe_csr"]

# RFC 5280 upper bounds (ub-common-name and friends), which CAs enforce
_LIMITS = {
    "state": 128,
    "locality": 128,
    "organization": 64,
    "organizational_unit": 64,
    "common_name": 64,
}
_OIDS = {
    "country": NameOID.COUNTRY_NAME,
    "state": NameOID.STATE_OR_PROVINCE_NAME,
    "locality": NameOID.LOCALITY_NAME,
    "organization": NameOID.ORGANIZATION_NAME,
    "organizational_unit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "common_name": NameOID.COMMON_NAME,
}
_KEYS = {
    "c": "country",
    "countryname": "country",
    "st": "state",
    "s": "state",
    "stateorprovincename": "state",
    "l": "locality",
    "localityname": "locality",
    "o": "organization",
    "organizationname": "organization",
    "ou": "organizational_unit",
    "organizationalunitname": "organizational_unit",
    "cn": "common_name",
    "commonname": "common_name",
}
_SHORT = {
    "country": "C",
    "state": "ST",
    "locality": "L",
    "organization": "O",
    "organizational_unit": "OU",
    "common_name": "CN",
}
_MAX_SUBJECT_CHARS = 2048


@dataclass(frozen=True, slots=True)
class Subject:
    """The distinguished name of a CSR; every field is optional and blank means absent."""

    country: str | None = None  # two letters, ISO 3166 (CA, DE, US)
    state: str | None = None
    locality: str | None = None
    organization: str | None = None
    organizational_unit: str | None = None
    common_name: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(f"Subject.{f.name} is a str")
            value = value.strip()
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise InputError(f"subject field {_SHORT[f.name]} holds a control character")
            if f.name == "country" and value:
                if len(value) != 2 or not (value.isascii() and value.isalpha()):
                    raise InputError(
                        f"country {value!r} is not a two-letter country code",
                        hint="use the ISO 3166 code, e.g. C=CA or C=DE",
                    )
                value = value.upper()
            limit = _LIMITS.get(f.name)
            if limit is not None and len(value) > limit:
                raise InputError(
                    f"subject field {_SHORT[f.name]} is {len(value)} characters long; CAs allow at most {limit}"
                )
            object.__setattr__(self, f.name, value or None)

    @classmethod
    def parse(cls, text: str) -> Subject:
        """Read ``C=CA,ST=Ontario,L=Ottawa,O=Example,CN=www.example.com`` or the openssl form
        ``/C=CA/O=Example/CN=www.example.com``. A backslash escapes the next character."""
        if len(text) > _MAX_SUBJECT_CHARS:
            raise LimitError(f"a subject of {len(text)} characters is too long")
        body = text.strip()
        sep = ","
        if body.startswith("/"):
            sep, body = "/", body[1:]
        values: dict[str, str] = {}
        for part in _split(body, sep):
            if not part.strip():
                continue
            key, eq, value = part.partition("=")
            field_name = _KEYS.get(key.strip().lower())
            if not eq or field_name is None:
                raise InputError(
                    f"subject part {part.strip()!r} is not one of C=, ST=, L=, O=, OU=, CN=",
                    hint="write the subject as C=CA,ST=Ontario,L=Ottawa,O=Example,CN=www.example.com",
                )
            if field_name in values:
                raise InputError(f"subject field {_SHORT[field_name]} is given twice")
            values[field_name] = value
        return cls(**values)

    def to_name(self) -> x509.Name:
        return x509.Name(
            [x509.NameAttribute(_OIDS[f.name], v) for f in fields(self) if (v := getattr(self, f.name)) is not None]
        )

    def to_dict(self) -> dict[str, str | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __str__(self) -> str:
        return ",".join(
            f"{_SHORT[f.name]}={_escape(v)}" for f in fields(self) if (v := getattr(self, f.name)) is not None
        )


def _split(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for c in chars:
        if c == "\\":
            current.append(next(chars, ""))
        elif c == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


def _escape(value: str) -> str:
    return "".join("\\" + c if c in ",\\/" else c for c in value)


def build_csr(
    key: PrivateKeyTypes, names: Iterable[str], subject: Subject | None = None
) -> x509.CertificateSigningRequest:
    """A CSR for ``key`` with ``names`` (DNS names, wildcards, IP addresses) as SANs, signed with SHA-256.

    Names are normalized (A-labels, lowercase). The common name defaults to the first DNS name
    (the first IP when there is none); a common name given in ``subject`` must itself be a name
    and is added to the SANs when missing, as public CAs require.
    """
    web_key = require_web_key(key)
    subject = subject or Subject()
    sans = normalize_names(names)
    cn = subject.common_name
    if cn is not None:
        try:
            cn_name = normalize_name(cn)
        except InputError as exc:
            raise InputError(
                f"the common name {cn!r} is not a DNS name or IP address ({exc.message})",
                hint="public CAs require the common name to be one of the certificate's names",
            ) from exc
        if cn_name.startswith("*."):
            check_wildcard(cn_name)
        if cn_name not in sans:
            sans.insert(0, cn_name)
        cn = cn_name
    if not sans:
        raise InputError("a CSR needs at least one name", hint="give the DNS names or IP addresses to cover")
    if cn is None:
        dns = [n for n in sans if not is_ip(n)]
        cn = next((n for n in (dns or sans) if len(n) <= _LIMITS["common_name"]), None)
    elif len(cn) > _LIMITS["common_name"]:
        raise InputError(f"the common name is {len(cn)} characters long; CAs allow at most 64")
    fields_ = {f.name: getattr(subject, f.name) for f in fields(subject)}
    fields_["common_name"] = cn
    general: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(n)) if is_ip(n) else x509.DNSName(n) for n in sans
    ]
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(Subject(**fields_).to_name())
        .add_extension(x509.SubjectAlternativeName(general), critical=False)
    )
    return builder.sign(web_key, hashes.SHA256())


@dataclass(frozen=True, slots=True)
class CsrInfo:
    subject: str
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    key_type: str
    public_key_id: str
    signature_algorithm: str
    signature_valid: bool
    # subjectAltName entries beyond DNS names and IP addresses (email, URI, x400Address...)
    other_names: tuple[str, ...] = ()
    # extensions that do not decode, or appear twice: a CA refuses such a request
    faults: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "common_name": self.common_name,
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "key_type": self.key_type,
            "public_key_id": self.public_key_id,
            "signature_algorithm": self.signature_algorithm,
            "signature_valid": self.signature_valid,
            "other_names": list(self.other_names),
            "faults": list(self.faults),
        }


def describe_csr(csr: x509.CertificateSigningRequest) -> CsrInfo:
    """What a CSR asks for, as plain data. A CSR from anywhere may be odd; this never raises for it."""
    found = extensions.decoded(csr)
    san = found.find(x509.SubjectAlternativeName)
    dns = tuple(str(n) for n in san.value.get_values_for_type(x509.DNSName)) if san is not None else ()
    ips = tuple(str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)) if san is not None else ()
    try:
        subject = csr.subject.rfc4514_string()
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        raw_cn = cns[0].value if cns else None
        cn = raw_cn.decode("utf-8", "replace") if isinstance(raw_cn, bytes) else raw_cn
    except NAME_ERRORS:
        subject, cn = "unreadable subject", None
    public = cert_public_key(csr)
    ktype, kid = (key_type(public), public_key_id(public)) if public is not None else ("unknown", "")
    oid = csr.signature_algorithm_oid
    algorithm = oid._name if oid._name and oid._name != "Unknown OID" else oid.dotted_string
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm):
        valid = False
    return CsrInfo(
        subject=subject,
        common_name=cn,
        dns_names=dns,
        ip_addresses=ips,
        key_type=ktype,
        public_key_id=kid,
        signature_algorithm=algorithm,
        signature_valid=valid,
        other_names=other_names(csr),
        faults=found.faults,
    )
