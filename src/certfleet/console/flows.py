"""The steps behind the forms: node editing, CSR generation, import (shown before it is saved).

Each step calls the same library functions as the CLI; this module only turns form fields into
their arguments and keeps what a browser flow must hold between two requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.datastructures import FormData

from certfleet.console.accounts import Actor
from certfleet.console.app import form_text
from certfleet.errors import InputError
from certfleet.fleet.lineage import ImportResult, RequestResult, import_package, request
from certfleet.fleet.model import NodeSpec
from certfleet.fleet.nodes import lineage_names, make_node, target_kinds

if TYPE_CHECKING:
    from certfleet.console.service import Console

__all__ = [
    "CsrFormValues",
    "ImportPreview",
    "NodeFormValues",
    "build_node",
    "csr_form_context",
    "csr_form_values",
    "csr_pem",
    "generate_csr",
    "import_findings",
    "keep_preview",
    "node_form_context",
    "node_form_values",
    "pem_text",
    "read_uploads",
    "save_node",
    "take_preview",
]

MAX_PREVIEWS = 20
_SPLIT = re.compile(r"[\s,]+")


def pem_text(*certs: x509.Certificate) -> str:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode("ascii")


# the node options the form edits; any other option a node has (from a fleet file) is kept
SSH_FIELDS = ("known_hosts", "identity")


@dataclass(frozen=True, slots=True)
class NodeFormValues:
    name: str = ""
    names: str = ""
    targets: str = ""
    transport: str = "local"
    test_cmd: str = ""
    reload_cmd: str = ""
    probe: str = ""
    known_hosts: str = ""
    identity: str = ""
    lineages: tuple[str, ...] = ()
    new_lineage: str = ""
    original: str = ""

    @classmethod
    def of(cls, spec: NodeSpec | None, lineages: tuple[str, ...] = ()) -> NodeFormValues:
        if spec is None:
            return cls(lineages=lineages)
        return cls(
            name=spec.name,
            names="\n".join(spec.names),
            targets="\n".join(f"{t.kind}:{t.path}" for t in spec.targets),
            transport=spec.transport,
            test_cmd=spec.test_cmd or "",
            reload_cmd=spec.reload_cmd or "",
            probe=spec.probe or "",
            known_hosts=str(spec.options.get("known_hosts", "")),
            identity=str(spec.options.get("identity", "")),
            lineages=lineages,
            original=spec.name,
        )


def _field(form: FormData, name: str, limit: int = 4000) -> str:
    return form_text(form, name, limit).strip()


def node_form_values(form: FormData) -> NodeFormValues:
    return NodeFormValues(
        name=_field(form, "name", 64),
        names=_field(form, "names", 20_000),
        targets=_field(form, "targets", 20_000),
        transport=_field(form, "transport", 512) or "local",
        test_cmd=_field(form, "test_cmd"),
        reload_cmd=_field(form, "reload_cmd"),
        probe=_field(form, "probe", 300),
        known_hosts=_field(form, "known_hosts"),
        identity=_field(form, "identity"),
        lineages=tuple(v for v in form.getlist("lineages") if isinstance(v, str) and v)[:50],
        new_lineage=_field(form, "new_lineage", 64),
        original=_field(form, "original", 64),
    )


def build_node(values: NodeFormValues, kept: Mapping[str, Any] | None = None) -> NodeSpec:
    """The node the form describes, checked by the library (names, targets, transport, probe);
    ``kept`` are the node's options the form does not show."""
    options = {k: v for k, v in (kept or {}).items() if k not in SSH_FIELDS}
    options.update({k: v for k, v in ((k, getattr(values, k)) for k in SSH_FIELDS) if v})
    return make_node(
        values.name,
        [n for n in _SPLIT.split(values.names) if n],
        [line.strip() for line in values.targets.splitlines() if line.strip() and not line.strip().startswith("#")],
        transport=values.transport or "local",
        test_cmd=values.test_cmd or None,
        reload_cmd=values.reload_cmd or None,
        probe=values.probe or None,
        options=options,
    )


def save_node(console: Console, actor: Actor, values: NodeFormValues) -> NodeSpec:
    """Create the node (``values.original`` empty) or change it, and set its lineages."""
    store = console.as_actor(actor)
    original = values.original
    if original and original != values.name:
        raise InputError("a node keeps its name", hint="add a new node and remove the old one")
    existing = {n.name: n for n in store.nodes()}
    if not original and values.name in existing:
        raise InputError(f"node {values.name} exists", hint="edit it from the nodes page")
    before = existing.get(original) if original else None
    spec = build_node(values, before.options if before is not None else None)
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


# -- CSR ------------------------------------------------------------------------------------------

SUBJECT_FIELDS = (
    ("country", "Country (2 letters)", 2),
    ("state", "State or province", 128),
    ("locality", "City", 128),
    ("organization", "Organization", 64),
    ("organizational_unit", "Unit", 64),
)


@dataclass(frozen=True, slots=True)
class CsrFormValues:
    lineage: str
    nodes: tuple[str, ...]
    names: str
    key: str
    subject: tuple[tuple[str, str], ...]
    wildcards: bool

    def subject_text(self) -> str | None:
        from certfleet.csr import Subject

        given = {k: v for k, v in self.subject if v}
        return str(Subject(**given)) if given else None

    def extra_names(self) -> list[str]:
        return [n for n in _SPLIT.split(self.names) if n]


def csr_form_values(form: FormData) -> CsrFormValues:
    return CsrFormValues(
        lineage=_field(form, "lineage", 64),
        nodes=tuple(v for v in form.getlist("nodes") if isinstance(v, str) and v)[:100],
        names=_field(form, "names", 20_000),
        key=_field(form, "key", 20) or "ec:p256",
        subject=tuple((name, _field(form, name, 256)) for name, _, _ in SUBJECT_FIELDS),
        wildcards=_field(form, "wildcards", 10) == "on",
    )


def generate_csr(console: Console, actor: Actor, values: CsrFormValues) -> RequestResult:
    """A key made and kept inside the store, and the CSR for every name the lineage needs."""
    if not values.lineage:
        raise InputError("name the lineage the certificate is for", hint="e.g. web")
    return request(
        console.as_actor(actor),
        values.lineage,
        nodes=values.nodes,
        names=values.extra_names(),
        key_spec=values.key,
        subject=values.subject_text(),
        wildcards=values.wildcards,
    )


def csr_pem(console: Console, lineage: str, number: int) -> bytes:
    """The CSR of a version, as PEM (what the CA's form takes)."""
    version = console.store.version(lineage, number)
    if version.csr is None:
        raise InputError(f"version {number} of {lineage} has no CSR")
    return version.csr.public_bytes(serialization.Encoding.PEM)


async def csr_form_context(console: Console, lineage: str | None) -> dict[str, Any]:
    """The form, prefilled from the lineage: its nodes and their names, its key and subject, and
    the two ways to cover the names (each name, or wildcards where names share a parent)."""
    from certfleet.csr import Subject
    from certfleet.keys import KeySpec
    from certfleet.names import plan

    records = await asyncio.to_thread(console.store.lineages)
    nodes = await asyncio.to_thread(console.store.nodes)
    record = next((r for r in records if r.name == lineage), None)
    member = set(record.nodes) if record else set()
    required = list(lineage_names(record, [n for n in nodes if n.name in member])) if record is not None else []
    plans = {}
    if required:
        for wild in (False, True):
            with contextlib.suppress(InputError):
                plans["wildcard" if wild else "san"] = plan(required, wildcards=wild)
    subject = Subject.parse(record.subject) if record is not None and record.subject else Subject()
    return {
        "title": "Generate CSR",
        "here": "csr",
        "lineages": [r.name for r in records],
        "lineage": lineage or "",
        "nodes": nodes,
        "member": member,
        "required": required,
        "plans": plans,
        "keys": [k.value for k in KeySpec],
        "key": record.key_spec if record is not None else "ec:p256",
        "subject_fields": [(name, label, limit, getattr(subject, name) or "") for name, label, limit in SUBJECT_FIELDS],
    }


# -- import: shown first, saved only when confirmed ---------------------------------------------------


@dataclass
class ImportPreview:
    """An upload waiting for its confirmation. It may hold a key (a PFX): kept in memory only, for
    the account that sent it, and dropped when confirmed or stale."""

    id: str
    account_id: int
    lineage: str
    inputs: list[tuple[str, bytes]]
    passwords: list[bytes]
    created: dt.datetime
    result: ImportResult

    def __repr__(self) -> str:
        return f"ImportPreview(id={self.id!r}, lineage={self.lineage!r}, files={len(self.inputs)})"


async def read_uploads(form: FormData, *, limit: int) -> list[tuple[str, bytes]]:
    """The uploaded files, each bounded; an empty file field is ignored."""
    from starlette.datastructures import UploadFile

    out: list[tuple[str, bytes]] = []
    total = 0
    for item in form.getlist("files"):
        if not isinstance(item, UploadFile):
            continue
        data = await item.read(limit + 1)
        name = (item.filename or "upload")[-200:]
        if not data and not item.filename:
            continue
        total += len(data)
        if len(data) > limit or total > limit:
            from certfleet.errors import LimitError

            raise LimitError(
                f"the upload is too large: the limit is {limit // (1024 * 1024)} MiB", hint="send only the CA's files"
            )
        out.append((name, data))
    if not out:
        raise InputError("choose the files the CA sent", hint="PEM, DER, PKCS#7, PKCS#12/PFX or a zip")
    return out


def import_findings(
    console: Console, lineage: str, inputs: list[tuple[str, bytes]], passwords: list[bytes], *, save: bool,
    actor: Actor,
) -> ImportResult:  # fmt: skip
    from certfleet.aia import HttpFetcher

    store = console.as_actor(actor)
    fetcher = HttpFetcher(timeout=10.0) if console.settings.fetch_aia else None
    return import_package(
        store,
        lineage,
        inputs,
        now=console.now(),
        passwords=passwords,
        fetcher=fetcher,
        trust=console.trust(),
        save=save,
    )


def keep_preview(
    console: Console,
    actor: Actor,
    *,
    lineage: str,
    inputs: list[tuple[str, bytes]],
    passwords: list[bytes],
    result: ImportResult,
) -> ImportPreview:
    now = console.now()
    for key in [k for k, p in console.previews.items() if now - p.created > console.settings.import_ttl]:
        del console.previews[key]
    # each may hold up to the upload limit: keep a bounded number, dropping the oldest
    while len(console.previews) >= MAX_PREVIEWS:
        del console.previews[min(console.previews, key=lambda k: console.previews[k].created)]
    preview = ImportPreview(console.new_id(), actor.account_id, lineage, inputs, passwords, now, result)
    console.previews[preview.id] = preview
    return preview


def take_preview(console: Console, actor: Actor, preview_id: str) -> ImportPreview:
    preview = console.previews.get(preview_id)
    if (
        preview is None
        or preview.account_id != actor.account_id
        or console.now() - preview.created > console.settings.import_ttl
    ):
        raise InputError("this import is no longer waiting: upload the files again", hint="imports wait 15 minutes")
    taken: ImportPreview = console.previews.pop(preview_id)
    return taken
