"""csr: subject fields, building a CSR that openssl accepts, and describing one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certfleet.csr import Subject, build_csr, describe_csr
from certfleet.errors import InputError
from certfleet.keys import KeySpec, generate_key, key_matches, public_key_id
from certfleet.testing import make_key
from conftest import PKI


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "C=CA,ST=Ontario,L=Ottawa,O=Example,CN=www.example.com",
            Subject("CA", "Ontario", "Ottawa", "Example", None, "www.example.com"),
        ),
        (
            "/C=CA/ST=Ontario/L=Ottawa/O=Example, Inc./OU=IT/CN=www.example.com",
            Subject("CA", "Ontario", "Ottawa", "Example, Inc.", "IT", "www.example.com"),
        ),
        (
            "c=ca, o=Example\\, Inc. , cn = mail.example.com",
            Subject(country="CA", organization="Example, Inc.", common_name="mail.example.com"),
        ),
        ("countryName=DE,organizationName=Beispiel GmbH", Subject(country="DE", organization="Beispiel GmbH")),
        ("O=A\\/B", Subject(organization="A/B")),
        ("", Subject()),
        ("CN=", Subject()),
    ],
)
def test_subject_parse(text: str, expected: Subject) -> None:
    assert Subject.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("C=CAN", "country 'CAN' is not a two-letter country code"),
        ("C=C1", "country 'C1' is not a two-letter country code"),
        ("C=Ca,C=DE", "subject field C is given twice"),
        ("X=1", "subject part 'X=1' is not one of C=, ST=, L=, O=, OU=, CN="),
        ("CN", "subject part 'CN' is not one of C=, ST=, L=, O=, OU=, CN="),
        ("O=" + "x" * 65, "subject field O is 65 characters long; CAs allow at most 64"),
        ("O=a\x00b", "subject field O holds a control character"),
    ],
)
def test_subject_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        Subject.parse(text)
    assert str(info.value) == message


def test_subject_round_trips_through_str() -> None:
    subject = Subject("ca", "Ontario", "Ottawa", "Example, Inc.", "IT/Ops", "www.example.com")
    assert subject.country == "CA"
    assert Subject.parse(str(subject)) == subject
    assert subject.to_dict()["organization"] == "Example, Inc."


def _openssl_text(csr: x509.CertificateSigningRequest, tmp_path: Path) -> str:
    path = tmp_path / "request.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    proc = subprocess.run(
        ["openssl", "req", "-in", path, "-verify", "-noout", "-text"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "verify OK" in proc.stderr + proc.stdout
    return proc.stdout


@pytest.mark.parametrize("spec", [KeySpec.EC_P256, KeySpec.EC_P384, KeySpec.RSA_2048])
def test_build_csr_openssl_verifies_it_and_sees_our_sans(spec: KeySpec, tmp_path: Path) -> None:
    key = generate_key(spec)
    subject = Subject.parse("C=CA,ST=Ontario,L=Ottawa,O=Example")
    csr = build_csr(key, ["WWW.Bücher.example.", "example.com", "192.0.2.10", "2001:db8::1", "*.example.com"], subject)
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    text = _openssl_text(csr, tmp_path)
    assert "DNS:www.xn--bcher-kva.example, DNS:example.com, IP Address:192.0.2.10, IP Address:2001:DB8:0:0:0:0:0:1" in (
        text
    )
    assert "DNS:*.example.com" in text
    assert "C = CA, ST = Ontario, L = Ottawa, O = Example, CN = www.xn--bcher-kva.example" in text
    assert "sha256With" in text or "ecdsa-with-SHA256" in text
    assert key_matches(key, csr)


def test_build_csr_common_name_defaults_to_the_first_dns_name() -> None:
    csr = build_csr(make_key(), ["192.0.2.1", "mail.example.com", "www.example.com"])
    info = describe_csr(csr)
    assert info.common_name == "mail.example.com"
    assert info.dns_names == ("mail.example.com", "www.example.com")
    assert info.ip_addresses == ("192.0.2.1",)
    # only IP addresses: the first IP
    assert describe_csr(build_csr(make_key(), ["192.0.2.1"])).common_name == "192.0.2.1"


def test_build_csr_common_name_given_is_normalized_and_added_to_the_sans() -> None:
    csr = build_csr(make_key(), ["mail.example.com"], Subject(common_name="WWW.example.com"))
    info = describe_csr(csr)
    assert info.common_name == "www.example.com"
    assert info.dns_names == ("www.example.com", "mail.example.com")


def test_build_csr_deduplicates_names() -> None:
    info = describe_csr(build_csr(make_key(), ["www.example.com", "WWW.EXAMPLE.COM.", "www.example.com"]))
    assert info.dns_names == ("www.example.com",)


@pytest.mark.parametrize(
    ("key_spec", "names", "subject", "error"),
    [
        ("ed25519", ["www.example.com"], None, "Ed25519 keys are not accepted"),
        ("rsa:1024", ["www.example.com"], None, "1024 bits"),
        ("ec:p256", [], None, "a CSR needs at least one name"),
        ("ec:p256", ["*.com"], None, "top-level domain"),
        ("ec:p256", ["*.co.uk"], None, "public suffix"),
        ("ec:p256", ["-bad-.example"], None, "'-bad-'"),
        ("ec:p256", ["www.example.com"], Subject(common_name="My Server"), "is not a DNS name or IP address"),
    ],
)
def test_build_csr_refuses(key_spec: str, names: list[str], subject: Subject | None, error: str) -> None:
    with pytest.raises(InputError, match=error):
        build_csr(make_key(key_spec), names, subject)


def test_describe_csr(pki: PKI) -> None:
    key = make_key("rsa:2048")
    csr = build_csr(key, ["www.example.com", "10.0.0.1"], Subject(country="CA", organization="Example"))
    info = describe_csr(csr)
    assert info.subject == "CN=www.example.com,O=Example,C=CA"
    assert info.key_type == "rsa:2048"
    assert info.public_key_id == public_key_id(key)
    assert info.signature_valid
    assert info.signature_algorithm == "sha256WithRSAEncryption"
    d = info.to_dict()
    assert d["dns_names"] == ["www.example.com"]
    assert d["ip_addresses"] == ["10.0.0.1"]
    assert d["signature_valid"] is True
    # a CA issues from it: the certificate carries the CSR's names and key
    cert = pki.inter.sign_csr(csr)
    assert key_matches(key, cert)


def test_describe_csr_sees_a_broken_signature() -> None:
    csr = build_csr(make_key(), ["www.example.com"])
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    broken = x509.load_der_x509_csr(bytes(der))
    assert describe_csr(broken).signature_valid is False
