"""``status`` and ``history``: what each node really serves (probed live, from real nginx) and what happened."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certfleet import testing
from certfleet.fleet.history import history
from certfleet.fleet.lineage import request
from certfleet.fleet.model import Material, Outcome
from certfleet.fleet.nodes import make_node
from certfleet.fleet.status import Serving, status
from certfleet.problems import ProblemCode, Severity
from certfleet.store import NodeResult, Store
from support.tls import Site, free_port, run_nginx

NOW = dt.datetime.now(dt.UTC)


def _site(name: str, material: Material) -> Site:
    key = material.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Site(name, testing.pem(material.leaf, *material.chain), key)


def _issue(store: Store, ca: testing.TestCA, lineage: str, **sign: object) -> int:
    version = store.versions(lineage)[-1]
    assert version.csr is not None
    leaf = ca.sign_csr(version.csr, **sign)  # type: ignore[arg-type]
    return store.issue(lineage, leaf, ca.chain).number


@pytest.fixture
def fleet(certfleet_home: Path, tmp_path: Path) -> Iterator[Store]:
    """web: v1 (older) and v2 (active); nginx serves v2 for main, v1 for gw1, a stranger for gw2."""
    ca = testing.TestCA.root("status root").intermediate("status inter")
    store = Store.init()
    store.add_trust_anchor(ca.root_cert)
    for name in ("main", "gw1", "gw2", "gw3", "gw4"):
        store.add_node(make_node(name, [f"{name}.example.test"], ["nginx:/srv/tls"]), lineage="web")
    request(store, "web", key_spec="ec:p256")
    _issue(store, ca, "web")
    request(store, "web", key_spec="ec:p256")
    _issue(store, ca, "web")
    stranger = ca.leaf("gw2.example.test")
    sites = [
        _site("main", store.material("web", 2)),
        _site("gw1", store.material("web", 1)),
        _site("gw2", Material(stranger.key, stranger.cert, tuple(stranger.chain))),
    ]
    with run_nginx(tmp_path / "nginx", sites) as nginx:
        for name in ("main", "gw1", "gw2"):
            spec = store.node(name)
            store.put_node(make_node(name, spec.names, spec.targets, probe=nginx.target(name)))
        gw3 = store.node("gw3")
        store.put_node(make_node("gw3", gw3.names, gw3.targets, probe=f"127.0.0.1:{free_port()}"))
        t0 = NOW - dt.timedelta(minutes=5)
        store.record_deployment(
            "web",
            2,
            [
                NodeResult("main", Outcome.OK, t0, t0 + dt.timedelta(seconds=2)),
                NodeResult("gw1", Outcome.ROLLED_BACK, t0, t0, failed_step="probe", output="still old"),
            ],
        )
        yield store
    store.close()


@pytest.mark.peer
def test_status_tells_what_each_node_serves(fleet: Store) -> None:
    report = asyncio.run(status(fleet, now=NOW, timeout=5.0))
    [web] = report.lineages
    assert web.active is not None and web.active.number == 2
    assert web.days_left == 89
    assert web.pending == 0
    nodes = {n.node: n for n in web.nodes}
    assert {name: n.serving for name, n in nodes.items()} == {
        "main": Serving.ACTIVE,
        "gw1": Serving.OLDER,
        "gw2": Serving.OTHER,
        "gw3": Serving.UNREACHABLE,
        "gw4": Serving.NOT_PROBED,
    }
    assert nodes["main"].served_fingerprint == web.active.fingerprint
    assert nodes["gw1"].served_version == 1
    assert nodes["gw2"].served_version is None
    assert (nodes["main"].last_outcome, nodes["main"].last_version) == (Outcome.OK, 2)
    assert (nodes["gw1"].last_outcome, nodes["gw1"].last_failed_step) == (Outcome.ROLLED_BACK, "probe")
    assert nodes["gw4"].last_outcome is None
    assert [p.code for p in nodes["gw1"].problems] == [ProblemCode.SERVES_OTHER_CERTIFICATE]
    assert "version 1, not the active version 2" in nodes["gw1"].problems[0].message
    assert nodes["gw1"].problems[0].hint == "deploy the active version: `certfleet deploy web`"  # its real name
    # its last deployment was rolled back: what it has live is read from it (nothing, at /srv/tls)
    assert nodes["gw1"].live is not None and nodes["gw1"].live_proven is not False
    assert nodes["gw3"].problems and nodes["gw3"].problems[0].message.startswith("gw3: ")
    assert [n.ok for n in web.nodes] == [False, False, False, True, True]  # sorted by name: gw1..gw4, main
    assert not report.ok
    data = report.to_dict()
    assert data["lineages"][0]["nodes"][4]["serving"] == "active"
    assert data["lineages"][0]["nodes"][0]["last_deployment"]["failed_step"] == "probe"


@pytest.mark.peer
def test_status_without_probing(fleet: Store) -> None:
    report = asyncio.run(status(fleet, now=NOW, probe=False))
    assert {n.serving for n in report.lineages[0].nodes} == {Serving.NOT_PROBED}
    assert report.ok
    assert not report.to_dict()["probed"]


@pytest.mark.parametrize(
    ("days", "not_before", "code", "severity"),
    [
        (10, None, ProblemCode.EXPIRING_SOON, Severity.WARNING),
        (2, NOW - dt.timedelta(days=5), ProblemCode.EXPIRED, Severity.ERROR),
    ],
)
def test_status_warns_before_expiry(
    certfleet_home: Path, days: int, not_before: dt.datetime | None, code: ProblemCode, severity: Severity
) -> None:
    ca = testing.TestCA.root("expiry root")
    store = Store.init()
    request(store, "short", names=["short.example.test"], key_spec="ec:p256")
    _issue(store, ca, "short", days=days, not_before=not_before)
    [lin] = asyncio.run(status(store, now=NOW, probe=False)).lineages
    assert [(p.code, p.severity) for p in lin.problems] == [(code, severity)]
    assert lin.ok is (severity is not Severity.ERROR)
    store.close()


@pytest.mark.peer
def test_history(fleet: Store) -> None:
    report = history(fleet, "web")
    assert [(v.number, v.active) for v in report.versions] == [(1, False), (2, True)]
    [dep] = report.deployments
    assert dep.version == 2
    assert {r.node: r.outcome for r in dep.results} == {"main": Outcome.OK, "gw1": Outcome.ROLLED_BACK}
    data = report.to_dict()
    assert data["active"] == 2
    assert data["deployments"][0]["results"][0]["output"] == "still old"
