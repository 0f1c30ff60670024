"""The ``renew`` job's handler on a SQLite store (the same handler a worker runs): one pass, as
``certfleet renew`` runs it, under the pass lock; its summary bounded and free of key material;
``renew --queue`` refused on SQLite; ``certfleet serve``'s schedule running its pass here."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from jobs_fleet import issue, make_fleet, ok, served

from certfleet.acme.accounts import add_manual_issuer
from certfleet.autopilot.background import Autopilot
from certfleet.autopilot.lock import pass_lock
from certfleet.autopilot.report import Action, LineageRun, RenewReport
from certfleet.fleet.deploy import DeployOptions, DeployReport, NodeOutcome
from certfleet.fleet.model import Outcome
from certfleet.fleet.rollout import DeployResult
from certfleet.jobs.renewals import BUDGET, RENEW, describe, renew_payload, summarize
from certfleet.jobs.runner import run_inline
from certfleet.renewal import Issuing, Reason, RenewalPlan
from certfleet.store import Store, VersionState
from conftest import PKI

NO_PROBE = renew_payload(None, probe=False)
FAST = DeployOptions(probe_wait=0)


@pytest.fixture
def fleet(certfleet_home: Path, cli: Any, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> str:
    """``web`` with two local nodes and an active version deployed to neither: its fingerprint."""
    monkeypatch.delenv("CERTFLEET_DATABASE_URL", raising=False)
    make_fleet(cli, tmp_path, pki, {"a": None, "b": "dmz"})  # on SQLite the zone is ignored
    return issue(cli, tmp_path, pki, "v1")


def _no_key_material(result: Any, store: Store) -> None:
    text = json.dumps(result)
    assert "BEGIN" not in text and "PRIVATE" not in text
    for version in store.versions("web"):
        material = store.material("web", version.number) if version.state is VersionState.ISSUED else None
        if material is not None:
            from certfleet.export import key_pem

            body = "".join(key_pem(material.key).decode().splitlines()[1:-1])
            assert body[:40] not in text


def test_the_handler_runs_a_pass_and_keeps_its_summary(fleet: str, tmp_path: Path, pki: PKI) -> None:
    with Store.open() as store:
        done = asyncio.run(run_inline(store, RENEW, payload=NO_PROBE, options=FAST))
        assert done.ok, done.result
        result = done.result
        assert result["counts"] == {"deployed": 1} and result["issued"] == []
        [web] = result["lineages"]
        assert (web["lineage"], web["action"], web["version"], web["ok"]) == ("web", "deployed", 1, True)
        assert sorted(web["deployed"]) == ["a", "b"] and web["failed"] == []
        assert (result["nodes_deployed"], result["nodes_failed"], result["exit_code"]) == (2, 0, 0)
        assert describe(result) == "ok: 1 deployed; 2 node(s) deployed"
        _no_key_material(result, store)
        assert [e.detail["action"] for e in store.audit_log(action="renew")] == ["deployed"]  # the pass's own record
    assert served(tmp_path, "a", pki) == fleet and served(tmp_path, "b", pki) == fleet

    with Store.open() as store:  # nothing owed now: nothing done
        again = asyncio.run(run_inline(store, RENEW, payload=renew_payload("web", probe=False), options=FAST))
        assert again.ok and again.result["counts"] == {"nothing": 1} and again.result["lineage"] == "web"


def test_a_manual_lineage_forced_makes_a_key_and_csr_none_of_it_in_the_summary(fleet: str) -> None:
    with Store.open() as store:
        add_manual_issuer(store, "buy")
        store.set_policy("web", issuers=["buy"])
        done = asyncio.run(
            run_inline(store, RENEW, payload=renew_payload("web", force=True, probe=False), options=FAST)
        )
        assert done.ok, done.result
        [web] = done.result["lineages"]
        assert web["action"] == "requested" and web["reason"] == "forced"
        pending = [v for v in store.versions("web") if v.state is VersionState.PENDING]
        assert [v.number for v in pending] == [web["version"]]
        text = json.dumps(done.result)
        assert "BEGIN" not in text and "CERTIFICATE REQUEST" not in text
        _no_key_material(done.result, store)


def test_a_pass_running_elsewhere_fails_the_job_with_its_line(fleet: str) -> None:
    with Store.open() as store:
        lock = pass_lock(store)
        lock.acquire()
        try:
            done = asyncio.run(run_inline(store, RENEW, payload=NO_PROBE, options=FAST))
        finally:
            lock.release()
        assert not done.ok
        assert done.result["busy"] and "another certfleet renew is running" in done.result["busy"]
        assert done.result["exit_code"] == 0  # as `certfleet renew` exits then
        assert describe(done.result) == done.result["busy"] == done.detail
        assert store.deployments("web") == []  # nothing was done


@pytest.mark.parametrize(
    ("payload", "message", "code"),
    [
        ({"lineage": "nope", "force": False}, "nope", 2),
        ({"lineage": 3, "force": False}, "lineage is a name or null", 2),
        ({"lineage": None, "force": "yes"}, "true or false", 2),
        ({"lineage": None, "manual_days": -1}, "manual_days", 2),
    ],
)
def test_a_job_that_asks_what_cannot_be_done_fails_saying_why(
    fleet: str, payload: dict[str, Any], message: str, code: int
) -> None:
    with Store.open() as store:
        done = asyncio.run(run_inline(store, RENEW, payload=payload, options=FAST))
    assert not done.ok and message in done.result["error"], done.result
    assert done.result["exit_code"] == code
    assert describe(done.result).startswith("failed: ")


def _plan(name: str) -> RenewalPlan:
    return RenewalPlan(name, Issuing.ACME, Reason.THIRD_LEFT, False, None, None, "x" * 1000)


def test_the_summary_stays_bounded_and_keeps_what_a_pass_did_first() -> None:
    now = dt.datetime(2026, 5, 2, tzinfo=dt.UTC)
    nodes = tuple(NodeOutcome(f"n{i}", Outcome.FAILED, message="m" * 2000) for i in range(300))
    report = DeployReport("f" * 64, "v", nodes, now, now)
    failed = LineageRun(
        "broken", _plan("broken"), Action.DEPLOYED, "s" * 5000, version=4,
        deployed=DeployResult("broken", 4, report, 1), error="e" * 5000, hint="h" * 5000,
    )  # fmt: skip
    runs = (*(LineageRun(f"l{i:04}", _plan(f"l{i:04}"), Action.NOTHING, "z" * 400) for i in range(2000)), failed)
    summary = summarize(RenewReport(now, now, lineages=runs))
    assert len(json.dumps(summary)) <= BUDGET
    assert summary["counts"] == {"nothing": 2000, "deployed": 1}
    assert summary["nodes_failed"] == 300 and summary["ok"] is False and summary["exit_code"] == 1
    kept = summary["lineages"]
    assert kept[-1]["lineage"] == "broken"  # the one that did something is kept, in the pass's order
    assert summary["left_out"] == 2001 - len(kept) > 0
    broken = kept[-1]
    assert broken["failed_count"] == 300 and len(broken["failed"]) == 50
    assert max(len(broken[k]) for k in ("summary", "error", "hint")) <= 300
    assert max(len(n["message"]) for n in broken["failed"]) <= 300


def test_renew_queue_is_refused_on_sqlite(fleet: str, cli: Any) -> None:
    refused = cli("renew", "--queue")
    assert refused.code == 2
    assert "a queued renewal needs a store shared on PostgreSQL" in refused.err
    assert "runs in the process that asks for it" in refused.err
    for args, words in (
        (("--zone", "dmz"), "--zone and --wait go with --queue"),
        (("--queue", "--dry-run"), "--queue does not take --dry-run"),
        (("--queue", "--lineage", "a", "--lineage", "b"), "one --lineage"),
    ):
        result = cli("renew", *args)
        assert result.code == 2 and words in result.err, result.err
    with Store.open() as store:
        assert store.jobs() == []


def test_the_schedule_on_sqlite_runs_the_pass_here(fleet: str, certfleet_home: Path, tmp_path: Path, pki: PKI) -> None:
    from certfleet.autopilot.report import RenewSettings

    pilot = Autopilot(certfleet_home, settings=RenewSettings(probe=False, deploy=FAST))
    summary = pilot.run_once()
    assert summary is not None and summary["counts"] == {"deployed": 1}, summary
    assert pilot.passes == 1 and pilot.last == summary
    assert served(tmp_path, "a", pki) == fleet
    with Store.open() as store:
        assert store.jobs() == []  # no queue on SQLite: the job ran here
        [entry] = store.audit_log(action="renew")
        assert entry.actor == "certfleet-autopilot"


def test_jobs_lists_a_renew_job_with_its_lineage_and_outcome(fleet: str, cli: Any) -> None:
    with Store.open() as store:
        job = store.enqueue_job(RENEW, payload=renew_payload(None, force=True), unique=True)
        [held] = store.claim_jobs("w", zone=None, lease=30, job=job.id)
        done = asyncio.run(run_inline(store, RENEW, payload=NO_PROBE, options=FAST))
        assert store.finish_job(held, ok=done.ok, result=done.result)
        queued = store.enqueue_job(RENEW, lineage="web", zone="dmz", payload=renew_payload("web", force=True))
    out = ok(cli("jobs")).out
    lines = {int(line.split()[0]): line for line in out.splitlines()}
    assert "renew" in lines[job.id] and " all " in lines[job.id]
    assert "ok: 1 deployed; 2 node(s) deployed" in lines[job.id]
    assert " web " in lines[queued.id] and "dmz" in lines[queued.id] and "forced" in lines[queued.id]
    listed = json.loads(ok(cli("jobs", "--json")).out)["jobs"]
    assert {j["id"]: j["result"] is not None for j in listed} == {job.id: True, queued.id: False}
