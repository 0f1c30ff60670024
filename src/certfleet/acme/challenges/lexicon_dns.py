"""dns-01 through a hosted DNS provider's API, by dns-lexicon (Cloudflare, Route 53, Gandi, OVH,
DigitalOcean, Azure, Google Cloud DNS: 91 providers in dns-lexicon 3.25).

``dns-01:lexicon:PROVIDER[:FILE]``: ``PROVIDER`` is lexicon's name for it (``cloudflare``,
``route53``...); ``FILE`` (readable by its owner only) holds the provider's options as lexicon
names them, one ``KEY = VALUE`` a line (``auth_token = ...``). Without a file, lexicon reads them
from ``LEXICON_<PROVIDER>_<OPTION>`` environment variables.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from certfleet.acme.challenges._base import Check, DnsSolver, read_secret_settings
from certfleet.acme.lookup import zone_of
from certfleet.errors import InputError, OperationFailed

__all__ = ["LexiconSolver"]

TTL = 60


class LexiconSolver(DnsSolver):
    method = "lexicon"

    def _parts(self) -> tuple[str, str | None]:
        provider, _, file = self.spec.partition(":")
        if not provider.strip():
            raise InputError("the lexicon solver needs its provider: dns-01:lexicon:PROVIDER[:FILE]")
        return provider.strip().lower(), file.strip() or None

    def _options(self) -> dict[str, str]:
        _, file = self._parts()
        if file is None:
            return {}
        return read_secret_settings(file, "the lexicon credentials")

    def validate(self, names: Sequence[str]) -> None:
        self._options()

    def _config(self, zone: str) -> Any:
        from lexicon.config import ConfigResolver

        provider, _ = self._parts()
        settings: dict[str, Any] = {
            "provider_name": provider,
            "domain": zone,
            "delegated": zone,  # the zone found in DNS, not the registered domain lexicon would guess
            "ttl": TTL,
            provider: self._options(),
        }
        return ConfigResolver().with_dict(settings).with_env()  # type: ignore[no-untyped-call]

    def _sync(self, zone: str, calls: Sequence[tuple[str, str, str]]) -> list[dict[str, Any]]:
        from lexicon.client import Client

        provider, _ = self._parts()
        try:
            with Client(self._config(zone)) as ops:
                for action, record, value in calls:
                    if action == "add":
                        ops.create_record("TXT", record, value)
                    elif action == "remove":
                        ops.delete_record(None, "TXT", record, value)
                    else:
                        return list(ops.list_records("TXT"))
        except Exception as exc:  # every provider raises its own; the message says which
            raise OperationFailed(
                f"dns-lexicon's {provider} provider failed for zone {zone}: {type(exc).__name__}: {exc}",
                source=self.label,
                hint="check the provider's name and credentials (lexicon's option names)",
            ) from exc
        return []

    async def _each_zone(self, records: Mapping[str, Sequence[str]], action: str) -> None:
        zones: dict[str, list[tuple[str, str, str]]] = {}
        for record, values in records.items():
            zone = await zone_of(record, self.context.dns)
            zones.setdefault(zone, []).extend((action, record, v) for v in values)
        await asyncio.gather(*(asyncio.to_thread(self._sync, zone, calls) for zone, calls in zones.items()))

    async def add(self, records: Mapping[str, Sequence[str]]) -> None:
        await self._each_zone(records, "add")

    async def remove(self, records: Mapping[str, Sequence[str]]) -> None:
        await self._each_zone(records, "remove")

    async def check(self, names: Sequence[str]) -> list[Check]:
        out = []
        zones = sorted({await zone_of(n.removeprefix("*."), self.context.dns) for n in names})
        for zone in zones:
            try:
                await asyncio.to_thread(self._sync, zone, [("list", "", "")])
            except (InputError, OperationFailed) as exc:
                out.append(Check(self.label, "solver", False, exc.message))
            else:
                out.append(Check(self.label, "solver", True, f"lists the TXT records of zone {zone}"))
        return out
