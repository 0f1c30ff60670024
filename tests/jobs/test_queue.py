"""The job queue in the store, on SQLite and on PostgreSQL: a job is claimed once, taken over when
its lease ran out, and a worker that lost its lease can no longer write (fencing); zones keep each
worker to its nodes; a node's result is written once and the deployment ends with its last job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from jobs_fleet import issue, make_fleet, ok, served
from sqlalchemy import select

from certfleet.clock import utc_now
from certfleet.errors import EnvError, InputError
from certfleet.fleet.model import Outcome
from certfleet.jobs.worker import JobEvent, Worker, WorkerOptions
from certfleet.store import DeploymentState, JobState, NodeResult, Store
from certfleet.store._models import JobRow, NodeResultRow
from conftest import PKI
from support.postgres import BACKENDS, Backend, backend, pg_url, postgres

__all__ = ["backend", "pg_url", "postgres"]  # the fixtures, imported where they are used


def _result(node: str, outcome: Outcome = Outcome.OK) -> NodeResult:
    now = utc_now()
    return NodeResult(node=node, outcome=outcome, started_at=now, finished_at=now, output="done")


@pytest.fixture
def fleet(backend: Backend, cli: Any, tmp_path: Path, pki: PKI) -> Store:
    make_fleet(cli, tmp_path, pki, {"a": None, "b": None, "gw": "dmz", "db": "lan"})
    issue(cli, tmp_path, pki, "v1")
    return Store.open()


def test_a_job_is_claimed_once_and_its_result_written_once(fleet: Store) -> None:
    with fleet as store:
        dep = store.enqueue_deployment("web", 1, ["a", "b", "gw", "db"])
        with pytest.raises(EnvError, match="already queued or running"):
            store.enqueue_deployment("web", 1, ["a"])
        first = store.claim_jobs("w1", zone=None, lease=30, limit=1)
        second = store.claim_jobs("w2", zone=None, lease=30, limit=5)
        assert [le.job.node for le in first] == ["a"]
        assert [le.job.node for le in second] == ["b"]  # not a again; not the zoned ones
        assert store.claim_jobs("w3", zone=None, lease=30) == []
        assert store.finish_node(first[0], _result("a"))
        assert not store.finish_node(first[0], _result("a", Outcome.FAILED))  # the job ended: refused
        assert store.release_job(second[0])
        again = store.claim_jobs("w3", zone=None, lease=30)
        assert [(le.job.node, le.job.attempts) for le in again] == [("b", 2)]
        assert store.finish_node(again[0], _result("b"))
        [gw] = store.claim_jobs("wd", zone="dmz", lease=30, limit=5)
        [db] = store.claim_jobs("wl", zone="lan", lease=30, limit=5)
        assert (gw.job.node, db.job.node) == ("gw", "db")
        assert store.deployments("web")[0].state is DeploymentState.RUNNING  # two jobs left
        assert store.finish_node(gw, _result("gw"))
        assert store.finish_node(db, _result("db", Outcome.ROLLED_BACK))
        [record] = store.deployments("web")
        assert record.id == dep and record.state is DeploymentState.FINISHED
        assert {r.node: r.outcome for r in record.results} == {
            "a": Outcome.OK,
            "b": Outcome.OK,
            "gw": Outcome.OK,
            "db": Outcome.ROLLED_BACK,
        }
        states = {j.node: (j.state, j.attempts) for j in store.jobs(deployment=dep)}
        assert states == {"a": ("done", 1), "b": ("done", 2), "gw": ("done", 1), "db": ("failed", 1)}
        store.enqueue_deployment("web", 1, ["a"])  # the lineage's jobs ended: a new deploy may start


def test_a_lapsed_lease_is_taken_over_and_the_old_holder_is_fenced_off(fleet: Store) -> None:
    with fleet as store:
        store.enqueue_deployment("web", 1, ["a"])
        [old] = store.claim_jobs("w1", zone=None, lease=0.3)
        assert store.heartbeat([old], lease=0.3) == {old.job.id}
        assert store.claim_jobs("w2", zone=None, lease=30) == []  # still held
        time.sleep(0.5)
        [new] = store.claim_jobs("w2", zone=None, lease=30)
        assert (new.job.id, new.job.attempts, new.token != old.token) == (old.job.id, 2, True)
        [running] = store.jobs(states=JobState.OPEN)
        assert (running.state, running.lease_owner) == ("running", "w2")
        assert store.heartbeat([old], lease=30) == set()  # the old holder learns it lost the job
        assert not store.finish_node(old, _result("a", Outcome.FAILED))
        assert not store.release_job(old)
        assert store.finish_node(new, _result("a"))
        [record] = store.deployments("web")
        assert [(r.node, r.outcome) for r in record.results] == [("a", Outcome.OK)]
        assert record.state is DeploymentState.FINISHED


def test_results_written_together_keep_each_jobs_fence_and_each_nodes_placeholder(fleet: Store) -> None:
    with fleet as store:
        dep = store.enqueue_deployment("web", 1, ["a", "b", "gw", "db"])
        [old_a] = store.claim_jobs("w1", zone=None, lease=0.3, limit=1)
        [b] = store.claim_jobs("w1", zone=None, lease=30, limit=1)
        [gw] = store.claim_jobs("w1", zone="dmz", lease=30)
        [db] = store.claim_jobs("w1", zone="lan", lease=30)
        time.sleep(0.5)
        [new_a] = store.claim_jobs("w2", zone=None, lease=30)  # w1 lost a's lease
        assert new_a.job.id == old_a.job.id
        with store._db.session(write=True) as s:  # b's result is in already (its job is not ended)
            row = s.scalar(
                select(NodeResultRow).where(NodeResultRow.deployment_id == dep, NodeResultRow.node_name == "b")
            )
            assert row is not None and row.outcome is Outcome.INTERRUPTED
            row.outcome, row.output = Outcome.OK, "earlier"
        batch = [
            (old_a, _result("a", Outcome.FAILED)),
            (b, _result("b", Outcome.FAILED)),
            (gw, _result("gw")),
            (db, _result("db", Outcome.ROLLED_BACK)),
        ]
        assert store.finish_nodes(batch) == {gw.job.id, db.job.id}
        [record] = store.deployments("web")
        assert record.state is DeploymentState.RUNNING  # a is still w2's
        outcomes = {r.node: (r.outcome, r.output) for r in record.results}
        assert outcomes == {
            "a": (Outcome.INTERRUPTED, outcomes["a"][1]),
            "b": (Outcome.OK, "earlier"),
            "gw": (Outcome.OK, "done"),
            "db": (Outcome.ROLLED_BACK, "done"),
        }
        states = {j.node: (j.state, j.lease_owner) for j in store.jobs(deployment=dep)}
        assert states == {"a": ("running", "w2"), "b": ("failed", "w1"), "gw": ("done", "w1"), "db": ("failed", "w1")}
        # the last job, with an ended one again: only a is written, and the deployment ends with it
        assert store.finish_nodes([(gw, _result("gw", Outcome.FAILED)), (new_a, _result("a"))]) == {new_a.job.id}
        [record] = store.deployments("web")
        assert record.state is DeploymentState.FINISHED
        assert {r.node: r.outcome for r in record.results} == {
            "a": Outcome.OK,
            "b": Outcome.OK,
            "gw": Outcome.OK,
            "db": Outcome.ROLLED_BACK,
        }
        assert store.finish_nodes([]) == set()


def test_zones_are_set_from_the_cli(fleet: Store, cli: Any) -> None:
    fleet.close()
    assert ok(cli("node", "zone", "gw", "--json")).json() == {"node": "gw", "zone": "dmz", "changed": False}
    assert ok(cli("node", "zone", "a", "lan", "--json")).json()["changed"]
    assert ok(cli("node", "zone", "gw", "--none", "--json")).json() == {"node": "gw", "zone": None, "changed": True}
    added = ok(
        cli("node", "add", "z1", "--name", "z.example.test", "--target", "pem:/srv/z1", "--zone", "dmz", "--json")
    )
    assert added.json()["zone"] == "dmz"
    assert (
        "not allowed"
        in ok(cli("node", "add", "z2", "--name", "z.example.test", "--target", "pem:/srv/z2", "--zone", "a b"), 2).err
    )
    assert ok(cli("node", "zone", "nope"), 2).err
    assert "not allowed" in ok(cli("node", "zone", "a", "bad zone"), 2).err
    with Store.open() as store:
        assert store.node_zones() == {"a": "lan", "b": None, "db": "lan", "gw": None, "z1": "dmz"}
    with Store.open() as store, pytest.raises(InputError):
        store.set_node_zone("a", "")


async def test_a_worker_runs_its_zones_jobs_and_fails_a_kind_it_does_not_know(
    fleet: Store, tmp_path: Path, pki: PKI
) -> None:
    with fleet as store:
        dep = store.enqueue_deployment("web", 1, ["a", "b", "gw"])
        with store.session(write=True) as s:
            s.add(JobRow(kind="unheard", lineage="web", payload={}, state="queued", attempts=0, created_at=utc_now()))
        events: list[JobEvent] = []
        handled = await Worker(store, WorkerOptions(once=True, lease=5), log=events.append).run()
        assert handled == 3
        assert sorted((e.event, e.node or e.kind) for e in events if e.event != "taken") == [
            ("failed", "unheard"),
            ("recorded", "a"),
            ("recorded", "b"),
        ]
        leaf = served(tmp_path, "a", pki)
        assert served(tmp_path, "b", pki) == leaf
        assert not (tmp_path / "nodes" / "gw" / "live").exists()  # the dmz's: not this worker's
        [renew] = [j for j in store.jobs() if j.kind == "unheard"]
        assert renew.state == "failed" and "not known" in (renew.result or {})["error"]
        [gw] = store.jobs(deployment=dep, states=JobState.OPEN)
        assert (gw.node, gw.state) == ("gw", "queued")
        assert store.deployments("web")[0].state is DeploymentState.RUNNING
        assert await Worker(store, WorkerOptions(zone="dmz", once=True, lease=5)).run() == 1
        assert served(tmp_path, "gw", pki) == leaf
        assert store.deployments("web")[0].state is DeploymentState.FINISHED


@pytest.mark.parametrize("backend", [BACKENDS[1]], indirect=True)
async def test_a_node_locked_by_another_worker_is_not_deployed_and_its_job_goes_back(
    fleet: Store, tmp_path: Path, pki: PKI
) -> None:
    with fleet as store:
        dep = store.enqueue_deployment("web", 1, ["a", "b"])
        other = store.node_locks()  # another worker, still deploying a after its lease ran out
        assert other.acquire("a")
        assert not store.node_locks().acquire("a")
        many = store.node_locks()
        assert many.acquire_many(["a", "b", "nope"]) == {"a": False, "b": True}  # one statement for a batch
        assert not other.acquire("b")
        many.close()  # every lock it held goes, in one statement
        assert other.acquire("b")
        other.release("b")
        events: list[JobEvent] = []
        await Worker(store, WorkerOptions(once=True, lease=0.5, batch=1), log=events.append).run()
        released = [e for e in events if e.event == "released"]
        assert released and {e.node for e in released} == {"a"}
        assert not (tmp_path / "nodes" / "a" / "live").exists()
        assert served(tmp_path, "b", pki)
        [a] = store.jobs(deployment=dep, states=JobState.OPEN)
        assert (a.node, a.state) == ("a", "queued")
        assert a.lease_until is not None  # put off for a lease, so that it is not taken again at once
        other.close()  # the other worker ended: its lock went with its session
        await asyncio.sleep(0.6)
        await Worker(store, WorkerOptions(once=True, lease=5)).run()
        assert served(tmp_path, "a", pki) == served(tmp_path, "b", pki)
        assert store.deployments("web")[0].state is DeploymentState.FINISHED


async def test_a_queued_deploy_of_the_version_a_node_has_leaves_it_unchanged(fleet: Store) -> None:
    """Once the deployment is recorded its placeholders are every node's latest result: whether a
    node already had the version proven is said by its job, as it was when queued."""
    from certfleet.jobs.deployments import enqueue_deploy

    with fleet as store:
        nodes = [store.node("a"), store.node("b")]
        first, _ = enqueue_deploy(store, "web", nodes)
        assert [j.payload["settled"] for j in store.jobs(deployment=first)] == [False, False]
        assert await Worker(store, WorkerOptions(once=True, lease=5)).run() == 2
        again, _ = enqueue_deploy(store, "web", nodes)
        assert [j.payload["settled"] for j in store.jobs(deployment=again)] == [True, True]
        assert await Worker(store, WorkerOptions(once=True, lease=5)).run() == 2
        outcomes = {d.id: {r.node: r.outcome for r in d.results} for d in store.deployments("web")}
        assert outcomes[first] == {"a": Outcome.OK, "b": Outcome.OK}
        assert outcomes[again] == {"a": Outcome.UNCHANGED, "b": Outcome.UNCHANGED}


def test_jobs_of_other_kinds_are_queued_once_fenced_and_pruned(fleet: Store) -> None:
    with fleet as store:
        first = store.enqueue_job("probe", node="gw", zone="dmz", payload={"n": 1}, unique=True)
        again = store.enqueue_job("probe", node="gw", zone="dmz", payload={"n": 2}, unique=True)
        assert again.id == first.id and again.payload == {"n": 1}  # one open probe of gw
        other = store.enqueue_job("probe", node="gw", zone="dmz", payload={"n": 3})  # not unique: a new one
        assert other.id != first.id
        check = store.enqueue_job("check", zone="dmz", payload={"host": "127.0.0.1"})
        with pytest.raises(InputError, match="enqueue_deployment"):
            store.enqueue_job("deploy", node="a")
        with pytest.raises(InputError, match="larger than 16 KiB"):
            store.enqueue_job("check", payload={"x": "y" * 20_000})
        assert store.claim_jobs("w0", zone=None, lease=30, kinds={"probe"}) == []  # none of no zone
        [only] = store.claim_jobs("w1", zone="dmz", lease=30, job=check.id)
        assert only.job.id == check.id
        taken = store.claim_jobs("w2", zone="dmz", lease=30, limit=5, kinds={"probe"})
        assert sorted(le.job.id for le in taken) == sorted([first.id, other.id])
        [old] = [le for le in taken if le.job.id == first.id]
        with pytest.raises(InputError, match="larger than 64 KiB"):
            store.finish_job(old, ok=True, result={"x": "y" * 70_000})
        assert store.finish_job(old, ok=True, result={"served": "chain"})
        assert not store.finish_job(old, ok=False, result={})  # ended: refused, and nothing changed
        assert store.job(first.id).state == JobState.DONE and store.job(first.id).result == {"served": "chain"}
        assert store.enqueue_job("probe", node="gw", zone="dmz", unique=True).id == other.id  # still open
        [held_other] = [le for le in taken if le.job.id == other.id]
        assert store.finish_job(held_other, ok=True, result={})
        fresh = store.enqueue_job("probe", node="gw", zone="dmz", unique=True)
        assert fresh.id not in (first.id, other.id)  # the ones before ended: a new one is queued
        assert store.finish_job(only, ok=False, result={"error": "refused"})
        assert store.job(check.id).state == JobState.FAILED
        assert store.prune_jobs({"probe", "check", "deploy"}, before=utc_now()) == 3
        with pytest.raises(InputError):
            store.job(first.id)
        assert [j.id for j in store.jobs_by_id([first.id, other.id, fresh.id])] == [fresh.id]


async def test_a_worker_runs_a_job_of_another_kind_with_its_handler(
    fleet: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certfleet.jobs import runner

    async def echo(ctx: runner.JobContext, job: Any) -> runner.JobDone:
        if job.payload.get("fail"):
            raise InputError("asked to fail")
        return runner.JobDone(True, {"echo": job.payload, "by": ctx.worker}, "echoed")

    monkeypatch.setattr(runner, "handler_for", lambda kind: echo if kind == "echo" else None)
    with fleet as store:
        good = store.enqueue_job("echo", zone="lan", payload={"n": 1})
        bad = store.enqueue_job("echo", zone="lan", payload={"fail": True})
        events: list[JobEvent] = []
        worker = Worker(store, WorkerOptions(zone="lan", once=True, lease=5), log=events.append, name="w-lan")
        assert await worker.run() == 2
        assert store.job(good.id).result == {"echo": {"n": 1}, "by": "w-lan"}
        assert store.job(bad.id).state == JobState.FAILED
        assert store.job(bad.id).result == {"error": "asked to fail"}
        assert sorted(e.event for e in events if e.event != "taken") == ["failed", "recorded"]
        inline = await runner.run_inline(store, "echo", payload={"n": 2}, by="me")
        assert inline.ok and inline.result == {"echo": {"n": 2}, "by": "me"}
        assert not (await runner.run_inline(store, "nothing-known")).ok
        followed = await runner.follow_jobs(store, [good.id, bad.id], wait=0)
        assert [j.state for j in followed] == [JobState.DONE, JobState.FAILED]


@pytest.mark.parametrize("backend", [BACKENDS[1]], indirect=True)
def test_leases_follow_the_database_clock_not_the_workers(fleet: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    from certfleet.store import _jobs

    with fleet as store:
        store.enqueue_deployment("web", 1, ["a"])
        # this machine's clock an hour ahead: a lease given by the server still lasts its 30 s
        monkeypatch.setattr(_jobs, "utc_now", lambda: dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        [held] = store.claim_jobs("w1", zone=None, lease=30)
        assert held.job.lease_until is not None
        assert held.job.lease_until < dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
        assert store.claim_jobs("w2", zone=None, lease=30) == []  # not lapsed, whatever w2's clock says
