"""Faults in the structure of a path, each with its own code, whether or not the leaf has a name.

cryptography's verifier gives the verdict; certfleet asks its client verifier about the path
alone (no name), so a leaf without a subjectAltName is not explained by no-san only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from certfleet.problems import ProblemCode
from certfleet.trust import TrustStore
from certfleet.verify import verify_chain

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
Extras = Sequence[tuple[x509.ExtensionType, bool]]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _usage(cert_sign: bool = True) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _cert(
    subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey, extras: Extras
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=60))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_key is not key:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        builder = builder.add_extension(aki, critical=False)
    for extension, critical in extras:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


CA: Extras = ((x509.BasicConstraints(ca=True, path_length=None), True), (_usage(), True))
UNKNOWN = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")


@dataclass
class Case:
    root: x509.Certificate
    intermediates: list[x509.Certificate]
    leaf_with_name: x509.Certificate
    leaf_without_name: x509.Certificate


def _case(inter_extras: Extras, *, root_path_length: int | None = None, leaf_name: str = "www.example.test") -> Case:
    root_key, inter_key, leaf_key = _key(), _key(), _key()
    root_ca = ((x509.BasicConstraints(ca=True, path_length=root_path_length), True), (_usage(), True))
    root = _cert("Diag Root", "Diag Root", root_key, root_key, root_ca)
    inter = _cert("Diag Intermediate", "Diag Root", inter_key, root_key, inter_extras)
    base: Extras = (
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    )
    try:
        name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(leaf_name))
    except ValueError:
        name = x509.DNSName(leaf_name)
    named = _cert(
        leaf_name, "Diag Intermediate", leaf_key, inter_key, (*base, (x509.SubjectAlternativeName([name]), False))
    )
    nameless = _cert(leaf_name, "Diag Intermediate", leaf_key, inter_key, base)
    return Case(root, [inter], named, nameless)


FAULTS: dict[str, tuple[Extras, dict[str, Any], ProblemCode, str]] = {
    "no basicConstraints": (
        ((_usage(), True),),
        {},
        ProblemCode.MISSING_BASIC_CONSTRAINTS,
        "the intermediate 'Diag Intermediate' issued a certificate but has no basicConstraints extension, "
        "so it is no CA",
    ),
    "cA=false": (
        ((x509.BasicConstraints(ca=False, path_length=None), True), (_usage(), True)),
        {},
        ProblemCode.NOT_A_CA,
        "the intermediate 'Diag Intermediate' issued a certificate but its basicConstraints says it is no CA "
        "(cA=false)",
    ),
    "no keyCertSign": (
        ((x509.BasicConstraints(ca=True, path_length=None), True), (_usage(cert_sign=False), True)),
        {},
        ProblemCode.MISSING_KEY_CERT_SIGN,
        "the intermediate 'Diag Intermediate' issued a certificate but its key usage does not allow signing "
        "certificates (keyCertSign)",
    ),
    "beyond pathLenConstraint": (
        CA,
        {"root_path_length": 0},
        ProblemCode.PATH_LENGTH_EXCEEDED,
        "the root 'Diag Root' allows 0 intermediates below it (pathLenConstraint), and this chain has 1",
    ),
    "unknown critical extension": (
        (*CA, (UNKNOWN, True)),
        {},
        ProblemCode.UNKNOWN_CRITICAL_EXTENSION,
        "the intermediate 'Diag Intermediate' has a critical extension clients do not know (1.3.6.1.4.1.55555.1): "
        "they must refuse it",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("named", [True, False], ids=["leaf-with-name", "leaf-without-name"])
def test_each_structural_fault_has_its_code(fault: str, named: bool) -> None:
    extras, options, code, message = FAULTS[fault]
    case = _case(extras, **options)
    leaf = case.leaf_with_name if named else case.leaf_without_name

    result = verify_chain(leaf, case.intermediates, TrustStore((case.root,)), at=NOW)

    assert not result.valid
    found = [p for p in result.problems if p.code is code]
    assert [p.message for p in found] == [message]
    assert ProblemCode.INVALID not in {p.code for p in result.problems}  # the fault explains the refusal
    if not named:
        assert ProblemCode.NO_SAN in {p.code for p in result.problems}


@pytest.mark.parametrize(
    ("constraint", "leaf_name", "how"),
    [
        (
            x509.NameConstraints(permitted_subtrees=[x509.DNSName("other.test")], excluded_subtrees=None),
            "",
            "not among",
        ),
        (
            x509.NameConstraints(permitted_subtrees=None, excluded_subtrees=[x509.DNSName("example.test")]),
            "",
            "excluded",
        ),
        (
            x509.NameConstraints(
                permitted_subtrees=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))], excluded_subtrees=None
            ),
            "192.0.2.7",
            "not among",
        ),
    ],
)
def test_outside_name_constraints(constraint: x509.NameConstraints, leaf_name: str, how: str) -> None:
    case = _case((*CA, (constraint, True)), leaf_name=leaf_name or "www.example.test")
    result = verify_chain(case.leaf_with_name, case.intermediates, TrustStore((case.root,)), at=NOW)
    assert not result.valid
    (found,) = [p for p in result.problems if p.code is ProblemCode.NAME_CONSTRAINTS_VIOLATED]
    assert how in found.message
    assert found.message.endswith("the name constraints of the intermediate 'Diag Intermediate'")


def test_two_faults_on_one_certificate_are_both_reported() -> None:
    extras = ((x509.BasicConstraints(ca=False, path_length=None), True), (_usage(cert_sign=False), True))
    case = _case(extras)
    result = verify_chain(case.leaf_without_name, case.intermediates, TrustStore((case.root,)), at=NOW)
    codes = {p.code for p in result.problems}
    assert {ProblemCode.NOT_A_CA, ProblemCode.MISSING_KEY_CERT_SIGN, ProblemCode.NO_SAN} <= codes


def test_a_fault_below_an_untrusted_root_is_found_too() -> None:
    case = _case(((x509.BasicConstraints(ca=False, path_length=None), True), (_usage(), True)))
    other_root = _cert("Other Root", "Other Root", (k := _key()), k, CA)
    result = verify_chain(case.leaf_with_name, [*case.intermediates, case.root], TrustStore((other_root,)), at=NOW)
    codes = {p.code for p in result.problems}
    assert ProblemCode.NOT_A_CA in codes
    assert ProblemCode.UNTRUSTED in codes


def test_a_sound_path_without_a_name_is_only_no_san() -> None:
    case = _case(CA)
    result = verify_chain(case.leaf_without_name, case.intermediates, TrustStore((case.root,)), at=NOW)
    assert [p.code for p in result.problems] == [ProblemCode.NO_SAN]


@pytest.mark.parametrize("command", ["verify", "chain"])
def test_the_commands_say_it(cli: Any, tmp_path: Path, command: str) -> None:
    case = _case(((x509.BasicConstraints(ca=False, path_length=None), True), (_usage(), True)))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (case.leaf_without_name, *case.intermediates))
    )
    root = tmp_path / "root.pem"
    root.write_bytes(case.root.public_bytes(serialization.Encoding.PEM))
    extra = ["--no-fetch"] if command == "chain" else []
    result = cli(command, bundle, "--trust-only", root, *extra, "--json")
    assert result.code == 1, result.err
    codes = [p["code"] for p in result.json()["problems"]]
    assert "not-a-ca" in codes and "no-san" in codes
    human = cli(command, bundle, "--trust-only", root, *extra)
    assert "[not-a-ca] the intermediate 'Diag Intermediate' issued a certificate" in human.out
