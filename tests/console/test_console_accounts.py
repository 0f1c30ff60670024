"""The Accounts page and ``/api/v1/accounts``: an admin does in the console what ``certfleet account``
does (list, add, remove, reset a password, lift login waits); nobody else reaches them; one's own
account and the last admin stay, each refusal one line; a generated password is shown once, and
no password reaches the audit trail, a log line or a later page."""

from __future__ import annotations

import json
import logging
import re

import pytest
from fastapi.testclient import TestClient

from certfleet.console.services.throttle import PAIR_FREE
from support.console import (
    PASSWORD,
    ConsoleEnv,
    account_token,
    bearer,
    csrf_of,
    logged_in,
    login,
    make_env,
)

OTHER = "a different long passphrase"


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> ConsoleEnv:
    return make_env(tmp_path_factory.mktemp("accounts") / "home")


def _add(env: ConsoleEnv, csrf: str, username: str, role: str = "operator", **fields: str) -> object:
    data = {"csrf_token": csrf, "username": username, "role": role, **fields}
    if "generate" not in fields:
        data.setdefault("password", PASSWORD)
        data.setdefault("password2", data["password"])
    return env.client.post("/accounts", data=data)


def _alert(html: str) -> list[str]:
    return re.findall(r'<div class="alert (?:good|bad)" role="status">(.*?)</div>', html, re.S)


def _audit(env: ConsoleEnv) -> list[tuple[str, str, dict[str, object]]]:
    return [(e.actor, e.action, e.detail) for e in env.store.audit_log(limit=500)]


def _generated(html: str) -> str:
    found = re.search(r'<pre id="generated-password">([^<]+)</pre>', html)
    assert found, "no generated password on the page"
    return found.group(1)


def test_an_admin_lists_and_adds_accounts(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    page = env.client.get("/accounts")
    assert page.status_code == 200 and 'href="/accounts"' in page.text  # the nav link, for an admin
    r = _add(env, csrf, "alice", "operator", lineages="web, mail")
    assert r.status_code == 303 and r.headers["location"].startswith("/accounts?done=account-added")
    page = env.client.get(r.headers["location"])
    assert _alert(page.text) == ["Account alice added."]
    row = re.search(r'<tr data-account="alice">.*?</tr>', page.text, re.S)
    assert row and "operator" in row.group(0) and "mail, web" in row.group(0) and "never" in row.group(0)
    assert "open" in row.group(0) and "locked out" not in row.group(0)
    admin_row = re.search(r'<tr data-account="admin">.*?</tr>', page.text, re.S)
    assert admin_row and "(you)" in admin_row.group(0) and "every lineage" in admin_row.group(0)
    assert "never" not in admin_row.group(0)  # the admin's last login is known
    alice = env.new_client()
    assert login(alice, "alice", PASSWORD).status_code == 303
    assert 'href="/accounts"' not in alice.get("/").text  # no link for an operator
    info = env.console.accounts.account("alice")
    assert info.role.value == "operator" and info.lineages == frozenset({"web", "mail"})
    assert info.last_login_at is not None


def test_a_refused_add_is_one_line_and_keeps_no_password(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    r = _add(env, csrf, "bob", password="typed-one-password", password2="typed-two-password")
    assert r.status_code == 400 and _alert(r.text) == [
        "the two passwords differ — type the same password in both fields"
    ]
    assert 'value="bob"' in r.text and "typed-one-password" not in r.text and "typed-two-password" not in r.text
    r = _add(env, csrf, "bob", password="short", password2="short")
    assert r.status_code == 400 and len(_alert(r.text)) == 1 and "too short" in r.text
    r = _add(env, csrf, "bob", role="owner")
    assert r.status_code == 400 and "unknown role" in r.text
    assert _add(env, csrf, "bob").status_code == 303
    r = _add(env, csrf, "bob")
    assert r.status_code == 400 and _alert(r.text) == [
        "account bob exists — Reset password on the Accounts page changes it"
    ]
    assert "`certfleet" not in r.text


def test_a_generated_password_is_shown_once_and_logs_in(env: ConsoleEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    csrf = logged_in(env)
    r = _add(env, csrf, "carol", "viewer", generate="on")
    assert r.status_code == 303 and "done=" not in r.headers["location"]
    assert "new=" in r.headers["location"] and r.headers["location"].endswith("#new-password")
    first = env.client.get(r.headers["location"])
    password = _generated(first.text)
    assert len(password) >= 20 and "Account carol added" in first.text
    again = env.client.get(r.headers["location"])
    assert again.status_code == 200 and password not in again.text  # shown once
    assert password not in r.headers["location"]
    carol = env.new_client()
    assert login(carol, "carol", password).status_code == 303
    assert carol.get("/").status_code == 200
    # later pages, the audit trail (page and store) and the log never show it
    for path in ("/accounts", "/audit", "/api/v1/audit", "/api/v1/accounts"):
        assert password not in env.client.get(path).text, path
    assert password not in json.dumps(_audit(env))
    assert password not in caplog.text
    seen = [b for b in env.responses if password.encode() in b]
    assert len(seen) == 1  # the one page that reveals it


def test_removal_asks_first_and_is_audited(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    _add(env, csrf, "dave")
    token = account_token(env, "dave", "operator")
    path = "/accounts/dave/remove"
    assert env.client.post(path, data={"csrf_token": csrf}).headers["location"] == path
    question = env.client.get(path)
    assert "Remove the account dave (operator)?" in question.text and 'id="confirm-button"' in question.text
    assert "1 live API token(s)" in question.text
    assert env.console.accounts.account("dave")
    r = env.client.post(path, data={"csrf_token": csrf, "confirm": "yes"})
    assert r.status_code == 303 and "done=account-removed" in r.headers["location"]
    assert [a.username for a in env.console.accounts.accounts()] == ["admin"]
    assert bearer(env, token).get("/api/v1/me").status_code == 401  # its token ended with it
    removed = [d for who, action, d in _audit(env) if action == "console.account-remove"]
    assert removed == [{"account": "dave", "role": "operator", "lineages": None}]
    assert ("console:admin", "console.account-remove") in [(w, a) for w, a, _ in _audit(env)]


def test_the_last_admin_and_ones_own_account_stay(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    # alone: the last administrator
    for r in (
        env.client.get("/accounts/admin/remove"),
        env.client.post("/accounts/admin/remove", data={"csrf_token": csrf, "confirm": "yes"}),
    ):
        assert r.status_code == 400
        assert _alert(r.text) == ["admin is the last administrator — add another admin account before removing it"]
    # with a second admin: still never one's own account, but the other one may go
    assert _add(env, csrf, "eve", "admin").status_code == 303
    for r in (
        env.client.get("/accounts/admin/remove"),
        env.client.post("/accounts/admin/remove", data={"csrf_token": csrf, "confirm": "yes"}),
    ):
        assert r.status_code == 400
        assert _alert(r.text) == [
            "you cannot remove your own account — another administrator can remove it, if it must go"
        ]
    assert (
        'id="remove-admin"' not in env.client.get("/accounts").text
        and 'id="remove-eve"' in env.client.get("/accounts").text
    )
    api = env.client.delete("/api/v1/accounts/admin", headers={"x-csrf-token": csrf})
    assert api.status_code == 400 and api.json()["error"] == "you cannot remove your own account"
    assert {a.username for a in env.console.accounts.accounts()} == {"admin", "eve"}
    assert env.client.post("/accounts/eve/remove", data={"csrf_token": csrf, "confirm": "yes"}).status_code == 303
    assert [a.username for a in env.console.accounts.accounts()] == ["admin"]
    assert not any(a == "console.account-remove" and d["account"] == "admin" for _, a, d in _audit(env))


def test_reset_a_password_typed_or_generated(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    _add(env, csrf, "frank")
    frank = env.new_client()
    assert login(frank, "frank", PASSWORD).status_code == 303
    form = env.client.get("/accounts/frank/password")
    assert form.status_code == 200 and 'id="generate"' in form.text
    refused = env.client.post(
        "/accounts/frank/password", data={"csrf_token": csrf, "password": OTHER, "password2": "x" * 20}
    )
    assert refused.status_code == 400 and _alert(refused.text) == [
        "the two passwords differ — type the same password in both fields"
    ]
    assert OTHER not in refused.text
    r = env.client.post("/accounts/frank/password", data={"csrf_token": csrf, "password": OTHER, "password2": OTHER})
    assert r.status_code == 303 and "done=password-reset" in r.headers["location"]
    assert frank.get("/").status_code == 303  # its session ended
    assert login(env.new_client(), "frank", PASSWORD).status_code != 303
    assert login(env.new_client(), "frank", OTHER).status_code == 303
    r = env.client.post("/accounts/frank/password", data={"csrf_token": csrf, "generate": "on"})
    page = env.client.get(r.headers["location"])
    password = _generated(page.text)
    assert "New password for frank" in page.text and password not in env.client.get("/accounts").text
    assert login(env.new_client(), "frank", password).status_code == 303
    resets = [(who, d) for who, a, d in _audit(env) if a == "console.password-reset"]
    assert resets == [("console:admin", {"account": "frank"})] * 2
    assert OTHER not in json.dumps(_audit(env)) and password not in json.dumps(_audit(env))


def test_resetting_ones_own_password_ends_the_session(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    assert 'id="generate"' not in env.client.get("/accounts/admin/password").text
    r = env.client.post("/accounts/admin/password", data={"csrf_token": csrf, "generate": "on"})
    assert r.status_code == 400 and "type your own new password" in r.text
    r = env.client.post("/accounts/admin/password", data={"csrf_token": csrf, "password": OTHER, "password2": OTHER})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert env.client.get("/accounts").status_code == 303
    assert login(env.client, "admin", OTHER).status_code == 303


def _lock_out(env: ConsoleEnv, username: str) -> None:
    for _ in range(PAIR_FREE + 1):
        login(env.new_client(), username, "not the password at all")
    assert username in {a.username for a in env.console.accounts.accounts() if a.locked}


def test_unlock_an_account_or_every_wait(env: ConsoleEnv) -> None:
    csrf = logged_in(env)
    _add(env, csrf, "gina")
    _lock_out(env, "gina")
    page = env.client.get("/accounts").text
    row = re.search(r'<tr data-account="gina">.*?</tr>', page, re.S)
    assert row and "locked out" in row.group(0) and 'id="unlock-gina"' in row.group(0)
    r = env.client.post("/accounts/gina/unlock", data={"csrf_token": csrf})
    assert r.status_code == 303 and "done=account-unlocked" in r.headers["location"]
    assert _alert(env.client.get(r.headers["location"]).text) == ["Logins of gina wait no more."]
    assert not any(a.locked for a in env.console.accounts.accounts())
    assert login(env.new_client(), "gina", PASSWORD).status_code == 303
    _lock_out(env, "gina")
    r = env.client.post("/accounts/unlock", data={"csrf_token": csrf, "address": ""})
    assert r.status_code == 303 and not any(a.locked for a in env.console.accounts.accounts())
    unlocks = [d for who, a, d in _audit(env) if a == "console.unlock" and who == "console:admin"]
    assert {k: unlocks[-1][k] for k in ("account", "address")} == {"account": "gina", "address": None}
    assert unlocks[0]["account"] is None  # newest first: every account


def test_the_api_resets_and_unlocks(env: ConsoleEnv) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    assert (
        admin.post("/api/v1/accounts", json={"username": "hal", "password": PASSWORD, "role": "viewer"}).status_code
        == 201
    )
    typed = admin.post("/api/v1/accounts/hal/password", json={"password": OTHER})
    assert typed.status_code == 200 and typed.json() == {"account": "hal", "password": "changed"}
    assert login(env.new_client(), "hal", OTHER).status_code == 303
    generated = admin.post("/api/v1/accounts/hal/password")
    assert generated.status_code == 200
    password = generated.json()["generated_password"]
    assert login(env.new_client(), "hal", password).status_code == 303
    assert admin.post("/api/v1/accounts/hal/password", json={"password": "short"}).status_code == 400
    assert admin.post("/api/v1/accounts/nobody/password", json={"password": OTHER}).status_code == 404
    _lock_out(env, "hal")
    unlocked = admin.post("/api/v1/accounts/hal/unlock")
    assert unlocked.status_code == 200 and unlocked.json()["account"] == "hal" and unlocked.json()["cleared"] >= 1
    assert not any(a.locked for a in env.console.accounts.accounts())
    missing = admin.post("/api/v1/accounts/nobody/unlock")
    assert missing.status_code == 404 and missing.json()["hint"] == "GET /api/v1/accounts lists them"
    assert password not in json.dumps(_audit(env)) and OTHER not in json.dumps(_audit(env))
    actions = [a for _, a, _ in _audit(env)]
    assert actions.count("console.password-reset") == 2 and "console.unlock" in actions


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_no_one_but_an_admin_reaches_them(env: ConsoleEnv, role: str) -> None:
    account_token(env, "admin", "admin")
    token = account_token(env, "someone", role)
    api = bearer(env, token)
    for method, path, body in (
        ("GET", "/api/v1/accounts", None),
        ("POST", "/api/v1/accounts", {"username": "x1", "password": PASSWORD, "role": "admin"}),
        ("DELETE", "/api/v1/accounts/admin", None),
        ("POST", "/api/v1/accounts/admin/password", {"password": OTHER}),
        ("POST", "/api/v1/accounts/admin/unlock", None),
    ):
        r = api.request(method, path, json=body)
        assert r.status_code == 403 and "admin role" in r.json()["error"], (method, path)
    page: TestClient = env.new_client()
    assert login(page, "someone", PASSWORD).status_code == 303
    csrf = csrf_of(page.get("/tokens").text)
    assert 'href="/accounts"' not in page.get("/").text
    for path in ("/accounts", "/accounts/admin/remove", "/accounts/admin/password"):
        assert page.get(path).status_code == 403, path
    for path, data in (
        ("/accounts", {"username": "x2", "role": "admin", "password": PASSWORD, "password2": PASSWORD}),
        ("/accounts/admin/remove", {"confirm": "yes"}),
        ("/accounts/admin/password", {"password": OTHER, "password2": OTHER}),
        ("/accounts/admin/unlock", {}),
        ("/accounts/unlock", {}),
    ):
        assert page.post(path, data={"csrf_token": csrf, **data}).status_code == 403, path
    assert {a.username for a in env.console.accounts.accounts()} == {"admin", "someone"}
    assert login(env.new_client(), "admin", PASSWORD).status_code == 303  # its password unchanged


def test_forms_without_the_csrf_token_are_refused(env: ConsoleEnv) -> None:
    logged_in(env)
    r = env.client.post("/accounts", data={"username": "ivy", "role": "admin", "generate": "on"})
    assert r.status_code == 403 and "security token" in r.text
    assert env.client.post("/accounts/admin/unlock").status_code == 403
    assert [a.username for a in env.console.accounts.accounts()] == ["admin"]
