"""PKCS#7 / CMS SignedData "certs-only" bundles (.p7b, .p7c), as CAs and Windows export them."""

from __future__ import annotations

import warnings

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import pkcs7

from certfleet.certinfo import UNPARSABLE
from certfleet.errors import FormatError
from certfleet.formats._common import NothingUsable, damaged
from certfleet.formats._model import InputFormat, Pool, PoolCert

_EMPTY = "no certificate data"  # cryptography's wording for a SignedData without certificates


def read(der: bytes, source: str, what: str = "PKCS#7") -> Pool:
    try:
        with warnings.catch_warnings():
            # OpenSSL (crl2pkcs7, Windows) writes the certificates in chain order rather than DER's
            # sorted SET order; cryptography then reads them as BER, which is what we want
            warnings.simplefilter("ignore", UserWarning)
            certs = pkcs7.load_der_pkcs7_certificates(der)
    except UnsupportedAlgorithm as exc:
        raise FormatError(f"{what}: not a certificate bundle (signed or encrypted data)") from exc
    except UNPARSABLE as exc:
        if _EMPTY in str(exc):
            raise NothingUsable(f"{what}: holds no certificate", hint=None) from exc
        raise damaged(what) from exc
    return Pool(certificates=tuple(PoolCert(c, source, InputFormat.PKCS7) for c in certs))
