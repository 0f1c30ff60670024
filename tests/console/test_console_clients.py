"""Client deployment: profiles, users, one-time links with their QR code, the fetch, and the
dashboard's warning when the deployment host would fail a strict client."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from certfleet.console.settings import ConsoleSettings
from certfleet.testing import TestCA, TestLeaf
from support.console import ConsoleEnv, logged_in, make_env
from support.servers import NginxServer, free_port

TEMPLATE = '{"server": "${host}", "port": ${port}, "user": "${username}", "name": "${display_name}"}'


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home", settings=ConsoleSettings(probe_timeout=3.0))


def _profile_and_user(env: ConsoleEnv, csrf: str, hostname: str = "") -> int:
    # the pages probe the host; a closed loopback port keeps every test's traffic on this machine
    hostname = hostname or f"localhost:{free_port()}"
    r = env.client.post(
        "/clients/profiles",
        data={
            "csrf_token": csrf,
            "name": "mobile",
            "hostname": hostname,
            "content_type": "application/json",
            "link_hours": "48",
            "template": TEMPLATE,
        },
    )
    assert r.status_code == 303, r.text
    r = env.client.post(
        "/clients/users",
        data={"csrf_token": csrf, "profile": "mobile", "username": "alice", "display_name": 'Alice "Al" Smith'},
    )
    assert r.status_code == 303, r.text
    return int(env.client.get("/api/v1/client-users").json()[0]["id"])


def _new_link(env: ConsoleEnv, csrf: str, user_id: int) -> tuple[str, str]:
    made = env.client.post(f"/clients/users/{user_id}/link", data={"csrf_token": csrf})
    assert made.status_code == 303  # post/redirect/get: a reload makes no second link
    assert "/client/" not in made.headers["location"]  # the link's token is never in a URL of ours
    page = env.client.get(made.headers["location"])
    url = re.search(r'<pre id="link-url">(https://[^<]+)</pre>', page.text)
    assert url, page.text
    # shown once: the same page again holds no link, and the link still works
    assert "link-url" not in env.client.get(made.headers["location"]).text
    return url.group(1), page.text


def _fetch(token: str, env: ConsoleEnv) -> Any:
    return env.new_client().post(f"/client/{token}")


def test_link_fetches_the_configuration_once(env: ConsoleEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="certfleet.console.access")
    csrf = logged_in(env)
    user_id = _profile_and_user(env, csrf)
    url, page = _new_link(env, csrf, user_id)
    host = env.console.clients.profiles()[0].hostname
    assert url.startswith(f"https://{host}/client/")
    assert '<svg width="' in page and 'class="segno"' in page  # the QR code, inline
    token = url.rsplit("/", 1)[1]
    assert len(token) >= 43  # 256 bits, URL-safe base64

    phone = env.new_client()  # no account, no cookie: the link is the only key
    opened = phone.get(f"/client/{token}")  # what a mail preview or a link scanner does
    assert opened.status_code == 200 and "Get my settings" in opened.text
    assert "Alice" in opened.text and "{" not in opened.text.split("<main>")[1]  # a page, not the settings
    first = phone.post(f"/client/{token}")
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    assert first.headers["content-type"].startswith("application/json")
    config = json.loads(first.text)  # values escaped for JSON: the quotes in the name stay valid
    port = int(host.rsplit(":", 1)[1])
    assert config == {"server": "localhost", "port": port, "user": "alice", "name": 'Alice "Al" Smith'}

    second = phone.post(f"/client/{token}")
    assert second.status_code == 410
    assert second.headers["cache-control"] == "no-store"
    assert "used, expired or unknown" in second.text
    assert phone.get(f"/client/{token}").status_code == 410
    assert "used, expired or unknown" in phone.get(f"/client/{token}").text
    assert phone.post("/client/" + "A" * 43).status_code == 410
    assert phone.get("/client/" + "A" * 43).status_code == 410

    # the token is nowhere: not in the database, not in the access log
    data = b"".join(
        (env.home / n).read_bytes() for n in ("certfleet.db", "certfleet.db-wal") if (env.home / n).exists()
    )
    assert token.encode() not in data
    access = [r.getMessage() for r in caplog.records if r.name == "certfleet.console.access"]
    assert any("/client/…" in line for line in access)
    assert not any(token in line for line in access)
    audit = {e.action for e in env.store.audit_log()}
    assert {"client.profile-save", "client.user-add", "client.link-create", "client.fetch"} <= audit
    assert env.client.get("/api/v1/client-users").json()[0]["last_used_at"] is not None


def test_link_expires(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    user_id = _profile_and_user(env, csrf)
    url, _ = _new_link(env, csrf, user_id)
    env.clock.advance(hours=48, seconds=1)
    assert _fetch(url.rsplit("/", 1)[1], env).status_code == 410


def test_a_new_link_cancels_the_unused_one(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    user_id = _profile_and_user(env, csrf)
    old, _ = _new_link(env, csrf, user_id)
    new, _ = _new_link(env, csrf, user_id)
    assert _fetch(old.rsplit("/", 1)[1], env).status_code == 410
    assert _fetch(new.rsplit("/", 1)[1], env).status_code == 200


def test_links_through_the_api_with_qr(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    h = {"x-csrf-token": csrf}
    r = env.client.put(
        "/api/v1/client-profiles",
        json={"name": "mobile", "hostname": "mbg.example.test", "template": "user=${username}\n",
              "content_type": "text/plain"},
        headers=h,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    user = env.client.post("/api/v1/client-users", json={"profile": "mobile", "username": "bob"}, headers=h).json()
    link = env.client.post(f"/api/v1/client-users/{user['id']}/links", headers=h).json()
    assert link["url"].startswith("https://mbg.example.test/client/")
    assert link["qr_svg"].startswith("<svg")
    assert dt.datetime.fromisoformat(link["expires_at"]) > env.clock.now
    fetched = _fetch(link["url"].rsplit("/", 1)[1], env)
    assert fetched.text == "user=bob\n"
    assert fetched.headers["cache-control"] == "no-store"
    # removing the profile removes its users and cancels their links
    other = env.client.post(f"/api/v1/client-users/{user['id']}/links", headers=h).json()
    assert env.client.delete("/api/v1/client-profiles/mobile", headers=h).status_code == 200
    assert env.client.get("/api/v1/client-users").json() == []
    assert _fetch(other["url"].rsplit("/", 1)[1], env).status_code == 410
    assert env.client.delete("/api/v1/client-profiles/mobile", headers=h).status_code == 404


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("template", "${password}", "unknown placeholder ${password}"),
        ("hostname", "mbg example", "not a host[:port]"),
        ("hostname", "mbg.example.test:70000", "port out of range"),
        ("content_type", "text/html", "content type must be one of"),
    ],
)
def test_bad_profiles_are_refused(env: ConsoleEnv, field: str, value: str, message: str) -> None:
    csrf = logged_in(env)
    data = {"csrf_token": csrf, "name": "mobile", "hostname": "mbg.example.test", "content_type": "application/json",
            "link_hours": "72", "template": TEMPLATE, field: value}  # fmt: skip
    r = env.client.post("/clients/profiles", data=data)
    assert r.status_code == 400
    assert message in r.text
    assert env.console.clients.profiles() == []


def test_link_tokens_stored_only_as_hashes(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    user_id = _profile_and_user(env, csrf)
    url, _ = _new_link(env, csrf, user_id)
    with sqlite3.connect(env.home / "certfleet.db") as db:
        rows = db.execute("select token_hash from console_client_links").fetchall()
    assert len(rows) == 1 and len(rows[0][0]) == 64
    assert url.rsplit("/", 1)[1] not in rows[0][0]


# -- the warning: what a phone would make of the certificate served for the deployment host ---------


@pytest.fixture(scope="module")
def pki() -> TestCA:
    return TestCA.root("clients Test Root").intermediate("clients Test Intermediate")


def _serve_files(folder: Path, leaf: TestLeaf, *, with_chain: bool) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    cert = folder / "cert.pem"
    cert.write_bytes(leaf.fullchain_pem() if with_chain else leaf.cert_pem())
    key = folder / "key.pem"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, leaf.key_pem())
    os.close(fd)
    return cert, key


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("complete", None),
        ("no-intermediate", "incomplete-chain"),
        ("expired", "expired"),
        ("other-name", "name-mismatch"),
    ],
)
@pytest.mark.peer
def test_dashboard_warns_when_a_phone_would_reject_the_deployment_host(
    env: ConsoleEnv, pki: TestCA, tmp_path: Path, case: str, code: str | None
) -> None:
    env.store.add_trust_anchor(pki.root_cert)
    leaf = {
        "complete": lambda: pki.leaf("localhost"),
        "no-intermediate": lambda: pki.leaf("localhost"),
        "expired": lambda: pki.leaf("localhost", days=10, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=20)),
        "other-name": lambda: pki.leaf("mbg.example.test"),
    }[case]()
    cert, key = _serve_files(tmp_path / "tls", leaf, with_chain=case != "no-intermediate")
    with NginxServer(tmp_path / "nginx", cert=cert, key=key) as web:
        csrf = logged_in(env)
        _profile_and_user(env, csrf, hostname=f"localhost:{web.port}")
        page = env.client.get("/?refresh=1").text
        warnings = env.client.get("/api/v1/client-warnings").json()
    if code is None:
        assert warnings == []
        assert "A phone would reject" not in page
    else:
        assert [w["hostname"] for w in warnings] == [f"localhost:{web.port}"]
        assert code in [p["code"] for p in warnings[0]["problems"]]
        assert f"A phone would reject the certificate served for localhost:{web.port}" in page
        assert "Phones would reject" in env.client.get("/clients").text
