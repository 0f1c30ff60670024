"""ACME in the console, against a real Pebble: add an issuer (the directory's terms shown first;
with and without External Account Binding, a wrong HMAC key refused with nothing stored and the
key never echoed), set a lineage's issuers and solvers, the preflight's verdict per name, "issue
now" followed name by name to a new version (the token put in a real nginx's webroot), revoke it
at the CA (asked first), after which it is never deployed; and who may do which."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certfleet.autopilot.lock import pass_lock
from certfleet.console.settings import ConsoleSettings
from certfleet.fleet.nodes import make_node
from support.bind import BindServer
from support.console import ConsoleEnv, account_token, add_node, bearer, csrf_of, logged_in, make_env, wait_job
from support.pebble import (
    EAB_KEYS,
    MAIN_IP,
    PebbleServer,
    WebrootNginx,
    acme_env,
    bind,
    http_port,
    pebble,
    snakeoil,
)

pytestmark = pytest.mark.peer  # Pebble, BIND and nginx

__all__ = ["acme_env", "bind", "http_port", "pebble"]  # fixtures

NAMES = ("acme.test", "www.acme.test")


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home", settings=ConsoleSettings(probe_timeout=2.0, fetch_aia=False))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, http_port: int) -> Iterator[WebrootNginx]:
    """nginx publishing node main's webroot on its address (127.0.0.2), where acme.test resolves."""
    base = tmp_path_factory.mktemp("main")
    placeholder = snakeoil(base / "snakeoil")
    server = WebrootNginx(
        base / "nginx", webroot=base / "www", http_host=MAIN_IP, http_port=http_port, live=base / "tls" / "live",
        placeholder=placeholder,
    )  # fmt: skip
    with server:
        yield server


def _lookup(env: ConsoleEnv, csrf: str, pebble: PebbleServer) -> Any:
    return env.client.post(
        "/issuers",
        data={"csrf_token": csrf, "kind": "acme", "directory": pebble.directory, "action": "lookup"},
        files=[("ca_bundle", ("api-root.pem", pebble.ca_bundle.read_bytes()))],
    )


def _add(env: ConsoleEnv, csrf: str, pebble: PebbleServer, name: str = "pebble", **fields: str) -> Any:
    data = {
        "csrf_token": csrf,
        "kind": "acme",
        "name": name,
        "directory": pebble.directory,
        "contact": "pki@acme.test",
        "agree_tos": "on",
        "action": "add",
        **fields,
    }
    data = {k: v for k, v in data.items() if v != ""}
    return env.client.post(
        "/issuers", data=data, files=[("ca_bundle", ("api-root.pem", pebble.ca_bundle.read_bytes()))]
    )


def _wait(client: ConsoleEnv | Any, location: str, timeout: float = 120.0) -> dict[str, Any]:
    """The issue job at ``location`` (its page or its id), once finished."""
    http = client.client if isinstance(client, ConsoleEnv) else client
    job_id = location.rsplit("/", 1)[-1]
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = http.get(f"/api/v1/issue/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        assert time.monotonic() < deadline, f"the issue did not finish: {job}"
        time.sleep(0.1)


def _form(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """A form with fields given more than once (each row of a table), in order."""
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _message(page: str) -> str:
    found = re.search(r'<div class="alert bad" role="status">([^<]*)</div>', page)
    assert found, "no refusal on the page"
    return found.group(1)


@pytest.mark.usefixtures("acme_env")
def test_add_an_issuer_the_terms_shown_first_then_agreed(env: ConsoleEnv, pebble: PebbleServer) -> None:
    csrf = logged_in(env)
    looked = _lookup(env, csrf, pebble)
    assert looked.status_code == 200, looked.text
    terms = re.search(r'id="terms-link" href="([^"]+)"', looked.text)
    assert terms and terms.group(1).startswith("data:text/plain")  # Pebble's terms
    assert env.store.issuers() == []  # reading the directory stores nothing

    refused = _add(env, csrf, pebble, agree_tos="")
    assert refused.status_code == 400
    message = _message(refused.text)
    assert "asks you to agree to its terms of service" in message and "tick" in message
    assert "--agree-tos" not in refused.text
    assert env.store.issuers() == []

    added = _add(env, csrf, pebble)
    assert added.status_code == 303 and added.headers["location"].startswith("/issuers/pebble?done=issuer-added")
    page = env.client.get(added.headers["location"]).text
    assert "Issuer pebble added" in page and "mailto:pki@acme.test" in page
    (issuer,) = env.store.issuers()
    assert issuer.account_url and issuer.ca_bundle and issuer.terms_of_service == terms.group(1)
    assert [e.actor for e in env.store.audit_log(action="issuer.add")] == ["console:admin"]
    audit = env.client.get("/audit", params={"kind": "issuer"}).text
    assert "<option selected>issuer</option>" in audit and "issuer.add" in audit

    # a second issuer of the same name: one line, nothing changed
    again = _add(env, csrf, pebble)
    assert again.status_code == 400 and "an issuer named pebble exists" in _message(again.text)


@pytest.mark.usefixtures("acme_env")
def test_eab_missing_wrong_and_right_and_the_hmac_key_never_echoed(
    env: ConsoleEnv, tmp_path: Path, bind: BindServer, http_port: int
) -> None:
    csrf = logged_in(env)
    right, wrong = EAB_KEYS["kid-certfleet"], EAB_KEYS["kid-other"]
    with PebbleServer(tmp_path / "pebble-eab", http_port=http_port, dns=bind.address, eab=EAB_KEYS) as pebble:
        looked = _lookup(env, csrf, pebble)
        assert "This CA requires External Account Binding" in looked.text

        missing = _add(env, csrf, pebble, name="sectigo")
        assert missing.status_code == 400
        said = _message(missing.text)
        assert "requires External Account Binding" in said and "EAB key id and HMAC key" in said
        assert "--eab" not in missing.text

        half = _add(env, csrf, pebble, name="sectigo", eab_kid="kid-certfleet")
        assert half.status_code == 400 and "needs both the key id and the HMAC key" in _message(half.text)

        refused = _add(env, csrf, pebble, name="sectigo", eab_kid="kid-certfleet", eab_hmac=wrong)
        assert refused.status_code == 400
        said = _message(refused.text)
        assert said.startswith("sectigo: the CA refused") and "check the EAB key id and HMAC key" in said
        assert 'value="kid-certfleet"' in refused.text  # the key id is shown again, the HMAC key never
        assert env.store.issuers() == []  # nothing stored

        added = _add(env, csrf, pebble, name="sectigo", eab_kid="kid-certfleet", eab_hmac=right)
        assert added.status_code == 303, _message(added.text)
        (issuer,) = env.store.issuers()
        assert issuer.eab_kid == "kid-certfleet" and issuer.status is not None and issuer.status.value == "valid"
    for secret in (right, wrong):
        assert not any(secret.encode() in body for body in env.responses)
        assert not any(secret in str(e.detail) for e in env.store.audit_log(limit=1000))


@pytest.mark.usefixtures("acme_env")
def test_rollover_deactivate_and_remove_each_asked_first(env: ConsoleEnv, pebble: PebbleServer) -> None:
    csrf = logged_in(env)
    assert _add(env, csrf, pebble).status_code == 303
    before = env.store.issuer("pebble").key_thumbprint

    path = "/issuers/pebble/rollover"
    assert env.client.post(path, data={"csrf_token": csrf}).headers["location"] == path  # only the question
    assert env.store.issuer("pebble").key_thumbprint == before
    assert "Change the account key of pebble at the CA?" in env.client.get(path).text
    rolled = env.client.post(path, data={"csrf_token": csrf, "confirm": "yes"})
    assert rolled.status_code == 303
    assert "the CA now knows the new account key" in env.client.get(rolled.headers["location"]).text
    after = env.store.issuer("pebble")
    assert after.key_thumbprint != before and after.key_changed_at is not None

    # a lineage lists it: removing is refused, in the console's words
    env.store.set_policy("web", issuers=["pebble"])
    refused = env.client.post("/issuers/pebble/remove", data={"csrf_token": csrf, "confirm": "yes"})
    assert refused.status_code == 400 and "issuer pebble is used by lineage web" in refused.text
    assert "choose another issuer on the Issuing page of web first" in refused.text

    done = env.client.post("/issuers/pebble/deactivate", data={"csrf_token": csrf, "confirm": "yes"})
    assert done.status_code == 303
    page = env.client.get(done.headers["location"]).text
    assert "the account is deactivated at the CA" in page and 'id="rollover"' not in page
    assert env.store.issuer("pebble").status is not None and env.store.issuer("pebble").status.value == "deactivated"  # type: ignore[union-attr]
    again = env.client.post(path, data={"csrf_token": csrf, "confirm": "yes"})
    assert again.status_code == 400 and "the account of issuer pebble is deactivated" in again.text

    env.store.set_policy("web", issuers=[])
    gone = env.client.post("/issuers/pebble/remove", data={"csrf_token": csrf, "confirm": "yes"})
    assert gone.status_code == 303 and env.store.issuers() == []
    assert "Issuer pebble removed" in env.client.get(gone.headers["location"]).text


@pytest.mark.usefixtures("acme_env")
def test_preflight_issue_now_and_revoke(
    env: ConsoleEnv, pebble: PebbleServer, node: WebrootNginx, tmp_path: Path
) -> None:
    csrf = logged_in(env)
    # node main serves the names and publishes its webroot
    added = add_node(env, csrf, "main", list(NAMES), [f"pem:{tmp_path / 'main'}"], new_lineage="web",
                     webroot=str(node.webroot))  # fmt: skip
    assert added.status_code == 303, added.text
    assert env.store.node("main").options["webroot"] == str(node.webroot)
    root = [("files", ("root.pem", pebble.root_pem()))]
    assert env.client.post("/trust", data={"csrf_token": csrf}, files=root).status_code == 303
    assert _add(env, csrf, pebble).status_code == 303

    # the lineage's page: each name, its default solver and where its token goes
    page = env.client.get("/lineages/web/acme").text
    for name in NAMES:
        assert f'data-name="{name}"' in page
    assert f"http-01 on main ({node.webroot})" in page
    # issuing before any issuer is chosen: refused at once, in the console's words
    early = env.client.post("/lineages/web/issue", data={"csrf_token": csrf, "action": "issue"})
    assert early.status_code == 400 and "lineage web has no issuer" in _message(early.text)
    assert "certfleet lineage set" not in early.text

    rows = [("solver_name", n) for n in NAMES] + [("solver_choice", "")] * 2 + [("solver_spec", "")] * 2
    saved = env.client.post(
        "/lineages/web/acme",
        data=_form([("csrf_token", csrf), ("issuer", "pebble"), ("issuer", ""), *rows, ("other_rules", "")]),
    )
    assert saved.status_code == 303, saved.text
    assert env.store.policy("web").issuers == ("pebble",)

    # preflight: each name's verdict, nothing ordered
    r = env.client.post("/lineages/web/issue", data={"csrf_token": csrf, "action": "preflight"})
    assert r.status_code == 303 and r.headers["location"].startswith("/issue/jobs/")
    job = _wait(env, r.headers["location"])
    assert job["ok"], job
    verdicts = {n["name"]: n["ok"] for n in job["preflight"]["names"]}
    assert verdicts == dict.fromkeys(NAMES, True)
    shown = env.client.get(r.headers["location"]).text
    assert "preflight passed" in shown and shown.count('data-ok="yes"') == len(NAMES)
    assert env.store.versions("web") == []

    # while an autopilot pass runs (a timer's `certfleet renew`, as far as the console can tell),
    # issue now is refused at once: the pass may be issuing the same lineage
    with pass_lock(env.store):
        busy = env.client.post("/lineages/web/issue", data={"csrf_token": csrf, "action": "issue"})
        assert busy.status_code == 409 and "an autopilot pass is running" in _message(busy.text), busy.text
    assert env.store.versions("web") == []

    # issue now: every name's authorization valid, a new active version
    r = env.client.post("/lineages/web/issue", data={"csrf_token": csrf, "action": "issue"})
    assert r.status_code == 303
    job = _wait(env, r.headers["location"])
    assert job["ok"] and job["version"] == 1 and job["issuer"] == "pebble", job
    assert {n["name"]: n["state"] for n in job["names"]} == dict.fromkeys(NAMES, "valid")
    assert any("answer" in s for s in job["steps"])
    shown = env.client.get(r.headers["location"]).text
    assert "issued: version 1 by pebble" in shown
    active = env.store.lineage("web").active
    assert active is not None and active.number == 1
    assert [i.issuer for i in env.store.issuances("web")] == ["pebble"]
    assert list((node.webroot / ".well-known" / "acme-challenge").iterdir()) == []  # tokens removed

    # a second issue, then revoke the first version: asked first, with a reason; the CA is told
    r = env.client.post("/lineages/web/issue", data={"csrf_token": csrf, "action": "issue"})
    assert _wait(env, r.headers["location"])["version"] == 2
    assert "It is the active version" in env.client.get("/lineages/web/versions/2/revoke").text
    path = "/lineages/web/versions/1/revoke"
    assert env.client.post(path, data={"csrf_token": csrf, "reason": "keyCompromise"}).headers["location"] == path
    assert env.store.revocations("web") == []
    question = env.client.get(path)
    assert question.status_code == 200 and "told; then certfleet marks it revoked" in question.text
    assert "It is the active version" not in question.text
    done = env.client.post(path, data={"csrf_token": csrf, "confirm": "yes", "reason": "keyCompromise"})
    assert done.status_code == 303, done.text
    (revoked,) = env.store.revocations("web")
    assert (revoked.version, revoked.reason.value, revoked.issuer) == (1, "keyCompromise", "pebble")
    leaf = env.store.version("web", 1).leaf
    assert leaf is not None
    assert pebble.cert_status(leaf.serial_number)["Status"] == "Revoked"
    page = env.client.get(done.headers["location"]).text
    assert "Version 1 of web revoked" in page
    row = re.search(r'<tr data-version="1">.*?</tr>', page, re.S)
    assert row and "revoked</span> keyCompromise" in row.group(0) and "Revoke…" not in row.group(0)
    # the revoked version is never deployed again: rolling back to it is refused, in one line
    back = env.client.post("/rollback", data={"csrf_token": csrf, "lineage": "web", "to": "1", "nodes": "main"})
    assert back.status_code == 303 and back.headers["location"].startswith("/deploy/jobs/")
    rolled = wait_job(env, back.headers["location"].rsplit("/", 1)[1])
    assert rolled["state"] == "error" and "version 1 of web was revoked (keyCompromise)" in rolled["error"], rolled
    assert not (tmp_path / "main" / "live").exists()  # nothing reached the node
    assert env.store.lineage("web").active.number == 2  # type: ignore[union-attr]
    again = env.client.get(path)
    assert again.status_code == 400 and "revoked already" in again.text


@pytest.mark.usefixtures("acme_env")
def test_a_name_the_ca_could_not_reach_is_told_by_the_preflight_and_nothing_is_ordered(
    env: ConsoleEnv, pebble: PebbleServer, node: WebrootNginx, tmp_path: Path
) -> None:
    csrf = logged_in(env)
    main = add_node(env, csrf, "main", list(NAMES), [f"pem:{tmp_path / 'main'}"], new_lineage="web",
                    webroot=str(node.webroot))  # fmt: skip
    # gw's names resolve to 127.0.0.3, where no web server publishes its webroot
    gw = add_node(env, csrf, "gw", ["gw.acme.test"], [f"pem:{tmp_path / 'gw'}"], lineages="web",
                  webroot=str(tmp_path / "gw-www"))  # fmt: skip
    assert main.status_code == 303 and gw.status_code == 303, gw.text
    assert _add(env, csrf, pebble).status_code == 303
    env.store.set_policy("web", issuers=["pebble"])

    r = env.client.post("/lineages/web/issue", data={"csrf_token": csrf, "action": "issue"})
    job = _wait(env, r.headers["location"])
    assert job["state"] == "done" and not job["ok"] and job["version"] is None
    verdicts = {n["name"]: n["ok"] for n in job["preflight"]["names"]}
    assert verdicts == {"acme.test": True, "www.acme.test": True, "gw.acme.test": False}
    gw_check = next(
        c for n in job["preflight"]["names"] if n["name"] == "gw.acme.test" for c in n["checks"] if not c["ok"]
    )
    assert gw_check["check"] == "http-01" and "127.0.0.3" in gw_check["message"]
    page = env.client.get(r.headers["location"]).text
    assert "preflight failed: nothing was ordered" in page and 'data-ok="no"' in page
    assert {n["state"] for n in job["names"]} == {"waiting"}  # no authorization was asked for
    assert env.store.versions("web") == [] and env.store.issuances("web") == []


@pytest.mark.usefixtures("acme_env")
def test_a_wildcard_by_dns01_chosen_on_the_names_row(
    env: ConsoleEnv, pebble: PebbleServer, bind: BindServer, tmp_path: Path
) -> None:
    csrf = logged_in(env)
    tsig = bind.credentials(tmp_path / "tsig.ini")
    added = add_node(env, csrf, "edge", ["*.acme.test"], [f"pem:{tmp_path / 'edge'}"], new_lineage="wild")
    assert added.status_code == 303, added.text
    root = [("files", ("root.pem", pebble.root_pem()))]
    assert env.client.post("/trust", data={"csrf_token": csrf}, files=root).status_code == 303
    assert _add(env, csrf, pebble).status_code == 303

    # the default (http-01) cannot prove a wildcard: the page says so beside the name
    page = env.client.get("/lineages/wild/acme").text
    assert "cannot: *.acme.test is a wildcard: only dns-01 can prove it" in page
    form = [
        ("csrf_token", csrf), ("issuer", "pebble"),
        ("solver_name", "*.acme.test"), ("solver_choice", "dns-01:rfc2136"), ("solver_spec", ""),
    ]  # fmt: skip
    empty = env.client.post("/lineages/wild/acme", data=_form(form))
    assert empty.status_code == 400 and "*.acme.test: dns-01:rfc2136 needs its setting" in _message(empty.text)
    form[-1] = ("solver_spec", str(tsig))
    assert env.client.post("/lineages/wild/acme", data=_form(form)).status_code == 303
    assert [str(r) for r in env.store.policy("wild").solvers] == [f"*.acme.test=dns-01:rfc2136:{tsig}"]
    page = env.client.get("/lineages/wild/acme").text
    assert f'value="{tsig}"' in page and "dns-01:rfc2136" in page

    r = env.client.post("/lineages/wild/issue", data={"csrf_token": csrf, "action": "issue"})
    job = _wait(env, r.headers["location"])
    assert job["ok"] and job["version"] == 1, job
    assert job["names"] == [{"name": "*.acme.test", "state": "valid"}]
    (check,) = (n for n in job["preflight"]["names"] if n["name"] == "*.acme.test")
    assert check["ok"] and check["solver"].startswith("dns-01:rfc2136")


def test_each_names_authorization_follows_the_issues_events() -> None:
    import datetime as dt

    from certfleet.acme.issue import IssueEvent
    from certfleet.console.services.issue_jobs import IssueJob, IssueJobKind, NameState

    names = ["a.test", "b.test", "c.test"]
    job = IssueJob(
        "j", "web", IssueJobKind.ISSUE, "admin", 1, dt.datetime.now(dt.UTC), dict.fromkeys(names, NameState.WAITING)
    )
    job.on_event(IssueEvent("order", "first", detail="3 names"))
    for name in names[:2]:
        job.on_event(IssueEvent("present", "first", name, "http-01 on main"))
    assert job.names == {"a.test": NameState.PENDING, "b.test": NameState.PENDING, "c.test": NameState.WAITING}
    job.on_event(IssueEvent("failed", "first", detail="first: the CA could not verify b.test by http-01: 404"))
    assert job.names["b.test"] is NameState.INVALID and job.names["a.test"] is NameState.STOPPED
    job.on_event(IssueEvent("order", "second", detail="3 names"))  # the next issuer starts afresh
    assert set(job.names.values()) == {NameState.WAITING}
    for name in names:
        job.on_event(IssueEvent("answer", "second", name))
        job.on_event(IssueEvent("valid", "second", name))
    job.settle(())
    assert set(job.names.values()) == {NameState.VALID} and job.to_dict()["issuer"] == "second"


@pytest.mark.usefixtures("acme_env")
def test_the_same_through_the_json_api(
    env: ConsoleEnv, pebble: PebbleServer, node: WebrootNginx, tmp_path: Path
) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    body = {"name": "main", "names": list(NAMES), "targets": [f"pem:{tmp_path / 'main'}"], "lineages": ["web"],
            "webroot": str(node.webroot)}  # fmt: skip
    assert admin.post("/api/v1/nodes", json=body).status_code == 201
    root = [("files", ("root.pem", pebble.root_pem()))]
    assert admin.post("/api/v1/trust-anchors", files=root).status_code == 201
    issuer = {"name": "pebble", "directory": pebble.directory, "ca_bundle": pebble.ca_bundle.read_text()}
    refused = admin.post("/api/v1/issuers", json=issuer)
    assert refused.status_code == 400 and refused.json()["hint"].endswith("then send agree_tos")
    added = admin.post("/api/v1/issuers", json={**issuer, "agree_tos": True})
    assert added.status_code == 201 and added.json()["status"] == "valid", added.text
    assert [i["name"] for i in admin.get("/api/v1/issuers").json()] == ["pebble"]

    policy = admin.put("/api/v1/lineages/web/acme", json={"issuers": ["pebble"], "solvers": ["*=http-01:main"]})
    assert policy.status_code == 200 and policy.json()["solvers"] == ["*=http-01:main"], policy.text
    shown = admin.get("/api/v1/lineages/web/acme").json()
    assert {n["name"]: n["where"] for n in shown["names"]} == dict.fromkeys(NAMES, f"http-01 on main ({node.webroot})")

    job = admin.post("/api/v1/lineages/web/issue", json={"dry_run": True})
    assert job.status_code == 202 and job.json()["kind"] == "preflight"
    done = _wait(admin, job.json()["id"])
    assert done["ok"] and done["preflight"]["ok"]
    job = admin.post("/api/v1/lineages/web/issue", json={})
    done = _wait(admin, job.json()["id"])
    assert done["ok"] and done["version"] == 1 and done["result"]["issuer"] == "pebble", done

    revoked = admin.post("/api/v1/lineages/web/revoke", json={"version": 1, "reason": "superseded"})
    assert revoked.status_code == 200 and revoked.json()["told_ca"] is True, revoked.text
    assert admin.get("/api/v1/lineages/web/acme").json()["versions"][0]["revoked"] == "superseded"
    assert admin.post("/api/v1/issuers/pebble/deactivate", json={"confirm": False}).status_code == 400
    assert admin.post("/api/v1/issuers/pebble/rollover").json()["key_changed_at"] is not None


def test_who_may_do_what(env: ConsoleEnv, tmp_path: Path) -> None:
    env.store.add_node(make_node("main", NAMES, [f"pem:{tmp_path / 'main'}"]), lineage="web")
    viewer = bearer(env, account_token(env, "watcher", "viewer"))
    operator = bearer(env, account_token(env, "ops", "operator"))
    admin_csrf = logged_in(env)

    listed = viewer.get("/issuers")
    assert listed.status_code == 200 and 'id="issuer-form"' not in listed.text
    assert viewer.post("/issuers", data={"name": "x", "directory": "https://ca.test/dir"}).status_code == 403
    assert viewer.post("/lineages/web/issue", data={"action": "issue"}).status_code == 403
    assert viewer.post("/lineages/web/issue", data={"action": "preflight"}).status_code == 403
    assert viewer.post("/lineages/web/acme", data={"issuer": ""}).status_code == 403
    assert 'id="issue-now"' not in viewer.get("/lineages/web/acme").text
    assert operator.post("/issuers", data={"name": "x", "directory": "https://ca.test/dir"}).status_code == 403
    assert operator.get("/lineages/web/versions/1/revoke").status_code == 403

    # a hook command runs on the console's machine: an operator may not set one, an admin may
    hook = [
        ("solver_name", "acme.test"), ("solver_choice", "dns-01:hook"), ("solver_spec", "/usr/local/bin/dns-hook"),
        ("solver_name", "www.acme.test"), ("solver_choice", ""), ("solver_spec", ""),
    ]  # fmt: skip
    refused = operator.post("/lineages/web/acme", data=_form(hook))
    assert refused.status_code == 403 and "only an administrator sets a hook command" in refused.text
    assert env.store.policy("web").solvers == ()
    rfc = [("solver_name", "acme.test"), ("solver_choice", "dns-01:rfc2136"), ("solver_spec", "/etc/tsig.ini")]
    assert operator.post("/lineages/web/acme", data=_form(rfc)).status_code == 303
    assert [str(r) for r in env.store.policy("web").solvers] == ["acme.test=dns-01:rfc2136:/etc/tsig.ini"]
    ok = env.client.post("/lineages/web/acme", data=_form([("csrf_token", admin_csrf), *hook]))
    assert ok.status_code == 303
    assert [str(r) for r in env.store.policy("web").solvers] == ["acme.test=dns-01:hook:/usr/local/bin/dns-hook"]
    # the operator saves the form again, the admin's hook unchanged: allowed
    page = operator.get("/lineages/web/acme").text
    assert 'value="/usr/local/bin/dns-hook"' in page
    assert operator.post("/lineages/web/acme", data=_form([*hook, ("profile", "shortlived")])).status_code == 303
    assert env.store.policy("web").profile == "shortlived"
    # no CSRF token from a session: refused before anything
    assert env.client.post("/lineages/web/acme", data=_form(hook)).status_code == 403
    assert csrf_of(env.client.get("/issuers").text)
