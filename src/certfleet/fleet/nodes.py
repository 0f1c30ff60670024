"""Nodes: the servers that present a lineage's certificate, checked before the store keeps them,
made members of lineages, and the names a lineage must cover because of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from certfleet.errors import InputError
from certfleet.fleet import targets
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.names import normalize_name, normalize_names
from certfleet.store import LineageRecord, Store, check_name

__all__ = ["add_to_lineage", "lineage_names", "make_node", "parse_target_spec", "required_names", "target_kinds"]

_MAX_COMMAND = 4096


def target_kinds() -> tuple[str, ...]:
    """The target kinds a node may name: the deploy engine's registry."""
    return tuple(targets.target_kinds())


def parse_target_spec(text: str) -> TargetSpec:
    """``KIND:PATH``: ``nginx:/etc/nginx/tls``, ``command:/usr/local/bin/install-cert``."""
    kind, colon, path = text.strip().partition(":")
    if not colon or not path.strip():
        raise InputError(
            f"target {text[:80]!r} is not KIND:PATH",
            hint=f"e.g. nginx:/etc/nginx/tls; kinds: {', '.join(target_kinds())}",
        )
    return _check_target(TargetSpec(kind.strip().lower(), path.strip()))


def _check_target(target: TargetSpec) -> TargetSpec:
    kinds = target_kinds()
    if target.kind not in kinds:
        raise InputError(f"unknown target kind {target.kind[:40]!r}", hint=f"use one of {', '.join(kinds)}")
    _check_command("the target path", target.path)
    if target.kind != "command" and not target.path.startswith("/"):
        raise InputError(
            f"target path {target.path[:80]!r} is not absolute",
            hint="give the folder on the node as an absolute path, e.g. /etc/nginx/tls",
        )
    targets.make_target(target)  # the target's own checks: its path, its options
    return target


def _check_command(what: str, value: str) -> None:
    if len(value) > _MAX_COMMAND or any(c in value for c in "\x00\r\n"):
        raise InputError(f"{what} is longer than {_MAX_COMMAND} characters or holds a line break")


def _check_transport(text: str) -> str:
    value = text.strip()
    if value == "local":
        return value
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as exc:
        raise InputError(f"transport {value[:80]!r}: {exc}", hint="use local or ssh://user@host[:port]") from exc
    if url.scheme != "ssh" or not url.hostname or url.path not in ("", "/") or url.query or url.fragment:
        raise InputError(f"transport {value[:80]!r} is not local or ssh://user@host[:port]")
    if url.password is not None:
        raise InputError("a transport URL carries no password", hint="use an SSH key or the SSH agent")
    normalize_name(url.hostname)
    user = f"{url.username}@" if url.username else ""
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"ssh://{user}{host}" + (f":{port}" if port is not None else "")


def _no_ssh_options(node: str, options: dict[str, Any]) -> None:
    from certfleet.fleet.transports.ssh import SSH_OPTIONS

    given = sorted(set(options) & SSH_OPTIONS)
    if given:
        raise InputError(
            f"node {node}: {', '.join(given)} apply only to a node reached over SSH",
            hint="give its transport as ssh://user@host[:port]",
        )


def _check_probe(text: str) -> str:
    from certfleet.endpoint import parse_endpoint

    target = parse_endpoint(text)
    return str(target)


def make_node(
    name: str,
    names: Sequence[str],
    targets: Sequence[str | TargetSpec],
    *,
    transport: str | None = None,
    test_cmd: str | None = None,
    reload_cmd: str | None = None,
    probe: str | None = None,
    options: dict[str, Any] | None = None,
) -> NodeSpec:
    """A checked node: names normalized (A-labels, lowercase), targets known, transport and probe read."""
    check_name("node", name)
    normal = normalize_names(names)
    if not normal:
        raise InputError(f"node {name} has no names", hint="give each DNS name the node serves with --name")
    specs = tuple(parse_target_spec(t) if isinstance(t, str) else _check_target(t) for t in targets)
    if not specs:
        raise InputError(f"node {name} has no targets", hint="give --target KIND:PATH, e.g. nginx:/etc/nginx/tls")
    commands: dict[str, str | None] = {}
    for what, value in (("test", test_cmd), ("reload", reload_cmd)):
        value = value.strip() if value is not None else None
        if value:
            _check_command(f"the {what} command", value)
        commands[what] = value or None
    checked_transport = _check_transport(transport or "local")
    if options and checked_transport == "local":
        _no_ssh_options(name, options)
    return NodeSpec(
        name=name,
        names=tuple(normal),
        targets=specs,
        transport=checked_transport,
        test_cmd=commands["test"],
        reload_cmd=commands["reload"],
        probe=_check_probe(probe) if probe else None,
        options=dict(options or {}),
    )


def add_to_lineage(store: Store, lineage: str, nodes: Sequence[str], *, only: bool = False) -> LineageRecord:
    """Make ``nodes`` members of ``lineage``, which is created (with the default key policy) when
    new; with ``only``, they become its only members. Every node must exist already. The CLI's
    ``node add --lineage``, the fleet file and the console's node form all come here."""
    check_name("lineage", lineage)
    wanted = list(dict.fromkeys(nodes))
    known = {n.name for n in store.nodes()}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InputError(
            f"lineage {lineage} names unknown node(s): {', '.join(unknown)}",
            hint="add each node first: `certfleet node add NAME --name DNS --target KIND:PATH`",
        )
    if only:
        return store.put_lineage(lineage, nodes=wanted)
    return store.put_lineage(lineage, add_nodes=wanted)


def required_names(record: LineageRecord, nodes: Sequence[NodeSpec]) -> dict[str, tuple[str, ...]]:
    """The names the lineage must cover, by who needs them: each node, and ``""`` for the
    lineage's own extra names."""
    out: dict[str, tuple[str, ...]] = {}
    if record.names:
        out[""] = tuple(record.names)
    for node in nodes:
        out[node.name] = node.names
    return out


def lineage_names(record: LineageRecord, nodes: Sequence[NodeSpec]) -> tuple[str, ...]:
    """Every name the lineage must cover, each once: its own names first, then each node's."""
    return tuple(dict.fromkeys(n for names in required_names(record, nodes).values() for n in names))
