"""The certificate pages find a certificate by its fingerprint in the store: a version's leaf, an
intermediate of its chain, a trust anchor."""

from __future__ import annotations

from pathlib import Path

from certfleet.certinfo import fingerprint
from certfleet.fleet.lineage import request
from certfleet.fleet.nodes import make_node
from certfleet.testing import TestCA
from support.console import logged_in, make_env


def test_leaf_intermediate_and_anchor_by_fingerprint(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home")
    ca = TestCA.root("pages root").intermediate("pages inter")
    env.store.add_trust_anchor(ca.root_cert)
    env.store.add_node(make_node("main", ["www.example.test"], [f"pem:{tmp_path / 'main'}"]), lineage="web")
    version = request(env.store, "web", key_spec="ec:p256").version
    assert version.csr is not None
    leaf = ca.sign_csr(version.csr)
    env.store.issue("web", leaf, ca.chain)
    logged_in(env)

    found = env.client.get(f"/api/v1/certificates/{fingerprint(leaf)}").json()
    assert (found["lineage"], found["verification"]["valid"]) == ("web", True)
    inter = env.client.get(f"/api/v1/certificates/{fingerprint(ca.cert).upper()}").json()
    assert inter["lineage"] == "web" and inter["certificate"]["subject"].startswith("CN=pages inter")
    root = env.client.get(f"/api/v1/certificates/{fingerprint(ca.root_cert)}").json()
    assert root["lineage"] is None and root["verification"]["valid"] is False  # a CA is no server
    page = env.client.get(f"/certificates/{fingerprint(ca.cert)}")
    assert page.status_code == 200 and "<h1>Certificate pages inter</h1>" in page.text
    pem = env.client.get(f"/certificates/{fingerprint(leaf)}.pem")
    assert pem.status_code == 200 and pem.text.startswith("-----BEGIN CERTIFICATE-----")
    unknown = env.client.get("/api/v1/certificates/" + "ab" * 32)
    assert unknown.status_code == 404 and "no certificate abababab" in unknown.json()["error"]
    assert env.client.get("/api/v1/certificates/xyz").status_code == 400
    env.store.close()
