"""ACME accounts against a real Pebble: registration with and without External Account Binding,
key rollover followed by an order signed with the new key, deactivation, revocation; and what
Pebble answers when it refuses (wrong EAB, nonces rejected), each as one line and exit 1, with
nothing stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certfleet.acme.connection import Connection
from certfleet.store import Store
from support.bind import BindServer
from support.pebble import EAB_KEYS, PebbleServer, acme_env, add_issuer, bind, expect, http_port, pebble

__all__ = ["acme_env", "bind", "http_port", "pebble"]  # fixtures

pytestmark = pytest.mark.peer  # every test here starts Pebble and BIND


def dns_lineage(cli: Any, bind: BindServer, tmp_path: Path, *issuers: str) -> None:
    """Lineage web for acme.test and www.acme.test, proven by dns-01 against BIND."""
    creds = bind.credentials(tmp_path / "tsig.ini")
    expect(cli(
        "node", "add", "main", "--name", "acme.test", "--name", "www.acme.test",
        "--target", f"nginx:{tmp_path / 'tls'}", "--lineage", "web",
    ))  # fmt: skip
    expect(cli(
        "lineage", "set", "web", *[a for i in issuers for a in ("--issuer", i)],
        "--solver", f"*=dns-01:rfc2136:{creds}",
    ))  # fmt: skip


def trust_pebble(cli: Any, pebble: PebbleServer, tmp_path: Path) -> None:
    root = tmp_path / f"pebble-root-{pebble.port}.pem"
    root.write_bytes(pebble.root_pem())
    expect(cli("trust", "add", root))


@pytest.mark.usefixtures("acme_env")
def test_account_rollover_then_an_order_with_the_new_key_then_deactivation(
    cli: Any, pebble: PebbleServer, bind: BindServer, tmp_path: Path
) -> None:
    expect(cli("init"))
    added = add_issuer(cli, pebble)
    assert added["status"] == "valid" and added["account"].startswith(f"https://127.0.0.1:{pebble.port}/")
    assert added["eab_kid"] is None and added["key"] == "ec:p256"
    trust_pebble(cli, pebble, tmp_path)
    dns_lineage(cli, bind, tmp_path, "pebble")

    rolled = expect(cli("issuer", "rollover", "pebble", "--json")).json()
    assert rolled["key_thumbprint"] != added["key_thumbprint"] and rolled["account"] == added["account"]
    with Store.open() as store:
        new_key, staged = store.account_key("pebble")
    assert staged is None
    # Pebble now knows the account by the new key only
    with Connection("check", pebble.directory, key=new_key, ca_bundle=pebble.ca_bundle.read_text()) as conn:
        assert conn.account_exists() == added["account"]

    issued = expect(cli("issue", "web", "--json")).json()
    assert issued["ok"] and issued["issuer"] == "pebble" and issued["version"] == 1
    assert sorted(issued["names"]) == ["acme.test", "www.acme.test"]
    assert bind.query("_acme-challenge.acme.test", "TXT") == []  # cleaned up

    expect(cli("issuer", "deactivate", "pebble"), 2)  # needs --yes
    expect(cli("issuer", "deactivate", "pebble", "--yes"))
    shown = expect(cli("issuer", "show", "pebble", "--json")).json()
    assert shown["status"] == "deactivated" and shown["lineages"] == ["web"]
    refused = expect(cli("issue", "web"), 1)
    assert "deactivated" in refused.err


@pytest.mark.usefixtures("acme_env")
def test_revocation_reaches_the_ca_and_the_version_is_never_deployed_again(
    cli: Any, pebble: PebbleServer, bind: BindServer, tmp_path: Path
) -> None:
    expect(cli("init"))
    add_issuer(cli, pebble)
    trust_pebble(cli, pebble, tmp_path)
    dns_lineage(cli, bind, tmp_path, "pebble")
    first = expect(cli("issue", "web", "--json")).json()
    second = expect(cli("issue", "web", "--json")).json()
    assert (first["version"], second["version"]) == (1, 2)

    done = expect(cli("revoke", "web", "--version", "1", "--reason", "superseded", "--json")).json()
    assert done["told_ca"] and done["issuer"] == "pebble" and not done["was_active"]
    with Store.open() as store:
        serial = store.version("web", 1).leaf.serial_number  # type: ignore[union-attr]
    status = pebble.cert_status(serial)
    assert status["Status"] == "Revoked" and status["Reason"] == 4  # superseded

    refused = expect(cli("rollback", "web", "--to", "1"), 2)
    assert "revoked" in refused.err
    again = expect(cli("revoke", "web", "--version", "1", "--reason", "keyCompromise", "--json"), 2).json()
    assert "revoked already" in again["error"]

    expect(cli("revoke", "web", "--reason", "keyCompromise"))  # the active one
    shown = expect(cli("lineage", "show", "web", "--json")).json()
    assert [(v["number"], v["revoked"], v["active"]) for v in shown["versions"]] == [
        (1, "superseded", False),
        (2, "keyCompromise", False),
    ]
    refused = expect(cli("deploy", "web"), 2)
    assert "no certificate" in refused.err
    refused = expect(cli("export", "web", "--version", "2", "--format", "pem", "--out", tmp_path / "x",
                          "--no-key-password"), 2)  # fmt: skip
    assert "revoked" in refused.err


@pytest.mark.usefixtures("acme_env")
def test_eab_required_missing_wrong_and_right(cli: Any, tmp_path: Path, bind: BindServer, http_port: int) -> None:
    with PebbleServer(tmp_path / "pebble-eab", http_port=http_port, dns=bind.address, eab=EAB_KEYS) as pebble:
        expect(cli("init"))
        base = ["issuer", "add", "sectigo", "--acme", pebble.directory, "--ca-bundle", pebble.ca_bundle, "--agree-tos"]

        missing = expect(cli(*base), 1)
        assert "requires External Account Binding" in missing.err
        assert "--eab-kid" in missing.err  # the hint

        wrong = tmp_path / "wrong-hmac.txt"
        wrong.write_text(EAB_KEYS["kid-other"] + "\n")
        refused = expect(cli(*base, "--eab-kid", "kid-certfleet", "--eab-hmac-file", wrong, "--json"), 1).json()
        assert refused["exit_code"] == 1 and refused["error"].startswith("sectigo: the CA refused")
        assert expect(cli("issuer", "list", "--json")).json() == {"issuers": []}  # nothing stored

        right = tmp_path / "hmac.txt"
        right.write_text(EAB_KEYS["kid-certfleet"] + "\n")
        added = expect(cli(*base, "--eab-kid", "kid-certfleet", "--eab-hmac-file", right, "--json")).json()
        assert added["eab_kid"] == "kid-certfleet" and added["status"] == "valid"


@pytest.mark.usefixtures("acme_env")
def test_bad_nonces_are_retried_and_a_ca_that_rejects_them_all_is_one_line(
    cli: Any, tmp_path: Path, bind: BindServer, http_port: int
) -> None:
    expect(cli("init"))
    with PebbleServer(tmp_path / "p40", http_port=http_port, dns=bind.address, nonce_reject=40) as pebble:
        add_issuer(cli, pebble, "flaky")
        trust_pebble(cli, pebble, tmp_path)
        dns_lineage(cli, bind, tmp_path, "flaky")
        issued = expect(cli("issue", "web", "--json")).json()
        assert issued["ok"] and issued["version"] == 1
    with PebbleServer(tmp_path / "p100", http_port=http_port, dns=bind.address, nonce_reject=100) as pebble:
        base = ["issuer", "add", "broken", "--acme", pebble.directory, "--ca-bundle", pebble.ca_bundle, "--agree-tos"]
        refused = expect(cli(*base), 1)
        assert "error: broken: the CA refused every fresh nonce it gave (badNonce)" in refused.err
        assert [i["name"] for i in expect(cli("issuer", "list", "--json")).json()["issuers"]] == ["flaky"]


@pytest.mark.usefixtures("acme_env")
def test_the_first_issuer_unreachable_the_second_issues(
    cli: Any, tmp_path: Path, bind: BindServer, http_port: int
) -> None:
    expect(cli("init"))
    first = PebbleServer(tmp_path / "first", http_port=http_port, dns=bind.address).start()
    try:
        add_issuer(cli, first, "first")
    finally:
        first.stop()
    with PebbleServer(tmp_path / "second", http_port=http_port, dns=bind.address) as second:
        add_issuer(cli, second, "second")
        trust_pebble(cli, second, tmp_path)
        dns_lineage(cli, bind, tmp_path, "first", "second")
        issued = expect(cli("issue", "web", "--json")).json()
    assert issued["ok"] and issued["issuer"] == "second"
    (tried, won) = issued["attempts"]
    assert tried["issuer"] == "first" and tried["exit_code"] == 3 and "did not answer" in tried["error"]
    assert won == {"issuer": "second", "error": None, "hint": None, "exit_code": None, "retry_after": None}
    shown = expect(cli("lineage", "show", "web", "--json")).json()
    assert shown["issuers"] == ["first", "second"] and shown["versions"][0]["issuer"] == "second"
    with Store.open() as store:
        (record,) = store.issuances("web")
        leaf = store.version("web", 1).leaf
    assert record.issuer == "second" and record.tried[0].startswith("first: the CA did not answer")
    assert isinstance(leaf, x509.Certificate)

    # both gone: exit 3, one line per issuer, nothing stored
    refused = expect(cli("issue", "web", "--json"), 3).json()
    assert refused["error"].startswith("no issuer of web could be reached: first:")
    assert len(expect(cli("history", "web", "--json")).json()["versions"]) == 1


@pytest.mark.usefixtures("acme_env")
def test_the_preferred_chain_is_kept_among_the_alternates(
    cli: Any, tmp_path: Path, bind: BindServer, http_port: int
) -> None:
    expect(cli("init"))
    with PebbleServer(tmp_path / "alt", http_port=http_port, dns=bind.address, alternate_roots=1) as pebble:
        add_issuer(cli, pebble)
        roots = [x509.load_pem_x509_certificate(pebble.root_pem(i)) for i in (0, 1)]
        for i in range(len(roots)):
            (tmp_path / f"root{i}.pem").write_bytes(pebble.root_pem(i))
            expect(cli("trust", "add", tmp_path / f"root{i}.pem"))
        dns_lineage(cli, bind, tmp_path, "pebble")
        wanted = roots[1].subject.rfc4514_string().removeprefix("CN=")
        expect(cli("lineage", "set", "web", "--preferred-chain", wanted))
        issued = expect(cli("issue", "web", "--json")).json()
        assert issued["chain"] == wanted and issued["preferred_chain_found"] is True
        expect(cli("lineage", "set", "web", "--preferred-chain", "No Such Root"))
        other = expect(cli("issue", "web", "--json")).json()
    assert other["preferred_chain_found"] is False and other["chain"] == roots[0].subject.rfc4514_string()[3:]
    with Store.open() as store:
        chain = store.version("web", 1).chain
    assert chain[-1].issuer == roots[1].subject


@pytest.mark.usefixtures("acme_env")
def test_http01_answered_by_certfleet_itself(cli: Any, pebble: PebbleServer, http_port: int, tmp_path: Path) -> None:
    expect(cli("init"))
    add_issuer(cli, pebble)
    trust_pebble(cli, pebble, tmp_path)
    expect(cli("node", "add", "main", "--name", "acme.test", "--name", "www.acme.test",
               "--target", f"nginx:{tmp_path / 'tls'}", "--lineage", "web"))  # fmt: skip
    solver = f"*=http-01:standalone:127.0.0.2:{http_port}"
    expect(cli("lineage", "set", "web", "--issuer", "pebble", "--solver", solver))
    issued = expect(cli("issue", "web", "--json")).json()
    assert issued["ok"] and {n["solver"] for n in issued["preflight"]["names"]} == {
        f"http-01:standalone:127.0.0.2:{http_port} (certfleet answers)"
    }


@pytest.mark.usefixtures("acme_env")
def test_an_interrupted_rollover_is_finished_by_the_next(cli: Any, pebble: PebbleServer) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from certfleet.acme import accounts

    expect(cli("init"))
    add_issuer(cli, pebble)
    with Store.open() as store:
        issuer = store.issuer("pebble")
        # the new key was kept and the CA changed it, but its answer never came back
        told = ec.generate_private_key(ec.SECP256R1())
        store.stage_account_key("pebble", told)
        with accounts.connect(store, issuer) as conn:
            conn.change_key(told)
        rolled = accounts.rollover(store, "pebble")
        current, staged = store.account_key("pebble")
        assert staged is None and rolled.key_thumbprint not in (issuer.key_thumbprint, None)
        # a key kept but never sent: dropped, and the rollover goes on from the CA's key
        store.stage_account_key("pebble", ec.generate_private_key(ec.SECP256R1()))
        again = accounts.rollover(store, "pebble")
        assert again.key_thumbprint != rolled.key_thumbprint
        newest, staged = store.account_key("pebble")
    assert staged is None
    with Connection("check", pebble.directory, key=newest, ca_bundle=pebble.ca_bundle.read_text()) as conn:
        assert conn.account_exists() == issuer.account_url
    with Connection("check", pebble.directory, key=current, ca_bundle=pebble.ca_bundle.read_text()) as conn:
        assert conn.account_exists() is None
