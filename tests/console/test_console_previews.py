"""An import shown and waiting for its confirmation lives in the store: its files (a key among
them) only sealed, for the account that sent it only, a bounded number per account, and gone once
confirmed or stale."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from certfleet.certinfo import fingerprint
from certfleet.console.models import PendingImportRow
from certfleet.console.roles import Role
from certfleet.console.services.audit import Actor, AuthMethod
from certfleet.console.services.imports import MAX_PREVIEWS
from certfleet.console.settings import ConsoleSettings
from certfleet.errors import InputError
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.keys import key_matches
from conftest import PKI
from support.console import (
    PASSWORD,
    ConsoleEnv,
    confirm_link,
    csrf_of,
    key_needles,
    logged_in,
    login,
    make_env,
    upload,
)

TABLE = PendingImportRow.__tablename__


@pytest.fixture
def env(tmp_path: Path, pki: PKI) -> ConsoleEnv:
    env = make_env(tmp_path / "home", settings=ConsoleSettings(probe_timeout=2.0, fetch_aia=False))
    env.store.add_trust_anchor(pki.root.cert)
    env.store.add_node(
        NodeSpec("main", ("www.example.test",), (TargetSpec("pem", str(tmp_path / "main")),)), lineage="web"
    )
    return env


def _bundle(pki: PKI) -> list[tuple[str, bytes]]:
    """One PEM file with the key, the leaf and the intermediate: what a server's export holds."""
    return [("bundle.pem", pki.leaf.key_pem() + pki.leaf.fullchain_pem())]


def _rows(env: ConsoleEnv) -> list[tuple[Any, ...]]:
    """The table's rows as SQLite keeps them, behind the console's back."""
    with sqlite3.connect(env.home / "certfleet.db") as db:
        return db.execute(f"SELECT * FROM {TABLE}").fetchall()  # noqa: S608 (the model's own name)


def test_a_waiting_import_with_a_key_is_sealed_at_rest_and_gone_once_confirmed(env: ConsoleEnv, pki: PKI) -> None:
    csrf = logged_in(env)
    page = upload(env, csrf, "web", _bundle(pki))
    assert "Everything checks out" in page.text, page.text
    link = confirm_link(page.text)
    assert link is not None
    (row,) = _rows(env)
    stored = b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
    for needle in key_needles(pki.leaf.key):
        assert needle not in stored
    assert pki.leaf.cert_pem() not in stored  # the files are sealed whole, not just the key
    assert link.split("/")[2].encode() not in stored  # the token is kept as its hash only

    assert env.client.post(link, data={"csrf_token": csrf}).status_code == 303
    assert _rows(env) == []
    active = env.store.lineage("web").active
    assert active is not None and active.fingerprint == fingerprint(pki.leaf.cert)
    assert key_matches(env.store.material("web").key, pki.leaf.cert)
    # confirmed once: a second confirmation finds nothing
    again = env.client.post(link, data={"csrf_token": csrf})
    assert again.status_code == 400 and "no longer waiting" in again.text


def test_a_waiting_import_expires_and_is_deleted(env: ConsoleEnv, pki: PKI) -> None:
    csrf = logged_in(env)
    page = upload(env, csrf, "web", _bundle(pki))
    link = confirm_link(page.text)
    assert link is not None and len(_rows(env)) == 1
    env.clock.advance(minutes=14)
    assert "Everything checks out" in env.client.get(link.removesuffix("/confirm")).text
    env.clock.advance(minutes=2)  # 16 minutes: stale
    shown = env.client.get(link.removesuffix("/confirm"))
    assert shown.status_code == 400 and "no longer waiting" in shown.text
    assert _rows(env) == []  # swept, not only refused
    refused = env.client.post(link, data={"csrf_token": csrf})
    assert refused.status_code == 400 and "no longer waiting" in refused.text
    assert env.store.lineage("web").active is None


def test_only_the_account_that_sent_it_may_see_or_confirm_it(env: ConsoleEnv, pki: PKI) -> None:
    csrf = logged_in(env)
    env.console.accounts.add("ops", PASSWORD, Role.OPERATOR, by="console:test")
    page = upload(env, csrf, "web", _bundle(pki))
    link = confirm_link(page.text)
    assert link is not None
    other = env.new_client()
    assert login(other, "ops").status_code == 303
    other_csrf = csrf_of(other.get("/tokens").text)
    seen = other.get(link.removesuffix("/confirm"))
    assert seen.status_code == 400 and "no longer waiting" in seen.text
    refused = other.post(link, data={"csrf_token": other_csrf})
    assert refused.status_code == 400 and "no longer waiting" in refused.text
    assert env.store.lineage("web").active is None and len(_rows(env)) == 1
    # the sender still can
    assert env.client.post(link, data={"csrf_token": csrf}).status_code == 303
    assert env.store.lineage("web").active is not None


def test_each_account_keeps_a_bounded_number_the_oldest_dropped(env: ConsoleEnv, pki: PKI) -> None:
    logged_in(env)
    admin = env.console.accounts.accounts()[0]
    ops = env.console.accounts.add("ops", PASSWORD, Role.OPERATOR, by="console:test")
    actors = [Actor(a.id, a.username, AuthMethod.SESSION, role=a.role, lineages=a.lineages) for a in (admin, ops)]
    imports = env.console.imports
    _, theirs = imports.preview(actors[1], "web", _bundle(pki), [])
    mine = []
    for _ in range(MAX_PREVIEWS + 2):
        env.clock.advance(seconds=1)
        _, preview = imports.preview(actors[0], "web", _bundle(pki), [])
        assert preview is not None
        mine.append(preview.id)
    assert len(_rows(env)) == MAX_PREVIEWS + 1  # the other account's one is not dropped for these
    for gone in mine[:2]:
        with pytest.raises(InputError, match="no longer waiting"):
            imports.get(actors[0], gone)
    assert imports.get(actors[0], mine[2]).lineage == "web"
    assert theirs is not None and imports.get(actors[1], theirs.id).lineage == "web"


def test_a_sealed_import_moved_to_another_row_does_not_open(env: ConsoleEnv, pki: PKI) -> None:
    csrf = logged_in(env)
    first = confirm_link(upload(env, csrf, "web", _bundle(pki)).text)
    env.clock.advance(seconds=1)
    second = confirm_link(upload(env, csrf, "web", _bundle(pki)).text)
    assert first is not None and second is not None
    with sqlite3.connect(env.home / "certfleet.db") as db:
        # the sealed files of the first row copied over the second one's
        db.execute(f"UPDATE {TABLE} SET sealed = (SELECT sealed FROM {TABLE} ORDER BY created_at LIMIT 1)")  # noqa: S608
    refused = env.client.post(second, data={"csrf_token": csrf})
    assert refused.status_code == 400 and "no longer waiting" in refused.text
    assert env.client.post(first, data={"csrf_token": csrf}).status_code == 303
