"""Sealing private keys at rest: AES-256-GCM under a master key file or a passphrase.

The 32-byte key comes from ``master.key`` (created 0600 at init) or, when the store was made
with ``CERTFLEET_PASSPHRASE`` set, from scrypt over that passphrase and a salt kept in the
database. A small sealed check value, written at init, tells a wrong key apart before anything
is sealed under it (a key sealed under the wrong key would be lost for good).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from certfleet.errors import StoreError

__all__ = ["KEY_FILE", "PASSPHRASE_ENV", "Vault", "create_key_file", "derive_key", "read_key_file"]

KEY_FILE = "master.key"
PASSPHRASE_ENV = "CERTFLEET_PASSPHRASE"  # noqa: S105 (the name of a variable, not a passphrase)
KEY_SIZE = 32
NONCE_SIZE = 12
# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB and a fraction of a second, once per process
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_CHECK_AAD = b"certfleet/key-check/v1"
_CHECK_PLAIN = b"certfleet"
_MAX_PASSPHRASE = 1024

_WRONG_KEY = "cannot decrypt the keys: wrong master key or passphrase"
_WRONG_KEY_HINT = f"use the {KEY_FILE} or the {PASSPHRASE_ENV} this store was created with"


class Vault:
    """Seals and opens small secrets; each ciphertext is bound to its record by associated data."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("the vault key is 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Vault(<sealed>)"

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < NONCE_SIZE + 16:
            raise StoreError("a sealed key in the store is truncated", hint="restore the store from a backup")
        try:
            return self._aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
        except InvalidTag as exc:
            raise StoreError(_WRONG_KEY, hint=_WRONG_KEY_HINT) from exc

    def make_check(self) -> bytes:
        return self.seal(_CHECK_PLAIN, _CHECK_AAD)

    def verify_check(self, sealed: bytes) -> None:
        if self.open(sealed, _CHECK_AAD) != _CHECK_PLAIN:
            raise StoreError(_WRONG_KEY, hint=_WRONG_KEY_HINT)


def create_key_file(home: Path) -> None:
    """Write a fresh random master key, 0600 from the first byte; an existing one is kept."""
    path = home / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, os.urandom(KEY_SIZE))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(home: Path) -> bytes:
    path = home / KEY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise StoreError(
            f"the master key file is missing: {path}",
            hint=f"copy {KEY_FILE} (0600) from the machine that made the store, or restore it from your backup;"
            " without it the stored keys cannot be read",
        ) from exc
    except OSError as exc:
        raise StoreError(f"cannot read the master key file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise StoreError(
                f"the master key file {path} is readable by others",
                hint=f"chmod 600 {path}",
            )
        key = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_SIZE:
        raise StoreError(f"the master key file {path} is damaged (not {KEY_SIZE} bytes)", hint=_WRONG_KEY_HINT)
    return key


def passphrase_from_env() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None or value == "":
        return None
    raw = value.encode()
    if len(raw) > _MAX_PASSPHRASE:
        raise StoreError(f"{PASSPHRASE_ENV} is longer than {_MAX_PASSPHRASE} bytes")
    return raw


def derive_key(passphrase: bytes, salt: bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(passphrase)
