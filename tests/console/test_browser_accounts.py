"""Accounts in a real browser, against `certfleet serve`: the admin adds an account on the
Accounts page with a generated password, copies it from the one page that shows it, and that
account logs in with it in another browser, without the Accounts link. (The forms themselves are
tested over HTTP in test_console_accounts.py.)"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from cryptography import x509
from playwright.sync_api import expect, sync_playwright

from certfleet.certinfo import fingerprint
from support.console import CHROMIUM, CHROMIUM_ARGS, PASSWORD, nss_home, nss_trust, screenshot_folder, serve

pytestmark = pytest.mark.peer  # certfleet serve, Chromium


def test_an_admin_adds_an_account_that_then_logs_in(tmp_path: Path) -> None:
    home = tmp_path / "certfleet"
    shots = screenshot_folder(tmp_path)
    user_home = nss_home(tmp_path / "user")
    with serve(home, "--no-autopilot") as served, sync_playwright() as p:
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

        page.click("nav >> text=Accounts")
        expect(page.locator("h1")).to_have_text("Accounts")
        page.fill("#username", "alice")
        page.select_option("#role", "operator")
        page.fill("#lineages", "web")
        page.check("#generate")
        page.click("#add-account")
        expect(page.locator("#new-password")).to_contain_text("Account alice added")
        password = page.locator("#generated-password").inner_text().strip()
        assert len(password) >= 20
        row = page.locator("tr[data-account=alice]")
        expect(row).to_contain_text("operator")
        expect(row).to_contain_text("web")
        expect(row).to_contain_text("never")
        page.screenshot(path=str(shots / "accounts.png"), full_page=True)
        page.reload()  # shown once
        expect(page.locator("#generated-password")).to_have_count(0)
        assert password not in page.content()

        other = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        other.goto(page.url.split("/accounts")[0] + "/login")
        other.fill("#username", "alice")
        other.fill("#password", password)
        other.click("button[type=submit]")
        expect(other.locator("h1")).to_have_text("Dashboard")
        expect(other.locator(".who")).to_contain_text("alice")
        expect(other.locator("nav >> text=Accounts")).to_have_count(0)

        page.goto(page.url.split("?")[0])
        expect(page.locator("tr[data-account=alice]")).not_to_contain_text("never")
        browser.close()
