"""``check`` against real servers on loopback: every planted fault found with its code, failures reported."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certfleet.check import CheckReport, EndpointReport, check, run_check
from certfleet.endpoint import Endpoint, parse_endpoint
from certfleet.problems import ProblemCode, Severity
from certfleet.testing import TestCA as CA
from certfleet.trust import TrustStore
from support.tls import (
    Faults,
    Mode,
    Nginx,
    free_port,
    has_ipv6_loopback,
    planted_faults,
    run_nginx,
    serve_tls,
    silent_port,
    write_pair,
)

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def faults() -> Faults:
    return planted_faults(ipv6=has_ipv6_loopback())


@pytest.fixture(scope="module")
def nginx(faults: Faults, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with run_nginx(tmp_path_factory.mktemp("nginx"), faults.sites) as server:
        yield server


@pytest.fixture(scope="module")
def trust(faults: Faults) -> TrustStore:
    return TrustStore.from_pem(faults.roots_pem)


@pytest.fixture(scope="module")
def report(nginx: Nginx, faults: Faults, trust: TrustStore) -> CheckReport:
    targets = [parse_endpoint(nginx.target(s.name), name=faults.name, label=s.name) for s in faults.sites]
    return run_check(targets, trust=trust, timeout=5)


def _by_label(report: CheckReport) -> dict[str, EndpointReport]:
    return {e.target.label or "": e for e in report.endpoints}


@pytest.mark.parametrize(
    "site",
    ["good", "ipv6", "incomplete", "wrong-order", "root-sent", "expired", "expiring", "wrong-name", "sha1",
     "self-signed"],
)  # fmt: skip
def test_each_planted_fault_is_found(report: CheckReport, faults: Faults, site: str) -> None:
    endpoints = _by_label(report)
    if site not in endpoints:
        pytest.skip("this machine has no IPv6 loopback address (::1 cannot be bound)")
    endpoint = endpoints[site]
    codes = {p.code.value for p in endpoint.problems}
    expected = faults.codes[site]
    assert endpoint.probe.ok, endpoint.problems
    if expected:
        assert expected <= codes, codes
    else:
        assert codes == set()
        assert endpoint.ok
        assert endpoint.verified


@pytest.mark.parametrize(
    ("site", "ok", "verified"),
    [
        ("good", True, True),
        ("root-sent", True, True),  # a warning: clients cope, but it is waste
        ("expiring", True, True),
        ("incomplete", False, False),
        ("wrong-order", False, True),  # a path exists, but strict clients refuse the order sent
        ("expired", False, False),
        ("wrong-name", False, False),
        ("sha1", False, False),
        ("self-signed", False, False),
    ],
)
def test_verdict_per_endpoint(report: CheckReport, site: str, ok: bool, verified: bool) -> None:
    endpoint = _by_label(report)[site]
    assert endpoint.ok is ok
    assert endpoint.verified is verified
    assert endpoint.fails(Severity.ERROR) is not ok


def test_warnings_fail_only_when_asked(report: CheckReport) -> None:
    endpoint = _by_label(report)["root-sent"]
    assert endpoint.severity is Severity.WARNING
    assert not endpoint.fails(Severity.ERROR)
    assert endpoint.fails(Severity.WARNING)


def test_chain_is_reported_as_sent(report: CheckReport, nginx: Nginx) -> None:
    endpoints = _by_label(report)
    wrong = endpoints["wrong-order"]
    assert [c.subject for c in wrong.chain] == [
        "CN=www.example.test",
        "CN=Faults Upper Intermediate,O=certfleet tests",
        "CN=Faults Issuing Intermediate,O=certfleet tests",
    ]
    assert len(endpoints["root-sent"].chain) == 4
    assert len(endpoints["incomplete"].chain) == 1
    good = endpoints["good"]
    assert good.probe.tls_version == "TLSv1.3"
    assert good.probe.cipher
    assert str(good.target) == nginx.target("good")


def test_days_left(report: CheckReport) -> None:
    endpoints = _by_label(report)
    assert endpoints["good"].days_left in (88, 89)
    assert endpoints["expiring"].days_left in (8, 9)
    assert endpoints["expired"].days_left is not None
    assert endpoints["expired"].days_left < -60


def test_shared_intermediates_are_parsed_once(report: CheckReport) -> None:
    endpoints = _by_label(report)
    # the same intermediate sent by two servers is one parsed object, described once
    assert endpoints["good"].probe.chain[1] is endpoints["expired"].probe.chain[1]
    assert endpoints["good"].chain[1] is endpoints["root-sent"].chain[1]


def test_to_dict_is_the_json_contract(report: CheckReport) -> None:
    data = json.loads(json.dumps(report.to_list()))
    assert len(data) == len(report.endpoints)
    first = data[0]
    for key in ("target", "ok", "chain", "tls_version", "cipher", "days_left", "problems"):
        assert key in first
    incomplete = next(d for d in data if d["node"] == "incomplete")
    assert incomplete["ok"] is False
    assert [p["code"] for p in incomplete["problems"]] == ["incomplete-chain"]
    assert incomplete["chain"][0]["dns_names"] == ["www.example.test"]
    assert report.to_dict()["counts"] == report.counts()


async def test_closed_and_silent_ports_are_reported_not_raised(trust: TrustStore, nginx: Nginx) -> None:
    with silent_port() as quiet:
        targets = [
            parse_endpoint(f"127.0.0.1:{free_port()}"),
            parse_endpoint(f"127.0.0.1:{quiet}"),
            parse_endpoint(nginx.target("good"), name="www.example.test"),
        ]
        report = await check(targets, trust=trust, timeout=0.5)
    codes = [[p.code for p in e.problems] for e in report.endpoints]
    assert codes == [[ProblemCode.UNREACHABLE], [ProblemCode.TIMEOUT], []]
    assert [e.ok for e in report.endpoints] == [False, False, True]
    assert report.counts() == {"ok": 1, "warning": 0, "failing": 2}


async def test_overall_deadline_reports_the_rest_as_timeouts(trust: TrustStore, tmp_path: Path) -> None:
    leaf = CA.root().leaf("quiet.example.test")
    cert, key = write_pair(tmp_path, "quiet", leaf.fullchain_pem(), leaf.key_pem())
    with serve_tls(Mode.SILENT, cert, key) as server:
        # distinct names, so that none is dropped as a repeat
        targets = [parse_endpoint(server.target, name=f"n{i}.example.test") for i in range(10)]
        report = await check(targets, trust=trust, timeout=30, concurrency=3, deadline=0.5)
        # the three workers each opened one connection and were stopped there: no fourth was opened
        end = time.monotonic() + 10
        while server.connections < 3 and time.monotonic() < end:
            time.sleep(0.01)
        assert server.connections == 3
    assert report.deadline_reached
    assert all([p.code for p in e.problems] == [ProblemCode.TIMEOUT] for e in report.endpoints)
    assert "overall deadline" in report.endpoints[-1].problems[0].message
    assert len(report.endpoints) == 10


@pytest.mark.parametrize(("mode", "scheme"), [(Mode.SMTP, "smtp"), (Mode.IMAP, "imap"), (Mode.TLS, "ldaps")])
async def test_mail_and_directory_ports(tmp_path: Path, mode: Mode, scheme: str) -> None:
    root = CA.root("Mail Root")
    leaf = root.intermediate("Mail Intermediate").leaf("mail.example.test")
    cert, key = write_pair(tmp_path, "mail", leaf.fullchain_pem(), leaf.key_pem())
    with serve_tls(mode, cert, key) as server:
        target = parse_endpoint(f"{scheme}://127.0.0.1:{server.port}", name="mail.example.test")
        report = await check([target], trust=TrustStore(certs=(root.cert,)))
    endpoint = report.endpoints[0]
    assert endpoint.ok, endpoint.problems
    assert endpoint.verified
    assert endpoint.probe.starttls.value == ("none" if mode is Mode.TLS else scheme)


async def test_ip_target_is_checked_against_the_ip(tmp_path: Path) -> None:
    root = CA.root("IP Root")
    by_ip = root.leaf("127.0.0.1")
    by_name = root.leaf("www.example.test")
    trust = TrustStore(certs=(root.cert,))
    results = []
    for stem, leaf in (("ip", by_ip), ("name", by_name)):
        cert, key = write_pair(tmp_path, stem, leaf.fullchain_pem(), leaf.key_pem())
        with serve_tls(Mode.TLS, cert, key) as server:
            results.append((await check([parse_endpoint(server.target)], trust=trust)).endpoints[0])
    assert results[0].ok
    assert results[0].name == "127.0.0.1"
    assert [p.code for p in results[1].problems] == [ProblemCode.NAME_MISMATCH]


async def test_untrusted_root_without_trust(nginx: Nginx) -> None:
    # the test roots are not Mozilla's: a phone would not know them
    report = await check([parse_endpoint(nginx.target("good"), name="www.example.test")], trust=TrustStore.mozilla())
    endpoint = report.endpoints[0]
    assert not endpoint.ok
    assert ProblemCode.UNTRUSTED in {p.code for p in endpoint.problems}


async def test_judged_at_the_time_given(nginx: Nginx, trust: TrustStore) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=200)
    report = await check([parse_endpoint(nginx.target("good"), name="www.example.test")], trust=trust, now=later)
    endpoint = report.endpoints[0]
    assert ProblemCode.EXPIRED in {p.code for p in endpoint.problems}
    assert endpoint.days_left is not None
    assert endpoint.days_left < 0


async def test_progress_callback_sees_every_endpoint(nginx: Nginx, trust: TrustStore) -> None:
    seen: list[Endpoint] = []
    targets = [parse_endpoint(nginx.target(site), name="www.example.test") for site in ("good", "expired", "sha1")]
    targets.append(parse_endpoint(f"127.0.0.1:{free_port()}"))
    await check(targets, trust=trust, on_result=lambda e: seen.append(e.target))
    assert sorted(map(str, seen)) == sorted(map(str, targets))


@pytest.mark.parametrize(("concurrency", "timeout", "deadline"), [(0, 1.0, None), (1, 0.0, None), (1, 1.0, -1.0)])
async def test_bad_options_are_value_errors(concurrency: int, timeout: float, deadline: float | None) -> None:
    with pytest.raises(ValueError):
        await check([], trust=TrustStore(certs=()), concurrency=concurrency, timeout=timeout, deadline=deadline)


def test_certificate_objects_in_the_report(report: CheckReport) -> None:
    good = _by_label(report)["good"]
    assert isinstance(good.probe.chain[0], x509.Certificate)
    assert good.chain[0].dns_names == ("www.example.test",)
