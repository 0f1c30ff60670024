"""PKCS#12 (.pfx/.p12): Windows, Java keytool and OpenSSL stores, modern (AES) and legacy (3DES, RC2)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import pkcs12

from certfleet.certinfo import UNPARSABLE
from certfleet.errors import CertfleetError, FormatError, PasswordError
from certfleet.formats._common import HINT_DAMAGED, HINT_DSA, HINT_PASSWORD, Unsupported, damaged
from certfleet.formats._keys import signing_key
from certfleet.formats._model import InputFormat, Pool, PoolCert, PoolKey, Unreadable

_CANNOT_PARSE = "Could not deserialize"  # cryptography's wording when the structure itself is bad
# cryptography's wording when the password opened the store but a certificate inside does not
# parse: it names where the parse failed ("Certificate::tbs_cert", "TbsCertificate::spki", ...)
_INSIDE = "Certificate::"
_KEY_INFO = "SubjectPublicKeyInfo::algorithm"


def _certificate_refused(text: str) -> FormatError:
    # a key algorithm without parameters: DSA inheriting its issuer's (RFC 3279), which
    # cryptography cannot read and no TLS client accepts
    if _KEY_INFO in text:
        return Unsupported(
            "PKCS#12: the password is right, but a certificate in it uses DSA (with its parameters left to "
            "its issuer), which no TLS client accepts; nothing in the file can be read",
            hint=HINT_DSA,
        )
    return FormatError(
        "PKCS#12: the password is right, but a certificate in it is damaged; nothing in the file can be read",
        hint=HINT_DAMAGED,
    )


def read(der: bytes, source: str, passwords: Sequence[bytes]) -> Pool:
    # no password and the empty password derive different keys (an absent BMPString vs. an empty
    # one), and tools disagree on which "no password" means, so both are tried after the given ones
    candidates: list[bytes | None] = list(dict.fromkeys([*passwords, None, b""]))
    for password in candidates:
        try:
            with warnings.catch_warnings():
                # stores from Windows and old Java are BER (indefinite lengths); cryptography reads
                # them after a warning that is noise to the user
                warnings.simplefilter("ignore", UserWarning)
                loaded = pkcs12.load_pkcs12(der, password)
        except UnsupportedAlgorithm as exc:
            raise FormatError(
                "PKCS#12: encrypted with a cipher certfleet cannot read",
                hint="export it again with AES-256 or 3DES encryption",
            ) from exc
        except UNPARSABLE as exc:
            if _CANNOT_PARSE in str(exc) or not isinstance(exc, ValueError):
                raise damaged("PKCS#12") from exc
            if _INSIDE in str(exc):
                raise _certificate_refused(str(exc)) from exc
            continue
        bags = [b for b in (loaded.cert, *loaded.additional_certs) if b is not None]
        certs = tuple(PoolCert(b.certificate, source, InputFormat.PKCS12, _friendly(b.friendly_name)) for b in bags)
        keys: tuple[PoolKey, ...] = ()
        unread: tuple[Unreadable, ...] = ()
        if loaded.key is not None:
            try:
                keys = (PoolKey(signing_key(loaded.key, "PKCS#12"), source, InputFormat.PKCS12, bool(password)),)
            except CertfleetError as exc:
                if not certs:
                    raise
                unread = (Unreadable.from_error(exc, source),)
        if not certs and not keys:
            raise FormatError("PKCS#12: holds no certificate and no key")
        return Pool(certificates=certs, keys=keys, unreadable=unread)
    if passwords:
        raise PasswordError("wrong password, or not a PKCS#12 file", hint=HINT_PASSWORD)
    raise PasswordError("PKCS#12: a password is needed", hint=HINT_PASSWORD)


def _friendly(name: bytes | None) -> str | None:
    return None if name is None else name.decode("utf-8", "replace")
