"""Probes by zone: a worker of a zone probes its nodes (``--probe-every``) and records what each
served; ``certfleet status`` shows that recorded probe, with who made it and when, for a node in
a zone, instead of probing the node from where it runs (here: after its server went away)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jobs_fleet import issue, make_fleet, node_folder, ok

from certfleet.jobs.probes import probe_payload, recorded_result
from certfleet.probe import probe
from certfleet.store import URL_ENV, Store
from conftest import PKI
from support.console import logged_in, make_env
from support.postgres import pg_url, postgres
from support.tls import Mode, serve_tls

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

pytestmark = pytest.mark.peer


def _worker(*args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "certfleet", "worker", "--once", "--json", "--lease", "5", *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _set_probe(node: str, where: str | None) -> None:
    with Store.open() as store:
        store.put_node(dataclasses.replace(store.node(node), probe=where))


@pytest.mark.usefixtures("certfleet_home")
def test_status_shows_the_probe_a_worker_of_the_zone_recorded(
    pg_url: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_url)
    make_fleet(cli, tmp_path, pki, {"gw": "dmz"})
    leaf = issue(cli, tmp_path, pki, "v1")
    ok(cli("deploy", "web", "--queue"))
    assert [e["node"] for e in _worker("--zone", "dmz") if e["event"] == "recorded"] == ["gw"]

    live = node_folder(tmp_path, "gw") / "live"
    with serve_tls(Mode.TLS, live / "fullchain.pem", live / "privkey.pem") as server:
        _set_probe("gw", server.target)
        before = ok(cli("status", "web", "--json")).json()
        [gw] = before["lineages"][0]["nodes"]
        assert (gw["serving"], gw["probed_by"]) == ("not-probed", "")  # no worker probed it yet, nor did this
        probed = _worker("--zone", "dmz", "--probe-every", "60")
        # a probe job, queued by the worker's round and taken by it
        assert [(e["event"], e["kind"], e["node"], e["outcome"]) for e in probed] == [
            ("taken", "probe", "gw", None),
            ("probed", "probe", "gw", "ok"),
        ]
        assert probed[0]["job"] == probed[1]["job"] != 0
        connections = server.connections
    assert connections == 1  # only the worker connected
    # the node is unreachable from here now: status shows what the zone's worker saw
    shown = ok(cli("status", "web", "--json")).json()
    [gw] = shown["lineages"][0]["nodes"]
    assert gw["serving"] == "active" and gw["served_fingerprint"] == leaf, gw
    assert gw["probed_by"].endswith("/dmz") and gw["checked_at"] is not None
    assert gw["check"]["verified"] is True
    text = ok(cli("status", "web")).out
    assert "probed by" in text and "/dmz" in text and " ago" in text
    env = make_env(Path(os.environ["CERTFLEET_HOME"]))  # the dashboard shows it too
    try:
        logged_in(env)
        page = env.client.get("/", params={"refresh": "1"})
        assert page.status_code == 200 and f"probed by {gw['probed_by']}" in page.text, page.text
        assert "active version" in page.text
    finally:
        env.store.close()

    # a node of no zone is probed from here, as always
    with Store.open() as store:
        store.set_node_zone("gw", None)
    [gw] = ok(cli("status", "web", "--json"), 1).json()["lineages"][0]["nodes"]
    assert gw["probed_by"] is None and gw["serving"] == "unreachable"


def test_a_recorded_probe_reads_back_as_it_was(pki: PKI, tmp_path: Path) -> None:
    import asyncio

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(pki.leaf.fullchain_pem())
    key.write_bytes(pki.leaf.key_pem())
    with serve_tls(Mode.TLS, cert, key) as server:
        served = asyncio.run(probe(server.host, server.port, server_name="www.example.test", timeout=5))
    again = recorded_result(json.loads(json.dumps(probe_payload(served))))
    assert served.ok and again.ok
    assert again.chain_der == served.chain_der and again.chain == served.chain
    assert (again.tls_version, again.cipher, again.target) == (served.tls_version, served.cipher, served.target)
    failed = recorded_result(probe_payload(dataclasses.replace(served, ok=False, chain=(), chain_der=())))
    assert not failed.ok and failed.chain == ()
