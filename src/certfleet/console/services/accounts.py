"""Accounts, their sessions, the setup link and logins, in the console's tables; each change, and
each login, written to the audit trail. API tokens are :mod:`.tokens`; login throttling is
:mod:`.throttle`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from certfleet.clock import Clock
from certfleet.console import security
from certfleet.console.models import AccountRow, ApiTokenRow, SessionRow, Sessions, SetupTokenRow
from certfleet.console.roles import ACCOUNT_ROLES, Forbidden, LineageScope, Role, scope_of
from certfleet.console.services.audit import Actor, Audit, AuthMethod, ConsoleAction
from certfleet.console.services.throttle import LoginThrottle, LoginThrottled
from certfleet.errors import InputError, NotFoundError
from certfleet.store import check_name

__all__ = [
    "AccountInfo",
    "Accounts",
    "LoginRefused",
    "LoginThrottled",
    "SessionInfo",
    "check_username",
]

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# verified when the account does not exist, so that a wrong name costs as long as a wrong password
_DUMMY_HASH = security.hash_password("certfleet-no-such-account")


@dataclass(frozen=True, slots=True)
class SessionInfo:
    actor: Actor
    csrf_token: str
    expires_at: dt.datetime

    def __repr__(self) -> str:
        return f"SessionInfo(user={self.actor.username!r}, expires_at={self.expires_at.isoformat()})"


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: int
    username: str
    role: Role
    lineages: LineageScope
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    tokens: int = 0  # live API tokens
    locked: bool = False  # logins wait from some address now

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role.value,
            "lineages": sorted(self.lineages) if self.lineages is not None else None,
            "created_at": self.created_at.isoformat(),
            "last_login_at": self.last_login_at.isoformat() if self.last_login_at else None,
            "tokens": self.tokens,
            "locked": self.locked,
        }


class LoginRefused(InputError):
    """Wrong account name or password (which one is never said)."""


def check_username(username: str) -> str:
    username = username.strip()
    if not _USERNAME.match(username):
        raise InputError("the account name must be 1 to 64 letters, digits or . _ @ -, starting with a letter or digit")
    return username


def check_lineages(names: Iterable[str] | None) -> LineageScope:
    """An account's or token's lineages: each a lineage name (it need not exist yet)."""
    if names is None:
        return None
    scope = scope_of(check_name("lineage", n.strip()) for n in names)
    if not scope:
        raise InputError("name at least one lineage, or none to allow every lineage")
    if len(scope) > 100:
        raise InputError("at most 100 lineages")
    return scope


def role_of(row: AccountRow) -> Role:
    try:
        role = Role(row.role)
    except ValueError:  # written by a newer certfleet: the narrowest reading
        return Role.VIEWER
    return role if role in ACCOUNT_ROLES else Role.VIEWER


def lineages_of(value: list[Any] | None) -> LineageScope:
    return None if value is None else frozenset(str(v) for v in value)


def _stored(scope: LineageScope) -> list[str] | None:
    return None if scope is None else sorted(scope)


class Accounts:
    """Every check of who someone is; the clock is passed in so expiry and backoff are testable."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        audit: Audit,
        clock: Clock,
        session_idle: dt.timedelta = dt.timedelta(minutes=30),
        session_max: dt.timedelta = dt.timedelta(hours=12),
        setup_ttl: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self._db = sessions
        self._audit = audit
        self._clock = clock
        self.throttle = LoginThrottle(sessions, clock=clock)
        self.session_idle = session_idle
        self.session_max = session_max
        self.setup_ttl = setup_ttl

    # -- first account -------------------------------------------------------------------------

    def has_accounts(self) -> bool:
        with self._db(write=False) as s:
            return bool(s.scalar(select(func.count()).select_from(AccountRow)))

    def new_setup_token(self) -> str:
        """A fresh one-time setup link token; any earlier unused one stops working."""
        now = self._clock()
        token = security.new_token()
        with self._db(write=True) as s:
            s.execute(delete(SetupTokenRow))
            s.add(SetupTokenRow(token_hash=security.token_hash(token), created_at=now, expires_at=now + self.setup_ttl))
        return token

    def setup_token_valid(self, token: str) -> bool:
        with self._db(write=False) as s:
            return self._live_setup(s, token) is not None

    def _live_setup(self, s: Session, token: str) -> SetupTokenRow | None:
        row = s.get(SetupTokenRow, security.token_hash(token))
        if row is None or row.used_at is not None or row.expires_at <= self._clock():
            return None
        if s.scalar(select(func.count()).select_from(AccountRow)):
            return None
        return row

    def create_first_admin(self, token: str, username: str, password: str) -> str:
        """Use the setup token (once) to make the administrator account."""
        username = check_username(username)
        security.check_password_policy(password, username)
        password_hash = security.hash_password(password)
        with self._db(write=True) as s:
            row = self._live_setup(s, token)
            if row is None:
                raise LoginRefused(
                    "this setup link is used, expired or unknown",
                    hint="restart `certfleet serve` to print a new one (only while no account exists)",
                )
            row.used_at = self._clock()
            s.add(
                AccountRow(
                    username=username,
                    password_hash=password_hash,
                    role=Role.ADMIN.value,
                    lineages=None,
                    created_at=self._clock(),
                )
            )
        self._audit.record_as(
            f"console:{username}",
            ConsoleAction.ACCOUNT_CREATE,
            {"account": username, "role": Role.ADMIN.value, "via": "setup link"},
        )
        return username

    # -- login and sessions --------------------------------------------------------------------

    def login(self, username: str, password: str, *, address: str) -> tuple[str, SessionInfo]:
        """Check the password; returns the new session's cookie value and the session.

        The attempt is counted before the password is checked (see :mod:`.throttle`); while the
        account name from this address, or this address, has to wait, even the right password
        is refused with :class:`LoginThrottled`. Both a login and a refused password are audited.
        """
        name = username.strip()[:64]
        attempt = self.throttle.begin(name, address)
        try:
            token, info = self._login(name, password, address=address)
        except LoginRefused:
            self.throttle.settle(attempt, good=False)
            detail = {"account": name, "address": address}
            self._audit.record_as("console:-", ConsoleAction.LOGIN_FAILED, detail)
            raise
        except BaseException:  # not checked (too busy, the store failed): it counts for nothing
            self.throttle.forget(attempt)
            raise
        self.throttle.settle(attempt, good=True)
        self._audit.record(info.actor, ConsoleAction.LOGIN, {"address": address})
        return token, info

    def _login(self, name: str, password: str, *, address: str) -> tuple[str, SessionInfo]:
        now = self._clock()
        with self._db(write=False) as s:
            account = s.scalar(select(AccountRow).where(AccountRow.username == name))
            stored = account.password_hash if account is not None else _DUMMY_HASH
            account_id = account.id if account is not None else None
        good = security.verify_password(stored, password) and account_id is not None
        if not good:
            raise LoginRefused("wrong account name or password")
        with self._db(write=True) as s:
            account = s.get(AccountRow, account_id)
            if account is None:  # removed between the two transactions
                raise LoginRefused("wrong account name or password")
            account.last_login_at = now
            if security.needs_rehash(account.password_hash):
                account.password_hash = security.hash_password(password)
            token = security.new_token()
            csrf = security.new_token()
            expires = now + self.session_idle
            s.add(
                SessionRow(
                    token_hash=security.token_hash(token),
                    account_id=account.id,
                    csrf_token=csrf,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires,
                    address=address[:64],
                )
            )
            # expired sessions of anyone go away here, so the table never grows without bound
            s.execute(delete(SessionRow).where(SessionRow.expires_at <= now))
            info = SessionInfo(self._actor(account, AuthMethod.SESSION), csrf, expires)
        return token, info

    @staticmethod
    def _actor(account: AccountRow, method: AuthMethod) -> Actor:
        return Actor(
            account.id, account.username, method, role=role_of(account), lineages=lineages_of(account.lineages)
        )

    def session(self, token: str) -> SessionInfo | None:
        """The live session for a cookie value (its idle expiry slides), or None."""
        if not token or len(token) > 128:
            return None
        now = self._clock()
        with self._db(write=False) as s:
            row = s.get(SessionRow, security.token_hash(token))
            if row is None:
                return None
            expires = row.expires_at
            if expires <= now or row.created_at + self.session_max <= now:
                return None
            actor = self._actor(row.account, AuthMethod.SESSION)
            csrf = row.csrf_token
            stale = row.last_seen_at + dt.timedelta(seconds=60) <= now
        if stale:  # sliding expiry, written at most once a minute per session
            expires = min(now + self.session_idle, row.created_at + self.session_max)
            with self._db(write=True) as s:
                live = s.get(SessionRow, security.token_hash(token))
                if live is not None:
                    live.last_seen_at = now
                    live.expires_at = expires
        return SessionInfo(actor, csrf, expires)

    def logout(self, actor: Actor, token: str) -> None:
        with self._db(write=True) as s:
            s.execute(delete(SessionRow).where(SessionRow.token_hash == security.token_hash(token)))
        self._audit.record(actor, ConsoleAction.LOGOUT, {})

    def confirm_password(self, actor: Actor, password: str, *, address: str) -> None:
        """The account's password asked again before a change that runs something on a machine;
        counted and throttled like a login. Refused: :class:`~certfleet.console.roles.Forbidden`."""
        attempt = self.throttle.begin(actor.username, address)
        try:
            with self._db(write=False) as s:
                row = s.get(AccountRow, actor.account_id)
                stored = row.password_hash if row is not None else _DUMMY_HASH
            good = row is not None and bool(password) and security.verify_password(stored, password)
        except BaseException:
            self.throttle.forget(attempt)
            raise
        self.throttle.settle(attempt, good=good)
        if not good:
            self._audit.record(actor, ConsoleAction.PASSWORD_CONFIRM_FAILED, {"address": address})
            raise Forbidden(
                "this change needs your password again, and the one given is wrong or missing",
                hint="type your own password in the password field",
            )

    # -- accounts (the CLI's `certfleet account`, and admins in the console) ----------------------

    def accounts(self) -> list[AccountInfo]:
        now = self._clock()
        with self._db(write=False) as s:
            rows = s.scalars(select(AccountRow).order_by(AccountRow.username)).all()
            counted = s.execute(
                select(ApiTokenRow.account_id, func.count())
                .where(ApiTokenRow.revoked_at.is_(None), ApiTokenRow.expires_at > now)
                .group_by(ApiTokenRow.account_id)
            )
            live = {int(account_id): int(count) for account_id, count in counted}
            infos = [self._info(r, live.get(r.id, 0)) for r in rows]
        locked = self.throttle.locked([i.username for i in infos])
        return [dataclasses.replace(i, locked=i.username in locked) for i in infos]

    def account(self, username: str) -> AccountInfo:
        found = next((a for a in self.accounts() if a.username == username), None)
        if found is None:
            raise NotFoundError(f"no account named {username[:64]!r}", hint="`certfleet account list` lists them")
        return found

    @staticmethod
    def _info(row: AccountRow, tokens: int = 0) -> AccountInfo:
        return AccountInfo(
            row.id, row.username, role_of(row), lineages_of(row.lineages), row.created_at, row.last_login_at, tokens
        )

    def add(
        self, username: str, password: str, role: Role, *, lineages: Iterable[str] | None = None, by: str
    ) -> AccountInfo:
        """A new account with ``role``, kept to ``lineages`` when given. The first account of a
        console is its administrator."""
        username = check_username(username)
        if role not in ACCOUNT_ROLES:
            raise InputError(f"an account cannot have the role {role.value}", hint="viewer, operator or admin")
        scope = check_lineages(lineages)
        security.check_password_policy(password, username)
        password_hash = security.hash_password(password)
        with self._db(write=True) as s:
            if s.scalar(select(AccountRow.id).where(AccountRow.username == username)) is not None:
                raise InputError(
                    f"account {username} exists", hint="`certfleet account reset-password` changes its password"
                )
            if role is not Role.ADMIN and not s.scalar(select(func.count()).select_from(AccountRow)):
                raise InputError("the first account is the administrator", hint="add it with --role admin")
            row = AccountRow(
                username=username,
                password_hash=password_hash,
                role=role.value,
                lineages=_stored(scope),
                created_at=self._clock(),
            )
            s.add(row)
            s.flush()
            info = self._info(row)
        self._audit.record_as(by, ConsoleAction.ACCOUNT_CREATE, {"account": username, **_scope_detail(info)})
        return info

    def check_removable(self, username: str, *, asker: str | None = None) -> AccountInfo:
        """The account (with its live tokens), if :meth:`remove` would remove it now (asked by
        ``asker``); else why not."""
        with self._db(write=False) as s:
            self._removable(s, username, asker)
        return self.account(username)

    def _removable(self, s: Session, username: str, asker: str | None) -> AccountInfo:
        info = self._info(self._row(s, username))
        if info.role is Role.ADMIN:
            admins = select(func.count()).select_from(AccountRow).where(AccountRow.role == Role.ADMIN.value)
            if (s.scalar(admins) or 0) <= 1:
                raise InputError(
                    f"{username} is the last administrator", hint="add another admin account before removing it"
                )
        if asker is not None and info.username == asker:
            raise InputError(
                "you cannot remove your own account", hint="another administrator can remove it, if it must go"
            )
        return info

    def remove(self, username: str, *, by: str, asker: str | None = None) -> AccountInfo:
        """Remove the account; its sessions and API tokens end with it. The last admin stays, and
        an account never removes itself (``asker``: the console account that asks)."""
        with self._db(write=True) as s:
            info = self._removable(s, username, asker)
            row = self._row(s, username)
            s.execute(delete(SessionRow).where(SessionRow.account_id == row.id))
            s.execute(delete(ApiTokenRow).where(ApiTokenRow.account_id == row.id))
            s.delete(row)
        self.throttle.unlock(name=username)
        self._audit.record_as(by, ConsoleAction.ACCOUNT_REMOVE, {"account": username, **_scope_detail(info)})
        return info

    def reset_password(self, username: str, password: str, *, by: str) -> AccountInfo:
        """A new password; every session of the account ends and its logins wait no more."""
        with self._db(write=False) as s:
            name = self._row(s, username).username
        security.check_password_policy(password, name)
        password_hash = security.hash_password(password)
        with self._db(write=True) as s:
            row = self._row(s, username)
            row.password_hash = password_hash
            s.execute(delete(SessionRow).where(SessionRow.account_id == row.id))
            info = self._info(row)
        self.throttle.unlock(name=username)
        self._audit.record_as(by, ConsoleAction.PASSWORD_RESET, {"account": username})
        return info

    def unlock(self, username: str | None = None, *, address: str | None = None, by: str) -> int:
        """Lift the login waits of ``username`` (from every address), of ``address``, or all."""
        if username is not None:
            with self._db(write=False) as s:
                self._row(s, username)
        count = self.throttle.unlock(name=username, address=address)
        self._audit.record_as(by, ConsoleAction.UNLOCK, {"account": username, "address": address, "counts": count})
        return count

    @staticmethod
    def _row(s: Session, username: str) -> AccountRow:
        row = s.scalar(select(AccountRow).where(AccountRow.username == username))
        if row is None:
            raise NotFoundError(f"no account named {username[:64]!r}", hint="`certfleet account list` lists them")
        return row


def _scope_detail(info: AccountInfo) -> dict[str, Any]:
    return {"role": info.role.value, "lineages": sorted(info.lineages) if info.lineages is not None else None}
