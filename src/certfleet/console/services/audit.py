"""Who makes a request, what the console writes to the store's audit trail in their name, and the
trail as the audit page reads it: filtered, a page at a time, each detail in words."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from certfleet.console.roles import LineageScope, Role
from certfleet.store import AuditAction, AuditEntry, Store

__all__ = ["Actor", "Audit", "AuditLine", "AuditPage", "AuthMethod", "ConsoleAction", "readable"]

PAGE_SIZE = 50
SCAN_LIMIT = 10_000  # a filter looks through this many of the newest entries


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


def readable(value: Any) -> str:
    """A detail's value in words: ``{'main': 'ok'}`` is "main: ok", a list is comma-separated."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {readable(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(f"({readable(v)})" if isinstance(v, Mapping) else readable(v) for v in value) or "none"
    return str(value)


@dataclass(frozen=True, slots=True)
class AuditLine:
    entry: AuditEntry
    details: tuple[tuple[str, str], ...]  # each detail's name and its value in words

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditLine:
        return cls(entry, tuple((str(k).replace("_", " "), readable(v)) for k, v in entry.detail.items()))

    def matches(self, text: str) -> bool:
        words = " ".join([self.entry.actor, self.entry.action, *(f"{k}: {v}" for k, v in self.details)])
        return text.lower() in words.lower()


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of the trail, newest first, after the filter."""

    lines: tuple[AuditLine, ...]
    number: int  # 1 for the newest
    more: bool  # an older page exists
    kind: str  # "" for every kind of action
    text: str
    searched: int  # how many of the newest entries the filter looked through

    @property
    def filtered(self) -> bool:
        return bool(self.kind or self.text)


def action_kinds() -> list[str]:
    """The kinds of action a filter offers: ``node``, ``version``, ``deploy``, ``console``..."""
    return sorted({a.value.split(".", 1)[0] for a in (*AuditAction, *ConsoleAction)})


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

    def page(
        self,
        *,
        kind: str = "",
        text: str = "",
        number: int = 1,
        size: int = PAGE_SIZE,
        scope: LineageScope = None,
    ) -> AuditPage:
        """Page ``number`` of the entries whose action is of ``kind`` (``node`` takes ``node.add``...)
        and whose who, what or detail holds ``text``; a filter looks through the newest
        ``SCAN_LIMIT`` entries. With ``scope`` (an account kept to some lineages), only the
        entries about one of those lineages."""
        number = max(1, min(number, SCAN_LIMIT // size))
        kind, text = kind.strip()[:40], text.strip()[:200]
        filtered = bool(kind or text) or scope is not None
        wanted = SCAN_LIMIT if filtered else number * size + 1
        entries = self.store.audit_log(limit=wanted)
        searched = len(entries)
        if scope is not None:
            entries = [e for e in entries if isinstance(e.detail.get("lineage"), str) and e.detail["lineage"] in scope]
        lines = [AuditLine.of(e) for e in entries if not kind or e.action == kind or e.action.startswith(f"{kind}.")]
        if text:
            lines = [line for line in lines if line.matches(text)]
        start = (number - 1) * size
        return AuditPage(
            tuple(lines[start : start + size]), number, len(lines) > start + size, kind, text, searched
        )
