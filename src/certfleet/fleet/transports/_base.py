"""What a transport is: files and commands on one node, reached locally or over SSH.

A transport knows nothing of certificates. Targets lay out files through it and the deploy
engine runs the node's commands through it; both see only POSIX paths (``str``) and
:class:`CommandResult`. Every failure is a :mod:`certfleet.errors` error: :class:`NetworkError`
when the node cannot be reached or refuses us, :class:`EnvError` when a file operation on the
node fails.

The registry maps a URL scheme (``local``, ``ssh``) to its class; adding a transport is one new
module and one line in :data:`TRANSPORTS`.
"""

from __future__ import annotations

import importlib
import shlex
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

from certfleet.errors import InputError
from certfleet.redact import clean

__all__ = [
    "MAX_OUTPUT",
    "TRANSPORTS",
    "CommandResult",
    "Transport",
    "open_transport",
    "scheme_of",
    "with_env",
]

# what we keep of a command's output: the end, where the error usually is
MAX_OUTPUT = 16 * 1024
# a file a target reads back from a node (the previous secret YAML, a live marker) is small
MAX_READ = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command on a node ended: its status (None when it was killed on timeout) and output."""

    command: str
    exit_status: int | None
    output: str  # stdout and stderr together, the last MAX_OUTPUT bytes, decoded leniently, redacted
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out

    def describe(self) -> str:
        """One line for a report: what ran and how it ended."""
        if self.timed_out:
            return f"`{self.command}` timed out"
        return f"`{self.command}` exited with status {self.exit_status}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exit_status": self.exit_status,
            "timed_out": self.timed_out,
            "output": self.output,
        }


def decode_output(data: bytes) -> str:
    """What is kept of a command's output: its end, decoded, with any key material it printed
    removed (:func:`certfleet.redact.clean`) before anything stores or shows it."""
    tail = data[-MAX_OUTPUT:]
    return clean(tail.decode("utf-8", "replace"), MAX_OUTPUT)


def with_env(command: str, env: Mapping[str, str] | None) -> str:
    """``command`` run by ``sh`` with ``env`` set: ``env K=V ... sh -c COMMAND``.

    Used where the environment cannot be passed beside the command (SSH servers accept only the
    variables their ``AcceptEnv`` lists), so it travels inside the command line, quoted.
    """
    if not env:
        return command
    for name in env:
        if not name.replace("_", "").isalnum() or name[0].isdigit():
            raise ValueError(f"not an environment variable name: {name!r}")
    assigns = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    return f"env {assigns} sh -c {shlex.quote(command)}"


class Transport(ABC):
    """Files and commands on one node. Use as ``async with``: it connects and always closes.

    Paths are absolute POSIX paths on the node. Writes never follow or replace: ``write_file``
    creates a new file (with its final mode from the first byte), ``rename`` is the one atomic
    replace, and ``symlink`` creates a new link.
    """

    scheme: ClassVar[str]

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        self.url = url
        self.options = options

    @property
    def label(self) -> str:
        """How messages name this node's side: ``local`` or ``ssh://user@host:port``."""
        return self.url

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def write_file(self, path: str, data: bytes, *, mode: int) -> None:
        """Create ``path`` (it must not exist) with ``mode`` from birth, write ``data``, flush to disk."""

    @abstractmethod
    async def read_file(self, path: str, *, limit: int = MAX_READ) -> bytes | None:
        """The file's bytes, or None when it does not exist; more than ``limit`` bytes is an error."""

    @abstractmethod
    async def mkdir(self, path: str, *, mode: int = 0o755, parents: bool = False) -> None:
        """Create a folder; with ``parents``, create missing parents and accept one that exists."""

    @abstractmethod
    async def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst``, replacing ``dst`` when it is a file or symlink."""

    @abstractmethod
    async def symlink(self, target: str, path: str) -> None:
        """Create the symlink ``path`` pointing at ``target`` (kept as given, relative or not)."""

    @abstractmethod
    async def readlink(self, path: str) -> str | None:
        """Where the symlink ``path`` points, or None when ``path`` does not exist or is no symlink."""

    @abstractmethod
    async def listdir(self, path: str) -> list[str]:
        """Entry names in a folder (not ``.``/``..``); an empty list when it does not exist."""

    @abstractmethod
    async def mtime(self, path: str) -> float | None:
        """Modification time (not following a symlink), or None when ``path`` does not exist."""

    @abstractmethod
    async def touch(self, path: str) -> None:
        """Set the modification time to now."""

    @abstractmethod
    async def remove(self, path: str) -> None:
        """Remove a file or symlink; a missing one is fine."""

    @abstractmethod
    async def remove_tree(self, path: str) -> None:
        """Remove a folder and everything under it; a missing one is fine."""

    @abstractmethod
    async def sync_dir(self, path: str) -> None:
        """Make renames inside folder ``path`` durable (fsync); a no-op where that cannot be done."""

    @abstractmethod
    async def is_root(self) -> bool:
        """Whether we act as root on the node (ownership can be changed only then)."""

    @abstractmethod
    async def chown(self, paths: Sequence[str], *, owner: str | None, group: str | None) -> None:
        """Give ``paths`` (not following symlinks) to ``owner`` and/or ``group``, named on the node."""

    @abstractmethod
    async def home(self) -> str:
        """The home folder of the user we act as on the node (absolute)."""

    @abstractmethod
    async def run(self, command: str, *, timeout: float, env: Mapping[str, str] | None = None) -> CommandResult:
        """Run ``command`` with ``sh`` on the node; never raises for a failing or slow command."""


# options a node carries for other parts than its transport (the webroot ACME's http-01 writes to)
NODE_OPTIONS = frozenset({"webroot"})

# scheme -> "module:Class"; imported on first use so that asyncssh loads only for SSH nodes
TRANSPORTS: Mapping[str, str] = {
    "local": "certfleet.fleet.transports.local:LocalTransport",
    "ssh": "certfleet.fleet.transports.ssh:SshTransport",
}


def scheme_of(url: str) -> str:
    """``local`` for ``local`` or ``local://``; ``ssh`` for ``ssh://user@host:port``."""
    scheme, sep, _ = url.partition("://")
    return (scheme if sep else url).strip().lower()


def open_transport(url: str, options: Mapping[str, Any] | None = None) -> Transport:
    """The transport for a node's ``transport`` URL, not yet connected (use ``async with``)."""
    scheme = scheme_of(url)
    where = TRANSPORTS.get(scheme)
    if where is None:
        known = ", ".join(sorted(TRANSPORTS))
        raise InputError(f"unknown transport {url!r}", hint=f"use one of: {known} (for example ssh://user@host:22)")
    module, _, name = where.partition(":")
    cls: type[Transport] = getattr(importlib.import_module(module), name)
    return cls(url, {k: v for k, v in (options or {}).items() if k not in NODE_OPTIONS})
