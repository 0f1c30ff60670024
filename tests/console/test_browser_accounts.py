"""Accounts in a real browser, against `certfleet serve`: the admin adds an account on the
Accounts page with a generated password, copies it from the one page that shows it, and that
account logs in with it in another browser, without the Accounts link. (The forms themselves are
tested over HTTP in test_console_accounts.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from support.console import (
    admin_in_chromium,
    nss_home,
    screenshot_folder,
    serve,
)

pytestmark = pytest.mark.peer  # certfleet serve, Chromium


def test_an_admin_adds_an_account_that_then_logs_in(tmp_path: Path) -> None:
    home = tmp_path / "certfleet"
    shots = screenshot_folder(tmp_path)
    user_home = nss_home(tmp_path / "user")
    with serve(home, "--no-autopilot") as served, sync_playwright() as p:
        browser, page = admin_in_chromium(p, served, user_home)

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
