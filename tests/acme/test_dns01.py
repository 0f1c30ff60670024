"""dns-01 against a real BIND 9 that takes RFC 2136 updates signed with TSIG and is the DNS server
Pebble asks: a wildcard and its apex for a two-node fleet, a hook command, and what the preflight
catches before any order (a CAA record that forbids the CA, a wrong TSIG key); a wildcard without
a dns-01 solver is refused before anything is sent."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certfleet.certinfo import san_names
from certfleet.store import Store
from support.bind import KEY_NAME, BindServer
from support.pebble import PebbleServer, acme_env, add_issuer, bind, expect, http_port, pebble

__all__ = ["acme_env", "bind", "http_port", "pebble"]  # fixtures

pytestmark = pytest.mark.peer  # every test here starts BIND and Pebble

HOOK = """\
import os, dns.query, dns.tsig, dns.tsigkeyring, dns.update
env = os.environ
action, record, value = env["CERTFLEET_ACME_ACTION"], env["CERTFLEET_ACME_RECORD"], env["CERTFLEET_ACME_VALUE"]
keyring = dns.tsigkeyring.from_text({{"{key}": (dns.tsig.HMAC_SHA256, "{secret}")}})
update = dns.update.UpdateMessage("acme.test", keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)
if action == "add":
    update.add(record + ".", 60, "TXT", '"' + value + '"')
else:
    update.delete(record + ".", "TXT", '"' + value + '"')
dns.query.tcp(update, "127.0.0.1", port={port}, timeout=5)
with open("{log}", "a") as log:
    log.write(f"{{action}} {{record}} {{os.environ['CERTFLEET_ACME_DOMAIN']}}\\n")
"""


@pytest.fixture
def fleet(cli: Any, acme_env: dict[str, str], pebble: PebbleServer, tmp_path: Path) -> Path:
    """A store with Pebble's root trusted, issuer pebble, and lineage web over two nodes:
    main (acme.test, www.acme.test) and gw (*.acme.test)."""
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    expect(cli("init"))
    expect(cli("trust", "add", root))
    for node, names in (("main", ("acme.test", "www.acme.test")), ("gw", ("*.acme.test",))):
        expect(cli("node", "add", node, *[a for n in names for a in ("--name", n)],
                   "--target", f"nginx:{tmp_path / node}", "--lineage", "web"))  # fmt: skip
    return root


@pytest.fixture
def planted(bind: BindServer) -> Iterator[BindServer]:
    """The test zone's CAA records, removed afterwards (BIND serves the whole module)."""
    yield bind
    bind.update("acme.test", "CAA", delete=True)


def test_a_wildcard_and_its_apex_by_rfc2136_with_tsig(
    cli: Any, fleet: Path, pebble: PebbleServer, bind: BindServer, tmp_path: Path
) -> None:
    tsig = bind.credentials(tmp_path / "tsig.ini")
    add_issuer(cli, pebble)
    expect(cli(
        "lineage", "set", "web", "--issuer", "pebble",
        "--solver", f"*.acme.test=dns-01:rfc2136:{tsig}", "--solver", f"acme.test=dns-01:rfc2136:{tsig}",
    ))  # fmt: skip
    report = expect(cli("issue", "web", "--dry-run", "--json")).json()
    assert report["ok"] and {c["check"] for c in report["solvers"]} == {"solver"}

    issued = expect(cli("issue", "web", "--json")).json()
    assert issued["ok"] and sorted(issued["names"]) == ["*.acme.test", "acme.test"]  # www is under the wildcard
    with Store.open() as store:
        leaf = store.version("web", issued["version"]).leaf
    assert leaf is not None and sorted(san_names(leaf)[0]) == ["*.acme.test", "acme.test"]
    assert bind.query("_acme-challenge.acme.test", "TXT") == []  # both values removed


def test_a_hook_command_gets_name_and_value_in_its_environment(
    cli: Any, fleet: Path, pebble: PebbleServer, bind: BindServer, tmp_path: Path
) -> None:
    log = tmp_path / "hook.log"
    script = tmp_path / "hook.py"
    script.write_text(HOOK.format(key=KEY_NAME, secret=bind.secret, port=bind.port, log=log))
    add_issuer(cli, pebble)
    hook = f"{sys.executable} {script}"
    expect(cli("lineage", "set", "web", "--issuer", "pebble", "--solver", f"*acme.test=dns-01:hook:{hook}"))
    issued = expect(cli("issue", "web", "--json")).json()
    assert issued["ok"]
    lines = sorted(log.read_text().splitlines())
    assert lines == [
        "add _acme-challenge.acme.test acme.test",
        "add _acme-challenge.acme.test acme.test",
        "remove _acme-challenge.acme.test acme.test",
        "remove _acme-challenge.acme.test acme.test",
    ]
    assert bind.query("_acme-challenge.acme.test", "TXT") == []


def test_a_caa_record_that_forbids_the_ca_is_caught_before_any_order(
    cli: Any, fleet: Path, pebble: PebbleServer, planted: BindServer, tmp_path: Path
) -> None:
    tsig = planted.credentials(tmp_path / "tsig.ini")
    add_issuer(cli, pebble, "pebble", "--caa-identity", "pebble.test")
    expect(cli("lineage", "set", "web", "--issuer", "pebble", "--solver", f"*acme.test=dns-01:rfc2136:{tsig}"))
    planted.update("acme.test", "CAA", '0 issue "ca.example.net"')

    report = expect(cli("issue", "web", "--dry-run", "--json"), 1).json()
    caa = {n["name"]: next(c for c in n["checks"] if c["check"] == "caa:pebble") for n in report["names"]}
    assert not caa["acme.test"]["ok"]
    assert caa["acme.test"]["message"] == "CAA at acme.test allows only ca.example.net, not pebble (pebble.test)"
    assert not caa["*.acme.test"]["ok"]

    refused = expect(cli("issue", "web", "--json"), 1).json()
    assert refused["attempts"] == [] and refused["key"] == "nothing was ordered: no key was made"
    assert expect(cli("history", "web", "--json")).json()["versions"] == []

    # issuewild governs the wildcard alone: the apex is allowed again, the wildcard still not
    planted.update("acme.test", "CAA", '0 issue "pebble.test"', '0 issuewild ";"', delete=True)
    report = expect(cli("issue", "web", "--dry-run", "--json"), 1).json()
    verdicts = {n["name"]: n["ok"] for n in report["names"]}
    assert verdicts == {"acme.test": True, "*.acme.test": False}


def test_a_wrong_tsig_key_is_caught_before_any_order(
    cli: Any, fleet: Path, pebble: PebbleServer, bind: BindServer, tmp_path: Path
) -> None:
    wrong = bind.credentials(tmp_path / "tsig.ini", secret="c2VjcmV0IHRoYXQgaXMgbm90IHRoZSBrZXkgb2YgdGhlIHpvbmU=")
    add_issuer(cli, pebble)
    expect(cli("lineage", "set", "web", "--issuer", "pebble", "--solver", f"*acme.test=dns-01:rfc2136:{wrong}"))
    refused = expect(cli("issue", "web", "--json"), 1).json()
    (solver,) = refused["preflight"]["solvers"]
    assert not solver["ok"] and "refused the TSIG key" in solver["message"]
    assert refused["attempts"] == []


def test_a_wildcard_without_dns01_is_refused_before_anything_is_sent(
    cli: Any, fleet: Path, pebble: PebbleServer
) -> None:
    add_issuer(cli, pebble)
    expect(cli("lineage", "set", "web", "--issuer", "pebble"))
    refused = expect(cli("issue", "web"), 2)
    assert "*.acme.test is a wildcard: a CA proves a wildcard only by dns-01" in refused.err
    assert "--solver '*.acme.test=dns-01:" in refused.err
