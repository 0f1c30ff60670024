"""Trust stores: Mozilla's roots, the system's, the user's; anchors as a name and a key."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from test_verify import unknown_signature_algorithm

from certfleet import testing
from certfleet.errors import InputError
from certfleet.signatures import Signature, check_signature, is_self_signed, signed_by
from certfleet.testing import pem
from certfleet.trust import TrustStore, load_trust
from conftest import PKI


def _reissued(ca: testing.TestCA, days: int = 7000) -> x509.Certificate:
    """The same root (name and key) with other dates and serial: what a CA does when it renews a root."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return builder.sign(ca.key, hashes.SHA256())


def test_mozilla_is_certifi_parsed_once() -> None:
    store = TrustStore.mozilla()
    assert store is TrustStore.mozilla()
    assert store.source == "mozilla (certifi)"
    blocks = Path(certifi.where()).read_bytes().count(b"-----BEGIN CERTIFICATE-----")
    assert len(store) == blocks > 100


def test_system_bundle_is_read() -> None:
    store = TrustStore.system()
    assert store.source.startswith("system (")
    assert len(store) > 50
    # Debian's bundle is built from Mozilla's roots: they share most anchors
    shared = sum(store.contains(c) for c in TrustStore.mozilla().certs)
    assert shared > 50


def test_from_pem_reads_blocks_among_text(pki: PKI) -> None:
    data = b"Bag Attributes\r\n  friendlyName: x\r\n" + pem(pki.root.cert) + b"some text\n" + pem(pki.inter.cert)
    store = TrustStore.from_pem(data, source="bundle.pem")
    assert [c.subject for c in store.certs] == [pki.root.cert.subject, pki.inter.cert.subject]
    assert store.source == "bundle.pem"


def _unknown_version(cert: x509.Certificate) -> bytes:
    """``cert`` as PEM with its version changed to 33, which cryptography refuses with its own exception."""
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    at = der.index(b"\xa0\x03\x02\x01\x02")
    der[at + 4] = 33
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der)) + b"-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("kind", ["broken base64", "unknown version"])
def test_from_pem_broken_block(pki: PKI, strict: bool, kind: str) -> None:
    broken = (
        b"-----BEGIN CERTIFICATE-----\nTUlJQm9v\n-----END CERTIFICATE-----\n"
        if kind == "broken base64"
        else _unknown_version(pki.inter.cert)
    )
    data = pem(pki.root.cert) + broken
    if strict:
        with pytest.raises(InputError, match="certificate 2 of the bundle does not parse"):
            TrustStore.from_pem(data, source="roots.pem")
    else:
        assert len(TrustStore.from_pem(data, strict=False)) == 1


def test_duplicates_are_kept_once(pki: PKI) -> None:
    store = TrustStore((pki.root.cert, pki.root.cert)).plus([pki.root.cert])
    assert len(store) == 1


def test_contains_by_name_and_key(pki: PKI) -> None:
    store = TrustStore((pki.root.cert,))
    assert store.contains(pki.root.cert)
    assert store.contains(_reissued(pki.root))  # same name, same key: the same anchor
    assert not store.contains(pki.inter.cert)
    impostor = testing.TestCA.root("certfleet Test Root")  # same name, another key
    assert impostor.cert.subject == pki.root.cert.subject
    assert not store.contains(impostor.cert)


def test_an_anchor_issues_by_signature_not_by_name(pki: PKI) -> None:
    impostor = testing.TestCA.root("certfleet Test Root")
    store = TrustStore((impostor.cert, pki.root.cert))
    assert [a for a in store.named(pki.inter.cert.issuer) if signed_by(pki.inter.cert, a)] == [pki.root.cert]
    assert [a for a in store.named(pki.leaf.cert.issuer) if signed_by(pki.leaf.cert, a)] == []
    assert store.named(pki.root.cert.subject) == (impostor.cert, pki.root.cert)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("issued", Signature.GOOD),
        ("sha1", Signature.WEAK),
        ("md5", Signature.WEAK),
        ("other-key", Signature.BAD),
        ("other-name", Signature.BAD),
        ("unknown-algorithm", Signature.UNCHECKED),
    ],
)
def test_check_signature_tells_weak_and_unchecked_from_bad(pki: PKI, case: str, expected: Signature) -> None:
    root = testing.TestCA.root("RSA Root", key="rsa:2048")
    weak = {"sha1": hashes.SHA1(), "md5": hashes.MD5()}.get(case)  # noqa: S303 (weak on purpose)
    inter = root.intermediate("Intermediate", hash_alg=weak)
    issuer = root.cert
    cert = inter.cert
    if case == "other-key":
        issuer = testing.TestCA.root("RSA Root", key="rsa:2048").cert
    elif case == "other-name":
        issuer = pki.root.cert
    elif case == "unknown-algorithm":
        cert, issuer = unknown_signature_algorithm(pki.leaf.cert), pki.inter.cert
    found = check_signature(cert, issuer)
    assert found is expected
    assert signed_by(cert, issuer) is (expected in (Signature.GOOD, Signature.WEAK))


def test_signed_by_and_self_signed(pki: PKI) -> None:
    assert signed_by(pki.leaf.cert, pki.inter.cert)
    assert not signed_by(pki.leaf.cert, pki.root.cert)
    assert is_self_signed(pki.root.cert)
    assert not is_self_signed(pki.inter.cert)


def test_plus_adds_anchors(pki: PKI) -> None:
    base = TrustStore.mozilla()
    more = base.plus([pki.root.cert], source="mozilla + mine")
    assert len(more) == len(base) + 1
    assert more.contains(pki.root.cert) and not base.contains(pki.root.cert)
    assert more.source == "mozilla + mine"


def test_load_trust_default_is_mozilla() -> None:
    assert load_trust() is TrustStore.mozilla()


def test_load_trust_adds_to_mozilla(pki: PKI) -> None:
    store = load_trust(trust=[("corp-root.pem", pki.root.cert_pem())])
    assert len(store) == len(TrustStore.mozilla()) + 1
    assert store.contains(pki.root.cert)
    assert store.source == "mozilla (certifi) + corp-root.pem"


def test_load_trust_only_replaces(pki: PKI) -> None:
    der = pki.root.cert.public_bytes(serialization.Encoding.DER)
    store = load_trust(trust_only=[("root.cer", der)])
    assert store.certs == (pki.root.cert,)
    assert store.source == "root.cer"


def test_load_trust_system_base(pki: PKI) -> None:
    store = load_trust(trust=[("root.pem", pki.root.cert_pem())], system=True)
    assert store.source.startswith("system (") and store.contains(pki.root.cert)


def test_load_trust_file_without_certificate(pki: PKI) -> None:
    with pytest.raises(InputError, match="holds no certificate to trust") as caught:
        load_trust(trust_only=[("key.pem", pki.leaf.key_pem())])
    assert str(caught.value).startswith("key.pem: ")


def test_load_trust_unreadable_file_names_it() -> None:
    with pytest.raises(InputError) as caught:
        load_trust(trust=[("roots.pem", b"not a certificate at all")])
    assert "roots.pem" in str(caught.value)


def test_load_trust_only_and_system_conflict(pki: PKI) -> None:
    with pytest.raises(InputError, match="cannot be used together"):
        load_trust(trust_only=[("root.pem", pki.root.cert_pem())], system=True)
