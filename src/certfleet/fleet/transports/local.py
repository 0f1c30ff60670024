"""The node certfleet runs on: its own filesystem and ``sh`` with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from certfleet.errors import EnvError, InputError
from certfleet.fleet.transports._base import MAX_OUTPUT, MAX_READ, CommandResult, Transport, decode_output

__all__ = ["LocalTransport", "command_environment"]

T = TypeVar("T")


# the fault, said plainly: a full disk needs space, not a check of the folder's permissions
_FAULT_HINTS = {
    errno.ENOSPC: "the disk is full (ENOSPC): free space on it, then deploy again",
    errno.EDQUOT: "the user's disk quota is used up (EDQUOT): free space or raise the quota",
    errno.EROFS: "the filesystem is mounted read-only (EROFS)",
    errno.EACCES: "certfleet's user may not write there (EACCES): give it the folder, or deploy as its owner",
    errno.EPERM: "certfleet's user may not do this there (EPERM)",
    errno.ENOENT: "a folder on the way does not exist (ENOENT): create it, or fix the target's path",
}


def _os_error(action: str, path: str, exc: OSError) -> EnvError:
    return EnvError(
        f"cannot {action} {path}: {exc.strerror or exc}",
        hint=_FAULT_HINTS.get(exc.errno or 0, "check that the folder exists and that certfleet may write there"),
    )


def _write(path: str, data: bytes, mode: int) -> None:
    # O_EXCL: never write through a file or symlink someone put there; the mode is right from birth
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never wider than asked
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: str, limit: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{path} is larger than {limit} bytes", hint="this is not a file certfleet wrote")
    return data


def _readlink(path: str) -> str | None:
    try:
        return str(Path(path).readlink())
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # exists, but is not a symlink
            return None
        raise


def _listdir(path: str) -> list[str]:
    try:
        return [p.name for p in Path(path).iterdir()]
    except FileNotFoundError:
        return []


def _mtime(path: str) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except FileNotFoundError:
        return None


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


def _remove_tree(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        Path(path).unlink()


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(path: str, mode: int, parents: bool) -> None:
    if parents:
        Path(path).mkdir(mode=mode, parents=True, exist_ok=True)
    else:
        Path(path).mkdir(mode=mode)


def _chown(paths: Sequence[str], owner: str | None, group: str | None) -> None:
    import grp
    import pwd

    try:
        uid = -1 if owner is None else pwd.getpwnam(owner).pw_uid
        gid = -1 if group is None else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise LookupError(f"no such user or group on this node: {exc.args[0]}") from exc
    for path in paths:
        os.chown(path, uid, gid, follow_symlinks=False)


# what a node's command inherits from certfleet's environment: enough to find programs and speak
# the locale, nothing else (no CERTFLEET_* secret such as the passphrase, no console setting)
_INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def command_environment() -> dict[str, str]:
    """The minimal environment a node's command runs with on this machine."""
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


class LocalTransport(Transport):
    """Files and commands on this machine."""

    scheme = "local"

    @property
    def label(self) -> str:
        return "local"

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _io(self, action: str, path: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise _os_error(action, path, exc) from exc

    async def write_file(self, path: str, data: bytes, *, mode: int) -> None:
        await self._io("write", path, _write, path, data, mode)

    async def read_file(self, path: str, *, limit: int = MAX_READ) -> bytes | None:
        return await self._io("read", path, _read, path, limit)

    async def mkdir(self, path: str, *, mode: int = 0o755, parents: bool = False) -> None:
        await self._io("create folder", path, _mkdir, path, mode, parents)

    async def rename(self, src: str, dst: str) -> None:
        await self._io("rename", f"{src} to", os.rename, src, dst)

    async def symlink(self, target: str, path: str) -> None:
        await self._io("create symlink", path, os.symlink, target, path)

    async def readlink(self, path: str) -> str | None:
        return await self._io("read symlink", path, _readlink, path)

    async def listdir(self, path: str) -> list[str]:
        return await self._io("list", path, _listdir, path)

    async def mtime(self, path: str) -> float | None:
        return await self._io("stat", path, _mtime, path)

    async def touch(self, path: str) -> None:
        await self._io("touch", path, os.utime, path)

    async def remove(self, path: str) -> None:
        await self._io("remove", path, _remove, path)

    async def remove_tree(self, path: str) -> None:
        await self._io("remove", path, _remove_tree, path)

    async def sync_dir(self, path: str) -> None:
        await self._io("sync", path, _sync_dir, path)

    async def is_root(self) -> bool:
        return os.geteuid() == 0

    async def chown(self, paths: Sequence[str], *, owner: str | None, group: str | None) -> None:
        if owner is None and group is None:
            return
        try:
            await asyncio.to_thread(_chown, paths, owner, group)
        except LookupError as exc:  # shutil.chown: no such user or group
            raise InputError(f"{exc}", hint="name an owner and group that exist on the node") from exc
        except OSError as exc:
            raise _os_error("change the owner of", ", ".join(paths), exc) from exc

    async def home(self) -> str:
        return str(Path.home())

    async def run(self, command: str, *, timeout: float, env: Mapping[str, str] | None = None) -> CommandResult:
        # Output goes to an unnamed file, not a pipe: a reload that starts a daemon (haproxy -D,
        # apachectl start) leaves it holding the pipe open, and we would wait for it forever.
        with tempfile.TemporaryFile() as out:
            try:
                proc = await asyncio.create_subprocess_shell(
                    command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env={**command_environment(), **(env or {})},
                    start_new_session=True,  # its own process group, so a timeout ends all of it
                )
            except OSError as exc:
                return CommandResult(command, None, f"cannot start: {exc.strerror or exc}")
            timed_out = False
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                raise
            size = out.seek(0, os.SEEK_END)
            out.seek(max(0, size - MAX_OUTPUT))
            data = out.read(MAX_OUTPUT)
        return CommandResult(command, None if timed_out else proc.returncode, decode_output(data), timed_out)
