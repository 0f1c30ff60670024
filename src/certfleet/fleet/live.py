"""What a node has live: read from the node itself, target by target, never from the history.

After a deploy that never finished, the history cannot say where each node stands; the node can.
Each target's ``live`` names a version folder (``<leaf fingerprint start>-<digest>``), which is
matched to the lineage's versions by the leaf fingerprint it starts with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from certfleet.errors import CertfleetError
from certfleet.fleet.model import NodeSpec
from certfleet.fleet.targets import make_target
from certfleet.fleet.transports import open_transport

__all__ = ["LiveState", "read_live", "version_of_folder"]

_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class LiveState:
    """Each target's live version folder (None: nothing live, or not certfleet's), or why the
    node could not be read."""

    targets: tuple[str | None, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"targets": list(self.targets), "error": self.error}


def version_of_folder(folder: str | None, versions: Mapping[str, int]) -> int | None:
    """The version (by leaf fingerprint in ``versions``) a version folder holds; None if none."""
    if not folder:
        return None
    start = folder.partition("-")[0]
    if len(start) < 16:
        return None
    return next((n for fp, n in versions.items() if fp.startswith(start)), None)


async def _one(node: NodeSpec, timeout: float) -> LiveState:
    try:
        async with asyncio.timeout(timeout):
            targets = [make_target(t) for t in node.targets]
            async with open_transport(node.transport, node.options) as tx:
                return LiveState(tuple([await t.live_version(tx) for t in targets]))
    except CertfleetError as exc:
        return LiveState(error=exc.message)
    except TimeoutError:
        return LiveState(error=f"no answer within {timeout:g} s")
    except OSError as exc:
        return LiveState(error=exc.strerror or str(exc))


async def read_live(nodes: Sequence[NodeSpec], *, timeout: float = 15.0) -> dict[str, LiveState]:
    """Each node's live state, by node name; a node that cannot be reached says why."""
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(node: NodeSpec) -> tuple[str, LiveState]:
        async with gate:
            return node.name, await _one(node, timeout)

    return dict(await asyncio.gather(*(one(n) for n in nodes)))
