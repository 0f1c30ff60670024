"""The autopilot in the console: the schedule (each lineage's next renewal and why), "renew now"
(the same pass as ``certfleet renew --lineage L --force``, refused while another pass runs), the
alert destinations (shown masked, a test message through Apprise, only admins add or remove
them), the alerts sent, and what ``/metrics`` says of it all."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from certfleet.acme import accounts
from certfleet.acme.accounts import add_manual_issuer
from certfleet.autopilot.lock import pass_lock
from certfleet.console.settings import ConsoleSettings
from certfleet.fleet.lineage import import_package
from certfleet.fleet.nodes import make_node
from certfleet.store import VersionState
from certfleet.testing import TestCA
from support.console import ConsoleEnv, account_token, bearer, csrf_of, key_needles, logged_in, make_env
from support.pebble import MAIN_IP, PebbleServer, WebrootNginx, acme_env, bind, http_port, pebble, snakeoil
from support.receivers import WebhookSink
from support.servers import free_port

__all__ = ["acme_env", "bind", "http_port", "pebble"]  # fixtures

SECRET = "s3cr3t-T0ken-value"
DAY = dt.timedelta(days=1)


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home", settings=ConsoleSettings(probe_timeout=2.0, fetch_aia=False))


@pytest.fixture(scope="module")
def ca() -> TestCA:
    long_ago = dt.datetime.now(dt.UTC) - 1000 * DAY
    return TestCA.root("Autopilot Console Root", not_before=long_ago).intermediate(
        "Autopilot Console CA", not_before=long_ago
    )


def _bought(env: ConsoleEnv, ca: TestCA, lineage: str, *, days: int, age: float) -> dt.datetime:
    """``lineage`` issued by hand (the manual issuer "shop"), its certificate ``age`` days old of
    ``days``: imported and active. Its not_after."""
    store = env.store
    store.add_trust_anchor(ca.root_cert)
    if "shop" not in {i.name for i in store.issuers()}:
        add_manual_issuer(store, "shop")
    store.put_lineage(lineage, names=[f"{lineage}.example.test"])  # what its next CSR asks for
    store.set_policy(lineage, issuers=["shop"])
    leaf = ca.leaf(f"{lineage}.example.test", days=days, not_before=env.clock() - age * DAY)
    package = leaf.cert_pem() + leaf.key_pem() + leaf.chain_pem()
    result = import_package(store, lineage, [("bought.pem", package)], now=env.clock())
    assert result.version is not None, result
    return leaf.cert.not_valid_after_utc


def _rows(html: str) -> dict[str, dict[str, str]]:
    """The schedule table: each lineage's reason, whether it is due, and its cells as text."""
    out = {}
    for found in re.finditer(
        r'<tr data-lineage="([^"]+)" data-reason="([^"]+)" data-due="(yes|no)">(.*?)</tr>', html, re.S
    ):
        cells = [
            re.sub(r"<[^>]+>|\s+", " ", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", found.group(4), re.S)
        ]
        out[found.group(1)] = {"reason": found.group(2), "due": found.group(3), "next": cells[1], "why": cells[2]}
    return out


def _wait(client: TestClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/renewals/{job_id}").json()
        if job["state"] != "running":
            return job
        assert time.monotonic() < deadline, f"the renewal did not end: {job}"
        time.sleep(0.05)


def _job_id(location: str) -> str:
    found = re.fullmatch(r"/schedule/runs/([\w-]+)", location)
    assert found, location
    return found.group(1)


# -- the schedule -------------------------------------------------------------------------------------


def test_the_schedule_shows_each_lineages_next_renewal_and_why(env: ConsoleEnv, ca: TestCA) -> None:
    soon_end = _bought(env, ca, "soon", days=90, age=80)  # 10 days left: the reminder is due
    later_end = _bought(env, ca, "later", days=360, age=10)
    env.store.put_lineage("bare")  # no issuer: certfleet cannot renew it
    viewer = bearer(env, account_token(env, "watcher", "viewer"))

    rows = _rows(viewer.get("/schedule").text)
    assert set(rows) == {"soon", "later", "bare"}
    assert rows["soon"]["reason"] == "manual-reminder" and rows["soon"]["due"] == "yes"
    assert "a reminder 30 days before it expires" in rows["soon"]["why"]
    # a third of 360 days (120, more than 30) before it expires
    later_at = later_end - 120 * DAY
    assert rows["later"]["reason"] == "manual-reminder" and rows["later"]["due"] == "no"
    assert rows["later"]["next"] == f"{later_at:%Y-%m-%d %H:%M} UTC"
    assert "a reminder 120 days before it expires" in rows["later"]["why"]
    assert rows["bare"]["reason"] == "no-issuer" and rows["bare"]["next"] == "never"
    assert "renew-soon" not in viewer.get("/schedule").text  # a viewer gets no "renew now" button

    listed = {e["lineage"]: e for e in viewer.get("/api/v1/schedule").json()}
    assert listed["later"]["next_renewal_at"] == later_at.isoformat()
    assert listed["soon"]["due"] is True and listed["soon"]["plan"]["not_after"] == soon_end.isoformat()

    env.clock.advance(days=250)  # the console's clock: "later" is due now, past its reminder
    viewer = bearer(env, account_token(env, "watcher", "viewer", days=1))  # the first token expired meanwhile
    rows = _rows(viewer.get("/schedule").text)
    assert rows["later"]["due"] == "yes"

    # an account kept to one lineage sees only it
    kept = bearer(env, account_token(env, "soonops", "viewer", lineages=["soon"]))
    assert set(_rows(kept.get("/schedule").text)) == {"soon"}
    assert [e["lineage"] for e in kept.get("/api/v1/schedule").json()] == ["soon"]


# -- renew now ------------------------------------------------------------------------------------------


def test_renew_now_on_a_manual_lineage_makes_the_csr_once(env: ConsoleEnv, ca: TestCA) -> None:
    _bought(env, ca, "soon", days=365, age=10)  # not due: "renew now" forces it
    admin_csrf = logged_in(env)
    operator = bearer(env, account_token(env, "ops", "operator"))
    viewer = bearer(env, account_token(env, "watcher", "viewer"))
    assert viewer.post("/schedule/soon/renew").status_code == 403
    assert 'id="renew-soon"' in env.client.get("/schedule").text

    started = env.client.post("/schedule/soon/renew", data={"csrf_token": admin_csrf})
    assert started.status_code == 303, started.text
    job_id = _job_id(started.headers["location"])
    job = _wait(env.client, job_id)
    assert job["ok"] is True and job["run"]["action"] == "requested" and job["run"]["version"] == 2, job
    assert job["run"]["plan"]["reason"] == "forced"
    page = env.client.get(started.headers["location"]).text
    assert 'data-action="requested"' in page and 'href="/csr/soon/2"' in page
    assert "a new key and CSR wait as version 2" in page
    assert env.store.version("soon", 2).state is VersionState.PENDING
    (entry,) = env.store.audit_log(action="renew")
    assert entry.actor == "console:admin" and entry.detail["action"] == "requested"

    # the same again (through the API, as an operator): the CSR waits, no second key
    again = operator.post("/api/v1/lineages/soon/renew")
    assert again.status_code == 202, again.text
    second = _wait(operator, again.json()["id"])
    assert second["run"]["action"] == "waiting" and second["run"]["version"] == 2
    assert [v.number for v in env.store.versions("soon")] == [1, 2]
    runs = env.client.get("/schedule").text
    assert f'href="/schedule/runs/{job_id}"' in runs and "by console:ops (token ops-operator)" in runs
    # the new key stayed in the store: in no page and no answer
    ((_, key),) = env.store.pending_keys("soon")
    for needle in key_needles(key):
        assert all(needle not in body for body in env.responses), needle[:20]


def test_renew_now_while_a_pass_runs_says_so(env: ConsoleEnv, ca: TestCA) -> None:
    _bought(env, ca, "soon", days=365, age=10)
    csrf = logged_in(env)
    with pass_lock(env.store):  # a pass of a timer's `certfleet renew`, as far as the console can tell
        refused = env.client.post("/schedule/soon/renew", data={"csrf_token": csrf})
        assert refused.status_code == 409
        assert "an autopilot pass is running already (pid " in refused.text
        assert 'data-lineage="soon"' in refused.text  # the schedule, with why above it
        api = bearer(env, account_token(env, "ops", "operator")).post("/api/v1/lineages/soon/renew")
        assert api.status_code == 409 and api.json()["error"].startswith("an autopilot pass is running already")
    assert env.store.audit_log(action="renew") == []
    assert [v.number for v in env.store.versions("soon")] == [1]
    started = env.client.post("/schedule/soon/renew", data={"csrf_token": csrf})  # free again
    assert started.status_code == 303
    assert _wait(env.client, _job_id(started.headers["location"]))["run"]["action"] == "requested"
    # an unknown lineage is refused, and one the account may not see does not exist for it
    unknown = env.client.post("/schedule/nope/renew", data={"csrf_token": csrf})
    assert unknown.status_code == 400 and "no lineage named &#39;nope&#39;" in unknown.text
    kept = bearer(env, account_token(env, "other", "operator", lineages=["elsewhere"]))
    assert kept.post("/schedule/soon/renew").status_code == 404


# -- alerts ---------------------------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


@pytest.mark.peer  # a webhook receiver
def test_alert_destinations_added_tested_and_removed(env: ConsoleEnv, ca: TestCA, webhook: WebhookSink) -> None:
    csrf = logged_in(env)
    operator = bearer(env, account_token(env, "ops", "operator"))
    viewer = bearer(env, account_token(env, "watcher", "viewer"))
    port = webhook.url.rsplit(":", 1)[1].split("/", 1)[0]
    secret_url = f"json://hook:{SECRET}@127.0.0.1:{port}/certfleet"

    # only an admin adds one; the URL (with its password) never comes back
    assert operator.post("/alerts", data={"url": webhook.url}).status_code == 403
    assert viewer.post("/api/v1/alerts", json={"url": webhook.url}).status_code == 403
    added = env.client.post("/alerts", data={"csrf_token": csrf, "url": secret_url})
    assert added.status_code == 303, added.text
    page = env.client.get(added.headers["location"]).text
    assert "Alert destination 1 added." in page
    assert 'data-destination="1"' in page and f"127.0.0.1:{port}/certfleet" in page
    hook = env.client.post(
        "/alerts", data={"csrf_token": csrf, "url": webhook.url, "events": ["renewal-failed", "manual-waiting"]}
    )
    assert hook.status_code == 303
    closed = operator.get("/api/v1/alerts").json()  # what an operator reads: masked
    assert [d["id"] for d in closed["destinations"]] == [1, 2]
    assert closed["destinations"][1]["events"] == ["renewal-failed", "manual-waiting"]
    refused = env.client.post("/alerts", data={"csrf_token": csrf, "url": f"nope://user:{SECRET}@h.example/x"})
    assert refused.status_code == 400

    # the test button: through Apprise to the receiver, and the page says where it got
    assert viewer.post("/alerts/1/test").status_code == 403
    tested = operator.post("/alerts/1/test")
    assert tested.status_code == 303 and tested.headers["location"].startswith("/alerts?tested=")
    assert webhook.titles() == ["certfleet: a test alert"]
    result = operator.get(tested.headers["location"]).text
    assert 'id="test-result" data-ok="yes"' in result and "Test message delivered" in result
    assert 'data-kind="test"' in result  # and it is among the alerts sent
    assert "Test message" not in env.client.get(tested.headers["location"]).text  # another account's result

    # a destination nobody answers at: the test says it failed, and why
    env.console.autopilot.add(_actor(env), f"json://127.0.0.1:{free_port()}/gone")
    failed = env.client.post("/api/v1/alerts/3/test", headers={"x-csrf-token": csrf}).json()
    assert failed["ok"] is False and failed["deliveries"][0]["error"]

    # a pass that finds a certificate to buy tells the destinations that want it
    _bought(env, ca, "soon", days=90, age=80)
    job = operator.post("/api/v1/lineages/soon/renew").json()
    assert _wait(operator, job["id"])["run"]["action"] == "requested"
    assert "certfleet: lineage soon waits for a certificate to be bought" in webhook.titles()
    sent = viewer.get("/alerts").text
    assert 'data-event="manual-waiting" data-kind="alert"' in sent
    assert "lineage soon waits for a certificate to be bought" in sent
    opened = {a["key"] for a in viewer.get("/api/v1/alerts").json()["open"]}
    assert opened == {"manual-waiting:soon", "expiring:soon"}  # 10 days left of 90: past five sixths
    assert 'id="add-alert"' not in sent and 'href="/alerts/1/remove"' not in sent  # a viewer's page

    # when alerts are sent again, and the expiry stages: an admin's, as `certfleet alert config`
    settings = {"repeat_hours": "6", "expiry_days": "14, 3"}
    assert operator.post("/alerts/settings", data=settings).status_code == 403
    saved = env.client.post("/alerts/settings", data={"csrf_token": csrf, **settings})
    assert saved.status_code == 303
    page = env.client.get(saved.headers["location"]).text
    assert "Alert settings saved." in page and "sent again every 6 h" in page and "at 14, 3 days left" in page
    bad = env.client.post("/alerts/settings", data={"csrf_token": csrf, "repeat_hours": "soon"})
    assert bad.status_code == 400 and "give the repeat interval in hours" in bad.text
    back = env.client.put("/api/v1/alerts/settings", json={"expiry_days": []}, headers={"x-csrf-token": csrf})
    assert back.json() == {"repeat_hours": 6.0, "expiry": "two thirds and five sixths of the lifetime"}

    # removing asks first, and only an admin may
    assert operator.post("/alerts/1/remove", data={"confirm": "yes"}).status_code == 403
    assert env.client.post("/alerts/1/remove", data={"csrf_token": csrf}).headers["location"] == "/alerts/1/remove"
    assert "Stop sending alerts to destination 1?" in env.client.get("/alerts/1/remove").text
    gone = env.client.post("/alerts/1/remove", data={"csrf_token": csrf, "confirm": "yes"})
    assert gone.status_code == 303 and "Alert destination 1 removed." in env.client.get(gone.headers["location"]).text
    assert env.client.delete("/api/v1/alerts/2", headers={"x-csrf-token": csrf}).json()["id"] == 2
    assert [d["id"] for d in operator.get("/api/v1/alerts").json()["destinations"]] == [3]

    # the password in the URL is in no page, no answer, no audit entry, and not in clear in the store
    assert all(SECRET.encode() not in body for body in env.responses)
    assert SECRET not in str([e.detail for e in env.store.audit_log(limit=500)])
    assert SECRET.encode() not in (env.home / "certfleet.db").read_bytes()


def _actor(env: ConsoleEnv) -> Any:
    from certfleet.console.roles import Role
    from certfleet.console.services.audit import Actor, AuthMethod

    return Actor(1, "admin", AuthMethod.SESSION, role=Role.ADMIN)


# -- metrics --------------------------------------------------------------------------------------------


def test_metrics_say_each_lineages_next_renewal_last_outcome_and_the_alerts_sent(env: ConsoleEnv, ca: TestCA) -> None:
    _bought(env, ca, "soon", days=90, age=80)
    _bought(env, ca, "later", days=360, age=10)
    operator = bearer(env, account_token(env, "ops", "operator"))
    for lineage in ("soon", "later"):
        job = operator.post(f"/api/v1/lineages/{lineage}/renew").json()
        assert _wait(operator, job["id"])["run"]["action"] == "requested"
    env.clock.advance(minutes=5)
    metrics = bearer(env, account_token(env, "admin", "admin", token_role="metrics")).get("/metrics").text
    samples = dict(re.findall(r"^(certfleet_(?:lineage_(?:next|last)_renewal|alerts_sent)\S*) (\S+)$", metrics, re.M))
    now = env.clock() - dt.timedelta(minutes=5)
    assert float(samples['certfleet_lineage_next_renewal_timestamp_seconds{lineage="soon",reason="forced"}']) == (
        pytest.approx(now.timestamp())
    )
    assert samples['certfleet_lineage_last_renewal_info{lineage="soon",outcome="requested"}'] == "1.0"
    assert samples['certfleet_lineage_last_renewal_success{lineage="later"}'] == "1.0"
    assert float(samples['certfleet_lineage_last_renewal_timestamp_seconds{lineage="later"}']) == pytest.approx(
        now.timestamp()
    )
    # no destination: nothing was delivered, nothing counted yet
    assert not any(k.startswith("certfleet_alerts_sent_total{") for k in samples)

    # an account kept to one lineage reads only its samples
    kept = bearer(env, account_token(env, "soonops", "viewer", lineages=["soon"])).get("/metrics").text
    assert 'lineage="soon"' in kept and 'lineage="later"' not in kept


@pytest.mark.peer  # a webhook receiver
def test_metrics_count_the_alerts_sent_by_event(env: ConsoleEnv, ca: TestCA, webhook: WebhookSink) -> None:
    _bought(env, ca, "soon", days=90, age=80)
    admin = bearer(env, account_token(env, "admin", "admin"))
    assert admin.post("/api/v1/alerts", json={"url": webhook.url}).status_code == 201
    assert admin.post("/api/v1/alerts/1/test").json()["ok"] is True
    job = admin.post("/api/v1/lineages/soon/renew").json()
    assert _wait(admin, job["id"])["ok"] is True
    metrics = admin.get("/metrics").text
    assert 'certfleet_alerts_sent_total{event="test",kind="test"} 1.0' in metrics
    assert 'certfleet_alerts_sent_total{event="manual-waiting",kind="alert"} 1.0' in metrics
    assert 'certfleet_alerts_sent_total{event="expiring",kind="alert"} 1.0' in metrics  # past 5/6 of its life


def test_the_pages_link_each_other(env: ConsoleEnv) -> None:
    csrf_of(env.client.get("/login").text)
    viewer = bearer(env, account_token(env, "watcher", "viewer"))
    home = viewer.get("/").text
    assert 'href="/schedule"' in home and 'href="/alerts"' in home
    assert "No lineage yet." in viewer.get("/schedule").text
    assert "None yet: alerts are not sent anywhere." in viewer.get("/alerts").text
    assert viewer.get("/schedule/runs/nojob").status_code == 404


# -- renew now on an ACME lineage: Pebble, BIND and a real nginx node ------------------------------------


@pytest.mark.peer  # Pebble, BIND and nginx
@pytest.mark.usefixtures("acme_env")
def test_renew_now_on_an_acme_lineage_issues_deploys_and_proves(
    pebble: PebbleServer, http_port: int, tmp_path: Path
) -> None:
    env = make_env(tmp_path / "home", settings=ConsoleSettings(probe_timeout=5.0, fetch_aia=False))
    store = env.store
    store.add_trust_anchor(x509.load_pem_x509_certificate(pebble.root_pem()))
    accounts.add_acme_issuer(store, "pebble", pebble.directory, agree_tos=True, ca_bundle=pebble.ca_bundle.read_text())
    server = WebrootNginx(
        tmp_path / "main", webroot=tmp_path / "main" / "www", http_host=MAIN_IP, http_port=http_port,
        live=tmp_path / "main" / "tls" / "live", placeholder=snakeoil(tmp_path / "snakeoil"),
    )  # fmt: skip
    with server:
        server.point_at_live()
        store.put_node(
            make_node(
                "main", ["acme.test", "www.acme.test"], [f"nginx:{server.workdir / 'tls'}"],
                test_cmd=server.test_cmd, reload_cmd=server.reload_cmd, probe=server.probe,
                options={"webroot": str(server.webroot)},
            )
        )  # fmt: skip
        store.put_lineage("web", nodes=["main"])
        store.set_policy("web", issuers=["pebble"])
        operator = bearer(env, account_token(env, "ops", "operator"))
        rows = _rows(operator.get("/schedule").text)
        assert rows["web"]["reason"] == "no-certificate" and rows["web"]["due"] == "yes"

        # the console's clock stands still in these tests: a moment ahead, the certificate Pebble
        # is about to issue is valid already
        env.clock.now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
        started = operator.post("/schedule/web/renew")
        assert started.status_code == 303, started.text
        job = _wait(operator, _job_id(started.headers["location"]), timeout=240)
        assert job["ok"] is True and job["run"]["action"] == "issued", job["steps"]
        assert [n["outcome"] for n in job["run"]["deploy"]["nodes"]] == ["ok"]
        assert any(step.startswith("order") for step in job["steps"])  # the ACME steps, as they came
        page = operator.get(started.headers["location"]).text
        assert 'data-action="issued"' in page and '<tr data-node="main">' in page
        active = store.lineage("web").active
        assert active is not None and active.fingerprint == _served(server, "acme.test", pebble)

        rows = _rows(operator.get("/schedule").text)  # 90 days from Pebble: a third of them left
        assert rows["web"]["reason"] == "third-left" and rows["web"]["due"] == "no"
        assert _rows(operator.get("/schedule").text)["web"]["next"] != "never"
        listed = {e["lineage"]: e for e in operator.get("/api/v1/schedule").json()}
        assert listed["web"]["last"]["last_outcome"] == "renewed" and listed["web"]["active"] == 1


def _served(server: WebrootNginx, name: str, pebble: PebbleServer) -> str:
    """The fingerprint a strict client (chain and name checked against Pebble's root) is served."""
    import socket
    import ssl

    from certfleet.certinfo import fingerprint

    context = ssl.create_default_context(cadata=pebble.root_pem().decode())
    with (
        socket.create_connection((server.host, server.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(x509.load_der_x509_certificate(der))
