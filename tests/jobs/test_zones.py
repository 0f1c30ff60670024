"""Zones: on PostgreSQL a DMZ worker and a LAN worker each take only their nodes' jobs, and
``certfleet deploy`` deploys the nodes of no zone itself and names the zones no worker served; on
SQLite every node is deployed by the process that asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jobs_fleet import issue, make_fleet, ok, served

from certfleet.fleet.model import Outcome
from certfleet.store import URL_ENV, DeploymentState, Store
from conftest import PKI
from support.postgres import pg_url, postgres

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

ZONES = {"dmz1": "dmz", "dmz2": "dmz", "lan1": "lan", "lan2": "lan", "plain": None}


def worker(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "certfleet", "worker", "--once", "--json", "--lease", "5", *args],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr.decode()


@pytest.mark.peer
@pytest.mark.usefixtures("certfleet_home")
def test_a_dmz_worker_and_a_lan_worker_each_take_only_their_nodes_jobs(
    pg_url: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_url)
    make_fleet(cli, tmp_path, pki, ZONES)
    leaf = issue(cli, tmp_path, pki, "v1")

    # no worker yet: the deploy does the node of no zone itself, then names the zones left waiting
    waited = ok(cli("deploy", "web", "--wait", "0.5", "--json"), 3).json()
    assert waited["waiting_zones"] == ["dmz", "lan"] and not waited["done"]
    deployment = waited["deployment"]
    assert {n["node"]: n["outcome"] for n in waited["nodes"]} == {
        "dmz1": "interrupted",
        "dmz2": "interrupted",
        "lan1": "interrupted",
        "lan2": "interrupted",
        "plain": "ok",
    }
    assert served(tmp_path, "plain", pki) == leaf
    assert not (tmp_path / "nodes" / "dmz1" / "live").exists()
    # one deploy of a lineage at a time: as jobs, or by its own process (a node of no zone only)
    assert "already queued or running (deployment" in ok(cli("deploy", "web"), 3).err
    assert "already queued or running (deployment" in ok(cli("deploy", "web", "--node", "plain"), 3).err

    code, events, err = worker("--zone", "dmz")
    assert code == 0, err
    assert sorted(e["node"] for e in events if e["event"] == "recorded") == ["dmz1", "dmz2"]
    assert {e["node"] for e in events} == {"dmz1", "dmz2"}
    assert not (tmp_path / "nodes" / "lan1" / "live").exists()
    assert worker()[1] == []  # a worker of no zone finds nothing to do

    code, events, err = worker("--zone", "lan")
    assert code == 0, err
    assert sorted(e["node"] for e in events if e["event"] == "recorded") == ["lan1", "lan2"]
    assert {e["node"] for e in events} == {"lan1", "lan2"}

    assert {n: served(tmp_path, n, pki) for n in ZONES} == dict.fromkeys(ZONES, leaf)
    listed = ok(cli("jobs", "--deployment", str(deployment), "--json")).json()["jobs"]
    owners = {j["node"]: (j["zone"], j["state"], j["lease_owner"].rsplit("/", 1)[-1]) for j in listed}
    assert owners == {
        "dmz1": ("dmz", "done", "dmz"),
        "dmz2": ("dmz", "done", "dmz"),
        "lan1": ("lan", "done", "lan"),
        "lan2": ("lan", "done", "lan"),
        "plain": (None, "done", owners["plain"][2]),
    }
    with Store.open() as store:
        [record] = [d for d in store.deployments("web") if d.id == deployment]
    assert record.state is DeploymentState.FINISHED
    assert {r.node: r.outcome for r in record.results} == dict.fromkeys(ZONES, Outcome.OK)
    # the history shows it as any deploy
    history = ok(cli("history", "web", "--json")).json()
    [shown] = [d for d in history["deployments"] if d["id"] == deployment]
    assert (shown["state"], shown["ok"]) == ("finished", True)
    listing = ok(cli("jobs")).out
    assert all(f" {node} " in listing for node in ZONES) and "done" in listing

    # as a person sees it: the zones no worker served are named, their jobs stay queued
    again = ok(cli("deploy", "web", "--wait", "0.3"), 3)
    assert "as jobs (deployment" in again.out and "queued" in again.out
    assert "no worker finished the jobs of dmz, lan in time" in " ".join(again.err.split())
    assert "queued" in ok(cli("jobs", "--open")).out


def test_on_sqlite_every_node_is_deployed_by_the_process_that_asked(
    cli: Any, certfleet_home: Path, tmp_path: Path, pki: PKI
) -> None:
    make_fleet(cli, tmp_path, pki, ZONES)
    leaf = issue(cli, tmp_path, pki, "v1")
    assert "needs a store shared on PostgreSQL" in ok(cli("deploy", "web", "--queue"), 2).err
    done = ok(cli("deploy", "web"))
    assert "zones (dmz, lan) have no meaning on a SQLite store" in " ".join(done.err.split())
    assert {n: served(tmp_path, n, pki) for n in ZONES} == dict.fromkeys(ZONES, leaf)
