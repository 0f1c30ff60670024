"""Access to the console: the setup link, passwords, sessions, throttling, CSRF, API tokens, and
the refusal of every anonymous request."""

from __future__ import annotations

import html
import re
import sqlite3
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from certfleet.console.deps import SESSION_COOKIE
from support.console import PASSWORD, ConsoleEnv, create_admin, csrf_of, logged_in, login, make_env


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home")


def _db_bytes(env: ConsoleEnv) -> bytes:
    # WAL: committed rows may still be in the -wal file; read both
    data = b""
    for name in ("certfleet.db", "certfleet.db-wal"):
        path = env.home / name
        if path.exists():
            data += path.read_bytes()
    return data


# -- the one-time setup link ---------------------------------------------------------------------------


def test_setup_link_creates_the_admin_once(env: ConsoleEnv) -> None:
    token = env.console.accounts.new_setup_token()
    client = env.new_client()
    page = client.get(f"/setup/{token}")
    assert page.status_code == 200
    form = {"csrf_token": csrf_of(page.text), "username": "admin", "password": PASSWORD, "password2": PASSWORD}
    assert client.post(f"/setup/{token}", data=form).status_code == 303
    # used: neither the page nor a second post work, and no second account appears
    assert client.get(f"/setup/{token}").status_code == 410
    again = client.post(f"/setup/{token}", data={**form, "username": "mallory"})
    assert again.status_code == 410
    assert login(env.new_client(), "mallory").status_code == 401
    assert login(env.new_client()).status_code == 303
    # the password is stored as an argon2 hash only
    db = _db_bytes(env)
    assert b"$argon2id$" in db
    assert PASSWORD.encode() not in db
    assert token.encode() not in db


def test_setup_link_expires(env: ConsoleEnv) -> None:
    token = env.console.accounts.new_setup_token()
    env.clock.advance(hours=1, seconds=1)
    client = env.new_client()
    assert client.get(f"/setup/{token}").status_code == 410
    assert not env.console.accounts.has_accounts()


@pytest.mark.parametrize(
    ("password", "password2", "message"),
    [("short", "short", "too short"), (PASSWORD, PASSWORD + "x", "differ"), ("admin" * 3, "admin" * 3, None)],
)
def test_setup_refuses_weak_or_mismatched_passwords(
    env: ConsoleEnv, password: str, password2: str, message: str | None
) -> None:
    token = env.console.accounts.new_setup_token()
    client = env.new_client()
    page = client.get(f"/setup/{token}")
    r = client.post(
        f"/setup/{token}",
        data={"csrf_token": csrf_of(page.text), "username": "admin", "password": password, "password2": password2},
    )
    if message is None:  # long enough and not the account name: accepted
        assert r.status_code == 303
    else:
        assert r.status_code == 400
        assert message in r.text
        assert not env.console.accounts.has_accounts()


def test_setup_form_needs_its_form_token(env: ConsoleEnv) -> None:
    token = env.console.accounts.new_setup_token()
    client = env.new_client()
    client.get(f"/setup/{token}")
    r = client.post(
        f"/setup/{token}",
        data={"csrf_token": "forged", "username": "admin", "password": PASSWORD, "password2": PASSWORD},
    )
    assert r.status_code == 403
    assert not env.console.accounts.has_accounts()


# -- login, cookies, sessions ---------------------------------------------------------------------------


def test_session_cookie_is_httponly_secure_samesite_strict(env: ConsoleEnv) -> None:
    create_admin(env)
    r = login(env.client)
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "secure", "samesite", "path"} <= attrs
    assert "samesite=strict" in cookie.lower()
    assert "domain" not in attrs
    assert env.client.get("/").status_code == 200


def test_wrong_password_is_refused_and_audited(env: ConsoleEnv) -> None:
    create_admin(env)
    r = login(env.client, password="not the password at all")
    assert r.status_code == 401
    assert "wrong account name or password" in r.text
    assert env.client.get("/").status_code == 303
    actions = [e.action for e in env.store.audit_log()]
    assert "console.login-failed" in actions


def test_login_backoff_per_account_then_release(env: ConsoleEnv) -> None:
    create_admin(env)
    for _ in range(3):
        assert login(env.new_client(), password="wrong password here").status_code == 401
    # locked now: even the right password waits, and the answer says how long
    locked = login(env.new_client())
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert "too many failed logins" in locked.text
    env.clock.advance(seconds=2)
    assert login(env.new_client()).status_code == 303
    # success clears the count: the next failure does not lock at once
    assert login(env.new_client(), password="wrong password here").status_code == 401
    assert login(env.new_client()).status_code == 303


def test_backoff_doubles(env: ConsoleEnv) -> None:
    create_admin(env)
    waits = []
    for _ in range(6):
        env.clock.advance(hours=1)  # let any wait pass, so every attempt is a real try
        r = login(env.new_client(), password="wrong password here")
        assert r.status_code == 401
        probe = login(env.new_client(), password="wrong password here")
        waits.append(int(probe.headers.get("retry-after", "0")) if probe.status_code == 429 else 0)
    # two failures per round: free, free, then 1 s, doubling with every further failure
    assert waits == [0, 1, 2, 4, 8, 16]


def test_one_address_trying_name_after_name_waits_and_no_other_address_does(env: ConsoleEnv) -> None:
    from certfleet.console.services.throttle import ADDRESS_FREE

    create_admin(env)
    attacker = TestClient(env.app, base_url="https://testserver", client=("192.0.2.7", 4000), follow_redirects=False)
    for i in range(ADDRESS_FREE):
        assert login(attacker, f"guess{i}", "guess guess guess").status_code == 401
    assert login(attacker).status_code == 429  # even the right password, from that address
    other = TestClient(env.app, base_url="https://testserver", client=("198.51.100.9", 4000), follow_redirects=False)
    assert login(other).status_code == 303


def test_session_expires_when_idle_and_at_most_after_max(env: ConsoleEnv) -> None:
    logged_in(env)
    env.clock.advance(minutes=29)
    assert env.client.get("/").status_code == 200
    env.clock.advance(minutes=29)  # activity moved the idle expiry forward
    assert env.client.get("/").status_code == 200
    env.clock.advance(minutes=31)
    r = env.client.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    # a busy session still ends after the maximum
    logged_in(env)
    for _ in range(12 * 3):
        env.clock.advance(minutes=20)
        if env.client.get("/").status_code != 200:
            break
    else:
        pytest.fail("a session outlived its maximum age")
    assert env.client.get("/api/v1/me").status_code == 401


def test_logout_ends_the_session(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    cookie = env.client.cookies.get(SESSION_COOKIE)
    assert env.client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    replay = env.new_client()
    replay.cookies.set(SESSION_COOKIE, cookie or "")
    assert replay.get("/api/v1/me").status_code == 401


# -- CSRF -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_form_without_its_csrf_token_is_refused(env: ConsoleEnv, token: str | None) -> None:
    logged_in(env)
    data = {"name": "automation"}
    if token is not None:
        data["csrf_token"] = token
    r = env.client.post("/tokens", data=data)
    assert r.status_code == 403
    assert "security token" in r.text
    assert env.client.get("/api/v1/tokens").json() == []


def test_api_with_cookie_needs_the_csrf_header(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    assert env.client.post("/api/v1/tokens", json={"name": "a"}).status_code == 403
    assert env.client.post("/api/v1/tokens", json={"name": "a"}, headers={"x-csrf-token": "nope"}).status_code == 403
    r = env.client.post("/api/v1/tokens", json={"name": "a"}, headers={"x-csrf-token": csrf})
    assert r.status_code == 201


def test_logout_form_needs_csrf(env: ConsoleEnv) -> None:
    logged_in(env)
    assert env.client.post("/logout", data={}).status_code == 403
    assert env.client.get("/").status_code == 200


# -- API tokens ---------------------------------------------------------------------------------------------


def test_api_token_shown_once_stored_hashed_and_revocable(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    made = env.client.post("/tokens", data={"csrf_token": csrf, "name": "prometheus"})
    assert made.status_code == 303  # post/redirect/get: a reload makes no second token
    assert "cft_" not in made.headers["location"]  # the value is never in a URL
    page = env.client.get(made.headers["location"])
    token = page.text.split('<pre id="new-token">')[1].split("</pre>")[0]
    assert token.startswith("cft_")
    assert token not in env.client.get(made.headers["location"]).text  # shown once
    assert token not in env.client.get("/tokens").text
    assert len(env.client.get("/api/v1/tokens").json()) == 1
    assert token.encode() not in _db_bytes(env)
    assert token not in str(env.client.get("/api/v1/tokens").json())

    bot = env.new_client()
    auth = {"authorization": f"Bearer {token}"}
    me = bot.get("/api/v1/me", headers=auth).json()
    assert {k: me[k] for k in ("username", "method", "token", "role")} == {
        "username": "admin",
        "method": "token",
        "token": "prometheus",
        "role": "admin",
    }
    # a bearer token needs no CSRF token: no browser sends it on its own
    r = bot.put(
        "/api/v1/client-profiles",
        headers=auth,
        json={"name": "mobile", "hostname": "mbg.example.test", "template": "${username}"},
    )
    assert r.status_code == 200, r.text
    assert any(e.actor == "console:admin (token prometheus)" for e in env.store.audit_log())
    assert bot.get("/metrics", headers=auth).status_code == 200

    token_id = env.client.get("/api/v1/tokens").json()[0]["id"]
    # revoking asks first: without the confirmation's answer the form goes to the question
    unconfirmed = env.client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert unconfirmed.headers["location"] == f"/tokens/{token_id}/revoke"
    assert "Revoke the API token prometheus" in env.client.get(f"/tokens/{token_id}/revoke").text
    assert bot.get("/api/v1/me", headers=auth).status_code == 200
    r = env.client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf, "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"].startswith("/tokens?done=token-revoked")
    assert bot.get("/api/v1/me", headers=auth).status_code == 401
    assert bot.get("/api/v1/me", headers={"authorization": "Bearer cft_guessed"}).status_code == 401


# -- nothing for anonymous callers ----------------------------------------------------------------------------

PUBLIC = {"/login", "/setup/{token}", "/client/{token}", "/static"}


def _routes(env: ConsoleEnv) -> list[tuple[str, str]]:
    from certfleet.console.routes import api, metrics, pages, public

    routes = [*public.router.routes, *pages.router.routes, *api.router.routes, *metrics.router.routes, *env.app.routes]
    out = []
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(route, APIRoute) or path is None or path in PUBLIC:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            out.append((method, path))
    return out


def test_every_route_refuses_anonymous_requests(env: ConsoleEnv) -> None:
    create_admin(env)
    routes = _routes(env)
    assert len(routes) > 40  # the pages, the API, /metrics, the OpenAPI description
    anonymous = env.new_client()
    for method, path in routes:
        url = (
            path.replace("{sha256}", "0" * 64)
            .replace("{name}", "web")
            .replace("{token_id}", "1")
            .replace("{user_id}", "1")
            .replace("{number}", "1")
            .replace("{job_id}", "x")
            .replace("{preview_id}", "x")
            .replace("{lineage}", "web")
            .replace("{username}", "ops")
        )
        assert "{" not in url, url
        r = anonymous.request(method, url)
        if path.startswith("/api/") or path == "/metrics":
            assert r.status_code == 401, (method, path, r.status_code)
        else:
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path, r.status_code)
        # and nothing leaks in the refusal
        assert "lineage" not in r.text.lower() or path.startswith("/api/")


def test_unknown_paths_do_not_tell_anonymous_callers_anything(env: ConsoleEnv) -> None:
    anonymous = env.new_client()
    assert anonymous.get("/no/such/page").status_code == 303
    assert anonymous.get("/api/v1/nothing").status_code == 401
    logged_in(env)
    assert env.client.get("/no/such/page").status_code == 404


def test_openapi_description_covers_the_api(env: ConsoleEnv) -> None:
    logged_in(env)
    spec = env.client.get("/api/v1/openapi.json").json()
    paths = set(spec["paths"])
    for expected in ("/api/v1/lineages", "/api/v1/nodes", "/api/v1/tokens", "/api/v1/client-users/{user_id}/links"):
        assert expected in paths
    assert not any(p.startswith(("/login", "/nodes", "/clients")) for p in paths)


def test_security_headers(env: ConsoleEnv) -> None:
    logged_in(env)
    r = env.client.get("/")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"


def test_database_holds_no_session_token_in_clear(env: ConsoleEnv) -> None:
    logged_in(env)
    cookie = env.client.cookies.get(SESSION_COOKIE)
    assert cookie
    assert cookie.encode() not in _db_bytes(env)
    with sqlite3.connect(env.home / "certfleet.db") as db:
        rows = db.execute("select token_hash from console_sessions").fetchall()
    assert rows and all(len(r[0]) == 64 for r in rows)


@pytest.mark.parametrize(
    ("next_path", "lands"),
    [("/nodes", "/nodes"), ("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/")],
)
def test_login_returns_to_the_page_asked_for_and_nowhere_else(env: ConsoleEnv, next_path: str, lands: str) -> None:
    from urllib.parse import quote

    create_admin(env)
    client = env.new_client()
    asked = client.get("/nodes")
    assert asked.headers["location"] == "/login?next=/nodes"
    page = client.get(f"/login?next={quote(next_path)}")
    action = re.search(r'action="([^"]+)"', page.text)
    assert action is not None
    r = client.post(
        html.unescape(action.group(1)),
        data={"csrf_token": csrf_of(page.text), "username": "admin", "password": PASSWORD},
    )
    assert r.status_code == 303
    assert r.headers["location"] == lands
