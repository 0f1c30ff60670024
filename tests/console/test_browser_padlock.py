"""The padlock: Chromium, trusting the tests' root CA through its NSS database and nothing else
(no certificate error is ignored), loads the console when the served chain is complete and
refuses it when the intermediate is missing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error, sync_playwright

from certfleet.store import Store
from certfleet.testing import TestCA
from support.console import CHROMIUM, CHROMIUM_ARGS, nss_home, nss_trust, serve

pytestmark = pytest.mark.peer  # every test here starts a real server


@pytest.fixture(scope="module")
def pki() -> TestCA:
    return TestCA.root("padlock Test Root").intermediate("padlock Test Intermediate")


def _visit(url: str, home: Path) -> dict[str, Any]:
    """Load ``url`` in a fresh Chromium whose HOME (and so NSS database) is ``home``."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(home)})
        try:
            page = browser.new_context().new_page()
            security: dict[str, Any] = {}
            cdp = page.context.new_cdp_session(page)
            cdp.send("Security.enable")
            cdp.on("Security.visibleSecurityStateChanged", lambda e: security.update(e["visibleSecurityState"]))
            try:
                response = page.goto(url)
            except Error as exc:
                return {"error": str(exc).splitlines()[0]}
            assert response is not None
            page.wait_for_timeout(200)  # the security state event follows the load
            return {
                "status": response.status,
                "title": page.title(),
                "details": response.security_details(),
                "state": security.get("securityState"),
            }
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("chain", "root_trusted", "loads"),
    [
        ("complete", True, True),
        ("intermediate missing", True, False),
        ("complete", False, False),  # the control: the root in the NSS database is what Chromium trusts
    ],
)
def test_padlock(pki: TestCA, tmp_path: Path, chain: str, root_trusted: bool, loads: bool) -> None:
    leaf = pki.leaf("localhost", "127.0.0.1")
    home = tmp_path / "certfleet"
    with Store.init(home) as store:
        store.issue("console", leaf.cert, leaf.chain if chain == "complete" else [], key=leaf.key)
    user_home = nss_home(tmp_path / "user")
    if root_trusted:
        root_file = tmp_path / "root.pem"
        root_file.write_bytes(pki.parent.cert_pem() if pki.parent else b"")
        nss_trust(user_home, "padlock test root", root_file)

    with serve(home, "--lineage", "console") as served:
        seen = _visit(f"https://localhost:{served.port}/login", user_home)

    if loads:
        assert "error" not in seen, seen
        assert seen["status"] == 200 and seen["title"] == "Log in · certfleet"
        assert seen["details"]["issuer"] == "padlock Test Intermediate"
        assert seen["details"]["protocol"] in ("TLS 1.3", "TLS 1.2")
        assert seen["state"] == "secure", seen
    else:
        assert "net::ERR_CERT_AUTHORITY_INVALID" in seen.get("error", ""), seen
