"""The manual-CA flow as a library: nodes, request, import (and its refusals), export."""

from __future__ import annotations

import datetime as dt
import io
import random
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from certfleet import testing
from certfleet.errors import InputError
from certfleet.export import OutputFormat
from certfleet.fleet.lineage import ImportResult, export_lineage, import_package, request
from certfleet.fleet.nodes import add_to_lineage, make_node
from certfleet.problems import ProblemCode
from certfleet.store import Store, VersionState, public_key_id

NOW = dt.datetime.now(dt.UTC)


def _same_key(a: object, b: object) -> bool:
    """The same private key (not only the same public half)."""
    assert isinstance(a, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    assert isinstance(b, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return a.private_numbers() == b.private_numbers()


@dataclass
class CA:
    root: testing.TestCA
    inter1: testing.TestCA
    inter2: testing.TestCA  # issues the leaves: root → inter1 → inter2 → leaf

    def package(self, leaf: x509.Certificate, *, seed: int = 7, root: bool = True) -> bytes:
        """A CA's zip: the leaf, the intermediates in a shuffled order, and the root."""
        members = [("inter1.crt", self.inter1.cert), ("inter2.crt", self.inter2.cert)]
        random.Random(seed).shuffle(members)
        if root:
            members.append(("root.crt", self.root.cert))
        members.insert(seed % 3, ("server.crt", leaf))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, cert in members:
                z.writestr(name, testing.pem(cert))
        return buf.getvalue()


@pytest.fixture(scope="module")
def ca() -> CA:
    root = testing.TestCA.root("lineage test root")
    inter1 = root.intermediate("lineage test inter 1", path_length=1)
    return CA(root, inter1, inter1.intermediate("lineage test inter 2"))


@pytest.fixture
def store(certfleet_home: Path, ca: CA) -> Iterator[Store]:
    s = Store.init()
    s.add_trust_anchor(ca.root.cert)
    s.add_node(make_node("main", ["www.example.test", "Example.TEST"], ["nginx:/srv/main"]), lineage="web")
    s.add_node(make_node("gw1", ["gw.example.test", "turn.example.test", "meet.example.test"], ["pem:/srv/gw"]))
    yield s
    s.close()


def _csr(store: Store, lineage: str = "web") -> x509.CertificateSigningRequest:
    version = store.versions(lineage)[-1]
    assert version.csr is not None
    return version.csr


# -- nodes -----------------------------------------------------------------------------------------


def test_make_node_normalizes() -> None:
    node = make_node(
        "gw1",
        ["GW.Example.TEST.", "bücher.example.test", "gw.example.test", "192.0.2.7"],
        ["NGINX:/etc/nginx/tls", "command:/usr/local/bin/install-cert --all"],
        transport="ssh://deploy@GW.example.test:2222",
        test_cmd="  nginx -t ",
        reload_cmd="",
        probe="gw.example.test:8443",
    )
    assert node.names == ("gw.example.test", "xn--bcher-kva.example.test", "192.0.2.7")
    assert [(t.kind, t.path) for t in node.targets] == [
        ("nginx", "/etc/nginx/tls"),
        ("command", "/usr/local/bin/install-cert --all"),
    ]
    assert node.transport == "ssh://deploy@gw.example.test:2222"
    assert (node.test_cmd, node.reload_cmd, node.probe) == ("nginx -t", None, "gw.example.test:8443")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": ["iis:/x"]}, "unknown target kind"),
        ({"targets": ["nginx"]}, "is not KIND:PATH"),
        ({"targets": ["nginx:relative/path"]}, "absolute"),
        ({"targets": []}, "has no targets"),
        ({"names": []}, "has no names"),
        ({"names": ["exa mple.test"]}, "not a valid name"),
        ({"names": ["*.com"]}, "not a valid wildcard"),
        ({"transport": "http://gw.example.test"}, "is not local or ssh://"),
        ({"transport": "ssh://u:secret@gw.example.test"}, "no password"),
        ({"transport": "ssh://gw.example.test:99999"}, "transport"),
        ({"probe": "gw.example.test:0"}, "port"),
        ({"reload_cmd": "systemctl reload nginx\nrm -rf /"}, "line break"),
        ({"name": "gw 1"}, "node name"),
    ],
)
def test_make_node_refuses(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "gw1", "names": ["gw.example.test"], "targets": ["nginx:/etc/nginx/tls"]}
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        make_node(args.pop("name"), args.pop("names"), args.pop("targets"), **args)  # type: ignore[arg-type]


# -- request ---------------------------------------------------------------------------------------


def test_add_to_lineage(store: Store) -> None:
    # as the console's node form calls it: one node into a lineage that may not exist yet
    record = add_to_lineage(store, "mail", ["gw1"])
    assert (record.name, record.nodes, record.key_spec) == ("mail", ("gw1",), "rsa:2048")
    assert add_to_lineage(store, "web", ["gw1"]).nodes == ("gw1", "main")
    assert add_to_lineage(store, "web", ["gw1"]).nodes == ("gw1", "main")  # once a member, still one
    assert store.node_lineages("gw1") == ["mail", "web"]
    # as the fleet file calls it: exactly these members
    assert add_to_lineage(store, "web", ["main"], only=True).nodes == ("main",)
    assert add_to_lineage(store, "mail", [], only=True).nodes == ()
    actions = [e.action for e in store.audit_log(limit=10)]
    assert "lineage.create" in actions and "lineage.update" in actions


@pytest.mark.parametrize(
    ("lineage", "nodes", "message"),
    [
        ("web", ["gw9", "main", "gw8"], "lineage web names unknown node\\(s\\): gw9, gw8"),
        ("bad name", ["gw1"], "lineage name"),
    ],
)
def test_add_to_lineage_refusals_change_nothing(store: Store, lineage: str, nodes: list[str], message: str) -> None:
    before = store.lineages()
    with pytest.raises(InputError, match=message):
        add_to_lineage(store, lineage, nodes)
    assert store.lineages() == before


def test_request_covers_every_node_and_keeps_the_key_inside(store: Store) -> None:
    result = request(store, "web", nodes=["main", "gw1"], subject="C=CA,O=Example Corp")
    assert result.plan.entries == (
        "www.example.test",
        "example.test",
        "gw.example.test",
        "turn.example.test",
        "meet.example.test",
    )
    assert (result.plan.count, result.plan.limit, result.plan.fits) == (5, 15, True)
    csr = x509.load_pem_x509_csr(result.csr_pem)
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(result.plan.entries)
    assert csr.subject.rfc4514_string() == "CN=www.example.test,O=Example Corp,C=CA"
    [(version, key)] = store.pending_keys("web")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048  # the default policy
    assert public_key_id(csr.public_key()) == public_key_id(key.public_key()) == version.public_key_id
    record = store.lineage("web")
    assert record.nodes == ("gw1", "main")
    assert record.subject == "C=CA,O=Example Corp"
    assert record.active is None
    # renewal: the same command without options keeps the policy and makes a fresh key
    again = request(store, "web", key_spec="ec:p256")
    assert again.version.number == 2
    assert again.plan.entries == result.plan.entries
    assert x509.load_pem_x509_csr(again.csr_pem).subject == csr.subject
    assert isinstance(store.pending_keys("web")[0][1], ec.EllipticCurvePrivateKey)
    assert store.lineage("web").key_spec == "ec:p256"


def test_request_with_names_and_wildcards(store: Store) -> None:
    result = request(store, "mail", names=["mx1.example.test", "mx2.example.test", "example.test"], wildcards=True)
    assert result.plan.entries == ("*.example.test", "example.test")
    assert store.lineage("mail").names == ("mx1.example.test", "mx2.example.test", "example.test")
    assert store.lineage("mail").nodes == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": ["nosuch"]}, "no node named"),
        ({"key_spec": "ed25519"}, "Ed25519"),
        ({"subject": "X=1"}, "not one of C="),
        ({"limit": 3}, "5 names are over the CA's limit of 3"),
    ],
)
def test_request_refusals_change_nothing(store: Store, kwargs: dict[str, object], message: str) -> None:
    store.put_lineage("web", add_nodes=["gw1"])
    before = store.lineage("web")
    with pytest.raises(InputError, match=message):
        request(store, "web", **kwargs)  # type: ignore[arg-type]
    assert store.versions("web") == []
    if "limit" not in kwargs:
        assert store.lineage("web") == before


def test_request_without_names(store: Store) -> None:
    with pytest.raises(InputError, match="has no names to request"):
        request(store, "empty")


# -- import ----------------------------------------------------------------------------------------


def test_import_zip_with_shuffled_chain(store: Store, ca: CA) -> None:
    request(store, "web", nodes=["main", "gw1"])
    leaf = ca.inter2.sign_csr(_csr(store))
    result = import_package(store, "web", [("godaddy.zip", ca.package(leaf))], now=NOW)
    assert result.accepted, result.problems
    assert result.leaf_source == "godaddy.zip!server.crt"
    assert result.key_source == "pending request (version 1)"
    assert result.chain.chain == (leaf, ca.inter2.cert, ca.inter1.cert)  # fixed order, root left out
    assert result.chain.root == ca.root.cert
    assert {c.node: c.coverage.complete for c in result.coverage} == {"main": True, "gw1": True}
    assert result.version is not None
    assert (result.version.number, result.version.state, result.version.active) == (1, VersionState.ISSUED, True)
    material = store.material("web")
    assert material.leaf == leaf
    assert material.chain == (ca.inter2.cert, ca.inter1.cert)
    # the same package again: nothing new
    again = import_package(store, "web", [("again.zip", ca.package(leaf, seed=3))], now=NOW)
    assert again.accepted and again.already
    assert len(store.versions("web")) == 1


def _issue_next(store: Store, ca: CA, *, days: int = 90, key_spec: str | None = None) -> x509.Certificate:
    """A new request for web, signed by the CA for ``days``: what the CA sends back."""
    request(store, "web", key_spec=key_spec)
    return ca.inter2.sign_csr(_csr(store), days=days)


def _import(store: Store, ca: CA, leaf: x509.Certificate, **kwargs: bool) -> ImportResult:
    return import_package(store, "web", [("ca.zip", ca.package(leaf))], now=NOW, **kwargs)


def test_importing_a_version_again_changes_nothing_unless_asked(store: Store, ca: CA) -> None:
    store.put_lineage("web", add_nodes=["main"])
    v1 = _issue_next(store, ca)
    assert _import(store, ca, v1).activated
    v2 = _issue_next(store, ca, days=120)
    assert _import(store, ca, v2).active == 2
    audit_before = len(store.audit_log(limit=1000))

    again = _import(store, ca, v1)  # the old package, from the downloads folder
    assert again.accepted and again.already and not again.activated
    assert (again.version.number if again.version else None, again.active) == (1, 2)
    assert store.lineage("web").active.number == 2  # type: ignore[union-attr]
    assert len(store.audit_log(limit=1000)) == audit_before  # nothing happened at all

    # on purpose: v1 is worse than v2 (it expires sooner), so it takes --force as well
    refused = _import(store, ca, v1, activate=True)
    assert not refused.accepted
    assert [p.code for p in refused.problems] == [ProblemCode.DOWNGRADE]
    assert "version 1 expires on" in refused.problems[0].message and "sooner than the active version 2" in (
        refused.problems[0].message
    )
    assert store.lineage("web").active.number == 2  # type: ignore[union-attr]
    forced = _import(store, ca, v1, activate=True, force=True)
    assert forced.accepted and forced.activated and forced.forced
    assert store.lineage("web").active.number == 1  # type: ignore[union-attr]


def test_a_withdrawn_version_is_never_activated_by_an_import(store: Store, ca: CA) -> None:
    store.put_lineage("web", add_nodes=["main"])
    _import(store, ca, _issue_next(store, ca))
    v2 = _issue_next(store, ca, days=120)
    _import(store, ca, v2)
    store.activate("web", 1, withdraw=True)  # what a rollback of the whole lineage does
    assert store.version("web", 2).withdrawn_at is not None

    again = _import(store, ca, v2)
    assert again.accepted and again.already and not again.activated
    assert again.to_dict()["withdrawn"] is True
    assert store.lineage("web").active.number == 1  # type: ignore[union-attr]
    back = _import(store, ca, v2, activate=True)  # v2 is better than v1: no --force needed
    assert back.activated
    assert store.version("web", 2).withdrawn_at is None
    assert store.lineage("web").active.number == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("days", "key_spec", "drop_name", "said"),
    [
        (19, None, False, "expires on"),
        (120, "rsa:2048", False, "has a weaker key: rsa:2048 (112-bit security)"),
        (120, None, True, "does not cover turn.example.test"),
    ],
)
def test_a_worse_renewal_is_refused_unless_forced(  # noqa: PLR0917 (parametrized)
    store: Store, ca: CA, days: int, key_spec: str | None, drop_name: bool, said: str
) -> None:
    store.put_lineage("web", add_nodes=["main"], names=["turn.example.test"])
    _import(store, ca, _issue_next(store, ca, key_spec="ec:p384"))
    if drop_name:
        store.put_lineage("web", names=[])  # the next request no longer asks for turn
    worse = _issue_next(store, ca, days=days, key_spec=key_spec)
    refused = _import(store, ca, worse)
    assert not refused.accepted and refused.comparison is not None and refused.comparison.worse
    [problem] = refused.problems
    assert problem.code is ProblemCode.DOWNGRADE
    assert said in problem.message
    assert "--force" in problem.hint
    assert [v.state for v in store.versions("web")] == [VersionState.ISSUED, VersionState.PENDING]
    assert store.lineage("web").active.number == 1  # type: ignore[union-attr]
    assert refused.to_dict()["comparison"]["active"] == 1
    forced = _import(store, ca, worse, force=True)
    assert forced.accepted and forced.forced
    assert store.lineage("web").active.number == 2  # type: ignore[union-attr]


def test_a_move_from_rsa_4096_to_p256_weakens_nothing(store: Store, ca: CA) -> None:
    store.put_lineage("web", add_nodes=["main"])
    _import(store, ca, _issue_next(store, ca, key_spec="rsa:4096"))
    moved = _import(store, ca, _issue_next(store, ca, days=120, key_spec="ec:p256"))
    assert moved.accepted and moved.comparison is not None and not moved.comparison.worse


def test_import_refuses_names_missing_for_a_node(store: Store, ca: CA) -> None:
    request(store, "web", nodes=["main"])
    store.put_lineage("web", add_nodes=["gw1"])  # gw1 joins after the CSR went to the CA
    leaf = ca.inter2.sign_csr(_csr(store))
    result = import_package(store, "web", [("ca.zip", ca.package(leaf))], now=NOW)
    assert not result.accepted
    assert result.version is None
    [problem] = result.problems
    assert problem.code is ProblemCode.NAME_MISMATCH
    assert problem.message == "names missing for node gw1: gw.example.test, turn.example.test, meet.example.test"
    assert "certfleet request web" in problem.hint
    gw = next(c for c in result.coverage if c.node == "gw1")
    assert [m.name for m in gw.coverage.missing] == ["gw.example.test", "turn.example.test", "meet.example.test"]
    assert [v.state for v in store.versions("web")] == [VersionState.PENDING]  # nothing stored
    assert store.lineage("web").active is None


def test_import_refuses_a_certificate_for_another_key(store: Store, ca: CA) -> None:
    request(store, "web", nodes=["main"])
    stranger = ca.inter2.leaf("www.example.test", "example.test")
    with pytest.raises(InputError) as err:
        import_package(store, "web", [("stranger.crt", testing.pem(stranger.cert, *stranger.chain))], now=NOW)
    assert err.value.message == (
        "the certificate was issued for another key: it matches no pending request of lineage web"
    )
    assert err.value.hint is not None
    assert "waiting for the CA: version 1 (rsa:2048" in err.value.hint
    assert err.value.exit_code == 2


def test_import_names_the_lineage_the_key_belongs_to(store: Store, ca: CA) -> None:
    request(store, "web", nodes=["main"])
    request(store, "mail", names=["mx.example.test"])
    leaf = ca.inter2.sign_csr(_csr(store, "mail"))
    with pytest.raises(InputError, match="it belongs to the pending request of lineage mail \\(version 1\\)"):
        import_package(store, "web", [("mail.zip", ca.package(leaf))], now=NOW)


def test_import_pfx_brings_its_key(store: Store, ca: CA) -> None:
    old = ca.inter2.leaf("www.example.test", "example.test", key="rsa:2048")
    pfx = pkcs12.serialize_key_and_certificates(
        b"old server",
        old.key,  # type: ignore[arg-type]
        old.cert,
        [ca.inter2.cert, ca.inter1.cert],
        serialization.BestAvailableEncryption(b"pfx-pass"),
    )
    result = import_package(store, "web", [("old.pfx", pfx)], now=NOW, passwords=[b"wrong", b"pfx-pass"])
    assert result.accepted, result.problems
    assert result.key_source == "old.pfx"
    material = store.material("web")
    assert _same_key(material.key, old.key)


def test_import_refuses_an_untrusted_chain(store: Store) -> None:
    other = testing.TestCA.root("unknown root").intermediate("unknown inter")
    request(store, "web", nodes=["main"])
    leaf = other.sign_csr(_csr(store))
    result = import_package(store, "web", [("x.pem", testing.pem(leaf, *other.chain, other.root_cert))], now=NOW)
    assert not result.accepted
    assert ProblemCode.UNTRUSTED in {p.code for p in result.problems}
    assert "certfleet trust add" in next(p.hint for p in result.problems if p.code is ProblemCode.UNTRUSTED)
    assert store.lineage("web").active is None


def test_import_refuses_an_incomplete_chain_without_fetching(store: Store, ca: CA) -> None:
    request(store, "web", nodes=["main"])
    leaf = ca.inter2.sign_csr(_csr(store))
    result = import_package(store, "web", [("leaf.crt", testing.pem(leaf))], now=NOW)
    assert not result.accepted
    assert ProblemCode.INCOMPLETE_CHAIN in {p.code for p in result.problems}


def test_import_preview_stores_nothing(store: Store, ca: CA) -> None:
    request(store, "web", nodes=["main"])
    leaf = ca.inter2.sign_csr(_csr(store))
    result = import_package(store, "web", [("ca.zip", ca.package(leaf))], now=NOW, save=False)
    assert result.accepted and result.version is None
    assert store.lineage("web").active is None


def test_import_into_an_unknown_lineage(store: Store, ca: CA) -> None:
    with pytest.raises(InputError, match="no lineage named 'nosuch'"):
        import_package(store, "nosuch", [("x.pem", testing.pem(ca.root.cert))], now=NOW)


def test_import_without_a_server_certificate(store: Store, ca: CA) -> None:
    request(store, "web", nodes=["main"])
    with pytest.raises(InputError, match="no server certificate among the inputs"):
        import_package(store, "web", [("cas.pem", testing.pem(ca.inter2.cert, ca.inter1.cert))], now=NOW)


# -- export ----------------------------------------------------------------------------------------


@pytest.fixture
def issued(store: Store, ca: CA) -> x509.Certificate:
    request(store, "web", nodes=["main", "gw1"], key_spec="ec:p256")
    leaf = ca.inter2.sign_csr(_csr(store))
    assert import_package(store, "web", [("ca.zip", ca.package(leaf))], now=NOW).accepted
    return leaf


def _openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr  # openssl pkcs12 -info reports on stderr


@pytest.mark.parametrize("legacy", [False, True])
def test_export_pkcs12_read_by_openssl(store: Store, issued: x509.Certificate, tmp_path: Path, legacy: bool) -> None:
    out = tmp_path / "web.pfx"
    result = export_lineage(store, "web", OutputFormat.PKCS12, out, password=b"s3cret pass", legacy=legacy)
    assert result.files == (str(out),) and result.key_encrypted
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    info = _openssl("pkcs12", "-in", str(out), "-info", "-noout", "-passin", "pass:s3cret pass")
    assert ("3DES" in info or "pbeWithSHA1And3-KeyTripleDES-CBC" in info) == legacy
    certs = _openssl("pkcs12", "-in", str(out), "-nokeys", "-passin", "pass:s3cret pass")
    assert certs.count("BEGIN CERTIFICATE") == 3
    first = x509.load_pem_x509_certificates(certs.encode())
    assert issued in first
    key_pem = _openssl("pkcs12", "-in", str(out), "-nocerts", "-nodes", "-passin", "pass:s3cret pass")
    key = serialization.load_pem_private_key(key_pem[key_pem.index("-----BEGIN") :].encode(), None)
    assert public_key_id(key.public_key()) == public_key_id(issued.public_key())
    [entry] = store.audit_log(action="export", limit=1)
    assert entry.detail["format"] == "pkcs12" and entry.detail["key_encrypted"] is True
    assert "s3cret" not in str(entry.detail)


def test_export_pem_folder_with_encrypted_key(store: Store, issued: x509.Certificate, tmp_path: Path, ca: CA) -> None:
    folder = tmp_path / "pem"
    result = export_lineage(store, "web", OutputFormat.PEM, folder, password=b"pem-pass")
    assert sorted(Path(f).name for f in result.files) == ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
    assert stat.S_IMODE((folder / "privkey.pem").stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (folder / "privkey.pem").read_bytes()
    _openssl("pkey", "-in", str(folder / "privkey.pem"), "-passin", "pass:pem-pass", "-noout")
    root = tmp_path / "root.pem"
    root.write_bytes(testing.pem(ca.root.cert))
    chain = str(folder / "chain.pem")
    assert _openssl("verify", "-CAfile", str(root), "-untrusted", chain, str(folder / "cert.pem")).endswith(": OK\n")
    assert x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes()) == issued


@pytest.mark.parametrize(
    ("fmt", "kwargs", "message"),
    [
        (OutputFormat.PKCS12, {"password": None}, "refusing to write the private key unencrypted"),
        (OutputFormat.HAPROXY, {"password": b"x"}, "HAProxy cannot read an encrypted key"),
        (OutputFormat.NGINX, {"password": b"x", "legacy": True}, "--legacy applies to the pkcs12 format only"),
        (OutputFormat.PEM, {"password": b"x", "no_key_password": True}, "not both"),
        (OutputFormat.PEM, {"password": b"x", "version": 9}, "has no version 9"),
    ],
)
def test_export_refusals(
    store: Store,
    issued: x509.Certificate,
    tmp_path: Path,
    *,
    fmt: OutputFormat,
    kwargs: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(InputError, match=message):
        export_lineage(store, "web", fmt, tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_export_haproxy_in_the_clear_when_asked(store: Store, issued: x509.Certificate, tmp_path: Path) -> None:
    # one combined file, as `convert --to haproxy` writes it (not a folder holding combined.pem)
    combined = tmp_path / "hap.pem"
    result = export_lineage(store, "web", OutputFormat.HAPROXY, combined, password=None, no_key_password=True)
    assert result.files == (str(combined),) and not result.key_encrypted
    assert stat.S_IMODE(combined.stat().st_mode) == 0o600
    data = combined.read_bytes()
    assert data.index(b"BEGIN CERTIFICATE") < data.index(b"BEGIN PRIVATE KEY")
    assert x509.load_pem_x509_certificates(data)[0].fingerprint(hashes.SHA256()) == issued.fingerprint(hashes.SHA256())


def test_export_before_any_certificate(store: Store, tmp_path: Path) -> None:
    request(store, "web", nodes=["main"])
    with pytest.raises(InputError, match="has no certificate yet"):
        export_lineage(store, "web", OutputFormat.PKCS12, tmp_path / "x.pfx", password=b"pw")
