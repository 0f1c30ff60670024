"""The ARI CertID of a certificate (RFC 9773 §4.1), against the RFC's example and certbot's library."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning

from certfleet.acme.ari import cert_id
from certfleet.errors import InputError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from acme.client import _renewal_info_path_component

KEY = ec.generate_private_key(ec.SECP256R1())


def _cert(serial: int, aki: bytes | None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ari.test")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=6))
    )
    if aki is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    return builder.sign(KEY, hashes.SHA256())


def test_the_rfc_example() -> None:
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert cert_id(_cert(0x87654321, aki)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF, 0x100, 2**63, 2**159 - 1, 0x0123456789ABCDEF0123])
def test_it_agrees_with_certbots_library(serial: int) -> None:
    cert = _cert(serial, bytes(range(20)))
    assert cert_id(cert) == _renewal_info_path_component(cert)


def test_a_certificate_without_an_authority_key_identifier_cannot_be_named() -> None:
    with pytest.raises(InputError, match="Authority Key Identifier"):
        cert_id(_cert(5, None))
