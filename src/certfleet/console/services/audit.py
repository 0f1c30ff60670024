"""Who makes a request, and what the console writes to the store's audit trail in their name."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from certfleet.console.roles import LineageScope, Role
from certfleet.store import Store

__all__ = ["Actor", "Audit", "AuthMethod", "ConsoleAction"]


class AuthMethod(StrEnum):
    SESSION = "session"
    TOKEN = "token"  # noqa: S105 (an enum value)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a request: the account, how it proved it, and what it may do: its role and the
    lineages it is kept to (a token's, when it came with one: never more than its account's)."""

    account_id: int
    username: str
    method: AuthMethod
    token_name: str | None = None
    role: Role = Role.VIEWER
    lineages: LineageScope = None
    token_id: int | None = None
    token_expires_at: dt.datetime | None = None

    @property
    def audit_name(self) -> str:
        return f"{self.username} (token {self.token_name})" if self.token_name else self.username

    def may(self, role: Role) -> bool:
        return self.role.covers(role)

    def allows(self, lineage: str) -> bool:
        """Whether the account (or token) may see and act on ``lineage``."""
        return self.lineages is None or lineage in self.lineages

    def to_dict(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "method": self.method.value,
            "token": self.token_name,
            "role": self.role.value,
            "lineages": sorted(self.lineages) if self.lineages is not None else None,
            "expires_at": self.token_expires_at.isoformat() if self.token_expires_at else None,
        }


class ConsoleAction(StrEnum):
    """What the console writes to the audit trail besides the store's own actions."""

    LOGIN = "console.login"
    LOGIN_FAILED = "console.login-failed"
    LOGOUT = "console.logout"
    ACCOUNT_CREATE = "console.account-create"
    ACCOUNT_REMOVE = "console.account-remove"
    PASSWORD_RESET = "console.password-reset"  # noqa: S105 (an audit action, not a secret)
    UNLOCK = "console.unlock"
    PASSWORD_CONFIRM_FAILED = "console.password-confirm-failed"  # noqa: S105
    NODE_COMMANDS = "console.node-commands"
    TOKEN_CREATE = "console.token-create"  # noqa: S105 (an audit action, not a secret)
    TOKEN_REVOKE = "console.token-revoke"  # noqa: S105
    PROFILE_SAVE = "client.profile-save"
    PROFILE_REMOVE = "client.profile-remove"
    USER_ADD = "client.user-add"
    USER_REMOVE = "client.user-remove"
    LINK_CREATE = "client.link-create"
    FETCH = "client.fetch"


@dataclass(frozen=True, slots=True)
class Audit:
    """The store in the name of a console account: its changes, and the console's own actions."""

    store: Store

    def store_for(self, actor: Actor) -> Store:
        """The store, recording the changes it makes as ``console:<account>``."""
        return self.store.with_actor(f"console:{actor.audit_name}")

    def record(self, actor: Actor, action: ConsoleAction, detail: dict[str, Any] | None = None) -> None:
        self.store_for(actor).audit(action, detail or {})

    def record_as(self, who: str, action: ConsoleAction, detail: dict[str, Any]) -> None:
        """For what happens before anyone is logged in (a failed login, a client's fetch)."""
        self.store.audit(action, detail, actor=who)
