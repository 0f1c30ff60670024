"""Secrets of the console: password hashes, tokens stored only as hashes, login backoff.

Each argon2 hash or check takes ~64 MiB for a tenth of a second; at most
:data:`HASH_CONCURRENCY` run at once in the process, so a burst of logins queues (then is told
to come back) instead of taking the machine's memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from certfleet.errors import EnvError, InputError

__all__ = [
    "HASHER",
    "HASH_CONCURRENCY",
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "PasswordChecksBusy",
    "backoff",
    "check_password_policy",
    "generate_password",
    "hash_password",
    "needs_rehash",
    "new_token",
    "same",
    "seconds_up",
    "token_hash",
    "verify_password",
]

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 would take anything; a bound keeps a request from costing much
# failed logins allowed before the first wait; then the wait doubles up to the cap
FREE_FAILURES = 3
MAX_WAIT = dt.timedelta(minutes=15)

HASHER = PasswordHasher()
HASH_CONCURRENCY = 2
HASH_WAIT = 10.0  # seconds a check may wait for its turn before the login is told to come back
_slots = threading.BoundedSemaphore(HASH_CONCURRENCY)


class PasswordChecksBusy(EnvError):
    """More logins at once than the console checks; the caller tries again shortly (HTTP 503)."""

    retry_after = 2


@contextmanager
def _slot() -> Iterator[None]:
    if not _slots.acquire(timeout=HASH_WAIT):
        raise PasswordChecksBusy("too many logins at once", hint="try again in a few seconds")
    try:
        yield
    finally:
        _slots.release()


def hash_password(password: str) -> str:
    with _slot():
        return HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD:
        return False
    with _slot():
        try:
            return HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def needs_rehash(stored: str) -> bool:
    return HASHER.check_needs_rehash(stored)


def check_password_policy(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError(
            f"the password is too short: at least {MIN_PASSWORD} characters",
            hint="a few unrelated words make a long password that is easy to type",
        )
    if len(password) > MAX_PASSWORD:
        raise InputError(f"the password is too long: at most {MAX_PASSWORD} characters")
    if password.lower() == username.lower():
        raise InputError("the password must not be the account name")


def generate_password() -> str:
    """A password for someone to be told once: four groups of six characters (140 random bits),
    none easily mistaken for another (no 0/O, 1/l/I)."""
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(6)) for _ in range(4))


def new_token() -> str:
    """An unguessable token for a URL or a header (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a token: tokens carry 256 bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def backoff(failures: int, free: int = FREE_FAILURES) -> dt.timedelta:
    """How long logins wait after ``failures`` failures in a row: none for the first ``free``,
    then 1 s, doubling up to :data:`MAX_WAIT`."""
    if failures < free:
        return dt.timedelta(0)
    seconds = 2 ** min(failures - free, 20)
    return min(dt.timedelta(seconds=seconds), MAX_WAIT)


def seconds_up(wait: dt.timedelta) -> int:
    """A wait in whole seconds, at least one (what ``Retry-After`` says)."""
    return max(math.ceil(wait.total_seconds()), 1)
