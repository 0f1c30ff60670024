"""What the forms send, read into the services' values; and what the forms show, prefilled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import FormData, UploadFile

from certfleet.console.core import Console
from certfleet.console.deps import form_text
from certfleet.console.roles import Role
from certfleet.console.services.audit import Actor
from certfleet.console.services.fleet import CsrValues, NodeValues
from certfleet.errors import InputError, LimitError
from certfleet.fleet.model import NodeSpec
from certfleet.fleet.nodes import lineage_names, target_kinds

__all__ = [
    "SUBJECT_FIELDS",
    "csr_form_context",
    "csr_values",
    "node_form_context",
    "node_now",
    "node_values",
    "read_uploads",
]

# no organizational unit: public CAs refuse it since September 2022 (CA/B Forum ballot SC47)
SUBJECT_FIELDS = (
    ("country", "Country (2 letters)", 2),
    ("state", "State or province", 128),
    ("locality", "City", 128),
    ("organization", "Organization", 64),
)


def _field(form: FormData, name: str, limit: int = 4000) -> str:
    return form_text(form, name, limit).strip()


def _chosen(form: FormData, name: str, limit: int) -> tuple[str, ...]:
    return tuple(v for v in form.getlist(name) if isinstance(v, str) and v)[:limit]


def _version(form: FormData) -> int | None:
    text = _field(form, "version", 12)
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


def node_values(form: FormData) -> NodeValues:
    return NodeValues(
        name=_field(form, "name", 64),
        names=_field(form, "names", 20_000),
        targets=_field(form, "targets", 20_000),
        transport=_field(form, "transport", 512) or "local",
        test_cmd=_field(form, "test_cmd"),
        reload_cmd=_field(form, "reload_cmd"),
        probe=_field(form, "probe", 300),
        known_hosts=_field(form, "known_hosts"),
        identity=_field(form, "identity"),
        webroot=_field(form, "webroot", 4000),
        lineages=_chosen(form, "lineages", 50),
        new_lineage=_field(form, "new_lineage", 64),
        original=_field(form, "original", 64),
        version=_version(form),
    )


def node_form_context(
    console: Console, actor: Actor, spec: NodeSpec | None, *, values: NodeValues | None = None
) -> dict[str, Any]:
    """The node form: what an operator may change, and (for an admin) what the node runs, with
    the password asked again to change that."""
    lineages = [r.name for r in console.fleet.visible_lineages(actor)]
    if values is None:
        member = tuple(console.fleet.node_lineages(spec.name)) if spec else ()
        version = console.fleet.node_version(spec.name) if spec else None
        values = NodeValues.of(spec, member, version)
    return {
        "title": f"Node {values.name}" if values.original else "New node",
        "here": "nodes",
        "v": values,
        "lineages": lineages,
        "kinds": target_kinds(),
        "editing": bool(values.original),
        "admin": actor.may(Role.ADMIN),
        "conflict": False,
        "current": None,
    }


def node_now(console: Console, name: str) -> NodeValues | None:
    """The node as it is saved now (shown beside a change refused because it came too late)."""
    if not name:
        return None
    try:
        spec = console.fleet.node(name)
    except InputError:
        return None
    return NodeValues.of(spec, tuple(console.fleet.node_lineages(name)), console.fleet.node_version(name))


def csr_values(form: FormData) -> CsrValues:
    return CsrValues(
        lineage=_field(form, "lineage", 64),
        nodes=_chosen(form, "nodes", 100),
        names=_field(form, "names", 20_000),
        key=_field(form, "key", 20) or "ec:p256",
        subject=tuple((name, _field(form, name, 256)) for name, _, _ in SUBJECT_FIELDS),
        wildcards=_field(form, "wildcards", 10) == "on",
        common_name=_field(form, "common_name", 300),
    )


def csr_form_context(
    console: Console, actor: Actor, lineage: str | None, *, values: CsrValues | None = None
) -> dict[str, Any]:
    """The form, prefilled from the lineage (or from ``values``, a form sent back): its nodes and
    their names, the common name chosen among them, its key and subject, and the two ways to cover
    the names (each name, or wildcards where names share a parent). Only the lineages and nodes
    ``actor`` may see."""
    from certfleet.csr import Subject
    from certfleet.keys import KeySpec
    from certfleet.names import plan

    records = console.fleet.visible_lineages(actor)
    nodes = console.fleet.visible_nodes(actor)
    record = next((r for r in records if r.name == lineage), None)
    member = set(values.nodes) if values is not None else set(record.nodes) if record else set()
    required = list(lineage_names(record, [n for n in nodes if n.name in member])) if record is not None else []
    plans = {}
    if required:
        for wild in (False, True):
            with contextlib.suppress(InputError):
                plans["wildcard" if wild else "san"] = plan(required, wildcards=wild)
    subject = Subject()
    with contextlib.suppress(InputError):  # a subject stored by hand may not parse: start afresh
        subject = Subject.parse(record.subject) if record is not None and record.subject else Subject()
    given = dict(values.subject) if values is not None else {}
    common_name = values.common_name if values is not None else subject.common_name or ""
    if common_name not in required:
        common_name = required[0] if required else ""
    return {
        "title": "Generate CSR",
        "here": "csr",
        "lineages": [r.name for r in records],
        "lineage": lineage or "",
        "nodes": nodes,
        "member": member,
        "required": required,
        "common_name": common_name,
        "plans": plans,
        "keys": [k.value for k in KeySpec],
        "key": values.key if values is not None else record.key_spec if record is not None else "ec:p256",
        "subject_fields": [
            (name, label, limit, given.get(name, getattr(subject, name) or "")) for name, label, limit in SUBJECT_FIELDS
        ],
    }


def read_uploads(
    items: Iterable[object], *, limit: int, what: str = "the files the CA sent"
) -> list[tuple[str, bytes]]:
    """The uploaded files, each bounded; an empty file field is ignored."""
    out: list[tuple[str, bytes]] = []
    total = 0
    for item in items:
        if not isinstance(item, UploadFile):
            continue
        data = item.file.read(limit + 1)
        name = (item.filename or "upload")[-200:]
        if not data and not item.filename:
            continue
        total += len(data)
        if len(data) > limit or total > limit:
            raise LimitError(
                f"the upload is too large: the limit is {limit // (1024 * 1024)} MiB", hint="send only the CA's files"
            )
        out.append((name, data))
    if not out:
        raise InputError(f"choose {what}", hint="PEM, DER, PKCS#7, PKCS#12/PFX or a zip")
    return out
