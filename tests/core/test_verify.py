"""Verification as a phone sees it: verdicts from cryptography, plain words from certfleet."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import FormatError, InputError
from certfleet.paths import find_paths
from certfleet.problems import Severity
from certfleet.trust import TrustStore
from certfleet.verify import Verifier, verify_chain
from conftest import PKI

NOW = dt.datetime.now(dt.UTC)


def codes(result: object) -> list[str]:
    return [p.code.value for p in result.problems]  # type: ignore[attr-defined]


def handmade_leaf(
    issuer: testing.TestCA,
    *names: str,
    eku: bool = True,
    extra: x509.ExtensionType | None = None,
    self_signed: bool = False,
) -> x509.Certificate:
    """A leaf TestCA cannot make: without an EKU, self-signed, or with an extra extension."""
    key = testing.make_key("ec:p256")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if self_signed else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                key.public_key() if self_signed else issuer.key.public_key()
            ),
            critical=False,
        )
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(key if self_signed else issuer.key, hashes.SHA256())


def test_valid_chain(pki: PKI) -> None:
    trust = TrustStore((pki.root.cert,))
    result = verify_chain(pki.leaf.cert, pki.leaf.chain, trust, name="www.example.test", at=NOW)
    assert result.valid and result.problems == ()
    assert result.chain == (pki.leaf.cert, pki.inter.cert, pki.root.cert)
    assert result.name == "www.example.test"


def test_to_dict_is_the_json_contract(pki: PKI) -> None:
    result = verify_chain(pki.leaf.cert, pki.leaf.chain, TrustStore((pki.root.cert,)), name="example.test", at=NOW)
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"valid", "name", "chain", "problems"}
    assert data["valid"] is True and data["problems"] == []
    assert [c["sha256"] for c in data["chain"]] == [fingerprint(c) for c in result.chain]


def test_name_defaults_to_the_first_dns_name(pki: PKI) -> None:
    result = verify_chain(pki.leaf.cert, pki.leaf.chain, TrustStore((pki.root.cert,)), at=NOW)
    assert result.valid and result.name == "www.example.test"


@pytest.mark.parametrize(
    ("names", "asked", "valid"),
    [
        (("10.0.0.1",), "10.0.0.1", True),
        (("::1",), "0:0:0:0:0:0:0:1", True),
        (("10.0.0.1",), None, True),
        (("10.0.0.1",), "10.0.0.2", False),
        (("*.example.test",), "www.example.test", True),
        (("*.example.test",), None, True),
        (("xn--bcher-kva.example",), "bücher.example", True),
        (("www.example.test",), "WWW.Example.Test.", True),
    ],
)
def test_names_dns_ip_wildcard_idna(pki: PKI, names: tuple[str, ...], asked: str | None, valid: bool) -> None:
    leaf = pki.inter.leaf(*names)
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), name=asked, at=NOW)
    assert result.valid is valid, result.problems


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ("a.b.example.test", "a.b.example.test is not covered: *.example.test covers exactly one label"),
        ("example.test", "example.test is not covered: *.example.test covers exactly one label, never the apex"),
        ("www.other.test", "www.other.test is not covered: it is not among the certificate's names"),
        ("192.0.2.1", "192.0.2.1 is not covered: an IP address is covered only by the same IP address"),
    ],
)
def test_name_mismatch_says_why(pki: PKI, asked: str, message: str) -> None:
    leaf = pki.inter.leaf("*.example.test")
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), name=asked, at=NOW)
    assert not result.valid
    assert codes(result) == ["name-mismatch"]
    assert result.problems[0].message.startswith(message)
    assert result.problems[0].severity is Severity.ERROR
    assert result.problems[0].subject == fingerprint(leaf.cert)


@pytest.mark.parametrize("bad", ["under_score.example", "a..b", "*.example.test", ""])
def test_bad_names_are_input_errors(pki: PKI, bad: str) -> None:
    with pytest.raises(InputError):
        verify_chain(pki.leaf.cert, pki.leaf.chain, TrustStore((pki.root.cert,)), name=bad, at=NOW)


def test_expired_leaf(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", not_before=NOW - dt.timedelta(days=200), days=22)
    expired_on = leaf.cert.not_valid_after_utc
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["expired"]
    days = (NOW - expired_on).days
    assert result.problems[0].message == f"expired on {expired_on:%Y-%m-%d}, {days} days ago"
    assert days == 178


def test_not_yet_valid_leaf(pki: PKI) -> None:
    result = verify_chain(pki.leaf.cert, pki.leaf.chain, TrustStore((pki.root.cert,)), at=NOW - dt.timedelta(days=3))
    assert "not-yet-valid" in codes(result)
    message = next(p.message for p in result.problems if p.subject == fingerprint(pki.leaf.cert))
    assert message.startswith(f"is not valid until {pki.leaf.cert.not_valid_before_utc:%Y-%m-%d}, in 2 days")


def test_expired_intermediate_is_named() -> None:
    root = testing.TestCA.root("Dated Root")
    inter = root.intermediate("Old Intermediate", not_before=NOW - dt.timedelta(days=400), days=365)
    leaf = inter.leaf("www.example.test")
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((root.cert,)), at=NOW)
    assert codes(result) == ["expired"]
    assert result.problems[0].message.startswith("the intermediate 'Old Intermediate' expired on ")
    assert result.problems[0].subject == fingerprint(inter.cert)


def test_missing_intermediate(pki: PKI) -> None:
    result = verify_chain(pki.leaf.cert, [], TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["incomplete-chain"]
    problem = result.problems[0]
    assert problem.message == (
        "the intermediate 'certfleet Test Intermediate' that issued 'www.example.test' is missing; "
        "a phone will refuse this chain"
    )
    assert problem.hint == "add the CA's intermediate bundle, or let `certfleet chain` fetch it"
    assert result.chain == (pki.leaf.cert,)


def test_names_from_a_certificate_cannot_break_the_line(pki: PKI) -> None:
    inter = pki.root.intermediate("Intermediate\nfake: line\x1b[2J")
    leaf = inter.leaf("www.example.test", common_name="www.example.test\r\nInjected: yes")
    result = verify_chain(leaf.cert, [], TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["incomplete-chain"]
    assert result.problems[0].message == (
        "the intermediate 'Intermediate\\nfake: line\\x1b[2J' that issued 'www.example.test\\r\\nInjected: yes' "
        "is missing; a phone will refuse this chain"
    )


def test_verification_never_fetches(pki: PKI) -> None:
    # the intermediate is published at an address nobody serves: a phone does not go and look
    leaf = pki.inter.leaf("www.example.test", aia_url="http://127.0.0.1:9/inter.crt")
    result = verify_chain(leaf.cert, [], TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["incomplete-chain"]


def test_untrusted_root(pki: PKI) -> None:
    other = TrustStore((testing.TestCA.root("Another Root").cert,), source="corp roots")
    result = verify_chain(pki.leaf.cert, [pki.inter.cert, pki.root.cert], other, at=NOW)
    assert codes(result) == ["untrusted"]
    assert result.problems[0].message == (
        "the chain ends at the root 'certfleet Test Root', which is not among the trusted roots (corp roots)"
    )
    assert result.chain == (pki.leaf.cert, pki.inter.cert, pki.root.cert)


def test_private_intermediate_without_its_root_is_untrusted(pki: PKI) -> None:
    # no AIA on the intermediate: its root is most likely a private CA the store lacks
    result = verify_chain(pki.leaf.cert, [pki.inter.cert], TrustStore.mozilla(), at=NOW)
    assert codes(result) == ["untrusted"]
    assert "issued by 'certfleet Test Root'" in result.problems[0].message


def test_mozilla_does_not_trust_a_test_root(pki: PKI) -> None:
    result = verify_chain(pki.leaf.cert, [pki.inter.cert, pki.root.cert], TrustStore.mozilla(), at=NOW)
    assert not result.valid and codes(result) == ["untrusted"]


def test_self_signed_leaf(pki: PKI) -> None:
    leaf = handmade_leaf(pki.root, "self.example.test", self_signed=True)
    result = verify_chain(leaf, [], TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["self-signed"]


def test_self_signed_leaf_given_as_trusted_is_accepted(pki: PKI) -> None:
    # the user chose to trust this very certificate (as a phone does with an installed profile)
    leaf = handmade_leaf(pki.root, "self.example.test", self_signed=True)
    result = verify_chain(leaf, [], TrustStore((leaf,)), at=NOW)
    assert result.valid and result.chain == (leaf,)


def test_client_certificate_lacks_server_auth(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", server_auth=False)
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["missing-server-auth"]
    assert result.problems[0].message == "the certificate's extended key usage lacks serverAuth (it allows: clientAuth)"


def test_leaf_without_eku_is_refused_like_an_iphone(pki: PKI) -> None:
    leaf = handmade_leaf(pki.inter, "www.example.test", eku=False)
    result = verify_chain(leaf, [pki.inter.cert], TrustStore((pki.root.cert,)), at=NOW)
    assert not result.valid
    assert codes(result) == ["missing-server-auth"]
    assert "iPhones" in result.problems[0].message


@pytest.mark.parametrize(("key", "word"), [("rsa:1024", "RSA 1024 bits"), ("ed25519", "DSA, Ed25519")])
def test_weak_leaf_key_is_refused(pki: PKI, key: str, word: str) -> None:
    leaf = pki.inter.leaf("www.example.test", key=key)
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), at=NOW)
    assert not result.valid
    assert codes(result) == ["weak-key"]
    assert word in result.problems[0].message


def test_wildcard_over_a_public_suffix_is_refused(pki: PKI) -> None:
    leaf = pki.inter.leaf("*.co.uk")
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), name="example.co.uk", at=NOW)
    assert not result.valid
    assert codes(result) == ["name-mismatch"]
    assert "public suffix" in result.problems[0].message


def test_no_san_at_all(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", san=False)
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["no-san"]
    named = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), name="www.example.test", at=NOW)
    assert codes(named) == ["no-san"]


def test_a_path_beyond_its_length_constraint_is_named(pki: PKI) -> None:
    # a pathLenConstraint of 0 forbids another intermediate below
    below = pki.inter.intermediate("Too Deep")
    leaf = below.leaf("www.example.test")
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((pki.root.cert,)), at=NOW)
    assert not result.valid
    assert codes(result) == ["path-length-exceeded"]
    assert result.problems[0].message == (
        "the intermediate 'certfleet Test Intermediate' allows 0 intermediates below it (pathLenConstraint), "
        "and this chain has 1"
    )
    assert "<Certificate" not in result.problems[0].message


def test_an_algorithm_refusal_is_worded_without_rust_internals() -> None:
    root = testing.TestCA.root("Ed25519 Root", key="ed25519")
    leaf = root.intermediate("Intermediate").leaf("www.example.test")
    result = verify_chain(leaf.cert, leaf.chain, TrustStore((root.cert,)), at=NOW)
    assert codes(result) == ["invalid"]
    assert result.problems[0].message.endswith("Forbidden public key algorithm: Ed25519")


def test_forged_issuer_name(pki: PKI) -> None:
    forger = testing.TestCA.root("certfleet Test Intermediate")  # the same name as the real one
    assert forger.cert.subject == pki.inter.cert.subject
    forged = forger.leaf("www.example.test")
    result = verify_chain(forged.cert, [pki.inter.cert], TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["invalid"]
    assert "no certificate of that name here signed it" in result.problems[0].message


_ECDSA_SHA256 = bytes.fromhex("06082a8648ce3d040302")  # DER of OID 1.2.840.10045.4.3.2


def unknown_signature_algorithm(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` claiming a signature algorithm nobody knows (1.2.840.10045.4.3.127)."""
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(_ECDSA_SHA256) == 2, "made for ECDSA-SHA256 certificates"
    return x509.load_der_x509_certificate(der.replace(_ECDSA_SHA256, _ECDSA_SHA256[:-1] + b"\x7f"))


def undecodable_issuer(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` with its issuer's O= value under tag 0: it loads, and fails once its issuer is read."""
    der = cert.public_bytes(serialization.Encoding.DER)
    issuer = cert.issuer.public_bytes()
    broken = issuer.replace(bytes.fromhex("060355040a0c"), bytes.fromhex("060355040a00"), 1)
    assert broken != issuer and der.count(issuer) >= 1
    damaged = x509.load_der_x509_certificate(der.replace(issuer, broken, 1))
    with pytest.raises(ValueError):
        _ = damaged.issuer
    return damaged


@pytest.mark.parametrize("weak", ["leaf", "intermediate"])
@pytest.mark.parametrize("alg", [hashes.SHA1(), hashes.MD5()])  # noqa: S303 (weak on purpose)
def test_weak_signature_is_named_not_hidden(weak: str, alg: hashes.HashAlgorithm) -> None:
    # cryptography refuses SHA-1 and MD5 outright; the report must say so, not "invalid"
    root = testing.TestCA.root("RSA Root", key="rsa:2048")
    inter = root.intermediate("Weak Intermediate", key="rsa:2048", hash_alg=alg if weak == "intermediate" else None)
    leaf = inter.leaf("www.example.test", hash_alg=alg if weak == "leaf" else None)
    result = verify_chain(leaf.cert, [inter.cert], TrustStore((root.cert,)), at=NOW)
    assert not result.valid
    assert codes(result) == ["weak-signature"]
    problem = result.problems[0]
    assert problem.subject == fingerprint(leaf.cert if weak == "leaf" else inter.cert)
    assert problem.severity is Severity.ERROR
    assert problem.message.endswith("signatures, so a phone will refuse this chain")
    assert result.chain == (leaf.cert, inter.cert, root.cert)


def test_sha1_self_signature_of_a_trusted_root_is_not_weak() -> None:
    root = testing.TestCA.root("Old SHA-1 Root", key="rsa:2048", hash_alg=hashes.SHA1())  # noqa: S303 (weak on purpose)
    leaf = root.intermediate("Modern Intermediate").leaf("www.example.test")
    assert verify_chain(leaf.cert, leaf.chain, TrustStore((root.cert,)), at=NOW).valid


def test_unknown_signature_algorithm(pki: PKI) -> None:
    leaf = unknown_signature_algorithm(pki.inter.leaf("www.example.test").cert)
    result = verify_chain(leaf, [pki.inter.cert], TrustStore((pki.root.cert,)), at=NOW)
    assert codes(result) == ["weak-signature"]
    assert result.problems[0].message == (
        "the certificate is signed with 1.2.840.10045.4.3.127, an algorithm clients do not accept"
    )


@pytest.mark.parametrize("which", ["leaf", "intermediate"])
def test_a_certificate_whose_names_do_not_decode_is_an_input_error(pki: PKI, which: str) -> None:
    leaf, inter = pki.leaf.cert, pki.inter.cert
    if which == "leaf":
        leaf = undecodable_issuer(leaf)
    else:
        inter = undecodable_issuer(inter)
    with pytest.raises(FormatError, match="subject or issuer name does not decode"):
        verify_chain(leaf, [inter], TrustStore((pki.root.cert,)), at=NOW)


def test_several_problems_at_once(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", not_before=NOW - dt.timedelta(days=100), days=10)
    result = verify_chain(leaf.cert, [], TrustStore((pki.root.cert,)), name="mail.example.test", at=NOW)
    assert codes(result) == ["expired", "name-mismatch", "incomplete-chain"]


def test_empty_trust_store(pki: PKI) -> None:
    result = verify_chain(pki.leaf.cert, pki.leaf.chain, TrustStore(()), at=NOW)
    assert not result.valid
    assert "incomplete-chain" in codes(result) or "untrusted" in codes(result)


def test_max_depth(pki: PKI) -> None:
    trust = TrustStore((pki.root.cert,))
    assert verify_chain(pki.leaf.cert, pki.leaf.chain, trust, at=NOW, max_depth=1).valid
    result = verify_chain(pki.leaf.cert, pki.leaf.chain, trust, at=NOW, max_depth=0)
    assert not result.valid and codes(result) == ["invalid"]


def test_naive_time_is_a_programmer_error(pki: PKI) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_chain(pki.leaf.cert, [], TrustStore((pki.root.cert,)), at=dt.datetime.now())


def test_verifier_checks_many_leaves(pki: PKI) -> None:
    verifier = Verifier(TrustStore((pki.root.cert,)), [pki.inter.cert], at=NOW)
    leaves = [pki.inter.leaf(f"host{i}.example.test") for i in range(5)]
    results = [verifier.verify(leaf.cert) for leaf in leaves]
    assert all(r.valid for r in results)
    assert [r.name for r in results] == [f"host{i}.example.test" for i in range(5)]
    assert all(r.chain == (leaf.cert, pki.inter.cert, pki.root.cert) for r, leaf in zip(results, leaves, strict=True))


def test_verifier_shortcut_still_checks_each_leaf(pki: PKI) -> None:
    verifier = Verifier(TrustStore((pki.root.cert,)), [pki.inter.cert], at=NOW, reuse_proven=True)
    assert verifier.verify(pki.leaf.cert).valid  # proves the intermediate
    assert verifier.proven == (pki.inter.cert,)
    forged = testing.TestCA.root("certfleet Test Intermediate").leaf("www.example.test")
    expired = pki.inter.leaf("www.example.test", not_before=NOW - dt.timedelta(days=100), days=10)
    client = pki.inter.leaf("www.example.test", server_auth=False)
    assert codes(verifier.verify(forged.cert)) == ["invalid"]
    assert codes(verifier.verify(expired.cert)) == ["expired"]
    assert codes(verifier.verify(client.cert)) == ["missing-server-auth"]
    assert codes(verifier.verify(pki.leaf.cert, "mail.example.test")) == ["name-mismatch"]
    assert verifier.verify(pki.leaf.cert, "example.test").valid


@pytest.mark.parametrize("constrained", ["root", "intermediate"])
def test_verifier_honours_name_constraints_for_every_leaf(constrained: str) -> None:
    # name constraints above a shared intermediate must apply to each leaf, not just the first
    permitted = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.test")], excluded_subtrees=None)
    extensions = {constrained: [(permitted, True)]}
    root = testing.TestCA.root("Constraining Root", extensions=extensions.get("root", []))
    inter = root.intermediate("Shared Intermediate", extensions=extensions.get("intermediate", []))
    verifier = Verifier(TrustStore((root.cert,)), [inter.cert], at=NOW, reuse_proven=True)
    inside = handmade_leaf(inter, "www.example.test")
    outside = handmade_leaf(inter, "www.elsewhere.test")
    assert verifier.verify(inside).valid
    assert not verifier.verify(outside).valid
    assert verifier.verify(handmade_leaf(inter, "mail.example.test")).valid
    assert verifier.proven == ()  # a constrained path is never taken as proven


def test_a_plain_verifier_remembers_nothing(pki: PKI) -> None:
    verifier = Verifier(TrustStore((pki.root.cert,)), [pki.inter.cert], at=NOW)
    assert verifier.verify(pki.leaf.cert).valid
    assert verifier.verify(pki.inter.leaf("host1.example.test").cert).valid
    assert verifier.proven == ()


def test_find_paths_prefers_a_trusted_end(pki: PKI) -> None:
    stranger = testing.TestCA.root("certfleet Test Root")  # same name, other key: not the issuer
    paths = find_paths(pki.leaf.cert, [stranger.cert, pki.inter.cert], TrustStore((pki.root.cert,)), at=NOW)
    assert paths[0].trusted
    assert paths[0].certs == (pki.leaf.cert, pki.inter.cert, pki.root.cert)
