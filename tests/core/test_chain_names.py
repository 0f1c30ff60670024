"""Issuer names compared as RFC 5280 (section 7.1) says: letter case, spacing and string type do
not make another name. The chain is built with such an issuer, and the result says which one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.certinfo import fingerprint, same_name
from certfleet.chain import build_chain
from certfleet.formats import read_pool
from certfleet.problems import ProblemCode, Severity
from certfleet.signatures import Signature, check_signature
from certfleet.testing import TestCA
from certfleet.trust import TrustStore
from certfleet.verify import verify_chain
from support.formats import openssl

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Inc"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Example Issuing CA"),
    ]
)
VARIANTS = {
    "letter case": x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EXAMPLE inc"),
            x509.NameAttribute(NameOID.COMMON_NAME, "example issuing ca"),
        ]
    ),
    "spacing": x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, " Example   Inc"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Example Issuing  CA "),
        ]
    ),
    "string type": x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Inc", _ASN1Type.PrintableString),
            x509.NameAttribute(NameOID.COMMON_NAME, "Example Issuing CA", _ASN1Type.PrintableString),
        ]
    ),
}


def test_names_compared_as_rfc_5280_says() -> None:
    for variant in VARIANTS.values():
        assert variant.public_bytes() != SUBJECT.public_bytes()
        assert same_name(variant, SUBJECT)
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Issuing CA 2")])
    assert not same_name(other, SUBJECT)
    reordered = x509.Name(list(reversed(list(SUBJECT))))
    assert not same_name(reordered, SUBJECT)  # the order of the RDNs is part of the name


def _renamed_intermediate(root: TestCA, subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    usage = x509.KeyUsage(
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
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(root.key, hashes.SHA256())  # type: ignore[arg-type]
    )


class Chain:
    def __init__(self, issuer_name: x509.Name) -> None:
        self.root = TestCA.root("Names Root")
        key = ec.generate_private_key(ec.SECP256R1())
        self.inter = _renamed_intermediate(self.root, SUBJECT, key)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.test")]))
            .issuer_name(issuer_name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(hours=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.test")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )

    def files(self, folder: Path) -> tuple[Path, Path, Path]:
        paths = []
        for name, cert in (("leaf.pem", self.leaf), ("inter.pem", self.inter), ("root.pem", self.root.cert)):
            path = folder / name
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            paths.append(path)
        return paths[0], paths[1], paths[2]


@pytest.fixture(params=list(VARIANTS))
def chain(request: pytest.FixtureRequest) -> Chain:
    return Chain(VARIANTS[request.param])


def test_the_issuer_is_proven_by_its_signature(chain: Chain) -> None:
    assert check_signature(chain.leaf, chain.inter) is Signature.GOOD


def test_openssl_matches_them_too(chain: Chain, tmp_path: Path) -> None:
    leaf, inter, root = chain.files(tmp_path)
    out = openssl("verify", "-CAfile", root, "-untrusted", inter, leaf, cwd=tmp_path)
    assert out.strip().endswith(b"OK")


def test_the_chain_is_built_with_it_and_says_so(chain: Chain, tmp_path: Path) -> None:
    leaf, inter, _ = chain.files(tmp_path)
    pool = read_pool([(str(leaf), leaf.read_bytes()), (str(inter), inter.read_bytes())])

    result = build_chain(pool, TrustStore((chain.root.cert,)), now=NOW)

    assert [fingerprint(c) for c in result.chain] == [fingerprint(chain.leaf), fingerprint(chain.inter)]
    assert result.root == chain.root.cert
    codes = [p.code for p in result.problems]
    assert ProblemCode.INCOMPLETE_CHAIN not in codes
    (note,) = [p for p in result.problems if p.code is ProblemCode.ISSUER_NAME_DIFFERS]
    assert note.subject == fingerprint(chain.inter)
    assert note.message.startswith(
        f"'Example Issuing CA' ({inter}) was matched as the issuer of 'www.example.test' by RFC 5280's rules"
    )


def test_the_verdict_says_why_a_strict_verifier_refuses(chain: Chain) -> None:
    result = verify_chain(chain.leaf, [chain.inter], TrustStore((chain.root.cert,)), at=NOW)

    assert not result.valid  # cryptography compares names byte for byte
    assert [p.code for p in result.problems] == [ProblemCode.ISSUER_NAME_DIFFERS]
    assert result.problems[0].severity is Severity.ERROR
    assert [fingerprint(c) for c in result.chain] == [
        fingerprint(c) for c in (chain.leaf, chain.inter, chain.root.cert)
    ]


def test_the_chain_command_names_the_file(cli: Any, chain: Chain, tmp_path: Path) -> None:
    leaf, inter, root = chain.files(tmp_path)
    result = cli("chain", leaf, inter, "--trust-only", root, "--no-fetch", "--json")
    data = result.json()
    assert data["complete"] is True
    assert [c["sha256"] for c in data["chain"]] == [fingerprint(chain.leaf), fingerprint(chain.inter)]
    assert "issuer-name-differs" in [p["code"] for p in data["problems"]]
    assert "incomplete-chain" not in [p["code"] for p in data["problems"]]
