"""Every deploy goes through the queue when its nodes have zones (PostgreSQL): the console's deploy
and the autopilot's deploy step, as ``certfleet deploy`` does. The node of no zone is deployed by
the process that asked, the DMZ node by a ``certfleet worker --zone dmz`` subprocess; with no
worker of the zone, the autopilot says which zone was not served, and the job stays queued."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from jobs_fleet import issue, make_fleet, ok, served

from certfleet.autopilot import renew as renew_module
from certfleet.autopilot.alerts import Event
from certfleet.autopilot.report import Action, RenewSettings
from certfleet.fleet.deploy import DeployOptions
from certfleet.store import URL_ENV, DeploymentState, Store
from certfleet.testing import TestCA
from conftest import PKI
from support import stop_process
from support.console import logged_in, make_env, wait_job
from support.postgres import pg_url, postgres

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

pytestmark = pytest.mark.peer

ZONES = {"plain": None, "gw": "dmz"}


@contextmanager
def dmz_worker() -> Iterator[subprocess.Popen[bytes]]:
    """A ``certfleet worker --zone dmz`` kept running (as under systemd), stopped by SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "worker", "--zone", "dmz", "--json", "--lease", "5", "--poll", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        stop_process(proc)


def _events(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=60)
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.usefixtures("certfleet_home")
def test_the_console_deploys_the_node_of_no_zone_and_a_dmz_worker_the_other(
    pg_url: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_url)
    make_fleet(cli, tmp_path, pki, ZONES)
    leaf = issue(cli, tmp_path, pki, "v1")
    env = make_env(Path(os.environ["CERTFLEET_HOME"]))
    try:
        csrf = logged_in(env)
        started = env.client.post("/api/v1/lineages/web/deploy", json={}, headers={"x-csrf-token": csrf})
        assert started.status_code == 202, started.text
        view = started.json()
        deployment = view["deployment"]
        assert view["id"] == str(deployment)  # queued before the answer: any console follows it
        # the console deploys plain itself; gw waits for the DMZ's worker
        shown = wait_job_node(env, view["id"], "plain")
        assert shown["gw"]["zone"] == "dmz" and shown["gw"]["job"]["state"] in ("queued", "running")
        assert not (tmp_path / "nodes" / "gw" / "live").exists()

        code = subprocess.run(
            [sys.executable, "-m", "certfleet", "worker", "--zone", "dmz", "--once", "--json", "--lease", "5"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert code.returncode == 0, code.stderr.decode()
        recorded = [json.loads(line) for line in code.stdout.splitlines()]
        assert [(e["node"], e["outcome"]) for e in recorded if e["event"] == "recorded"] == [("gw", "ok")]

        done = wait_job(env, view["id"])
        assert (done["state"], done["ok"], done["error"]) == ("done", True, ""), done
        nodes = {n["node"]: n for n in done["nodes"]}
        assert {n: v["outcome"]["outcome"] for n, v in nodes.items()} == {"plain": "ok", "gw": "ok"}
        assert nodes["gw"]["job"]["state"] == "done" and nodes["gw"]["job"]["worker"].endswith("/dmz")
        assert nodes["plain"]["zone"] is None and nodes["plain"]["job"]["state"] == "done"
        assert "upload" in nodes["gw"]["steps"]  # the worker's steps are in the store for every console
        page = env.client.get(f"/deploy/jobs/{view['id']}")
        assert page.status_code == 200 and "gw" in page.text and "plain" in page.text
    finally:
        env.store.close()
    assert {n: served(tmp_path, n, pki) for n in ZONES} == dict.fromkeys(ZONES, leaf)
    with Store.open() as store:
        [record] = [d for d in store.deployments("web") if d.id == deployment]
        assert record.state is DeploymentState.FINISHED and record.ok


def wait_job_node(env: Any, job_id: str, node: str, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """The job's nodes once ``node`` has its outcome."""
    deadline = time.monotonic() + timeout
    while True:
        job = env.client.get(f"/api/v1/deploy/jobs/{job_id}").json()
        nodes: dict[str, dict[str, Any]] = {n["node"]: n for n in job["nodes"]}
        if nodes.get(node, {}).get("done"):
            return nodes
        assert time.monotonic() < deadline, f"{node} never done: {job}"
        time.sleep(0.05)


def _bought_fleet(cli: Any, tmp_path: Path) -> str:
    """Lineage web with a manual issuer: plain (no zone) and gw (dmz), a bought certificate
    imported that neither has yet; its leaf's fingerprint."""
    from certfleet.certinfo import fingerprint

    ca = TestCA.root("Zones Root").intermediate("Zones CA")
    root = tmp_path / "root.pem"
    root.write_bytes(ca.root_cert.public_bytes(Encoding.PEM))
    ok(cli("init"))
    ok(cli("trust", "add", root))
    for node in ZONES:
        ok(cli("node", "add", node, "--name", "www.example.test", "--target", f"pem:{tmp_path / 'nodes' / node}",
               "--lineage", "web"))  # fmt: skip
    ok(cli("node", "zone", "gw", "dmz"))
    ok(cli("issuer", "add", "shop", "--manual"))
    ok(cli("lineage", "set", "web", "--issuer", "shop"))
    leaf = ca.leaf("www.example.test", days=200)
    bought = tmp_path / "bought.pem"
    bought.write_bytes(leaf.cert_pem() + leaf.key_pem() + ca.cert.public_bytes(Encoding.PEM))
    ok(cli("import", "web", bought))
    return fingerprint(leaf.cert)


def _leaf_of(tmp_path: Path, node: str) -> str | None:
    from cryptography import x509

    from certfleet.certinfo import fingerprint

    cert = tmp_path / "nodes" / node / "live" / "cert.pem"
    return fingerprint(x509.load_pem_x509_certificate(cert.read_bytes())) if cert.exists() else None


@pytest.mark.usefixtures("certfleet_home")
def test_the_autopilot_deploys_zoned_nodes_through_their_workers(
    pg_url: str, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_url)
    leaf = _bought_fleet(cli, tmp_path)
    with dmz_worker() as worker:
        run = subprocess.run(
            [sys.executable, "-m", "certfleet", "renew", "--no-probe", "--json"],
            capture_output=True,
            timeout=300,
            check=False,
        )
        worker.send_signal(signal.SIGTERM)
        events = _events(worker)
    assert run.returncode == 0, run.stderr.decode()
    [lineage] = json.loads(run.stdout)["lineages"]
    assert lineage["action"] == "deployed", lineage
    assert {n["node"]: n["outcome"] for n in lineage["deploy"]["nodes"]} == {"plain": "ok", "gw": "ok"}
    assert [(e["node"], e["outcome"]) for e in events if e["event"] == "recorded"] == [("gw", "ok")]
    assert _leaf_of(tmp_path, "plain") == leaf and _leaf_of(tmp_path, "gw") == leaf
    with Store.open() as store:
        [record] = store.deployments("web")
        assert record.state is DeploymentState.FINISHED and record.ok
        jobs = {j.node: (j.zone, j.state) for j in store.jobs(deployment=record.id)}
        assert jobs == {"plain": (None, "done"), "gw": ("dmz", "done")}
        assert [e.detail["action"] for e in store.audit_log(action="renew")] == ["deployed"]


@pytest.mark.usefixtures("certfleet_home")
def test_with_no_worker_of_the_zone_the_autopilot_names_it_and_the_job_waits(
    pg_url: str, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_url)
    leaf = _bought_fleet(cli, tmp_path)
    monkeypatch.setattr(renew_module, "QUEUED_WAIT", 0.5)
    settings = RenewSettings(probe=False, deploy=DeployOptions(probe_wait=0))
    with Store.open() as store:
        report = asyncio.run(renew_module.renew(store, settings=settings))
        [run] = report.lineages
        assert run.action is Action.DEPLOYED and run.owed == ("gw",), run
        assert "no worker finished the jobs of dmz in time" in run.summary
        assert run.deployed is not None
        outcomes = {n.node: (n.outcome.value, n.message) for n in run.deployed.report.nodes}
        assert outcomes["plain"][0] == "ok"
        assert outcomes["gw"][0] == "failed" and "no worker of zone dmz deployed it in time" in outcomes["gw"][1]
        [alert] = [c for c in report.conditions if c.event is Event.DEPLOY_FAILED]
        assert alert.node == "gw" and "zone dmz" in alert.body
        [record] = store.deployments("web")
        assert record.state is DeploymentState.RUNNING  # it ends with its last job
        assert {j.node: j.state for j in store.jobs(deployment=record.id)} == {"plain": "done", "gw": "queued"}
    assert _leaf_of(tmp_path, "plain") == leaf and _leaf_of(tmp_path, "gw") is None

    # a worker started later does the job, and the deployment ends with it
    done = subprocess.run(
        [sys.executable, "-m", "certfleet", "worker", "--zone", "dmz", "--once", "--json", "--lease", "5"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert _leaf_of(tmp_path, "gw") == leaf
    with Store.open() as store:
        [record] = store.deployments("web")
        assert record.state is DeploymentState.FINISHED and record.ok


@pytest.mark.usefixtures("certfleet_home")
def test_a_rollback_of_zoned_nodes_goes_through_the_workers_from_the_cli_and_the_console(
    pg_url: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_url)
    make_fleet(cli, tmp_path, pki, ZONES)
    first = issue(cli, tmp_path, pki, "v1")
    with dmz_worker():
        ok(cli("deploy", "web"))
        second = issue(cli, tmp_path, pki, "v2")
        ok(cli("deploy", "web"))
        assert {n: served(tmp_path, n, pki) for n in ZONES} == dict.fromkeys(ZONES, second)

        back = ok(cli("rollback", "web", "--json")).json()
        assert (back["rollback"], back["activates"], back["version"], back["ok"]) == (True, True, 1, True), back
        assert {j["node"]: j["zone"] for j in back["jobs"]} == {"plain": None, "gw": "dmz"}
        assert {n: served(tmp_path, n, pki) for n in ZONES} == dict.fromkeys(ZONES, first)
        with Store.open() as store:
            active = store.lineage("web").active
            assert active is not None and active.number == 1
            assert store.deployments("web")[0].rollback

        # the console: the DMZ node alone back to version 2, by the worker
        env = make_env(Path(os.environ["CERTFLEET_HOME"]))
        try:
            csrf = logged_in(env)
            started = env.client.post(
                "/api/v1/lineages/web/rollback", json={"nodes": ["gw"], "to": 2}, headers={"x-csrf-token": csrf}
            )
            assert started.status_code == 202, started.text
            done = wait_job(env, started.json()["id"])
            assert (done["kind"], done["state"], done["ok"], done["activates"]) == ("rollback", "done", True, False)
            [gw] = done["nodes"]
            assert gw["zone"] == "dmz" and gw["job"]["worker"].endswith("/dmz"), gw
        finally:
            env.store.close()
    assert served(tmp_path, "gw", pki) == second and served(tmp_path, "plain", pki) == first
