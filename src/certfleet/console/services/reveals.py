"""What a form made that is shown once: a new API token, a new deployment link, a generated password.

A form that creates something answers with a redirect (post/redirect/get), so that reloading the
page it lands on makes nothing twice; and a secret never goes into a URL. So the secret waits for
the account that made it until the page after the redirect takes it: shown once, then gone. It
waits in the store (``console_reveals``), so that the page after the redirect may be served by
any console process sharing the store: sealed with the store's vault (the value is a secret),
under the hash of a random key, a bounded number per account, deleted when taken (by one process
only, however many ask at once) or once a few minutes have passed.

Values are kept as JSON, each kind of value written and read back explicitly: a tuple of strings
(a token and its name; an account, its password and what was done) and a :class:`ClientLink`.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from certfleet.clock import Clock
from certfleet.console.models import RevealRow
from certfleet.console.security import token_hash
from certfleet.console.services.clients import ClientLink
from certfleet.errors import StoreError
from certfleet.store import Store

__all__ = ["MAX_WAITING", "Reveals"]

T = TypeVar("T")
MAX_WAITING = 100  # per account: the oldest beyond it are dropped
_MAX_KEY = 64  # characters of a key read back from a URL


def _aad(digest: str, account_id: int, kind: str) -> bytes:
    # binds the sealed value to its row: a ciphertext copied to another row does not open
    return f"certfleet/reveal/v1/{digest}/account={account_id}/kind={kind}".encode()


def _pack(value: object) -> bytes:
    data: dict[str, Any]
    if isinstance(value, ClientLink):
        data = {
            "type": "client-link",
            "user": value.user,
            "profile": value.profile,
            "url": value.url,
            "expires_at": value.expires_at.isoformat(),
        }
    elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        data = {"type": "strings", "items": list(value)}
    else:
        raise TypeError(f"a {type(value).__name__} cannot wait to be shown: a tuple of strings or a ClientLink")
    return json.dumps(data).encode("utf-8")


def _unpack(raw: bytes) -> object:
    data = json.loads(raw)
    if data["type"] == "client-link":
        return ClientLink(
            user=str(data["user"]),
            profile=str(data["profile"]),
            url=str(data["url"]),
            expires_at=dt.datetime.fromisoformat(data["expires_at"]),
        )
    if data["type"] == "strings":
        return tuple(str(v) for v in data["items"])
    raise StoreError(f"a value waiting to be shown is of an unknown type: {data['type']!r}")


class Reveals:
    def __init__(self, store: Store, *, clock: Clock, ttl: dt.timedelta = dt.timedelta(minutes=5)) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl

    def put(self, account_id: int, kind: str, value: object) -> str:
        """Keep ``value`` for the account's next page; returns the key that page asks with."""
        now = self._clock()
        key = secrets.token_urlsafe(16)
        digest = token_hash(key)
        sealed = self._store.vault().seal(_pack(value), _aad(digest, account_id, kind))
        with self._store.session(write=True) as s:
            self._sweep(s, now)
            older = s.scalars(
                select(RevealRow.key_hash)
                .where(RevealRow.account_id == account_id)
                .order_by(RevealRow.created_at.desc(), RevealRow.key_hash)
                .offset(MAX_WAITING - 1)
            ).all()
            if older:
                s.execute(delete(RevealRow).where(RevealRow.key_hash.in_(older)))
            s.add(
                RevealRow(
                    key_hash=digest,
                    account_id=account_id,
                    kind=kind,
                    sealed=sealed,
                    created_at=now,
                    expires_at=now + self._ttl,
                )
            )
        return key

    def take(self, account_id: int, kind: str, key: str, cls: type[T]) -> T | None:
        """The value kept under ``key`` for this account, once; None when taken, stale, another
        account's or another kind's (those are left where they are)."""
        if not key or len(key) > _MAX_KEY:
            return None
        digest = token_hash(key)
        vault = self._store.vault()  # a store that cannot open its vault says so, as on put
        with self._store.session(write=True) as s:
            self._sweep(s, self._clock())
            sealed = s.scalar(
                select(RevealRow.sealed).where(
                    RevealRow.key_hash == digest, RevealRow.account_id == account_id, RevealRow.kind == kind
                )
            )
            if sealed is None:
                return None
            # the one delete that finds the row takes it: a process taking the same key at the
            # same time waits for this one's row lock, then deletes nothing
            gone = s.execute(delete(RevealRow).where(RevealRow.key_hash == digest))
            if gone.rowcount != 1:  # type: ignore[attr-defined]
                return None
        try:
            value = _unpack(vault.open(sealed, _aad(digest, account_id, kind)))
        except StoreError:  # not sealed for this row: gone all the same
            return None
        return value if isinstance(value, cls) else None

    def _sweep(self, s: Session, now: dt.datetime) -> None:
        """Forget every stale value, whoever it waited for."""
        s.execute(delete(RevealRow).where(RevealRow.expires_at <= now))
