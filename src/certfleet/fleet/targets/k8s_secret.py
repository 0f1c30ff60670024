"""A Kubernetes TLS Secret (``kubernetes.io/tls``) as YAML at PATH, for ``kubectl apply -f``.

The file is replaced atomically (written beside it, then renamed over it) and holds the key, so
it is 0600. It carries the version in an annotation, which is how a later deploy knows what is
live. Options: ``name`` (the Secret's name; default: PATH's file name without extension),
``namespace``, ``owner``, ``group``.
"""

from __future__ import annotations

import base64
import posixpath
import re
from dataclasses import dataclass, field
from typing import ClassVar

from certfleet import export
from certfleet.certinfo import fingerprint
from certfleet.errors import InputError
from certfleet.fleet.model import Material, TargetSpec
from certfleet.fleet.targets._base import (
    LIVE_TMP_PREFIX,
    StepError,
    Target,
    TargetFile,
    Undo,
    check_path,
    option_str,
    temp_token,
)
from certfleet.fleet.transports import Transport

__all__ = ["K8sSecretTarget"]

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VERSION_RE = re.compile(rb'^    certfleet\.io/version: "([0-9a-f]{16}-[0-9a-f]{8})"$', re.MULTILINE)
_STAGED = ".certfleet-"
_OWNER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}\$?$")


@dataclass(frozen=True, slots=True)
class _FileUndo(Undo):
    previous: bytes | None = field(repr=False)  # the file as it was (it holds a key); None: absent

    def describe(self) -> str:
        if self.previous is None:
            return "no Secret file (a first deploy)"
        found = _VERSION_RE.search(self.previous)
        return f"the Secret of {found.group(1).decode()}" if found else "the Secret file it had"


class K8sSecretTarget(Target):
    kind = "k8s-secret"
    options_allowed: ClassVar[frozenset[str]] = frozenset({"name", "namespace", "owner", "group"})

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        self.path = check_path(spec.path)
        self.folder, self.filename = posixpath.split(self.path)
        default = re.sub(r"[^a-z0-9.-]+", "-", self.filename.rsplit(".", 1)[0].lower()).strip("-.") or "tls"
        self.name = option_str(self.options, "name", default) or default
        if len(self.name) > 253 or not _DNS1123.match(self.name):
            raise InputError(
                f"not a valid Secret name: {self.name!r}",
                hint="lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
            )
        self.namespace = option_str(self.options, "namespace")
        if self.namespace is not None and not _LABEL.match(self.namespace):
            raise InputError(f"not a valid namespace: {self.namespace!r}")
        self.owner = option_str(self.options, "owner")
        self.group = option_str(self.options, "group")
        for value in (self.owner, self.group):
            if value is not None and not _OWNER_RE.match(value):
                raise InputError(f"not a user or group name: {value!r}")

    def render(self, material: Material) -> tuple[TargetFile, ...]:
        files = export.layout_files(export.OutputFormat.NGINX, material.key, material.leaf, material.chain)
        crt = base64.b64encode(files["fullchain.pem"]).decode()
        key = base64.b64encode(files["privkey.pem"]).decode()
        namespace = f"  namespace: {self.namespace}\n" if self.namespace else ""
        text = (
            "apiVersion: v1\n"
            "kind: Secret\n"
            "type: kubernetes.io/tls\n"
            "metadata:\n"
            f"  name: {self.name}\n"
            f"{namespace}"
            "  annotations:\n"
            f'    certfleet.io/version: "{self.version_name(material)}"\n'
            f'    certfleet.io/fingerprint: "{fingerprint(material.leaf)}"\n'
            f'    certfleet.io/not-after: "{material.leaf.not_valid_after_utc.isoformat()}"\n'
            "data:\n"
            f"  tls.crt: {crt}\n"
            f"  tls.key: {key}\n"
        )
        return (TargetFile(self.filename, text.encode(), secret=True),)

    def _staged(self, version: str) -> str:
        return f"{self.folder}/.{self.filename}{_STAGED}{version}"

    async def live_version(self, tx: Transport) -> str | None:
        data = await tx.read_file(self.path)
        found = _VERSION_RE.search(data) if data else None
        return found.group(1).decode() if found else None

    async def upload(self, tx: Transport, version: str, files: tuple[TargetFile, ...]) -> None:
        prefix = f".{self.filename}{_STAGED}"
        for name in await tx.listdir(self.folder):
            if name.startswith(prefix) or name.startswith(f".{self.filename}{LIVE_TMP_PREFIX}"):
                await tx.remove(f"{self.folder}/{name}")
        await tx.mkdir(self.folder, parents=True)
        (item,) = files
        await self._write(tx, self._staged(version), item.data)

    async def _write(self, tx: Transport, path: str, data: bytes) -> None:
        await tx.write_file(path, data, mode=0o600)
        if (self.owner or self.group) and await tx.is_root():
            await tx.chown([path], owner=self.owner, group=self.group)

    async def switch(self, tx: Transport, version: str) -> Undo:
        staged = self._staged(version)
        if await tx.mtime(staged) is None:
            raise StepError(f"the staged Secret {staged} is missing", hint="deploy again")
        previous = await tx.read_file(self.path)
        await tx.rename(staged, self.path)
        await tx.sync_dir(self.folder)
        return _FileUndo(previous)

    async def check(self, tx: Transport, version: str, files: tuple[TargetFile, ...]) -> str | None:
        (item,) = files
        data = await tx.read_file(self.path)
        return None if data == item.data else f"{self.path} is not the Secret of this version"

    async def switch_back(self, tx: Transport, undo: Undo) -> None:
        if not isinstance(undo, _FileUndo):
            raise TypeError(f"not an undo of this target: {undo!r}")
        if undo.previous is None:
            await tx.remove(self.path)
        else:
            staged = f"{self.folder}/.{self.filename}{LIVE_TMP_PREFIX}{temp_token()}"
            await self._write(tx, staged, undo.previous)
            await tx.rename(staged, self.path)
        await tx.sync_dir(self.folder)
