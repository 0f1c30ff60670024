"""The fleet file: nodes and lineages declared in TOML, applied to the store and written back out.

    version = 1

    [lineages.web]
    key = "rsa:2048"
    subject = "O=Example,CN=mc.example.com"
    nodes = ["gw1", "main"]

    [nodes.main]
    names = ["mc.example.com", "example.com"]
    test = "nginx -t"
    reload = "nginx -s reload"
    probe = "127.0.0.1:443"

    [[nodes.main.targets]]
    kind = "nginx"
    path = "/etc/nginx/tls/web"

Each node and lineage in the file is set to exactly what the file says (a field left out takes
its default); nodes and lineages the file does not name are left alone. :func:`dumps` writes the
store's fleet in the same form, so ``apply`` of what ``export-fleet`` wrote changes nothing.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certfleet.csr import Subject
from certfleet.errors import FormatError, InputError, LimitError
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.fleet.nodes import check_target_location, make_node
from certfleet.keys import parse_key_spec
from certfleet.names import normalize_name
from certfleet.store import DEFAULT_KEY_SPEC, LineageRecord, Store, check_name

__all__ = [
    "FLEET_VERSION",
    "MAX_FLEET_BYTES",
    "ApplyResult",
    "Fleet",
    "LineageSpec",
    "apply",
    "dumps",
    "export_fleet",
    "loads",
]

FLEET_VERSION = 1
MAX_FLEET_BYTES = 1024 * 1024
MAX_ENTRIES = 1000  # nodes, and lineages, in one file
_NODE_KEYS = {"names", "targets", "transport", "test", "reload", "probe", "options"}
_TARGET_KEYS = {"kind", "path", "options"}
_LINEAGE_KEYS = {"key", "subject", "names", "nodes"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class LineageSpec:
    """A lineage as the fleet file declares it."""

    name: str
    key_spec: str = DEFAULT_KEY_SPEC
    subject: str | None = None
    names: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fleet:
    nodes: tuple[NodeSpec, ...] = ()
    lineages: tuple[LineageSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class ApplyResult:
    created: tuple[str, ...] = ()  # "node main", "lineage web"
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    changes: Mapping[str, Any] = field(default_factory=dict)  # what changed, by entry

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": list(self.created),
            "updated": list(self.updated),
            "unchanged": list(self.unchanged),
            "changed": self.changed,
        }


# -- reading -----------------------------------------------------------------------------------


def _where(kind: str, name: str) -> str:
    # no brackets: the CLI prints messages through Rich, which would read [nodes.x] as markup
    return f"{kind}.{_key(name)}"


def _at(where: str, exc: InputError) -> InputError:
    """The same error, its message prefixed with where in the file it was found."""
    if exc.message.startswith(f"{where}:"):
        return exc
    return type(exc)(f"{where}: {exc.message}", hint=exc.hint, source=exc.source)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be a table")
    return value


def _known(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise FormatError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            hint=f"the keys allowed here are {', '.join(sorted(allowed))}",
        )


def _text(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise FormatError(f"{where}: {key} must be a string")
    return value


def _texts(table: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FormatError(f"{where}: {key} must be a list of strings")
    if len(value) > MAX_ENTRIES:
        raise LimitError(f"{where}: more than {MAX_ENTRIES} {key}")
    return value


def _target(value: Any, where: str) -> str | TargetSpec:
    if isinstance(value, str):
        return value
    table = _table(value, f"{where} target")
    _known(table, _TARGET_KEYS, f"{where} target")
    kind, path = _text(table, "kind", where), _text(table, "path", where)
    if not kind or not path:
        raise FormatError(f"{where}: every target needs a kind and a path")
    return TargetSpec(kind=kind, path=path, options=_table(table.get("options", {}), f"{where} target options"))


def _node(name: str, value: Any) -> NodeSpec:
    where = _where("nodes", name)
    table = _table(value, where)
    _known(table, _NODE_KEYS, where)
    targets = table.get("targets", [])
    if not isinstance(targets, list):
        raise FormatError(f"{where}: targets must be a list")
    try:
        return make_node(
            name,
            _texts(table, "names", where),
            [_target(t, where) for t in targets],
            transport=_text(table, "transport", where),
            test_cmd=_text(table, "test", where),
            reload_cmd=_text(table, "reload", where),
            probe=_text(table, "probe", where),
            options=_table(table.get("options", {}), f"{where} options"),
        )
    except InputError as exc:
        raise _at(where, exc) from None


def _lineage(name: str, value: Any) -> LineageSpec:
    where = _where("lineages", name)
    table = _table(value, where)
    _known(table, _LINEAGE_KEYS, where)
    try:
        check_name("lineage", name)
        key = _text(table, "key", where)
        subject = _text(table, "subject", where)
        parsed = str(Subject.parse(subject)) if subject else ""
        return LineageSpec(
            name=name,
            key_spec=parse_key_spec(key).value if key else DEFAULT_KEY_SPEC,
            subject=parsed or None,
            names=tuple(dict.fromkeys(normalize_name(n) for n in _texts(table, "names", where))),
            nodes=tuple(sorted(set(_texts(table, "nodes", where)))),
        )
    except InputError as exc:
        raise _at(where, exc) from None


def loads(text: str) -> Fleet:
    """Read a fleet file; every value is checked before anything is applied."""
    if len(text.encode()) > MAX_FLEET_BYTES:
        raise LimitError(f"a fleet file larger than {MAX_FLEET_BYTES // 1024} KiB is not a fleet file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FormatError(f"not valid TOML: {exc}") from exc
    _known(data, {"version", "nodes", "lineages"}, "the fleet file")
    version = data.get("version", FLEET_VERSION)
    if version != FLEET_VERSION:
        raise FormatError(f"fleet file version {version!r} is not {FLEET_VERSION}", hint="write it with this certfleet")
    nodes = _table(data.get("nodes", {}), "nodes")
    lineages = _table(data.get("lineages", {}), "lineages")
    if len(nodes) > MAX_ENTRIES or len(lineages) > MAX_ENTRIES:
        raise LimitError(f"more than {MAX_ENTRIES} nodes or lineages in one fleet file")
    return Fleet(
        nodes=tuple(_node(name, value) for name, value in nodes.items()),
        lineages=tuple(_lineage(name, value) for name, value in lineages.items()),
    )


# -- applying and exporting --------------------------------------------------------------------


def apply(store: Store, fleet: Fleet) -> ApplyResult:
    """Make the store's nodes and lineages what ``fleet`` says; the rest is left alone."""
    existing_nodes = {n.name: n for n in store.nodes()}
    known = set(existing_nodes) | {n.name for n in fleet.nodes}
    for lin in fleet.lineages:
        unknown = [n for n in lin.nodes if n not in known]
        if unknown:
            raise InputError(
                f"lineage {lin.name} names unknown node(s): {', '.join(unknown)}",
                hint="declare them under [nodes.NAME] in the fleet file, or add them with `certfleet node add`",
            )
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    for node in fleet.nodes:
        _check_locations(node, store.home)
    for node in fleet.nodes:
        label = f"node {node.name}"
        if store.put_node(node):
            (updated if node.name in existing_nodes else created).append(label)
        else:
            unchanged.append(label)
    existing_lineages = {r.name: r for r in store.lineages()}
    for lin in fleet.lineages:
        label = f"lineage {lin.name}"
        before = existing_lineages.get(lin.name)
        after = store.put_lineage(
            lin.name,
            key_spec=lin.key_spec,
            subject=lin.subject or "",
            names=list(lin.names),
            nodes=list(lin.nodes),
        )
        if before is None:
            created.append(label)
        elif _lineage_of(before) != _lineage_of(after):
            updated.append(label)
        else:
            unchanged.append(label)
    return ApplyResult(tuple(created), tuple(updated), tuple(unchanged))


def _check_locations(node: NodeSpec, store_home: Path) -> None:
    # read without a store, a fleet file's targets are checked again against the store's folder
    local = node.transport == "local"
    for target in node.targets:
        folder = target.options.get("dir") if target.kind == "command" else target.path
        if isinstance(folder, str):
            try:
                check_target_location(folder, store_home=store_home, local=local)
            except InputError as exc:
                raise _at(_where("nodes", node.name), exc) from None


def _lineage_of(record: LineageRecord) -> LineageSpec:
    return LineageSpec(record.name, record.key_spec, record.subject, tuple(record.names), tuple(record.nodes))


def export_fleet(store: Store) -> Fleet:
    """The store's nodes and lineages, sorted by name."""
    return Fleet(
        nodes=tuple(store.nodes()),
        lineages=tuple(_lineage_of(r) for r in store.lineages()),
    )


# -- writing TOML ------------------------------------------------------------------------------

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(value: str) -> str:
    out = []
    for c in value:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"a fleet file cannot hold a {type(value).__name__}")


def dumps(fleet: Fleet) -> str:
    """The fleet as TOML that :func:`loads` reads back to the same values."""
    lines = ["# certfleet fleet file: `certfleet apply` reads it, `certfleet export-fleet` writes it", ""]
    lines += [f"version = {FLEET_VERSION}", ""]
    for lin in fleet.lineages:
        lines.append(f"[lineages.{_key(lin.name)}]")
        lines.append(f"key = {_value(lin.key_spec)}")
        if lin.subject:
            lines.append(f"subject = {_value(lin.subject)}")
        if lin.names:
            lines.append(f"names = {_value(list(lin.names))}")
        lines.append(f"nodes = {_value(list(lin.nodes))}")
        lines.append("")
    for node in fleet.nodes:
        lines.append(f"[nodes.{_key(node.name)}]")
        lines.append(f"names = {_value(list(node.names))}")
        if node.transport != "local":
            lines.append(f"transport = {_value(node.transport)}")
        for key, cmd in (("test", node.test_cmd), ("reload", node.reload_cmd), ("probe", node.probe)):
            if cmd is not None:
                lines.append(f"{key} = {_value(cmd)}")
        if node.options:
            lines.append(f"options = {_value(node.options)}")
        lines.append("")
        for target in node.targets:
            lines.append(f"[[nodes.{_key(node.name)}.targets]]")
            lines.append(f"kind = {_value(target.kind)}")
            lines.append(f"path = {_value(target.path)}")
            if target.options:
                lines.append(f"options = {_value(target.options)}")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
