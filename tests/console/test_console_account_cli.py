"""``certfleet account``: the console's accounts from the machine itself, and the way back in when
the only administrator is locked out or has lost the password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from certfleet.clock import utc_now
from certfleet.console.services.accounts import Accounts, LoginRefused
from certfleet.console.services.audit import Audit
from certfleet.console.services.throttle import PAIR_FREE, LoginThrottled
from certfleet.store import Store
from support.console import PASSWORD


@pytest.fixture
def home(certfleet_home: Path, tmp_path: Path, cli: Any) -> Path:
    assert cli("init").code == 0
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    return certfleet_home


def _accounts(home: Path) -> Accounts:
    store = Store.open(home)
    return Accounts(store.session, audit=Audit(store), clock=utc_now)


def test_add_list_and_remove(home: Path, tmp_path: Path, cli: Any) -> None:
    pw = tmp_path / "pw"
    first = cli("account", "add", "alice", "--role", "operator", "--password-file", pw)
    assert first.code == 2 and "first account is the administrator" in first.err
    assert cli("account", "add", "root", "--role", "admin", "--password-file", pw).code == 0
    added = cli("account", "add", "alice", "--role", "operator", "-l", "web", "--password-file", pw, "--json")
    assert added.code == 0 and added.json()["role"] == "operator" and added.json()["lineages"] == ["web"]
    assert cli("account", "add", "alice", "--role", "viewer", "--password-file", pw).code == 2  # exists
    assert cli("account", "add", "bob", "--role", "owner", "--password-file", pw).code == 2  # no such role
    listed = cli("account", "list", "--json").json()["accounts"]
    assert [(a["username"], a["role"]) for a in listed] == [("alice", "operator"), ("root", "admin")]
    assert "alice" in cli("account", "list").out and "operator" in cli("account", "list").out
    last = cli("account", "remove", "root")
    assert last.code == 2 and "last administrator" in last.err
    assert cli("account", "remove", "alice", "--json").json() == {"removed": "alice"}
    assert cli("account", "remove", "alice").code == 2
    actions = [e.action for e in Store.open(home).audit_log()]
    assert "console.account-create" in actions and "console.account-remove" in actions


def test_reset_password_ends_sessions_and_unlock_lets_the_admin_back_in(home: Path, tmp_path: Path, cli: Any) -> None:
    assert cli("account", "add", "admin", "--role", "admin", "--password-file", tmp_path / "pw").code == 0
    accounts = _accounts(home)
    token, _ = accounts.login("admin", PASSWORD, address="192.0.2.1")
    assert accounts.session(token) is not None
    for _ in range(PAIR_FREE):
        with pytest.raises(LoginRefused):
            accounts.login("admin", "not the password at all", address="192.0.2.1")
    with pytest.raises(LoginThrottled):
        accounts.login("admin", PASSWORD, address="192.0.2.1")
    assert cli("account", "list", "--json").json()["accounts"][0]["locked"] is True
    unlocked = cli("account", "unlock", "admin", "--json")
    assert unlocked.code == 0 and unlocked.json()["cleared"] >= 1
    assert accounts.login("admin", PASSWORD, address="192.0.2.1")
    (tmp_path / "new").write_text("another long password for admin\n")
    assert cli("account", "reset-password", "admin", "--password-file", tmp_path / "new").code == 0
    assert accounts.session(token) is None  # every session of the account ended
    with pytest.raises(LoginRefused):
        accounts.login("admin", PASSWORD, address="192.0.2.2")
    assert accounts.login("admin", "another long password for admin", address="192.0.2.2")
    short = tmp_path / "short"
    short.write_text("short\n")
    assert cli("account", "reset-password", "admin", "--password-file", short).code == 2
