"""What a target is, the versioned-folder layout most targets share, and the one registry.

A target turns :class:`~certfleet.fleet.model.Material` into files and makes them live on a node
through a :class:`~certfleet.fleet.transports.Transport`, in steps the deploy engine drives:

    render → upload (staged, not live) → switch (atomic; returns how to undo it) → switch_back

File targets keep every version in its own folder and a ``live`` symlink to the active one::

    PATH/versions/<version>/fullchain.pem, privkey.pem ...
    PATH/live -> versions/<version>

A version folder is written under a temporary name and renamed into place, so it is either
complete or absent; ``live`` is switched by renaming a new symlink over it, so a reader sees the
old set of files or the new one, never a mix. Temporary names start with a dot and are cleaned
up by the next upload, whatever killed the last one.

Beside each folder, ``versions/.<version>.sha256`` lists its files and their SHA-256 (the format
of ``sha256sum``: ``cd versions/<version> && sha256sum -c ../.<version>.sha256``). A folder is
reused only when it still matches its list; one that does not (a file removed by hand or by an
interrupted cleanup) is built again. The list lives outside the folder because some servers
load every file of a folder they are pointed at (HAProxy's ``crt`` with a directory).

Adding a target: one module with a :class:`Target` subclass, and one line in :data:`TARGETS`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import posixpath
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from certfleet.certinfo import fingerprint
from certfleet.errors import InputError, OperationFailed
from certfleet.fleet.model import Material, TargetSpec
from certfleet.fleet.transports import Transport

KEEP_VERSIONS = 3
MAX_PATH = 4096
_KEY_MODES = {"0600": 0o600, "0640": 0o640, "0400": 0o400, "0440": 0o440}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_OWNER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}\$?$")
TMP_PREFIX = ".tmp-"
LIVE_TMP_PREFIX = ".live-"


class StepError(OperationFailed):
    """A step on a node failed; ``output`` is what the node said (a command's output)."""

    def __init__(self, message: str, *, output: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.output = output


@dataclass(frozen=True, slots=True)
class TargetFile:
    """One rendered file: its name in the version folder and whether it holds the private key."""

    name: str
    data: bytes = field(repr=False)
    secret: bool = False


@dataclass(frozen=True, slots=True)
class Undo:
    """How to put a target back as it was before a switch. Targets subclass it."""

    def describe(self) -> str:
        """What the target had before, for a report."""
        return "what it had"


def temp_token() -> str:
    return secrets.token_hex(4)


def check_path(value: str, what: str = "path") -> str:
    """An absolute POSIX path, normalized; refuses relative paths, ``..`` and control characters."""
    if not isinstance(value, str) or not value:
        raise InputError(f"the target {what} is empty", hint="give an absolute path such as /etc/certfleet/web")
    if len(value) > MAX_PATH or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InputError(f"the target {what} is too long or holds control characters: {value[:80]!r}")
    if not value.startswith("/"):
        raise InputError(f"the target {what} must be absolute: {value!r}", hint="for example /etc/certfleet/web")
    if ".." in value.split("/"):
        raise InputError(f"the target {what} must not hold '..': {value!r}")
    normal = posixpath.normpath(value)
    if normal == "/":
        raise InputError("the target path must not be the root folder")
    return normal


def check_filename(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in (".", ".."):
        raise InputError(
            f"{what} must be a plain file name (letters, digits, '.', '_', '-'): {value!r}",
            hint="for example fullchain.pem",
        )
    return value


def option_str(options: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = options.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 1024 or "\0" in value:
        raise InputError(f"the target option {name} must be a short text")
    return value


def option_bool(options: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise InputError(f"the target option {name} must be true or false, not {value!r}")


def option_seconds(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 3600:
        raise InputError(f"the target option {name} must be a number of seconds between 0 and 3600")
    return float(value)


class Target(ABC):
    """One way files land on a node. Instances live for one deploy of one node."""

    kind: ClassVar[str]
    # options every target of this kind accepts; anything else is refused (a typo would be silent)
    options_allowed: ClassVar[frozenset[str]] = frozenset()
    # options that change nothing the node receives, or are secret: left out of the version name
    options_unversioned: ClassVar[frozenset[str]] = frozenset({"password", "timeout"})

    def __init__(self, spec: TargetSpec) -> None:
        if spec.kind != self.kind:
            raise ValueError(f"a {self.kind} target cannot take a {spec.kind} spec")
        unknown = set(spec.options) - self.options_allowed
        if unknown:
            allowed = ", ".join(sorted(self.options_allowed)) or "none"
            raise InputError(
                f"unknown option(s) for a {self.kind} target: {', '.join(sorted(unknown))}",
                hint=f"a {self.kind} target takes: {allowed}",
            )
        self.spec = spec
        self.options = spec.options

    @property
    def label(self) -> str:
        """``kind:path``, as reports name the target."""
        return f"{self.spec.kind}:{self.spec.path}"

    @abstractmethod
    def render(self, material: Material) -> tuple[TargetFile, ...]:
        """The files for ``material``; raises :class:`InputError` when the options do not allow it."""

    def version_name(self, material: Material) -> str:
        """The version's folder name: the leaf fingerprint's start and a digest of all that shapes
        the files (chain, version id, target kind and options), the same on every run."""
        leaf = fingerprint(material.leaf)
        shaping = {
            "kind": self.kind,
            "chain": [fingerprint(c) for c in material.chain],
            "version_id": material.version_id,
            "options": {k: v for k, v in sorted(self.options.items()) if k not in self.options_unversioned},
        }
        digest = hashlib.sha256((leaf + json.dumps(shaping, sort_keys=True, default=str)).encode()).hexdigest()
        return f"{leaf[:16]}-{digest[:8]}"

    @abstractmethod
    async def live_version(self, tx: Transport) -> str | None:
        """The version the node has live for this target, or None (nothing, or not ours)."""

    @abstractmethod
    async def upload(self, tx: Transport, version: str, files: tuple[TargetFile, ...]) -> None:
        """Put the files on the node, complete, without making them live. Idempotent."""

    @abstractmethod
    async def switch(self, tx: Transport, version: str) -> Undo:
        """Make ``version`` live in one atomic step; on failure leave the node as it was and raise."""

    @abstractmethod
    async def switch_back(self, tx: Transport, undo: Undo) -> None:
        """Undo a :meth:`switch`: the target is exactly as it was before it."""

    async def check(self, tx: Transport, version: str, files: tuple[TargetFile, ...]) -> str | None:
        """Whether ``version`` on the node still holds exactly its files: None when it does, else
        what is wrong with it (then :meth:`upload` builds it again)."""
        return None

    async def prune(self, tx: Transport, keep: int = KEEP_VERSIONS) -> None:
        """Remove old versions beyond the newest ``keep``; targets without versions keep nothing."""
        return None


def manifest(files: tuple[TargetFile, ...]) -> bytes:
    """The list of a version's files as ``sha256sum`` writes it: ``<sha256>  <name>`` a line."""
    return "".join(f"{hashlib.sha256(f.data).hexdigest()}  {f.name}\n" for f in files).encode()


def read_manifest(data: bytes) -> dict[str, str] | None:
    """The names and digests of a list written by :func:`manifest`; None when it is not one."""
    out: dict[str, str] = {}
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    for line in lines:
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or not _NAME_RE.match(name):
            return None
        out[name] = digest
    return out


@dataclass(frozen=True, slots=True)
class LinkUndo(Undo):
    link: str | None  # what `live` pointed at before; None: it did not exist

    def describe(self) -> str:
        return f"live -> {self.link}" if self.link is not None else "no live link (a first deploy)"


class VersionedTarget(Target):
    """A target that keeps each version in ``PATH/versions/<version>/`` and switches ``PATH/live``."""

    options_allowed: ClassVar[frozenset[str]] = frozenset({"owner", "group", "key_mode"})

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        self.owner = self._owner_option("owner")
        self.group = self._owner_option("group")
        key_mode = option_str(self.options, "key_mode", "0600") or "0600"
        if key_mode not in _KEY_MODES:
            raise InputError(
                f"key_mode must be one of {', '.join(_KEY_MODES)}, not {key_mode!r}",
                hint="private keys are readable by their owner only (0600), or also by its group (0640)",
            )
        self.key_mode = _KEY_MODES[key_mode]
        self._root: str | None = self.fixed_root()

    def fixed_root(self) -> str | None:
        """The target's folder when it is known before reaching the node: PATH, checked."""
        return check_path(self.spec.path)

    def _owner_option(self, name: str) -> str | None:
        value = option_str(self.options, name)
        if value is not None and not _OWNER_RE.match(value):
            raise InputError(f"the target option {name} is not a user or group name: {value!r}")
        return value

    async def root(self, tx: Transport) -> str:
        """The target's folder on the node."""
        if self._root is None:
            raise RuntimeError("a target without a fixed folder must override root()")
        return self._root

    async def _paths(self, tx: Transport) -> tuple[str, str, str]:
        root = await self.root(tx)
        return root, f"{root}/versions", f"{root}/live"

    async def live_version(self, tx: Transport) -> str | None:
        _, _, live = await self._paths(tx)
        return self._version_of(await tx.readlink(live))

    @staticmethod
    def _version_of(link: str | None) -> str | None:
        if link is None:
            return None
        head, _, name = link.rstrip("/").rpartition("/")
        if head.rpartition("/")[2] != "versions" or not _NAME_RE.match(name):
            return None
        return name

    async def cleanup(self, tx: Transport) -> None:
        """Remove what a killed upload or switch left behind (temporary names only)."""
        root, versions, _ = await self._paths(tx)
        for name in await tx.listdir(versions):
            if name.startswith(TMP_PREFIX):
                await tx.remove_tree(f"{versions}/{name}")
        for name in await tx.listdir(root):
            if name.startswith(LIVE_TMP_PREFIX):
                await tx.remove(f"{root}/{name}")

    async def upload(self, tx: Transport, version: str, files: tuple[TargetFile, ...]) -> None:
        _, versions, _ = await self._paths(tx)
        await self.cleanup(tx)
        present = version in await tx.listdir(versions)
        if present and await self.check(tx, version, files) is None:
            return  # renamed into place only once complete, and still what its list says
        await tx.mkdir(versions, parents=True)
        token = temp_token()
        staging = f"{versions}/{TMP_PREFIX}{version}-{token}"
        await tx.mkdir(staging)
        paths = [staging]
        for item in files:
            path = f"{staging}/{check_filename(item.name, 'a file name')}"
            await tx.write_file(path, item.data, mode=self.key_mode if item.secret else 0o644)
            paths.append(path)
        if (self.owner or self.group) and await tx.is_root():
            await tx.chown(paths, owner=self.owner, group=self.group)
        await tx.sync_dir(staging)
        # the list first: a folder without one is never taken as whole
        listing = f"{versions}/{TMP_PREFIX}{version}-{token}.sha256"
        await tx.write_file(listing, manifest(files), mode=0o644)
        await tx.rename(listing, self._manifest_path(versions, version))
        if present:  # damaged: moved aside, then replaced (live, if it points there, is whole again)
            damaged = f"{versions}/{TMP_PREFIX}damaged-{version}-{token}"
            await tx.rename(f"{versions}/{version}", damaged)
            await tx.rename(staging, f"{versions}/{version}")
            await tx.remove_tree(damaged)
        else:
            await tx.rename(staging, f"{versions}/{version}")
        await tx.sync_dir(versions)

    @staticmethod
    def _manifest_path(versions: str, version: str) -> str:
        return f"{versions}/.{version}.sha256"

    async def check(self, tx: Transport, version: str, files: tuple[TargetFile, ...]) -> str | None:
        _, versions, _ = await self._paths(tx)
        listing = await tx.read_file(self._manifest_path(versions, version))
        if listing is None:
            return f"versions/{version} has no list of its files"
        expected = read_manifest(listing)
        if expected is None or set(expected) != {f.name for f in files}:
            return f"versions/{version} does not list the files of this target"
        for name, digest in expected.items():
            data = await tx.read_file(f"{versions}/{version}/{name}")
            if data is None:
                return f"versions/{version}/{name} is missing"
            if hashlib.sha256(data).hexdigest() != digest:
                return f"versions/{version}/{name} was changed"
        return None

    async def _point_live(self, tx: Transport, link: str | None) -> None:
        root, _, live = await self._paths(tx)
        if link is None:
            await tx.remove(live)
        else:
            staging = f"{root}/{LIVE_TMP_PREFIX}{temp_token()}"
            await tx.symlink(link, staging)
            try:
                await tx.rename(staging, live)
            except BaseException:
                await tx.remove(staging)
                raise
        await tx.sync_dir(root)

    async def switch(self, tx: Transport, version: str) -> Undo:
        _, versions, live = await self._paths(tx)
        before = await tx.readlink(live)
        if before is None and await tx.mtime(live) is not None:
            raise InputError(
                f"{live} exists and is not a symlink; certfleet will not replace it",
                hint="move it away: certfleet makes live a symlink to the active version folder",
            )
        # relative, so the link stays right when the folder is mounted elsewhere (a container)
        await self._point_live(tx, f"versions/{version}")
        await tx.touch(f"{versions}/{version}")  # newest activation first when pruning
        return LinkUndo(before)

    async def switch_back(self, tx: Transport, undo: Undo) -> None:
        if not isinstance(undo, LinkUndo):
            raise TypeError(f"not an undo of this target: {undo!r}")
        await self._point_live(tx, undo.link)
        version = self._version_of(undo.link)
        if version is not None:
            _, versions, _ = await self._paths(tx)
            if await tx.mtime(f"{versions}/{version}") is not None:
                await tx.touch(f"{versions}/{version}")

    async def _by_age(self, tx: Transport, *, exclude: set[str]) -> list[str]:
        """Version folders, the most recently made live first."""
        _, versions, _ = await self._paths(tx)
        found: list[tuple[float, str]] = []
        for name in await tx.listdir(versions):
            if name.startswith(".") or name in exclude:
                continue
            when = await tx.mtime(f"{versions}/{name}")
            if when is not None:
                found.append((when, name))
        return [name for _, name in sorted(found, reverse=True)]

    async def prune(self, tx: Transport, keep: int = KEEP_VERSIONS) -> None:
        _, versions, _ = await self._paths(tx)
        live = await self.live_version(tx)
        kept = {live} if live else set()
        for name in await self._by_age(tx, exclude=set()):
            if name in kept:
                continue
            if len(kept) < keep:
                kept.add(name)
            else:
                await tx.remove_tree(f"{versions}/{name}")
        for name in await tx.listdir(versions):  # the lists of the folders removed
            if name.startswith(".") and name.endswith(".sha256") and name[1:-7] not in kept:
                await tx.remove(f"{versions}/{name}")


# kind -> "module:Class", imported on first use: adding a target is one module and one line here
TARGETS: Mapping[str, str] = {
    "pem": "certfleet.fleet.targets.pem:PemTarget",
    "nginx": "certfleet.fleet.targets.nginx:NginxTarget",
    "apache": "certfleet.fleet.targets.apache:ApacheTarget",
    "haproxy": "certfleet.fleet.targets.haproxy:HAProxyTarget",
    "pkcs12": "certfleet.fleet.targets.pkcs12:Pkcs12Target",
    "k8s-secret": "certfleet.fleet.targets.k8s_secret:K8sSecretTarget",
    "command": "certfleet.fleet.targets.command:CommandTarget",
}


def target_kinds() -> list[str]:
    return sorted(TARGETS)


def make_target(spec: TargetSpec) -> Target:
    """The target for ``spec``; an unknown kind or a bad option is an :class:`InputError`."""
    where = TARGETS.get(spec.kind)
    if where is None:
        raise InputError(f"unknown target kind {spec.kind!r}", hint=f"use one of: {', '.join(target_kinds())}")
    module, _, name = where.partition(":")
    cls: type[Target] = getattr(importlib.import_module(module), name)
    return cls(spec)
