"""A name attribute out of its bounds (a country code of three letters): cryptography warns when
it decodes one. lint reports it as malformed-name; no Python warning ever reaches the user."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.lint import lint
from certfleet.problems import ProblemCode, Severity
from conftest import PKI
from support.oddities import COMMON_NAME, COUNTRY, PRINTABLE, UTF8, leaf_with_subject


@pytest.fixture(scope="module")
def odd(pki: PKI) -> x509.Certificate:
    subject = [(COUNTRY, PRINTABLE, b"USA"), (COMMON_NAME, UTF8, b"www.example.test")]
    return leaf_with_subject(pki.inter, subject, "www.example.test")


def test_cryptography_warns_about_it(odd: x509.Certificate) -> None:
    with pytest.warns(UserWarning, match="Attribute's length"):
        _ = odd.subject


def test_lint_reports_it(odd: x509.Certificate, pki: PKI) -> None:
    import datetime as dt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems = lint([odd, pki.inter.cert], now=dt.datetime.now(dt.UTC), trust=None)
    found = [p for p in problems if p.code is ProblemCode.MALFORMED_NAME]
    assert len(found) == 1
    assert found[0].severity is Severity.WARNING
    assert found[0].message == (
        "the certificate's subject has the country code 'USA'; a country code is two letters (ISO 3166)"
    )
    assert not [w for w in caught if "Attribute's length" in str(w.message) and "lint.py" in w.filename]


def test_lint_reports_a_common_name_too_long(pki: PKI) -> None:
    import datetime as dt

    long_cn = b"a" * 70
    leaf = leaf_with_subject(pki.inter, [(COMMON_NAME, UTF8, long_cn)], "www.example.test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problems = lint([leaf, pki.inter.cert], now=dt.datetime.now(dt.UTC))
    found = [p.message for p in problems if p.code is ProblemCode.MALFORMED_NAME]
    assert found == ["the certificate's subject common name is 70 bytes long; RFC 5280 allows 1 to 64"]


@pytest.mark.parametrize("command", ["inspect", "chain", "verify", "verify --each"])
def test_no_warning_reaches_the_user(cli: Any, pki: PKI, odd: x509.Certificate, tmp_path: Path, command: str) -> None:
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(odd.public_bytes(serialization.Encoding.PEM))
    inter = tmp_path / "inter.pem"
    inter.write_bytes(pki.inter.cert_pem())
    root = pki.root_file(tmp_path)
    args: dict[str, list[str | Path]] = {
        "inspect": ["inspect", leaf],
        "chain": ["chain", leaf, inter, "--trust-only", root, "--no-fetch"],
        "verify": ["verify", leaf, inter, "--trust-only", root],
        "verify --each": ["verify", "--each", leaf, "--untrusted", inter, "--trust-only", root],
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what the command itself does not silence is recorded
        result = cli(*args[command])
    assert result.code == 0, result.err
    assert [str(w.message) for w in caught] == []
    assert "Warning" not in result.err
    if command == "chain":
        assert "[malformed-name]" in result.out


def test_no_warning_in_a_real_process(cli_proc: Any, odd: x509.Certificate, tmp_path: Path) -> None:
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(odd.public_bytes(serialization.Encoding.PEM))
    result = cli_proc("inspect", leaf)
    assert result.code == 0
    assert result.err == ""
