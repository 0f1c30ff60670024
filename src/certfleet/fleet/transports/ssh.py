"""A node reached over SSH: SFTP for files, the same connection for commands.

The server's host key must already be known: it is checked against ``known_hosts`` (the node's
``known_hosts`` option, or ``~/.ssh/known_hosts``), and an unknown or changed key is refused,
never learned. A changed key is said to be one, with the recorded and the offered fingerprints:
it may be someone in the middle, so the advice is to verify the new key out of band, never to
append it. Authentication is by key: the node's ``identity`` option names a private key
file, otherwise the SSH agent and the usual ``~/.ssh/id_*`` files are tried.

Node options: ``known_hosts`` (path), ``identity`` (path), ``connect_timeout`` (seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import ipaddress
import shlex
import time
import urllib.parse
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from certfleet.errors import CertfleetError, EnvError, InputError, NetworkError
from certfleet.fleet.transports._base import (
    MAX_OUTPUT,
    MAX_READ,
    CommandResult,
    Transport,
    decode_output,
    with_env,
)

__all__ = ["SSH_OPTIONS", "SshTransport", "parse_ssh_url"]

T = TypeVar("T")
M = TypeVar("M")

DEFAULT_CONNECT_TIMEOUT = 15.0
SSH_OPTIONS = frozenset({"known_hosts", "identity", "connect_timeout"})


def parse_ssh_url(url: str) -> tuple[str, str, int]:
    """``ssh://user@host[:port]`` as (user, host, port); user defaults to the local user."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 22
    except ValueError as exc:
        raise InputError(f"not an SSH address: {url!r} ({exc})", hint="write ssh://user@host[:port]") from exc
    if parts.scheme != "ssh" or not parts.hostname:
        raise InputError(f"not an SSH address: {url!r}", hint="write ssh://user@host[:port]")
    if parts.password is not None:
        raise InputError(
            "a password in the SSH address is not accepted",
            hint="authenticate with a key: the node's identity option, or the SSH agent",
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InputError(f"unexpected path or query in SSH address {url!r}", hint="write ssh://user@host[:port]")
    user = urllib.parse.unquote(parts.username) if parts.username else getpass.getuser()
    return user, parts.hostname, port


def _sftp_error(action: str, path: str, exc: asyncssh.SFTPError) -> EnvError:
    return EnvError(
        f"cannot {action} {path}: {exc.reason or type(exc).__name__}",
        hint="check that the folder exists on the node and that the SSH user may write there",
    )


async def _sftp(action: str, path: str, operation: Awaitable[T]) -> T:
    """An SFTP operation whose failure is an :class:`EnvError` that says what failed where."""
    try:
        return await operation
    except asyncssh.SFTPError as exc:
        raise _sftp_error(action, path, exc) from exc


async def _or_missing(action: str, path: str, operation: Awaitable[T], missing: M) -> T | M:
    """The same, with ``missing`` as the answer when the path does not exist."""
    try:
        return await operation
    except asyncssh.SFTPNoSuchFile:
        return missing
    except asyncssh.SFTPError as exc:
        raise _sftp_error(action, path, exc) from exc


class SshTransport(Transport):
    """Files and commands on a node reached with SSH."""

    scheme = "ssh"

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        super().__init__(url, options)
        self.user, self.host, self.port = parse_ssh_url(url)
        unknown = set(options) - SSH_OPTIONS
        if unknown:
            raise InputError(
                f"unknown SSH option(s): {', '.join(sorted(unknown))}",
                hint=f"the SSH transport takes: {', '.join(sorted(SSH_OPTIONS))}",
            )
        self._known_hosts = self._path_option("known_hosts")
        self._identity = self._path_option("identity")
        timeout = options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 600:
            raise InputError("connect_timeout must be a number of seconds between 0 and 600")
        self._connect_timeout = float(timeout)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._root: bool | None = None

    def _path_option(self, name: str) -> str | None:
        value = self.options.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value or "\0" in value:
            raise InputError(f"the SSH option {name} must be a file path")
        path = Path(value).expanduser()
        if not path.is_file():
            raise InputError(f"the SSH {name} file does not exist: {path}", source=self.url)
        return str(path)

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"

    async def connect(self) -> None:
        kwargs: dict[str, Any] = {
            "username": self.user,
            "connect_timeout": self._connect_timeout,
            "login_timeout": self._connect_timeout,
            # () is asyncssh's "~/.ssh/known_hosts": when that file is missing no host is known,
            # so every host is refused. None, which would skip the check, is never passed.
            "known_hosts": self._known_hosts if self._known_hosts is not None else (),
        }
        if self._identity is not None:
            kwargs["client_keys"] = [self._identity]
        try:
            async with asyncio.timeout(self._connect_timeout * 2):
                self._conn = await asyncssh.connect(self.host, self.port, **kwargs)
                self._sftp = await self._conn.start_sftp_client()
        except asyncssh.HostKeyNotVerifiable as exc:
            await self.close()
            raise await self._host_key_refused(exc) from exc
        except asyncssh.PermissionDenied as exc:
            await self.close()
            raise NetworkError(
                f"SSH login as {self.user} was refused",
                hint="name a key the server accepts with the node's identity option, or load it into the SSH agent",
                source=self.label,
            ) from exc
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            await self.close()
            raise NetworkError(
                f"cannot connect: {_reason(exc)}",
                hint="check that the node is up, that sshd listens on this port, and that no firewall is in the way",
                source=self.label,
            ) from exc
        except (asyncssh.KeyImportError, ValueError) as exc:
            await self.close()
            raise InputError(f"cannot use the SSH key {self._identity}: {exc}", source=self.label) from exc

    async def _host_key_refused(self, exc: asyncssh.HostKeyNotVerifiable) -> NetworkError:
        """Why the host key was refused: a key known_hosts does not hold, or one that CHANGED."""
        where = self._known_hosts or "~/.ssh/known_hosts"
        recorded = _recorded_keys(self._known_hosts or str(Path(where).expanduser()), self.host, self.port)
        algorithms = [a.decode() for key in recorded for a in key.sig_algorithms]
        offered = await _offered_key(self.host, self.port, algorithms, self._connect_timeout)
        offered_fp = offered.get_fingerprint() if offered is not None else "unknown (the server did not say again)"
        endpoint = f"{self.host}:{self.port}"
        if recorded:
            fingerprints = ", ".join(dict.fromkeys(k.get_fingerprint() for k in recorded))
            entry = f"[{self.host}]:{self.port}" if self.port != 22 else self.host
            return NetworkError(
                f"refused: the host key of {endpoint} has CHANGED since it was recorded in {where}: someone may "
                f"be intercepting the connection, or the server was reinstalled; recorded {fingerprints}, "
                f"offered {offered_fp}",
                hint="do not deploy and do not add the offered key: verify it out of band (on the server's console, "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`, or from its administrator); only if it is the "
                f"server's new key, remove the old entry (`ssh-keygen -R '{entry}' -f {where}`) and record the "
                "verified one",
                source=self.label,
            )
        return NetworkError(
            f"refused: the host key of {endpoint} is not in {where} ({exc.reason}); it offers {offered_fp}",
            hint="compare that fingerprint with the server's own (on its console, "
            "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`, or from its administrator); if they match, add "
            f"it: ssh-keyscan -p {self.port} {self.host} >> {where}",
            source=self.label,
        )

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):
                await self._conn.wait_closed()
            self._conn = None

    @property
    def sftp(self) -> asyncssh.SFTPClient:
        if self._sftp is None:
            raise RuntimeError("the transport is not connected; use `async with`")
        return self._sftp

    @property
    def conn(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            raise RuntimeError("the transport is not connected; use `async with`")
        return self._conn

    async def write_file(self, path: str, data: bytes, *, mode: int) -> None:
        # EXCL: never write through a file or symlink left there; permissions are set at creation
        pflags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        try:
            async with self.sftp.open(path, pflags, attrs=asyncssh.SFTPAttrs(permissions=mode), encoding=None) as fh:
                await fh.write(data)
                await fh.chmod(mode)  # the server's umask may have narrowed it; never wider than asked
                with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                    await fh.fsync()  # fsync@openssh.com; older servers cannot, and we go on
        except asyncssh.SFTPError as exc:
            raise _sftp_error("write", path, exc) from exc

    async def read_file(self, path: str, *, limit: int = MAX_READ) -> bytes | None:
        data = await _or_missing("read", path, self._read(path, limit), None)
        if data is not None and len(data) > limit:
            raise InputError(f"{path} is larger than {limit} bytes", hint="this is not a file certfleet wrote")
        return data

    async def _read(self, path: str, limit: int) -> bytes:
        async with self.sftp.open(path, "rb") as fh:
            data: bytes = await fh.read(limit + 1)
            return data

    async def mkdir(self, path: str, *, mode: int = 0o755, parents: bool = False) -> None:
        attrs = asyncssh.SFTPAttrs(permissions=mode)
        if parents:
            await _sftp("create folder", path, self.sftp.makedirs(path, attrs=attrs, exist_ok=True))
        else:
            await _sftp("create folder", path, self.sftp.mkdir(path, attrs=attrs))

    async def rename(self, src: str, dst: str) -> None:
        await _sftp("rename", f"{src} to {dst}", self.sftp.posix_rename(src, dst))

    async def symlink(self, target: str, path: str) -> None:
        await _sftp("create symlink", path, self.sftp.symlink(target, path))

    async def readlink(self, path: str) -> str | None:
        attrs = await _or_missing("read symlink", path, self.sftp.lstat(path), None)
        if attrs is None or attrs.type != asyncssh.FILEXFER_TYPE_SYMLINK:
            return None
        target: str | None = await _or_missing("read symlink", path, self.sftp.readlink(path), None)
        return target

    async def listdir(self, path: str) -> list[str]:
        names: Sequence[str] = await _or_missing("list", path, self.sftp.listdir(path), [])
        return [n for n in names if n not in (".", "..")]

    async def mtime(self, path: str) -> float | None:
        attrs = await _or_missing("stat", path, self.sftp.lstat(path), None)
        if attrs is None:
            return None
        return float(attrs.mtime) if attrs.mtime is not None else 0.0

    async def touch(self, path: str) -> None:
        now = time.time()
        await _sftp("touch", path, self.sftp.utime(path, (now, now)))

    async def remove(self, path: str) -> None:
        await _or_missing("remove", path, self.sftp.remove(path), None)

    async def remove_tree(self, path: str) -> None:
        attrs = await _or_missing("remove", path, self.sftp.lstat(path), None)
        if attrs is not None:
            folder = attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY
            await _or_missing("remove", path, (self.sftp.rmtree if folder else self.sftp.remove)(path), None)

    async def sync_dir(self, path: str) -> None:
        # SFTP cannot fsync a folder; `sync` on the node would flush every disk, which is too much
        # for each rename. The rename itself is atomic; durability follows the node's own flush.
        return None

    async def _check(self, command: str, what: str) -> str:
        result = await self.run(command, timeout=self._connect_timeout)
        if not result.ok:
            raise EnvError(
                f"cannot {what} on the node: {result.describe()}: {result.output.strip()[-300:]}",
                source=self.label,
            )
        return result.output

    async def is_root(self) -> bool:
        if self._root is None:
            self._root = (await self._check("id -u", "find the user id")).strip() == "0"
        return self._root

    async def chown(self, paths: Sequence[str], *, owner: str | None, group: str | None) -> None:
        if (owner is None and group is None) or not paths:
            return
        spec = f"{owner or ''}:{group or ''}" if group else (owner or "")
        await self._check(shlex.join(["chown", "-h", "--", spec, *paths]), f"change the owner to {spec}")

    async def home(self) -> str:
        return str(await _sftp("find the home folder", ".", self.sftp.realpath(".")))

    async def run(self, command: str, *, timeout: float, env: Mapping[str, str] | None = None) -> CommandResult:
        line = with_env(command, env)
        chunks: list[bytes] = []
        kept = 0
        proc: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            async with asyncio.timeout(timeout):
                proc = await self.conn.create_process(
                    line, stdin=asyncssh.DEVNULL, stderr=asyncssh.STDOUT, encoding=None
                )
                while chunk := await proc.stdout.read(65536):
                    chunks.append(chunk)
                    kept += len(chunk)
                    while kept - len(chunks[0]) >= MAX_OUTPUT:  # keep only the tail
                        kept -= len(chunks.pop(0))
                result = await proc.wait()
        except TimeoutError:
            self._abandon(proc)
            return CommandResult(command, None, decode_output(b"".join(chunks)), timed_out=True)
        except (asyncssh.Error, OSError) as exc:
            self._abandon(proc)
            return CommandResult(command, None, f"the SSH connection failed: {_reason(exc)}")
        except BaseException:
            self._abandon(proc)
            raise
        # asyncssh reports -1 (or None) when the command ended by a signal on the node
        status = result.exit_status if result.exit_status is not None else -1
        return CommandResult(command, status, decode_output(b"".join(chunks)))

    @staticmethod
    def _abandon(proc: asyncssh.SSHClientProcess[bytes] | None) -> None:
        """Stop waiting for a command: signal it and close its channel without waiting.

        The signal reaches the shell sshd started; children it left running on the node (a
        pipeline, a daemon) may outlive it, but they no longer hold this deploy.
        """
        if proc is None:
            return
        with contextlib.suppress(Exception):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.close()


def _recorded_keys(path: str, host: str, port: int) -> list[asyncssh.SSHKey]:
    """The keys ``path`` records for ``host:port`` (none when it cannot be read)."""
    try:
        known = asyncssh.read_known_hosts(path)
    except (OSError, ValueError, asyncssh.Error):
        return []
    try:
        ipaddress.ip_address(host)
        addr = host
    except ValueError:
        addr = ""
    return list(known.match(host, addr, port)[0])


async def _offered_key(
    host: str, port: int, algorithms: Sequence[str], timeout: float
) -> asyncssh.SSHKey | None:
    """The host key the server offers, of the kind recorded (a second, unauthenticated handshake)."""
    try:
        async with asyncio.timeout(timeout):
            key: asyncssh.SSHKey | None = await asyncssh.get_server_host_key(
                host, port, server_host_key_algs=list(algorithms) or (), config=None
            )
            return key
    except (asyncssh.Error, OSError, TimeoutError, ValueError):
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, CertfleetError):
        return exc.message
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
