"""leafscan reads a leaf's SAN names, serverAuth and subject from its DER exactly as cryptography
decodes them, or abstains; and the verifier gives the same verdict either way."""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

import certfleet.verify
from certfleet import leafscan
from certfleet._batch.verifier import BatchVerifier
from certfleet.errors import CertfleetError
from certfleet.leafscan import LeafFacts, leaf_facts
from certfleet.testing import TestCA, general_names, make_key
from certfleet.trust import TrustStore
from certfleet.verify import Verification, Verifier
from support import LIMBO

NOW = dt.datetime.now(dt.UTC)


def _cryptography_view(cert: x509.Certificate) -> LeafFacts | None:
    """What leaf_facts must say of ``cert``, from cryptography's own decoding; None when it cannot decode them."""
    try:
        extensions = cert.extensions
    except (ValueError, TypeError, x509.DuplicateExtension):
        return None
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(ip.packed for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        server_auth = ExtendedKeyUsageOID.SERVER_AUTH in extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        server_auth = False
    return LeafFacts(dns, ips, server_auth, _curve(cert))


def _curve(cert: x509.Certificate) -> str | None:
    try:
        key = cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in certfleet.verify._PHONE_CURVES:
        return key.curve.name
    return None


def _limbo_certificates() -> list[x509.Certificate]:
    data = json.loads(gzip.decompress(LIMBO.read_bytes()))
    pems = {case["peer_certificate"] for case in data["testcases"]}
    for case in data["testcases"]:
        pems.update(case["untrusted_intermediates"], case["trusted_certs"])
    certs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # serial numbers of zero, and the like
        for pem in sorted(pems):
            try:
                certs.append(x509.load_pem_x509_certificate(pem.encode()))
            except ValueError:
                continue  # what does not load never reaches a verifier
    return certs


def test_every_answer_over_the_limbo_certificates_is_cryptographys() -> None:
    certs = _limbo_certificates()
    answered = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about odd names as it decodes them
        for cert in certs:
            facts = leaf_facts(cert.public_bytes(Encoding.DER))
            assert facts == leaf_facts(cert.tbs_certificate_bytes), cert
            if facts is None:
                continue
            answered += 1
            _ = cert.subject  # the facts say it decodes: it must
            if facts.ec_curve is not None:  # and a key they read is one cryptography loads, on that curve
                assert facts.ec_curve == _curve(cert), cert
            expected = _cryptography_view(cert)
            # a certificate whose other extensions do not decode has no such view to compare with
            if expected is not None:
                # a key they leave alone (an RSA key, a compressed point) is for cryptography to load
                assert facts == (expected if facts.ec_curve else replace(expected, ec_curve=None)), cert
    # the fast path is the common path: it abstains on the unusual few only
    assert answered > 0.95 * len(certs), (answered, len(certs))


def _leaf(
    subject: x509.Name,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    issuer: TestCA,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(make_key("ec:p256").public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.root("certfleet Leafscan Root").intermediate("certfleet Leafscan Intermediate")


SERVER_AUTH = (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
CN = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.test")])


def _san(*names: str) -> tuple[x509.ExtensionType, bool]:
    return x509.SubjectAlternativeName(general_names(names)), False


@pytest.mark.parametrize(
    ("names", "eku", "facts"),
    [
        (
            ("www.example.test", "api.example.test"),
            SERVER_AUTH,
            LeafFacts(("www.example.test", "api.example.test"), (), True, "secp256r1"),
        ),
        (
            ("*.example.test", "10.0.0.1", "::1"),
            SERVER_AUTH,
            LeafFacts(("*.example.test",), (bytes([10, 0, 0, 1]), bytes(15) + b"\x01"), True, "secp256r1"),
        ),
        (
            ("www.example.test",),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            LeafFacts(("www.example.test",), (), False, "secp256r1"),
        ),
        (
            ("www.example.test",),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]), True),
            LeafFacts(("www.example.test",), (), False, "secp256r1"),
        ),
        (("www.example.test",), None, LeafFacts(("www.example.test",), (), False, "secp256r1")),
        ((), SERVER_AUTH, LeafFacts((), (), True, "secp256r1")),
    ],
    ids=["dns", "wildcard-and-ips", "client-auth-only", "any-eku-critical", "no-eku", "no-san"],
)
def test_reads_names_and_server_auth(
    ca: TestCA, names: tuple[str, ...], eku: tuple[x509.ExtensionType, bool] | None, facts: LeafFacts
) -> None:
    extensions = [ext for ext in (_san(*names) if names else None, eku) if ext is not None]
    leaf = _leaf(CN, extensions, ca)
    assert leaf_facts(leaf.public_bytes(Encoding.DER)) == facts == _cryptography_view(leaf)


def _attribute(oid: x509.ObjectIdentifier, value: str, kind: _ASN1Type | None = None) -> x509.NameAttribute[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.NameAttribute(oid, value, kind, _validate=False) if kind else x509.NameAttribute(oid, value)


# each a shape leafscan was not written for: it must leave them to cryptography
UNUSUAL_SUBJECTS: dict[str, x509.Name] = {
    "bmp-string": x509.Name([_attribute(NameOID.ORGANIZATION_NAME, "Bäckerei", _ASN1Type.BMPString)]),
    "teletex": x509.Name([_attribute(NameOID.ORGANIZATION_NAME, "Example", _ASN1Type.T61String)]),
    "multi-valued-rdn": x509.Name(
        [
            x509.RelativeDistinguishedName(
                [_attribute(NameOID.COMMON_NAME, "www.example.test"), _attribute(NameOID.ORGANIZATION_NAME, "Example")]
            )
        ]
    ),
    "three-letter-country": x509.Name([_attribute(NameOID.COUNTRY_NAME, "USA", _ASN1Type.PrintableString)]),
    "long-common-name": x509.Name([_attribute(NameOID.COMMON_NAME, "a" * 65, _ASN1Type.UTF8String)]),
    "unique-identifier-as-text": x509.Name([_attribute(NameOID.X500_UNIQUE_IDENTIFIER, "x", _ASN1Type.UTF8String)]),
}


@pytest.mark.parametrize("shape", sorted(UNUSUAL_SUBJECTS))
def test_abstains_on_unusual_subjects(ca: TestCA, shape: str) -> None:
    leaf = _leaf(UNUSUAL_SUBJECTS[shape], [_san("www.example.test"), SERVER_AUTH], ca)
    assert leaf_facts(leaf.public_bytes(Encoding.DER)) is None


UNUSUAL_SANS: dict[str, x509.GeneralName] = {
    "email": x509.RFC822Name("admin@example.test"),
    "uri": x509.UniformResourceIdentifier("https://www.example.test/"),
    "directory-name": x509.DirectoryName(CN),
    "ip-network": x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),
}


@pytest.mark.parametrize("kind", sorted(UNUSUAL_SANS))
def test_abstains_on_san_entries_other_than_dns_and_ip(ca: TestCA, kind: str) -> None:
    san = x509.SubjectAlternativeName([x509.DNSName("www.example.test"), UNUSUAL_SANS[kind]])
    leaf = _leaf(CN, [(san, False), SERVER_AUTH], ca)
    assert leaf_facts(leaf.public_bytes(Encoding.DER)) is None


def _damaged(der: bytes, old: bytes, new: bytes) -> bytes:
    assert der.count(old) == 1
    return der.replace(old, new)


@pytest.mark.parametrize(
    ("what", "damage"),
    [
        ("truncated", lambda der: der[: len(der) // 2]),
        ("empty", lambda der: b""),
        ("not a sequence", lambda der: b"\x04" + der[1:]),
        ("non-utf-8 subject", lambda der: _damaged(der, b"\x0c\x10www.example.test", b"\x0c\x10www.ex\xffmple.test")),
        ("non-utf-8 dns name", lambda der: _damaged(der, b"\x82\x10www.example.test", b"\x82\x10www.ex\xffmple.test")),
        ("indefinite length", lambda der: b"\x30\x80" + der[4:]),
    ],
)
def test_abstains_on_damage(ca: TestCA, what: str, damage: Callable[[bytes], bytes]) -> None:
    leaf = _leaf(CN, [_san("www.example.test"), SERVER_AUTH], ca)
    der = leaf.public_bytes(Encoding.DER)
    assert leaf_facts(der) is not None
    assert leaf_facts(damage(der)) is None, what


# --- the verifier: the same verdict with and without the facts ---------------------------------------


def _leaves(ca: TestCA) -> list[tuple[str, x509.Certificate, str | None]]:
    return [
        ("plain", ca.leaf("www.example.test", "api.example.test").cert, None),
        ("plain, other name", ca.leaf("www.example.test", "api.example.test").cert, "api.example.test"),
        ("name not covered", ca.leaf("www.example.test").cert, "mail.example.test"),
        ("wildcard", ca.leaf("*.example.test").cert, None),
        ("wildcard, apex", ca.leaf("*.example.test").cert, "example.test"),
        ("ip only", ca.leaf("10.0.0.1").cert, None),
        ("ip asked", ca.leaf("www.example.test", "10.0.0.1").cert, "10.0.0.1"),
        ("client auth only", ca.leaf("www.example.test", server_auth=False).cert, None),
        ("no eku", _leaf(CN, [_san("www.example.test")], ca), None),
        ("no san", ca.leaf("www.example.test", san=False).cert, None),
        ("rsa 1024", ca.leaf("www.example.test", key="rsa:1024").cert, None),
        ("expired", ca.leaf("www.example.test", not_before=NOW - dt.timedelta(days=400), days=100).cert, None),
        (
            "email in san",
            _leaf(
                CN,
                [
                    (
                        x509.SubjectAlternativeName(
                            [x509.DNSName("www.example.test"), x509.RFC822Name("a@example.test")]
                        ),
                        False,
                    ),
                    SERVER_AUTH,
                ],
                ca,
            ),
            None,
        ),
        ("bmp subject", _leaf(UNUSUAL_SUBJECTS["bmp-string"], [_san("www.example.test"), SERVER_AUTH], ca), None),
    ]


def _one(verifier: BatchVerifier, leaf: x509.Certificate, name: str | None, der: bytes | None) -> Verification:
    result = verifier.verify_many([leaf], name, ders=[der])[0]
    assert not isinstance(result, CertfleetError), result
    return result


def test_verdicts_are_the_same_without_the_facts(ca: TestCA) -> None:
    trust = TrustStore((ca.root_cert,))
    cases = _leaves(ca)
    answered: list[LeafFacts] = []

    def counted(der: bytes) -> LeafFacts | None:
        facts = leaf_facts(der)
        if facts is not None:
            answered.append(facts)
        return facts

    fast = BatchVerifier(trust, ca.chain, at=NOW, facts=counted)
    with_facts = [_one(fast, leaf, name, leaf.public_bytes(Encoding.DER)) for _, leaf, name in cases]
    slow = BatchVerifier(trust, ca.chain, at=NOW, facts=lambda der: None)
    without = [_one(slow, leaf, name, None) for _, leaf, name in cases]
    plain = Verifier(trust, ca.chain, at=NOW)  # Verifier.verify never reads the DER
    for (what, leaf, name), one, other in zip(cases, with_facts, without, strict=True):
        assert one == other == plain.verify(leaf, name), what
    # both verdicts are covered, and all but the two unusual leaves went the fast way
    assert {v.valid for v in with_facts} == {True, False}
    assert len(answered) == len(cases) - 2


def test_a_leaf_whose_other_extensions_do_not_decode_is_judged_on_its_names_and_usage(ca: TestCA) -> None:
    # a certificate policy cryptography cannot parse: Certificate.extensions fails as a whole, while
    # its verifier, which reads the SAN and the EKU on their own, accepts the leaf
    broken_policy = x509.UnrecognizedExtension(ExtensionOID.CERTIFICATE_POLICIES, b"\x30\x03\x02\x01\x00")
    issuer_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())  # type: ignore[arg-type]
    extensions = [_san("www.example.test"), SERVER_AUTH, (issuer_key_id, False), (broken_policy, False)]
    leaf = _leaf(CN, extensions, ca)
    with pytest.raises(ValueError):
        _ = leaf.extensions
    trust = TrustStore((ca.root_cert,))
    plain = Verifier(trust, ca.chain, at=NOW).verify(leaf)
    assert plain.valid, plain.problems
    assert plain.name == "www.example.test"
    batch = BatchVerifier(trust, ca.chain, at=NOW)
    assert _one(batch, leaf, None, leaf.public_bytes(Encoding.DER)) == plain
    # without the facts, the extensions are read one by one (certfleet.extensions): the same verdict
    blind = BatchVerifier(trust, ca.chain, at=NOW, facts=lambda der: None)
    assert _one(blind, leaf, None, None) == plain


def test_curve_constants_are_the_ones_phones_accept() -> None:
    assert {curve.name for curve in leafscan._EC_KEYS.values()} == certfleet.verify._PHONE_CURVES


@pytest.mark.parametrize("spec", ["ec:p256", "ec:p384", "ec:p521", "rsa:2048", "rsa:1024"])
def test_reads_the_curve_of_a_valid_key_only(ca: TestCA, spec: str) -> None:
    leaf = ca.leaf("www.example.test", key=spec).cert
    facts = leaf_facts(leaf.public_bytes(Encoding.DER))
    assert facts is not None
    assert facts.ec_curve == _curve(leaf)
    assert (facts.ec_curve is None) == spec.startswith("rsa")


@pytest.mark.parametrize("spec", ["ec:p256", "ec:p384", "ec:p521"])
def test_a_damaged_point_is_left_to_cryptography(ca: TestCA, spec: str) -> None:
    """Bytes of the point changed at random: the facts vouch for a key exactly when cryptography loads it."""
    leaf = ca.leaf("www.example.test", key=spec).cert
    der = leaf.public_bytes(Encoding.DER)
    point = leaf.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    at = der.index(point)
    rng = random.Random(spec)
    loaded = refused = 0
    for _ in range(300):
        mutated = bytearray(der)
        offset = at + rng.randrange(len(point))
        mutated[offset] = rng.choice([b for b in range(256) if b != der[offset]])
        if rng.random() < 0.3:  # now and then, a point that is on the curve: another valid key
            mutated[at : at + len(point)] = _other_point(leaf.public_key().curve)
        cert = x509.load_der_x509_certificate(bytes(mutated))
        facts = leaf_facts(bytes(mutated))
        assert facts is not None
        assert facts.ec_curve == _curve(cert)
        loaded += facts.ec_curve is not None
        refused += facts.ec_curve is None
    assert loaded and refused  # both answers were put to the test


def _other_point(curve: ec.EllipticCurve) -> bytes:
    return ec.generate_private_key(curve).public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def test_random_damage_never_raises_and_never_misleads(ca: TestCA) -> None:
    """Bytes changed anywhere: an answer, when there is one for a certificate cryptography loads, is cryptography's."""
    san = x509.SubjectAlternativeName(
        [x509.DNSName("www.example.test"), x509.IPAddress(ipaddress.ip_address("10.1.2.3"))]
    )
    der = _leaf(CN, [(san, False), SERVER_AUTH], ca).public_bytes(Encoding.DER)
    rng = random.Random(2026)
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3000):
            mutated = bytearray(der)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(der))] = rng.randrange(256)
            facts = leaf_facts(bytes(mutated))  # never raises
            try:
                cert = x509.load_der_x509_certificate(bytes(mutated))
                _ = cert.subject
            except (ValueError, x509.InvalidVersion):
                continue  # what cryptography does not load never reaches the verifier
            expected = _cryptography_view(cert)
            if facts is not None and expected is not None:
                assert facts == expected
                compared += 1
    assert compared > 100
