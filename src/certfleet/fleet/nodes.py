"""Nodes: the servers that present a lineage's certificate, checked before the store keeps them,
made members of lineages, and the names a lineage must cover because of them."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from certfleet.errors import InputError
from certfleet.fleet import targets
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.names import normalize_name, normalize_names
from certfleet.store import LineageRecord, Store, check_name

__all__ = [
    "add_to_lineage",
    "check_target_location",
    "lineage_names",
    "make_node",
    "parse_target_spec",
    "required_names",
    "target_kinds",
]

_MAX_COMMAND = 4096
# a target writes a versions/ folder and a live link into its path: never into a system folder
# itself (where they would sit beside what the system needs), never anywhere under the folders
# of programs, libraries, devices and the kernel
_NOT_ITSELF = frozenset(
    ("/", "/etc", "/var", "/var/lib", "/home", "/root", "/opt", "/srv", "/run", "/mnt", "/media", "/usr/local")
) | {"/tmp", "/var/tmp"}  # noqa: S108 (refusing these folders, not using them)
_NOT_UNDER = ("/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys")


def target_kinds() -> tuple[str, ...]:
    """The target kinds a node may name: the deploy engine's registry."""
    return tuple(targets.target_kinds())


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _system_folder(path: str) -> str | None:
    """The system folder ``path`` is, or lies in, when a target may not be there."""
    if path in _NOT_ITSELF:
        return path
    parts = path.split("/")
    if parts[1].startswith("lib"):  # /lib, /lib32, /lib64, /libx32
        return "/" + parts[1]
    if _under(path, "/usr/local"):
        # hand-built servers keep their configuration here (/usr/local/nginx/conf, /usr/local/etc)
        inner = parts[3]
        return f"/usr/local/{inner}" if inner in ("bin", "sbin") or inner.startswith("lib") else None
    return next((folder for folder in _NOT_UNDER if _under(path, folder)), None)


def check_target_location(path: str, *, store_home: Path | None = None, local: bool = True) -> str:
    """``path`` as a target's folder (or file): absolute, normalized, outside the system folders
    and, for a node on this machine (``local``), outside the store's own folder ``store_home``
    and whichever folder its symlinks lead to."""
    if not path.startswith("/"):
        raise InputError(
            f"target path {path[:80]!r} is not absolute",
            hint="give the folder on the node as an absolute path, e.g. /etc/nginx/tls",
        )
    if ".." in path.split("/"):
        raise InputError(f"target path {path[:80]!r} must not hold '..'")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    seen = [normal]
    if local:
        seen.append(os.path.realpath(normal))
    for where in seen:
        system = _system_folder(where)
        if system is not None:
            said = f"{normal[:80]!r}" + (f" (which leads to {where[:80]!r})" if where != normal else "")
            raise InputError(
                f"target path {said} is in the system folder {system}",
                hint="give a folder of its own, e.g. /etc/nginx/certfleet",
            )
        if local and store_home is not None:
            home = os.path.realpath(store_home)
            if _under(where, home) or _under(where, str(store_home)):
                raise InputError(
                    f"target path {normal[:80]!r} is inside the certfleet store ({store_home})",
                    hint="deploy into the server's own folder, e.g. /etc/nginx/certfleet",
                )
    return normal


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
    store_home: Path | None = None,
) -> NodeSpec:
    """A checked node: names normalized (A-labels, lowercase), targets known and where a target
    may be (:func:`check_target_location`; ``store_home`` is the store's folder, which a node on
    this machine never writes into), transport and probe read."""
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
    local = checked_transport == "local"
    for target in specs:
        folder = target.options.get("dir") if target.kind == "command" else target.path
        if isinstance(folder, str):
            check_target_location(folder, store_home=store_home, local=local)
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
