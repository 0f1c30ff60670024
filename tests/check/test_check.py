"""Targets for ``check``: host, host:port, [v6]:port, URLs and lists; every bad one refused plainly."""

from __future__ import annotations

import pytest

from certfleet.endpoint import MAX_ENDPOINTS, Endpoint, parse_endpoint, read_endpoints, unique
from certfleet.errors import InputError, LimitError
from certfleet.probe import StartTLS


@pytest.mark.parametrize(
    ("text", "host", "port", "starttls"),
    [
        ("www.example.com", "www.example.com", 443, None),
        ("WWW.Example.COM.", "www.example.com", 443, None),
        ("www.example.com:8443", "www.example.com", 8443, None),
        ("  mail.example.com:587 ", "mail.example.com", 587, None),
        ("127.0.0.1", "127.0.0.1", 443, None),
        ("127.0.0.1:636", "127.0.0.1", 636, None),
        ("[::1]:5061", "::1", 5061, None),
        ("[2001:DB8::1]", "2001:db8::1", 443, None),
        ("2001:db8::1", "2001:db8::1", 443, None),
        ("https://www.example.com/path?q=1", "www.example.com", 443, StartTLS.NONE),
        ("HTTPS://www.example.com:8443/", "www.example.com", 8443, StartTLS.NONE),
        ("https://[::1]:8443/", "::1", 8443, StartTLS.NONE),
        ("smtp://mail.example.com", "mail.example.com", 25, StartTLS.SMTP),
        ("submission://mail.example.com", "mail.example.com", 587, StartTLS.SMTP),
        ("smtps://mail.example.com", "mail.example.com", 465, StartTLS.NONE),
        ("imap://mail.example.com:1143", "mail.example.com", 1143, StartTLS.IMAP),
        ("imaps://mail.example.com", "mail.example.com", 993, StartTLS.NONE),
        ("ldaps://dir.example.com", "dir.example.com", 636, StartTLS.NONE),
        ("sips://sip.example.com", "sip.example.com", 5061, StartTLS.NONE),
        ("bücher.example", "xn--bcher-kva.example", 443, None),
    ],
)
def test_parse_endpoint(text: str, host: str, port: int, starttls: StartTLS | None) -> None:
    target = parse_endpoint(text)
    assert (target.host, target.port, target.starttls) == (host, port, starttls)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("www.example.com:0", "port"),
        ("www.example.com:65536", "port"),
        ("www.example.com:https", "port"),
        ("2001:db8::1::443", "brackets"),
        ("[www.example.com]:443", "only an IPv6 address"),
        ("[::1]443", "[v6-address]:port"),
        ("[::1", "only an IPv6 address"),
        ("ftp://files.example.com", "not ftp://"),
        ("https://user:secret@www.example.com/", "no user name or password"),
        ("https://www.example.com:99999/", "Port"),
        ("*.example.com", "wildcard"),
        ("bad_host.example.com", "underscore"),
        ("https:///nohost", "host is missing"),
    ],
)
def test_bad_targets_are_input_errors(text: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        parse_endpoint(text)
    assert words.lower() in str(info.value).lower()
    assert info.value.hint


def test_overlong_target_is_a_limit_error() -> None:
    with pytest.raises(LimitError):
        parse_endpoint("a" * 5000)


@pytest.mark.parametrize(
    ("text", "name", "sni", "expected"),
    [
        ("10.0.0.5:443", None, None, "10.0.0.5"),
        ("10.0.0.5:443", "www.example.com", "www.example.com", "www.example.com"),
        ("www.example.com", None, "www.example.com", "www.example.com"),
        ("lb.example.com", "WWW.Example.com", "www.example.com", "www.example.com"),
        ("lb.example.com", "192.0.2.7", None, "192.0.2.7"),
    ],
)
def test_names_sent_and_expected(text: str, name: str | None, sni: str | None, expected: str) -> None:
    target = parse_endpoint(text, name=name)
    assert target.server_name == sni
    assert target.expected_name == expected


@pytest.mark.parametrize("name", ["*.example.com", "bad name", ""])
def test_bad_name_is_refused(name: str) -> None:
    with pytest.raises(InputError, match="--name"):
        parse_endpoint("www.example.com", name=name)


def test_starttls_option_overrides_the_scheme() -> None:
    assert parse_endpoint("smtp://mx.example.com", starttls=StartTLS.NONE).starttls is StartTLS.NONE
    assert parse_endpoint("mx.example.com:2525", starttls=StartTLS.SMTP).starttls is StartTLS.SMTP


def test_target_text_brackets_ipv6() -> None:
    assert str(parse_endpoint("[::1]:8443")) == "[::1]:8443"
    assert str(parse_endpoint("example.com")) == "example.com:443"


def test_read_targets_with_comments_and_names() -> None:
    text = """
    # the web farm
    www1.example.com            # first
    10.0.0.6:8443 www.example.com
    [::1]:443

    smtp://mx.example.com
    """
    targets = read_endpoints(text, name="default.example.com")
    assert [str(t) for t in targets] == ["www1.example.com:443", "10.0.0.6:8443", "[::1]:443", "mx.example.com:25"]
    assert [t.name for t in targets] == [
        "default.example.com",
        "www.example.com",
        "default.example.com",
        "default.example.com",
    ]
    assert targets[3].starttls is StartTLS.SMTP


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ok.example.com\nbad:port\n", "line 2"),
        ("a.example.com b.example.com c.example.com\n", "line 1: expected a target and at most one name"),
        ("\n\n  2001:db8::1::443\n", "line 3"),
    ],
)
def test_read_targets_names_the_bad_line(text: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        read_endpoints(text, source="fleet.txt")
    assert info.value.source == "fleet.txt"
    assert words in info.value.message


def test_read_targets_is_bounded() -> None:
    with pytest.raises(LimitError):
        read_endpoints("127.0.0.1\n" * (MAX_ENDPOINTS + 1))


def test_unique_keeps_the_first_of_each() -> None:
    targets = [
        parse_endpoint("a.example.com"),
        parse_endpoint("A.example.com:443"),
        parse_endpoint("a.example.com", name="b.example.com"),
        parse_endpoint("a.example.com:8443"),
    ]
    assert unique(targets) == [targets[0], targets[2], targets[3]]
    assert isinstance(targets[0], Endpoint)
