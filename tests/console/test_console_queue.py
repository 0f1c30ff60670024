"""The console's Jobs page and ``/api/v1/jobs``, on SQLite and on PostgreSQL: every kind of job
with its state, the worker that holds it and what it did; the filters; paging; each zone's open
jobs counted (a zone no worker serves shows its oldest queued job growing old); and an account
kept to some lineages sees only the jobs of those lineages."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from certfleet.clock import utc_now
from certfleet.fleet.model import NodeSpec, Outcome, TargetSpec
from certfleet.store import NodeResult, Store
from conftest import PKI
from support.console import ConsoleEnv, account_token, bearer, count_selects, logged_in, make_env
from support.postgres import Backend, backend, pg_url, postgres

__all__ = ["backend", "pg_url", "postgres"]  # the fixtures, imported where they are used

ROW = re.compile(r'<tr data-job="(\d+)" data-kind="([a-z]+)" data-state="([a-z]+)">(.*?)</tr>', re.S)


@dataclass
class Queue:
    env: ConsoleEnv
    web: int  # the deployment of web (nodes a and gw)
    mail: int  # the deployment of mail (node m1, zone lan: no worker takes it)
    ids: dict[str, int]  # each job by what it is


def _result(node: str, outcome: Outcome = Outcome.OK) -> NodeResult:
    now = utc_now()
    return NodeResult(node=node, outcome=outcome, started_at=now, finished_at=now, output="done")


def _node(store: Store, name: str, lineage: str, zone: str | None, backend: Backend) -> None:
    spec = NodeSpec(name, (f"{name}.example.test",), (TargetSpec("pem", str(backend.home / "nodes" / name)),))
    store.add_node(spec, lineage=lineage)
    if zone is not None:
        store.set_node_zone(name, zone)


@pytest.fixture
def queue(backend: Backend, pki: PKI) -> Queue:
    env = make_env(backend.home)
    store = env.store
    store.put_lineage("web")
    store.issue("web", pki.leaf.cert, pki.leaf.chain, key=pki.leaf.key)
    mail = pki.inter.leaf("mail.example.test")
    store.put_lineage("mail")
    store.issue("mail", mail.cert, mail.chain, key=mail.key)
    _node(store, "a", "web", None, backend)
    _node(store, "gw", "web", "dmz", backend)
    _node(store, "m1", "mail", "lan", backend)

    ids: dict[str, int] = {}
    web = store.enqueue_deployment("web", 1, ["a", "gw"])
    by_node = {j.node: j.id for j in store.jobs(deployment=web)}
    ids["deploy-a"], ids["deploy-gw"] = by_node["a"], by_node["gw"]
    held = store.claim_jobs("host1/11/-", zone=None, lease=600, job=ids["deploy-a"])[0]
    assert store.finish_node(held, _result("a", Outcome.ROLLED_BACK))
    store.claim_jobs("host2/22/dmz", zone="dmz", lease=600, job=ids["deploy-gw"])  # running, held
    mail_dep = store.enqueue_deployment("mail", 1, ["m1"])
    ids["deploy-m1"] = store.jobs(deployment=mail_dep)[0].id

    probe = store.enqueue_job("probe", node="a")
    ids["probe"] = probe.id
    held = store.claim_jobs("host1/11/-", zone=None, lease=600, job=probe.id)[0]
    summary = {"ok": False, "outcome": "failed", "target": "a.example.test:443", "problem": "the certificate expired"}
    assert store.finish_job(held, ok=True, result=summary)

    check = store.enqueue_job("check", zone="dmz", payload={"host": "10.0.0.5", "port": 443, "timeout": 5})
    ids["check"] = check.id
    held = store.claim_jobs("host2/22/dmz", zone="dmz", lease=600, job=check.id)[0]
    served = {"ok": True, "target": "10.0.0.5:443", "problems": [{"message": "the chain is sent out of order"}]}
    assert store.finish_job(held, ok=True, result=served)

    renew_web = store.enqueue_job("renew", lineage="web", payload={"lineage": "web", "force": False})
    ids["renew-web"] = renew_web.id
    held = store.claim_jobs("host1/11/-", zone=None, lease=600, job=renew_web.id)[0]
    did = {"ok": True, "counts": {"renewed": 1}, "issued": [{"lineage": "web", "version": 2}], "nodes_deployed": 2}
    assert store.finish_job(held, ok=True, result=did)
    ids["renew-all"] = store.enqueue_job("renew", payload={"lineage": None, "force": True}).id  # queued

    env.clock.advance(minutes=20, seconds=30)  # the queued jobs wait: no worker of lan, none of no zone took them
    return Queue(env, web, mail_dep, ids)


def rows(html: str) -> dict[int, tuple[str, str, str]]:
    return {int(i): (kind, state, body) for i, kind, state, body in ROW.findall(html)}


def zone_row(html: str, zone: str) -> str:
    found = re.search(rf'<tr data-zone="{zone}">(.*?)</tr>', html, re.S)
    assert found, f"no row for zone {zone!r}"
    return found.group(1)


def test_the_page_lists_every_kind_with_its_state_worker_and_outcome(queue: Queue) -> None:
    env, ids = queue.env, queue.ids
    logged_in(env)
    page = env.client.get("/jobs")
    assert page.status_code == 200
    assert '<a href="/jobs" class="here" aria-current="page">Jobs</a>' in page.text
    shown = rows(page.text)
    assert list(shown) == sorted(ids.values(), reverse=True)  # newest first

    kind, state, body = shown[ids["deploy-a"]]
    assert (kind, state) == ("deploy", "failed")  # rolled back: not ok
    assert f'<a href="/deploy/jobs/{queue.web}">{ids["deploy-a"]}</a>' in body
    assert 'data-outcome="rolled-back"' in body and 'data-holder=""' in body and "<code>web</code>" in body

    kind, state, body = shown[ids["deploy-gw"]]
    assert (kind, state) == ("deploy", "running")
    assert 'data-holder="host2/22/dmz"' in body and "until " in body and 'data-outcome=""' in body
    assert "<td>1</td>" in body  # one attempt

    kind, state, body = shown[ids["deploy-m1"]]
    assert (kind, state) == ("deploy", "queued") and "<code>mail</code>" in body and ">lan<" in body
    assert "<td>0</td>" in body

    kind, state, body = shown[ids["probe"]]
    assert (kind, state) == ("probe", "done")
    assert 'data-outcome="failed: the certificate expired"' in body and "/deploy/jobs/" not in body

    kind, state, body = shown[ids["check"]]
    assert (kind, state) == ("check", "done") and 'data-outcome="ok: the chain is sent out of order"' in body

    kind, state, body = shown[ids["renew-web"]]
    assert (kind, state) == ("renew", "done")
    assert 'data-outcome="ok: 1 renewed; issued web v2; 2 node(s) deployed"' in body

    kind, state, body = shown[ids["renew-all"]]
    assert (kind, state) == ("renew", "queued") and "<code>all</code>" in body and 'data-outcome="forced"' in body


def test_each_zone_counts_its_open_jobs_and_the_age_of_its_oldest_queued(queue: Queue) -> None:
    env = queue.env
    logged_in(env)
    html = env.client.get("/jobs").text
    lan = zone_row(html, "lan")
    assert 'data-queued="1"' in lan and 'data-running="0"' in lan
    assert 'data-waited="20m"' in lan and "no worker took it" in lan
    dmz = zone_row(html, "dmz")  # the check ended; the deploy of gw runs
    assert 'data-queued="0"' in dmz and 'data-running="1"' in dmz and 'data-waited=""' in dmz
    none = zone_row(html, "")  # the pass over every lineage waits
    assert 'data-queued="1"' in none and 'data-running="0"' in none and 'data-waited="20m"' in none

    zones = env.client.get("/api/v1/jobs").json()["zones"]
    assert [(z["zone"], z["queued"], z["running"], z["stale"]) for z in zones] == [
        (None, 1, 0, True),
        ("dmz", 0, 1, False),
        ("lan", 1, 0, True),
    ]
    assert zones[2]["oldest_queued_seconds"] == pytest.approx(1200, abs=60)

    # a worker of lan takes its job: the zone no longer waits
    env.store.claim_jobs("host3/33/lan", zone="lan", lease=600)
    html = env.client.get("/jobs").text
    lan = zone_row(html, "lan")
    assert 'data-queued="0"' in lan and 'data-running="1"' in lan and "no worker took it" not in lan


def test_the_filters(queue: Queue) -> None:
    env, ids = queue.env, queue.ids
    logged_in(env)
    opened = rows(env.client.get("/jobs?open=1").text)
    assert set(opened) == {ids["deploy-gw"], ids["deploy-m1"], ids["renew-all"]}
    one = rows(env.client.get(f"/jobs?deployment={queue.web}").text)
    assert set(one) == {ids["deploy-a"], ids["deploy-gw"]}
    both = rows(env.client.get(f"/jobs?deployment={queue.web}&open=1").text)
    assert set(both) == {ids["deploy-gw"]}
    assert "No job matches." in env.client.get("/jobs?deployment=999").text
    refused = env.client.get("/jobs?deployment=web")
    assert refused.status_code == 400 and "deployment&#39;s number" in refused.text

    api = env.client.get(f"/api/v1/jobs?open=true&deployment={queue.web}").json()["jobs"]
    assert [j["id"] for j in api] == [ids["deploy-gw"]]
    assert api[0]["lease_owner"] == "host2/22/dmz" and api[0]["deploy_page"] == f"/deploy/jobs/{queue.web}"
    newest = env.client.get("/api/v1/jobs?limit=2").json()["jobs"]
    assert [j["id"] for j in newest] == sorted(ids.values(), reverse=True)[:2]
    assert env.client.get("/api/v1/jobs?deployment=x").status_code == 400


def test_one_job_through_the_api(queue: Queue) -> None:
    env, ids = queue.env, queue.ids
    logged_in(env)
    renew = env.client.get(f"/api/v1/jobs/{ids['renew-all']}").json()
    assert renew["kind"] == "renew" and renew["state"] == "queued" and renew["lineage"] == ""
    assert renew["payload"] == {"lineage": None, "force": True} and renew["summary"] == "forced"
    check = env.client.get(f"/api/v1/jobs/{ids['check']}").json()
    assert check["summary"] == "ok: the chain is sent out of order" and "payload" not in check
    assert check["result"]["target"] == "10.0.0.5:443" and check["deploy_page"] is None
    gone = env.client.get("/api/v1/jobs/999999")
    assert gone.status_code == 404 and gone.json()["error"] == "no job 999999"


def test_an_account_kept_to_lineages_sees_only_their_jobs(queue: Queue) -> None:
    env, ids = queue.env, queue.ids
    mail = bearer(env, account_token(env, "postmaster", "viewer", lineages=["mail"]))
    assert set(rows(mail.get("/jobs").text)) == {ids["deploy-m1"]}
    listed = mail.get("/api/v1/jobs").json()
    assert [j["id"] for j in listed["jobs"]] == [ids["deploy-m1"]]
    assert [z["zone"] for z in listed["zones"]] == ["lan"]  # the counts are of its jobs too
    assert mail.get(f"/api/v1/jobs/{ids['deploy-m1']}").status_code == 200
    for hidden in ("deploy-a", "probe", "check", "renew-all", "renew-web"):
        r = mail.get(f"/api/v1/jobs/{ids[hidden]}")
        assert r.status_code == 404 and r.json()["error"] == f"no job {ids[hidden]}", hidden
    assert rows(mail.get(f"/jobs?deployment={queue.web}").text) == {}

    web = bearer(env, account_token(env, "webmaster", "operator", lineages=["web"]))
    seen = set(rows(web.get("/jobs").text))
    assert seen == {ids["deploy-a"], ids["deploy-gw"], ids["renew-web"]}  # no probe, check, nor pass of all
    html = web.get("/jobs").text
    assert 'data-zone="dmz"' in html and 'data-zone="lan"' not in html and 'data-zone=""' not in html

    everyone = bearer(env, account_token(env, "watcher", "viewer"))
    assert set(rows(everyone.get("/jobs").text)) == set(ids.values())
    assert '<a href="/jobs">Jobs</a>' in everyone.get("/nodes").text  # every account's menu leads to it
    assert '<a href="/jobs">Jobs</a>' in mail.get("/nodes").text


def test_the_page_pages_and_costs_the_same_queries_however_many_jobs(backend: Backend) -> None:
    env = make_env(backend.home)
    logged_in(env)
    env.store.enqueue_jobs("probe", [("", f"n{i:03d}", "dmz", {}) for i in range(5)])
    few = count_selects(env, "/jobs")
    made = env.store.enqueue_jobs("probe", [("", f"n{i:03d}", "dmz", {}) for i in range(5, 230)])
    assert count_selects(env, "/jobs") == few  # a page, the count and the zones: never a query a job
    newest = sorted((j.id for j in made), reverse=True)
    first = env.client.get("/jobs").text
    assert list(rows(first)) == newest[:100]
    assert "jobs 1–100 of 230 (page 1 of 3)" in first and 'rel="next" href="/jobs?page=2"' in first
    assert 'rel="prev"' not in first
    last = env.client.get("/jobs?page=3").text
    assert len(rows(last)) == 30 and "jobs 201–230 of 230 (page 3 of 3)" in last and 'rel="next"' not in last
    assert rows(env.client.get("/jobs?page=99").text).keys() == rows(last).keys()  # past the end: the last
    second = env.client.get("/jobs?open=1&page=2").text  # the filter is kept from page to page
    assert 'rel="prev" href="/jobs?open=1&amp;page=1"' in second and 'href="/jobs?open=1&amp;page=3"' in second
    assert 'data-queued="230"' in zone_row(first, "dmz")
