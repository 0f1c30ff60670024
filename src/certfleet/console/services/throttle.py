"""Login throttling that cannot be raced nor turned against the administrator.

An attempt is counted in the store, in one write transaction, *before* its password is checked,
and uncounted when the password was right: a burst of simultaneous guesses is checked no more
times than a slow one would be, and every console process sharing the store sees the same
counts. Counts are kept per (client address, account name) and per client address:

* the pair: a few attempts, then each further one waits 1 s, 2, 4... up to 15 minutes. Guesses
  from one address never lock the account for another address;
* the address: more attempts whatever the names, then the same doubling, so one address cannot
  try name after name.

A count not added to for a day starts over; ``certfleet account unlock`` lifts a lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from certfleet.clock import Clock
from certfleet.console import security
from certfleet.console.models import LoginFailureRow, Sessions
from certfleet.errors import InputError, StoreError

__all__ = ["ADDRESS_FREE", "PAIR_FREE", "Attempt", "LoginThrottle", "LoginThrottled"]

PAIR_FREE = 3  # attempts at one account from one address before the waits begin
ADDRESS_FREE = 10  # attempts from one address, whatever the account names
FORGET = dt.timedelta(days=1)  # a count left alone this long starts over
_MAX_KEY = 160


class LoginThrottled(InputError):
    def __init__(self, wait: dt.timedelta) -> None:
        seconds = security.seconds_up(wait)
        super().__init__(
            f"too many failed logins: try again in {seconds} s",
            hint="wait, then log in with the right password",
        )
        self.retry_after = seconds


@dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt counted before its check: settle it with :meth:`LoginThrottle.settle`."""

    keys: tuple[tuple[str, int], ...]  # (key, free attempts) for the pair and the address


def _pair_key(name: str, address: str) -> str:
    return f"pair:{address[:64]}|{name.lower()[:64]}"[:_MAX_KEY]


def _address_key(address: str) -> str:
    return f"address:{address[:64]}"


class LoginThrottle:
    def __init__(self, sessions: Sessions, *, clock: Clock) -> None:
        self._db = sessions
        self._clock = clock

    def begin(self, name: str, address: str) -> Attempt:
        """Count an attempt at ``name`` from ``address``, or raise :class:`LoginThrottled`
        (counting nothing) while either is made to wait."""
        now = self._clock()
        attempt = Attempt(((_pair_key(name, address), PAIR_FREE), (_address_key(address), ADDRESS_FREE)))
        with self._db(write=True) as s:
            rows = [(self._row(s, key, now), free) for key, free in attempt.keys]
            for row, _ in rows:
                if row.last_at + FORGET <= now:
                    row.failures, row.locked_until = 0, None
            waits = [row.locked_until - now for row, _ in rows if row.locked_until and row.locked_until > now]
            if waits:
                raise LoginThrottled(max(waits))
            for row, free in rows:
                row.failures += 1
                row.last_at = now
                wait = security.backoff(row.failures, free)
                row.locked_until = now + wait if wait else None
        return attempt

    def settle(self, attempt: Attempt, *, good: bool) -> None:
        """A wrong password leaves the attempt counted; a right one ends the pair's count and takes
        the attempt back from the address's."""
        if not good:
            return
        (pair, _), (address, free) = attempt.keys
        with self._db(write=True) as s:
            s.execute(delete(LoginFailureRow).where(LoginFailureRow.key == pair))
            self._take_back(s, address, free)

    def forget(self, attempt: Attempt) -> None:
        """The password was never checked (the console was too busy): the attempt counts for nothing."""
        with self._db(write=True) as s:
            for key, free in attempt.keys:
                self._take_back(s, key, free)

    @staticmethod
    def _take_back(s: Session, key: str, free: int) -> None:
        row = s.get(LoginFailureRow, key, with_for_update=True)
        if row is not None:
            row.failures = max(row.failures - 1, 0)
            wait = security.backoff(row.failures, free)
            row.locked_until = row.last_at + wait if wait and row.failures else None

    def unlock(self, *, name: str | None = None, address: str | None = None) -> int:
        """Forget the counts of ``name`` (from every address), of ``address``, or, with neither,
        all of them; how many were forgotten."""
        q = delete(LoginFailureRow)
        if name is not None or address is not None:
            conditions: list[ColumnElement[bool]] = []
            if name is not None:
                conditions.append(LoginFailureRow.key.like(f"pair:%|{_escape(name.lower()[:64])}", escape="\\"))
            if address is not None:
                conditions.append(LoginFailureRow.key == _address_key(address))
                conditions.append(LoginFailureRow.key.like(f"pair:{_escape(address[:64])}|%", escape="\\"))
            q = q.where(or_(*conditions))
        with self._db(write=True) as s:
            return int(s.execute(q).rowcount or 0)  # type: ignore[attr-defined]

    def locked(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` wait now from some address (lower case)."""
        now = self._clock()
        wanted = {n.lower(): n for n in names}
        with self._db(write=False) as s:
            rows = s.scalars(
                select(LoginFailureRow).where(LoginFailureRow.key.like("pair:%"), LoginFailureRow.locked_until > now)
            ).all()
            return {wanted[k] for k in (r.key.rpartition("|")[2] for r in rows) if k in wanted}

    @staticmethod
    def _row(s: Session, key: str, now: dt.datetime) -> LoginFailureRow:
        """The counter row for ``key``, locked for this transaction (made when missing)."""
        row = s.get(LoginFailureRow, key, with_for_update=True)
        if row is not None:
            return row
        try:
            with s.begin_nested():
                s.add(LoginFailureRow(key=key, failures=0, last_at=now, locked_until=None))
        except IntegrityError:  # another process made it first (PostgreSQL; SQLite writes one at a time)
            pass
        row = s.get(LoginFailureRow, key, with_for_update=True, populate_existing=True)
        if row is None:  # pragma: no cover (made just above, in this transaction)
            raise StoreError("the login counters cannot be written")
        return row


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
