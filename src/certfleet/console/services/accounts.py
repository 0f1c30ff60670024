"""Accounts, sessions, the setup link, API tokens and login backoff, in the console's tables; each
change, and each login, written to the audit trail."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from certfleet.clock import Clock
from certfleet.console import security
from certfleet.console.models import AccountRow, ApiTokenRow, LoginFailureRow, SessionRow, Sessions, SetupTokenRow
from certfleet.console.services.audit import Actor, Audit, AuthMethod, ConsoleAction
from certfleet.errors import InputError, NotFoundError

__all__ = [
    "API_TOKEN_PREFIX",
    "Accounts",
    "ApiTokenInfo",
    "LoginRefused",
    "LoginThrottled",
    "SessionInfo",
]

API_TOKEN_PREFIX = "cft_"  # noqa: S105 (a prefix that makes leaked tokens easy to find, not a secret)
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
class ApiTokenInfo:
    id: int
    name: str
    username: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "account": self.username,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked": self.revoked_at is not None,
        }


class LoginRefused(InputError):
    """Wrong account name or password (which one is never said)."""


class LoginThrottled(InputError):
    def __init__(self, wait: dt.timedelta) -> None:
        seconds = max(math.ceil(wait.total_seconds()), 1)
        super().__init__(
            f"too many failed logins: try again in {seconds} s",
            hint="wait, then log in with the right password",
        )
        self.retry_after = seconds


def check_username(username: str) -> str:
    username = username.strip()
    if not _USERNAME.match(username):
        raise InputError("the account name must be 1 to 64 letters, digits or . _ @ -, starting with a letter or digit")
    return username


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
                    password_hash=security.hash_password(password),
                    is_admin=True,
                    created_at=self._clock(),
                )
            )
        self._audit.record_as(
            f"console:{username}", ConsoleAction.ACCOUNT_CREATE, {"account": username, "via": "setup link"}
        )
        return username

    # -- login and sessions --------------------------------------------------------------------

    def _locked(self, s: Session, keys: list[str], now: dt.datetime) -> dt.timedelta | None:
        waits = []
        for key in keys:
            row = s.get(LoginFailureRow, key)
            if row is not None and row.locked_until is not None and row.locked_until > now:
                waits.append(row.locked_until - now)
        return max(waits) if waits else None

    def login(self, username: str, password: str, *, address: str) -> tuple[str, SessionInfo]:
        """Check the password; returns the new session's cookie value and the session.

        Failed attempts are counted per account name and per client address; after a few, each
        further attempt waits longer (doubling), whether or not the password is right. Both a
        login and a refused password are audited.
        """
        try:
            token, info = self._login(username, password, address=address)
        except LoginRefused:
            detail = {"account": username[:64], "address": address}
            self._audit.record_as("console:-", ConsoleAction.LOGIN_FAILED, detail)
            raise
        self._audit.record(info.actor, ConsoleAction.LOGIN, {"address": address})
        return token, info

    def _login(self, username: str, password: str, *, address: str) -> tuple[str, SessionInfo]:
        now = self._clock()
        name = username.strip()[:64]
        keys = [f"account:{name.lower()}", f"address:{address[:64]}"]
        with self._db(write=False) as s:
            wait = self._locked(s, keys, now)
        if wait is not None:
            raise LoginThrottled(wait)
        with self._db(write=False) as s:
            account = s.scalar(select(AccountRow).where(AccountRow.username == name))
            stored = account.password_hash if account is not None else _DUMMY_HASH
            account_id = account.id if account is not None else None
        good = security.verify_password(stored, password) and account_id is not None
        if not good:
            with self._db(write=True) as s:
                for key in keys:
                    row = s.get(LoginFailureRow, key)
                    if row is None:
                        row = LoginFailureRow(key=key, failures=0, last_at=now)
                        s.add(row)
                    row.failures += 1
                    row.last_at = now
                    wait = security.backoff(row.failures)
                    row.locked_until = now + wait if wait else None
            raise LoginRefused("wrong account name or password")
        with self._db(write=True) as s:
            s.execute(delete(LoginFailureRow).where(LoginFailureRow.key.in_(keys)))
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
            info = SessionInfo(Actor(account.id, account.username, AuthMethod.SESSION), csrf, expires)
        return token, info

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
            actor = Actor(row.account_id, row.account.username, AuthMethod.SESSION)
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

    # -- API tokens ----------------------------------------------------------------------------

    def new_api_token(self, actor: Actor, name: str) -> tuple[str, ApiTokenInfo]:
        """A token for automation; its value is returned now and never again."""
        name = name.strip()
        if not (1 <= len(name) <= 64) or not name.isprintable():
            raise InputError("a token needs a name of 1 to 64 printable characters")
        token = API_TOKEN_PREFIX + security.new_token()
        now = self._clock()
        with self._db(write=True) as s:
            row = ApiTokenRow(
                name=name, token_hash=security.token_hash(token), account_id=actor.account_id, created_at=now
            )
            s.add(row)
            s.flush()
            info = ApiTokenInfo(row.id, name, actor.username, now, None, None)
        self._audit.record(actor, ConsoleAction.TOKEN_CREATE, {"token": info.name, "id": info.id})
        return token, info

    def api_tokens(self) -> list[ApiTokenInfo]:
        with self._db(write=False) as s:
            rows = s.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id)).all()
            return [
                ApiTokenInfo(
                    r.id,
                    r.name,
                    r.account.username,
                    r.created_at,
                    r.last_used_at if r.last_used_at else None,
                    r.revoked_at if r.revoked_at else None,
                )
                for r in rows
            ]

    def revoke_api_token(self, actor: Actor, token_id: int) -> str:
        with self._db(write=True) as s:
            row = s.get(ApiTokenRow, token_id)
            if row is None:
                raise NotFoundError(f"no API token with id {token_id}")
            row.revoked_at = row.revoked_at or self._clock()
            name = row.name
        self._audit.record(actor, ConsoleAction.TOKEN_REVOKE, {"token": name, "id": token_id})
        return name

    def bearer(self, token: str) -> Actor | None:
        if not token.startswith(API_TOKEN_PREFIX) or len(token) > 128:
            return None
        now = self._clock()
        with self._db(write=False) as s:
            row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == security.token_hash(token)))
            if row is None or row.revoked_at is not None:
                return None
            actor = Actor(row.account_id, row.account.username, AuthMethod.TOKEN, row.name)
            stale = row.last_used_at is None or row.last_used_at + dt.timedelta(minutes=1) <= now
            row_id = row.id
        if stale:
            with self._db(write=True) as s:
                live = s.get(ApiTokenRow, row_id)
                if live is not None:
                    live.last_used_at = now
        return actor
