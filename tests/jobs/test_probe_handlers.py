"""The handlers of the probe and check jobs, run as a worker runs them (``run_inline``: the same
handler, no row), the worker's round of probe jobs, and what ``check --zone`` refuses."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from jobs_fleet import make_fleet

from certfleet.clock import utc_now
from certfleet.endpoint import parse_endpoint
from certfleet.errors import ExitCode
from certfleet.jobs import endpoint_jobs
from certfleet.jobs.endpoint_jobs import endpoint_of, endpoint_payload
from certfleet.jobs.probes import due_probes, queue_probes, recorded_result
from certfleet.jobs.runner import run_inline
from certfleet.jobs.worker import JobEvent, Worker, WorkerOptions
from certfleet.store import JobState, Store
from conftest import PKI
from support.postgres import pg_url, postgres
from support.servers import free_port
from support.tls import Mode, serve_tls

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

ZONES = {"a": "dmz", "b": "dmz", "c": None, "d": "dmz"}


@pytest.fixture
def store(cli: Any, tmp_path: Path, pki: PKI, certfleet_home: Path) -> Store:
    make_fleet(cli, tmp_path, pki, ZONES)
    return Store.open()


def _set_probe(store: Store, node: str, where: str | None) -> None:
    store.put_node(dataclasses.replace(store.node(node), probe=where))


def _pair(tmp_path: Path, pki: PKI) -> tuple[Path, Path]:
    cert, key = tmp_path / "served.pem", tmp_path / "served.key"
    cert.write_bytes(pki.leaf.fullchain_pem())
    key.write_bytes(pki.leaf.key_pem())
    return cert, key


@pytest.mark.peer
async def test_a_probe_job_probes_the_node_and_records_it_by_the_worker(store: Store, tmp_path: Path, pki: PKI) -> None:
    with store, serve_tls(Mode.TLS, *_pair(tmp_path, pki)) as server:
        _set_probe(store, "a", server.target)
        _set_probe(store, "d", f"127.0.0.1:{free_port()}")  # nothing listens there
        done = await run_inline(store, "probe", node="a", zone="dmz", by="host/1/dmz")
        assert done.ok and done.result == {"ok": True, "outcome": "ok", "target": server.target, "problem": ""}
        assert server.server_names == ["www.example.test"]  # asked for the node's first name
        recorded = store.recorded_probes()["a"]
        assert recorded.by == "host/1/dmz" and recorded_result(recorded.probed).ok
        assert recorded_result(recorded.probed).chain[0] == pki.leaf.cert

        # an endpoint that does not answer: the probe was made and recorded, and says so
        down = await run_inline(store, "probe", node="d", zone="dmz", by="host/1/dmz")
        assert down.ok and down.result["ok"] is False and down.result["outcome"] == "failed"
        assert down.result["problem"] and down.detail == down.result["problem"]
        assert not recorded_result(store.recorded_probes()["d"].probed).ok

        # what cannot be probed fails the job, in one line
        nothing = await run_inline(store, "probe", node="b", zone="dmz")
        assert not nothing.ok and nothing.result == {"error": "node b names no probe endpoint"}
        gone = await run_inline(store, "probe", node="zz", zone="dmz")
        assert not gone.ok and "no node named 'zz'" in gone.result["error"]
        assert not (await run_inline(store, "probe", zone="dmz")).ok
        assert "b" not in store.recorded_probes()


@pytest.mark.peer
async def test_a_check_job_answers_with_what_the_endpoint_served(
    store: Store, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store, serve_tls(Mode.TLS, *_pair(tmp_path, pki)) as server:
        endpoint = parse_endpoint(server.target, name="www.example.test")
        payload = endpoint_payload(endpoint, timeout=5)
        done = await run_inline(store, "check", zone="dmz", payload=payload, by="w")
        assert done.ok, done.result
        served = recorded_result(done.result)
        assert served.ok and served.chain[0] == pki.leaf.cert and served.server_name == "www.example.test"
        assert served.target == server.target and done.detail == server.target
        assert endpoint_of(payload) == (endpoint, 5.0)
        # a chain larger than the store keeps of a result: the job fails, saying so
        monkeypatch.setattr(endpoint_jobs, "MAX_RESULT_BYTES", 100)
        big = await run_inline(store, "check", zone="dmz", payload=payload)
        assert not big.ok and "larger than a job's result may be" in big.result["error"]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"host": ""}, "names no host"),
        ({"host": 7}, "names no host"),
        ({"port": 0}, "port is not a number from 1 to 65535"),
        ({"port": "443"}, "port is not a number"),
        ({"port": True}, "port is not a number"),
        ({"starttls": "ftp"}, "starttls 'ftp' is not one certfleet knows"),
        ({"timeout": 10_000}, "timeout is not from 0.1 to 600 seconds"),
        ({"timeout": None}, "timeout is not"),
        ({"host": "*.example.test"}, "a wildcard is a pattern"),
        ({"host": "x" * 400}, "host is too long"),
        ({"name": "*.example.test"}, "is a wildcard"),
        ({"name": 5}, "name is not text"),
    ],
)
def test_a_check_jobs_endpoint_is_validated_as_check_validates_its_input(change: dict[str, Any], said: str) -> None:
    from certfleet.errors import InputError

    payload = {**endpoint_payload(parse_endpoint("127.0.0.1:8443"), timeout=5), **change}
    with pytest.raises(InputError, match=said):
        endpoint_of(payload)
    done = asyncio.run(run_inline(None, "check", payload=payload))  # type: ignore[arg-type]  # never reached
    assert not done.ok and said.split("'", maxsplit=1)[0] in done.result["error"]


def test_the_workers_round_queues_a_probe_job_for_each_node_not_probed_since(store: Store) -> None:
    with store:
        for node in ("a", "c", "d"):
            _set_probe(store, node, "127.0.0.1:8443")
        now = utc_now()
        store.record_probe("d", {"ok": True}, by="w", at=now - dt.timedelta(seconds=10))
        assert due_probes(store, "dmz", every=60, now=now) == ["a"]  # b names no probe; d probed 10 s ago
        assert due_probes(store, "dmz", every=5, now=now) == ["a", "d"]
        assert due_probes(store, None, every=60, now=now) == ["c"]
        assert due_probes(store, "lan", every=60, now=now) == []
        first = queue_probes(store, "dmz", every=5, now=now)
        assert [(j.kind, j.node, j.zone, j.state) for j in first] == [
            ("probe", "a", "dmz", JobState.QUEUED),
            ("probe", "d", "dmz", JobState.QUEUED),
        ]
        again = queue_probes(store, "dmz", every=5, now=now)  # another worker of the zone, same round
        assert [j.id for j in again] == [j.id for j in first]
        assert len(store.jobs(states=JobState.OPEN)) == 2


@pytest.mark.peer
async def test_a_worker_with_probe_every_queues_probe_jobs_and_takes_them(
    store: Store, tmp_path: Path, pki: PKI
) -> None:
    with store, serve_tls(Mode.TLS, *_pair(tmp_path, pki)) as server:
        _set_probe(store, "a", server.target)
        _set_probe(store, "c", server.target)  # of no zone: not this worker's
        events: list[JobEvent] = []
        opts = WorkerOptions(zone="dmz", once=True, lease=5, probe_every=60)
        worker = Worker(store, opts, log=events.append, name="host/1/dmz")
        assert await worker.run() == 1
        assert [(e.event, e.kind, e.node, e.outcome) for e in events] == [
            ("taken", "probe", "a", None),
            ("probed", "probe", "a", "ok"),
        ]
        assert events[1].detail == server.target
        assert store.recorded_probes()["a"].by == "host/1/dmz" and "c" not in store.recorded_probes()
        [job] = store.jobs()
        assert (job.id, job.state, job.node, job.lease_owner) == (events[0].job, JobState.DONE, "a", "host/1/dmz")
        assert job.result == {"ok": True, "outcome": "ok", "target": server.target, "problem": ""}
        # probed since: the next round queues nothing
        assert await Worker(store, opts, log=events.append, name="host/2/dmz").run() == 0


def test_check_zone_is_refused_on_sqlite_and_with_nodes(cli: Any, store: Store) -> None:
    store.close()
    refused = cli("check", "127.0.0.1:8443", "--zone", "dmz")
    assert refused.code == ExitCode.BAD_INPUT and "--zone needs a shared PostgreSQL store" in refused.err
    assert "without --zone" in refused.err
    both = cli("check", "--nodes", "--zone", "dmz")
    assert both.code == ExitCode.BAD_INPUT and "--zone goes with targets, not with --nodes" in both.err
    alone = cli("check", "127.0.0.1:8443", "--wait", "5")
    assert alone.code == ExitCode.BAD_INPUT and "--wait goes with --zone or --nodes" in alone.err
    bad = cli("check", "127.0.0.1:8443", "--zone", "no zone")
    assert bad.code == ExitCode.BAD_INPUT and "zone name 'no zone' is not allowed" in bad.err


@pytest.mark.peer
@pytest.mark.usefixtures("certfleet_home")
async def test_the_asking_side_judges_what_the_zones_worker_saw_and_says_when_it_could_not(
    pg_url: str, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certfleet.jobs.zone_checks import check_in_zone, probe_nodes, zoned_nodes
    from certfleet.store import URL_ENV
    from certfleet.trust import load_trust

    monkeypatch.setenv(URL_ENV, pg_url)
    make_fleet(cli, tmp_path, pki, ZONES)
    trust = load_trust([], [("root", pki.root.cert_pem())])
    with Store.open() as store, serve_tls(Mode.TLS, *_pair(tmp_path, pki)) as server:
        _set_probe(store, "a", server.target)
        _set_probe(store, "c", server.target)
        endpoint = parse_endpoint(server.target, name="www.example.test", label="a")
        asked = {"a": endpoint, "c": endpoint, "d": endpoint}  # d: no probe endpoint in the store any more
        zones = zoned_nodes(store, asked)
        assert zones == {"a": "dmz", "d": "dmz"}  # c is of no zone: probed by the one asking
        stop = asyncio.Event()
        worker = Worker(store, WorkerOptions(zone="dmz", lease=5, poll=0.05), name="host/1/dmz")
        running = asyncio.create_task(worker.run(stop))
        try:
            seen = await probe_nodes(store, asked, zones, wait=30, trust=trust, expiring_days=30, poll=0.05)
            [checked] = await check_in_zone(
                store, [endpoint], "dmz", wait=30, timeout=5, trust=trust, expiring_days=30, poll=0.05
            )
        finally:
            stop.set()
            await running
        assert set(seen) == {"a", "d"}
        assert seen["a"].report.ok and seen["a"].report.verified and seen["a"].by == "host/1/dmz"
        assert seen["a"].at is not None and seen["a"].zone == "dmz"
        assert not seen["d"].report.ok and seen["d"].by == "host/1/dmz"
        [problem] = seen["d"].report.problems
        assert problem.message == "the worker of zone dmz could not probe it: node d names no probe endpoint"
        assert checked.report.ok and checked.by == "host/1/dmz" and checked.to_dict()["probed_by"] == "host/1/dmz"

        # no worker of lan: in time, one line naming the zone; the check job no worker took is given up
        [unserved] = await check_in_zone(store, [endpoint], "lan", wait=0.2, timeout=5, trust=trust, expiring_days=30)
        assert not unserved.report.ok and unserved.by == ""
        assert [p.message for p in unserved.report.problems] == ["no worker of zone lan probed it in time"]
        given_up = store.job(unserved.job)
        assert given_up.state == JobState.FAILED and "given up" in (given_up.result or {})["error"]
