"""API tokens: each carries a role and lineages (never more than its account's, nor more than the
token that made it), an expiry (90 days unless asked otherwise, never past its parent's), and
dies with its parent's revocation and its account's removal. Its value is shown once; the
database keeps its SHA-256."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from certfleet.clock import Clock
from certfleet.console import security
from certfleet.console.models import AccountRow, ApiTokenRow, Sessions
from certfleet.console.roles import Forbidden, LineageScope, Role, narrower_scope, scope_within
from certfleet.console.services.accounts import check_lineages, lineages_of, role_of
from certfleet.console.services.audit import Actor, Audit, AuthMethod, ConsoleAction
from certfleet.errors import InputError, NotFoundError

__all__ = ["API_TOKEN_PREFIX", "DEFAULT_DAYS", "MAX_DAYS", "ApiTokenInfo", "Tokens"]

API_TOKEN_PREFIX = "cft_"  # noqa: S105 (a prefix that makes leaked tokens easy to find, not a secret)
DEFAULT_DAYS = 90
MAX_DAYS = 366
_MAX_DEPTH = 32  # tokens made by tokens: a chain longer than this is refused


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    id: int
    name: str
    username: str
    role: Role
    lineages: LineageScope
    created_at: dt.datetime
    expires_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    parent_id: int | None = None

    def live(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "account": self.username,
            "role": self.role.value,
            "lineages": sorted(self.lineages) if self.lineages is not None else None,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked": self.revoked_at is not None,
            "parent": self.parent_id,
        }


def _token_role(row: ApiTokenRow) -> Role:
    try:
        return Role(row.role)
    except ValueError:
        return Role.METRICS


def _info(row: ApiTokenRow) -> ApiTokenInfo:
    return ApiTokenInfo(
        row.id,
        row.name,
        row.account.username,
        _token_role(row),
        lineages_of(row.lineages),
        row.created_at,
        row.expires_at,
        row.last_used_at,
        row.revoked_at,
        row.parent_id,
    )


def _audit_detail(info: ApiTokenInfo) -> dict[str, Any]:
    # "name", not "token": the audit trail blanks keys named like secrets, and a name is none
    return {
        "name": info.name,
        "id": info.id,
        "role": info.role.value,
        "lineages": sorted(info.lineages) if info.lineages is not None else None,
        "expires_at": info.expires_at.isoformat(),
        "parent": info.parent_id,
    }


class Tokens:
    def __init__(self, sessions: Sessions, *, audit: Audit, clock: Clock) -> None:
        self._db = sessions
        self._audit = audit
        self._clock = clock

    def create(
        self,
        actor: Actor,
        name: str,
        *,
        role: Role | None = None,
        days: int | None = None,
        lineages: Iterable[str] | None = None,
    ) -> tuple[str, ApiTokenInfo]:
        """A token for automation, in ``actor``'s name; its value is returned now and never again.

        ``role`` and ``lineages`` default to the actor's and may only narrow them; the expiry is
        ``days`` from now (90 by default), and never later than the expiry of the token the
        actor used, if any.
        """
        name = name.strip()
        if not (1 <= len(name) <= 64) or not name.isprintable():
            raise InputError("a token needs a name of 1 to 64 printable characters")
        role = role or actor.role
        if not actor.may(role):
            raise Forbidden(
                f"a token can have at most your own role ({actor.role.value}), not {role.value}",
                hint="ask an administrator for a token with more rights",
            )
        scope = check_lineages(lineages) if lineages is not None else actor.lineages
        if not scope_within(scope, actor.lineages):
            raise Forbidden("a token can reach only lineages you may reach yourself")
        if days is not None and not (1 <= days <= MAX_DAYS):
            raise InputError(f"a token lives 1 to {MAX_DAYS} days")
        now = self._clock()
        expires = now + dt.timedelta(days=days or DEFAULT_DAYS)
        if actor.token_expires_at is not None:
            expires = min(expires, actor.token_expires_at)
        token = API_TOKEN_PREFIX + security.new_token()
        with self._db(write=True) as s:
            if actor.token_id is not None and self._depth(s, actor.token_id) >= _MAX_DEPTH:
                raise Forbidden("this token was made by too long a chain of tokens to make another")
            row = ApiTokenRow(
                name=name,
                token_hash=security.token_hash(token),
                account_id=actor.account_id,
                role=role.value,
                lineages=sorted(scope) if scope is not None else None,
                parent_id=actor.token_id,
                created_at=now,
                expires_at=expires,
            )
            s.add(row)
            s.flush()
            info = _info(row)
        self._audit.record(actor, ConsoleAction.TOKEN_CREATE, _audit_detail(info))
        return token, info

    def visible(self, actor: Actor) -> list[ApiTokenInfo]:
        """An admin sees every token; anyone else the tokens of their own account."""
        with self._db(write=False) as s:
            q = select(ApiTokenRow).order_by(ApiTokenRow.id)
            if not actor.may(Role.ADMIN):
                q = q.where(ApiTokenRow.account_id == actor.account_id)
            return [_info(r) for r in s.scalars(q)]

    def revoke(self, actor: Actor, token_id: int) -> str:
        """Revoke a token and every token made from it; its name. Someone else's token is, for
        anyone but an admin, a token that does not exist."""
        now = self._clock()
        with self._db(write=True) as s:
            row = s.get(ApiTokenRow, token_id)
            if row is None or (not actor.may(Role.ADMIN) and row.account_id != actor.account_id):
                raise NotFoundError(f"no API token with id {token_id}")
            info = _info(row)
            ended = [row.id]
            frontier = [row.id]
            while frontier:
                children = s.scalars(select(ApiTokenRow).where(ApiTokenRow.parent_id.in_(frontier))).all()
                frontier = [c.id for c in children if c.id not in ended]
                ended += frontier
                for child in children:
                    child.revoked_at = child.revoked_at or now
            row.revoked_at = row.revoked_at or now
        detail = {**_audit_detail(info), "with": len(ended) - 1}
        self._audit.record(actor, ConsoleAction.TOKEN_REVOKE, detail)
        return info.name

    def bearer(self, token: str) -> Actor | None:
        """The actor a bearer token stands for, or None: unknown, revoked, expired, made by a
        token that no longer lives, or of a removed account."""
        if not token.startswith(API_TOKEN_PREFIX) or len(token) > 128:
            return None
        now = self._clock()
        with self._db(write=False) as s:
            row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == security.token_hash(token)))
            if row is None or not self._lives(s, row, now):
                return None
            account: AccountRow = row.account
            actor = Actor(
                account.id,
                account.username,
                AuthMethod.TOKEN,
                row.name,
                role=Role.narrower(_token_role(row), role_of(account)),
                lineages=narrower_scope(lineages_of(row.lineages), lineages_of(account.lineages)),
                token_id=row.id,
                token_expires_at=row.expires_at,
            )
            stale = row.last_used_at is None or row.last_used_at + dt.timedelta(minutes=1) <= now
            row_id = row.id
        if stale:
            with self._db(write=True) as s:
                live = s.get(ApiTokenRow, row_id)
                if live is not None:
                    live.last_used_at = now
        return actor

    @staticmethod
    def _lives(s: Session, row: ApiTokenRow, now: dt.datetime) -> bool:
        """The token and every token above it: none revoked, none expired."""
        seen: set[int] = set()
        current: ApiTokenRow | None = row
        while current is not None:
            if current.revoked_at is not None or current.expires_at <= now or current.id in seen:
                return False
            if len(seen) > _MAX_DEPTH:
                return False
            seen.add(current.id)
            if current.parent_id is None:
                return True
            current = s.get(ApiTokenRow, current.parent_id)
            if current is None:  # its parent is gone: so is it
                return False
        return True

    @staticmethod
    def _depth(s: Session, token_id: int) -> int:
        depth = 0
        current = s.get(ApiTokenRow, token_id)
        while current is not None and current.parent_id is not None and depth <= _MAX_DEPTH:
            depth += 1
            current = s.get(ApiTokenRow, current.parent_id)
        return depth
