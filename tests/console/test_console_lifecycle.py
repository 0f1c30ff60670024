"""The console does the whole job without the command line: trust a private root, request with a
chosen common name (no unit), see the request wait on the dashboard, import, deploy or only plan a
deploy, roll back, export a version as a PFX or PEM files; and a reload never makes a second key or
reads an upload twice. On SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import io
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from certfleet.certinfo import fingerprint
from certfleet.console.settings import ConsoleSettings
from certfleet.keys import key_matches
from certfleet.testing import TestCA, pem
from support.console import (
    ConsoleEnv,
    add_node,
    confirm_link,
    generate_csr,
    key_needles,
    logged_in,
    make_env,
    upload,
    wait_job,
)
from support.postgres import Backend, backend, pg_url, postgres

__all__ = ["backend", "pg_url", "postgres"]  # the fixtures, imported where they are used

PASSWORD = "pfx password 1"
_PKCS8 = (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture
def env(backend: Backend) -> ConsoleEnv:
    return make_env(backend.home, settings=ConsoleSettings(probe_timeout=2.0, fetch_aia=False))


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.root("lifecycle Test Root").intermediate("lifecycle Test Intermediate")


def _issue(env: ConsoleEnv, csrf: str, ca: TestCA) -> x509.Certificate:
    """A CSR for web through the form, the CA's answer imported and confirmed: the new active version."""
    csr = generate_csr(env, csrf, "web", [])
    cert = ca.sign_csr(csr)
    preview = upload(env, csrf, "web", [("server.crt", pem(cert)), ("chain.crt", pem(ca.cert))])
    assert "Everything checks out" in preview.text, preview.text
    assert env.client.post(confirm_link(preview.text) or "", data={"csrf_token": csrf}).status_code == 303
    return cert


def _web(env: ConsoleEnv, csrf: str, tmp_path: Path) -> None:
    for name, names in (("main", ["www.example.test"]), ("gw1", ["gw.example.test", "mbg.example.test"])):
        r = add_node(env, csrf, name, names, [f"pem:{tmp_path / name}"], **{"new_lineage": "web"})
        assert r.status_code == 303, r.text


def _live_cert(tmp_path: Path, node: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((tmp_path / node / "live" / "cert.pem").read_bytes())


# -- trust anchors ---------------------------------------------------------------------------------------


def test_trust_a_private_root_in_the_console_then_import(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    csrf = logged_in(env)
    _web(env, csrf, tmp_path)
    csr = generate_csr(env, csrf, "web", [])
    files = [("server.crt", pem(ca.sign_csr(csr))), ("chain.crt", pem(ca.cert))]
    # not trusted yet: refused, and the hint names the console's page, not a command
    refused = upload(env, csrf, "web", files)
    assert "This import would be refused" in refused.text
    assert "add its root on the Trust anchors page" in refused.text
    assert "certfleet trust add" not in refused.text

    # a server certificate is no trust anchor
    leaf = ca.leaf("www.example.test")
    r = env.client.post("/trust", data={"csrf_token": csrf}, files=[("files", ("leaf.pem", leaf.cert_pem()))])
    assert r.status_code == 400 and "not a CA certificate" in r.text
    r = env.client.post("/trust", data={"csrf_token": csrf}, files=[("files", ("root.pem", pem(ca.root_cert)))])
    assert r.status_code == 303, r.text
    page = env.client.get(r.headers["location"]).text
    assert "Trust anchor lifecycle Test Root added" in page
    assert f'data-anchor="{fingerprint(ca.root_cert)}"' in page
    assert [e.actor for e in env.store.audit_log(action="trust.add")] == ["console:admin"]

    accepted = upload(env, csrf, "web", files)
    assert "Everything checks out" in accepted.text

    # removing asks first; the form without the answer only leads to the question
    path = f"/trust/{fingerprint(ca.root_cert)}/remove"
    assert env.client.post(path, data={"csrf_token": csrf}).headers["location"] == path
    assert len(env.store.trust_anchors()) == 1
    assert "Stop trusting CN=lifecycle Test Root,O=certfleet tests?" in env.client.get(path).text
    r = env.client.post(path, data={"csrf_token": csrf, "confirm": "yes"})
    assert r.status_code == 303 and env.store.trust_anchors() == []


def test_trust_anchors_through_the_api(env: ConsoleEnv, ca: TestCA) -> None:
    csrf = logged_in(env)
    h = {"x-csrf-token": csrf}
    added = env.client.post("/api/v1/trust-anchors", files=[("files", ("root.pem", pem(ca.root_cert)))], headers=h)
    assert added.status_code == 201, added.text
    assert added.json()[0]["fingerprint"] == fingerprint(ca.root_cert) and added.json()[0]["added"] is True
    listed = env.client.get("/api/v1/trust-anchors").json()
    assert [a["fingerprint"] for a in listed] == [fingerprint(ca.root_cert)]
    gone = env.client.delete(f"/api/v1/trust-anchors/{fingerprint(ca.root_cert)}", headers=h)
    assert gone.json() == {"removed": fingerprint(ca.root_cert)}
    assert env.client.get("/api/v1/trust-anchors").json() == []


# -- the CSR form ----------------------------------------------------------------------------------------


def test_csr_form_has_a_common_name_choice_and_no_unit(env: ConsoleEnv, tmp_path: Path) -> None:
    csrf = logged_in(env)
    _web(env, csrf, tmp_path)
    form = env.client.get("/csr?lineage=web").text
    assert 'name="organizational_unit"' not in form
    assert '<select id="common_name" name="common_name">' in form
    for name in ("www.example.test", "gw.example.test", "mbg.example.test"):
        assert f"<option >{name}</option>" in form or f"<option selected>{name}</option>" in form
    # the gateway's name sorts first; the administrator chooses the main server's
    csr = generate_csr(env, csrf, "web", ["main", "gw1"], common_name="www.example.test", organization="Example")
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "www.example.test"
    assert not csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert sorted(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)) == ["gw.example.test", "mbg.example.test", "www.example.test"]  # fmt: skip
    # the next form keeps the choice
    assert "<option selected>www.example.test</option>" in env.client.get("/csr?lineage=web").text

    h = {"x-csrf-token": csrf}
    unit = env.client.post("/api/v1/lineages/web/csr", json={"subject": {"organizational_unit": "IT"}}, headers=h)
    assert unit.status_code == 422 and "organizational_unit" in unit.json()["error"]
    api = env.client.post("/api/v1/lineages/web/csr", json={"common_name": "mbg.example.test"}, headers=h)
    assert api.status_code == 201 and "CN=mbg.example.test" in api.json()["subject"]


def test_reloading_csr_ready_makes_no_new_key(env: ConsoleEnv, tmp_path: Path) -> None:
    csrf = logged_in(env)
    _web(env, csrf, tmp_path)
    r = env.client.post("/csr", data={"csrf_token": csrf, "lineage": "web", "nodes": ["main"], "key": "ec:p256"})
    assert r.status_code == 303 and r.headers["location"] == "/csr/web/1"
    first = env.client.get("/csr/web/1").text
    again = env.client.get("/csr/web/1").text  # F5
    assert "CSR ready" in first and first.split('<pre id="csr-pem">')[1] == again.split('<pre id="csr-pem">')[1]
    assert [v.number for v in env.store.versions("web")] == [1]


def test_pending_request_shown_on_the_dashboard_with_its_csr(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)
    _web(env, csrf, tmp_path)
    _issue(env, csrf, ca)
    generate_csr(env, csrf, "web", [])  # the renewal, waiting for the CA while version 1 is active
    page = env.client.get("/").text
    assert 'data-pending="2"' in page and "waiting for the CA" in page
    assert 'href="/csr/web/2.csr"' in page
    csr = env.client.get("/csr/web/2.csr")
    assert csr.status_code == 200 and csr.content.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    assert env.store.lineage("web").active is not None  # the active one stays


def test_import_findings_survive_a_reload(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)
    _web(env, csrf, tmp_path)
    cert = ca.sign_csr(generate_csr(env, csrf, "web", []))
    r = env.client.post(
        "/import",
        data={"csrf_token": csrf, "lineage": "web"},
        files=[("files", ("server.crt", pem(cert))), ("files", ("chain.crt", pem(ca.cert)))],
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/import/")
    for _ in range(2):  # F5 on the findings shows them again; nothing is read twice or saved
        assert "Everything checks out" in env.client.get(r.headers["location"]).text
    assert env.store.lineage("web").active is None


# -- deploy, dry run, rollback -----------------------------------------------------------------------------


def test_dry_run_then_rollback_from_the_console(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)
    _web(env, csrf, tmp_path)
    v1 = _issue(env, csrf, ca)
    r = env.client.post("/deploy", data={"csrf_token": csrf, "lineage": "web", "nodes": ["main", "gw1"]})
    assert wait_job(env, r.headers["location"].rsplit("/", 1)[1])["ok"]
    v2 = _issue(env, csrf, ca)

    # the dry run says what a deploy would change, and changes nothing
    r = env.client.post(
        "/deploy", data={"csrf_token": csrf, "lineage": "web", "nodes": ["main", "gw1"], "action": "dry-run"}
    )
    assert r.status_code == 303
    job = wait_job(env, r.headers["location"].rsplit("/", 1)[1])
    assert job["kind"] == "dry-run" and job["ok"]
    assert {n["outcome"]["outcome"] for n in job["nodes"]} == {"planned"}
    assert all("would deploy" in n["outcome"]["message"] for n in job["nodes"])
    assert _live_cert(tmp_path, "main") == v1 and len(env.store.deployments()) == 1
    assert "Dry run: deploying" in env.client.get(r.headers["location"]).text

    r = env.client.post("/deploy", data={"csrf_token": csrf, "lineage": "web", "nodes": ["main", "gw1"]})
    assert wait_job(env, r.headers["location"].rsplit("/", 1)[1])["ok"]
    assert _live_cert(tmp_path, "main") == v2

    # roll back: the page proposes version 1, to every node, which makes it the active one again
    form = env.client.get("/rollback?lineage=web").text
    assert '<option value="1" selected>' in form
    assert 'href="/rollback?lineage=web"' in env.client.get("/").text
    r = env.client.post("/rollback", data={"csrf_token": csrf, "lineage": "web", "to": "1", "nodes": ["main", "gw1"]})
    assert r.status_code == 303
    job = wait_job(env, r.headers["location"].rsplit("/", 1)[1])
    assert job["kind"] == "rollback" and job["ok"] and job["activates"], job
    assert _live_cert(tmp_path, "main") == v1 and _live_cert(tmp_path, "gw1") == v1
    active = env.store.lineage("web").active
    assert active is not None and active.number == 1
    assert env.store.audit_log(action="rollback")[0].actor == "console:admin"
    assert "Rolling back <code>web</code> to version 1" in env.client.get(r.headers["location"]).text

    # through the API: a rollback of one node to version 2 leaves the active version alone
    h = {"x-csrf-token": csrf}
    started = env.client.post("/api/v1/lineages/web/rollback", json={"nodes": ["gw1"], "to": 2}, headers=h)
    assert started.status_code == 202, started.text
    assert wait_job(env, started.json()["id"])["ok"]
    assert _live_cert(tmp_path, "gw1") == v2 and _live_cert(tmp_path, "main") == v1
    still = env.store.lineage("web").active
    assert still is not None and still.number == 1
    planned = env.client.post("/api/v1/lineages/web/deploy", json={"dry_run": True}, headers=h)
    assert wait_job(env, planned.json()["id"])["kind"] == "dry-run"


# -- export ------------------------------------------------------------------------------------------------


def test_export_a_version_as_pfx_and_as_pem_files(env: ConsoleEnv, ca: TestCA, tmp_path: Path) -> None:
    env.store.add_trust_anchor(ca.root_cert)
    csrf = logged_in(env)
    _web(env, csrf, tmp_path)
    cert = _issue(env, csrf, ca)
    key = env.store.material("web").key
    form = env.client.get("/export?lineage=web").text
    assert 'name="password2"' in form and "PKCS#12" in form
    base = {"csrf_token": csrf, "lineage": "web", "version": "1"}

    # a key leaves only encrypted, with the password typed twice
    r = env.client.post("/export", data={**base, "format": "pkcs12", "password": "", "password2": ""})
    assert r.status_code == 400 and "type a password" in r.text
    r = env.client.post("/export", data={**base, "format": "pkcs12", "password": PASSWORD, "password2": "other"})
    assert r.status_code == 400 and "the two passwords differ" in r.text

    pfx = env.client.post("/export", data={**base, "format": "pkcs12", "password": PASSWORD, "password2": PASSWORD})
    assert pfx.status_code == 200
    assert pfx.headers["content-disposition"] == 'attachment; filename="web-v1.pfx"'
    opened_key, opened_cert, extra = pkcs12.load_key_and_certificates(pfx.content, PASSWORD.encode())
    assert opened_cert == cert and extra == [ca.cert]
    assert opened_key is not None and key_matches(opened_key, cert)
    # the openssl CLI reads it too, the legacy form as well (what Windows Server 2016 imports)
    legacy = env.client.post(
        "/export", data={**base, "format": "pkcs12", "password": PASSWORD, "password2": PASSWORD, "legacy": "on"}
    )
    for name, data in (("modern.pfx", pfx.content), ("legacy.pfx", legacy.content)):
        (tmp_path / name).write_bytes(data)
        out = subprocess.run(
            ["openssl", "pkcs12", "-in", str(tmp_path / name), "-nokeys", "-passin", f"pass:{PASSWORD}",
             ],
            capture_output=True, check=False, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert x509.load_pem_x509_certificate(out.stdout) == cert

    files = env.client.post("/export", data={**base, "format": "nginx", "password": PASSWORD, "password2": PASSWORD})
    assert files.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(files.content)) as archive:
        assert sorted(archive.namelist()) == ["web-v1/fullchain.pem", "web-v1/privkey.pem"]
        private = archive.read("web-v1/privkey.pem")
        assert stat.S_IMODE(archive.getinfo("web-v1/privkey.pem").external_attr >> 16) == 0o600
        assert archive.read("web-v1/fullchain.pem") == pem(cert, ca.cert)
    assert private.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert key_matches(serialization.load_pem_private_key(private, PASSWORD.encode()), cert)

    # every export is audited in the account's name; nothing is left behind in the store's home
    assert [e.actor for e in env.store.audit_log(action="export")] == ["console:admin"] * 3
    assert not [p for p in (env.home / "console").iterdir() if p.name.startswith("export-")]
    # no clear key in any answer: neither its DER nor its secret ("PRIVATE KEY" is in the encrypted
    # one, and the end of an EC key's DER is its public point, which the CSR carries too)
    der_tail = base64.b64encode(key.private_bytes(*_PKCS8))[-40:]
    for needle in key_needles(key)[1:]:
        assert needle == der_tail or not any(needle in body for body in env.responses)

    h = {"x-csrf-token": csrf}
    api = env.client.post("/api/v1/lineages/web/export", json={"format": "pem", "password": PASSWORD}, headers=h)
    assert api.status_code == 200 and api.headers["content-disposition"].endswith('web-v1-pem.zip"')
    refused = env.client.post("/api/v1/lineages/web/export", json={"format": "haproxy", "password": "x"}, headers=h)
    assert refused.status_code == 400 and "not a format the console exports" in refused.json()["error"]
