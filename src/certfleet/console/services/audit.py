"""Who makes a request, and what the console writes to the store's audit trail in their name."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from certfleet.store import Store

__all__ = ["Actor", "Audit", "AuthMethod", "ConsoleAction"]


class AuthMethod(StrEnum):
    SESSION = "session"
    TOKEN = "token"  # noqa: S105 (an enum value)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a request: the account, and how it proved it."""

    account_id: int
    username: str
    method: AuthMethod
    token_name: str | None = None

    @property
    def audit_name(self) -> str:
        return f"{self.username} (token {self.token_name})" if self.token_name else self.username

    def to_dict(self) -> dict[str, Any]:
        return {"username": self.username, "method": self.method.value, "token": self.token_name}


class ConsoleAction(StrEnum):
    """What the console writes to the audit trail besides the store's own actions."""

    LOGIN = "console.login"
    LOGIN_FAILED = "console.login-failed"
    LOGOUT = "console.logout"
    ACCOUNT_CREATE = "console.account-create"
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
