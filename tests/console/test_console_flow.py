"""The administrator's whole flow through the console's pages and API, with real peers: nodes, CSR,
the CA's answer shown before it is saved, deploy to a real nginx, what each node serves, metrics.
And what must never happen: key material in a response or a log line, an oversized upload read."""

from __future__ import annotations

import io
import logging
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.certinfo import fingerprint
from certfleet.console.settings import ConsoleSettings
from certfleet.testing import TestCA, pem
from support.console import (
    ConsoleEnv,
    add_node,
    confirm_link,
    generate_csr,
    key_needles,
    logged_in,
    make_env,
    upload,
    wait_job,
)
from support.servers import NginxServer


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home", settings=ConsoleSettings(probe_timeout=3.0, fetch_aia=False))


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.root("console Test Root").intermediate("console Test Intermediate")


def _zip(*members: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.peer
def test_csr_import_deploy_to_nginx_and_what_it_serves(
    env: ConsoleEnv, ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)

    # nginx starts on an older certificate of its own, where certfleet's target will point live/
    old = ca.leaf("www.example.test")
    initial = tmp_path / "nginx-certs" / "initial"
    initial.mkdir(parents=True)
    (initial / "fullchain.pem").write_bytes(old.fullchain_pem())
    fd = os.open(initial / "privkey.pem", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, old.key_pem())
    os.close(fd)
    (tmp_path / "nginx-certs" / "live").symlink_to(initial)
    live = tmp_path / "nginx-certs" / "live"
    with NginxServer(tmp_path / "nginx", cert=live / "fullchain.pem", key=live / "privkey.pem") as web:
        r = add_node(
            env, csrf, "main", ["www.example.test", "example.test"], [f"nginx:{tmp_path / 'nginx-certs'}"],
            test_cmd=web.test_cmd, reload_cmd=web.reload_cmd, probe=web.probe, new_lineage="web",
        )  # fmt: skip
        assert r.status_code == 303, r.text
        r = add_node(env, csrf, "gw1", ["gw.example.test"], [f"pem:{tmp_path / 'gw1'}"], lineages="web")
        assert r.status_code == 303, r.text

        # the dashboard already shows what nginx serves: another certificate than any version
        page = env.client.get("/?refresh=1").text
        assert "another certificate" in page

        # the CSR page proposes the names from the nodes, and both ways to list them
        form = env.client.get("/csr?lineage=web").text
        for name in ("www.example.test", "example.test", "gw.example.test"):
            assert f"<code>{name}</code>" in form
        assert "With wildcards" in form and "Every name listed" in form
        csr = generate_csr(env, csrf, "web", ["main", "gw1"], organization="Example Org", country="CA")
        download = env.client.get("/csr/web/1.csr")
        assert download.status_code == 200 and download.content.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
        assert env.store.lineage("web").active is None

        # the CA's zip, shuffled and with the root inside: findings first, nothing saved yet
        cert = ca.sign_csr(csr)
        package = _zip(("root.crt", pem(ca.root_cert)), ("server.crt", pem(cert)), ("inter.crt", pem(ca.cert)))
        preview = upload(env, csrf, "web", [("answer.zip", package)])
        assert preview.status_code == 200, preview.text
        assert "Everything checks out" in preview.text
        assert "complete: reaches" in preview.text
        assert "node gw1" in preview.text and "node main" in preview.text
        assert env.store.lineage("web").active is None
        link = confirm_link(preview.text)
        assert link
        # the confirmation is a form like the others: without its token, nothing is saved
        assert env.client.post(link, data={}).status_code == 403
        done = env.client.post(link, data={"csrf_token": csrf})
        assert done.status_code == 303
        active = env.store.lineage("web").active
        assert active is not None and active.fingerprint == fingerprint(cert)
        assert env.client.post(link, data={"csrf_token": csrf}).status_code == 400  # used up

        # deploy both nodes; the job page follows each node
        r = env.client.post("/deploy", data={"csrf_token": csrf, "lineage": "web", "nodes": ["main", "gw1"]})
        assert r.status_code == 303
        job_id = r.headers["location"].rsplit("/", 1)[1]
        job = wait_job(env, job_id)
        outcomes = {n["node"]: n["outcome"]["outcome"] for n in job["nodes"]}
        assert outcomes == {"main": "ok", "gw1": "ok"}, job
        main = next(n for n in job["nodes"] if n["node"] == "main")
        assert main["steps"] == ["render", "connect", "upload", "switch", "test", "reload", "probe"]
        assert main["outcome"]["served"] == fingerprint(cert)
        assert "done: every node took it" in env.client.get(f"/deploy/jobs/{job_id}").text

        # the dashboard: nginx now serves the active version, and a strict client accepts it
        # (nginx's old worker may still take a connection for a moment after the reload)
        for _ in range(100):
            status = env.client.get("/api/v1/lineages?refresh=true").json()[0]
            by_node = {n["node"]: n for n in status["node_status"]}
            if by_node["main"]["serving"] == "active":
                break
            time.sleep(0.1)
        assert by_node["main"]["serving"] == "active"
        assert by_node["main"]["check"]["ok"] is True
        assert by_node["main"]["last_deployment"]["outcome"] == "ok"
        assert by_node["gw1"]["serving"] == "not-probed"  # no probe endpoint
        assert status["chain_valid"] is True and status["health"] == "good"
        page = env.client.get("/").text
        assert "active version" in page and "days left" in page and '<svg class="timeline"' in page

        # the certificate page draws the chain, leaf to root
        detail = env.client.get(f"/certificates/{fingerprint(cert)}").text
        assert '<svg class="chain"' in detail
        assert "leaf: www.example.test" in detail
        assert "intermediate: console Test Intermediate" in detail
        assert "root: console Test Root" in detail

        # metrics
        metrics = env.client.get("/metrics").text
        assert 'certfleet_node_serves_active{lineage="web",node="main"} 1.0' in metrics
        assert 'certfleet_node_probe_success{lineage="web",node="main"} 1.0' in metrics
        assert 'certfleet_deployments_total{outcome="ok"} 1.0' in metrics
        assert 'certfleet_lineage_cert_expiry_seconds{lineage="web"}' in metrics
        assert 'certfleet_node_cert_expiry_seconds{lineage="web",node="main"}' in metrics

        # history and audit name who did what
        assert "console:admin" in env.client.get("/history").text
        actions = {e.action: e.actor for e in env.store.audit_log(limit=200)}
        for action in ("node.add", "version.request", "version.issue", "version.activate", "deploy"):
            assert actions[action] == "console:admin", action

    # not one response, not one log line carries the key
    key = env.store.material("web").key
    logs = "\n".join(r.getMessage() for r in caplog.records).encode()
    for needle in key_needles(key):
        assert not any(needle in body for body in env.responses), needle[:20]
        assert needle not in logs, needle[:20]
    assert len(env.responses) > 20


def test_import_refused_when_a_node_name_is_missing(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)
    add_node(env, csrf, "main", ["www.example.test"], [f"pem:{tmp_path / 'main'}"], new_lineage="web")
    csr = generate_csr(env, csrf, "web", ["main"])
    add_node(env, csrf, "gw1", ["gw.example.test", "mbg.example.test"], [f"pem:{tmp_path / 'gw'}"], lineages="web")
    cert = ca.sign_csr(csr)  # issued before gw1 joined: it lacks gw1's names
    preview = upload(env, csrf, "web", [("server.crt", pem(cert)), ("chain.crt", pem(ca.cert))])
    assert preview.status_code == 200
    assert "This import would be refused" in preview.text
    assert "names missing for node gw1: gw.example.test, mbg.example.test" in preview.text
    assert confirm_link(preview.text) is None
    assert env.store.lineage("web").active is None
    # the API says the same, as JSON
    api = env.client.post(
        "/api/v1/lineages/web/import",
        files=[("files", ("server.crt", pem(cert))), ("files", ("chain.crt", pem(ca.cert)))],
        data={"confirm": "true"},
        headers={"x-csrf-token": csrf},
    ).json()
    assert api["accepted"] is False and api["saved"] is False
    assert [p["code"] for p in api["problems"]] == ["name-mismatch"]


def test_import_of_a_certificate_for_another_key_says_so(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)
    add_node(env, csrf, "main", ["www.example.test"], [f"pem:{tmp_path / 'main'}"], new_lineage="web")
    generate_csr(env, csrf, "web", ["main"])
    stranger = ca.leaf("www.example.test")
    r = upload(env, csrf, "web", [("server.crt", stranger.cert_pem())])
    assert r.status_code == 400
    assert "issued for another key" in r.text


def test_pfx_with_password_is_read_and_its_key_never_shown(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    from certfleet.export import pkcs12

    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)
    add_node(env, csrf, "main", ["www.example.test"], [f"pem:{tmp_path / 'main'}"], new_lineage="web")
    leaf = ca.leaf("www.example.test")
    pfx = pkcs12(leaf.key, leaf.cert, tuple(leaf.chain), password=b"pfx secret")
    wrong = upload(env, csrf, "web", [("site.pfx", pfx)], password="not it")
    assert wrong.status_code == 400 and "password" in wrong.text.lower()
    r = upload(env, csrf, "web", [("site.pfx", pfx)], password="pfx secret")
    assert "Everything checks out" in r.text
    assert "site.pfx" in r.text
    env.client.post(confirm_link(r.text) or "", data={"csrf_token": csrf})
    assert env.store.lineage("web").active is not None
    for needle in key_needles(leaf.key):
        assert not any(needle in body for body in env.responses)
    assert not any(b"pfx secret" in body for body in env.responses)


def test_failed_step_and_its_output_are_shown(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)
    reload_cmd = "sh -c 'echo nginx: [emerg] cannot load certificate >&2; exit 1'"
    add_node(
        env, csrf, "main", ["www.example.test"], [f"pem:{tmp_path / 'main'}"],
        reload_cmd=reload_cmd, new_lineage="web",
    )  # fmt: skip
    csr = generate_csr(env, csrf, "web", ["main"])
    r = upload(env, csrf, "web", [("s.crt", pem(ca.sign_csr(csr))), ("i.crt", pem(ca.cert))])
    env.client.post(confirm_link(r.text) or "", data={"csrf_token": csrf})
    started = env.client.post("/api/v1/lineages/web/deploy", json={}, headers={"x-csrf-token": csrf})
    assert started.status_code == 202
    job = wait_job(env, started.json()["id"])
    outcome = job["nodes"][0]["outcome"]
    assert outcome["outcome"] in ("failed", "rolled-back")
    assert outcome["step"] == "reload"
    assert "cannot load certificate" in outcome["output"]
    page = env.client.get(f"/deploy/jobs/{job['id']}").text
    assert "cannot load certificate" in page and "step reload" in page
    history = env.client.get("/history").text
    assert "failed at reload" in history
    metrics = env.client.get("/metrics").text
    assert 'certfleet_deployments_total{outcome="failed"} 1.0' in metrics


@pytest.mark.parametrize("path", ["/import", "/api/v1/lineages/web/import"])
def test_uploads_over_the_limit_are_refused_with_a_clear_message(env: ConsoleEnv, path: str) -> None:
    csrf = logged_in(env)
    big = b"0" * (10 * 1024 * 1024 + 1)
    r = env.client.post(
        path,
        data={"csrf_token": csrf, "lineage": "web"},
        files=[("files", ("huge.pem", big))],
        headers={"x-csrf-token": csrf},
    )
    assert r.status_code == 413
    assert "the upload is too large: the limit is 10 MiB" in r.text


def test_chunked_upload_over_the_limit_is_cut_off(env: ConsoleEnv) -> None:
    csrf = logged_in(env)

    def body() -> Iterator[bytes]:
        chunk = b"x" * (1024 * 1024)
        for _ in range(12):
            yield chunk

    r = env.client.post(
        "/api/v1/lineages/web/import",
        content=body(),
        headers={"x-csrf-token": csrf, "content-type": "multipart/form-data; boundary=zzz"},
    )
    assert r.status_code == 413
    assert "the limit is 10 MiB" in r.json()["error"]


def test_nodes_through_the_api(env: ConsoleEnv, tmp_path: Path) -> None:
    from certfleet.console.roles import Role
    from certfleet.console.services.audit import Actor, AuthMethod

    logged_in(env)
    token, _ = env.console.tokens.create(Actor(1, "admin", AuthMethod.SESSION, role=Role.ADMIN), "ci")
    bot = env.new_client()
    bot.headers["authorization"] = f"Bearer {token}"
    body = {"name": "gw1", "names": ["GW.Example.Test"], "targets": [f"haproxy:{tmp_path}/gw"], "lineages": ["web"]}
    r = bot.post("/api/v1/nodes", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["names"] == ["gw.example.test"] and r.json()["lineages"] == ["web"]
    assert bot.post("/api/v1/nodes", json=body).status_code == 400  # exists
    bad = bot.post("/api/v1/nodes", json={**body, "name": "gw2", "targets": ["ftp:/x"]})
    assert bad.status_code == 400 and "unknown target kind" in bad.json()["error"]
    r = bot.put("/api/v1/nodes/gw1", json={**body, "probe": "127.0.0.1:9", "lineages": []})
    assert r.status_code == 200 and r.json()["probe"] == "127.0.0.1:9" and r.json()["lineages"] == []
    assert [n["name"] for n in bot.get("/api/v1/nodes").json()] == ["gw1"]
    assert bot.delete("/api/v1/nodes/gw1").status_code == 200
    assert bot.get("/api/v1/nodes").json() == []
    assert env.store.audit_log(limit=1)[0].actor == "console:admin (token ci)"


def test_node_pages_add_edit_remove(env: ConsoleEnv, tmp_path: Path) -> None:
    csrf = logged_in(env)
    r = add_node(env, csrf, "main", ["www.example.test"], [f"nginx:{tmp_path}/n"], new_lineage="web")
    assert r.status_code == 303
    form = env.client.get("/nodes/main/edit").text
    assert "readonly" in form and f"nginx:{tmp_path}/n" in form
    r = env.client.post(
        "/nodes",
        data={
            "csrf_token": csrf, "original": "main", "name": "main", "names": "www.example.test\nexample.test",
            "targets": f"nginx:{tmp_path}/n", "transport": "local", "lineages": "web",
        },
    )  # fmt: skip
    assert r.status_code == 303
    assert env.store.node("main").names == ("www.example.test", "example.test")
    bad = add_node(env, csrf, "other", ["not a name!"], [f"pem:{tmp_path}/o"])
    assert bad.status_code == 400
    # removing asks first: the form without the confirmation's answer only leads to the question
    asked = env.client.post("/nodes/main/remove", data={"csrf_token": csrf})
    assert asked.status_code == 303 and asked.headers["location"] == "/nodes/main/remove"
    assert len(env.store.nodes()) == 1
    question = env.client.get("/nodes/main/remove").text
    assert "Remove node main (www.example.test, example.test)?" in question and "leaves lineage web" in question
    r = env.client.post("/nodes/main/remove", data={"csrf_token": csrf, "confirm": "yes"})
    assert r.status_code == 303
    assert env.store.nodes() == []
    assert "Node main removed." in env.client.get("/nodes?done=node-removed&name=main").text
