"""http-01 through a node's webroot: the token file is written on the node that serves the name,
through the node's own transport (local or SSH), under the folder its web server publishes
(node option ``webroot``), and always removed afterwards.

``http-01:NODE`` names the node; ``http-01`` alone means every node of the lineage that serves the
name (all of them: behind a load balancer the CA may reach any).
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Sequence

from certfleet.acme.challenges._base import Solver, Task
from certfleet.acme.model import ChallengeType
from certfleet.errors import CertfleetError, InputError
from certfleet.fleet.model import NodeSpec
from certfleet.fleet.transports import open_transport
from certfleet.names import covers

__all__ = ["WEBROOT_OPTION", "WebrootSolver"]

WEBROOT_OPTION = "webroot"
CHALLENGE_DIR = ".well-known/acme-challenge"


def webroot_of(node: NodeSpec) -> str:
    root = str(node.options.get(WEBROOT_OPTION) or "")
    if not root:
        raise InputError(
            f"node {node.name} has no webroot for http-01",
            hint="give the folder its web server publishes: `certfleet node add ... --webroot /var/www/html` "
            "(or `webroot` in the node's options of the fleet file)",
        )
    if not root.startswith("/") or any(c in root for c in "\x00\r\n"):
        raise InputError(f"node {node.name}: the webroot {root[:80]!r} is not an absolute path")
    return root.rstrip("/") or "/"


class WebrootSolver(Solver):
    kind = ChallengeType.HTTP01

    def nodes_for(self, name: str) -> list[NodeSpec]:
        ctx = self.context
        if name.startswith("*."):
            raise InputError(
                f"{name} is a wildcard: only dns-01 can prove it",
                hint=f"add a solver for it: --solver '{name}=dns-01:rfc2136:FILE' (or lexicon, hook)",
            )
        if self.spec:
            node = ctx.nodes.get(self.spec)
            if node is None:
                raise InputError(f"solver http-01:{self.spec}: no node named {self.spec}")
            return [node]
        serving = [
            ctx.nodes[m] for m in ctx.members if m in ctx.nodes and any(covers(n, name) for n in ctx.nodes[m].names)
        ]
        if not serving:
            raise InputError(
                f"no node of the lineage serves {name}, so http-01 has nowhere to put its token",
                hint=f"name the node: --solver '{name}=http-01:NODE', or prove it by dns-01",
            )
        return serving

    def validate(self, names: Sequence[str]) -> None:
        for name in names:
            for node in self.nodes_for(name):
                webroot_of(node)

    def where(self, name: str) -> str:
        nodes = self.nodes_for(name)
        return "http-01 on " + ", ".join(f"{n.name} ({webroot_of(n)})" for n in nodes)

    def _by_node(self, tasks: Sequence[Task]) -> dict[str, tuple[NodeSpec, list[Task]]]:
        out: dict[str, tuple[NodeSpec, list[Task]]] = {}
        for task in tasks:
            for node in self.nodes_for(task.name):
                mine = out.setdefault(node.name, (node, []))[1]
                if all(t.token != task.token for t in mine):  # one file per token and node
                    mine.append(task)
        return out

    async def present(self, tasks: Sequence[Task]) -> None:
        async def one(node: NodeSpec, mine: list[Task]) -> None:
            folder = posixpath.join(webroot_of(node), CHALLENGE_DIR)
            async with open_transport(node.transport, node.options) as transport:
                await transport.mkdir(folder, mode=0o755, parents=True)
                for task in mine:
                    path = posixpath.join(folder, task.token)
                    await transport.remove(path)
                    await transport.write_file(path, task.value.encode("ascii"), mode=0o644)

        await asyncio.gather(*(one(node, mine) for node, mine in self._by_node(tasks).values()))

    async def cleanup(self, tasks: Sequence[Task]) -> list[str]:
        async def one(node: NodeSpec, mine: list[Task]) -> list[str]:
            folder = posixpath.join(webroot_of(node), CHALLENGE_DIR)
            try:
                async with open_transport(node.transport, node.options) as transport:
                    for task in mine:
                        await transport.remove(posixpath.join(folder, task.token))
            except CertfleetError as exc:
                return [f"node {node.name}: could not remove the http-01 token files from {folder}: {exc}"]
            return []

        try:
            groups = self._by_node(tasks)
        except CertfleetError as exc:
            return [str(exc)]
        results = await asyncio.gather(*(one(node, mine) for node, mine in groups.values()))
        return [line for lines in results for line in lines]
