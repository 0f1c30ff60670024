"""Private keys, plain or encrypted (PKCS#8, PKCS#1, SEC1; traditional "Proc-Type" PEM too)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_pem_private_key

from certfleet.certinfo import key_name
from certfleet.errors import PasswordError
from certfleet.formats._common import HINT_PASSWORD, Unsupported, damaged

_SIGNING = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,  # no web client accepts DSA, but lint is the one to say so
)


def load_key(
    data: bytes, *, pem: bool, encrypted: bool, passwords: Sequence[bytes], what: str
) -> CertificateIssuerPrivateKeyTypes:
    """Load a DER (or, for traditional encryption, PEM) private key; ``what`` names it in errors.

    ``encrypted`` comes from the structure or the PEM header, so a plain key is never offered a
    password (cryptography refuses that) and an encrypted one is never tried without.
    """
    loader = load_pem_private_key if pem else load_der_private_key
    if not encrypted:
        try:
            return signing_key(loader(data, None), what)
        except TypeError:  # encrypted after all: a structure our sniffing did not foresee
            encrypted = True
        except UnsupportedAlgorithm as exc:
            raise Unsupported(f"{what}: a key type certfleet cannot use", hint="use an RSA or ECDSA key") from exc
        except ValueError as exc:
            raise damaged(what) from exc
    if not passwords:
        raise PasswordError(f"{what}: encrypted; a password is needed", hint=HINT_PASSWORD)
    for password in passwords:
        try:
            return signing_key(loader(data, password), what)
        except UnsupportedAlgorithm as exc:
            raise Unsupported(
                f"{what}: encrypted with a cipher certfleet cannot read",
                hint="re-encrypt it with: openssl pkcs8 -topk8 -v2 aes256",
            ) from exc
        except (ValueError, TypeError):
            continue
    raise PasswordError(f"{what}: wrong password", hint=HINT_PASSWORD)


def signing_key(key: PrivateKeyTypes, what: str) -> CertificateIssuerPrivateKeyTypes:
    """``key`` if it can sign certificates; a FormatError naming ``what`` if not (X25519, DH)."""
    if isinstance(key, _SIGNING):
        return key
    raise Unsupported(f"{what}: {key_name(key)} cannot serve as a web certificate key", hint="use an RSA or ECDSA key")
