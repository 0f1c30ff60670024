"""Writing every format, as bytes: PEM, DER, PKCS#7, PKCS#12 and the server file layouts.

Nothing here touches a file; ``certfleet.fsutil`` writes what this returns. A chain is always the
intermediates only, the leaf's issuer first, the root left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7 as _pkcs7
from cryptography.hazmat.primitives.serialization import pkcs12 as _pkcs12

from certfleet.errors import InputError
from certfleet.keys import key_matches

__all__ = [
    "PKCS12_LEGACY_ROUNDS",
    "PKCS12_ROUNDS",
    "LayoutKind",
    "der",
    "key_pem",
    "layout_files",
    "pem",
    "pkcs7",
    "pkcs12",
    "private_files",
]

# PBKDF2-SHA256 rounds for a modern PKCS#12: well above OpenSSL's 2048, yet quick to open once
PKCS12_ROUNDS = 100_000
# the legacy SHA-1 KDF: Java keytool's own count, which Windows Server 2016 and old Java accept
PKCS12_LEGACY_ROUNDS = 10_000
_MAX_FRIENDLY_NAME = 128
_MAX_PASSWORD = 1024


class LayoutKind(StrEnum):
    """The sets of PEM files web servers read."""

    APACHE = "apache"  # cert.pem, chain.pem, privkey.pem
    NGINX = "nginx"  # fullchain.pem, privkey.pem
    PEM = "pem"  # cert.pem, chain.pem, fullchain.pem, privkey.pem
    HAPROXY = "haproxy"  # combined.pem: leaf, chain, key


_PRIVATE_FILES = {
    LayoutKind.APACHE: frozenset({"privkey.pem"}),
    LayoutKind.NGINX: frozenset({"privkey.pem"}),
    LayoutKind.PEM: frozenset({"privkey.pem"}),
    LayoutKind.HAPROXY: frozenset({"combined.pem"}),
}


def pem(*certs: x509.Certificate) -> bytes:
    """Certificates as concatenated PEM blocks, in the order given."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _password(password: bytes | None, what: str) -> bytes | None:
    if password is None:
        return None
    if not isinstance(password, bytes):
        raise TypeError("a password is bytes")
    if not password:
        raise InputError(f"an empty password cannot protect {what}", hint="give a password, or none at all")
    if len(password) > _MAX_PASSWORD:
        raise InputError(f"a password longer than {_MAX_PASSWORD} bytes is not accepted")
    return password


def key_pem(key: PrivateKeyTypes, password: bytes | None = None) -> bytes:
    """The key as PKCS#8 PEM; with a password, encrypted (PBES2, PBKDF2-SHA256, AES-256-CBC)."""
    pw = _password(password, "a key")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(pw) if pw is not None else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def pkcs7(certs: Sequence[x509.Certificate], *, der: bool = False) -> bytes:
    """A certs-only PKCS#7 bundle (``.p7b``), PEM unless ``der``.

    PKCS#7 holds its certificates as a SET OF, which DER sorts: the order given is not kept, and
    readers must build the chain themselves (as every reader of ``.p7b`` files does).
    """
    if not certs:
        raise ValueError("a PKCS#7 bundle needs at least one certificate")
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    return _pkcs7.serialize_certificates(list(certs), encoding)


def _check_pair(key: PrivateKeyTypes, leaf: x509.Certificate) -> None:
    # a file that pairs a certificate with the wrong key fails only when a server loads it; stop here
    if not key_matches(key, leaf):
        raise InputError(
            "the private key does not match the certificate: it was issued for another key or CSR",
            hint="give the key whose CSR was sent to the CA",
        )


def pkcs12(
    key: PrivateKeyTypes,
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    password: bytes | None,
    legacy: bool = False,
    friendly_name: str | None = None,
) -> bytes:
    """A PKCS#12 (``.pfx``/``.p12``) holding the key, the leaf and the chain.

    Modern: PBES2 with PBKDF2-SHA256 and AES-256-CBC, HMAC-SHA256 MAC. ``legacy``:
    pbeWithSHA1And3-KeyTripleDES-CBC with an HMAC-SHA1 MAC, what Windows Server 2016 and old Java
    accept. ``friendly_name`` becomes the alias Java's keytool and Windows show. With no password
    the file is neither encrypted nor MACed.
    """
    _check_pair(key, leaf)
    name: bytes | None = None
    if friendly_name is not None:
        if not friendly_name.strip() or len(friendly_name) > _MAX_FRIENDLY_NAME:
            raise InputError(f"a friendly name must hold 1 to {_MAX_FRIENDLY_NAME} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in friendly_name):
            raise InputError("a friendly name must not hold control characters")
        name = friendly_name.encode("utf-8")
    pw = _password(password, "a PKCS#12 file")
    encryption: serialization.KeySerializationEncryption
    if pw is None:
        encryption = serialization.NoEncryption()
    elif legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(PKCS12_LEGACY_ROUNDS)
            .key_cert_algorithm(_pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 (the MAC old Windows and Java can check)
            .build(pw)
        )
    else:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(PKCS12_ROUNDS)
            .key_cert_algorithm(_pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(pw)
        )
    return _pkcs12.serialize_key_and_certificates(
        name,
        key,  # type: ignore[arg-type]
        leaf,
        list(chain) or None,
        encryption,
    )


def private_files(kind: LayoutKind | str) -> frozenset[str]:
    """The files of layout ``kind`` that hold the private key: write them 0600."""
    return _PRIVATE_FILES[LayoutKind(kind)]


def layout_files(
    kind: LayoutKind | str,
    key: PrivateKeyTypes,
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    key_password: bytes | None = None,
) -> dict[str, bytes]:
    """The files a server of ``kind`` reads, by file name.

    apache: cert.pem, chain.pem, privkey.pem; nginx: fullchain.pem, privkey.pem; pem: all four;
    haproxy: combined.pem (leaf, chain, key). ``chain.pem`` is empty when the leaf was issued by the
    root itself. HAProxy cannot read an encrypted key, so ``key_password`` is refused for it.
    """
    layout = LayoutKind(kind)
    _check_pair(key, leaf)
    if layout is LayoutKind.HAPROXY and key_password is not None:
        raise InputError(
            "HAProxy cannot read an encrypted key, so combined.pem holds it in the clear",
            hint="leave out the key password for the haproxy layout; the file is written 0600",
        )
    private = key_pem(key, key_password)
    cert, intermediates = pem(leaf), pem(*chain)
    if layout is LayoutKind.APACHE:
        return {"cert.pem": cert, "chain.pem": intermediates, "privkey.pem": private}
    if layout is LayoutKind.NGINX:
        return {"fullchain.pem": cert + intermediates, "privkey.pem": private}
    if layout is LayoutKind.PEM:
        return {
            "cert.pem": cert,
            "chain.pem": intermediates,
            "fullchain.pem": cert + intermediates,
            "privkey.pem": private,
        }
    return {"combined.pem": cert + intermediates + private}
