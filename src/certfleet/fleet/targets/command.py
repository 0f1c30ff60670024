"""A user command that installs the files itself (an appliance's CLI, a keystore import, an API).

PATH is the command, run with ``sh`` on the node each time a version becomes live, and again for
the previous one when a deploy is rolled back. It finds the files through the environment:
``CERTFLEET_DIR`` (the live folder), ``CERTFLEET_CERT``, ``CERTFLEET_CHAIN``,
``CERTFLEET_FULLCHAIN``, ``CERTFLEET_KEY`` and ``CERTFLEET_VERSION``. The files are kept in
versions like every file target, under the ``dir`` option (default:
``~/.local/state/certfleet/command-<hash of the command>`` on the node). A command that fails
or outlasts ``timeout`` seconds (default 120) fails the switch.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

from certfleet import export
from certfleet.errors import InputError
from certfleet.fleet.model import Material, TargetSpec
from certfleet.fleet.targets._base import (
    LinkUndo,
    StepError,
    TargetFile,
    Undo,
    VersionedTarget,
    check_path,
    option_seconds,
    option_str,
)
from certfleet.fleet.transports import Transport

__all__ = ["CommandTarget"]

_FILES = {"CERTFLEET_CERT": "cert.pem", "CERTFLEET_CHAIN": "chain.pem", "CERTFLEET_FULLCHAIN": "fullchain.pem"}
MAX_COMMAND = 4096


class CommandTarget(VersionedTarget):
    kind = "command"
    options_allowed: ClassVar[frozenset[str]] = VersionedTarget.options_allowed | frozenset({"dir", "timeout"})

    def __init__(self, spec: TargetSpec) -> None:
        command = spec.path.strip()
        if not command or len(command) > MAX_COMMAND or "\0" in command:
            raise InputError("a command target needs a command (at most 4096 characters)")
        self.command = command
        super().__init__(spec)
        self.timeout = option_seconds(self.options, "timeout", 120.0)

    def fixed_root(self) -> str | None:
        folder = option_str(self.options, "dir")
        return check_path(folder, "dir") if folder is not None else None  # else under the node's home

    @property
    def label(self) -> str:
        return f"command:{self.command[:60]}"

    async def root(self, tx: Transport) -> str:
        if self._root is None:
            digest = hashlib.sha256(self.command.encode()).hexdigest()[:12]
            home = (await tx.home()).rstrip("/")
            self._root = check_path(f"{home}/.local/state/certfleet/command-{digest}")
        return self._root

    def render(self, material: Material) -> tuple[TargetFile, ...]:
        files = export.layout_files(export.OutputFormat.PEM, material.key, material.leaf, material.chain)
        private = export.private_files(export.OutputFormat.PEM)
        return tuple(TargetFile(name, data, secret=name in private) for name, data in files.items())

    async def _run(self, tx: Transport, version: str) -> None:
        live = f"{await self.root(tx)}/live"
        env = {name: f"{live}/{file}" for name, file in _FILES.items()}
        env |= {"CERTFLEET_DIR": live, "CERTFLEET_KEY": f"{live}/privkey.pem", "CERTFLEET_VERSION": version}
        result = await tx.run(self.command, timeout=self.timeout, env=env)
        if not result.ok:
            raise StepError(f"the install command failed: {result.describe()}", output=result.output)

    async def switch(self, tx: Transport, version: str) -> Undo:
        undo = await super().switch(tx, version)
        try:
            await self._run(tx, version)
        except StepError:
            await self.switch_back(tx, undo)
            raise
        return undo

    async def switch_back(self, tx: Transport, undo: Undo) -> None:
        await super().switch_back(tx, undo)
        previous = self._version_of(undo.link) if isinstance(undo, LinkUndo) else None
        if previous is not None:
            await self._run(tx, previous)
