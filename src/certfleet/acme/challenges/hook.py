"""dns-01 through a command of your own, for any DNS that neither RFC 2136 nor dns-lexicon
reaches (like certbot's ``--manual-auth-hook``).

``dns-01:hook:COMMAND`` runs ``COMMAND`` with ``sh`` on the machine certfleet runs on, once per
TXT value, with in its environment::

    CERTFLEET_ACME_ACTION   add, then remove once the CA is done
    CERTFLEET_ACME_DOMAIN   the name being proven (example.com for *.example.com)
    CERTFLEET_ACME_RECORD   where the TXT record goes: _acme-challenge.example.com
    CERTFLEET_ACME_VALUE    the TXT record's value

A non-zero exit stops the issuing (on ``add``) or is reported (on ``remove``). certfleet then waits
until every authoritative server of the zone answers the record, as for the other DNS solvers.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence

from certfleet.acme.challenges._base import Check, DnsSolver
from certfleet.errors import InputError, OperationFailed

__all__ = ["HookSolver"]

_MAX_OUTPUT = 4000


class HookSolver(DnsSolver):
    method = "hook"

    def validate(self, names: Sequence[str]) -> None:
        if not self.spec:
            raise InputError("the hook solver needs its command: dns-01:hook:COMMAND")

    async def _run(self, action: str, record: str, value: str) -> None:
        env = {
            **os.environ,
            "CERTFLEET_ACME_ACTION": action,
            "CERTFLEET_ACME_DOMAIN": record.removeprefix("_acme-challenge."),
            "CERTFLEET_ACME_RECORD": record,
            "CERTFLEET_ACME_VALUE": value,
        }
        proc = await asyncio.create_subprocess_shell(
            self.spec, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.context.command_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise OperationFailed(
                f"the hook `{self.spec}` did not finish {action} {record} in {self.context.command_timeout:g} s",
                source=self.label,
            ) from None
        if proc.returncode != 0:
            said = out.decode("utf-8", "replace").strip()[-_MAX_OUTPUT:]
            raise OperationFailed(
                f"the hook `{self.spec}` failed to {action} {record} (status {proc.returncode})"
                + (f": {said}" if said else ""),
                source=self.label,
            )

    async def add(self, records: Mapping[str, Sequence[str]]) -> None:
        for record, values in records.items():
            for value in values:
                await self._run("add", record, value)

    async def remove(self, records: Mapping[str, Sequence[str]]) -> None:
        failures = []
        for record, values in records.items():
            for value in values:
                try:
                    await self._run("remove", record, value)
                except OperationFailed as exc:
                    failures.append(exc.message)
        if failures:
            raise OperationFailed("; ".join(failures), source=self.label)

    async def check(self, names: Sequence[str]) -> list[Check]:
        try:
            program = shlex.split(self.spec)[0]
        except (ValueError, IndexError):
            return [Check(self.label, "solver", False, "the hook command cannot be read as a shell command")]
        found = shutil.which(program)
        if found is None:
            return [Check(self.label, "solver", False, f"{program} is not an executable command here")]
        return [Check(self.label, "solver", True, f"runs {found}")]
