"""Probes and endpoint checks as jobs of the queue, as a user meets them (PostgreSQL, real
``certfleet worker`` processes, real nginx nodes): two workers of one zone probing every second
never probe a node twice at once; ``check --nodes`` has a zoned node probed by its zone's worker
(and says in one line when none did in time); ``check HOST:PORT --zone dmz`` is answered by one."""

from __future__ import annotations

import dataclasses
import itertools
import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from jobs_fleet import make_fleet, ok

from certfleet.store import URL_ENV, JobState, Store
from conftest import PKI
from support import stop_process
from support.postgres import pg_url, postgres
from support.servers import NginxServer, Site, run_nginx

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

pytestmark = pytest.mark.peer

NODES = {"gw1": "dmz", "gw2": "dmz", "plain": None}
LINE = "no worker of zone dmz probed it in time"


@pytest.fixture
def nginx(pg_url: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> Iterator[NginxServer]:
    """The fleet on PostgreSQL, each node's probe endpoint a site of one real nginx."""
    monkeypatch.setenv("CERTFLEET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(URL_ENV, pg_url)
    make_fleet(cli, tmp_path, pki, NODES)
    sites = [Site(node, pki.leaf.fullchain_pem(), pki.leaf.key_pem()) for node in NODES]
    with run_nginx(tmp_path / "nginx", sites) as server:
        with Store.open() as store:
            for node in NODES:
                store.put_node(dataclasses.replace(store.node(node), probe=server.target(node)))
        yield server


@contextmanager
def workers(folder: Path, count: int, *args: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``certfleet worker --zone dmz`` processes kept running, stopped by SIGTERM; their JSON
    events go to ``worker-N.out`` in ``folder``."""
    procs = []
    try:
        for n in range(count):
            with (folder / f"worker-{n}.out").open("wb") as out, (folder / f"worker-{n}.err").open("wb") as err:
                argv = ["worker", "--zone", "dmz", "--json", "--lease", "5", "--poll", "0.2", *args]
                procs.append(subprocess.Popen([sys.executable, "-m", "certfleet", *argv], stdout=out, stderr=err))
        yield procs
    finally:
        for proc in procs:  # all asked at once, then each waited for
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            stop_process(proc)


def name_of(proc: subprocess.Popen[bytes]) -> str:
    return f"{socket.gethostname()}/{proc.pid}/dmz"


def events(folder: Path, n: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / f"worker-{n}.out").read_text().splitlines()]


def test_two_workers_of_a_zone_probing_every_second_never_probe_a_node_twice_at_once(
    nginx: NginxServer, cli: Any, tmp_path: Path
) -> None:
    zoned = sorted(n for n, z in NODES.items() if z)
    with workers(tmp_path, 2, "--probe-every", "1") as procs, Store.open() as store:
        names = {name_of(p) for p in procs}
        deadline = time.monotonic() + 90
        looks = 0
        while True:
            probes = [j for j in store.jobs(limit=10_000) if j.kind == "probe"]
            opened = Counter(j.node for j in probes if j.state in JobState.OPEN)
            assert all(count <= 1 for count in opened.values()), opened  # one open probe job per node
            looks += 1
            done = Counter(j.node for j in probes if j.state == JobState.DONE)
            if all(done[n] >= 4 for n in zoned):
                break
            assert all(p.poll() is None for p in procs), [p.stderr for p in procs]
            assert time.monotonic() < deadline, f"probes done: {done}"
            time.sleep(0.05)
    assert looks > 1
    rows = sorted((j for j in store.jobs(limit=10_000) if j.kind == "probe"), key=lambda j: j.id)
    assert {j.node for j in rows} == set(zoned)  # plain is of no zone: not theirs
    for node in zoned:
        mine = [j for j in rows if j.node == node]
        for before, after in itertools.pairwise(mine):
            # a node's next probe job is queued only once the one before it ended: never two open
            assert before.finished_at is not None and after.created_at >= before.finished_at, (before, after)
        assert {j.lease_owner for j in mine if j.state == JobState.DONE} <= names
        assert all(j.result is not None and j.result["ok"] for j in mine if j.state == JobState.DONE)
    probed = [e for n in range(2) for e in events(tmp_path, n) if e["event"] == "probed"]
    assert {e["node"] for e in probed} == set(zoned) and {e["outcome"] for e in probed} == {"ok"}
    assert {e["worker"] for e in probed} <= names

    shown = ok(cli("status", "--json"), 1).json()  # 1: the nodes serve no version of web (none issued)
    nodes = {n["node"]: n for lineage in shown["lineages"] for n in lineage["nodes"]}
    for node in zoned:
        assert nodes[node]["probed_by"] in names, nodes[node]
        assert nodes[node]["check"]["verified"] is True
    assert nodes["plain"]["probed_by"] is None  # probed from here, as always


def test_check_asks_the_zones_worker_and_says_when_none_answered_in_time(
    nginx: NginxServer, cli_proc: Any, tmp_path: Path
) -> None:
    # no worker of dmz: the zoned nodes fail in time, with one line naming the zone; plain is probed here
    alone = cli_proc("check", "--nodes", "--wait", "1")
    assert alone.code == 1, alone.err
    assert alone.out.count(LINE) == 2, alone.out
    listed = cli_proc("check", "--nodes", "--wait", "0.5", "--json")
    assert listed.code == 1, listed.err
    items = {i["node"]: i for i in json.loads(listed.out)}
    for node in ("gw1", "gw2"):
        assert not items[node]["ok"] and [p["message"] for p in items[node]["problems"]] == [LINE]
        assert (items[node]["zone"], items[node]["probed_by"]) == ("dmz", "")
    assert items["plain"]["ok"] and "probed_by" not in items["plain"]
    plain = nginx.target("plain")
    unanswered = cli_proc("check", plain, "--name", "www.example.test", "--zone", "dmz", "--wait", "0.5")
    assert unanswered.code == 1 and LINE in unanswered.out, unanswered.out
    with Store.open() as store:  # nobody waits for its answer: given up, not left for a worker to do later
        [given_up] = [j for j in store.jobs() if j.kind == "check"]
    assert given_up.state == JobState.FAILED and "the check was given up" in (given_up.result or {})["error"]

    with workers(tmp_path, 1) as [proc]:
        name = name_of(proc)
        answered = cli_proc("check", "--nodes", "--wait", "30", "--json")
        assert answered.code == 0, answered.out + answered.err
        items = {i["node"]: i for i in json.loads(answered.out)}
        for node in ("gw1", "gw2"):
            assert items[node]["ok"] and items[node]["verified"], items[node]
            assert (items[node]["zone"], items[node]["probed_by"]) == ("dmz", name)
        assert items["plain"]["ok"] and "probed_by" not in items["plain"]
        text = cli_proc("check", "--nodes", "--wait", "30")
        assert text.code == 0 and f"gw1 ({nginx.target('gw1')}): probed by {name}" in text.out, text.out

        # an endpoint, not a node: a check job, probed by the worker, judged here
        target = nginx.target("gw2")
        one = cli_proc("check", target, "--name", "www.example.test", "--zone", "dmz", "--wait", "30")
        assert one.code == 0, one.out + one.err
        assert f"{target}: probed by {name}" in one.out and "1 endpoint" in one.out, one.out
        as_json = cli_proc("check", target, "--name", "www.example.test", "--zone", "dmz", "--json")
        assert as_json.code == 0, as_json.out + as_json.err
        [item] = json.loads(as_json.out)
        assert (item["target"], item["ok"], item["verified"], item["probed_by"]) == (target, True, True, name)
        wrong = cli_proc("check", target, "--name", "other.example.test", "--zone", "dmz", "--json")
        assert wrong.code == 1  # judged here: the name is not the certificate's
        assert "name-mismatch" in {p["code"] for p in json.loads(wrong.out)[0]["problems"]}
    outs = events(tmp_path, 0)
    assert [e["kind"] for e in outs if e["event"] in ("recorded", "failed")] == ["check"] * 3
    assert {e["node"] for e in outs if e["event"] == "probed"} == {"gw1", "gw2"}
