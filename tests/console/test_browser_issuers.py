"""ACME in a real browser, against `certfleet serve`: the lineage's Issuing page, *Issue now*, and
the job's page following each name's authorization by its script until Pebble has issued the new
version; the Issuers page lists the account. (The forms themselves are tested over HTTP in
test_console_issuers.py; this is the page a person watches.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from playwright.sync_api import expect, sync_playwright

from certfleet.acme import accounts
from certfleet.fleet.nodes import make_node
from certfleet.store import Store
from support.bind import BindServer
from support.console import (
    admin_in_chromium,
    nss_home,
    screenshot_folder,
    serve,
)
from support.pebble import MAIN_IP, PebbleServer, WebrootNginx, bind, http_port, pebble, snakeoil

pytestmark = pytest.mark.peer  # certfleet serve, Pebble, BIND, nginx, Chromium

__all__ = ["bind", "http_port", "pebble"]  # fixtures

NAMES = ("acme.test", "www.acme.test")


@pytest.fixture
def node(tmp_path: Path, http_port: int) -> Iterator[WebrootNginx]:
    base = tmp_path / "main"
    server = WebrootNginx(
        base / "nginx", webroot=base / "www", http_host=MAIN_IP, http_port=http_port, live=base / "tls" / "live",
        placeholder=snakeoil(base / "snakeoil"),
    )  # fmt: skip
    with server:
        yield server


def test_issue_now_followed_live_in_chromium(
    tmp_path: Path, pebble: PebbleServer, bind: BindServer, http_port: int, node: WebrootNginx
) -> None:
    home = tmp_path / "certfleet"
    with Store.init(home) as store:
        store.add_node(
            make_node("main", NAMES, [f"pem:{tmp_path / 'out'}"], options={"webroot": str(node.webroot)}),
            lineage="web",
        )
        store.add_trust_anchor(x509.load_pem_x509_certificate(pebble.root_pem()))
        accounts.add_acme_issuer(
            store, "pebble", pebble.directory, agree_tos=True, ca_bundle=pebble.ca_bundle.read_text()
        )
        store.set_policy("web", issuers=["pebble"])
    shots = screenshot_folder(tmp_path)
    user_home = nss_home(tmp_path / "user")
    env = {**bind.env(), "CERTFLEET_ACME_HTTP_PORT": str(http_port)}

    # without the autopilot, which would issue the lineage by itself before the button is pressed
    with serve(home, "--no-autopilot", env=env) as served, sync_playwright() as p:
        browser, page = admin_in_chromium(p, served, user_home)

        page.click("nav >> text=Issuers")
        expect(page.locator("tr[data-issuer=pebble]")).to_contain_text("valid")
        page.screenshot(path=str(shots / "issuers.png"), full_page=True)
        page.click("#lineage-links >> text=web")
        expect(page.locator("h1")).to_contain_text("Issuing web")
        expect(page.locator("#solvers tr[data-name='www.acme.test']")).to_contain_text("http-01 on main")
        page.screenshot(path=str(shots / "issuing.png"), full_page=True)

        page.click("#issue-now")
        expect(page.locator("h1")).to_contain_text("Issuing web")
        # the script follows the job and shows the finished page: every name valid, the version
        expect(page.locator("#job-state")).to_have_attribute("data-state", "done", timeout=120_000)
        expect(page.locator("#job-state")).to_contain_text("issued: version 1 by pebble")
        for name in NAMES:
            expect(page.locator(f"#job-names tr[data-name='{name}'] .state")).to_have_text("valid")
        expect(page.locator("#preflight tr[data-ok=yes]")).to_have_count(len(NAMES))
        page.screenshot(path=str(shots / "issue-job.png"), full_page=True)
        browser.close()
    with Store.open(home) as store:
        active = store.lineage("web").active
        assert active is not None and active.number == 1
