"""The store: opening, sealing keys, records, history and migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import event
from sqlalchemy import inspect as sa_inspect

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import InputError, StoreError
from certfleet.fleet.model import NodeSpec, Outcome, TargetSpec
from certfleet.store import (
    KEY_FILE,
    PASSPHRASE_ENV,
    AuditAction,
    Base,
    DeploymentState,
    NodeResult,
    Store,
    VersionState,
    default_home,
    public_key_id,
)
from certfleet.store._engine import Database, _alembic_config
from certfleet.testing import make_key
from support.postgres import Backend, backend, pg_url, postgres

# the fixtures of either backend, imported where they are used
__all__ = ["backend", "pg_url", "postgres"]

UTC = dt.UTC


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *names: str) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )


def _node(name: str, *names: str, path: str = "/srv/tls") -> NodeSpec:
    return NodeSpec(name=name, names=names or (f"{name}.example.test",), targets=(TargetSpec("nginx", path),))


def _pending(
    store: Store, lineage: str = "web", spec: str = "ec:p256"
) -> tuple[x509.CertificateSigningRequest, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    key = make_key(spec)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    csr = _csr(key, "www.example.test", "example.test")
    store.add_pending(lineage, key, csr, ["www.example.test", "example.test"])
    return csr, key


def _same_key(a: object, b: object) -> bool:
    """The same private key (not only the same public half)."""
    assert isinstance(a, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    assert isinstance(b, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return a.private_numbers() == b.private_numbers()


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = Store.init()
    yield s
    s.close()


@pytest.fixture(scope="module")
def ca() -> testing.TestCA:
    return testing.TestCA.root("store test root").intermediate("store test intermediate")


# -- opening ---------------------------------------------------------------------------------------


def test_init_creates_private_home_and_is_idempotent(backend: Backend) -> None:
    certfleet_home = backend.home
    first = Store.init()
    assert first.created
    first.add_node(_node("main"))
    first.close()
    second = Store.init()
    assert not second.created
    assert [n.name for n in second.nodes()] == ["main"]  # nothing lost by a second init
    second.close()
    assert stat.S_IMODE(certfleet_home.stat().st_mode) == 0o700
    assert stat.S_IMODE((certfleet_home / KEY_FILE).stat().st_mode) == 0o600
    if backend.is_sqlite:
        assert stat.S_IMODE((certfleet_home / "certfleet.db").stat().st_mode) == 0o600
    else:
        assert not (certfleet_home / "certfleet.db").exists()
    assert len((certfleet_home / KEY_FILE).read_bytes()) == 32
    inits = [e for e in Store.open().audit_log() if e.action == AuditAction.INIT]
    assert len(inits) == 1


def test_open_without_store_says_run_init(backend: Backend) -> None:
    with pytest.raises(StoreError) as err:
        Store.open()
    assert err.value.hint == "run `certfleet init`"
    assert err.value.exit_code == 3
    assert not backend.home.exists()  # opening never creates


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CERTFLEET_HOME": "/x/home"}, Path("/x/home")),
        ({"XDG_DATA_HOME": "/x/data"}, Path("/x/data/certfleet")),
        ({"XDG_DATA_HOME": "relative/data", "HOME": "/x/user"}, Path("/x/user/.local/share/certfleet")),
        ({"HOME": "/x/user"}, Path("/x/user/.local/share/certfleet")),
    ],
)
def test_default_home(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: Path) -> None:
    for var in ("CERTFLEET_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert default_home() == expected


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "99999"])
def test_bad_busy_timeout_is_refused(certfleet_home: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    Store.init().close()
    monkeypatch.setenv("CERTFLEET_BUSY_TIMEOUT", value)
    with pytest.raises(StoreError, match="CERTFLEET_BUSY_TIMEOUT"):
        Store.open()


# every revision, oldest first; a store may have been left at any of them
REVISIONS = [r.revision for r in reversed(list(ScriptDirectory.from_config(_alembic_config()).walk_revisions()))]
# the fleet's own tables (later migrations, such as the console's, are checked by their owners)
FLEET_TABLES = {"settings", "lineages", "versions", "nodes", "targets", "lineage_nodes", "trust_anchors"}
FLEET_TABLES |= {"deployments", "deployment_results", "deployment_last_results", "deployment_progress"}
FLEET_TABLES |= {"audit_log", "jobs"}


def _schema_diff(db: Database) -> list[object]:
    from alembic.autogenerate import compare_metadata

    def include(name: str | None, type_: str, parents: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return True
        return (name if type_ == "table" else parents.get("table_name")) in FLEET_TABLES

    def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        # models of later migrations (the console's) are on the same Base once imported
        return getattr(getattr(obj, "table", obj), "name", name) in FLEET_TABLES

    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include, "include_object": include_object})
        return list(compare_metadata(context, Base.metadata))


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(sa_inspect(conn).get_table_names())


def test_migrations_up_down_up_match_the_models(backend: Backend) -> None:
    backend.home.mkdir(mode=0o700)
    db = Database(backend.url, timeout=5)
    assert db.current() == set()
    db.upgrade(REVISIONS[0])
    assert db.current() == {REVISIONS[0]}
    db.downgrade("base")
    assert db.current() == set()
    assert _tables(db) == {"alembic_version"}
    db.upgrade()
    assert db.current() == db.heads() == {REVISIONS[-1]}
    db.downgrade("base")
    assert _tables(db) == {"alembic_version"}
    db.upgrade()
    assert _schema_diff(db) == []  # the models and the migrations describe the same schema
    db.dispose()


@pytest.mark.parametrize("start", REVISIONS[:-1])
def test_a_store_at_every_earlier_schema_is_brought_up_to_date(
    backend: Backend, ca: testing.TestCA, start: str
) -> None:
    store = Store.init()
    store.add_node(_node("main"), lineage="web")
    store.add_node(_node("gw1"), lineage="web")
    csr, key = _pending(store)
    v = store.issue("web", ca.sign_csr(csr), ca.chain)
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    store.record_deployment("web", v.number, [NodeResult(n, Outcome.FAILED, t0, t0) for n in ("main", "gw1")])
    store.record_deployment("web", v.number, [NodeResult("main", Outcome.OK, t0, t0)])
    before = {n: (d.id, r) for n, (d, r) in store.last_results("web").items()}
    store.close()
    assert before["main"][1].outcome is Outcome.OK and before["gw1"][1].outcome is Outcome.FAILED

    db = Database(backend.url, timeout=5)
    db.downgrade(start)
    assert db.current() == {start}
    db.dispose()
    reopened = Store.open()  # the newer migrations run on opening
    assert reopened.schema_revision() == {REVISIONS[-1]}
    assert {n: (d.id, r) for n, (d, r) in reopened.last_results("web").items()} == before
    assert _same_key(reopened.material("web").key, key)
    assert [n.name for n in reopened.nodes("web")] == ["gw1", "main"]
    reopened.close()


def test_a_store_from_a_newer_certfleet(store: Store, backend: Backend) -> None:
    store.close()
    backend.execute("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(StoreError, match="schema is newer than this certfleet knows"):
        Store.open()


def test_a_damaged_database(certfleet_home: Path) -> None:
    certfleet_home.mkdir(mode=0o700)
    (certfleet_home / "certfleet.db").write_bytes(b"this is not a database, " * 100)
    with pytest.raises(StoreError, match=r"the store cannot be used \(file is not a database\)") as info:
        Store.open()
    assert "restore the certfleet home from a backup" in (info.value.hint or "")


def test_a_database_server_that_refuses_connections_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg")
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CERTFLEET_DATABASE_URL", f"postgresql+psycopg://certfleet@127.0.0.1:{port}/certfleet")
    with pytest.raises(StoreError, match="cannot reach the store's database server") as info:
        Store.open(tmp_path)
    assert "PostgreSQL runs and accepts connections" in (info.value.hint or "")
    assert "backup" not in (info.value.hint or "")


# -- sealing keys ----------------------------------------------------------------------------------


def _secret_fragments(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> list[bytes]:
    """Every form in which the key could leak: PEM body lines, PKCS#8 DER, the raw secret numbers."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    out = [line for line in pem.splitlines() if b"-----" not in line and len(line) >= 32]
    out.append(der)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        out.append(key.private_numbers().private_value.to_bytes(32, "big"))
    else:
        n = key.private_numbers()
        out += [n.d.to_bytes((n.d.bit_length() + 7) // 8, "big"), n.p.to_bytes((n.p.bit_length() + 7) // 8, "big")]
    return out


@pytest.mark.parametrize("spec", ["ec:p256", "rsa:2048"])
def test_key_is_never_stored_in_clear(store: Store, backend: Backend, ca: testing.TestCA, spec: str) -> None:
    csr, key = _pending(store, spec=spec)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    store.issue("web", ca.sign_csr(csr), ca.chain)
    assert _same_key(store.material("web").key, key)
    fragments = _secret_fragments(key)

    def files() -> bytes:
        return b"".join(p.read_bytes() for p in backend.home.iterdir() if p.name.startswith("certfleet.db"))

    while_open = files() if backend.is_sqlite else b""
    store.close()
    after_close = files() if backend.is_sqlite else b""
    values = backend.stored_values()
    assert b"CERTIFICATE" in values  # the search can find what is there
    for data in (while_open, after_close, values):
        for fragment in fragments:
            assert fragment not in data


def test_wrong_master_key_is_refused_on_opening(store: Store, backend: Backend, ca: testing.TestCA) -> None:
    csr, _ = _pending(store)
    store.issue("web", ca.sign_csr(csr), ca.chain)
    store.close()
    before = backend.stored_values()
    key_file = backend.home / KEY_FILE
    key_file.chmod(0o600)
    key_file.write_bytes(os.urandom(32))
    for attempt in (Store.open, Store.init):  # refused before anything is read, sealed or written
        with pytest.raises(StoreError, match="cannot decrypt the keys: wrong master key or passphrase") as err:
            attempt()
        assert err.value.hint == "use the master.key or the CERTFLEET_PASSPHRASE this store was created with"
    assert backend.stored_values() == before


@pytest.mark.parametrize(
    ("mode", "message"),
    [(0o644, "readable by others"), (None, "master key file is missing")],
)
def test_master_key_file_problems(store: Store, backend: Backend, mode: int | None, message: str) -> None:
    _pending(store)
    store.close()
    key_file = backend.home / KEY_FILE
    if mode is None:
        key_file.unlink()
    else:
        key_file.chmod(mode)
    with pytest.raises(StoreError, match=message):
        Store.open().pending_keys("web")


def test_passphrase_store(backend: Backend, monkeypatch: pytest.MonkeyPatch, ca: testing.TestCA) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    store = Store.init()
    assert not (backend.home / KEY_FILE).exists()
    csr, key = _pending(store)
    store.close()

    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(StoreError, match="wrong master key or passphrase"):
        Store.open()
    monkeypatch.delenv(PASSPHRASE_ENV)
    without = Store.open()  # records can be read without the passphrase, keys cannot
    assert without.lineage("web").name == "web"
    with pytest.raises(StoreError, match="CERTFLEET_PASSPHRASE is not set"):
        without.pending_keys("web")
    without.close()
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse battery staple")
    reopened = Store.open()
    [(version, found)] = reopened.pending_keys("web")
    assert _same_key(found, key)
    assert version.csr == csr
    reopened.close()


def test_sealed_key_is_bound_to_its_record(store: Store, backend: Backend) -> None:
    _pending(store)
    _pending(store)
    store.close()
    [(sealed,)] = backend.execute("SELECT key_sealed FROM versions WHERE number = 1")
    backend.execute("UPDATE versions SET key_sealed = :sealed WHERE number = 2", {"sealed": sealed})
    reopened = Store.open()
    with pytest.raises(StoreError, match="cannot decrypt"):
        reopened.pending_keys("web")
    reopened.close()


def test_nothing_prints_a_key(store: Store, ca: testing.TestCA) -> None:
    csr, key = _pending(store)
    store.issue("web", ca.sign_csr(csr), ca.chain)
    material = store.material("web")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    secret = str(key.private_numbers().private_value)
    for text in (repr(store), repr(material), repr(store.vault()), repr(store.versions("web")), repr(store.lineages())):
        assert secret not in text
        assert "PRIVATE" not in text
    assert "PRIVATE" not in str([v.to_dict() for v in store.versions("web")])
    assert "PRIVATE" not in str([e.to_dict() for e in store.audit_log()])


# -- records ---------------------------------------------------------------------------------------


def test_nodes_lineages_and_membership(store: Store) -> None:
    main = _node("main", "www.example.test", "example.test")
    gw = NodeSpec(
        name="gw1",
        names=("gw.example.test",),
        targets=(TargetSpec("haproxy", "/etc/haproxy/tls"), TargetSpec("pkcs12", "/srv/pfx", {"legacy": True})),
        transport="ssh://deploy@gw.example.test:2222",
        test_cmd="haproxy -c -f /etc/haproxy/haproxy.cfg",
        reload_cmd="systemctl reload haproxy",
        probe="gw.example.test:443",
        options={"known_hosts": "/etc/ssh/known_hosts"},
    )
    store.add_node(main, lineage="web")
    store.add_node(gw)
    with pytest.raises(InputError, match="node main exists"):
        store.add_node(main)
    assert store.node("gw1") == gw
    assert store.lineage("web").nodes == ("main",)
    record = store.put_lineage("web", add_nodes=["gw1"], key_spec="ec:p384", names=["extra.example.test"])
    assert record.nodes == ("gw1", "main")
    assert record.key_spec == "ec:p384"
    assert store.nodes("web") == [gw, main]
    assert store.node_lineages("gw1") == ["web"]
    assert store.put_node(gw) is False  # unchanged
    moved = dataclasses.replace(gw, names=("gw.example.test", "gw2.example.test"))
    assert store.put_node(moved) is True
    assert store.node("gw1").names == ("gw.example.test", "gw2.example.test")
    assert store.node("gw1").targets == gw.targets
    store.detach("web", "main")
    assert store.lineage("web").nodes == ("gw1",)
    store.remove_node("gw1")
    assert store.lineage("web").nodes == ()
    assert [n.name for n in store.nodes()] == ["main"]
    with pytest.raises(InputError, match="no node named"):
        store.node("gw1")
    actions = [e.action for e in reversed(store.audit_log())]
    for expected in ("node.add", "lineage.create", "lineage.attach", "lineage.update", "node.update", "node.remove"):
        assert expected in actions
    assert {e.actor for e in store.audit_log()} == {store.actor}


@pytest.mark.parametrize(
    "bad",
    [
        NodeSpec("../etc", ("a.example.test",), (TargetSpec("pem", "/x"),)),
        NodeSpec("", ("a.example.test",), (TargetSpec("pem", "/x"),)),
        NodeSpec("x" * 65, ("a.example.test",), (TargetSpec("pem", "/x"),)),
        NodeSpec("ok", (), (TargetSpec("pem", "/x"),)),
        NodeSpec("ok", ("a.example.test",), ()),
        NodeSpec("ok", ("a.example.test",), (TargetSpec("pem", "/x"),), reload_cmd="x" * 5000),
        NodeSpec("ok", ("a.example.test",), (TargetSpec("pem", "/x\x00y"),)),
        NodeSpec("ok", tuple(f"n{i}.example.test" for i in range(201)), (TargetSpec("pem", "/x"),)),
    ],
)
def test_bad_nodes_are_refused(store: Store, bad: NodeSpec) -> None:
    with pytest.raises(InputError):
        store.add_node(bad)
    assert store.nodes() == []


def test_versions_issue_activate_material(store: Store, ca: testing.TestCA) -> None:
    csr1, key1 = _pending(store)
    assert [v.state for v in store.versions("web")] == [VersionState.PENDING]
    with pytest.raises(InputError, match="no certificate yet"):
        store.material("web")
    cert1 = ca.sign_csr(csr1)
    v1 = store.issue("web", cert1, ca.chain)
    assert (v1.number, v1.state, v1.active) == (1, VersionState.ISSUED, True)
    assert v1.fingerprint == cert1.fingerprint(hashes.SHA256()).hex()
    assert v1.not_after == cert1.not_valid_after_utc
    assert v1.not_after is not None and v1.not_after.tzinfo is UTC
    again = store.issue("web", cert1, ca.chain)  # the same package imported twice
    assert again.number == 1
    assert len(store.versions("web")) == 1

    csr2, key2 = _pending(store)
    v2 = store.issue("web", ca.sign_csr(csr2), ca.chain)
    assert v2.number == 2
    m = store.material("web")
    assert _same_key(m.key, key2)
    assert m.chain == tuple(ca.chain)
    assert m.version_id == v2.fingerprint
    store.activate("web", 1)
    assert store.lineage("web").active is not None
    assert store.lineage("web").active.number == 1  # type: ignore[union-attr]
    assert _same_key(store.material("web").key, key1)
    assert store.material("web", 2).leaf == v2.leaf
    assert [v.active for v in store.versions("web")] == [True, False]

    reissued = ca.sign_csr(csr2)  # the CA issues again for the same request
    v3 = store.issue("web", reissued, ca.chain)
    assert v3.number == 3
    assert v3.public_key_id == v2.public_key_id
    assert _same_key(store.material("web").key, key2)

    _pending(store)
    with pytest.raises(InputError, match="still waiting for its certificate"):
        store.activate("web", 4)


def test_a_certificate_found_by_its_fingerprint(store: Store, ca: testing.TestCA) -> None:
    csr, _ = _pending(store)
    leaf = ca.sign_csr(csr)
    version = store.issue("web", leaf, ca.chain)
    found = store.version_by_fingerprint(fingerprint(leaf))
    assert found is not None and (found.lineage, found.number, found.leaf) == ("web", 1, leaf)
    assert store.version_by_fingerprint(fingerprint(ca.cert)) is None
    assert store.version_by_fingerprint("0" * 64) is None
    # an intermediate: the version whose chain carries it, and where
    hit = store.version_with_chain_certificate(fingerprint(ca.cert))
    assert hit is not None and hit[0].number == version.number and hit[1] == 0
    assert hit[0].chain[hit[1]] == ca.cert
    assert store.version_with_chain_certificate(fingerprint(leaf)) is None


def test_an_issued_version_moves_only_when_asked(store: Store, ca: testing.TestCA) -> None:
    csr1, _ = _pending(store)
    cert1 = ca.sign_csr(csr1)
    store.issue("web", cert1, ca.chain)
    csr2, _ = _pending(store)
    store.issue("web", ca.sign_csr(csr2), ca.chain)
    assert store.issue("web", cert1, ca.chain).active is False  # imported again: stays as it was
    assert store.lineage("web").active.number == 2  # type: ignore[union-attr]

    store.activate("web", 1, withdraw=True)  # a rollback of the whole lineage
    withdrawn = store.version("web", 2)
    assert withdrawn.withdrawn_at is not None and not withdrawn.active
    assert store.audit_log(action="version.withdraw")[0].detail == {"lineage": "web", "version": 2}
    assert store.issue("web", withdrawn.leaf, ca.chain).active is False  # type: ignore[arg-type]
    assert store.version("web", 2).withdrawn_at is not None
    assert store.issue("web", withdrawn.leaf, ca.chain, activate=True).active  # type: ignore[arg-type]
    assert store.version("web", 2).withdrawn_at is None  # made active on purpose: no longer withdrawn


def test_issue_for_an_unknown_key(store: Store, ca: testing.TestCA) -> None:
    _pending(store)
    stranger = ca.leaf("www.example.test")
    with pytest.raises(InputError, match="issued for another key: it matches no pending request of lineage web"):
        store.issue("web", stranger.cert, stranger.chain)
    assert [v.state for v in store.versions("web")] == [VersionState.PENDING]
    # with its key (as a PFX brings it) it becomes a version of its own
    version = store.issue("web", stranger.cert, stranger.chain, key=stranger.key)
    assert (version.number, version.state) == (2, VersionState.ISSUED)
    assert store.find_key(public_key_id(stranger.key.public_key()))[0].number == 2


def test_trust_anchors(store: Store) -> None:
    roots = [testing.TestCA.root(f"anchor {i}") for i in range(2)]
    anchor, new = store.add_trust_anchor(roots[0].cert)
    assert new
    assert store.add_trust_anchor(roots[0].cert)[1] is False
    store.add_trust_anchor(roots[1].cert)
    assert [a.cert for a in store.trust_anchors()] == [r.cert for r in roots]
    with pytest.raises(InputError, match="at least 8 hex digits"):
        store.remove_trust_anchor("abc")
    with pytest.raises(InputError, match="no trust anchor"):
        store.remove_trust_anchor("0" * 64)
    removed = store.remove_trust_anchor(anchor.fingerprint[:10].upper())
    assert removed.fingerprint == anchor.fingerprint
    assert [a.subject for a in store.trust_anchors()] == ["CN=anchor 1,O=certfleet tests"]


def test_deployments_history(store: Store, ca: testing.TestCA) -> None:
    store.add_node(_node("main"), lineage="web")
    csr, _ = _pending(store)
    v = store.issue("web", ca.sign_csr(csr), ca.chain)
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    first = store.record_deployment(
        "web",
        v.number,
        [
            NodeResult("main", Outcome.OK, t0, t0 + dt.timedelta(seconds=3), served_fingerprint=v.fingerprint),
            NodeResult(
                "gw1",
                Outcome.ROLLED_BACK,
                t0,
                t0 + dt.timedelta(seconds=5),
                failed_step="test",
                output="x" * 100_000 + "nginx: configuration test failed",
            ),
        ],
    )
    second = store.record_deployment("web", v.number, [NodeResult("gw1", Outcome.OK, t0, t0)])
    assert second > first
    deps = store.deployments("web")
    assert [d.id for d in deps] == [second, first]
    assert deps[1].started_at == t0
    assert deps[1].finished_at == t0 + dt.timedelta(seconds=5)
    assert not deps[1].ok and deps[0].ok
    gw = next(r for r in deps[1].results if r.node == "gw1")
    assert gw.failed_step == "test"
    assert gw.output.endswith("configuration test failed")
    assert len(gw.output) <= 64 * 1024
    last = store.last_results("web")
    assert last["gw1"][1].outcome is Outcome.OK
    assert last["main"][1].served_fingerprint == v.fingerprint
    assert deps[0].to_dict()["results"][0]["outcome"] == "ok"
    assert store.audit_log(action="deploy")[0].detail["nodes"] == {"gw1": "ok"}


def test_last_results_cost_the_same_whatever_the_history(store: Store, ca: testing.TestCA, backend: Backend) -> None:
    names = ["gw1", "gw2", "main"]
    for name in names:
        store.add_node(_node(name), lineage="web")
    csr, _ = _pending(store)
    v = store.issue("web", ca.sign_csr(csr), ca.chain)
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def read() -> tuple[int, dict[str, tuple[int, NodeResult]]]:
        statements: list[str] = []

        def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            statements.append(statement)

        event.listen(store._db.engine, "before_cursor_execute", seen)
        try:
            last = store.last_results("web")
        finally:
            event.remove(store._db.engine, "before_cursor_execute", seen)
        return len(statements), {n: (d.id, r) for n, (d, r) in last.items()}

    def deploy(round_: int) -> None:
        at = t0 + dt.timedelta(minutes=round_)
        outcome = Outcome.OK if round_ % 3 else Outcome.FAILED
        store.record_deployment(
            "web", v.number, [NodeResult(n, outcome, at, at, output=f"{round_}") for n in names[: 1 + round_ % 3]]
        )

    assert read() == (read()[0], {})
    deploy(0)
    first, _ = read()
    for round_ in range(1, 40):
        deploy(round_)
    after, last = read()
    assert after == first  # the same statements after 40 deployments as after one
    expected: dict[str, tuple[int, NodeResult]] = {}
    for d in store.deployments("web", limit=500):  # what the whole history says
        for r in d.results:
            expected.setdefault(r.node, (d.id, r))
    assert last == expected
    assert [r.output for _, r in sorted(last.values(), key=lambda x: x[1].node)] == ["39", "38", "38"]
    assert len(backend.execute("SELECT * FROM deployment_last_results")) == 3


def test_a_deployment_is_recorded_before_it_starts_and_node_by_node(store: Store, ca: testing.TestCA) -> None:
    for name in ("a", "b", "c"):
        store.add_node(_node(name), lineage="web")
    csr, _ = _pending(store)
    v = store.issue("web", ca.sign_csr(csr), ca.chain)
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    dep = store.start_deployment("web", v.number, ["a", "b", "c"], started_at=t0, rollback=True)
    [running] = store.deployments("web")
    assert (running.id, running.state, running.rollback) == (dep, DeploymentState.RUNNING, True)
    assert running.pid == os.getpid()
    assert {r.node: r.outcome for r in running.results} == dict.fromkeys("abc", Outcome.INTERRUPTED)
    assert store.audit_log(action="deploy.start")[0].detail["nodes"] == ["a", "b", "c"]

    store.record_node(dep, NodeResult("b", Outcome.OK, t0, t0 + dt.timedelta(seconds=4)))
    [running] = store.deployments("web")
    assert {r.node: r.outcome for r in running.results}["b"] is Outcome.OK
    assert running.finished_at == t0 + dt.timedelta(seconds=4)
    assert not running.ok

    done = [NodeResult(n, Outcome.OK, t0, t0 + dt.timedelta(seconds=5)) for n in "abc"]
    store.finish_deployment(dep, done)
    [finished] = store.deployments("web")
    assert finished.state is DeploymentState.FINISHED and finished.ok
    assert finished.to_dict()["state"] == "finished"
    assert store.audit_log(action="deploy")[0].detail["state"] == "finished"


def test_record_nodes_writes_a_batch_in_one_transaction_reading_only_those_nodes(
    store: Store, ca: testing.TestCA
) -> None:
    names = [f"n{i:02d}" for i in range(12)]
    for name in names:
        store.add_node(_node(name), lineage="web")
    csr, _ = _pending(store)
    v = store.issue("web", ca.sign_csr(csr), ca.chain)
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    dep = store.start_deployment("web", v.number, names, started_at=t0)
    statements: list[tuple[str, object]] = []

    def seen(_conn: object, _cursor: object, statement: str, params: object, *_args: object) -> None:
        statements.append((statement, params))

    batch = [NodeResult(n, Outcome.OK, t0, t0 + dt.timedelta(seconds=i)) for i, n in enumerate(names[:3])]
    batch.append(NodeResult("late", Outcome.FAILED, t0, t0 + dt.timedelta(seconds=9), failed_step="test"))
    event.listen(store._db.engine, "before_cursor_execute", seen)
    try:
        store.record_nodes(dep, batch)
    finally:
        event.remove(store._db.engine, "before_cursor_execute", seen)
    # one transaction, and no statement that reads every result of the deployment
    assert sum(1 for q, _ in statements if q.lstrip().upper().startswith(("BEGIN", "COMMIT"))) <= 2
    reads = [
        (q, p) for q, p in statements if "FROM deployment_results" in q and q.lstrip().upper().startswith("SELECT")
    ]
    assert reads and all("node_name IN" in q for q, _ in reads), reads
    [running] = store.deployments("web")
    got = {r.node: r.outcome for r in running.results}
    assert got == {
        **dict.fromkeys(names, Outcome.INTERRUPTED),
        **dict.fromkeys(names[:3], Outcome.OK),
        "late": Outcome.FAILED,
    }
    assert running.finished_at == t0 + dt.timedelta(seconds=9)
    last = store.last_results("web")
    assert {n: r.outcome for n, (_, r) in last.items()} == got
    assert last["late"][1].failed_step == "test"
    store.record_nodes(dep, [])  # nothing to write is no write


def test_counts_and_proven_versions_say_what_the_whole_history_says(store: Store, ca: testing.TestCA) -> None:
    for name in ("a", "b", "c"):
        store.add_node(_node(name), lineage="web")
    store.add_node(_node("m"), lineage="mail")
    csr, _ = _pending(store)
    v1 = store.issue("web", ca.sign_csr(csr), ca.chain)
    csr, _ = _pending(store)
    v2 = store.issue("web", ca.sign_csr(csr), ca.chain)
    csr, _ = _pending(store, "mail")
    m1 = store.issue("mail", ca.sign_csr(csr), ca.chain)
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def results(**outcomes: Outcome) -> list[NodeResult]:
        return [NodeResult(n, o, t0, t0) for n, o in outcomes.items()]

    store.record_deployment("web", v1.number, results(a=Outcome.OK, b=Outcome.OK, c=Outcome.FAILED))
    store.record_deployment("web", v2.number, results(a=Outcome.UNCHANGED, b=Outcome.ROLLED_BACK))
    store.record_deployment("mail", m1.number, results(m=Outcome.OK))
    store.start_deployment("web", v2.number, ["c"])  # running: not ok, its node interrupted

    for lineages in (None, ["web"], ["mail"], []):
        records = [d for d in store.deployments(limit=500) if lineages is None or d.lineage in lineages]
        whole, per_node = store.deployment_counts(lineages)
        assert dict(whole) == dict(Counter("ok" if d.ok else "failed" for d in records))
        assert dict(per_node) == dict(Counter(r.outcome.value for d in records for r in d.results))
    whole, _ = store.deployment_counts(limit=2)
    assert sum(whole.values()) == 2

    assert store.proven_versions("web") == {"a": {v1.number, v2.number}, "b": {v1.number}}
    assert store.proven_versions("web", ["b", "c"]) == {"b": {v1.number}}
    assert store.proven_versions("mail") == {"m": {m1.number}}
    # asked about some versions on some nodes: those of them proven there, as the whole history says
    wanted = {"a": {v1.number, v2.number}, "b": {v1.number, v2.number}, "c": {v1.number, v2.number}, "m": {v1.number}}
    assert store.proven("web", wanted) == {"a": {v1.number, v2.number}, "b": {v1.number}}
    assert store.proven("web", {"a": {v2.number}, "b": set()}) == {"a": {v2.number}}
    assert store.proven("web", {}) == {}
    assert store.proven("mail", {"m": {m1.number}, "a": {m1.number}}) == {"m": {m1.number}}


def test_last_results_follow_every_write_of_a_deployment(store: Store, ca: testing.TestCA) -> None:
    for name in ("a", "b", "c"):
        store.add_node(_node(name), lineage="web")
    csr, _ = _pending(store)
    v = store.issue("web", ca.sign_csr(csr), ca.chain)
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def last() -> dict[str, tuple[int, DeploymentState, Outcome]]:
        statements: list[str] = []

        def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            statements.append(statement)

        event.listen(store._db.engine, "before_cursor_execute", seen)
        try:
            got = store.last_results("web")
        finally:
            event.remove(store._db.engine, "before_cursor_execute", seen)
        assert [q for q in statements if q.lstrip().upper().startswith("SELECT")] == statements[-1:]
        assert "deployment_last_results" in statements[-1]
        # what the whole history says: each node's result in the newest deployment that has it
        expected: dict[str, tuple[int, DeploymentState, Outcome]] = {}
        for d in store.deployments("web", limit=500):
            for r in d.results:
                expected.setdefault(r.node, (d.id, d.state, r.outcome))
        mine = {n: (d.id, d.state, r.outcome) for n, (d, r) in got.items()}
        assert mine == expected
        return mine

    assert last() == {}
    old = store.record_deployment("web", v.number, [NodeResult("a", Outcome.OK, t0, t0)])
    assert last() == {"a": (old, DeploymentState.FINISHED, Outcome.OK)}
    dep = store.start_deployment("web", v.number, ["a", "b"], started_at=t0)
    running = dict.fromkeys("ab", (dep, DeploymentState.RUNNING, Outcome.INTERRUPTED))
    assert last() == running
    store.record_node(dep, NodeResult("b", Outcome.FAILED, t0, t0, failed_step="test"))
    assert last() == running | {"b": (dep, DeploymentState.RUNNING, Outcome.FAILED)}
    store.record_node(dep, NodeResult("c", Outcome.OK, t0, t0))  # a node the start did not name
    assert last()["c"] == (dep, DeploymentState.RUNNING, Outcome.OK)
    # a late write to an older deployment (a recovery file) leaves the newer results in place
    store.finish_deployment(old, [NodeResult("a", Outcome.ROLLED_BACK, t0, t0), NodeResult("c", Outcome.OK, t0, t0)])
    assert last()["a"] == (dep, DeploymentState.RUNNING, Outcome.INTERRUPTED)
    store.finish_deployment(dep, [NodeResult("a", Outcome.OK, t0, t0)], state=DeploymentState.INTERRUPTED)
    assert last() == {
        "a": (dep, DeploymentState.INTERRUPTED, Outcome.OK),
        "b": (dep, DeploymentState.INTERRUPTED, Outcome.FAILED),
        "c": (dep, DeploymentState.INTERRUPTED, Outcome.OK),
    }

    killed = store.start_deployment("web", v.number, ["b"])
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    with store.session(write=True) as s:  # as if the process that ran it had been killed
        s.execute(sqlalchemy.text("UPDATE deployments SET pid = :pid WHERE id = :id"), {"pid": gone, "id": killed})
    assert last()["b"] == (killed, DeploymentState.INTERRUPTED, Outcome.INTERRUPTED)
    assert store.mark_interrupted("web") == [killed]
    assert last()["b"] == (killed, DeploymentState.INTERRUPTED, Outcome.INTERRUPTED)
    with pytest.raises(InputError, match="no lineage named 'nope'"):
        store.last_results("nope")


def test_a_deployment_whose_process_is_gone_was_interrupted(store: Store, ca: testing.TestCA) -> None:
    store.add_node(_node("a"), lineage="web")
    csr, _ = _pending(store)
    v = store.issue("web", ca.sign_csr(csr), ca.chain)
    dep = store.start_deployment("web", v.number, ["a"])
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    with store.session(write=True) as s:  # as if the process that ran it had been killed
        s.execute(sqlalchemy.text("UPDATE deployments SET pid = :pid"), {"pid": gone})
    [record] = store.deployments("web")
    assert record.state is DeploymentState.INTERRUPTED
    assert [r.outcome for r in record.results] == [Outcome.INTERRUPTED]
    assert store.mark_interrupted("web") == [dep]
    assert store.mark_interrupted("web") == []  # recorded as such now


def test_the_lifecycle_migration_keeps_what_was_recorded(tmp_path: Path, ca: testing.TestCA) -> None:
    from certfleet.store._engine import Database

    home = tmp_path / "home"
    with Store.init(home) as store:
        csr, _ = _pending(store)
        v = store.issue("web", ca.sign_csr(csr), ca.chain)
        store.record_deployment("web", v.number, [NodeResult("a", Outcome.OK, store.versions("web")[0].created_at,
                                                            store.versions("web")[0].created_at)])  # fmt: skip
    db = Database(f"sqlite:///{home / 'certfleet.db'}", timeout=5)
    db.downgrade("0002_console")
    with db.engine.connect() as conn:
        columns = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(deployments)")}
        assert "state" not in columns
        assert conn.exec_driver_sql("SELECT count(*) FROM deployment_results").scalar() == 1
    db.upgrade()
    db.dispose()
    with Store.open(home) as store:
        [dep] = store.deployments("web")
        assert (dep.state, dep.rollback, dep.pid) == (DeploymentState.FINISHED, False, None)
        assert [r.outcome for r in dep.results] == [Outcome.OK]


def test_audit_never_records_a_password(store: Store) -> None:
    spec = NodeSpec("win", ("win.example.test",), (TargetSpec("pkcs12", "/srv/pfx", {"password": "hunter2"}),))
    store.add_node(spec)
    store.audit("console.login", {"account": "alice", "Password": "hunter2", "nested": [{"api_token": "t0k3n"}]})
    assert store.node("win").targets[0].options == {"password": "hunter2"}  # the node keeps what it was given
    text = str([e.to_dict() for e in store.audit_log()])
    assert "hunter2" not in text and "t0k3n" not in text
    assert "alice" in text and "<redacted>" in text


def test_actor_and_aware_timestamps(store: Store) -> None:
    console = store.with_actor("alice@console")
    console.add_node(_node("main"))
    console.audit("console.login", {"ip": "127.0.0.1"})
    entries = store.audit_log(limit=2)
    assert [e.actor for e in entries] == ["alice@console", "alice@console"]
    assert [e.action for e in entries] == ["console.login", "node.add"]
    assert all(e.at.tzinfo is UTC for e in entries)
    assert store.lineages() == []
    record = store.put_lineage("web", nodes=["main"], subject="O=Example,CN=www.example.test")
    assert record.created_at.tzinfo is UTC
    assert record.subject == "O=Example,CN=www.example.test"
    assert store.put_lineage("web", subject="").subject is None
