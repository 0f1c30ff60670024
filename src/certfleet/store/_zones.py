"""Zones in the store: a node's zone (which workers deploy and probe it), and the last probe a
worker of its zone made of it (``status`` shows that instead of probing from where it runs)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from certfleet.clock import utc_now
from certfleet.errors import InputError
from certfleet.store._base import StoreBase, check_name
from certfleet.store._engine import retried
from certfleet.store._models import NodeRow
from certfleet.store._node_locks import NodeLocks

__all__ = ["MAX_PROBE_BYTES", "RecordedProbe", "ZonesMixin", "check_zone"]

MAX_PROBE_BYTES = 64 * 1024  # a recorded probe: a handful of certificates and problems


@dataclass(frozen=True, slots=True)
class RecordedProbe:
    """A node's last probe made by a worker of its zone: what it saw, when, and which worker."""

    node: str
    probed: Mapping[str, Any]
    at: dt.datetime
    by: str


class ZonesMixin(StoreBase):
    def node_locks(self) -> NodeLocks:
        """The rights to deploy nodes, none taken yet (see :class:`NodeLocks`)."""
        return NodeLocks(self._db)

    @retried
    def set_node_zone(self, node: str, zone: str | None) -> bool:
        """Put ``node`` in ``zone`` (None: in none). True when it changed."""
        if zone is not None:
            check_name("zone", zone)
        with self._db.session(write=True) as s:
            row = self._node_row(s, node)
            if row.zone == zone:
                return False
            row.zone = zone
            row.version += 1
            row.updated_at = utc_now()
            self._audit(s, "node.zone", {"node": node, "zone": zone})
            return True

    @retried
    def node_zones(self) -> dict[str, str | None]:
        """Every node's zone, by node name."""
        with self._db.session(write=False) as s:
            return {str(n): z for n, z in s.execute(select(NodeRow.name, NodeRow.zone).order_by(NodeRow.name))}

    @retried
    def record_probe(self, node: str, probed: Mapping[str, Any], *, by: str, at: dt.datetime) -> None:
        """What a worker of ``node``'s zone saw when it probed it (``probed``: a JSON object of at
        most 64 KiB), written over the one before; the node itself is not changed (no version)."""
        if len(json.dumps(probed)) > MAX_PROBE_BYTES:
            raise InputError("a recorded probe is larger than 64 KiB")
        with self._db.session(write=True) as s:
            row = self._node_row(s, node)
            row.probed, row.probed_at, row.probed_by = dict(probed), at, by[:255]

    @retried
    def recorded_probes(self) -> dict[str, RecordedProbe]:
        """Every node's last probe made by a worker of its zone, by node name."""
        with self._db.session(write=False) as s:
            rows = s.execute(
                select(NodeRow.name, NodeRow.probed, NodeRow.probed_at, NodeRow.probed_by).where(
                    NodeRow.probed_at.is_not(None)
                )
            )
            return {
                str(name): RecordedProbe(str(name), dict(probed or {}), at, by or "")
                for name, probed, at, by in rows
                if at is not None
            }


def check_zone(zone: str | None) -> str | None:
    if zone is None:
        return None
    if not zone:
        raise InputError("a zone name cannot be empty")
    return check_name("zone", zone)
