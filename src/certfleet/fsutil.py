"""The one place certfleet writes files: whole, atomically, and private keys 0600 from birth.

A reader of the target path sees either the old content or the new, never a part of either: the
data goes to a temp file in the same folder (same file system, so the rename is atomic), is
flushed to disk, and is renamed over the target; then the folder itself is flushed so the rename
survives a crash.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from certfleet.errors import EnvError, InputError

__all__ = ["atomic_write", "ensure_private_dir", "write_private"]

StrPath = str | os.PathLike[str]

# the user named a path that cannot be a file; anything else (permissions, full disk) is the environment
_BAD_PATH = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}


def _error(path: Path, exc: OSError, action: str = "write") -> Exception:
    reason = exc.strerror or str(exc)
    if exc.errno in _BAD_PATH:
        return InputError(f"cannot {action}: {reason}", source=str(path), hint="check the path")
    return EnvError(f"cannot {action}: {reason}", source=str(path), hint="check permissions and free space")


def _fsync_dir(folder: Path) -> None:
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(folder, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        # some file systems (and Windows) cannot fsync a folder; the rename itself has happened
        if exc.errno not in {errno.EINVAL, errno.ENOTSUP, errno.EBADF}:
            raise
    finally:
        os.close(fd)


def atomic_write(path: StrPath, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step; the file gets exactly ``mode``, never wider first.

    The temp file is created with ``mode`` (O_EXCL, so nothing else can be sitting at its name),
    then set to exactly ``mode`` whatever the umask. If ``path`` is a symlink, the link itself is
    replaced. On any failure the temp file is removed and the target is left as it was.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("atomic_write writes bytes")
    if mode & ~0o7777:
        raise ValueError(f"not a file mode: {mode:o}")
    target = Path(path)
    folder = target.parent
    tmp = folder / f".{target.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, mode & 0o777)
    except OSError as exc:
        raise _error(target, exc) from exc
    try:
        try:
            # the umask can only narrow the creation mode; this sets it exactly (0644 stays 0644)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _error(target, exc) from exc
        raise
    try:
        _fsync_dir(folder)
    except OSError as exc:
        raise _error(folder, exc, "flush the folder") from exc


def write_private(path: StrPath, data: bytes) -> None:
    """:func:`atomic_write` for private keys and anything holding one: mode 0600 from birth."""
    atomic_write(path, data, mode=0o600)


def ensure_private_dir(path: StrPath) -> Path:
    """Make ``path`` (and missing parents) and leave it mode 0700, readable by its owner only."""
    folder = Path(path)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise InputError("exists and is not a folder", source=str(folder), hint="choose another path") from exc
    except OSError as exc:
        raise _error(folder, exc, "create the folder") from exc
    if not folder.is_dir():
        raise InputError("exists and is not a folder", source=str(folder), hint="choose another path")
    try:
        # mkdir's mode is narrowed by the umask and ignored for a folder that already existed
        folder.chmod(0o700)
    except OSError as exc:
        raise _error(folder, exc, "set the mode of") from exc
    return folder
