"""A throw-away PKI for tests, benchmarks and demos: roots, intermediates, leaves, CSR signing.

Everything is made in memory at run time; nothing here is fit for production and every key it
makes is plainly a test key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, CertificatePublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

__all__ = ["TestCA", "TestLeaf", "general_names", "make_key", "pem"]

# an extension to add to a test certificate, and whether it is critical
Extra = tuple[x509.ExtensionType, bool]


def make_key(spec: str = "ec:p256") -> CertificateIssuerPrivateKeyTypes:
    """``rsa:2048``, ``rsa:1024``, ``ec:p256``, ``ec:p384``, ``ec:p521``, ``ed25519``."""
    kind, _, size = spec.partition(":")
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(size or 2048))
    if kind == "ec":
        curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[size or "p256"]
        return ec.generate_private_key(curve)
    if kind == "ed25519":
        from cryptography.hazmat.primitives.asymmetric import ed25519

        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key spec {spec!r}")


def pem(*items: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return b"".join(i.public_bytes(serialization.Encoding.PEM) for i in items)


def _name(cn: str, org: str | None = "certfleet tests") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


_WEAK_RSA_OIDS = {"sha1": "1.2.840.113549.1.1.5", "md5": "1.2.840.113549.1.1.4"}
_SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")  # DER of OID 1.2.840.113549.1.1.11


def _sign(
    builder: x509.CertificateBuilder,
    key: CertificateIssuerPrivateKeyTypes,
    algorithm: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    """Sign ``builder``; SHA-1 and MD5 (refused by cryptography) are made by re-signing the TBS.

    Tests need weakly signed certificates to prove that lint finds them. The RSA signature has the
    same length whatever the hash, and the OIDs of sha256/sha1/md5WithRSAEncryption have the same
    length, so the DER is patched in place.
    """
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519, padding

    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return builder.sign(key, None)
    if algorithm is None or algorithm.name not in _WEAK_RSA_OIDS:
        return builder.sign(key, algorithm or hashes.SHA256())  # type: ignore[arg-type]
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("weak signature test certificates need an RSA issuer key")
    cert = builder.sign(key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    last = int(_WEAK_RSA_OIDS[algorithm.name].rsplit(".", 1)[1])
    weak_oid = _SHA256_RSA[:-1] + bytes([last])
    tbs = cert.tbs_certificate_bytes.replace(_SHA256_RSA, weak_oid)
    signature = key.sign(tbs, padding.PKCS1v15(), algorithm)
    patched = der.replace(cert.tbs_certificate_bytes, tbs).replace(_SHA256_RSA, weak_oid)
    patched = patched.replace(cert.signature, signature)
    return x509.load_der_x509_certificate(patched)


@dataclass
class TestLeaf:
    __test__ = False  # a fixture type, not a pytest test class
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    chain: list[x509.Certificate]  # intermediates, leaf's issuer first; the root is not included

    def key_pem(self, password: bytes | None = None) -> bytes:
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)

    def cert_pem(self) -> bytes:
        return pem(self.cert)

    def chain_pem(self) -> bytes:
        return pem(*self.chain)

    def fullchain_pem(self) -> bytes:
        return pem(self.cert, *self.chain)


@dataclass
class TestCA:
    """A CA (root, or intermediate when ``parent`` is set) that issues what tests need."""

    __test__ = False  # a fixture type, not a pytest test class

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    parent: TestCA | None = None
    _serial: int = field(default=1000, repr=False)

    @classmethod
    def root(
        cls,
        cn: str = "certfleet Test Root",
        *,
        key: str = "ec:p256",
        days: int = 3650,
        not_before: dt.datetime | None = None,
        hash_alg: hashes.HashAlgorithm | None = None,
        extensions: Sequence[Extra] = (),
    ) -> TestCA:
        """A self-signed root; ``extensions`` adds (extension, critical) pairs, e.g. name constraints."""
        pkey = make_key(key)
        name = _name(cn)
        builder = _ca_builder(
            name,
            name,
            pkey,
            serial=x509.random_serial_number(),
            not_before=not_before,
            days=days,
            path_length=None,
            extensions=extensions,
        )
        return cls(cert=_sign(builder, pkey, hash_alg), key=pkey)

    @property
    def chain(self) -> list[x509.Certificate]:
        """This CA and its parents up to, not including, the root."""
        out: list[x509.Certificate] = []
        ca: TestCA | None = self
        while ca is not None and ca.parent is not None:
            out.append(ca.cert)
            ca = ca.parent
        return out

    @property
    def root_cert(self) -> x509.Certificate:
        ca = self
        while ca.parent is not None:
            ca = ca.parent
        return ca.cert

    def _next_serial(self) -> int:
        self._serial += 1
        return (x509.random_serial_number() >> 32 << 32) | self._serial

    def intermediate(
        self,
        cn: str = "certfleet Test Intermediate",
        *,
        key: str = "ec:p256",
        days: int = 1825,
        path_length: int | None = 0,
        hash_alg: hashes.HashAlgorithm | None = None,
        aia_url: str | None = None,
        not_before: dt.datetime | None = None,
        extensions: Sequence[Extra] = (),
    ) -> TestCA:
        """An intermediate CA issued by this one; ``extensions`` as for :meth:`root`."""
        pkey = make_key(key)
        extra = [*extensions, (_aia(aia_url), False)] if aia_url else extensions
        builder = self._issue_ca(
            _name(cn), pkey, not_before=not_before, days=days, path_length=path_length, extensions=extra
        )
        return TestCA(cert=_sign(builder, self.key, hash_alg), key=pkey, parent=self)

    def cross_sign(self, other: TestCA, *, days: int = 1825) -> x509.Certificate:
        """A certificate for ``other``'s subject and key, issued by this CA (a cross-sign)."""
        builder = self._issue_ca(other.cert.subject, other.key, not_before=None, days=days, path_length=None)
        return _sign(builder, self.key)

    def _issue_ca(
        self,
        subject: x509.Name,
        key: CertificateIssuerPrivateKeyTypes,
        *,
        not_before: dt.datetime | None,
        days: int,
        path_length: int | None,
        extensions: Sequence[Extra] = (),
    ) -> x509.CertificateBuilder:
        return _ca_builder(
            subject,
            self.cert.subject,
            key,
            serial=self._next_serial(),
            not_before=not_before,
            days=days,
            path_length=path_length,
            extensions=[(_aki(self.key), False), *extensions],
        )

    def _issue_end_entity(
        self, subject: x509.Name, public_key: CertificatePublicKeyTypes, not_before: dt.datetime | None, days: int
    ) -> x509.CertificateBuilder:
        start = not_before or _now() - dt.timedelta(hours=1)
        return (
            _builder(subject, self.cert.subject, public_key, serial=self._next_serial(), start=start, days=days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_aki(self.key), critical=False)
        )

    def leaf(
        self,
        *names: str,
        key: str = "ec:p256",
        days: int = 90,
        not_before: dt.datetime | None = None,
        hash_alg: hashes.HashAlgorithm | None = None,
        common_name: str | None = None,
        san: bool = True,
        server_auth: bool = True,
        aia_url: str | None = None,
        private_key: CertificateIssuerPrivateKeyTypes | None = None,
    ) -> TestLeaf:
        """A server certificate for ``names`` (DNS names or IP addresses)."""
        pkey = private_key or make_key(key)
        cn = common_name if common_name is not None else (names[0] if names else "leaf")
        builder = self._issue_end_entity(_name(cn, org=None), pkey.public_key(), not_before, days)
        if san and names:
            builder = builder.add_extension(x509.SubjectAlternativeName(general_names(names)), critical=False)
        if server_auth:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        if aia_url:
            builder = builder.add_extension(_aia(aia_url), critical=False)
        cert = _sign(builder, self.key, hash_alg)
        return TestLeaf(cert=cert, key=pkey, chain=self.chain)

    def sign_csr(
        self, csr: x509.CertificateSigningRequest, *, days: int = 90, not_before: dt.datetime | None = None
    ) -> x509.Certificate:
        """Issue a server certificate for a CSR, as a CA would: subject and SANs from the request."""
        builder = self._issue_end_entity(csr.subject, csr.public_key(), not_before, days).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            builder = builder.add_extension(san, critical=False)
        except x509.ExtensionNotFound:
            pass
        return _sign(builder, self.key)

    def cert_pem(self) -> bytes:
        return pem(self.cert)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    *,
    serial: int,
    start: dt.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: CertificateIssuerPrivateKeyTypes,
    *,
    serial: int,
    not_before: dt.datetime | None,
    days: int,
    path_length: int | None,
    extensions: Sequence[Extra],
) -> x509.CertificateBuilder:
    start = not_before or _now() - dt.timedelta(days=1)
    builder = (
        _builder(subject, issuer, key.public_key(), serial=serial, start=start, days=days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder


def general_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries for ``names``: an IP address where one parses, else a DNS name."""
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer_key: CertificateIssuerPrivateKeyTypes) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())


def _aia(url: str) -> x509.AuthorityInformationAccess:
    return x509.AuthorityInformationAccess(
        [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))]
    )
