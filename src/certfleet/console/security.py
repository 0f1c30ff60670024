"""Secrets of the console: password hashes, tokens stored only as hashes, login backoff."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from certfleet.errors import InputError

__all__ = [
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "backoff",
    "check_password_policy",
    "hash_password",
    "needs_rehash",
    "new_token",
    "same",
    "token_hash",
    "verify_password",
]

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 would take anything; a bound keeps a request from costing much
# failed logins allowed before the first wait; then the wait doubles up to the cap
FREE_FAILURES = 3
MAX_WAIT = dt.timedelta(minutes=15)

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


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


def new_token() -> str:
    """An unguessable token for a URL or a header (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a token: tokens carry 256 bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def backoff(failures: int) -> dt.timedelta:
    """How long logins wait after ``failures`` failures in a row: none at first, then doubling."""
    if failures < FREE_FAILURES:
        return dt.timedelta(0)
    seconds = 2 ** min(failures - FREE_FAILURES, 20)
    return min(dt.timedelta(seconds=seconds), MAX_WAIT)
