"""What the console tests share: an app over a fresh store with a clock the test turns, logging in,
and ``certfleet serve`` as a real process on a free loopback port."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from fastapi import FastAPI
from fastapi.testclient import TestClient

from certfleet.console.app import create_app
from certfleet.console.core import Console
from certfleet.console.settings import ConsoleSettings
from certfleet.console.tls import TLSContexts
from certfleet.store import Store
from support import REPO, require_peer, stop_process
from support.servers import free_port

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    """A clock the test moves by hand (sessions, links and backoff expire without waiting)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


class RecordingClient(TestClient):
    """A test client that keeps every response body, to scan them all for key material."""

    def __init__(self, *args: Any, bodies: list[bytes], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies = bodies

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        self.bodies.append(b"".join(f"{k}: {v}\n".encode() for k, v in response.headers.items()) + response.content)
        return response


@dataclass
class ConsoleEnv:
    home: Path
    store: Store
    app: FastAPI
    clock: Clock
    client: TestClient
    responses: list[bytes] = field(default_factory=list)

    @property
    def console(self) -> Console:
        console: Console = self.app.state.console
        return console

    def new_client(self, host: str = "testserver") -> TestClient:
        """Another browser, with no cookie, reaching the console at ``host``."""
        return RecordingClient(self.app, base_url=f"https://{host}", follow_redirects=False, bodies=self.responses)


def make_env(
    home: Path, *, settings: ConsoleSettings | None = None, tls: Callable[[Store], TLSContexts] | None = None
) -> ConsoleEnv:
    """An app over a fresh store in ``home``, on the database ``CERTFLEET_DATABASE_URL`` names
    (SQLite in ``home`` when unset: the ``backend`` fixture of support.postgres sets it); ``tls``
    makes the console's own TLS contexts over that store."""
    store = Store.init(home)
    clock = Clock()
    contexts = tls(store) if tls is not None else None
    app = create_app(store, settings=settings or ConsoleSettings(probe_timeout=2.0), clock=clock, tls=contexts)
    bodies: list[bytes] = []
    client = RecordingClient(app, base_url="https://testserver", follow_redirects=False, bodies=bodies)
    return ConsoleEnv(home, store, app, clock, client, bodies)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def create_admin(env: ConsoleEnv, username: str = "admin", password: str = PASSWORD) -> None:
    token = env.console.accounts.new_setup_token()
    client = env.new_client()
    page = client.get(f"/setup/{token}")
    assert page.status_code == 200
    r = client.post(
        f"/setup/{token}",
        data={"csrf_token": csrf_of(page.text), "username": username, "password": password, "password2": password},
    )
    assert r.status_code == 303, r.text


def login(client: TestClient, username: str = "admin", password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"csrf_token": csrf_of(page.text), "username": username, "password": password})


def count_selects(env: ConsoleEnv, path: str) -> int:
    """How many SELECT statements the console's store ran to answer ``GET path`` (200)."""
    from sqlalchemy import event

    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(env.store._db.engine, "before_cursor_execute", seen)
    try:
        assert env.client.get(path).status_code == 200
    finally:
        event.remove(env.store._db.engine, "before_cursor_execute", seen)
    return len(statements)


def logged_in(env: ConsoleEnv) -> str:
    """Log the env's client in as admin (creating the account first); returns the CSRF token."""
    if not env.console.accounts.has_accounts():
        create_admin(env)
    r = login(env.client)
    assert r.status_code == 303, r.text
    return csrf_of(env.client.get("/tokens").text)


def account_token(
    env: ConsoleEnv,
    username: str,
    role: str,
    *,
    token_role: str | None = None,
    lineages: list[str] | None = None,
    days: int | None = None,
) -> str:
    """An API token of the account ``username`` with ``role`` (the account is made when missing; the
    setup link's admin first), itself of ``token_role`` (the account's role when None)."""
    from certfleet.console.roles import Role
    from certfleet.console.services.audit import Actor, AuthMethod

    if not env.console.accounts.has_accounts():
        create_admin(env)
    known = {a.username: a for a in env.console.accounts.accounts()}
    info = known.get(username) or env.console.accounts.add(
        username, PASSWORD, Role(role), lineages=lineages, by="console:test"
    )
    actor = Actor(info.id, info.username, AuthMethod.SESSION, role=info.role, lineages=info.lineages)
    wanted = Role(token_role) if token_role else None
    token, _ = env.console.tokens.create(actor, f"{username}-{token_role or role}", role=wanted, days=days)
    return token


def bearer(env: ConsoleEnv, token: str, *, address: str = "testclient") -> TestClient:
    """A client of the env's app that sends ``token`` with every request."""
    client = RecordingClient(
        env.app, base_url="https://testserver", follow_redirects=False, bodies=env.responses, client=(address, 50000)
    )
    client.headers["authorization"] = f"Bearer {token}"
    return client


ANYONE = "anyone"


def _requirements(dependant: Any) -> Iterator[Any]:
    from certfleet.console.deps import RoleRequirement

    for sub in dependant.dependencies:
        if isinstance(sub.call, RoleRequirement):
            yield sub.call.role
        yield from _requirements(sub)


def _api_routes(routes: Any) -> Iterator[Any]:
    from fastapi.routing import APIRoute

    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif getattr(route, "original_router", None) is not None:  # a router included in the app
            yield from _api_routes(route.original_router.routes)


def route_roles(app: FastAPI) -> dict[tuple[str, str], str]:
    """Every route of the console, ``(method, path)``, and the role it declares (the highest one
    its dependencies require), or :data:`ANYONE` for a route that declares none."""
    out: dict[tuple[str, str], str] = {}
    for route in _api_routes(app.routes):
        roles = list(_requirements(route.dependant))
        need = max(roles, key=lambda r: r.rank).value if roles else ANYONE
        for method in sorted(route.methods or ()):
            out[(method, route.path)] = need
    return out


# -- certfleet serve as a real process ----------------------------------------------------------------


@dataclass
class Served:
    port: int
    home: Path
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def setup_url(self) -> str | None:
        found = re.search(r"(https://\S+/setup/\S+)", self.out())
        return found.group(1) if found else None

    def fingerprint(self) -> str | None:
        found = re.search(r"SHA-256 fingerprint: ([0-9A-F:]+)", self.out())
        return found.group(1).replace(":", "").lower() if found else None


@contextmanager
def serve(
    home: Path, *args: str, env: dict[str, str] | None = None, startup: float = 60.0, nofile: int | None = None
) -> Iterator[Served]:
    """Run ``certfleet serve`` on a free 127.0.0.1 port until the block ends; ``nofile`` lowers
    the number of files the process may open (RLIMIT_NOFILE)."""
    require_peer("certfleet serve")
    port = free_port()
    out_path, err_path = home.parent / f"serve-{port}.out", home.parent / f"serve-{port}.err"

    def limits() -> None:
        if nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "certfleet", "serve", "--bind", "127.0.0.1", "--port", str(port), *args],
            stdout=out,
            stderr=err,
            env={**os.environ, "CERTFLEET_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=limits if nofile is not None else None,  # noqa: PLW1509 (only setrlimit, before exec)
        )
    served = Served(port, home, proc, out_path, err_path)
    try:
        deadline = time.monotonic() + startup
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"certfleet serve exited with {proc.returncode}:\n{served.out()}\n{served.err()}")
            if "certfleet console on" in served.out() and _accepts(port):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"certfleet serve did not start:\n{served.out()}\n{served.err()}")
            time.sleep(0.1)
        yield served
    finally:
        stop_process(proc, signal.SIGINT, timeout=15)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- the steps of the administrator's flow, through the pages ----------------------------------------


def add_node(env: ConsoleEnv, csrf: str, name: str, names: list[str], targets: list[str], **fields: str) -> Any:
    """Add a node through its form (as the admin: the password goes with it, asked again when
    the node runs commands)."""
    data = {
        "csrf_token": csrf,
        "name": name,
        "names": "\n".join(names),
        "targets": "\n".join(targets),
        "transport": "local",
        "password": PASSWORD,
        **fields,
    }
    return env.client.post("/nodes", data=data)


def generate_csr(
    env: ConsoleEnv, csrf: str, lineage: str, nodes: list[str], **fields: str
) -> x509.CertificateSigningRequest:
    import html

    r = env.client.post(
        "/csr",
        data={"csrf_token": csrf, "lineage": lineage, "nodes": nodes, "key": "ec:p256", **fields},
    )
    assert r.status_code == 303, r.text  # post/redirect/get: the CSR's own page
    r = env.client.get(r.headers["location"])
    assert r.status_code == 200, r.text
    found = re.search(r'<pre id="csr-pem">(.*?)</pre>', r.text, re.S)
    assert found
    return x509.load_pem_x509_csr(html.unescape(found.group(1)).encode())


def upload(env: ConsoleEnv, csrf: str, lineage: str, files: list[tuple[str, bytes]], password: str = "") -> Any:
    """Send the CA's files; an import that waits for its confirmation is shown on its own page,
    which this follows to."""
    r = env.client.post(
        "/import",
        data={"csrf_token": csrf, "lineage": lineage, "password": password},
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
    )
    if r.status_code == 303 and r.headers["location"].startswith("/import/"):
        return env.client.get(r.headers["location"])
    return r


def confirm_link(html_text: str) -> str | None:
    found = re.search(r'action="(/import/[^"/]+/confirm)"', html_text)
    return found.group(1) if found else None


def wait_job(env: ConsoleEnv, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = env.client.get(f"/api/v1/deploy/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"the deploy did not finish: {job}")
        time.sleep(0.05)


# -- Chromium, trusting what the test says and nothing more ------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS_ENV = "CERTFLEET_SCREENSHOTS"
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"


def screenshot_folder(tmp_path: Path) -> Path:
    """Where the browser tests put their screenshots: ``docs/screenshots/`` only when
    ``CERTFLEET_SCREENSHOTS=1`` asks to refresh the pictures the docs show, else the test's own
    folder (a plain test run leaves the work tree as it was)."""
    folder = DOCS_SCREENSHOTS if os.environ.get(SCREENSHOTS_ENV) == "1" else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def nss_home(folder: Path) -> Path:
    """A HOME for Chromium with an empty NSS database (~/.pki/nssdb): the one place Chromium on
    Linux reads locally added trust from. Returns the HOME."""
    db = folder / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-N", "--empty-password"], check=True, capture_output=True)
    return folder


def nss_trust(home: Path, nickname: str, cert_file: Path, *, peer: bool = False) -> None:
    """Trust ``cert_file`` in that HOME: as a CA that issues server certificates (``C,,``), or, for
    a self-signed server certificate checked by its fingerprint first, as that one peer (``P,,``)."""
    db = home / ".pki" / "nssdb"
    flags = "P,," if peer else "C,,"
    subprocess.run(
        ["certutil", "-d", f"sql:{db}", "-A", "-n", nickname, "-t", flags, "-i", str(cert_file)],
        check=True,
        capture_output=True,
    )


def admin_in_chromium(p: Any, served: Served, user_home: Path) -> tuple[Any, Any]:
    """Chromium (its HOME ``user_home``, from :func:`nss_home`) trusting the console's bootstrap
    certificate as that one peer, once it matches the fingerprint ``certfleet serve`` printed;
    the administrator made through the setup link and logged in. ``p``: Playwright's handle.
    The browser and the dashboard's page."""
    from playwright.sync_api import expect

    from certfleet.certinfo import fingerprint

    crt = served.home / "console" / "bootstrap.crt"
    assert fingerprint(x509.load_pem_x509_certificate(crt.read_bytes())) == served.fingerprint()
    nss_trust(user_home, "certfleet console bootstrap", crt, peer=True)
    setup = served.setup_url()
    assert setup is not None
    browser = p.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(user_home)}
    )
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(setup.replace("127.0.0.1", "localhost"))
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#username", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")
    return browser, page


def key_needles(key: Any) -> list[bytes]:
    """Every form a private key could leak in: PEM armour, its DER and base64, its secret numbers."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    secrets: list[int] = []
    if isinstance(key, ec.EllipticCurvePrivateKey):
        secrets = [key.private_numbers().private_value]
    elif isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        secrets = [numbers.p, numbers.q, numbers.d]
    else:
        raise AssertionError(f"unexpected key type {type(key)}")
    out = [b"PRIVATE KEY", der, base64.b64encode(der)[:40], base64.b64encode(der)[-40:]]
    for value in secrets:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        out += [raw, raw.hex().encode(), base64.b64encode(raw)[:40]]
    return out
