"""The console's own certificate after the first import: the address `certfleet serve` printed
keeps its bootstrap certificate (127.0.0.1, localhost and the machine's name, unless a lineage
covers them), the dashboard says which certificate each name gets, and a client configuration can
pin what survives a renewal (the issuing CA's key, the lineage's names) instead of the leaf."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.certinfo import fingerprint
from certfleet.console.server import BootstrapStore, StoreCertificates
from certfleet.console.tls import TLSContexts
from certfleet.fleet.nodes import make_node
from certfleet.store import Store
from certfleet.testing import TestCA
from support.console import ConsoleEnv, csrf_of, logged_in, login, make_env

NAMES = ("www.example.test", "gw.example.test")


@pytest.fixture(scope="module")
def inter() -> TestCA:
    return TestCA.root("own Test Root").intermediate("own Test Intermediate")


def _contexts(store: Store) -> TLSContexts:
    return TLSContexts(StoreCertificates(store, bootstrap=BootstrapStore(store)), check_interval=0)


def _issue(store: Store, inter: TestCA) -> x509.Certificate:
    leaf = inter.leaf(*NAMES)
    store.issue("web", leaf.cert, leaf.chain, key=leaf.key)
    return leaf.cert


@pytest.fixture
def env(tmp_path: Path, inter: TestCA) -> ConsoleEnv:
    made = make_env(tmp_path / "home", tls=_contexts)
    made.store.add_node(make_node("main", list(NAMES), ["pem:" + str(tmp_path / "main")]), lineage="web")
    return made


def test_names_no_lineage_covers_keep_the_bootstrap_certificate(tmp_path: Path, inter: TestCA) -> None:
    with Store.init(tmp_path / "home") as store:
        tls = _contexts(store)
        bootstrap = tls.served_for(None)
        assert bootstrap.bootstrap and tls.served_for("www.example.test") is bootstrap  # nothing else yet
        web = _issue(store, inter)
        assert tls.reload()
        # the lineage for its names; the bootstrap certificate for the address the console printed
        assert tls.served_for("www.example.test").leaf == web
        assert tls.served_for("gw.example.test").leaf == web
        for printed in ("127.0.0.1", "::1", "localhost", None):
            assert tls.served_for(printed) is tls.bootstrap, printed
        assert tls.served_for("other.example.test").leaf == web  # a name none covers: the default lineage
        assert fingerprint(tls.served_for(None).leaf) == fingerprint(bootstrap.leaf)  # the same one, kept
        names = dict(tls.by_name())
        assert names["localhost"].bootstrap and names["127.0.0.1"].bootstrap
        assert names["www.example.test"].label == "web"


def test_a_lineage_that_covers_localhost_takes_it(tmp_path: Path, inter: TestCA) -> None:
    with Store.init(tmp_path / "home") as store:
        tls = _contexts(store)
        leaf = inter.leaf("localhost", "www.example.test")
        store.issue("web", leaf.cert, leaf.chain, key=leaf.key)
        tls.reload()
        assert tls.served_for("localhost").leaf == leaf.cert
        assert tls.served_for("127.0.0.1").bootstrap  # no SNI for an IP address: the bootstrap one


def test_dashboard_says_which_certificate_each_name_gets(env: ConsoleEnv, inter: TestCA) -> None:
    web = _issue(env.store, inter)
    assert env.console.tls is not None and env.console.tls.reload()
    browser = env.new_client("localhost")  # the printed address, by name
    logged_in(env)
    page = login(browser)
    assert page.status_code == 303
    dashboard = browser.get("/").text
    rows = dict(re.findall(r'<tr data-name="([^"]*)"[^>]*>(.*?)</tr>', dashboard, re.S))
    assert "bootstrap" in rows["localhost"] and "this page" in rows["localhost"]
    assert "lineage <code>web</code>" in rows["www.example.test"] and fingerprint(web)[:16] in rows["www.example.test"]
    assert "bootstrap" in rows["127.0.0.1"] and "bootstrap" in rows[""]
    # at localhost this page came with the bootstrap certificate, and says so
    assert "You reach the console at <code>localhost</code>, which gets its self-signed bootstrap" in dashboard
    boot = env.console.tls.bootstrap
    assert boot is not None and boot.fingerprint[:16] in dashboard.split("<footer>")[1]
    at_www = env.new_client("www.example.test")
    login(at_www)
    page_www = at_www.get("/").text
    assert "You reach the console at" not in page_www
    assert fingerprint(web)[:16] in page_www.split("<footer>")[1]


def _link_for(env: ConsoleEnv, template: str) -> str:
    csrf = csrf_of(env.client.get("/tokens").text)
    h = {"x-csrf-token": csrf}
    r = env.client.put(
        "/api/v1/client-profiles",
        json={"name": "mobile", "hostname": "www.example.test:8443", "template": template},
        headers=h,
    )
    assert r.status_code == 200, r.text
    users = env.client.get("/api/v1/client-users").json()
    user = (
        users[0]
        if users
        else env.client.post("/api/v1/client-users", json={"profile": "mobile", "username": "alice"}, headers=h).json()
    )
    url: str = env.client.post(f"/api/v1/client-users/{user['id']}/links", headers=h).json()["url"]
    return url.rsplit("/", 1)[1]


def test_client_placeholders_that_survive_a_renewal(env: ConsoleEnv, inter: TestCA) -> None:
    first = _issue(env.store, inter)
    assert env.console.tls is not None
    env.console.tls.reload()
    logged_in(env)
    template = '{"pin": "${ca_pin_sha256}", "spki": "${ca_spki_sha256}", "names": "${names}", "leaf": "${fingerprint}"}'
    before = json.loads(env.new_client().post("/client/" + _link_for(env, template)).text)
    spki = inter.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert before["spki"] == hashlib.sha256(spki).hexdigest()
    assert before["pin"] == base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert before["names"] == ",".join(NAMES)
    assert before["leaf"] == fingerprint(first)

    renewed = _issue(env.store, inter)
    env.console.tls.reload()
    after = json.loads(env.new_client().post("/client/" + _link_for(env, template)).text)
    assert after["leaf"] == fingerprint(renewed) != before["leaf"]  # a leaf pin breaks at each renewal
    assert (after["pin"], after["spki"], after["names"]) == (before["pin"], before["spki"], before["names"])
