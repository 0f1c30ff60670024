"""The whole flow through the CLI, as the README tells it: a main server and a border gateway
(over SSH), both real nginx, from a placeholder certificate to one CA-signed certificate for all
their names, proven by ``certfleet status``; then a renewal by the same steps, and rollbacks."""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.certinfo import fingerprint, san_names
from certfleet.keys import key_matches
from certfleet.testing import pem
from conftest import PKI
from support.servers import NginxServer, SshServer, served_chain, sshd

pytestmark = pytest.mark.peer  # every test here starts a real server

__all__ = ["sshd"]

MAIN_NAMES = ("mc.example.test", "www.example.test")
GATEWAY_NAMES = ("gw.example.test", "mobile.example.test", "connect.example.test")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sshd: SshServer) -> Path:
    """The administrator's HOME: ~/.ssh knows the gateway's host key and holds the key it accepts."""
    home = tmp_path / "admin"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    shutil.copyfile(sshd.known_hosts, ssh / "known_hosts")
    shutil.copyfile(sshd.user_key, ssh / "id_ed25519")
    (ssh / "id_ed25519").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("CERTFLEET_HOME", str(tmp_path / "store"))
    return home


@pytest.fixture
def nginx_pair(tmp_path: Path) -> Iterator[tuple[NginxServer, NginxServer]]:
    """Two running nginx servers on a placeholder self-signed certificate, whose configuration
    already names certfleet's live files (edited, not yet reloaded: what the README asks)."""
    snakeoil = tmp_path / "snakeoil"
    snakeoil.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(snakeoil / "key.pem"), "-out", str(snakeoil / "cert.pem"), "-subj", "/CN=placeholder",
         "-days", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    with ExitStack() as stack:
        servers = []
        for name in ("main", "gateway"):
            server = NginxServer(tmp_path / name, cert=snakeoil / "cert.pem", key=snakeoil / "key.pem")
            stack.enter_context(server)
            live = tmp_path / name / "tls" / "live"
            conf = server.conf.read_text()
            conf = conf.replace(str(snakeoil / "cert.pem"), str(live / "fullchain.pem"))
            server.conf.write_text(conf.replace(str(snakeoil / "key.pem"), str(live / "privkey.pem")))
            servers.append(server)
        yield servers[0], servers[1]


def ok(result: Any, code: int = 0) -> Any:
    assert result.code == code, f"exit {result.code}\n{result.out}\n{result.err}"
    return result


def ca_zip(tmp_path: Path, pki: PKI, csr_file: Path, name: str) -> Path:
    """What a CA sends back for the CSR: the certificate and its intermediate bundle, zipped."""
    csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    leaf = pki.inter.sign_csr(csr)
    package = tmp_path / name
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mc_example_test.crt", pem(leaf))
        zf.writestr("intermediate_bundle.crt", pem(pki.inter.cert))
    package.write_bytes(buf.getvalue())
    return package


def status_nodes(cli: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    report = ok(cli("status", "web", "--json")).json()
    (lineage,) = report["lineages"]
    return lineage, {n["node"]: n for n in lineage["nodes"]}


@pytest.mark.usefixtures("home")
def test_two_servers_from_nothing_to_one_certificate(
    cli: Any, tmp_path: Path, sshd: SshServer, pki: PKI, nginx_pair: tuple[NginxServer, NginxServer]
) -> None:
    main, gateway = nginx_pair
    ok(cli("init"))
    ok(cli("trust", "add", pki.root_file(tmp_path)))
    ok(cli(
        "node", "add", "main", *[a for n in MAIN_NAMES for a in ("--name", n)],
        "--target", f"nginx:{tmp_path / 'main' / 'tls'}",
        "--test", main.test_cmd, "--reload", main.reload_cmd, "--probe", main.probe, "--lineage", "web",
    ))  # fmt: skip
    ok(cli(
        "node", "add", "gateway", *[a for n in GATEWAY_NAMES for a in ("--name", n)],
        "--target", f"nginx:{tmp_path / 'gateway' / 'tls'}", "--transport", sshd.url,
        "--test", gateway.test_cmd, "--reload", gateway.reload_cmd, "--probe", gateway.probe, "--lineage", "web",
    ))  # fmt: skip

    csr_file = tmp_path / "web.csr"
    ok(cli("request", "web", "--node", "main", "--node", "gateway", "--key", "ec:p256", "--out", csr_file))
    ok(cli("import", "web", ca_zip(tmp_path, pki, csr_file, "ca-answer.zip"), "--no-fetch"))

    planned = ok(cli("deploy", "web", "--dry-run", "--json")).json()
    assert {n["outcome"] for n in planned["nodes"]} == {"planned"}
    assert not (tmp_path / "main" / "tls" / "live").exists()

    deployed = ok(cli("deploy", "web", "--json")).json()
    assert {n["node"]: n["outcome"] for n in deployed["nodes"]} == {"main": "ok", "gateway": "ok"}
    fp = deployed["fingerprint"]

    lineage, nodes = status_nodes(cli)
    assert lineage["active"]["fingerprint"] == fp
    for name in ("main", "gateway"):
        assert nodes[name]["serving"] == "active", nodes[name]
        assert nodes[name]["served_fingerprint"] == fp
        assert nodes[name]["last_deployment"]["outcome"] == "ok"
    for server, names in ((main, MAIN_NAMES), (gateway, GATEWAY_NAMES)):
        chain = served_chain(server.probe, names[0])
        assert [fingerprint(c) for c in chain] == [fp, fingerprint(pki.inter.cert)]
        dns, _ = san_names(chain[0])
        assert set(MAIN_NAMES + GATEWAY_NAMES) <= set(dns)  # one certificate for every name of both

    human = ok(cli("deploy", "web"))  # again: nothing to do, each node only verified
    assert "(2 unchanged)" in human.out

    # renewal: the same steps again; then the old version back on the gateway only
    csr_file = tmp_path / "web-2.csr"
    ok(cli("request", "web", "--out", csr_file))
    ok(cli("import", "web", ca_zip(tmp_path, pki, csr_file, "ca-renewal.zip"), "--no-fetch"))
    renewed = ok(cli("deploy", "web", "--json")).json()
    assert renewed["fingerprint"] != fp
    assert {n["outcome"] for n in renewed["nodes"]} == {"ok"}
    _, nodes = status_nodes(cli)
    assert {n["serving"] for n in nodes.values()} == {"active"}

    back = ok(cli("rollback", "web", "--node", "gateway", "--json")).json()
    assert back["rollback"] is True
    assert [(n["node"], n["outcome"], n["served"]) for n in back["nodes"]] == [("gateway", "ok", fp)]
    assert (back["nodes"][0]["served_version"], back["nodes"][0]["live_versions"]) == (1, [1])
    assert fingerprint(served_chain(gateway.probe, GATEWAY_NAMES[0])[0]) == fp
    assert fingerprint(served_chain(main.probe, MAIN_NAMES[0])[0]) == renewed["fingerprint"]
    history = ok(cli("history", "web", "--json")).json()
    assert len(history["deployments"]) == 4
    assert [d["rollback"] for d in history["deployments"]] == [True, False, False, False]
    assert "rollback to v1" in ok(cli("history", "web")).out
    assert json.dumps(history).count('"rolled-back"') == 0
    assert (back["activates"], back["active"]) == (False, 2)  # the gateway only: the renewal stays active

    # the renewal withdrawn everywhere: the version before becomes the active one again
    whole = ok(cli("rollback", "web", "--json")).json()
    assert (whole["version"], whole["activates"], whole["active"]) == (1, True, 1)
    assert {n["node"]: n["outcome"] for n in whole["nodes"]} == {"main": "ok", "gateway": "unchanged"}
    again = ok(cli("deploy", "web", "--json")).json()  # and a deploy keeps it
    assert again["fingerprint"] == fp
    assert {n["outcome"] for n in again["nodes"]} == {"unchanged"}
    for server, names in ((main, MAIN_NAMES), (gateway, GATEWAY_NAMES)):
        assert fingerprint(served_chain(server.probe, names[0])[0]) == fp
    lineage, nodes = status_nodes(cli)
    assert lineage["active"]["fingerprint"] == fp
    assert {n["serving"] for n in nodes.values()} == {"active"}


@pytest.mark.usefixtures("home")
def test_deploy_refuses_what_it_cannot_do(cli: Any, tmp_path: Path) -> None:
    ok(cli("init"))
    ok(cli("node", "add", "main", "--name", "mc.example.test", "--target", f"nginx:{tmp_path}/tls", "--lineage", "web"))
    no_cert = cli("deploy", "web")
    assert no_cert.code == 2
    assert "no certificate yet" in no_cert.err
    assert cli("deploy", "nope").code == 2
    assert cli("rollback", "web").code == 2


@dataclass
class Fleet:
    main: NginxServer
    gateway: NginxServer
    ssh_url: str  # how the gateway is reached


@pytest.fixture
def fleet(sshd: SshServer, nginx_pair: tuple[NginxServer, NginxServer]) -> Fleet:
    return Fleet(nginx_pair[0], nginx_pair[1], sshd.url)


def setup_fleet(cli: Any, tmp_path: Path, pki: PKI, fleet: Fleet) -> None:
    """init, trust the test root, both nodes, one certificate deployed."""
    main, gateway = fleet.main, fleet.gateway
    ok(cli("init"))
    ok(cli("trust", "add", pki.root_file(tmp_path)))
    for name, names, server, transport in (
        ("main", MAIN_NAMES, main, "local"),
        ("gateway", GATEWAY_NAMES, gateway, fleet.ssh_url),
    ):
        ok(cli(
            "node", "add", name, *[a for n in names for a in ("--name", n)],
            "--target", f"nginx:{tmp_path / name / 'tls'}", "--transport", transport,
            "--test", server.test_cmd, "--reload", server.reload_cmd, "--probe", server.probe, "--lineage", "web",
        ))  # fmt: skip
    csr_file = tmp_path / "web.csr"
    ok(cli("request", "web", "--node", "main", "--node", "gateway", "--key", "ec:p256", "--out", csr_file))
    ok(cli("import", "web", ca_zip(tmp_path, pki, csr_file, "v1.zip"), "--no-fetch"))
    ok(cli("deploy", "web"))


def whole_pair(server: NginxServer, name: str, folder: Path, leaves: set[str], chain_tail: list[str]) -> str:
    """The leaf fingerprint the server serves, after checking that it serves a whole chain and
    that its live files hold a matching key and certificate, both of a known version."""
    served = [fingerprint(c) for c in served_chain(server.probe, name)]
    assert served[0] in leaves, "serves an unknown certificate"
    assert served[1:] == chain_tail
    live = folder / "live"
    cert = x509.load_pem_x509_certificates((live / "fullchain.pem").read_bytes())
    key = serialization.load_pem_private_key((live / "privkey.pem").read_bytes(), password=None)
    assert fingerprint(cert[0]) in leaves
    assert key_matches(key, cert[0]), f"{live}: key and certificate do not match"
    return served[0]


@pytest.fixture(params=[5, 17, 29])
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(request.param)


@pytest.mark.usefixtures("home")
def test_a_killed_deploy_command_is_finished_by_the_next(
    rng: random.Random, cli: Any, tmp_path: Path, pki: PKI, fleet: Fleet
) -> None:
    main, gateway = fleet.main, fleet.gateway
    setup_fleet(cli, tmp_path, pki, fleet)
    old = fingerprint(served_chain(main.probe, MAIN_NAMES[0])[0])
    csr_file = tmp_path / "web-2.csr"
    ok(cli("request", "web", "--out", csr_file))
    ok(cli("import", "web", ca_zip(tmp_path, pki, csr_file, "v2.zip"), "--no-fetch"))
    new = ok(cli("deploy", "web", "--dry-run", "--json")).json()["fingerprint"]
    sites = [
        (main, MAIN_NAMES[0], tmp_path / "main" / "tls"),
        (gateway, GATEWAY_NAMES[0], tmp_path / "gateway" / "tls"),
    ]

    proc = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "web"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # the deploy has begun once a new folder appears on a node; kill it somewhere after that
        versions = [folder / "versions" for _, _, folder in sites]
        before = {v: set(v.iterdir()) for v in versions}
        while proc.poll() is None and all(set(v.iterdir()) == before[v] for v in versions):
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 1.0))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    for server, name, folder in sites:
        whole_pair(server, name, folder, {old, new}, [fingerprint(pki.inter.cert)])

    finished = ok(cli("deploy", "web", "--json")).json()
    assert {n["outcome"] for n in finished["nodes"]} <= {"ok", "unchanged"}
    for server, name, folder in sites:
        assert whole_pair(server, name, folder, {new}, [fingerprint(pki.inter.cert)]) == new
        assert not [p for p in (folder / "versions").iterdir() if p.name.startswith(".tmp-")]
    _, nodes = status_nodes(cli)
    assert {n["serving"] for n in nodes.values()} == {"active"}


def live_fp16(folder: Path) -> str | None:
    """The leaf fingerprint start of the version folder a node's live link points at."""
    link = folder / "live"
    return link.readlink().name[:16] if link.is_symlink() else None


def _main_switched(main_folder: Path, new: str) -> bool:
    return live_fp16(main_folder) == new[:16]


@pytest.mark.usefixtures("home")
@pytest.mark.parametrize("point", ["uploading", "switched", "serving"])
def test_a_deploy_killed_at_any_point_is_told_truly_by_history_and_status(
    point: str, cli: Any, tmp_path: Path, pki: PKI, fleet: Fleet
) -> None:
    main, gateway = fleet.main, fleet.gateway
    setup_fleet(cli, tmp_path, pki, fleet)
    old = fingerprint(served_chain(main.probe, MAIN_NAMES[0])[0])
    csr_file = tmp_path / "web-2.csr"
    ok(cli("request", "web", "--out", csr_file))
    ok(cli("import", "web", ca_zip(tmp_path, pki, csr_file, "v2.zip"), "--no-fetch"))
    new = ok(cli("deploy", "web", "--dry-run", "--json")).json()["fingerprint"]
    sites = {
        "main": (main, MAIN_NAMES[0], tmp_path / "main" / "tls"),
        "gateway": (gateway, GATEWAY_NAMES[0], tmp_path / "gateway" / "tls"),
    }
    main_folder = sites["main"][2]
    reached = {
        # a new version folder on a node: the deploy has started touching nodes
        "uploading": lambda: any(
            p.name.startswith((".tmp-", new[:16])) for s in sites.values() for p in (s[2] / "versions").iterdir()
        ),
        # main's live link points at the new version: switched, not yet proven
        "switched": lambda: _main_switched(main_folder, new),
        # main serves the new certificate: reloaded, its probe still confirming
        "serving": lambda: fingerprint(served_chain(main.probe, MAIN_NAMES[0])[0]) == new,
    }[point]

    proc = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "deploy", "web"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and not reached() and time.monotonic() < deadline:
            time.sleep(0.005)
        killed_running = proc.poll() is None
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed_running, "the deploy ended before the point was reached"

    [last, *_] = ok(cli("history", "web", "--json")).json()["deployments"]
    assert (last["version"], last["state"]) == (2, "interrupted")
    assert "INTERRUPTED" in ok(cli("history", "web")).out
    told = cli("status", "web", "--json")
    assert told.code == 1  # an interrupted deploy is something to act on
    nodes = {n["node"]: n for n in told.json()["lineages"][0]["nodes"]}
    versions = {old: 1, new: 2}
    for name, (server, host, folder) in sites.items():
        really = whole_pair(server, host, folder, {old, new}, [fingerprint(pki.inter.cert)])
        node = nodes[name]
        assert (node["served_fingerprint"], node["served_version"]) == (really, versions[really]), name
        if node["last_deployment"]["outcome"] == "interrupted":
            link = live_fp16(folder)
            assert link in (old[:16], new[:16]), link
            assert node["live"]["versions"] == [1 if link == old[:16] else 2], (name, node)
            assert node["live"]["proven"] is (link == old[:16]), (name, node)
            assert "interrupted" in [p["code"] for p in node["problems"]]
        else:  # it finished before the kill, and its result was recorded
            assert node["last_deployment"]["outcome"] == "ok" and really == new

    finished = ok(cli("deploy", "web", "--json")).json()
    assert {n["outcome"] for n in finished["nodes"]} <= {"ok", "unchanged"}
    _, settled = status_nodes(cli)
    assert {n["serving"] for n in settled.values()} == {"active"}
