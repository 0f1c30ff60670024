"""http-01 where the names live: two real nginx nodes, one reached over SSH, each publishing its
own webroot on its own loopback address; Pebble fetches each token from the address its name
resolves to (BIND), so a validated name is a token that landed on the node serving it. Then the
whole flow a new user follows: issuer add, issue, deploy, status, and a strict client."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from certfleet.acme import accounts
from certfleet.acme.issue import IssueEvent, issue
from certfleet.acme.lookup import DnsSettings
from certfleet.certinfo import fingerprint, san_names
from certfleet.fleet.nodes import make_node
from certfleet.store import Store
from support.bind import BindServer
from support.pebble import PebbleServer, WebrootNginx, acme_env, add_issuer, bind, expect, http_port, pebble, snakeoil
from support.servers import SshServer, served_chain, sshd

pytestmark = pytest.mark.peer  # every test here starts Pebble, BIND, nginx and sshd

__all__ = ["acme_env", "bind", "http_port", "pebble", "sshd"]  # fixtures

MAIN_NAMES = ("acme.test", "www.acme.test")
GW_NAMES = ("gw.acme.test", "mbg.acme.test")
CHALLENGES = ".well-known/acme-challenge"


@dataclass
class Node:
    name: str
    server: WebrootNginx
    names: tuple[str, ...]

    @property
    def tokens(self) -> list[str]:
        folder = self.server.webroot / CHALLENGES
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@dataclass
class Fleet:
    main: Node
    gw: Node  # reached over SSH
    sshd: SshServer


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, http_port: int, sshd: SshServer) -> Iterator[Fleet]:
    """nginx for main (127.0.0.2) and gw (127.0.0.3), each with a webroot and a placeholder TLS
    site; gw is reached over SSH."""
    base = tmp_path_factory.mktemp("nodes")
    placeholder = snakeoil(base / "snakeoil")
    with ExitStack() as stack:
        out = []
        for name, ip, names in (("main", "127.0.0.2", MAIN_NAMES), ("gw", "127.0.0.3", GW_NAMES)):
            server = WebrootNginx(
                base / name, webroot=base / name / "www", http_host=ip, http_port=http_port,
                live=base / name / "tls" / "live", placeholder=placeholder,
            )  # fmt: skip
            stack.enter_context(server)
            out.append(Node(name, server, names))
        yield Fleet(out[0], out[1], sshd)


def _fleet(store: Store, main: Node, gw: Node, sshd: SshServer, *, gw_webroot: Path | None = None) -> None:
    store.add_node(
        make_node("main", main.names, [f"nginx:{main.server.workdir / 'tls'}"],
                  options={"webroot": str(main.server.webroot)}),
        lineage="web",
    )  # fmt: skip
    store.add_node(
        make_node("gw", gw.names, [f"nginx:{gw.server.workdir / 'tls'}"], transport=sshd.url,
                  options={**sshd.options, "webroot": str(gw_webroot or gw.server.webroot)}),
        lineage="web",
    )  # fmt: skip


@pytest.mark.usefixtures("acme_env")
def test_each_token_lands_on_the_node_that_serves_its_name_and_is_removed(pebble: PebbleServer, fleet: Fleet) -> None:
    main, gw, sshd = fleet.main, fleet.gw, fleet.sshd
    seen: dict[str, list[str]] = {}

    def progress(event: IssueEvent) -> None:
        if event.step == "answer" and not seen:  # every token is in place when the CA is told
            seen.update(main=main.tokens, gw=gw.tokens)

    with Store.init() as store:
        _fleet(store, main, gw, sshd)
        from cryptography import x509

        store.add_trust_anchor(x509.load_pem_x509_certificate(pebble.root_pem()))
        accounts.add_acme_issuer(
            store, "pebble", pebble.directory, agree_tos=True, ca_bundle=pebble.ca_bundle.read_text()
        )
        store.set_policy("web", issuers=["pebble"])
        result = asyncio.run(issue(store, "web", progress=progress, dns=DnsSettings.from_env()))
        assert result.ok, [c.message for c in (result.preflight.failed() if result.preflight else [])]
        assert result.preflight is not None and result.preflight.ok
        where = {n: result.preflight.where[n] for n in result.names}
    assert len(seen["main"]) == 2 and len(seen["gw"]) == 2  # one token per name, on its own node
    assert where["www.acme.test"].startswith("http-01 on main") and where["mbg.acme.test"].startswith("http-01 on gw")
    assert main.tokens == [] and gw.tokens == []  # removed afterwards, over SSH too
    leaf = result.imported.chain.leaf if result.imported else None
    assert leaf is not None and set(san_names(leaf)[0]) == set(MAIN_NAMES + GW_NAMES)


@pytest.mark.usefixtures("acme_env")
def test_a_failed_challenge_is_caught_by_the_preflight_or_told_in_the_cas_words(
    cli: Any, pebble: PebbleServer, fleet: Fleet, tmp_path: Path
) -> None:
    main, gw, sshd = fleet.main, fleet.gw, fleet.sshd
    elsewhere = tmp_path / "not-served"  # a webroot nginx does not publish
    expect(cli("init"))
    with Store.open() as store:
        _fleet(store, main, gw, sshd, gw_webroot=elsewhere)
    add_issuer(cli, pebble)
    expect(cli("lineage", "set", "web", "--issuer", "pebble"))

    report = expect(cli("issue", "web", "--dry-run", "--json"), 1).json()
    verdicts = {n["name"]: n["ok"] for n in report["names"]}
    assert verdicts == {"acme.test": True, "www.acme.test": True, "gw.acme.test": False, "mbg.acme.test": False}
    gw_check = next(
        c for n in report["names"] if n["name"] == "gw.acme.test" for c in n["checks"] if c["check"] == "http-01"
    )
    assert "127.0.0.3" in gw_check["message"] and "does not serve the webroot" in gw_check["message"]

    refused = expect(cli("issue", "web", "--json"), 1).json()
    assert refused["attempts"] == [] and refused["key"].startswith("nothing was ordered")

    failed = expect(cli("issue", "web", "--no-preflight", "--json"), 1).json()
    assert failed["exit_code"] == 1
    assert failed["error"].startswith("pebble: the CA could not verify gw.acme.test by http-01:") or failed[
        "error"
    ].startswith("pebble: the CA could not verify mbg.acme.test by http-01:")
    assert "http://" in failed["hint"] or "webroot" in failed["hint"]
    assert list((elsewhere / CHALLENGES).iterdir()) == []  # removed, failure included
    assert expect(cli("history", "web", "--json")).json()["versions"] == []  # nothing stored


def _strict_handshake(port: int, name: str, root: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(root))  # chain and name checked, as phones do
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.usefixtures("acme_env")
def test_issuer_add_issue_deploy_status_with_a_wildcard(
    cli: Any, pebble: PebbleServer, bind: BindServer, fleet: Fleet, tmp_path: Path
) -> None:
    """The README's flow: a main server and a gateway over SSH, one wildcard name."""
    main, gw, sshd = fleet.main, fleet.gw, fleet.sshd
    for node in (main, gw):
        node.server.point_at_live()
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    tsig = bind.credentials(tmp_path / "tsig.ini")
    expect(cli("init"))
    expect(cli("trust", "add", root))
    expect(cli(
        "node", "add", "main", "--name", "acme.test", "--name", "www.acme.test",
        "--target", f"nginx:{main.server.workdir / 'tls'}", "--webroot", main.server.webroot,
        "--test", main.server.test_cmd, "--reload", main.server.reload_cmd, "--probe", main.server.probe,
        "--lineage", "web",
    ))  # fmt: skip
    expect(cli(
        "node", "add", "gw", "--name", "mbg.acme.test", "--name", "*.acme.test",
        "--target", f"nginx:{gw.server.workdir / 'tls'}", "--transport", sshd.url,
        "--known-hosts", sshd.known_hosts, "--identity", sshd.user_key, "--webroot", gw.server.webroot,
        "--test", gw.server.test_cmd, "--reload", gw.server.reload_cmd, "--probe", gw.server.probe,
        "--lineage", "web",
    ))  # fmt: skip
    add_issuer(cli, pebble)
    expect(cli("lineage", "set", "web", "--issuer", "pebble", "--solver", f"*.acme.test=dns-01:rfc2136:{tsig}"))

    issued = expect(cli("issue", "web", "--json")).json()
    assert issued["ok"] and sorted(issued["names"]) == ["*.acme.test", "acme.test"]
    solvers = {n["name"]: n["solver"] for n in issued["preflight"]["names"]}
    assert solvers["acme.test"].startswith("http-01 on main") and solvers["*.acme.test"].startswith("dns-01:rfc2136")

    deployed = expect(cli("deploy", "web", "--json")).json()
    assert {n["node"]: n["outcome"] for n in deployed["nodes"]} == {"main": "ok", "gw": "ok"}
    status = expect(cli("status", "web", "--json")).json()
    (lineage,) = status["lineages"]
    assert {n["node"]: n["serving"] for n in lineage["nodes"]} == {"main": "active", "gw": "active"}
    fp = deployed["fingerprint"]
    for server, name in ((main.server, "www.acme.test"), (gw.server, "mbg.acme.test")):
        assert fingerprint(served_chain(server.probe, name)[0]) == fp
        from cryptography import x509

        assert fingerprint(x509.load_der_x509_certificate(_strict_handshake(server.port, name, root))) == fp
