"""Limits, messages and hints shared by the readers of every format."""

from __future__ import annotations

from dataclasses import dataclass

from certfleet.errors import CertfleetError, FormatError

MiB = 1024 * 1024
# one input, as read from a file or standard input; a CA package is a few kilobytes
MAX_INPUT_BYTES = 20 * MiB

# zip packages; here rather than in _zip, which loads zipfile, so that naming them costs nothing
MAX_MEMBERS = 1000
MAX_MEMBER_BYTES = 10 * MiB
MAX_TOTAL_BYTES = 50 * MiB
MAX_RATIO = 200
MAX_DEPTH = 1  # a zip inside the zip is read; a zip inside that one is refused

NOT_RECOGNIZED = "not a certificate, key, CSR, PKCS#7, PKCS#12 or zip"
HINT_FORMATS = "certfleet reads PEM, DER, PKCS#7 (.p7b), PKCS#12 (.pfx/.p12) and zip files, by their content"
HINT_DAMAGED = "the file is damaged or cut short; download or export it again"
HINT_PASSWORD = "give it with --password, --password-file or CERTFLEET_PASSWORD"  # noqa: S105 (a hint, not a password)


class NothingUsable(FormatError):
    """Bytes that hold nothing we use: none of our formats, or only kinds we ignore.

    As opposed to one of our formats, but broken. A zip member that raises this is a README or an
    invoice and is skipped; a file given on its own that raises it is an error like any other.
    """

    def __init__(self, message: str = NOT_RECOGNIZED, *, hint: str | None = HINT_FORMATS) -> None:
        super().__init__(message, hint=hint)


class NotNeeded(NothingUsable):
    """Something certfleet recognises and a server has no use for (a certificate revocation list)."""


class Unsupported(FormatError):
    """One of our formats, read correctly, holding what no TLS client accepts (a DSA certificate)."""


HINT_CRL = "a server sends certificates, not CRLs; give the certificate files the CA sent"
HINT_DSA = "have the certificate reissued for an RSA or ECDSA key"


def crl(what: str) -> NotNeeded:
    return NotNeeded(f"{what}: a certificate revocation list: a server does not need it", hint=HINT_CRL)


def named(exc: CertfleetError, what: str) -> CertfleetError:
    """``exc`` with its message starting with the item it is about ("block 2 (CERTIFICATE): ...")."""
    if not exc.message.startswith(what):
        exc.message = f"{what}: {exc.message}"
        exc.args = (exc.message,)
    return exc


def damaged(what: str) -> FormatError:
    return FormatError(f"{what}: damaged or cut short", hint=HINT_DAMAGED)


@dataclass
class Budget:
    """Bytes inflated so far, shared by a zip and the zips inside it."""

    inflated: int = 0


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
