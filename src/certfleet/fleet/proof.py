"""Proving what a node serves once a deploy has reloaded it: handshakes with its probe endpoint,
compared with the deployed leaf and chain, until a streak of them shows the node has settled.

One matching handshake is not proof: while a server reloads, its new workers already answer and
the old ones still accept connections for a moment (nginx, httpd, HAProxy alike), so the old
chain can come back once. Only ``confirm`` matching handshakes in a row count. After a rollback,
what the node serves is read once it has let go of the deployed leaf.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives import serialization

from certfleet.certinfo import fingerprint
from certfleet.endpoint import Endpoint
from certfleet.fleet.model import Material
from certfleet.probe import ProbeResult

__all__ = ["Prober", "Proof", "Served", "default_prober"]

# seconds between the handshakes that confirm a node serves the new chain
_CONFIRM_PAUSE = 0.2


class Prober(Protocol):
    def __call__(self, host: str, port: int, *, server_name: str | None, timeout: float) -> Awaitable[ProbeResult]: ...


async def default_prober(host: str, port: int, *, server_name: str | None, timeout: float) -> ProbeResult:
    """:func:`certfleet.probe.probe`, imported when a node is first probed."""
    from certfleet.probe import probe

    return await probe(host, port, server_name=server_name, timeout=timeout)


@dataclass(frozen=True, slots=True)
class Served:
    """What one handshake (or the last of a streak) showed: whether it is the deployed leaf and
    chain, the leaf's fingerprint (None: no certificate), and one line saying so."""

    matches: bool
    fingerprint: str | None
    detail: str


def _der_fp(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class Proof:
    """One node's proof of ``material``: its probes, each ``timeout`` seconds long, and the notes
    of its deploy (what a probe saw that a person should know). ``stopping`` says that the deploy
    was asked to stop: a probe then gives up at the first handshake that does not match."""

    def __init__(
        self,
        prober: Prober,
        material: Material,
        *,
        timeout: float,
        confirm: int,
        stopping: Callable[[], bool],
        notes: list[str],
    ) -> None:
        self.prober = prober
        self.timeout = timeout
        self.confirm = confirm
        self.stopping = stopping
        self.notes = notes
        self.expected = (
            material.leaf.public_bytes(serialization.Encoding.DER),
            *(c.public_bytes(serialization.Encoding.DER) for c in material.chain),
        )
        self.want = fingerprint(material.leaf)

    async def _handshake(self, endpoint: Endpoint) -> ProbeResult:
        return await self.prober(endpoint.host, endpoint.port, server_name=endpoint.server_name, timeout=self.timeout)

    async def serves(self, endpoint: Endpoint, *, wait: float, patient: bool = True) -> Served:
        """Probe until the node serves the deployed chain on ``confirm`` connections in a row, for
        up to ``wait`` seconds. Not ``patient``: give up at the first handshake that does not match."""
        deadline = time.monotonic() + wait
        streak = 0
        pause = 0.2
        while True:
            served = self.compare(await self._handshake(endpoint))
            if served.matches:
                streak += 1
                if streak >= self.confirm:
                    return served
                step = _CONFIRM_PAUSE
            else:
                if not patient or self.stopping():
                    return served
                if streak:
                    self.notes.append(f"the old chain came back after a reload: {served.detail}")
                streak = 0
                step = pause
                pause = min(pause * 1.5, 1.0)
            if time.monotonic() + step > deadline:
                if served.matches:  # serving it, but not on enough connections in a row yet
                    detail = f"{served.detail}, but not yet on {self.confirm} connections in a row"
                    return Served(False, served.fingerprint, detail)
                return served
            await asyncio.sleep(step)

    def compare(self, result: ProbeResult) -> Served:
        """What one handshake shows, against the deployed leaf and chain."""
        if not result.ok or not result.chain_der:
            detail = "; ".join(p.message for p in result.problems) or "no certificate"
            return Served(False, None, f"the probe of {result.target} failed: {detail}")
        sent = tuple(result.chain_der)
        leaf = _der_fp(sent[0])
        if sent == self.expected:
            return Served(True, leaf, f"{result.target} serves {leaf[:16]} and its chain")
        if leaf != self.want:
            detail = f"{result.target} still serves another certificate: {leaf[:16]} (deployed {self.want[:16]})"
            return Served(False, leaf, detail)
        return Served(
            False,
            leaf,
            f"{result.target} serves the deployed certificate with another chain: "
            f"{len(sent)} certificate(s) sent, {len(self.expected)} deployed",
        )

    async def after_rollback(self, endpoint: Endpoint, *, wait: float) -> str | None:
        """The leaf served once the node has let go of the deployed one (a reload takes a moment:
        up to ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            result = await self._handshake(endpoint)
            served = _der_fp(result.chain_der[0]) if result.ok and result.chain_der else None
            if served != self.want or time.monotonic() + 0.3 > deadline:
                return served
            await asyncio.sleep(0.3)
