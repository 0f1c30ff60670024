"""The attacks of issue 14, each played against the console as it was found: a token that reached a
shell and the key, a child token outliving its parent, anonymous bodies read before the login
check, the administrator locked out from elsewhere, a raced login throttle, two edits of one
node mixed, ids that overflowed, and the smaller HTTP faults. Each fails on the console before
the access work and passes now."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from certfleet.console import security
from certfleet.console.services.throttle import PAIR_FREE
from conftest import PKI
from support.console import (
    PASSWORD,
    ConsoleEnv,
    account_token,
    bearer,
    create_admin,
    csrf_of,
    key_needles,
    logged_in,
    login,
    make_env,
    wait_job,
)


@pytest.fixture
def env(tmp_path: Path) -> ConsoleEnv:
    return make_env(tmp_path / "home")


def _together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at the same moment; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


# -- 1. a token was a shell on the console host, and the key came back through the API --------------------------


def _node(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return {
        "name": "main",
        "names": ["www.example.test"],
        "targets": [f"pem:{tmp_path / 'main'}"],
        "lineages": ["web"],
        **fields,
    }


@pytest.mark.parametrize("role", ["operator", "metrics"])
def test_an_operator_or_metrics_token_cannot_set_a_command(env: ConsoleEnv, tmp_path: Path, role: str) -> None:
    token = (
        account_token(env, "ops", "operator")
        if role == "operator"
        else account_token(env, "admin", "admin", token_role="metrics")
    )
    bot = bearer(env, token)
    shell = {"test_cmd": "cat /srv/x/versions/*/privkey.pem; exit 1"}
    r = bot.post("/api/v1/nodes", json=_node(tmp_path, **shell))
    assert r.status_code == 403, r.text
    assert env.store.nodes() == []
    if role == "metrics":
        assert bot.get("/metrics").status_code == 200  # what it is for
        assert bot.get("/api/v1/lineages").status_code == 403  # and nothing else
        assert bot.post("/api/v1/tokens", json={"name": "more"}).status_code == 403
        return
    # an operator adds and edits plain nodes, but never what a node runs or how it is reached
    assert bot.post("/api/v1/nodes", json=_node(tmp_path)).status_code == 201
    for change in (
        shell,
        {"reload_cmd": "id"},
        {"targets": [f"pem:{tmp_path / 'main'}", "command:id > /tmp/owned"]},
        {"transport": "ssh://root@127.0.0.1:22"},
    ):
        assert bot.put("/api/v1/nodes/main", json=_node(tmp_path, **change)).status_code == 403, change
    assert bot.put("/api/v1/nodes/main", json=_node(tmp_path, probe="127.0.0.1:9")).status_code == 200
    spec = env.store.node("main")
    assert spec.test_cmd is None and spec.reload_cmd is None and spec.transport == "local"
    assert [t.kind for t in spec.targets] == ["pem"]


def test_an_admins_command_that_prints_the_key_leaves_no_key_anywhere(
    env: ConsoleEnv, tmp_path: Path, pki: PKI
) -> None:
    env.store.put_lineage("web")
    env.store.issue("web", pki.leaf.cert, pki.leaf.chain, key=pki.leaf.key)
    admin = bearer(env, account_token(env, "admin", "admin"))
    steal = f"id; cat {tmp_path / 'main'}/live/privkey.pem; base64 -w0 {tmp_path / 'main'}/live/privkey.pem; exit 1"
    r = admin.post("/api/v1/nodes", json=_node(tmp_path, test_cmd=steal))
    assert r.status_code == 201, r.text
    audit = env.store.audit_log(action="console.node-commands")
    assert audit and audit[0].detail["test_cmd"] == steal  # who set which command, in the trail
    job = admin.post("/api/v1/lineages/web/deploy", json={})
    assert job.status_code == 202, job.text
    env.client.headers["authorization"] = admin.headers["authorization"]
    done = wait_job(env, job.json()["id"])
    [node] = done["nodes"]
    assert node["outcome"]["step"] == "test" and "uid=" in node["outcome"]["output"]  # it ran
    shown = [
        admin.get(f"/api/v1/deploy/jobs/{done['id']}").content,
        admin.get("/api/v1/history").content,
        admin.get("/history").content,
        admin.get(f"/deploy/jobs/{done['id']}").content,
    ]
    with sqlite3.connect(env.home / "certfleet.db") as db:
        stored = [row[0].encode() for row in db.execute("select output from deployment_results")]
    assert stored and b"uid=" in stored[0]
    for needle in key_needles(pki.leaf.key):
        for body in [*shown, *stored]:
            assert needle not in body
    assert b"[redacted:" in stored[0]


# -- 2. tokens never expired, and a child outlived its revoked parent -------------------------------------------------


def test_a_token_made_by_a_token_dies_with_it(env: ConsoleEnv) -> None:
    parent = bearer(env, account_token(env, "admin", "admin"))
    made = parent.post("/api/v1/tokens", json={"name": "child", "days": 366})
    assert made.status_code == 201, made.text
    child = bearer(env, made.json()["token"])
    assert child.get("/api/v1/me").status_code == 200
    assert made.json()["expires_at"] <= parent.get("/api/v1/me").json()["expires_at"]  # never outlives it
    parent_id = made.json()["parent"]
    assert parent.delete(f"/api/v1/tokens/{parent_id}").status_code == 200
    assert parent.get("/api/v1/me").status_code == 401
    assert child.get("/api/v1/me").status_code == 401


def test_tokens_expire_and_never_widen(env: ConsoleEnv) -> None:
    operator = bearer(env, account_token(env, "ops", "operator"))
    assert operator.post("/api/v1/tokens", json={"name": "up", "role": "admin"}).status_code == 403
    viewer = operator.post("/api/v1/tokens", json={"name": "down", "role": "viewer"})
    assert viewer.status_code == 201 and viewer.json()["role"] == "viewer"
    assert (
        bearer(env, viewer.json()["token"]).post("/api/v1/tokens", json={"name": "x", "role": "operator"}).status_code
        == 403
    )
    env.clock.advance(days=91)  # the default life is 90 days
    assert operator.get("/api/v1/me").status_code == 401


def test_removing_an_account_ends_its_tokens(env: ConsoleEnv) -> None:
    ops = bearer(env, account_token(env, "ops", "operator"))
    assert ops.get("/api/v1/me").status_code == 200
    env.console.accounts.remove("ops", by="console:test")
    assert ops.get("/api/v1/me").status_code == 401


def test_the_audit_names_the_token(env: ConsoleEnv) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    assert admin.post("/api/v1/tokens", json={"name": "prometheus", "role": "metrics"}).status_code == 201
    [entry] = env.store.audit_log(action="console.token-create", limit=1)
    assert entry.detail["name"] == "prometheus" and entry.detail["role"] == "metrics"
    assert "<redacted>" not in str(entry.detail)


# -- 3. anonymous bodies were read before the login check -----------------------------------------------------------


async def _asgi(
    env: ConsoleEnv, method: str, path: str, headers: list[tuple[bytes, bytes]], size: int
) -> tuple[int, int]:
    """Send ``size`` bytes of body in 64 KiB pieces straight to the app; its status and how much of
    the body it read."""
    chunk = b"x" * 65536
    consumed = 0
    sent = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal consumed, sent
        piece = chunk[: max(0, min(len(chunk), size - sent))]
        sent += len(piece)
        consumed += len(piece)
        return {"type": "http.request", "body": piece, "more_body": sent < size}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 443),
        "state": {},
    }
    await env.app(scope, receive, send)
    return status, consumed


def test_anonymous_bodies_are_refused_before_they_are_read(env: ConsoleEnv) -> None:
    create_admin(env)
    big = int(9.9 * 1024 * 1024)
    json_body = [(b"content-type", b"application/json"), (b"content-length", str(big).encode())]

    async def burst() -> list[tuple[int, int]]:
        return await asyncio.gather(*(_asgi(env, "POST", "/api/v1/nodes", json_body, big) for _ in range(20)))

    for status, consumed in asyncio.run(burst()):
        assert status == 401
        assert consumed == 0  # not a byte of it
    # a viewer's upload is cut at a small limit; an operator's gets the upload limit
    viewer = account_token(env, "watcher", "viewer")
    auth = [(b"authorization", f"Bearer {viewer}".encode()), (b"content-type", b"multipart/form-data; boundary=x")]
    status, consumed = asyncio.run(_asgi(env, "POST", "/api/v1/lineages/web/import", auth, big))
    assert status in (400, 403, 413) and consumed <= 128 * 1024


# -- 5. anyone could lock the only admin out ------------------------------------------------------------------------


def test_guesses_from_one_address_do_not_lock_the_admin_out_of_another(env: ConsoleEnv) -> None:
    create_admin(env)
    attacker = TestClient(env.app, base_url="https://testserver", client=("192.0.2.7", 4000), follow_redirects=False)
    for _ in range(PAIR_FREE + 1):
        assert login(attacker, "admin", "not the password at all").status_code in (401, 429)
    assert login(attacker).status_code == 429  # the attacker's address waits
    admin = TestClient(env.app, base_url="https://testserver", client=("198.51.100.9", 4000), follow_redirects=False)
    assert login(admin).status_code == 303  # the admin, elsewhere, does not


def test_certfleet_account_unlock_lifts_a_lockout(env: ConsoleEnv) -> None:
    create_admin(env)
    for _ in range(PAIR_FREE):
        login(env.new_client(), "admin", "not the password at all")
    assert login(env.new_client()).status_code == 429
    assert [a.locked for a in env.console.accounts.accounts()] == [True]
    assert env.console.accounts.unlock("admin", by="cli:root") >= 1
    assert login(env.new_client()).status_code == 303


# -- 6. the login throttle could be raced --------------------------------------------------------------------------


def test_a_burst_of_guesses_is_checked_no_more_than_a_slow_series(env: ConsoleEnv) -> None:
    create_admin(env)
    clients = [env.new_client() for _ in range(40)]
    tokens = [csrf_of(c.get("/login").text) for c in clients]

    def guess(i: int) -> Callable[[], int]:
        def run() -> int:
            data = {"csrf_token": tokens[i], "username": "admin", "password": f"guess number {i:04d}"}
            return int(clients[i].post("/login", data=data).status_code)

        return run

    statuses = _together([guess(i) for i in range(40)])
    assert sorted(set(statuses)) == [401, 429]
    assert statuses.count(401) == PAIR_FREE  # checked; every other one refused before its check
    failed = env.store.audit_log(action="console.login-failed", limit=100)
    assert len(failed) == PAIR_FREE


class _CountingHasher:
    """argon2's hasher, counting how many checks run at once."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.now, self.peak = inner, 0, 0
        self.lock = threading.Lock()

    def verify(self, stored: str, password: str) -> bool:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return bool(self.inner.verify(stored, password))
        finally:
            with self.lock:
                self.now -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_argon2_checks_run_a_few_at_a_time(env: ConsoleEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    create_admin(env)
    counting = _CountingHasher(security.HASHER)
    monkeypatch.setattr(security, "HASHER", counting)
    clients = [
        TestClient(env.app, base_url="https://testserver", client=(f"192.0.2.{i}", 4000), follow_redirects=False)
        for i in range(12)
    ]
    tokens = [csrf_of(c.get("/login").text) for c in clients]

    def attempt(i: int) -> Callable[[], int]:
        data = {"csrf_token": tokens[i], "username": f"nobody{i}", "password": "some password here"}
        return lambda: int(clients[i].post("/login", data=data).status_code)

    assert set(_together([attempt(i) for i in range(12)])) == {401}
    assert 1 <= counting.peak <= security.HASH_CONCURRENCY


def test_a_login_the_console_is_too_busy_to_check_is_asked_again_and_not_counted(
    env: ConsoleEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_admin(env)
    monkeypatch.setattr(security, "HASH_WAIT", 0.05)
    held = [security._slots.acquire(timeout=5) for _ in range(security.HASH_CONCURRENCY)]
    try:
        assert all(held)
        for _ in range(PAIR_FREE + 2):
            busy = login(env.new_client())
            assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
    finally:
        for _ in held:
            security._slots.release()
    assert login(env.new_client()).status_code == 303  # none of those counted against the admin


# -- 7. two edits of one node were mixed ---------------------------------------------------------------------------


def test_two_edits_of_one_node_at_once_one_wins_whole(env: ConsoleEnv, tmp_path: Path) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    assert admin.post("/api/v1/nodes", json=_node(tmp_path)).status_code == 201
    version = admin.get("/api/v1/nodes/main").json()["version"]
    one = _node(tmp_path, names=["one.example.test"], lineages=["web"], version=version)
    two = _node(tmp_path, names=["two.example.test", "more.example.test"], lineages=["api", "mail"], version=version)
    results = _together(
        [lambda: admin.put("/api/v1/nodes/main", json=one), lambda: admin.put("/api/v1/nodes/main", json=two)]
    )
    assert sorted(r.status_code for r in results) == [200, 409]
    refused = next(r for r in results if r.status_code == 409)
    assert "changed by someone else" in refused.json()["error"]
    winner = one if results[0].status_code == 200 else two
    now = admin.get("/api/v1/nodes/main").json()
    assert (now["names"], now["lineages"]) == (winner["names"], winner["lineages"])
    assert now["version"] == version + 1


def test_edits_without_a_version_never_mix(env: ConsoleEnv, tmp_path: Path) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    assert admin.post("/api/v1/nodes", json=_node(tmp_path)).status_code == 201
    one = _node(tmp_path, names=["one.example.test"], lineages=["web"])
    two = _node(tmp_path, names=["two.example.test"], lineages=["api"])
    for _ in range(10):
        _together(
            [lambda: admin.put("/api/v1/nodes/main", json=one), lambda: admin.put("/api/v1/nodes/main", json=two)]
        )
        now = admin.get("/api/v1/nodes/main").json()
        assert (now["names"], now["lineages"]) in ((one["names"], one["lineages"]), (two["names"], two["lineages"]))


def test_the_node_form_says_when_someone_saved_first(env: ConsoleEnv, tmp_path: Path) -> None:
    csrf = logged_in(env)
    admin = bearer(env, account_token(env, "admin", "admin"))
    assert admin.post("/api/v1/nodes", json=_node(tmp_path)).status_code == 201
    page = env.client.get("/nodes/main/edit").text
    assert 'name="version" value="1"' in page
    assert admin.put("/api/v1/nodes/main", json=_node(tmp_path, names=["other.example.test"])).status_code == 200
    form = {"csrf_token": csrf, "original": "main", "version": "1", "name": "main", "names": "late.example.test",
            "targets": f"pem:{tmp_path / 'main'}", "transport": "local", "lineages": "web"}  # fmt: skip
    r = env.client.post("/nodes", data=form)
    assert r.status_code == 409
    assert "changed by someone else" in r.text and "Saved meanwhile" in r.text and "other.example.test" in r.text
    assert env.store.node("main").names == ("other.example.test",)
    assert 'name="version" value="2"' in r.text  # saving again is made on what is there now


# -- 8. ids above 2^63 gave 500 ------------------------------------------------------------------------------------

ID_ROUTES = [
    ("DELETE", "/api/v1/tokens/{id}"),
    ("POST", "/tokens/{id}/revoke"),
    ("DELETE", "/api/v1/client-users/{id}"),
    ("POST", "/api/v1/client-users/{id}/links"),
    ("POST", "/clients/users/{id}/remove"),
    ("POST", "/clients/users/{id}/link"),
    ("GET", "/api/v1/lineages/web/versions/{id}/csr"),
    ("GET", "/csr/web/{id}.csr"),
]


@pytest.mark.parametrize(("method", "path"), ID_ROUTES)
def test_huge_ids_are_refused_and_unknown_ones_are_not_found(env: ConsoleEnv, method: str, path: str) -> None:
    env.store.put_lineage("web")
    admin = bearer(env, account_token(env, "admin", "admin"))
    for huge in (2**63 + 5, 2**64, 2**31):
        r = admin.request(method, path.format(id=huge))
        assert r.status_code == 422, (huge, r.status_code, r.text)
    assert admin.request(method, path.format(id=0)).status_code == 422
    assert admin.request(method, path.format(id=4242)).status_code == 404


# -- 9. the smaller faults -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [True, False])
def test_redirects_never_echo_the_host_header(env: ConsoleEnv, token: bool) -> None:
    client = bearer(env, account_token(env, "admin", "admin")) if token else env.new_client()
    for path in ("/nodes/", "/api/v1/lineages/", "//evil.example/", "/nodes//"):
        r = client.get(path, headers={"host": "evil.example"})
        location = r.headers.get("location", "")
        assert "evil.example" not in location.split("?")[0] and not location.startswith("//"), (path, location)
        if r.status_code in (301, 302, 303, 307, 308):
            assert location.startswith("/")
    if token:
        r = client.get("/nodes/", headers={"host": "evil.example"})
        assert r.status_code == 308 and r.headers["location"] == "/nodes"


def test_head_where_get_is_and_allow_on_405(env: ConsoleEnv) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    for path in ("/", "/nodes", "/api/v1/lineages", "/api/v1/nodes", "/metrics"):
        got, head = admin.get(path), admin.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
    assert env.new_client().head("/login").status_code == 200
    wrong = admin.delete("/api/v1/lineages")
    assert wrong.status_code == 405 and set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
    wrong = admin.patch("/api/v1/nodes")
    assert wrong.status_code == 405 and set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


def test_a_head_on_a_client_link_does_not_use_it_up(env: ConsoleEnv) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    profile = {"name": "mobile", "hostname": "mbg.example.test", "template": "${username}"}
    assert admin.put("/api/v1/client-profiles", json=profile).status_code == 200
    user = admin.post("/api/v1/client-users", json={"profile": "mobile", "username": "alice"}).json()
    link = admin.post(f"/api/v1/client-users/{user['id']}/links").json()["url"]
    path = "/" + link.split("/", 3)[3]
    assert env.new_client().head(path).status_code == 200
    assert env.new_client().get(path).status_code == 200  # the link's page: it uses nothing up
    assert env.new_client().head(path).status_code == 200
    assert env.new_client().post(path).status_code == 200  # the button releases the configuration
    assert env.new_client().post(path).status_code == 410


def test_openapi_lists_every_error_status(env: ConsoleEnv) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    spec = admin.get("/api/v1/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"400", "401", "403", "404", "409", "413", "422", "429", "503"} <= documented, (method, path)


@pytest.mark.parametrize(
    ("names", "status", "says"),
    [
        (["exa mple.test"], 422, "names"),  # one item, never split in two
        (["www.example.test,mail.example.test"], 422, "names"),
        (["exa\u200bmple.test"], 400, "U+200B"),  # never silently dropped
    ],
)
def test_api_names_are_checked_one_by_one(
    env: ConsoleEnv, tmp_path: Path, names: list[str], status: int, says: str
) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    r = admin.post("/api/v1/nodes", json=_node(tmp_path, names=names))
    assert r.status_code == status and says in r.text
    assert env.store.nodes() == []


@pytest.mark.parametrize("target", ["nginx:/etc", "nginx:/", "pem:/usr/lib/x", "pem:/var"])
def test_a_target_in_a_system_folder_is_refused(env: ConsoleEnv, target: str) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    r = admin.post("/api/v1/nodes", json={"name": "main", "names": ["www.example.test"], "targets": [target]})
    assert r.status_code == 400 and ("system folder" in r.text or "root folder" in r.text)


def test_a_target_in_the_store_is_refused(env: ConsoleEnv) -> None:
    admin = bearer(env, account_token(env, "admin", "admin"))
    r = admin.post(
        "/api/v1/nodes", json={"name": "main", "names": ["www.example.test"], "targets": [f"pem:{env.home}/x"]}
    )
    assert r.status_code == 400 and "inside the certfleet store" in r.text


def test_the_setup_admin_stays_and_accounts_migrate_as_admins(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home")
    create_admin(env)
    [admin] = env.console.accounts.accounts()
    assert admin.role.value == "admin"
    assert login(env.new_client(), "admin", PASSWORD).status_code == 303


def test_a_busy_store_while_checking_who_asks_is_a_503(env: ConsoleEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from certfleet.errors import StoreBusyError

    token = account_token(env, "admin", "admin")

    def busy(_: str) -> None:
        raise StoreBusyError("store is busy: another certfleet is writing; try again")

    monkeypatch.setattr(env.console.tokens, "bearer", busy)
    r = bearer(env, token).get("/api/v1/lineages")
    assert r.status_code == 503 and "busy" in r.json()["error"] and r.headers["retry-after"]
