"""A worker asked to stop (SIGTERM) lets each node finish or undo its step, records what ended,
gives the other jobs back untouched, and exits 143; another worker then does them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from jobs_fleet import issue, make_fleet, ok, served

from certfleet.fleet.model import NodeSpec, Outcome, TargetSpec
from certfleet.store import URL_ENV, DeploymentState, JobState, Store
from conftest import PKI
from support.postgres import pg_url, postgres

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

pytestmark = pytest.mark.peer

NODES = [f"slow{i}" for i in range(6)]


@pytest.mark.usefixtures("certfleet_home")
def test_sigterm_finishes_the_nodes_under_way_and_gives_the_rest_back(
    pg_url: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, pg_url)
    make_fleet(cli, tmp_path, pki, {})
    with Store.open() as store:
        for name in NODES:  # each node's config test takes a while: the stop lands in the middle
            target = TargetSpec("pem", str(tmp_path / "nodes" / name))
            store.add_node(NodeSpec(name, ("www.example.test",), (target,), test_cmd="sleep 1"), lineage="web")
    leaf = issue(cli, tmp_path, pki, "v1")
    deployment = ok(cli("deploy", "web", "--queue", "--json")).json()["deployment"]

    proc = subprocess.Popen(
        [sys.executable, "-m", "certfleet", "worker", "--json", "--batch", "2", "--lease", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "taken" and len(events) == 2:
            time.sleep(0.3)  # the two nodes are uploading or testing
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=60)
    events += [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert "stopping" in err.decode()

    with Store.open() as store:
        jobs = {j.node: j for j in store.jobs(deployment=deployment)}
        assert not [j for j in jobs.values() if j.state == JobState.RUNNING]  # none left held
        ended = {e["node"]: e["event"] for e in events if e["event"] in ("recorded", "released")}
        taken = {e["node"] for e in events if e["event"] == "taken"}
        assert set(ended) == taken and len(taken) == 2
        for node, what in ended.items():
            assert jobs[node].state == (JobState.DONE if what == "recorded" else JobState.QUEUED)
        untouched = [n for n in NODES if n not in taken]
        assert all(jobs[n].state == JobState.QUEUED and jobs[n].attempts == 0 for n in untouched)
        assert all(not (tmp_path / "nodes" / n / "live").exists() for n in untouched)

    done = subprocess.run(
        [sys.executable, "-m", "certfleet", "worker", "--once", "--json", "--batch", "6"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert {n: served(tmp_path, n, pki) for n in NODES} == dict.fromkeys(NODES, leaf)
    with Store.open() as store:
        [record] = [d for d in store.deployments("web") if d.id == deployment]
    assert record.state is DeploymentState.FINISHED
    assert {r.node: r.outcome for r in record.results} == dict.fromkeys(NODES, Outcome.OK)
