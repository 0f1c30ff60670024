"""names: IDNA, wildcard rules, coverage of required names, and the SAN/wildcard plan."""

from __future__ import annotations

import re

import pytest

from certfleet.errors import CertfleetError, InputError, LimitError
from certfleet.names import (
    MAX_NAMES,
    canonical_name,
    check_wildcard,
    coverage,
    covers,
    is_ip,
    normalize_name,
    normalize_names,
    plan,
)
from conftest import PKI


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("Www.Example.COM.", "www.example.com"),
        ("  www.example.com  ", "www.example.com"),
        ("*.Bücher.example", "*.xn--bcher-kva.example"),
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008, not transitional: ß stays ß
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("example。com", "example.com"),  # UTS 46 maps the ideographic full stop
        ("localhost", "localhost"),
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[::1]", "::1"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "label", "why"),
    [
        ("-bad-.example", "'-bad-'", "must not start or end with a hyphen"),
        ("bad-.example", "'bad-'", "must not start or end with a hyphen"),
        ("a..b", None, "empty label"),
        (".example.com", None, "empty label"),
        ("a" * 64 + ".example", "'" + "a" * 64 + "'", "at most 63"),
        ("under_score.example", "'under_score'", "underscore is not allowed"),
        ("_acme-challenge.example.com", "'_acme-challenge'", "underscore is not allowed"),
        ("ab--cd.example", "'ab--cd'", "3rd and 4th"),
        ("xn--zz.example", "'xn--zz'", "not a valid xn-- A-label"),
        ("exa mple.com", "'exa mple'", "space is not allowed"),
        ("w*.example.com", "'w*'", "whole left-most label"),
        ("www.*.example.com", "'*'", "whole left-most label"),
        ("1.2.3", "'3'", "all digits"),
        ("010.1.1.1", "'1'", "all digits"),  # leading zeros: not an IP address, and not a host name
        ("", None, "empty"),
        ("*", None, "needs a domain"),
        ("fe80::1%eth0", None, "zone"),
    ],
)
def test_invalid_names_are_refused_saying_which_label_and_why(raw: str, label: str | None, why: str) -> None:
    with pytest.raises(InputError) as info:
        normalize_name(raw)
    message = str(info.value)
    assert why in message
    if label is not None:
        assert f"label {label}" in message
    assert info.value.hint


def test_a_name_too_long_is_refused() -> None:
    name = ".".join(["a" * 60] * 5)  # every label fine, the whole over 253
    with pytest.raises(InputError, match="at most 253"):
        normalize_name(name)
    with pytest.raises(LimitError):
        normalize_name("a" * 5000)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("192.0.2.1", True), ("::1", True), ("[2001:db8::1]", True), ("example.com", False), ("1.2.3", False)],
)
def test_is_ip(name: str, expected: bool) -> None:
    assert is_ip(name) is expected


@pytest.mark.parametrize(
    "pattern", ["*.example.com", "*.Example.COM", "*.a.example.co.uk", "*.example.test", "www.x.com"]
)
def test_good_wildcards_pass(pattern: str) -> None:
    check_wildcard(pattern)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("*.com", "top-level domain 'com'"),
        ("*.co.uk", "co.uk is a public suffix"),
        ("*.github.io", "github.io is a public suffix"),
        ("*.test", "top-level domain"),
        ("w*.example.com", "whole left-most label, not part of 'w*'"),
        ("*w.example.com", "whole left-most label"),
        ("www.*.example.com", "only in the left-most label"),
        ("*.*.example.com", "whole left-most label"),
    ],
)
def test_bad_wildcards_are_refused(pattern: str, why: str) -> None:
    with pytest.raises(InputError, match="valid") as info:
        check_wildcard(pattern)
    assert why in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "WWW.Example.Com.", True),
        ("*.EXAMPLE.com", "mail.example.com", True),
        ("*.example.com", "example.com", False),  # never the apex
        ("*.example.com", "a.b.example.com", False),  # exactly one label
        ("*.example.com", "www.example.org", False),
        ("*.xn--bcher-kva.example", "www.bücher.example", True),
        ("www.example.com", "WWW.EXAMPLE.COM", True),
        ("www.example.com", "example.com", False),
        ("*.com", "example.com", False),  # a wildcard over a public suffix covers nothing
        ("*.co.uk", "example.co.uk", False),
        ("w*.example.com", "www.example.com", False),  # partial wildcards are not honoured
        ("192.0.2.1", "192.0.2.1", True),
        ("2001:db8::1", "2001:DB8:0::1", True),
        ("192.0.2.1", "192.0.2.2", False),
        ("*.0.2.1", "192.0.2.1", False),  # IPs only equal IPs
        ("192.0.2.1", "*.0.2.1", False),
        ("*.example.com", "*.example.com", True),  # a wildcard asked for is covered by the same wildcard
        ("*.example.com", "*.a.example.com", False),
        ("*.com", "*.com", False),
    ],
)
def test_covers(pattern: str, name: str, expected: bool) -> None:
    assert covers(pattern, name) is expected


def test_coverage_messages() -> None:
    cert = ["*.example.com", "www.example.org", "192.0.2.1"]
    required = [
        "example.com",
        "a.b.example.com",
        "www.example.com",
        "WWW.example.org",
        "192.0.2.1",
        "192.0.2.2",
        "mail.example.org",
    ]
    result = coverage(cert, required)
    assert not result.complete
    assert dict(result.covered) == {
        "www.example.com": "*.example.com",
        "www.example.org": "www.example.org",
        "192.0.2.1": "192.0.2.1",
    }
    reasons = {m.name: m.reason for m in result.missing}
    assert reasons == {
        "example.com": "example.com is not covered: *.example.com covers exactly one label, never the apex",
        "a.b.example.com": "a.b.example.com is not covered: *.example.com covers exactly one label",
        "192.0.2.2": (
            "192.0.2.2 is not covered: an IP address is covered only by the same IP address in the certificate"
        ),
        "mail.example.org": "mail.example.org is not covered: it is not among the certificate's names",
    }
    as_dict = result.to_dict()
    assert as_dict["complete"] is False
    assert [m["name"] for m in as_dict["missing"]] == [
        "example.com",
        "a.b.example.com",
        "192.0.2.2",
        "mail.example.org",
    ]


def test_coverage_of_a_certificate(pki: PKI) -> None:
    leaf = pki.inter.leaf("www.example.test", "*.example.test", "192.0.2.7")
    result = coverage(leaf.cert, ["www.example.test", "api.example.test", "192.0.2.7", "example.test"])
    # the exact name wins over the wildcard that also covers it
    assert dict(result.covered) == {
        "www.example.test": "www.example.test",
        "api.example.test": "*.example.test",
        "192.0.2.7": "192.0.2.7",
    }
    assert [m.name for m in result.missing] == ["example.test"]
    assert "never the apex" in result.missing[0].reason


def test_coverage_complete_and_wildcard_over_public_suffix() -> None:
    assert coverage(["bücher.example"], ["xn--bcher-kva.example"]).complete
    result = coverage(["*.co.uk"], ["example.co.uk"])
    assert not result.complete
    assert "public suffix" in result.missing[0].reason


def test_coverage_refuses_invalid_required_names() -> None:
    with pytest.raises(InputError, match="'-bad-'"):
        coverage(["www.example.com"], ["-bad-.example.com"])


def test_plan_twenty_names_under_one_parent_become_a_wildcard_and_the_apex() -> None:
    required = ["example.com", *(f"host{i}.example.com" for i in range(20))]
    result = plan(required)
    assert result.entries == ("example.com", "*.example.com")
    assert result.count == 2
    assert result.fits
    assert result.plain_count == 21
    assert result.covered_by["host7.example.com"] == "*.example.com"
    assert result.covered_by["example.com"] == "example.com"
    assert "*.example.com does not cover example.com; it is listed too" in result.notes
    assert "without wildcards the certificate would list 21 names" in result.notes
    d = result.to_dict()
    assert d["fits"] is True
    assert d["count"] == 2
    assert d["limit"] == 15
    assert d["wildcards"] == ["*.example.com"]


def test_plan_three_domains() -> None:
    required = [
        "example.com",
        "www.example.com",
        "mail.example.com",
        "a.b.example.com",
        "www.example.org",
        "shop.example.net",
        "api.example.net",
        "example.net",
        "192.0.2.10",
    ]
    result = plan(required)
    assert result.entries == (
        "example.com",
        "*.example.com",
        "a.b.example.com",
        "www.example.org",
        "*.example.net",
        "example.net",
        "192.0.2.10",
    )
    assert result.fits
    assert "*.example.com covers exactly one label: a.b.example.com is listed on its own" in result.notes
    assert "*.example.net does not cover example.net; it is listed too" in result.notes
    # a single name under example.org gets no wildcard
    assert result.covered_by["www.example.org"] == "www.example.org"


def test_plan_without_wildcards_lists_every_name() -> None:
    required = ["www.example.com", "mail.example.com", "example.com"]
    result = plan(required, wildcards=False)
    assert result.entries == ("www.example.com", "mail.example.com", "example.com")
    assert result.wildcards == ()
    assert result.fits


def test_plan_over_the_limit() -> None:
    required = [f"host{i}.example.com" for i in range(20)]
    result = plan(required, wildcards=False)
    assert result.count == 20
    assert not result.fits
    assert result.to_dict()["fits"] is False
    assert result.notes[-1] == "20 entries are over the CA's limit of 15; allowing wildcards brings it to 1 entry"

    many = [f"www.domain{i}.example" for i in range(20)]  # no two share a parent
    result = plan(many)
    assert result.count == 20
    assert not result.fits
    assert result.notes[-1] == "20 entries are over the CA's limit of 15; split the names over two or more certificates"
    assert plan(many, limit=100).fits


@pytest.mark.parametrize(
    "required",
    [
        ["a.com", "b.com"],  # the parent is a top-level domain
        ["a.co.uk", "b.co.uk"],  # the parent is a public suffix
        ["x.github.io", "y.github.io"],
    ],
)
def test_plan_never_proposes_a_wildcard_over_a_public_suffix(required: list[str]) -> None:
    result = plan(required)
    assert result.wildcards == ()
    assert result.entries == tuple(required)


def test_plan_keeps_wildcards_asked_for_and_dedups() -> None:
    result = plan(["*.example.com", "www.example.com", "WWW.example.com.", "example.com"])
    assert result.required == ("*.example.com", "www.example.com", "example.com")
    assert result.entries == ("*.example.com", "example.com")
    assert result.covered_by["www.example.com"] == "*.example.com"


@pytest.mark.parametrize(
    ("required", "limit", "error"),
    [
        (["*.com"], 15, "top-level domain"),
        (["ok.example", "bad_.example"], 15, "underscore"),
        ([], 15, "no names"),
        (["a.example"], 0, "allows no names"),
    ],
)
def test_plan_refuses_bad_input(required: list[str], limit: int, error: str) -> None:
    with pytest.raises(CertfleetError, match=error):
        plan(required, limit=limit)


def test_plan_is_bounded() -> None:
    with pytest.raises(LimitError):
        plan(f"h{i}.example.com" for i in range(5000))


def test_normalize_names_keeps_order_and_drops_repeats() -> None:
    given = ["WWW.Example.test", "www.example.test.", "*.Example.test", "bücher.example", "::0:1", "::1"]
    assert normalize_names(given) == ["www.example.test", "*.example.test", "xn--bcher-kva.example", "::1"]


@pytest.mark.parametrize(
    ("names", "error"),
    [
        (["www.example.test", "*.co.uk"], InputError),
        (["under_score.example"], InputError),
        ([f"host{i}.example.test" for i in range(MAX_NAMES + 1)], LimitError),
    ],
)
def test_normalize_names_refuses_what_no_certificate_can_hold(names: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        normalize_names(names)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("WWW.Example.Test.", "www.example.test"), ("bücher.example", "xn--bcher-kva.example"), ("Bad_Name.", "bad_name")],
)
def test_canonical_name_never_raises(raw: str, expected: str) -> None:
    assert canonical_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("exa\u200bmple.test", "U+200B"),  # a zero-width space, which IDNA's mapping drops silently
        ("ex\u00adample.test", "U+00AD"),  # a soft hyphen, dropped the same way
        ("example\ufe0f.test", "U+FE0F"),  # a variation selector
        ("exam\u2060ple.test", "U+2060"),  # a word joiner
    ],
)
def test_a_name_holding_an_invisible_character_is_refused_not_changed(raw: str, shown: str) -> None:
    with pytest.raises(InputError, match=re.escape(shown)):
        normalize_name(raw)
