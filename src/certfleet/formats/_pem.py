"""PEM: any mix of blocks, in any order, with any text around them (openssl -text, Bag Attributes)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from cryptography import x509

from certfleet.certinfo import UNPARSABLE
from certfleet.errors import CertfleetError, FormatError, LimitError
from certfleet.formats._common import HINT_DAMAGED, NothingUsable, NotNeeded, crl, damaged, named
from certfleet.formats._der import object_end, unloadable
from certfleet.formats._model import InputFormat, Pool, PoolCert, PoolCSR, PoolKey, Unreadable, combine

BEGIN = b"-----BEGIN "
_BEGIN_LINE = re.compile(rb"-----BEGIN ([A-Z0-9][A-Z0-9 #._/-]{0,63})-----")
_WHITESPACE = b" \t\r\n\v\f"

_CERTIFICATE = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE"})
_TRUSTED = b"TRUSTED CERTIFICATE"  # OpenSSL's certificate followed by its trust settings
_KEYS = frozenset({b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY"})
_ENCRYPTED_KEY = b"ENCRYPTED PRIVATE KEY"
_CSR = frozenset({b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"})
_PKCS7 = frozenset({b"PKCS7", b"PKCS #7 SIGNED DATA", b"CMS"})
_CRL = frozenset({b"X509 CRL"})
_USED = _CERTIFICATE | _KEYS | _CSR | _PKCS7 | {_TRUSTED, _ENCRYPTED_KEY}


def read_pem(source: str, data: bytes, passwords: Sequence[bytes]) -> Pool:
    """Every block of ``data`` that certfleet uses, in order.

    A block that cannot be read (damaged, cut short, encrypted without its password) is reported
    beside the blocks that can; the data is refused only when nothing in it is usable.
    """
    found: list[Pool] = []
    skipped: list[str] = []
    failed: list[CertfleetError] = []
    noted: list[NothingUsable] = []  # blocks we recognise and have no use for (a CRL)
    empty: list[NothingUsable] = []  # blocks of a kind we use that hold nothing (a PKCS#7 without certificates)
    number = 0
    pos = 0
    while match := _BEGIN_LINE.search(data, pos):
        number += 1
        label = match.group(1)
        what = f"block {number} ({label.decode()})"
        end_line = b"-----END " + label + b"-----"
        stop = data.find(end_line, match.end())
        following = data.find(BEGIN, match.end())
        if stop < 0 or 0 <= following < stop:
            failed.append(FormatError(f"{what}: no END line; the file is cut short", hint=HINT_DAMAGED))
            if following < 0:
                break
            pos = following  # the next block may be whole
            continue
        pos = stop + len(end_line)
        if label in _CRL:
            noted.append(crl(what))
            continue
        if label not in _USED:
            skipped.append(label.decode())
            continue
        try:
            found.append(_block(label, data[match.end() : stop], what, source, passwords))
        except NotNeeded as exc:
            noted.append(exc)
        except NothingUsable as exc:
            empty.append(exc)
        except LimitError:
            raise
        except CertfleetError as exc:
            failed.append(named(exc, what))
    pool = combine(found)
    if not pool:
        if failed or noted or empty:
            raise (failed or noted or empty)[0]
        if skipped:
            raise NothingUsable(
                f"holds no certificate, key, CSR or PKCS#7, only {', '.join(dict.fromkeys(skipped))}", hint=None
            )
        raise NothingUsable()
    unread = tuple(Unreadable.from_error(exc, source) for exc in (*failed, *noted))
    return combine([pool, Pool(unreadable=unread)]) if unread else pool


def _block(label: bytes, body: bytes, what: str, source: str, passwords: Sequence[bytes]) -> Pool:
    headers, der = _decode(body, what)
    if label in _CERTIFICATE or label == _TRUSTED:
        if label == _TRUSTED:
            der = der[: object_end(der) or len(der)]
        try:
            cert = x509.load_der_x509_certificate(der)
        except UNPARSABLE as exc:
            raise unloadable(der, what) from exc
        return Pool(certificates=(PoolCert(cert, source, InputFormat.PEM),))
    if label in _CSR:
        try:
            return Pool(csrs=(PoolCSR(x509.load_der_x509_csr(der), source, InputFormat.PEM),))
        except UNPARSABLE as exc:
            raise damaged(what) from exc
    # the readers of PKCS#7 and keys load on demand (see the package docstring)
    if label in _PKCS7:
        from certfleet.formats import _pkcs7

        return _pkcs7.read(der, source, what)
    from certfleet.formats._keys import load_key

    if any(h.replace(b" ", b"").upper() == b"PROC-TYPE:4,ENCRYPTED" for h in headers):
        # traditional OpenSSL encryption lives in the headers, which only the PEM loader reads
        key = load_key(_rebuild(label, headers, der), pem=True, encrypted=True, passwords=passwords, what=what)
        return Pool(keys=(PoolKey(key, source, InputFormat.PEM, encrypted=True),))
    encrypted = label == _ENCRYPTED_KEY
    key = load_key(der, pem=False, encrypted=encrypted, passwords=passwords, what=what)
    return Pool(keys=(PoolKey(key, source, InputFormat.PEM, encrypted=encrypted),))


def _decode(body: bytes, what: str) -> tuple[list[bytes], bytes]:
    """RFC 1421 headers ("Proc-Type: ...") and the decoded base64 of one block's body."""
    if b":" not in body:  # the common case: no RFC 1421 headers
        return [], _base64(body, what)
    lines = [line.strip() for line in body.splitlines()]
    headers: list[bytes] = []
    while lines and (not lines[0] or b":" in lines[0]):
        if lines[0]:
            headers.append(lines[0])
        lines.pop(0)
    return headers, _base64(b"".join(lines), what)


def _base64(text: bytes, what: str) -> bytes:
    try:
        der = binascii.a2b_base64(text.translate(None, _WHITESPACE), strict_mode=True)
    except binascii.Error as exc:
        raise FormatError(f"{what}: broken base64", hint=HINT_DAMAGED) from exc
    if not der:
        raise FormatError(f"{what}: empty block", hint=HINT_DAMAGED)
    return der


def _rebuild(label: bytes, headers: list[bytes], der: bytes) -> bytes:
    text = base64.b64encode(der)
    body = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"".join(
        [b"-----BEGIN ", label, b"-----\n", b"\n".join(headers), b"\n\n", body, b"\n-----END ", label, b"-----\n"]
    )
