"""The whole flow in a real browser, against `certfleet serve` on a fresh home, without the command
line: set up the admin, log in, trust the private CA's root, add nodes, generate a CSR with a
chosen common name, import the CA's answer, deploy to a real nginx, create a client deployment
link and fetch the configuration with it; then renew, deploy, plan a deploy (dry run), roll back
and export the version as a PFX. With CERTFLEET_SCREENSHOTS=1 its screenshots refresh
docs/screenshots/; otherwise they stay in the test's own folder.

Chromium ignores no certificate error: it trusts the console's bootstrap certificate as that one
peer (after its fingerprint is compared with the one `certfleet serve` printed, as a person
would), and the test root CA that signs the lineage's certificate, through its NSS database."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from playwright.sync_api import Page, expect, sync_playwright

from certfleet.certinfo import fingerprint
from certfleet.keys import key_matches
from certfleet.store import Store
from certfleet.testing import TestCA, pem
from support.console import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    Served,
    key_needles,
    nss_home,
    nss_trust,
    screenshot_folder,
    serve,
)
from support.servers import NginxServer

pytestmark = pytest.mark.peer  # every test here starts a real server


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshot_folder(tmp_path)


@pytest.fixture
def nginx(tmp_path: Path, pki: TestCA) -> Iterator[tuple[NginxServer, Path]]:
    """nginx serving an older certificate from where certfleet's nginx target keeps live/."""
    old = pki.leaf("localhost")
    folder = tmp_path / "nginx-certs"
    initial = folder / "initial"
    initial.mkdir(parents=True)
    (initial / "fullchain.pem").write_bytes(old.fullchain_pem())
    fd = os.open(initial / "privkey.pem", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, old.key_pem())
    os.close(fd)
    (folder / "live").symlink_to(initial)
    with NginxServer(
        tmp_path / "nginx", cert=folder / "live" / "fullchain.pem", key=folder / "live" / "privkey.pem"
    ) as web:
        yield web, folder


@pytest.fixture(scope="module")
def pki() -> TestCA:
    return TestCA.root("browser Test Root").intermediate("browser Test Intermediate")


def _trust_the_bootstrap(served: Served, user_home: Path) -> None:
    """What a careful person does: compare the fingerprint the browser shows with the one printed."""
    crt = served.home / "console" / "bootstrap.crt"
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert fingerprint(cert) == served.fingerprint()
    nss_trust(user_home, "certfleet console bootstrap", crt, peer=True)


def _one_line(page: Page, selector: str) -> list[int]:
    """How many lines the text of each element matching ``selector`` takes on the screen."""
    counts: list[int] = page.locator(selector).evaluate_all(
        "els => els.map(e => { const r = document.createRange(); r.selectNodeContents(e);"
        " return new Set(Array.from(r.getClientRects(), b => Math.round(b.top))).size; })"
    )
    return counts


def test_whole_flow_in_chromium(tmp_path: Path, pki: TestCA, nginx: tuple[NginxServer, Path], shots: Path) -> None:
    def _shot(page: Page, name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    web, nginx_certs = nginx
    home = tmp_path / "certfleet"
    root_file = tmp_path / "root.pem"
    root_file.write_bytes(pem(pki.root_cert))
    # the private test CA is trusted by the browser (the padlock); the store trusts it through
    # the console below
    user_home = nss_home(tmp_path / "user")
    nss_trust(user_home, "browser test root", root_file)
    gw_folder = tmp_path / "gw1"

    with serve(home) as served, sync_playwright() as p:
        _trust_the_bootstrap(served, user_home)
        base = f"https://localhost:{served.port}"
        setup = served.setup_url()
        assert setup is not None
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(user_home)}
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()

        # -- the one-time setup link, then log in
        page.goto(setup.replace("127.0.0.1", "localhost"))
        page.fill("#username", "admin")
        page.fill("#password", PASSWORD)
        page.fill("#password2", PASSWORD)
        _shot(page, "setup")
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/login$"))
        page.fill("#username", "admin")
        page.fill("#password", "wrong password, wrong")
        page.click("button[type=submit]")
        expect(page.locator(".alert")).to_contain_text("wrong account name or password")
        page.fill("#password", PASSWORD)
        _shot(page, "login")
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Dashboard")
        expect(page.locator(".alert.warn")).to_contain_text("bootstrap certificate")

        # -- trust the private CA's root, in the console
        page.click("text=Trust anchors")
        page.set_input_files("#anchor-files", str(root_file))
        page.click("#add-anchor")
        expect(page.locator(".alert.good")).to_contain_text("Trust anchor browser Test Root added")
        expect(page.locator(f"tr[data-anchor='{fingerprint(pki.root_cert)}']")).to_be_visible()
        _shot(page, "trust")

        # -- nodes: the nginx server, and a gateway that takes PEM files
        page.click("text=Nodes")
        page.click("text=Add a node")
        page.fill("#name", "main")
        page.fill("#names", "localhost")
        page.fill("#targets", f"nginx:{nginx_certs}")
        page.fill("#test_cmd", web.test_cmd)
        page.fill("#reload_cmd", web.reload_cmd)
        page.fill("#probe", web.probe)
        page.fill("#new_lineage", "web")
        page.click("text=Save node")  # without the password again, commands are not saved
        expect(page.locator(".alert.bad")).to_contain_text("needs your password again")
        page.fill("#password", PASSWORD)
        page.click("text=Save node")
        expect(page.locator(".alert.good")).to_contain_text("Node main saved.")
        page.goto(f"{base}/nodes/new")
        page.fill("#name", "gw1")
        page.fill("#names", "gw.example.test\nmbg.example.test")
        page.fill("#targets", f"pem:{gw_folder}")
        page.check("input[name=lineages][value=web]")
        page.click("text=Save node")
        expect(page.locator("tr[data-node=gw1]")).to_be_visible()
        # a 1400-px window: the list takes its width, and no path or endpoint breaks inside
        page.set_viewport_size({"width": 1400, "height": 900})
        table = page.locator("table.nodes").bounding_box()
        assert table is not None and table["width"] > 1400 * 0.85, table
        assert _one_line(page, "table.nodes .token") == [1] * 6  # 2 targets, 2 transports, 2 probes
        _shot(page, "nodes")
        page.set_viewport_size({"width": 1280, "height": 900})

        # -- generate the CSR: names prefilled from the nodes, both ways to list them shown, the
        # common name chosen among them (the main server's, not the gateway's that sorts first)
        page.click("text=Generate CSR")
        expect(page.locator("#lineage")).to_have_value("web")
        for name in ("localhost", "gw.example.test", "mbg.example.test"):
            expect(page.locator(f"code:text-is('{name}')").first).to_be_visible()
        expect(page.locator("#organizational_unit")).to_have_count(0)
        page.select_option("#common_name", "localhost")
        page.fill("#organization", "Example Org")
        page.fill("#country", "CA")
        _shot(page, "csr")
        page.click("text=Generate key and CSR")
        expect(page.locator("h1")).to_contain_text("CSR for web")
        page.reload()  # F5 on "CSR ready" shows the same CSR: no second key
        expect(page.locator("h1")).to_contain_text("CSR for web, version 1")
        with page.expect_download() as download_info:
            page.click("#download-csr")
        csr_file = tmp_path / "web.csr"
        download_info.value.save_as(csr_file)
        csr = x509.load_pem_x509_csr(csr_file.read_bytes())
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
        with Store.open(home) as store:
            assert [v.number for v in store.versions("web")] == [1]
        _shot(page, "csr-done")
        # the request waits on the dashboard, its CSR there to download again
        page.click("text=Dashboard")
        expect(page.locator("[data-pending='1']")).to_contain_text("waiting for the CA")

        # -- the CA answers; import shows the findings before saving
        cert = pki.sign_csr(csr)
        (tmp_path / "server.crt").write_bytes(pem(cert))
        (tmp_path / "intermediate.crt").write_bytes(pem(pki.cert))
        page.click("text=Import")
        page.set_input_files("#files", [str(tmp_path / "server.crt"), str(tmp_path / "intermediate.crt")])
        page.click("text=Read and check")
        expect(page.locator(".alert.good")).to_contain_text("Everything checks out")
        expect(page.locator("svg.chain")).to_be_visible()
        _shot(page, "import-findings")
        with Store.open(home) as store:
            assert store.lineage("web").active is None  # nothing saved before the confirmation
        page.click("#confirm-import")
        expect(page.locator(".alert.good")).to_contain_text("Certificate imported into web")

        # -- the console itself switched to the new certificate, without a restart
        fresh = browser.new_context()
        probe_page = fresh.new_page()
        details: dict[str, object] = {}
        for _ in range(50):
            response = probe_page.goto(f"{base}/login")
            assert response is not None
            details = dict(response.security_details() or {})
            if details.get("issuer") == "browser Test Intermediate":
                break
            probe_page.wait_for_timeout(200)
        assert details.get("issuer") == "browser Test Intermediate", details
        # ...and the address `certfleet serve` printed keeps its bootstrap certificate
        at_printed = probe_page.goto(f"https://127.0.0.1:{served.port}/login")
        assert at_printed is not None and at_printed.ok
        printed = dict(at_printed.security_details() or {})
        assert printed.get("issuer") != "browser Test Intermediate", printed
        fresh.close()

        # -- deploy to both nodes and watch each one's progress
        page.click("text=Deploy")
        expect(page.locator("input[name=nodes][value=main]")).to_be_checked()
        page.click("button:text-is('Deploy')")
        expect(page.locator("#job-state")).to_have_attribute("data-state", "done", timeout=60_000)
        expect(page.locator("#job-state")).to_contain_text("every node took it")
        expect(page.locator("tr[data-node=main] .steps")).to_contain_text("reload → probe")
        _shot(page, "deploy")

        # -- the dashboard: countdown, timeline, and what nginx serves now
        row = page.locator("tr[data-node=main]")
        for _ in range(50):  # nginx's old worker may take a connection for a moment after the reload
            page.goto(f"{base}/?refresh=1")
            if "active version" in row.inner_text():
                break
            page.wait_for_timeout(100)
        expect(row).to_contain_text("active version")
        expect(row).to_contain_text("ok")
        expect(page.locator("svg.timeline")).to_be_visible()
        expect(page.locator(".countdown")).to_have_text("89")
        expect(page.locator(".alert.warn")).to_have_count(0)  # the bootstrap notice is gone
        _shot(page, "dashboard")

        # -- the certificate, its chain drawn leaf to root
        page.click(f"a[href='/certificates/{fingerprint(cert)}'] >> nth=0")
        expect(page.locator("svg.chain")).to_contain_text("root: browser Test Root")
        _shot(page, "certificate")

        # -- a client deployment link for a phone user, and its QR code
        page.click("text=Clients")
        page.fill("#pname", "mobile")
        page.fill("#phost", f"localhost:{served.port}")
        page.click("text=Save profile")
        page.fill("#uname", "alice")
        page.fill("#udisplay", "Alice Smith")
        page.click("text=Add user")
        page.click("text=New link")
        expect(page.locator("#new-link svg")).to_be_visible()
        link = page.locator("#link-url").inner_text().strip()
        assert link.startswith(f"https://localhost:{served.port}/client/")
        expect(page.locator("[data-warning]")).to_have_count(0)
        _shot(page, "clients")

        # -- a link scanner opens the link: a page, nothing used up
        scanner = browser.new_context()
        preview = scanner.new_page().goto(link)
        assert preview is not None and preview.status == 200
        scanner.close()
        # -- the phone opens it and asks for its configuration, once
        phone = browser.new_context()
        phone_page = phone.new_page()
        opened = phone_page.goto(link)
        assert opened is not None and opened.status == 200
        expect(phone_page.locator("#client-link")).to_contain_text("Alice Smith")
        with phone_page.expect_response(lambda r: r.request.method == "POST") as fetched:
            phone_page.click("#get-configuration")
        response = fetched.value
        assert response.status == 200 and response.headers["cache-control"] == "no-store"
        config = json.loads(phone_page.locator("body").inner_text())
        assert config["username"] == "alice" and config["server"] == "localhost"
        assert config["port"] == served.port
        issuer_key = pki.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert config["ca_pin_sha256"] == base64.b64encode(hashlib.sha256(issuer_key).digest()).decode()
        assert config["names"] == "gw.example.test,mbg.example.test,localhost"
        again = phone_page.goto(link)
        assert again is not None and again.status == 410
        phone.close()

        # -- an API token for automation, shown once; a real HTTPS client uses it
        page.click("text=API tokens")
        page.fill("#name", "prometheus")
        page.click("text=Create token")
        token = page.locator("#new-token").inner_text().strip()
        assert token.startswith("cft_")
        _shot(page, "tokens")
        tls = ssl.create_default_context(cafile=str(root_file))
        with httpx2.Client(verify=tls, headers={"authorization": f"Bearer {token}"}) as automation:
            assert automation.get(f"{base}/api/v1/me").json()["token"] == "prometheus"
            metrics = automation.get(f"{base}/metrics").text
            assert 'certfleet_node_serves_active{lineage="web",node="main"} 1.0' in metrics
            assert automation.get(f"{base}/api/v1/openapi.json").json()["info"]["title"] == "certfleet console API"
        page.goto(f"{base}/tokens")
        expect(page.locator("tr", has_text="prometheus")).to_have_count(1)
        expect(page.locator("body")).not_to_contain_text(token)

        # -- a renewal: the CSR form keeps the common name, the answer is imported and deployed
        page.click("text=Generate CSR")
        expect(page.locator("#common_name")).to_have_value("localhost")
        page.click("text=Generate key and CSR")
        expect(page.locator("h1")).to_contain_text("CSR for web, version 2")
        renewed = pki.sign_csr(x509.load_pem_x509_csr(page.locator("#csr-pem").inner_text().encode()))
        (tmp_path / "renewed.crt").write_bytes(pem(renewed))
        page.click("text=Import")
        page.set_input_files("#files", [str(tmp_path / "renewed.crt"), str(tmp_path / "intermediate.crt")])
        page.click("text=Read and check")
        page.click("#confirm-import")
        page.click("text=Deploy")
        page.click("button:text-is('Deploy')")
        expect(page.locator("#job-state")).to_have_attribute("data-state", "done", timeout=60_000)
        expect(page.locator("#job-state")).to_contain_text("every node took it")

        # -- a dry run: each node says what a deploy would do, nothing changes
        page.click("text=Deploy")
        page.click("#dry-run")
        expect(page.locator("h1")).to_contain_text("Dry run")
        expect(page.locator("#job-state")).to_have_attribute("data-state", "done", timeout=60_000)
        expect(page.locator("tr[data-node=main] .outcome")).to_contain_text("unchanged")
        # gw1 has no probe: its live files, already this version, say it has nothing to do either
        expect(page.locator("tr[data-node=gw1] .outcome")).to_contain_text("unchanged")
        _shot(page, "dry-run")

        # -- roll back to version 1, on every node: it becomes the active version again
        page.click("text=Dashboard")
        page.click("#lineage-web >> text=Roll back")
        expect(page.locator("#to")).to_have_value("1")
        _shot(page, "rollback")
        page.click("#rollback-button")
        expect(page.locator("h1")).to_contain_text("Rolling back")
        expect(page.locator("#job-state")).to_have_attribute("data-state", "done", timeout=60_000)
        expect(page.locator("#job-state")).to_contain_text("every node took it")
        expect(page.locator("tr[data-node=main] .steps")).to_contain_text("reload → probe")
        with Store.open(home) as store:
            active = store.lineage("web").active
            assert active is not None and active.number == 1

        # -- export version 1 as a PFX for a server certfleet does not reach
        page.click("text=History")
        page.click("a[href='/export?lineage=web&version=1']")
        page.select_option("#format", "pkcs12")
        page.fill("#password", "export password")
        page.fill("#password2", "export password")
        _shot(page, "export")
        with page.expect_download() as exported:
            page.click("#export-button")
        assert exported.value.suggested_filename == "web-v1.pfx"
        pfx_file = tmp_path / "web-v1.pfx"
        exported.value.save_as(pfx_file)
        pfx_key, pfx_cert, pfx_chain = pkcs12.load_key_and_certificates(pfx_file.read_bytes(), b"export password")
        assert pfx_cert == cert and pfx_chain == [pki.cert]
        assert pfx_key is not None and key_matches(pfx_key, cert)

        # -- history and audit
        page.click("text=History")
        expect(page.locator("body")).to_contain_text("console:admin")
        _shot(page, "history")
        page.click("text=Audit")
        expect(page.locator("body")).to_contain_text("client.fetch")
        expect(page.locator("tr[data-action=rollback]")).to_have_count(1)
        expect(page.locator("body")).not_to_contain_text("{'")  # details in words, not Python's dict text
        _shot(page, "audit")
        browser.close()
        taken = {p.stem for p in shots.glob("*.png") if p.stat().st_size > 0}
        assert {"setup", "login", "trust", "nodes", "csr", "deploy", "dry-run", "rollback", "export"} <= taken
        assert {"dashboard", "clients", "audit"} <= taken

        # the nodes really have it: nginx serves it, the gateway's files hold it
        with Store.open(home) as store:
            material = store.material("web")
        assert (gw_folder / "live" / "cert.pem").read_bytes() == pem(cert)
        served_leaf = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{web.port}", "-servername", "localhost"],
            input=b"", capture_output=True, timeout=30, check=False,
        ).stdout  # fmt: skip
        assert x509.load_pem_x509_certificate(served_leaf) == cert

        # no line of the console's output carries the key or the link's token
        output = (served.out() + served.err()).encode()
        for needle in key_needles(material.key):
            assert needle not in output
        assert link.rsplit("/", 1)[1].encode() not in output
        assert b"/client/\xe2\x80\xa6" in output  # the fetch was logged, its token cut off
