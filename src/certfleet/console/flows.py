"""The steps behind the forms: node editing, CSR generation, import (shown before saved), deploy.

Each step calls the same library functions as the CLI; this module only turns form fields into
their arguments and keeps what a browser flow must hold between two requests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.datastructures import FormData

from certfleet.console.accounts import Actor
from certfleet.errors import InputError
from certfleet.fleet.spec import NodeSpec, TargetSpec

if TYPE_CHECKING:
    from certfleet.console.service import Console

__all__ = [
    "NodeFormValues",
    "node_form_context",
    "node_form_values",
    "pem_text",
    "save_node",
    "target_kinds",
]

_FALLBACK_KINDS = ("pem", "nginx", "apache", "haproxy", "pkcs12", "k8s-secret", "command")
_SPLIT = re.compile(r"[\s,]+")


def pem_text(*certs: x509.Certificate) -> str:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode("ascii")


def target_kinds() -> tuple[str, ...]:
    """The deploy engine's registered target kinds."""
    try:
        from certfleet.fleet import targets
    except ImportError:
        return _FALLBACK_KINDS
    kinds = getattr(targets, "kinds", None)
    if callable(kinds):
        return tuple(kinds())
    registry = getattr(targets, "REGISTRY", None) or getattr(targets, "TARGETS", None)
    return tuple(sorted(registry)) if isinstance(registry, dict) else _FALLBACK_KINDS


@dataclass(frozen=True, slots=True)
class NodeFormValues:
    name: str
    names: str
    targets: str
    transport: str
    test_cmd: str
    reload_cmd: str
    probe: str
    lineages: tuple[str, ...]
    new_lineage: str
    original: str

    @classmethod
    def of(cls, spec: NodeSpec | None, lineages: tuple[str, ...] = ()) -> NodeFormValues:
        if spec is None:
            return cls("", "", "", "local", "", "", "", lineages, "", "")
        return cls(
            spec.name,
            "\n".join(spec.names),
            "\n".join(f"{t.kind}:{t.path}" for t in spec.targets),
            spec.transport,
            spec.test_cmd or "",
            spec.reload_cmd or "",
            spec.probe or "",
            lineages,
            "",
            spec.name,
        )


def node_form_values(form: FormData) -> NodeFormValues:
    def text(name: str, limit: int = 4000) -> str:
        value = form.get(name)
        if not isinstance(value, str):
            return ""
        if len(value) > limit:
            raise InputError(f"the field {name} is longer than {limit} characters")
        return value.strip()

    lineages = tuple(v for v in form.getlist("lineages") if isinstance(v, str) and v)[:50]
    return NodeFormValues(
        text("name", 64),
        text("names", 20_000),
        text("targets", 20_000),
        text("transport", 512) or "local",
        text("test_cmd"),
        text("reload_cmd"),
        text("probe", 300),
        lineages,
        text("new_lineage", 64),
        text("original", 64),
    )


def _targets(text: str) -> tuple[TargetSpec, ...]:
    out = []
    kinds = target_kinds()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, colon, path = line.partition(":")
        kind = kind.strip().lower()
        if not colon or not path.strip():
            raise InputError(f"target {line[:80]!r} is not KIND:PATH", hint="e.g. nginx:/etc/nginx/certfleet")
        if kind not in kinds:
            raise InputError(f"unknown target kind {kind[:32]!r}", hint=f"one of {', '.join(kinds)}")
        out.append(TargetSpec(kind, path.strip()))
    return tuple(out)


def build_node(values: NodeFormValues) -> NodeSpec:
    from certfleet.names import normalize_name

    names = tuple(dict.fromkeys(normalize_name(n) for n in _SPLIT.split(values.names) if n))
    if values.probe:
        from certfleet.check import parse_target

        parse_target(values.probe)  # refuses what is not host:port, with the reason
    return NodeSpec(
        name=values.name,
        names=names,
        targets=_targets(values.targets),
        transport=values.transport or "local",
        test_cmd=values.test_cmd or None,
        reload_cmd=values.reload_cmd or None,
        probe=values.probe or None,
    )


def save_node(console: Console, actor: Actor, values: NodeFormValues, original: str) -> NodeSpec:
    """Create or change a node and set which lineages it belongs to."""
    spec = build_node(values)
    store = console.as_actor(actor)
    if original and original != spec.name:
        raise InputError("a node keeps its name", hint="add a new node and remove the old one")
    if not original and spec.name in {n.name for n in store.nodes()}:
        raise InputError(f"node {spec.name} exists", hint="edit it from the nodes page")
    store.put_node(spec)
    wanted = set(values.lineages)
    if values.new_lineage:
        wanted.add(values.new_lineage)
    current = set(store.node_lineages(spec.name))
    for lineage in sorted(wanted - current):
        store.put_lineage(lineage, add_nodes=[spec.name])
    for lineage in sorted(current - wanted):
        store.detach(lineage, spec.name)
    return spec


async def node_form_context(
    console: Console, spec: NodeSpec | None, *, values: NodeFormValues | None = None
) -> dict[str, Any]:
    lineages = [r.name for r in await asyncio.to_thread(console.store.lineages)]
    if values is None:
        member = tuple(await asyncio.to_thread(console.store.node_lineages, spec.name)) if spec else ()
        values = NodeFormValues.of(spec, member)
    return {
        "title": f"Node {values.name}" if values.original else "New node",
        "here": "nodes",
        "v": values,
        "lineages": lineages,
        "kinds": target_kinds(),
        "editing": bool(values.original),
    }


def utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
