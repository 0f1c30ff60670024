"""The CLI and the console give one verdict per node: ``certfleet status``, ``certfleet check --nodes``,
``certfleet watch --nodes``, the dashboard, the API and ``/metrics`` all read the same status
(:func:`certfleet.fleet.status.status`). Real nginx serves the active leaf twice: with its
intermediate, and without it (what phones refuse)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from certfleet import testing
from certfleet.fleet.lineage import request
from certfleet.fleet.model import Material
from certfleet.fleet.nodes import make_node
from certfleet.fleet.status import status
from certfleet.problems import EXPIRING_DAYS, ProblemCode
from certfleet.store import Store
from support.console import ConsoleEnv, logged_in, make_env
from support.tls import Site, run_nginx

pytestmark = pytest.mark.peer


def _site(name: str, material: Material, *, with_chain: bool) -> Site:
    key = material.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    served = (material.leaf, *material.chain) if with_chain else (material.leaf,)
    return Site(name, testing.pem(*served), key)


@pytest.fixture
def fleet(certfleet_home: Path, tmp_path: Path) -> Iterator[ConsoleEnv]:
    """web, active version 1: nginx serves it on "main" with its intermediate, on "gw1" without."""
    ca = testing.TestCA.root("parity root").intermediate("parity inter")
    with Store.init(certfleet_home) as store:
        store.add_trust_anchor(ca.root_cert)
        for name in ("main", "gw1"):
            store.add_node(make_node(name, [f"{name}.example.test"], ["nginx:/srv/tls"]), lineage="web")
        version = request(store, "web", key_spec="ec:p256").version
        assert version.csr is not None
        store.issue("web", ca.sign_csr(version.csr), ca.chain)
        material = store.material("web")
    sites = [_site("main", material, with_chain=True), _site("gw1", material, with_chain=False)]
    with run_nginx(tmp_path / "nginx", sites) as nginx:
        env = make_env(certfleet_home)
        for name in ("main", "gw1"):
            spec = env.store.node(name)
            env.store.put_node(make_node(name, spec.names, spec.targets, probe=nginx.target(name)))
        yield env
        env.store.close()


def _codes(problems: list[dict[str, Any]]) -> list[str]:
    return [p["code"] for p in problems]


def test_cli_and_dashboard_agree_on_a_missing_intermediate(fleet: ConsoleEnv, cli: Any) -> None:
    # the CLI
    result = cli("status", "--json")
    assert result.code == 1, result.out + result.err
    [web] = result.json()["lineages"]
    by_cli = {n["node"]: n for n in web["nodes"]}
    assert by_cli["main"]["ok"] is True and by_cli["main"]["health"] == "good"
    gw1 = by_cli["gw1"]
    assert gw1["serving"] == "active"  # the right leaf...
    assert gw1["ok"] is False and gw1["health"] == "bad"  # ...that a strict client refuses
    assert _codes(gw1["problems"]) == ["incomplete-chain"]
    assert gw1["check"]["verified"] is False

    # the same endpoints through `certfleet check --nodes`
    checked = cli("check", "--nodes", "--json")
    assert checked.code == 1
    assert {d["node"]: (d["ok"], _codes(d["problems"])) for d in checked.json()} == {
        "main": (True, []),
        "gw1": (False, ["incomplete-chain"]),
    }

    # the console: API, dashboard and metrics
    logged_in(fleet)
    [lineage] = fleet.client.get("/api/v1/lineages?refresh=true").json()
    by_api = {n["node"]: n for n in lineage["node_status"]}
    for name in ("main", "gw1"):
        for key in ("serving", "health", "ok", "served_fingerprint", "served_version"):
            assert by_api[name][key] == by_cli[name][key], (name, key)
        assert _codes(by_api[name]["problems"]) == _codes(by_cli[name]["problems"])
    page = fleet.client.get("/").text
    row = re.search(r'<tr data-node="gw1">(.*?)</tr>', page, re.S)
    assert row is not None
    assert "badge bad" in row.group(1) and "incomplete-chain" in row.group(1)
    _same_metrics(fleet.client.get("/metrics").text)

    # and `certfleet watch --nodes`, in the same vocabulary
    watched = cli("watch", "--once", "--nodes")
    assert watched.code == 1, watched.err
    _same_metrics(watched.out)


def _same_metrics(text: str) -> None:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))

    def by_node(name: str) -> dict[str, float]:
        found = [(labels["node"], value) for labels, value in samples.get(name, [])]
        assert len(found) == len(dict(found)), f"{name}: a node twice"
        return dict(found)

    assert by_node("certfleet_node_ok") == {"main": 1.0, "gw1": 0.0}
    assert by_node("certfleet_node_serves_active") == {"main": 1.0, "gw1": 1.0}
    assert by_node("certfleet_node_probe_success") == {"main": 1.0, "gw1": 0.0}
    assert by_node("certfleet_endpoint_probe_success") == {"main": 1.0, "gw1": 1.0}
    assert by_node("certfleet_endpoint_chain_valid") == {"main": 1.0, "gw1": 0.0}
    problems = samples["certfleet_endpoint_problems"]
    assert [(labels["node"], labels["code"]) for labels, _ in problems] == [("gw1", "incomplete-chain")]
    assert [labels["lineage"] for labels, _ in samples["certfleet_lineage_chain_valid"]] == ["web"]


def test_the_expiry_warning_is_one_setting(fleet: ConsoleEnv) -> None:
    at = dt.datetime.now(dt.UTC)

    def codes(days: int) -> tuple[list[ProblemCode], list[ProblemCode]]:
        [web] = asyncio.run(status(fleet.store, now=at, probe=False, expiring_days=days)).lineages
        assert web.chain is not None
        return [p.code for p in web.problems], [p.code for p in web.chain.problems]

    assert codes(EXPIRING_DAYS) == ([], [])  # the leaf has 90 days
    assert codes(100) == ([ProblemCode.EXPIRING_SOON], [ProblemCode.EXPIRING_SOON])
