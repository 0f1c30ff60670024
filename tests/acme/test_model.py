"""Issuing's plain values and its pure parts, without a server: solver rules, CAA verdicts, the
ACME problems as certfleet errors, the preferred chain, credentials files, and the plan that
refuses what no CA could issue before anything is sent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from certfleet.acme.challenges.rfc2136 import read_credentials
from certfleet.acme.errors import (
    AccountProblem,
    BadNonce,
    CaaForbidden,
    ConnectionProblem,
    DnsProblem,
    ExternalAccountRequired,
    RateLimited,
    Unauthorized,
    UserActionRequired,
    problem_error,
)
from certfleet.acme.lookup import CaaAnswer, DnsSettings
from certfleet.acme.model import ChallengeType, RevocationReason, SolverRule, pick_rule
from certfleet.acme.order import choose_chain
from certfleet.errors import ExitCode, InputError
from certfleet.testing import TestCA


@pytest.mark.parametrize(
    ("text", "pattern", "challenge", "spec"),
    [
        ("mbg.example.com=http-01:gw1", "mbg.example.com", ChallengeType.HTTP01, "gw1"),
        ("*=http-01", "*", ChallengeType.HTTP01, ""),
        ("*.Example.com.=dns-01:rfc2136:/etc/tsig.ini", "*.example.com", ChallengeType.DNS01, "rfc2136:/etc/tsig.ini"),
        (
            "example.com=dns-01:hook:/usr/local/bin/dns add",
            "example.com",
            ChallengeType.DNS01,
            "hook:/usr/local/bin/dns add",
        ),
    ],
)
def test_solver_rules_read_and_write_back(text: str, pattern: str, challenge: ChallengeType, spec: str) -> None:
    rule = SolverRule.parse(text)
    assert (rule.pattern, rule.challenge, rule.spec) == (pattern, challenge, spec)
    assert SolverRule.parse(str(rule)) == rule


@pytest.mark.parametrize("text", ["example.com", "=http-01", "x=tls-alpn-01", "x=dns-01", "x=dns-01:"])
def test_bad_solver_rules_are_refused(text: str) -> None:
    with pytest.raises(InputError):
        SolverRule.parse(text)


def test_the_exact_rule_wins_then_the_longest_pattern() -> None:
    rules = [
        SolverRule.parse("*=http-01"),
        SolverRule.parse("*.example.com=dns-01:hook:a"),
        SolverRule.parse("example.com=dns-01:hook:b"),
        SolverRule.parse("mbg.example.com=http-01:gw1"),
    ]
    assert pick_rule(rules, "mbg.example.com") == rules[3]
    assert pick_rule(rules, "*.example.com") == rules[1]
    assert pick_rule(rules, "www.example.com") == rules[1]
    assert pick_rule(rules, "example.com") == rules[2]
    assert pick_rule(rules, "other.test") == rules[0]
    assert pick_rule(rules[1:3], "other.test") is None


@pytest.mark.parametrize(
    ("records", "wildcard", "allowed"),
    [
        ((), False, None),
        (((0, "iodef", "mailto:x@example.com"),), False, None),
        (((0, "issue", "letsencrypt.org"),), False, ["letsencrypt.org"]),
        (((0, "issue", "ca.example.net; account=1"),), False, ["ca.example.net"]),
        (((0, "issue", ";"),), False, [""]),
        (((0, "issue", "a.example"), (0, "issuewild", ";")), True, [""]),
        (((0, "issue", "a.example"), (0, "issuewild", ";")), False, ["a.example"]),
        (((0, "issue", "a.example"),), True, ["a.example"]),
    ],
)
def test_caa_issuers_follow_rfc_8659(
    records: tuple[tuple[int, str, str], ...], wildcard: bool, allowed: list[str] | None
) -> None:
    assert CaaAnswer("x.example", "example" if records else None, records).issuers(wildcard=wildcard) == allowed


def test_an_unknown_critical_caa_tag_is_seen() -> None:
    answer = CaaAnswer("x", "x", ((128, "future", "v"), (0, "issue", "a")))
    assert answer.unknown_critical() == ["future"]


@pytest.mark.parametrize(
    ("code", "cls", "words"),
    [
        ("rateLimited", RateLimited, "rate limit"),
        ("badNonce", BadNonce, "nonce"),
        ("caa", CaaForbidden, "CAA records forbid"),
        ("dns", DnsProblem, "could not resolve"),
        ("connection", ConnectionProblem, "could not connect"),
        ("externalAccountRequired", ExternalAccountRequired, "External Account Binding"),
        ("userActionRequired", UserActionRequired, "act"),
        ("accountDoesNotExist", AccountProblem, "account"),
    ],
)
def test_each_acme_problem_is_one_line_a_hint_and_exit_1(code: str, cls: type, words: str) -> None:
    error = problem_error(code, "the CA's own words", issuer="le", identifier="www.example.com")
    assert isinstance(error, cls) and error.exit_code is ExitCode.PROBLEMS
    assert str(error).startswith("le: ") and words in str(error) and "the CA's own words" in str(error)
    assert "\n" not in str(error)
    assert error.hint or code == "badNonce"


def test_rate_limited_says_when_and_unauthorized_keeps_the_challenges_detail() -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, tzinfo=dt.UTC)
    limited = problem_error("rateLimited", "too many certificates", issuer="le", retry_after=when)
    assert isinstance(limited, RateLimited) and limited.retry_after == when
    assert "try again after 2030-01-02 03:04 UTC" in str(limited)
    failed = problem_error(
        "unauthorized", "Invalid response from http://a.example/.well-known/acme-challenge/x: 404",
        issuer="le", identifier="a.example", challenge="http-01",
    )  # fmt: skip
    assert isinstance(failed, Unauthorized)
    assert str(failed) == (
        "le: the CA could not verify a.example by http-01: Invalid response from "
        "http://a.example/.well-known/acme-challenge/x: 404"
    )
    terms = problem_error("userActionRequired", "new terms", issuer="le", instance="https://ca.example/terms/v2")
    assert isinstance(terms, UserActionRequired) and terms.terms_url == "https://ca.example/terms/v2"
    assert "https://ca.example/terms/v2" in (terms.hint or "")


def test_the_preferred_chain_is_chosen_by_its_top_issuer() -> None:
    root_a, root_b = TestCA.root("Root A"), TestCA.root("Root B")
    inter_a, inter_b = root_a.intermediate("Inter A"), root_b.intermediate("Inter B")
    leaf = inter_a.leaf("www.example.test")
    default = (leaf.cert_pem() + inter_a.cert_pem()).decode()
    other = (leaf.cert_pem() + inter_b.cert_pem()).decode()
    assert choose_chain(default, [other], None) == (default, "Root A", False)
    assert choose_chain(default, [other], "Root B") == (other, "Root B", True)
    assert choose_chain(default, [other], "Inter B") == (other, "Root B", True)
    assert choose_chain(default, [other], "Root C") == (default, "Root A", False)


def test_revocation_reasons_are_rfc_5280_codes() -> None:
    assert RevocationReason.parse("keycompromise").code == 1
    assert RevocationReason.parse("cessation-of-operation") is RevocationReason.CESSATION_OF_OPERATION
    with pytest.raises(InputError):
        RevocationReason.parse("caCompromise")


def test_tsig_credentials_are_read_as_certbot_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "tsig.ini"
    path.write_text("# certbot dns-rfc2136\ndns_rfc2136_server = 192.0.2.53\ndns_rfc2136_name = k.\n"
                    "dns_rfc2136_secret = c2VjcmV0\nalgorithm = HMAC-SHA256\n")  # fmt: skip
    path.chmod(0o644)
    with pytest.raises(InputError, match="readable by others"):
        read_credentials(str(path))
    path.chmod(0o600)
    creds = read_credentials(str(path))
    assert (creds.server, creds.port, creds.key_name) == ("192.0.2.53", 53, "k.")
    assert "c2VjcmV0" not in repr(creds)


def test_dns_settings_come_from_the_environment() -> None:
    settings = DnsSettings.from_env(
        {"CERTFLEET_DNS_RESOLVER": "127.0.0.1:5353, [::1]:53", "CERTFLEET_DNS_PORT": "5353"}
    )
    assert settings.resolvers == (("127.0.0.1", 5353), ("::1", 53)) and settings.auth_port == 5353
    assert DnsSettings.from_env({}).resolvers == ()
    with pytest.raises(InputError):
        DnsSettings.from_env({"CERTFLEET_DNS_PORT": "dns"})


def test_the_cas_last_answer_gives_retry_after_and_the_terms_url() -> None:
    from acme import messages

    from certfleet.acme.errors import mapped

    limited = mapped(
        messages.Error.with_code("rateLimited", detail="too many new orders"),
        issuer="le",
        headers={"Retry-After": "3600"},
    )
    assert isinstance(limited, RateLimited) and limited.retry_after is not None
    assert 3500 < (limited.retry_after - dt.datetime.now(dt.UTC)).total_seconds() <= 3600
    terms = mapped(
        messages.Error(typ="urn:ietf:params:acme:error:userActionRequired", detail="agree to the new terms"),
        issuer="le",
        body={"instance": "https://ca.example/terms/v3"},
    )
    assert isinstance(terms, UserActionRequired) and terms.terms_url == "https://ca.example/terms/v3"


def test_requests_failures_are_the_ca_unreachable() -> None:
    import requests

    from certfleet.acme.errors import CAUnreachable, mapped

    down = mapped(requests.exceptions.ConnectionError("refused"), issuer="le")
    assert isinstance(down, CAUnreachable) and down.exit_code is ExitCode.ENVIRONMENT
    untrusted = mapped(requests.exceptions.SSLError("certificate verify failed"), issuer="le")
    assert isinstance(untrusted, CAUnreachable) and "--ca-bundle" in (untrusted.hint or "")
