"""inspect: which key of a pile of files is whose, as a library call (the CLI only prints it)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.csr import build_csr
from certfleet.formats import read_pool
from certfleet.inspection import inspect, key_of
from certfleet.problems import ProblemCode
from conftest import PKI

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_inspect_pairs_keys_with_certificates_and_csrs(pki: PKI) -> None:
    other = testing.TestCA.root("Inspect Other").leaf("other.test")
    csr = build_csr(pki.leaf.key, ["www.example.test"], None).public_bytes(serialization.Encoding.PEM)
    pool = read_pool(
        [
            ("fullchain.pem", pki.leaf.fullchain_pem()),
            ("again.pem", pki.leaf.cert_pem()),  # the leaf twice: listed once under its key
            ("www.key", pki.leaf.key_pem()),
            ("other.key", other.key_pem()),
            ("www.csr", csr),
        ]
    )
    report = inspect(pool, now=NOW)
    www, stray = report.keys
    assert [c.source for c in www.certificates] == ["fullchain.pem"]
    assert [c.source for c in www.csrs] == ["www.csr"]
    assert (stray.certificates, stray.csrs) == ((), ())
    [request] = report.csrs
    assert request.key is not None and request.key.source == "www.key"
    assert request.info.dns_names == ("www.example.test",)
    assert [p.code for p in report.problems] == [ProblemCode.KEY_MISMATCH]
    assert "other.key" in report.problems[0].message

    data = report.to_dict()
    assert [c["source"] for c in data["certificates"]] == ["fullchain.pem", "fullchain.pem", "again.pem"]
    assert data["keys"][0]["certificates"] == [{"sha256": fingerprint(pki.leaf.cert), "source": "fullchain.pem"}]
    assert data["keys"][0]["csrs"] == ["www.csr"]
    assert data["csrs"][0]["key"] == "www.key"
    assert data["csrs"][0]["source"] == "www.csr" and data["csrs"][0]["format"] == "pem"
    assert data["ignored"] == []
    assert data["problems"][0]["code"] == "key-mismatch"


def test_days_left_are_counted_from_the_now_given(pki: PKI) -> None:
    pool = read_pool([("leaf.pem", pki.leaf.cert_pem())])
    not_after = pki.leaf.cert.not_valid_after_utc
    early = inspect(pool, now=not_after - dt.timedelta(days=10, hours=1)).to_dict()
    late = inspect(pool, now=not_after + dt.timedelta(days=3)).to_dict()
    assert early["certificates"][0]["days_left"] == 10
    assert late["certificates"][0]["days_left"] == -3
    with pytest.raises(ValueError, match="timezone-aware"):
        inspect(pool, now=dt.datetime(2030, 1, 1))  # naive: refused


def test_key_of_finds_the_certificates_key(pki: PKI) -> None:
    other = testing.TestCA.root("Inspect Other").leaf("other.test")
    pool = read_pool([("other.key", other.key_pem()), ("www.key", pki.leaf.key_pem())])
    found = key_of(pool.keys, pki.leaf.cert)
    assert found is not None and found.source == "www.key"
    assert key_of(pool.keys, pki.inter.cert) is None
    assert key_of((), pki.leaf.cert) is None
