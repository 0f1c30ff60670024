"""Lint: each code fires on the chain that deserves it, and none fires on a clean chain."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes
from test_verify import undecodable_issuer, unknown_signature_algorithm

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import FormatError
from certfleet.lint import MAX_VALIDITY, lint, max_validity_days, validity_rule
from certfleet.problems import Problem, ProblemCode, Severity
from certfleet.trust import TrustStore
from conftest import PKI

NOW = dt.datetime.now(dt.UTC)


def codes(problems: list[Problem]) -> list[str]:
    return [p.code.value for p in problems]


@pytest.fixture(scope="module")
def rsa_ca() -> testing.TestCA:
    """An RSA intermediate under an RSA root: the only kind that can still sign with SHA-1 or MD5."""
    return testing.TestCA.root("RSA Root", key="rsa:2048").intermediate("RSA Intermediate", key="rsa:2048")


def test_clean_chain_has_no_problems(pki: PKI) -> None:
    assert lint([pki.leaf.cert, pki.inter.cert], now=NOW) == []
    assert lint([pki.leaf.cert, pki.inter.cert], now=NOW, trust=TrustStore((pki.root.cert,))) == []


def test_empty_chain() -> None:
    assert lint([], now=NOW) == []


@pytest.mark.parametrize(("alg", "word"), [(hashes.SHA1(), "SHA-1"), (hashes.MD5(), "MD5")])  # noqa: S303 (weak on purpose)
def test_weak_signature_on_the_leaf(rsa_ca: testing.TestCA, alg: hashes.HashAlgorithm, word: str) -> None:
    leaf = rsa_ca.leaf("www.example.test", hash_alg=alg)
    problems = lint([leaf.cert, rsa_ca.cert], now=NOW)
    assert codes(problems) == ["weak-signature"]
    assert problems[0].message == (
        f"the certificate is signed with {word}; clients refuse {word} signatures, so a phone will refuse this chain"
    )
    assert problems[0].severity is Severity.ERROR
    assert problems[0].subject == fingerprint(leaf.cert)


def test_weak_signature_on_an_intermediate() -> None:
    root = testing.TestCA.root("RSA Root", key="rsa:2048")
    inter = root.intermediate("SHA-1 Intermediate", hash_alg=hashes.SHA1())  # noqa: S303 (weak on purpose)
    leaf = inter.leaf("www.example.test")
    problems = lint([leaf.cert, inter.cert], now=NOW)
    assert codes(problems) == ["weak-signature"]
    assert "'SHA-1 Intermediate' is signed with SHA-1" in problems[0].message


@pytest.mark.parametrize("alg", [hashes.SHA1(), hashes.MD5()])  # noqa: S303 (weak on purpose)
@pytest.mark.parametrize("in_order", [True, False])
def test_weakly_signed_intermediate_is_still_put_in_its_place(alg: hashes.HashAlgorithm, in_order: bool) -> None:
    # cryptography refuses to check SHA-1 and MD5 signatures; the order must still be judged by them
    root = testing.TestCA.root("RSA Root", key="rsa:2048")
    inter = root.intermediate("Weak Intermediate", key="rsa:2048", hash_alg=alg)
    leaf = inter.leaf("www.example.test")
    served = [leaf.cert, inter.cert, root.cert] if in_order else [leaf.cert, root.cert, inter.cert]
    problems = lint(served, now=NOW, trust=TrustStore((root.cert,)))
    expected = ["weak-signature", "root-included"] if in_order else ["root-included", "weak-signature", "wrong-order"]
    assert codes(problems) == expected
    weak = next(p for p in problems if p.code is ProblemCode.WEAK_SIGNATURE)
    assert weak.subject == fingerprint(inter.cert) and weak.severity is Severity.ERROR


@pytest.mark.parametrize("trusted", [True, False])
def test_sha1_self_signature_of_a_root_is_harmless(trusted: bool) -> None:
    root = testing.TestCA.root("Old SHA-1 Root", key="rsa:2048", hash_alg=hashes.SHA1())  # noqa: S303 (weak on purpose)
    inter = root.intermediate("Modern Intermediate")
    leaf = inter.leaf("www.example.test")
    trust = TrustStore((root.cert,)) if trusted else None
    assert codes(lint([leaf.cert, inter.cert, root.cert], now=NOW, trust=trust)) == ["root-included"]


def test_sha1_self_signed_root_not_among_the_anchors_is_flagged() -> None:
    root = testing.TestCA.root("Old SHA-1 Root", key="rsa:2048", hash_alg=hashes.SHA1())  # noqa: S303 (weak on purpose)
    leaf = root.intermediate("Modern Intermediate").leaf("www.example.test")
    served = [leaf.cert, *leaf.chain, root.cert]
    problems = lint(served, now=NOW, trust=TrustStore((testing.TestCA.root("Another").cert,)))
    assert codes(problems) == ["weak-signature", "root-included"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("rsa:1024", "the certificate's key is RSA 1024 bits; at least 2048 are needed"),
        ("ec:p521", "the certificate's key is on the curve secp521r1; browsers accept P-256 and P-384"),
        ("ed25519", "the certificate's key is Ed25519/Ed448, which browsers and phones do not accept"),
    ],
)
def test_weak_key(pki: PKI, key: str, message: str) -> None:
    leaf = pki.inter.leaf("www.example.test", key=key)
    problems = lint([leaf.cert, pki.inter.cert], now=NOW)
    assert codes(problems) == ["weak-key"]
    assert problems[0].message.startswith(message)


@pytest.mark.parametrize("key", ["rsa:2048", "ec:p256", "ec:p384"])
def test_good_keys(pki: PKI, key: str) -> None:
    leaf = pki.inter.leaf("www.example.test", key=key)
    assert lint([leaf.cert, pki.inter.cert], now=NOW) == []


def test_weak_key_of_an_intermediate_is_named() -> None:
    inter = testing.TestCA.root("Root", key="rsa:2048").intermediate("Small Intermediate", key="rsa:1024")
    leaf = inter.leaf("www.example.test")
    problems = lint([leaf.cert, inter.cert], now=NOW)
    assert codes(problems) == ["weak-key"]
    assert problems[0].message.startswith("the key of 'Small Intermediate' is RSA 1024 bits")


@pytest.mark.parametrize(
    ("issued", "limit"),
    [
        (dt.datetime(2012, 6, 30, 23, 59, 59, tzinfo=dt.UTC), None),  # before the Baseline Requirements
        (dt.datetime(2012, 7, 1, tzinfo=dt.UTC), 1826),  # 60 months
        (dt.datetime(2014, 5, 1, tzinfo=dt.UTC), 1826),
        (dt.datetime(2015, 3, 31, tzinfo=dt.UTC), 1827),  # 60 months over two leap days
        (dt.datetime(2015, 4, 1, tzinfo=dt.UTC), 1187),  # 39 months
        (dt.datetime(2018, 2, 28, tzinfo=dt.UTC), 1185),
        (dt.datetime(2018, 3, 1, tzinfo=dt.UTC), 825),
        (dt.datetime(2020, 8, 31, 23, 59, 59, tzinfo=dt.UTC), 825),
        (dt.datetime(2020, 9, 1, tzinfo=dt.UTC), 398),
        (dt.datetime(2026, 3, 14, 23, 59, 59, tzinfo=dt.UTC), 398),
        (dt.datetime(2026, 3, 15, tzinfo=dt.UTC), 200),
        (dt.datetime(2027, 3, 14, tzinfo=dt.UTC), 200),
        (dt.datetime(2027, 3, 15, tzinfo=dt.UTC), 100),
        (dt.datetime(2029, 3, 14, tzinfo=dt.UTC), 100),
        (dt.datetime(2029, 3, 15, tzinfo=dt.UTC), 47),
        (dt.datetime(2040, 1, 1, tzinfo=dt.UTC), 47),
    ],
)
def test_max_validity_table(issued: dt.datetime, limit: int | None) -> None:
    assert max_validity_days(issued) == limit


def test_max_validity_is_one_table() -> None:
    starts = [rule.start for rule in MAX_VALIDITY]
    assert starts == sorted(starts, reverse=True)
    assert all((rule.days is None) != (rule.months is None) for rule in MAX_VALIDITY)
    assert MAX_VALIDITY[-1].start == dt.datetime(2012, 7, 1, tzinfo=dt.UTC)
    assert validity_rule(dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) is None


@pytest.mark.parametrize(
    ("issued", "days", "too_long"),
    [
        ("2011-06-01", 3650, False),  # no rule yet
        ("2014-05-01", 1095, False),
        ("2014-05-01", 1826, False),  # five years to the day: 60 months
        ("2014-05-01", 1827, True),
        ("2016-01-15", 1186, False),  # 39 months less a day
        ("2016-01-15", 1200, True),
        ("2019-01-10", 824, False),
        ("2019-01-10", 825, True),  # both ends count, as for 398 days
        ("2025-06-01", 397, False),
        ("2025-06-01", 398, True),  # the Baseline Requirements count both ends: 398 days and a second
        ("2025-06-01", 399, True),
        ("2026-03-20", 199, False),
        ("2026-03-20", 201, True),
        ("2027-04-01", 99, False),
        ("2027-04-01", 101, True),
        ("2029-04-01", 46, False),
        ("2029-04-01", 48, True),
    ],
)
def test_validity_too_long(pki: PKI, issued: str, days: int, too_long: bool) -> None:
    start = dt.datetime.fromisoformat(issued).replace(tzinfo=dt.UTC)
    leaf = pki.inter.leaf("www.example.test", not_before=start, days=days)
    at = start + dt.timedelta(days=1)
    found = [p for p in lint([leaf.cert, pki.inter.cert], now=at) if p.code is ProblemCode.VALIDITY_TOO_LONG]
    assert bool(found) is too_long
    if found:
        rule = validity_rule(start)
        assert rule is not None
        assert found[0].severity is Severity.WARNING
        assert found[0].message == (
            f"valid for more than {days} days; certificates issued on {issued} may live at most {rule.limit} "
            f"({rule.rule}, in force from {rule.start:%Y-%m-%d})"
        )


def test_a_2014_certificate_is_judged_by_the_rule_of_2014(pki: PKI) -> None:
    start = dt.datetime(2014, 6, 1, tzinfo=dt.UTC)
    leaf = pki.inter.leaf("www.example.test", not_before=start, days=2 * 365)
    problems = lint([leaf.cert, pki.inter.cert], now=start + dt.timedelta(days=1))
    assert ProblemCode.VALIDITY_TOO_LONG not in codes(problems)  # 398 days would have flagged it
    longer = pki.inter.leaf("www.example.test", not_before=start, days=6 * 365)
    (found,) = [p for p in lint([longer.cert, pki.inter.cert], now=start) if p.code is ProblemCode.VALIDITY_TOO_LONG]
    assert found.message.endswith(
        "may live at most 60 months (CA/B Forum Baseline Requirements 1.0, in force from 2012-07-01)"
    )


def test_no_san(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", san=False)
    problems = lint([leaf.cert, pki.inter.cert], now=NOW)
    assert codes(problems) == ["no-san"]
    assert problems[0].severity is Severity.ERROR


@pytest.mark.parametrize(
    ("cn", "flagged"),
    [("other.example.test", True), ("WWW.example.test", False), ("10.0.0.1", False), ("bücher.example", False)],
)
def test_cn_not_in_san(pki: PKI, cn: str, flagged: bool) -> None:
    leaf = pki.inter.leaf("www.example.test", "10.0.0.1", "xn--bcher-kva.example", common_name=cn)
    problems = lint([leaf.cert, pki.inter.cert], now=NOW)
    assert codes(problems) == (["cn-not-in-san"] if flagged else [])


def test_missing_server_auth(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", server_auth=False)
    problems = lint([leaf.cert, pki.inter.cert], now=NOW)
    assert codes(problems) == ["missing-server-auth"]
    assert "clientAuth" in problems[0].message


def test_root_included(pki: PKI) -> None:
    problems = lint([pki.leaf.cert, pki.inter.cert, pki.root.cert], now=NOW)
    assert codes(problems) == ["root-included"]
    assert problems[0].severity is Severity.WARNING
    assert problems[0].hint == "leave the root out"
    assert problems[0].subject == fingerprint(pki.root.cert)


@pytest.mark.parametrize(
    "order",
    [
        ("leaf", "root", "inter"),
        ("leaf", "other"),
        ("inter", "leaf"),
    ],
)
def test_wrong_order(pki: PKI, order: tuple[str, ...]) -> None:
    other = testing.TestCA.root("Unrelated Root").intermediate("Unrelated Intermediate")
    certs = {"leaf": pki.leaf.cert, "inter": pki.inter.cert, "root": pki.root.cert, "other": other.cert}
    problems = lint([certs[name] for name in order], now=NOW)
    wrong = [p for p in problems if p.code is ProblemCode.WRONG_ORDER]
    assert len(wrong) == 1
    assert wrong[0].severity is Severity.ERROR
    assert wrong[0].message.startswith("the chain is out of order: certificate ")


@pytest.mark.parametrize("order", [("leaf", "inter"), ("inter", "leaf")])
def test_a_signature_nobody_can_check_is_weak_not_out_of_order(pki: PKI, order: tuple[str, ...]) -> None:
    leaf = unknown_signature_algorithm(pki.inter.leaf("www.example.test").cert)
    certs = {"leaf": leaf, "inter": pki.inter.cert}
    problems = lint([certs[name] for name in order], now=NOW)
    expected = ["weak-signature"] if order[0] == "leaf" else ["wrong-order"]
    assert codes(problems) == expected
    if order[0] == "leaf":
        assert "1.2.840.10045.4.3.127, an algorithm clients do not accept" in problems[0].message


def test_a_certificate_whose_names_do_not_decode_is_an_input_error(pki: PKI) -> None:
    with pytest.raises(FormatError, match="subject or issuer name does not decode"):
        lint([pki.leaf.cert, undecodable_issuer(pki.inter.cert)], now=NOW)


def test_expiring_soon(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", days=13)
    problems = lint([leaf.cert, pki.inter.cert], now=NOW)
    assert codes(problems) == ["expiring-soon"]
    expected = f"expires on {leaf.cert.not_valid_after_utc:%Y-%m-%d}, in 12 days"
    assert problems[0].message == expected
    assert problems[0].severity is Severity.WARNING
    assert lint([leaf.cert, pki.inter.cert], now=NOW, expiring_days=10) == []


def test_expiring_intermediate_is_named() -> None:
    root = testing.TestCA.root("Root")
    inter = root.intermediate("Ending Intermediate", days=5)
    problems = lint([inter.leaf("www.example.test").cert, inter.cert], now=NOW)
    assert [p.message.split(" expires")[0] for p in problems] == ["the intermediate 'Ending Intermediate'"]


def test_expired(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", not_before=NOW - dt.timedelta(days=100), days=30)
    problems = lint([leaf.cert, pki.inter.cert], now=NOW)
    assert codes(problems) == ["expired"]
    assert problems[0].message == f"expired on {leaf.cert.not_valid_after_utc:%Y-%m-%d}, 70 days ago"


def test_naive_now_is_a_programmer_error(pki: PKI) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        lint([pki.leaf.cert], now=dt.datetime.now())


def test_a_dsa_key_is_named_as_such(pki: PKI) -> None:
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography deprecates DSA
        key = dsa.generate_private_key(1024)  # noqa: S505 (a throw-away test key)
    leaf = pki.leaf.cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.test")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    cert = builder.sign(pki.inter.key, hashes.SHA256())  # type: ignore[arg-type]
    problems = [p for p in lint([cert, pki.inter.cert], now=NOW) if p.code is ProblemCode.WEAK_KEY]
    assert [p.message for p in problems] == ["the certificate's key is DSA, which no TLS client accepts"]
