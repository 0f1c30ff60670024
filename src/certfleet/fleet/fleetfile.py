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
    zone = "dmz"

    [[nodes.main.targets]]
    kind = "nginx"
    path = "/etc/nginx/tls/web"

Each node and lineage in the file is set to what the file says. A field the file leaves out is
left as the store has it (a new node or lineage takes the default), so an older file never
clears what was added since; clearing takes the key, present and empty (``subject = ""``,
``names = []``, ``test = ""``, ``zone = ""``). A node's ``zone`` says which workers deploy it on a
PostgreSQL store (``docs/workers.md``). Nodes and lineages the file does not name are left alone.
:func:`apply` returns what changes field by field, and with ``dry_run`` changes nothing.
:func:`dumps` writes the store's fleet in the same form, so ``apply`` of what ``export-fleet``
wrote changes nothing.
"""

from __future__ import annotations

import dataclasses
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
from certfleet.fleet.nodes import add_to_lineage, check_target_location, make_node
from certfleet.keys import parse_key_spec
from certfleet.names import normalize_name
from certfleet.store import DEFAULT_KEY_SPEC, LineageRecord, Store, check_name, check_zone

__all__ = [
    "FLEET_VERSION",
    "MAX_FLEET_BYTES",
    "ApplyResult",
    "Change",
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
_NODE_KEYS = {"names", "targets", "transport", "test", "reload", "probe", "options", "zone"}
_TARGET_KEYS = {"kind", "path", "options"}
_LINEAGE_KEYS = {"key", "subject", "names", "nodes"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class LineageSpec:
    """A lineage as the fleet file declares it. None: the file does not mention the field (the
    store's value stays); ``subject=""``: the file clears it."""

    name: str
    key_spec: str | None = None
    subject: str | None = None
    names: tuple[str, ...] | None = None
    nodes: tuple[str, ...] | None = None


# a node's fields as the fleet file spells them, and as NodeSpec names them
_NODE_FIELDS = {
    "names": "names",
    "targets": "targets",
    "transport": "transport",
    "test": "test_cmd",
    "reload": "reload_cmd",
    "probe": "probe",
    "options": "options",
}


@dataclass(frozen=True, slots=True)
class Fleet:
    nodes: tuple[NodeSpec, ...] = ()
    lineages: tuple[LineageSpec, ...] = ()
    # by node name, the fleet-file keys its table gives; a node not listed gives every field
    node_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # by node name, its zone (None: in none) where the file gives one; a node not listed keeps its own
    zones: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """One field of a node or lineage: what the store has, and what it gets."""

    field: str
    before: Any
    after: Any

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "from": self.before, "to": self.after}


@dataclass(frozen=True, slots=True)
class ApplyResult:
    created: tuple[str, ...] = ()  # "node main", "lineage web"
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    changes: Mapping[str, tuple[Change, ...]] = field(default_factory=dict)  # by entry: each field that changes
    dry_run: bool = False  # nothing was written: this is what apply would do

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": list(self.created),
            "updated": list(self.updated),
            "unchanged": list(self.unchanged),
            "changed": self.changed,
            "dry_run": self.dry_run,
            "changes": {label: [c.to_dict() for c in changes] for label, changes in self.changes.items()},
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


# stand-ins for the names and targets a node's table leaves out, so that what it does give is
# checked now; the store's own names and targets take their place when the file is applied
_SOME_NAME = "placeholder.invalid"
_SOME_TARGET = TargetSpec("pem", "/placeholder")


def _zone(table: Mapping[str, Any], where: str) -> str | None:
    try:
        return check_zone(_text(table, "zone", where) or None)
    except InputError as exc:
        raise _at(where, exc) from None


def _node(name: str, value: Any) -> tuple[NodeSpec, frozenset[str], str | None]:
    where = _where("nodes", name)
    table = _table(value, where)
    _known(table, _NODE_KEYS, where)
    given = frozenset(table)
    targets = table.get("targets", [])
    if not isinstance(targets, list):
        raise FormatError(f"{where}: targets must be a list")
    names = _texts(table, "names", where)
    try:
        spec = make_node(
            name,
            names if "names" in given else [_SOME_NAME],
            [_target(t, where) for t in targets] if "targets" in given else [_SOME_TARGET],
            transport=_text(table, "transport", where),
            test_cmd=_text(table, "test", where),
            reload_cmd=_text(table, "reload", where),
            probe=_text(table, "probe", where),
            options=_table(table.get("options", {}), f"{where} options"),
        )
    except InputError as exc:
        raise _at(where, exc) from None
    if "names" not in given:
        spec = dataclasses.replace(spec, names=())
    if "targets" not in given:
        spec = dataclasses.replace(spec, targets=())
    return spec, given, _zone(table, where)


def _lineage(name: str, value: Any) -> LineageSpec:
    where = _where("lineages", name)
    table = _table(value, where)
    _known(table, _LINEAGE_KEYS, where)
    try:
        check_name("lineage", name)
        key = _text(table, "key", where)
        subject = _text(table, "subject", where)
        names = _texts(table, "names", where)
        nodes = _texts(table, "nodes", where)
        return LineageSpec(
            name=name,
            # an empty key is the default policy; a key left out keeps the store's
            key_spec=(parse_key_spec(key).value if key else DEFAULT_KEY_SPEC) if "key" in table else None,
            subject=(str(Subject.parse(subject)) if subject else "") if "subject" in table else None,
            names=tuple(dict.fromkeys(normalize_name(n) for n in names)) if "names" in table else None,
            nodes=tuple(sorted(set(nodes))) if "nodes" in table else None,
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
    read = [_node(name, value) for name, value in nodes.items()]
    return Fleet(
        nodes=tuple(spec for spec, _, _ in read),
        lineages=tuple(_lineage(name, value) for name, value in lineages.items()),
        node_keys={spec.name: given for spec, given, _ in read},
        zones={spec.name: zone for spec, given, zone in read if "zone" in given},
    )


# -- applying and exporting --------------------------------------------------------------------


def _merged_node(node: NodeSpec, given: frozenset[str] | None, before: NodeSpec | None) -> NodeSpec:
    """What the store gets for ``node``: the fields the file gives, the store's for the others."""
    where = _where("nodes", node.name)
    if given is None:
        return node
    if before is None:
        missing = [k for k in ("names", "targets") if k not in given]
        if missing:
            raise InputError(f"{where}: a new node needs {' and '.join(missing)}")
        return node
    kept = {attr: getattr(before, attr) for key, attr in _NODE_FIELDS.items() if key not in given}
    merged = dataclasses.replace(node, **kept)
    try:  # the fields together (SSH options want an SSH transport, whichever side they came from)
        return make_node(
            merged.name,
            merged.names,
            merged.targets,
            transport=merged.transport,
            test_cmd=merged.test_cmd,
            reload_cmd=merged.reload_cmd,
            probe=merged.probe,
            options=dict(merged.options),
        )
    except InputError as exc:
        raise _at(where, exc) from None


def _merged_lineage(lin: LineageSpec, before: LineageRecord | None) -> LineageSpec:
    base = _lineage_of(before) if before is not None else LineageSpec(lin.name, DEFAULT_KEY_SPEC, None, (), ())
    return LineageSpec(
        lin.name,
        key_spec=lin.key_spec if lin.key_spec is not None else base.key_spec,
        subject=(lin.subject or None) if lin.subject is not None else base.subject,
        names=lin.names if lin.names is not None else base.names,
        nodes=lin.nodes if lin.nodes is not None else base.nodes,
    )


def _changes(before: dict[str, Any] | None, after: dict[str, Any]) -> tuple[Change, ...]:
    return tuple(
        Change(key, before.get(key) if before is not None else None, value)
        for key, value in after.items()
        if before is None or before.get(key) != value
    )


def _lineage_fields(lin: LineageSpec) -> dict[str, Any]:
    return {"key": lin.key_spec, "subject": lin.subject, "names": list(lin.names or ()), "nodes": list(lin.nodes or ())}


def _node_fields(node: NodeSpec, zone: str | None) -> dict[str, Any]:
    out = node.to_dict()
    del out["name"]
    if zone is not None:  # a node of no zone shows no zone field
        out["zone"] = zone
    return out


def apply(store: Store, fleet: Fleet, *, dry_run: bool = False) -> ApplyResult:
    """Make the store's nodes and lineages what ``fleet`` says (fields it leaves out stay as they
    are); the rest is left alone. Every entry is checked before anything is written; with
    ``dry_run`` nothing is, and the result says what would change."""
    existing_nodes = {n.name: n for n in store.nodes()}
    zones_before = store.node_zones()
    zones = {n.name: fleet.zones.get(n.name, zones_before.get(n.name)) for n in fleet.nodes}
    known = set(existing_nodes) | {n.name for n in fleet.nodes}
    for lin in fleet.lineages:
        unknown = [n for n in lin.nodes or () if n not in known]
        if unknown:
            raise InputError(
                f"lineage {lin.name} names unknown node(s): {', '.join(unknown)}",
                hint="declare them under [nodes.NAME] in the fleet file, or add them with `certfleet node add`",
            )
    existing_lineages = {r.name: r for r in store.lineages()}
    nodes = [_merged_node(n, fleet.node_keys.get(n.name), existing_nodes.get(n.name)) for n in fleet.nodes]
    lineages = [_merged_lineage(lin, existing_lineages.get(lin.name)) for lin in fleet.lineages]
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    for node in nodes:  # checked before anything is written, dry run or not
        _check_locations(node, store.home)
    changes: dict[str, tuple[Change, ...]] = {}
    for node in nodes:
        label, before = f"node {node.name}", existing_nodes.get(node.name)
        old = _node_fields(before, zones_before.get(node.name)) if before is not None else None
        new = _node_fields(node, zones[node.name])
        if old is not None and "zone" in old and "zone" not in new:
            new["zone"] = None  # the file took the node out of its zone
        diff = _changes(old, new)
        (unchanged if not diff else created if before is None else updated).append(label)
        if diff:
            changes[label] = diff
    for lin in lineages:
        label, record = f"lineage {lin.name}", existing_lineages.get(lin.name)
        diff = _changes(_lineage_fields(_lineage_of(record)) if record is not None else None, _lineage_fields(lin))
        (unchanged if not diff else created if record is None else updated).append(label)
        if diff:
            changes[label] = diff
    if not dry_run:
        for node in nodes:
            diff = changes.get(f"node {node.name}", ())
            if any(c.field != "zone" for c in diff):
                store.put_node(node)
            if any(c.field == "zone" for c in diff):
                store.set_node_zone(node.name, zones[node.name])
        for lin in lineages:
            if f"lineage {lin.name}" in changes:
                store.put_lineage(
                    lin.name, key_spec=lin.key_spec, subject=lin.subject or "", names=list(lin.names or ())
                )
                add_to_lineage(store, lin.name, list(lin.nodes or ()), only=True)
    return ApplyResult(tuple(created), tuple(updated), tuple(unchanged), changes, dry_run=dry_run)


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
    """The store's nodes (with their zones) and lineages, sorted by name."""
    return Fleet(
        nodes=tuple(store.nodes()),
        lineages=tuple(_lineage_of(r) for r in store.lineages()),
        zones=store.node_zones(),
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
        if lin.key_spec is not None:
            lines.append(f"key = {_value(lin.key_spec)}")
        if lin.subject:
            lines.append(f"subject = {_value(lin.subject)}")
        if lin.names:
            lines.append(f"names = {_value(list(lin.names))}")
        if lin.nodes is not None:
            lines.append(f"nodes = {_value(list(lin.nodes))}")
        lines.append("")
    for node in fleet.nodes:
        lines.append(f"[nodes.{_key(node.name)}]")
        lines.append(f"names = {_value(list(node.names))}")
        if node.transport != "local":
            lines.append(f"transport = {_value(node.transport)}")
        if zone := fleet.zones.get(node.name):
            lines.append(f"zone = {_value(zone)}")
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
