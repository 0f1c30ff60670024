"""Two ``certfleet serve`` processes on one PostgreSQL store answer for each other: an import shown
by one is saved through the other, a deploy started on one is followed live on the other, failed
logins counted by one make the other wait, and a new API token or client link made on one is
shown once by the other. One browser (one cookie jar) talks to both, as
it would to two consoles behind one name."""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography import x509
from sqlalchemy import create_engine, text

from certfleet.certinfo import fingerprint
from certfleet.console.models import RevealRow
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.store import PASSPHRASE_ENV, URL_ENV, Store
from conftest import PKI
from support.console import PASSWORD, Served, csrf_of, serve
from support.postgres import pg_url, postgres

__all__ = ["pg_url", "postgres"]  # the fixtures, imported where they are used

pytestmark = pytest.mark.peer

PASSPHRASE = "one secret for every console of this store"


def _until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _browser(console: Served) -> httpx2.Client:
    """A client that trusts the console's own bootstrap certificate, and nothing else (the two
    consoles' self-signed certificates have one subject: one context each)."""
    tls = ssl.create_default_context(cadata=ssl.get_server_certificate(("127.0.0.1", console.port)))
    return httpx2.Client(base_url=console.url, verify=tls, follow_redirects=False, timeout=60)


@pytest.fixture
def consoles(
    pg_url: str, tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Served, Served, Path]]:
    """Two consoles, each with a home of its own, on the store of one PostgreSQL database: the
    lineage web with a fast node and a slow one (its test waits for the file ``release``)."""
    env = {URL_ENV: pg_url, PASSPHRASE_ENV: PASSPHRASE}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    release = tmp_path / "release"
    with Store.init(tmp_path / "a") as store:
        store.add_trust_anchor(pki.root.cert)
        for node, test in (("fast", None), ("slow", f"while [ ! -e {release} ]; do sleep 0.05; done")):
            spec = NodeSpec(node, ("www.example.test",), (TargetSpec("pem", str(tmp_path / node)),), test_cmd=test)
            store.add_node(spec, lineage="web")
    with serve(tmp_path / "a", env=env) as a, serve(tmp_path / "b", env=env) as b:
        try:
            yield a, b, release
        finally:
            release.touch()


def _setup_and_log_in(to_a: httpx2.Client, to_b: httpx2.Client, b: Served) -> str:
    """The administrator made through the one-time link B printed (B started last: its link is the
    one that works), logged in through A, the session cookie then sent to B as well (one browser,
    two consoles behind one name); the CSRF token."""
    link = b.setup_url()
    assert link is not None, b.out()
    page = to_b.get(link)
    assert page.status_code == 200, page.text
    made = to_b.post(
        link,
        data={"csrf_token": csrf_of(page.text), "username": "admin", "password": PASSWORD, "password2": PASSWORD},
    )
    assert made.status_code == 303, made.text
    form = to_a.get("/login")
    r = to_a.post("/login", data={"csrf_token": csrf_of(form.text), "username": "admin", "password": PASSWORD})
    assert r.status_code == 303, r.text
    to_b.cookies = to_a.cookies
    return csrf_of(to_b.get("/tokens").text)  # the session A opened is good on B


def test_two_consoles_on_one_store_answer_for_each_other(consoles: tuple[Served, Served, Path], pki: PKI) -> None:
    a, b, release = consoles
    with _browser(a) as to_a, _browser(b) as to_b:
        csrf = _setup_and_log_in(to_a, to_b, b)

        # -- an import shown by A (a key in the upload) is saved through B
        bundle = pki.leaf.key_pem() + pki.leaf.fullchain_pem()
        shown = to_a.post(
            "/import",
            data={"csrf_token": csrf, "lineage": "web"},
            files=[("files", ("bundle.pem", bundle, "application/x-pem-file"))],
        )
        assert shown.status_code == 303 and shown.headers["location"].startswith("/import/"), shown.text
        findings = to_b.get(shown.headers["location"])
        assert findings.status_code == 200 and "Everything checks out" in findings.text, findings.text
        confirm = re.search(r'action="(/import/[^"/]+/confirm)"', findings.text)
        assert confirm is not None
        saved = to_b.post(confirm.group(1), data={"csrf_token": csrf})
        assert saved.status_code == 303, saved.text
        with Store.open(a.home) as store:
            active = store.lineage("web").active
            assert active is not None and active.fingerprint == fingerprint(pki.leaf.cert)
        again = to_a.post(confirm.group(1), data={"csrf_token": csrf})  # saved once, on any console
        assert again.status_code == 400 and "no longer waiting" in again.text

        # -- a deploy started on A is followed live on B, node by node
        started = to_a.post("/api/v1/lineages/web/deploy", json={}, headers={"x-csrf-token": csrf})
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        assert job_id == str(started.json()["deployment"])  # any console finds it by the deployment's id

        def slow_in_test() -> dict[str, Any] | None:
            job: dict[str, Any] = to_b.get(f"/api/v1/deploy/jobs/{job_id}").json()
            nodes = {n["node"]: n for n in job["nodes"]}
            return job if nodes["fast"]["done"] and nodes["slow"]["current"] == "test" else None

        running = _until("B sees the slow node in its test while the fast one is done", slow_in_test)
        assert running["state"] == "running" and running["lineage"] == "web"
        fast, slow = sorted(running["nodes"], key=lambda n: n["node"])
        assert fast["outcome"]["outcome"] == "ok" and slow["outcome"] is None
        assert slow["steps"][0] == "render" and slow["steps"][-1] == "test"
        page = to_b.get(f"/deploy/jobs/{job_id}")
        assert page.status_code == 200 and "Deploying <code>web</code> version 1" in page.text
        assert 'data-state="running"' in page.text and 'tr data-node="slow"' in page.text
        listed = to_b.get("/deploy?lineage=web").text
        assert f'href="/deploy/jobs/{job_id}"' in listed

        release.touch()

        def over() -> dict[str, Any] | None:
            job: dict[str, Any] = to_b.get(f"/api/v1/deploy/jobs/{job_id}").json()
            return job if job["state"] != "running" else None

        done = _until("the deploy ends, as B sees it", over)
        assert done["state"] == "done" and done["ok"], done
        assert {n["node"]: n["outcome"]["outcome"] for n in done["nodes"]} == {"fast": "ok", "slow": "ok"}
        assert to_a.get(f"/api/v1/deploy/jobs/{job_id}").json()["nodes"] == done["nodes"]
        for node in ("fast", "slow"):
            live = x509.load_pem_x509_certificate((release.parent / node / "live" / "cert.pem").read_bytes())
            assert live == pki.leaf.cert

        # -- failed logins counted by A make B wait too
        to_a.cookies.clear()
        to_b.cookies.clear()
        waited = 0
        while True:  # wrong passwords on A until a wait long enough to be seen on B is set
            form = to_a.get("/login")
            r = to_a.post("/login", data={"csrf_token": csrf_of(form.text), "username": "admin", "password": "wrong"})
            if r.status_code == 429:
                waited = int(r.headers["retry-after"])
                if waited >= 8:
                    break
                time.sleep(waited)
            else:
                assert r.status_code in (200, 400, 401), r.text
        form = to_b.get("/login")
        r = to_b.post("/login", data={"csrf_token": csrf_of(form.text), "username": "admin", "password": PASSWORD})
        assert r.status_code == 429 and "too many failed logins" in r.text, r.text
        assert int(r.headers["retry-after"]) <= waited


def _waiting(pg_url: str) -> list[bytes]:
    """Every value waiting to be shown, as the database holds it (every column, as bytes)."""
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT * FROM {RevealRow.__tablename__}")).all()  # noqa: S608 (the model's name)
    finally:
        engine.dispose()
    return [b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in row) for row in rows]


def test_a_new_token_or_link_made_on_one_console_is_shown_once_by_the_other(
    consoles: tuple[Served, Served, Path], pg_url: str
) -> None:
    a, b, _ = consoles
    with _browser(a) as to_a, _browser(b) as to_b:
        csrf = _setup_and_log_in(to_a, to_b, b)

        # -- an API token made by A's form: the page after the redirect is B's
        made = to_a.post("/tokens", data={"csrf_token": csrf, "name": "ci-deploys"})
        assert made.status_code == 303, made.text
        location = made.headers["location"]
        assert location.startswith("/tokens?new="), location
        (row,) = _waiting(pg_url)  # it waits in the store, sealed
        shown = to_b.get(location)
        assert shown.status_code == 200, shown.text
        found = re.search(r'<pre id="new-token">([^<]+)</pre>', shown.text)
        assert found is not None, shown.text
        token = found.group(1)
        assert "Token “ci-deploys” created." in shown.text
        assert token.encode() not in row and token[4:24].encode() not in row and b"ci-deploys" not in row
        assert location.split("=", 1)[1].encode() not in row  # the key in the URL is kept as its hash
        assert _waiting(pg_url) == []  # taken: gone from the store
        with _browser(b) as bare:  # the token it showed works, without the session
            me = bare.get("/api/v1/me", headers={"authorization": f"Bearer {token}"})
            assert me.status_code == 200 and me.json()["username"] == "admin", me.text
        again = to_b.get(location)
        assert again.status_code == 200 and 'id="new-token"' not in again.text and token not in again.text
        assert token not in to_a.get(location).text  # nor on the console that made it

        # -- a client deployment link made by B's form: the page after the redirect is A's
        h = {"x-csrf-token": csrf}
        profile = {"name": "mobile", "hostname": "mbg.example.test", "template": "${username}"}
        assert to_b.put("/api/v1/client-profiles", json=profile, headers=h).status_code in (200, 201)
        user = to_b.post("/api/v1/client-users", json={"profile": "mobile", "username": "bob"}, headers=h)
        assert user.status_code in (200, 201), user.text
        linked = to_b.post(f"/clients/users/{user.json()['id']}/link", data={"csrf_token": csrf})
        assert linked.status_code == 303, linked.text
        location = linked.headers["location"]
        assert location.startswith("/clients?link=") and location.endswith("#new-link"), location
        (row,) = _waiting(pg_url)
        shown = to_a.get(location.partition("#")[0])
        found = re.search(r'<pre id="link-url">([^<]+)</pre>', shown.text)
        assert shown.status_code == 200 and found is not None, shown.text
        url = found.group(1)
        assert url.startswith("https://mbg.example.test/") and "Deployment link for bob" in shown.text
        assert url.encode() not in row and url.rsplit("/", 1)[1].encode() not in row
        assert _waiting(pg_url) == []
        again = to_a.get(location.partition("#")[0])
        assert again.status_code == 200 and 'id="link-url"' not in again.text and url not in again.text
