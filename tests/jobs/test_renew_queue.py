"""Renewals as jobs on a store shared on PostgreSQL, with real peers: Pebble issuing, BIND for the
names, a real nginx node. ``certfleet renew --queue`` queues a ``renew`` job (one per lineage and
zone while it is open) and a real ``certfleet worker`` process orders, imports and deploys; the
node then serves the new version. ``--wait`` follows the job and prints the pass; with no worker
it says so. Two schedules of ``certfleet serve`` due at once run one pass."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from jobs_fleet import issue, make_fleet, served

from certfleet.acme import accounts
from certfleet.autopilot import background
from certfleet.autopilot import renew as renew_module
from certfleet.autopilot.background import Autopilot
from certfleet.autopilot.report import RenewSettings
from certfleet.certinfo import fingerprint
from certfleet.fleet.deploy import DeployOptions
from certfleet.fleet.nodes import make_node
from certfleet.jobs.renewals import RENEW, renew_payload
from certfleet.jobs.worker import Worker, WorkerOptions
from certfleet.store import URL_ENV, JobState, Store, VersionState
from conftest import PKI
from support.pebble import MAIN_IP, PebbleServer, WebrootNginx, acme_env, bind, expect, http_port, pebble, snakeoil
from support.postgres import pg_url, postgres

__all__ = ["acme_env", "bind", "http_port", "pebble", "pg_url", "postgres"]  # fixtures

pytestmark = pytest.mark.peer  # PostgreSQL, Pebble, BIND and nginx

WORKER = [sys.executable, "-m", "certfleet", "worker", "--json", "--lease", "5", "--probe-wait", "10"]


def _on_postgres(url: str, monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    """The store on PostgreSQL, its sealing secret in the test's CERTFLEET_HOME (set already)."""
    assert "CERTFLEET_HOME" in os.environ
    monkeypatch.setenv(URL_ENV, url)
    expect(cli("init"))


@pytest.fixture
def shared(certfleet_home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, cli: Any) -> str:
    """A store on PostgreSQL, no peer else."""
    _on_postgres(pg_url, monkeypatch, cli)
    return pg_url


@pytest.fixture
def acme_shared(acme_env: dict[str, str], pg_url: str, monkeypatch: pytest.MonkeyPatch, cli: Any) -> str:
    """A store on PostgreSQL, certfleet asking the test DNS (its home: ``acme_env``'s)."""
    _on_postgres(pg_url, monkeypatch, cli)
    return pg_url


@pytest.fixture
def web(acme_shared: str, pebble: PebbleServer, http_port: int, tmp_path: Path) -> Iterator[WebrootNginx]:
    """Lineage ``web`` on PostgreSQL: one nginx node, ``main``, of no zone, issued by Pebble; no
    certificate yet."""
    server = WebrootNginx(
        tmp_path / "main", webroot=tmp_path / "main" / "www", http_host=MAIN_IP, http_port=http_port,
        live=tmp_path / "main" / "tls" / "live", placeholder=snakeoil(tmp_path / "snakeoil"),
    )  # fmt: skip
    with server, Store.open() as store:
        server.point_at_live()
        store.add_trust_anchor(x509.load_pem_x509_certificate(pebble.root_pem()))
        accounts.add_acme_issuer(
            store, "pebble", pebble.directory, agree_tos=True, ca_bundle=pebble.ca_bundle.read_text()
        )
        store.put_node(
            make_node(
                "main", ["acme.test", "www.acme.test"], [f"nginx:{server.workdir / 'tls'}"],
                test_cmd=server.test_cmd, reload_cmd=server.reload_cmd, probe=server.probe,
                options={"webroot": str(server.webroot)},
            )
        )  # fmt: skip
        store.put_lineage("web", nodes=["main"])
        store.set_policy("web", issuers=["pebble"])
        yield server


def _served(server: WebrootNginx, pebble: PebbleServer) -> str:
    """The fingerprint a strict client (Pebble's root, the name checked) is served by the node."""
    context = ssl.create_default_context(cadata=pebble.root_pem().decode())
    with (
        socket.create_connection((server.host, server.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="acme.test") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(x509.load_der_x509_certificate(der))


def _active(store: Store) -> tuple[int, str]:
    active = store.lineage("web").active
    assert active is not None and active.fingerprint is not None
    return active.number, active.fingerprint


def test_a_queued_renewal_is_issued_and_deployed_by_a_worker_process(
    web: WebrootNginx, pebble: PebbleServer, cli: Any
) -> None:
    first = json.loads(expect(cli("renew", "--queue", "--lineage", "web", "--json")).out)
    job_id = first["job"]["id"]
    assert first["queued"] is True and first["waited"] is False
    assert (first["job"]["kind"], first["job"]["lineage"], first["job"]["zone"]) == ("renew", "web", None)
    assert first["job"]["payload"] == {"lineage": "web", "force": False}

    # asked again while it is open: the same job, nothing more queued
    again = json.loads(expect(cli("renew", "--queue", "--lineage", "web", "--json")).out)
    assert again["job"]["id"] == job_id and again["queued"] is False
    assert f"renew job {job_id} (web) is queued already" in expect(cli("renew", "--queue", "-l", "web")).out
    elsewhere = json.loads(expect(cli("renew", "--queue", "--zone", "dmz", "--json")).out)  # another zone's: its own
    assert elsewhere["job"]["id"] != job_id and elsewhere["job"]["lineage"] == ""

    done = subprocess.run([*WORKER, "--once"], capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["event"], e["job"], e["kind"]) for e in events if e["event"] != "taken"] == [
        ("recorded", job_id, "renew")
    ], events

    with Store.open() as store:
        assert _active(store)[0] == 1
        assert _served(web, pebble) == _active(store)[1]  # the node serves what the worker issued
        job = store.job(job_id)
        assert job.state == JobState.DONE and job.lease_owner is not None
        result = job.result or {}
        assert result["issued"] == [{"lineage": "web", "version": 1}] and result["nodes_deployed"] == 1
        [entry] = result["lineages"]
        assert (entry["action"], entry["deployed"], entry["reason"]) == ("issued", ["main"], "no-certificate")
        assert "BEGIN" not in json.dumps(result)
        assert store.job(elsewhere["job"]["id"]).state == JobState.QUEUED  # for a worker of dmz
    listed = {int(line.split()[0]): line for line in expect(cli("jobs")).out.splitlines()}
    assert "ok: 1 issued; issued web v1; 1 node(s) deployed" in listed[job_id]
    assert " all " in listed[elsewhere["job"]["id"]] and "queued" in listed[elsewhere["job"]["id"]]

    # --wait: a worker kept running takes the next one; the pass is printed as a pass run here prints it
    with subprocess.Popen([*WORKER, "--poll", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as worker:
        try:
            waited = cli("renew", "--queue", "--lineage", "web", "--force", "--wait", "240")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=60)
    expect(waited)
    assert "queued renew job" in waited.out and "web  issued  issued version 2" in waited.out, waited.out
    with Store.open() as store:
        assert _active(store)[0] == 2 and _served(web, pebble) == _active(store)[1]


def test_the_wait_runs_out_when_no_worker_takes_the_job(shared: str, cli: Any) -> None:
    waited = cli("renew", "--queue", "--zone", "nowhere", "--wait", "0.3")
    assert waited.code == 3, waited.out + waited.err
    assert "no worker of zone nowhere took renew job" in waited.err and "(it stays queued)" in waited.err
    as_json = json.loads(expect(cli("renew", "--queue", "--zone", "nowhere", "--wait", "0", "--json"), 3).out)
    assert as_json["queued"] is False and "no worker of zone nowhere took" in as_json["error"]
    refused = cli("renew", "--queue", "--lineage", "nope")
    assert refused.code == 2 and "nope" in refused.err
    with Store.open() as store:
        [job] = store.jobs()
        assert (job.kind, job.zone, job.state) == (RENEW, "nowhere", JobState.QUEUED)


def test_the_schedule_leaves_a_pass_another_process_holds(shared: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open() as store:
        old = store.enqueue_job(RENEW, payload=renew_payload(None))
        [ended] = store.claim_jobs("elsewhere/0", zone=None, lease=60, job=old.id)
        assert store.finish_job(ended, ok=True, result={})
        job = store.enqueue_job(RENEW, payload=renew_payload(None), unique=True)
        [held] = store.claim_jobs("elsewhere/1", zone=None, lease=60, job=job.id)
        pilot = Autopilot(store.home, lease=5)
        assert pilot.run_once() is None and pilot.passes == 0
        assert [j.id for j in store.jobs()] == [job.id, old.id]  # no second pass queued beside it
        monkeypatch.setattr(background, "KEEP_ENDED", dt.timedelta(0))  # the ended ones a month old go: all, now
        assert pilot.run_once() is None
        assert [j.id for j in store.jobs()] == [job.id]
        assert store.job(job.id).lease_owner == "elsewhere/1"
        assert store.finish_job(held, ok=True, result={})


def test_two_schedules_due_at_once_run_one_pass(
    web: WebrootNginx, pebble: PebbleServer, acme_env: dict[str, str]
) -> None:
    home = Path(acme_env["CERTFLEET_HOME"])
    settings = RenewSettings(deploy=DeployOptions(probe_wait=10))
    pilots = [Autopilot(home, settings=settings, lease=5) for _ in range(2)]
    start = threading.Barrier(2)
    summaries: list[Any] = [None, None]

    def tick(i: int) -> None:
        start.wait()
        summaries[i] = pilots[i].run_once()

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    ran = [s for s in summaries if s is not None]
    assert len(ran) == 1 and sum(p.passes for p in pilots) == 1, summaries
    assert ran[0]["issued"] == [{"lineage": "web", "version": 1}]
    with Store.open() as store:
        issued = [v.number for v in store.versions("web") if v.state is VersionState.ISSUED]
        assert issued == [1]
        [job] = store.jobs()
        assert (job.kind, job.lineage, job.state) == (RENEW, "", JobState.DONE)
        assert [e.detail["action"] for e in store.audit_log(action="renew")] == ["issued"]
        assert _served(web, pebble) == _active(store)[1]


def test_a_pass_run_by_a_worker_of_a_zone_deploys_that_zones_nodes_itself(
    shared: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_fleet(cli, tmp_path, pki, {"plain": None, "gw": "dmz"})
    leaf = issue(cli, tmp_path, pki, "v1")  # imported, deployed to neither node: both owe it
    monkeypatch.setattr(renew_module, "QUEUED_WAIT", 0.5)  # no worker of no zone runs: do not wait long
    fast = DeployOptions(probe_wait=0)
    with Store.open() as store:
        job = store.enqueue_job(RENEW, zone="dmz", payload=renew_payload(None, probe=False))
        options = WorkerOptions(zone="dmz", once=True, job=job.id, kinds=frozenset({RENEW}), lease=5, deploy=fast)
        assert asyncio.run(Worker(store, options, name="dmz-host/1/dmz").run()) == 1
        ended = store.job(job.id)
        assert ended.state == JobState.FAILED and ended.lease_owner == "dmz-host/1/dmz"  # a node was not deployed
        [entry] = (ended.result or {})["lineages"]
        assert entry["action"] == "deployed" and entry["deployed"] == ["gw"]  # its own zone's node, here
        [(node, message)] = [(f["node"], f["message"]) for f in entry["failed"]]
        assert node == "plain" and "no worker of zone (no zone) deployed it in time" in message
        assert (ended.result or {})["exit_code"] == 1
        [deployment] = store.deployments("web")
        assert {j.node: (j.zone, j.state) for j in store.jobs(deployment=deployment.id)} == {
            "plain": (None, JobState.QUEUED),  # for the workers of no zone
            "gw": ("dmz", JobState.DONE),
        }
        assert served(tmp_path, "gw", pki) == leaf and not (tmp_path / "nodes" / "plain" / "live").exists()
        plain = WorkerOptions(zone=None, once=True, kinds=frozenset({"deploy"}), lease=5, deploy=fast)
        assert asyncio.run(Worker(store, plain).run()) == 1
    assert served(tmp_path, "plain", pki) == leaf
