"""Writing every format: PEM, DER, PKCS#7, PKCS#12 and the server file layouts.

The format functions return bytes and touch no file. :func:`write_bundle` is the one way a key
and its chain become files (``convert`` and ``export`` both call it); it writes through
``certfleet.fsutil``, so a file is whole or absent and one holding the key is 0600 from birth.
A chain is always the intermediates only, the leaf's issuer first, the root left out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7 as _pkcs7
from cryptography.hazmat.primitives.serialization import pkcs12 as _pkcs12

from certfleet import fsutil
from certfleet.certinfo import key_type
from certfleet.errors import InputError
from certfleet.keys import key_matches, public_key_id

if TYPE_CHECKING:
    from certfleet.csr import CsrInfo
    from certfleet.names import NamePlan

__all__ = [
    "LAYOUTS",
    "PKCS12_LEGACY_ROUNDS",
    "PKCS12_ROUNDS",
    "CsrWritten",
    "KeyWritten",
    "OutputFormat",
    "WrittenFile",
    "check_bundle",
    "der",
    "key_pem",
    "layout_files",
    "pem",
    "pkcs7",
    "pkcs12",
    "private_files",
    "write_bundle",
    "write_csr",
    "write_key",
]

# PBKDF2-SHA256 rounds for a modern PKCS#12: well above OpenSSL's 2048, yet quick to open once
PKCS12_ROUNDS = 100_000
# the legacy SHA-1 KDF: Java keytool's own count, which Windows Server 2016 and old Java accept
PKCS12_LEGACY_ROUNDS = 10_000
_MAX_FRIENDLY_NAME = 128
_MAX_PASSWORD = 1024


class OutputFormat(StrEnum):
    """Every format certfleet writes, as ``convert --to`` and ``export --format`` name it."""

    PEM = "pem"  # a folder: cert.pem, chain.pem, fullchain.pem, privkey.pem
    DER = "der"  # one file: the leaf
    PKCS7 = "pkcs7"  # one file: the leaf and its chain (.p7b)
    PKCS12 = "pkcs12"  # one file: key, leaf and chain (.pfx)
    APACHE = "apache"  # a folder: cert.pem, chain.pem, privkey.pem
    NGINX = "nginx"  # a folder: fullchain.pem, privkey.pem
    HAPROXY = "haproxy"  # one file: leaf, chain, then the key (what `bind ... ssl crt` names)

    @property
    def holds_key(self) -> bool:
        return self not in {OutputFormat.DER, OutputFormat.PKCS7}

    @property
    def is_folder(self) -> bool:
        """Written as a folder of files (the others are one file)."""
        return self in {OutputFormat.PEM, OutputFormat.APACHE, OutputFormat.NGINX}


# the sets of PEM files web servers read (a deploy target writes each into a version folder)
LAYOUTS = (OutputFormat.APACHE, OutputFormat.NGINX, OutputFormat.PEM, OutputFormat.HAPROXY)

_PRIVATE_FILES = {
    OutputFormat.APACHE: frozenset({"privkey.pem"}),
    OutputFormat.NGINX: frozenset({"privkey.pem"}),
    OutputFormat.PEM: frozenset({"privkey.pem"}),
    OutputFormat.HAPROXY: frozenset({"combined.pem"}),
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


def _layout(kind: OutputFormat | str) -> OutputFormat:
    layout = OutputFormat(kind)
    if layout not in _PRIVATE_FILES:
        raise ValueError(f"{layout.value} is not a server layout of PEM files")
    return layout


def private_files(kind: OutputFormat | str) -> frozenset[str]:
    """The files of layout ``kind`` that hold the private key: write them 0600."""
    return _PRIVATE_FILES[_layout(kind)]


def _no_haproxy_password() -> InputError:
    return InputError(
        "HAProxy cannot read an encrypted key, so combined.pem holds it in the clear",
        hint="leave out the key password for the haproxy layout; the file is written 0600",
    )


def layout_files(
    kind: OutputFormat | str,
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
    layout = _layout(kind)
    _check_pair(key, leaf)
    if layout is OutputFormat.HAPROXY and key_password is not None:
        raise _no_haproxy_password()
    private = key_pem(key, key_password)
    cert, intermediates = pem(leaf), pem(*chain)
    if layout is OutputFormat.APACHE:
        return {"cert.pem": cert, "chain.pem": intermediates, "privkey.pem": private}
    if layout is OutputFormat.NGINX:
        return {"fullchain.pem": cert + intermediates, "privkey.pem": private}
    if layout is OutputFormat.PEM:
        return {
            "cert.pem": cert,
            "chain.pem": intermediates,
            "fullchain.pem": cert + intermediates,
            "privkey.pem": private,
        }
    return {"combined.pem": cert + intermediates + private}


# -- files -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WrittenFile:
    path: str
    private: bool  # holds the private key: written 0600

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "private": self.private}


def check_bundle(
    fmt: OutputFormat | str, *, password: bytes | None = None, legacy: bool = False, friendly_name: str | None = None
) -> OutputFormat:
    """``fmt``, once the options fit it: what :func:`write_bundle` refuses, said before any work."""
    kind = OutputFormat(fmt)
    for option, given in (("--legacy", legacy), ("--friendly-name", friendly_name is not None)):
        if given and kind is not OutputFormat.PKCS12:
            raise InputError(
                f"{option} applies to the pkcs12 format only", hint=f"leave it out for {kind}: it is for pkcs12 only"
            )
    if password is not None and not kind.holds_key:
        raise InputError(f"{kind} holds no key, so there is nothing to protect with a password")
    if password is not None and kind is OutputFormat.HAPROXY:
        raise _no_haproxy_password()
    _password(password, "a PKCS#12 file" if kind is OutputFormat.PKCS12 else "a key")
    return kind


def write_bundle(
    fmt: OutputFormat | str,
    out: str | os.PathLike[str],
    key: PrivateKeyTypes | None,
    leaf: x509.Certificate,
    chain: Sequence[x509.Certificate],
    *,
    password: bytes | None = None,
    legacy: bool = False,
    friendly_name: str | None = None,
) -> tuple[WrittenFile, ...]:
    """Write ``leaf``, ``chain`` and (for the formats that hold one) ``key`` in ``fmt`` at ``out``.

    pem, apache and nginx are folders, made if missing and left mode 0700 (an existing one too:
    ``fsutil.ensure_private_dir``); the other formats are one file in a folder that exists,
    HAProxy's too (leaf, chain, key: the file ``ssl crt`` names).
    ``password`` encrypts the key, or the PKCS#12 file; without one a PKCS#12 file is neither
    encrypted nor MACed. Everything is made before the first file is written, so a refusal
    (a key that is not the leaf's, an option that does not fit) writes nothing.
    """
    kind = check_bundle(fmt, password=password, legacy=legacy, friendly_name=friendly_name)
    if kind.holds_key and key is None:
        raise ValueError(f"{kind} holds the private key: give it")
    target = Path(out)
    files: dict[Path, tuple[bytes, bool]] = {}
    if kind is OutputFormat.DER:
        files[target] = (der(leaf), False)
    elif kind is OutputFormat.PKCS7:
        files[target] = (pkcs7([leaf, *chain]), False)
    elif kind is OutputFormat.PKCS12:
        assert key is not None  # noqa: S101 (checked above)
        data = pkcs12(key, leaf, chain, password=password, legacy=legacy, friendly_name=friendly_name)
        files[target] = (data, True)
    else:
        assert key is not None  # noqa: S101 (checked above)
        layout = layout_files(kind, key, leaf, chain, key_password=password)
        private = private_files(kind)
        if kind is OutputFormat.HAPROXY:
            files[target] = (layout["combined.pem"], True)
        else:
            folder = fsutil.ensure_private_dir(target)
            files = {folder / name: (data, name in private) for name, data in layout.items()}
    for path, (data, secret) in files.items():
        fsutil.atomic_write(path, data, mode=0o600 if secret else 0o644)
    return tuple(WrittenFile(str(path), secret) for path, (_, secret) in files.items())


@dataclass(frozen=True, slots=True)
class KeyWritten:
    path: str
    type: str
    public_key_id: str
    encrypted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "public_key_id": self.public_key_id, "encrypted": self.encrypted}


def write_key(
    path: str | os.PathLike[str], key: PrivateKeyTypes, *, password: bytes | None = None, overwrite: bool = False
) -> KeyWritten:
    """Write ``key`` as PKCS#8 PEM (encrypted with ``password``), 0600 from birth; a file that
    exists is replaced only with ``overwrite``."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise InputError(
            "already exists; a key is never overwritten by accident",
            source=str(target),
            hint="choose another path, or give --force",
        )
    fsutil.write_private(target, key_pem(key, password))
    return KeyWritten(str(target), key_type(key.public_key()), public_key_id(key), password is not None)


@dataclass(frozen=True)
class CsrWritten:
    path: str
    csr: CsrInfo
    plan: NamePlan  # the names exactly as requested, counted against the usual CA limit
    key: KeyWritten | None  # the key made for it

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "csr": self.csr.to_dict(),
            "plan": self.plan.to_dict(),
            "key": self.key.to_dict() if self.key is not None else None,
        }


def write_csr(
    path: str | os.PathLike[str], csr: x509.CertificateSigningRequest, *, key: KeyWritten | None = None
) -> CsrWritten:
    """Write ``csr`` as PEM; the result says what it asks for (``key``: the key written for it)."""
    from certfleet.csr import describe_csr
    from certfleet.names import plan

    info = describe_csr(csr)
    names_plan = plan([*info.dns_names, *info.ip_addresses], wildcards=False)
    fsutil.atomic_write(path, csr.public_bytes(serialization.Encoding.PEM))
    return CsrWritten(str(path), info, names_plan, key)
