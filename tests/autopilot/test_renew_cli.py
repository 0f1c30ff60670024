"""``certfleet renew`` and ``certfleet alert`` as a user runs them, with a manual issuer (no CA to
talk to): the reminder with a new key and CSR, the certificate bought and imported, then carried
to the node by the next pass; ``--dry-run`` and ``--json``; alert destinations shown masked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certfleet.store import Store
from certfleet.testing import TestCA

SECRET = "s3cr3t-Passw0rd"


def expect(result: Any, code: int = 0) -> Any:
    assert result.code == code, f"exit {result.code}\n{result.out}\n{result.err}"
    return result


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CERTFLEET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_manual_lineage_gets_its_csr_then_its_bought_certificate_deployed(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    ca = TestCA.root("Bought From Root").intermediate("Bought From CA")
    root = tmp_path / "root.pem"
    root.write_bytes(ca.root_cert.public_bytes(Encoding.PEM))
    expect(cli("init"))
    expect(cli("trust", "add", root))
    expect(cli("node", "add", "main", "--name", "www.example.test", "--target", f"pem:{tmp_path / 'main'}",
               "--lineage", "web"))  # fmt: skip
    expect(cli("issuer", "add", "godaddy", "--manual"))
    expect(cli("lineage", "set", "web", "--issuer", "godaddy"))

    plan = expect(cli("renew", "--dry-run", "--json")).json()
    (web,) = plan["lineages"]
    assert web["action"] == "would-request" and web["plan"]["reason"] == "no-certificate"

    first = expect(cli("renew", "--json")).json()
    (web,) = first["lineages"]
    assert web["action"] == "requested" and web["version"] == 1
    (waiting,) = first["conditions"]
    assert waiting["event"] == "manual-waiting" and "BEGIN CERTIFICATE REQUEST" in waiting["body"]
    assert expect(cli("renew", "--json")).json()["lineages"][0]["action"] == "waiting"  # no second CSR

    with Store.open() as store:
        csr = store.version("web", 1).csr
    assert csr is not None
    bought = tmp_path / "bought.pem"  # what the CA sends back for the CSR
    leaf = ca.sign_csr(csr, days=200)
    bought.write_bytes(leaf.public_bytes(Encoding.PEM) + ca.cert.public_bytes(Encoding.PEM))
    expect(cli("import", "web", bought))

    carried = expect(cli("renew")).out
    assert "web  deployed  version 1: deployed and proven on 1 of 1 node(s)" in carried
    assert (tmp_path / "main" / "live" / "cert.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    quiet = expect(cli("renew", "--json")).json()["lineages"][0]
    assert quiet["action"] == "nothing" and quiet["plan"]["reason"] == "manual-reminder"
    assert "a reminder 67 days before it expires" in quiet["summary"]  # a third of 200 days, more than 30


def test_renew_refuses_an_unknown_lineage_and_forces_one(cli: Any, home: Path) -> None:
    expect(cli("init"))
    refused = expect(cli("renew", "--lineage", "nope", "--json"), 2).json()
    assert "nope" in refused["error"]
    assert expect(cli("renew", "--json")).json()["lineages"] == []


def test_alert_destinations_are_shown_masked_and_never_audited_in_clear(cli: Any, home: Path) -> None:
    expect(cli("init"))
    added = expect(
        cli("alert", "add", f"mailtos://ops:{SECRET}@mail.example.test?to=pki@example.test", "--json")
    ).json()
    assert SECRET not in str(added) and added["url"].startswith("mailtos://")
    hook = expect(cli("alert", "add", "json://hooks.example.test/certfleet", "--events", "renewal-failed,expiring")).out
    assert "alert destination 2 added" in hook and "renewal-failed, expiring" in hook
    listed = expect(cli("alert", "list")).out
    assert SECRET not in listed and "json://hooks.example.test/certfleet" in listed
    assert "alerts repeat every 24 h" in listed
    expect(cli("alert", "config", "--repeat-hours", "6", "--expiry-days", "14", "--expiry-days", "3"))
    assert "14, 3 days left" in expect(cli("alert", "list")).out
    expect(cli("alert", "remove", "1"))
    assert expect(cli("alert", "remove", "1"), 2).err.count("no alert destination 1") == 1
    refused = expect(cli("alert", "add", f"nope://user:{SECRET}@h.example/x"), 2)
    assert SECRET not in refused.err + refused.out
    bad = expect(cli("alert", "add", "json://h.example/x", "--events", "sometimes"), 2)
    assert "unknown event" in bad.err
    with Store.open() as store:
        entries = store.audit_log(limit=100)
    assert [e.action for e in entries if e.action.startswith("alert.")].count("alert.add") == 2
    trail = str([e.detail for e in entries])
    assert SECRET not in trail and SECRET.encode() not in (home / "certfleet.db").read_bytes()
