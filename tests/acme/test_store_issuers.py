"""The store's side of issuing, without a CA: issuers and their sealed account keys, a lineage's
policy, where versions came from, revocations (a revoked version is never activated or handed
out again), the migration, and the plan's refusals before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric import ec

from certfleet.acme.issue import plan_issue
from certfleet.acme.model import AccountStatus, IssuerKind, RevocationReason, SolverRule
from certfleet.errors import InputError
from certfleet.fleet.nodes import make_node
from certfleet.store import Base, Store
from certfleet.store._engine import Database
from conftest import PKI

ACME_TABLES = {"issuers", "lineage_issuers", "lineage_policies", "issuances", "revocations"}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store.init(tmp_path / "home") as opened:
        yield opened


def _acme(store: Store, name: str = "le") -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    store.add_issuer(
        name, IssuerKind.ACME, directory_url="https://ca.example/dir", account_url=f"https://ca.example/acct/{name}",
        key=key, contact=["mailto:pki@example.com"], caa_identities=["ca.example"],
    )  # fmt: skip
    return key


def test_an_account_key_is_sealed_and_a_rollover_keeps_both_until_settled(store: Store) -> None:
    key = _acme(store)
    with store.session() as s:
        sealed = s.execute(Base.metadata.tables["issuers"].select()).one()._mapping["key_sealed"]
    assert b"PRIVATE" not in sealed and len(sealed) > 100
    current, staged = store.account_key("le")
    assert current.private_numbers() == key.private_numbers() and staged is None

    new = ec.generate_private_key(ec.SECP256R1())
    store.stage_account_key("le", new)
    assert store.account_key("le")[1] is not None
    store.settle_account_key("le", changed=False)  # the CA said no: the old key stays
    assert store.account_key("le")[0].private_numbers() == key.private_numbers()
    store.stage_account_key("le", new)
    record = store.settle_account_key("le", changed=True, thumbprint="t")
    current, staged = store.account_key("le")
    assert current.private_numbers() == new.private_numbers() and staged is None
    assert record.key_thumbprint == "t" and record.key_changed_at is not None
    assert [e.action for e in store.audit_log(limit=3)][:2] == ["issuer.rollover", "issuer.add"]


def test_a_lineage_lists_issuers_in_order_and_an_issuer_in_use_stays(store: Store) -> None:
    _acme(store, "sectigo")
    _acme(store, "le")
    store.add_issuer("by-hand", IssuerKind.MANUAL)
    rules = [SolverRule.parse("*.example.com=dns-01:hook:/bin/true"), SolverRule.parse("*=http-01")]
    policy = store.set_policy("web", issuers=["sectigo", "le", "by-hand"], solvers=rules, profile="tlsserver")
    assert policy.issuers == ("sectigo", "le", "by-hand") and policy.solvers == tuple(rules)
    policy = store.set_policy("web", issuers=["le"], preferred_chain="ISRG Root X1", reuse_key=True)
    assert (policy.issuers, policy.profile, policy.preferred_chain, policy.reuse_key) == (
        ("le",), "tlsserver", "ISRG Root X1", True,
    )  # fmt: skip
    assert store.set_policy("web", profile="").profile is None
    with pytest.raises(InputError, match="listed twice"):
        store.set_policy("web", issuers=["le", "le"])
    with pytest.raises(InputError, match="no issuer named"):
        store.set_policy("web", issuers=["nope"])
    with pytest.raises(InputError, match="used by lineage web"):
        store.remove_issuer("le")
    store.remove_issuer("sectigo")
    assert [i.name for i in store.issuers()] == ["by-hand", "le"]
    store.update_issuer("le", status=AccountStatus.DEACTIVATED)
    assert store.issuer("le").status is AccountStatus.DEACTIVATED


def test_a_revoked_version_is_never_activated_or_handed_out(store: Store, pki: PKI) -> None:
    leaf = pki.leaf
    store.issue("web", leaf.cert, [pki.inter.cert], key=leaf.key)  # type: ignore[arg-type]
    store.record_issuance("web", 1, "le", order_url="https://ca.example/order/1", tried=["first: unreachable"])
    record = store.record_revocation("web", 1, RevocationReason.KEY_COMPROMISE, issuer="le")
    assert record.reason is RevocationReason.KEY_COMPROMISE and record.issuer == "le"
    assert store.lineage("web").active is None  # it was the active version
    for refused in (lambda: store.activate("web", 1), lambda: store.material("web", 1)):
        with pytest.raises(InputError, match="revoked"):
            refused()
    with pytest.raises(InputError, match="revoked already"):
        store.record_revocation("web", 1, RevocationReason.SUPERSEDED, issuer=None)
    assert [r.version for r in store.revocations("web")] == [1]
    (origin,) = store.issuances("web")
    assert origin.issuer == "le" and origin.tried == ("first: unreachable",)


def test_the_migration_matches_the_models_and_goes_down_and_up(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}", timeout=5)
    db.upgrade()

    def mine(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        table = getattr(obj, "table", obj)
        return getattr(table, "name", name) in ACME_TABLES

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_object": mine}), Base.metadata)
    assert diff == []
    db.downgrade("0002_console")
    with db.engine.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not tables & ACME_TABLES
    db.upgrade()
    db.dispose()


def test_the_plan_refuses_before_anything_is_sent(store: Store, tmp_path: Path) -> None:
    store.add_node(make_node("main", ["example.test", "www.example.test"], [f"nginx:{tmp_path}"]), lineage="web")
    with pytest.raises(InputError, match="has no issuer"):
        plan_issue(store, "web")
    _acme(store)
    store.set_policy("web", issuers=["le"])
    with pytest.raises(InputError, match="node main has no webroot"):
        plan_issue(store, "web")
    store.put_node(make_node("main", ["example.test", "*.example.test"], [f"nginx:{tmp_path}"],
                             options={"webroot": "/var/www"}))  # fmt: skip
    with pytest.raises(InputError, match=r"\*\.example\.test is a wildcard"):
        plan_issue(store, "web")
    store.set_policy("web", solvers=[SolverRule.parse("*.example.test=dns-01:hook:/bin/true")])
    the_plan = plan_issue(store, "web")
    assert {n: s.label for n, s in the_plan.assignment.items()} == {
        "example.test": "http-01",
        "*.example.test": "dns-01:hook:/bin/true",
    }
    store.set_policy("web", solvers=[SolverRule.parse("*=http-01:gw9"), SolverRule.parse("*.example.test=dns-01:x")])
    with pytest.raises(InputError, match="unknown solver dns-01:x"):
        plan_issue(store, "web")
    store.set_policy("web", solvers=[SolverRule.parse("*=http-01:gw9")])
    with pytest.raises(InputError, match="wildcard"):
        plan_issue(store, "web")


def test_the_commands_are_registered(cli: Any) -> None:
    out = cli("--help").out
    for command in ("issuer", "lineage", "issue", "revoke"):
        assert command in out
    assert "--webroot" in cli("node", "add", "--help").out


def test_a_manual_issuer_makes_the_csr_and_waits(store: Store, tmp_path: Path) -> None:
    import asyncio

    from certfleet.acme.issue import issue

    store.add_node(make_node("main", ["example.test", "www.example.test"], [f"nginx:{tmp_path}"]), lineage="web")
    store.add_issuer("godaddy", IssuerKind.MANUAL)
    store.set_policy("web", issuers=["godaddy"])
    result = asyncio.run(issue(store, "web"))
    assert result.ok and result.issuer == "godaddy" and result.request is not None
    assert result.request.version.state.value == "pending"
    assert b"BEGIN CERTIFICATE REQUEST" in result.request.csr_pem
    assert "waits in the store with the CSR" in result.key
