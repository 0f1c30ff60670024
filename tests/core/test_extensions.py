"""Extensions cryptography cannot decode all at once: each is read on its own, and what still
fails is reported as a value or a fault, never as an unexpected error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet import extensions
from certfleet.certinfo import describe, is_ca, san_names
from certfleet.csr import describe_csr
from certfleet.paths import extension
from support.oddities import EDI_PARTY_NAME, X400_ADDRESS, csr_with_extensions, dns, san_extension, with_extension_value

UNUSABLE = {X400_ADDRESS: "an x400Address", EDI_PARTY_NAME: "an EDIPartyName"}
BASIC_CONSTRAINTS = bytes.fromhex("551d13")


@pytest.fixture(params=list(UNUSABLE), ids=["x400Address", "EDIPartyName"])
def odd_leaf(request: pytest.FixtureRequest, pki: Any) -> tuple[x509.Certificate, str]:
    from support.oddities import leaf_with_san

    entry: bytes = request.param
    return leaf_with_san(pki.inter, dns("a.example.test"), entry, dns("b.example.test")), UNUSABLE[entry]


def test_cryptography_refuses_these_names_whole(odd_leaf: tuple[x509.Certificate, str]) -> None:
    cert, _ = odd_leaf
    with pytest.raises(x509.UnsupportedGeneralNameType):
        _ = cert.extensions


def test_the_other_names_and_extensions_are_read(odd_leaf: tuple[x509.Certificate, str]) -> None:
    cert, what = odd_leaf
    assert san_names(cert) == (["a.example.test", "b.example.test"], [])
    assert not is_ca(cert)
    eku = extension(cert, x509.ExtendedKeyUsage)
    assert eku is not None and x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    info = describe(cert)
    assert info.dns_names == ("a.example.test", "b.example.test")
    assert info.other_names == (f"{what}, which no TLS client uses",)
    assert info.to_dict()["other_names"] == [f"{what}, which no TLS client uses"]
    assert info.faults == ()


@pytest.mark.parametrize("command", ["inspect", "chain", "verify"])
def test_commands_report_the_name_as_a_value(
    cli: Any, pki: Any, tmp_path: Path, odd_leaf: tuple[x509.Certificate, str], command: str
) -> None:
    cert, what = odd_leaf
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + pki.inter.cert_pem())
    extra = {"inspect": [], "chain": ["--no-fetch"], "verify": []}[command]
    trust = [] if command == "inspect" else ["--trust-only", pki.root_file(tmp_path)]
    result = cli(command, leaf, *trust, *extra, "--json")
    assert result.code == 0, result.err
    data = result.json()
    described = {
        "inspect": lambda: data["certificates"][0],
        "chain": lambda: data["leaf"],
        "verify": lambda: data["chain"][0],
    }
    assert described[command]()["other_names"] == [f"{what}, which no TLS client uses"]
    if command == "verify":
        assert data["valid"] is True
    human = cli(command, leaf, *trust, *extra)
    assert human.code == 0, human.err
    assert "unexpected error" not in human.err
    if command == "inspect":
        assert "a.example.test, b.example.test; also" in human.out
        assert what in human.out


def test_an_extension_twice_is_a_fault_and_the_first_is_read(pki: Any) -> None:
    leaf = pki.inter.leaf("a.example.test").cert
    value = san_extension_value("a.example.test")
    twice = with_extension_value(pki.inter, leaf, bytes.fromhex("551d11"), value, twice=True)
    with pytest.raises(x509.DuplicateExtension):
        _ = twice.extensions
    assert san_names(twice) == (["a.example.test"], [])
    assert describe(twice).faults == ("the subjectAltName extension appears twice (RFC 5280 allows it once)",)


def test_an_extension_that_does_not_decode_is_a_fault_and_the_rest_is_read(pki: Any) -> None:
    leaf = pki.inter.leaf("a.example.test").cert
    broken = with_extension_value(pki.inter, leaf, BASIC_CONSTRAINTS, b"\x30\x03\x01\x01")  # a BOOLEAN cut short
    with pytest.raises(ValueError):
        _ = broken.extensions
    assert not is_ca(broken)
    assert san_names(broken) == (["a.example.test"], [])
    assert describe(broken).faults == ("the basicConstraints extension does not decode",)
    assert extensions.decoded(broken).find(x509.BasicConstraints) is None


def test_csr_with_an_extension_twice(cli: Any, tmp_path: Path) -> None:
    csr = csr_with_extensions(san_extension("dup.example.test"), san_extension("other.example.test"))
    with pytest.raises(x509.DuplicateExtension):
        _ = csr.extensions
    info = describe_csr(csr)
    assert info.dns_names == ("dup.example.test",)
    assert info.faults == ("the subjectAltName extension appears twice (RFC 5280 allows it once)",)

    path = tmp_path / "dup.csr"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    result = cli("inspect", path, "--json")
    assert result.code == 0, result.err
    assert result.json()["csrs"][0]["faults"] == list(info.faults)
    human = cli("inspect", path)
    assert human.code == 0, human.err
    assert "fault     the subjectAltName extension appears twice" in human.out


def test_csr_whose_names_hold_an_x400_address(cli: Any, tmp_path: Path) -> None:
    from support.oddities import SAN_OID, seq, tlv

    csr = csr_with_extensions(seq(tlv(0x06, SAN_OID), tlv(0x04, seq(dns("a.example.test"), X400_ADDRESS))))
    info = describe_csr(csr)
    assert info.dns_names == ("a.example.test",)
    assert info.other_names == ("an x400Address, which no TLS client uses",)


def san_extension_value(*names: str) -> bytes:
    from support.oddities import seq

    return seq(*(dns(n) for n in names))
