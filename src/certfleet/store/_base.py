"""What every part of the store shares: limits, checks, the vault, the audit trail, row lookups."""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from certfleet.clock import utc_now
from certfleet.errors import InputError, NotFoundError, StoreError
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.keys import public_key_id
from certfleet.redact import clean
from certfleet.store import _vault
from certfleet.store._engine import Database, retried
from certfleet.store._models import (
    AuditRow,
    LineageRow,
    NodeResultRow,
    NodeRow,
    SettingRow,
    VersionRow,
    lineage_nodes,
)
from certfleet.store._records import (
    AuditAction,
    AuditEntry,
    DeploymentState,
    LineageRecord,
    NodeResult,
    VersionRecord,
)

__all__ = ["DEFAULT_KEY_SPEC", "StoreBase", "check_name", "public_key_id"]

# RSA 2048 is what every client and every CA form still takes (old phones, Windows, Java)
DEFAULT_KEY_SPEC = "rsa:2048"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_NAMES = 200  # names per node or lineage; the CA limit (15 by default) is checked when planning
MAX_TARGETS = 16
MAX_COMMAND = 4096
MAX_OUTPUT = 64 * 1024  # characters of a failing step's output kept in the history
MAX_ACTOR = 128
MAX_DETAIL = 16 * 1024
_SECRET_KEY = re.compile(r"pass|secret|token|private", re.IGNORECASE)
_HOST = socket.gethostname() or "localhost"


def _default_actor() -> str:
    try:
        who = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        who = f"uid:{os.getuid()}"
    return who[:MAX_ACTOR]


def check_name(kind: str, name: str) -> str:
    """Node and lineage names: short, plain, safe in a path and on a command line."""
    if not NAME_RE.fullmatch(name):
        raise InputError(
            f"{kind} name {name[:80]!r} is not allowed",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def _check_text(what: str, value: str | None, limit: int) -> None:
    if value is not None and (len(value) > limit or "\x00" in value):
        raise InputError(f"{what} is longer than {limit} characters or holds a NUL byte")


def _redacted(value: Any) -> Any:
    # a target option may carry a password (pkcs12's "password"); the audit trail never does
    if isinstance(value, dict):
        return {k: "<redacted>" if _SECRET_KEY.search(str(k)) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _aad(lineage_id: int, number: int, pkid: str) -> bytes:
    # binds the sealed key to its record: a ciphertext copied to another row does not open
    return f"certfleet/key/v1/lineage={lineage_id}/version={number}/spki={pkid}".encode()


def _pem(*certs: x509.Certificate) -> str:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode("ascii")


def _bounded_output(text: str) -> str:
    # the end of a failing command's output says why it failed: keep that part, and never a key
    # it printed, whoever recorded the result
    return clean(text, MAX_OUTPUT)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _node_result(r: NodeResultRow) -> NodeResult:
    return NodeResult(
        node=r.node_name,
        outcome=r.outcome,
        started_at=r.started_at,
        finished_at=r.finished_at,
        failed_step=r.failed_step,
        output=r.output,
        served_fingerprint=r.served_fingerprint,
    )


def _state_of(state: DeploymentState, host: str | None, pid: int | None) -> DeploymentState:
    """A running deployment whose process, on this machine, is gone was interrupted (killed). One
    run from another machine is taken at its word: only that machine can tell."""
    if state is DeploymentState.RUNNING and host == _HOST[:255] and pid and not _alive(pid):
        return DeploymentState.INTERRUPTED
    return state


class StoreBase:
    """State and helpers the store's parts share; :class:`certfleet.store.Store` is the API."""

    def __init__(self, home: Path, db: Database, *, actor: str | None = None, created: bool = False) -> None:
        self.home = home
        self.actor = (actor or _default_actor())[:MAX_ACTOR]
        self.created = created  # True when init made a new store
        self._db = db
        self._vault: _vault.Vault | None = None

    def __repr__(self) -> str:
        return f"Store(home={str(self.home)!r}, actor={self.actor!r})"

    @retried
    def _setting(self, key: str) -> str | None:
        with self._db.session(write=False) as s:
            row = s.get(SettingRow, key)
            return row.value if row is not None else None

    @retried
    def _init_vault(self) -> bool:
        """Choose how keys are sealed, once; False when the store already had a vault."""
        passphrase = _vault.passphrase_from_env()
        with self._db.session(write=True) as s:
            if s.get(SettingRow, "vault.mode") is not None:
                return False
            if passphrase is not None:
                salt = os.urandom(16)
                params = f"{_vault.SCRYPT_N},{_vault.SCRYPT_R},{_vault.SCRYPT_P}"
                vault = _vault.Vault(_vault.derive_key(passphrase, salt))
                s.add(SettingRow(key="vault.mode", value="passphrase"))
                s.add(SettingRow(key="vault.salt", value=salt.hex()))
                s.add(SettingRow(key="vault.scrypt", value=params))
            else:
                _vault.create_key_file(self.home)
                vault = _vault.Vault(_vault.read_key_file(self.home))
                s.add(SettingRow(key="vault.mode", value="keyfile"))
            s.add(SettingRow(key="vault.check", value=vault.make_check().hex()))
        self._vault = vault
        return True

    def _check_secret(self, *, required: bool) -> None:
        """Refuse a wrong master key or passphrase now, before anything is sealed or written under
        it. A missing one is refused now when ``required`` (init), else when a key is first needed:
        records stay readable and changeable on a machine that does not hold the secret."""
        if not required:
            mode = self._setting("vault.mode")
            if mode == "keyfile" and not (self.home / _vault.KEY_FILE).exists():
                return
            if mode == "passphrase" and _vault.passphrase_from_env() is None:
                return
        self.vault()

    @retried
    def vault(self) -> _vault.Vault:
        """The key that seals private keys, loaded and checked on first use."""
        if self._vault is not None:
            return self._vault
        with self._db.session(write=False) as s:
            settings = {r.key: r.value for r in s.scalars(select(SettingRow))}
        mode = settings.get("vault.mode")
        if mode == "passphrase":
            passphrase = _vault.passphrase_from_env()
            if passphrase is None:
                raise StoreError(
                    "the store's keys are sealed with a passphrase and CERTFLEET_PASSPHRASE is not set",
                    hint="set CERTFLEET_PASSPHRASE to the passphrase the store was created with",
                )
            n, r, p = (int(x) for x in settings["vault.scrypt"].split(","))
            vault = _vault.Vault(_vault.derive_key(passphrase, bytes.fromhex(settings["vault.salt"]), n=n, r=r, p=p))
        elif mode == "keyfile":
            vault = _vault.Vault(_vault.read_key_file(self.home))
        else:
            raise StoreError("the store does not say how its keys are sealed", hint="run `certfleet init`")
        vault.verify_check(bytes.fromhex(settings["vault.check"]))
        self._vault = vault
        return vault

    def _seal_key(self, key: CertificateIssuerPrivateKeyTypes, lineage_id: int, number: int, pkid: str) -> bytes:
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return self.vault().seal(der, _aad(lineage_id, number, pkid))

    def _open_key(self, row: VersionRow) -> CertificateIssuerPrivateKeyTypes:
        der = self.vault().open(row.key_sealed, _aad(row.lineage_id, row.number, row.public_key_id))
        # AES-GCM has just proven these bytes are the ones certfleet sealed: the slow RSA
        # consistency check (tens of milliseconds) adds nothing
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise StoreError("a stored key is of a kind certfleet does not use", hint="restore the store from a backup")
        return key

    @retried
    def audit(self, action: str, detail: dict[str, Any] | None = None, *, actor: str | None = None) -> None:
        """Record a change made outside the store's own methods (an export, a console login...).
        ``detail`` must never hold a secret."""
        with self._db.session(write=True) as s:
            self._audit(s, action, detail or {}, actor=actor)

    def _audit(self, s: Session, action: str, detail: dict[str, Any], *, actor: str | None = None) -> None:
        s.add(AuditRow(**self._audit_values(action, detail, actor=actor)))

    def _audit_values(self, action: str, detail: dict[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        plain = _redacted(json.loads(json.dumps(detail, default=str)))
        if len(json.dumps(plain)) > MAX_DETAIL:
            plain = {"truncated": True}
        return {
            "at": utc_now(),
            "actor": (actor or self.actor)[:MAX_ACTOR],
            "action": str(action)[:64],
            "detail": plain,
        }

    @retried
    def audit_log(self, *, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        with self._db.session(write=False) as s:
            q = select(AuditRow).order_by(AuditRow.id.desc()).limit(max(1, min(limit, 10_000)))
            if action is not None:
                q = q.where(AuditRow.action == action)
            return [AuditEntry(r.id, r.at, r.actor, r.action, dict(r.detail)) for r in s.scalars(q)]

    def _node_row(self, s: Session, name: str) -> NodeRow:
        row = s.scalar(select(NodeRow).where(NodeRow.name == name).options(selectinload(NodeRow.targets)))
        if row is None:
            raise NotFoundError(f"no node named {name[:80]!r}", hint="`certfleet node list` shows the nodes")
        return row

    @staticmethod
    def _spec(row: NodeRow) -> NodeSpec:
        return NodeSpec(
            name=row.name,
            names=tuple(row.names),
            targets=tuple(TargetSpec(t.kind, t.path, dict(t.options)) for t in row.targets),
            transport=row.transport,
            test_cmd=row.test_cmd,
            reload_cmd=row.reload_cmd,
            probe=row.probe,
            options=dict(row.options),
        )

    def _lineage_row(self, s: Session, name: str, *, create: bool = False) -> LineageRow:
        row = s.scalar(select(LineageRow).where(LineageRow.name == name))
        if row is not None:
            return row
        if not create:
            raise NotFoundError(f"no lineage named {name[:80]!r}", hint="`certfleet status` lists the lineages")
        check_name("lineage", name)
        now = utc_now()
        row = LineageRow(name=name, key_spec=DEFAULT_KEY_SPEC, subject=None, names=[], created_at=now, updated_at=now)
        s.add(row)
        s.flush()
        self._audit(s, AuditAction.LINEAGE_CREATE, {"lineage": name, "key": row.key_spec})
        return row

    def _version_record(self, row: VersionRow, lineage: str, active_id: int | None) -> VersionRecord:
        return VersionRecord(
            lineage=lineage,
            number=row.number,
            state=row.state,
            key_spec=row.key_spec,
            public_key_id=row.public_key_id,
            names=tuple(row.names),
            created_at=row.created_at,
            csr=x509.load_pem_x509_csr(row.csr_pem.encode()) if row.csr_pem else None,
            leaf=x509.load_pem_x509_certificate(row.leaf_pem.encode()) if row.leaf_pem else None,
            chain=tuple(x509.load_pem_x509_certificates(row.chain_pem.encode())) if row.chain_pem else (),
            fingerprint=row.fingerprint,
            not_before=row.not_before,
            not_after=row.not_after,
            issued_at=row.issued_at,
            active=row.id == active_id,
            withdrawn_at=row.withdrawn_at,
        )

    def _lineage_record(self, row: LineageRow, nodes: Sequence[str] | None = None) -> LineageRecord:
        """The record of ``row``; ``nodes``: its members' names, sorted, when read already."""
        active = row.active
        return LineageRecord(
            name=row.name,
            key_spec=row.key_spec,
            subject=row.subject,
            names=tuple(row.names),
            nodes=tuple(sorted(n.name for n in row.nodes)) if nodes is None else tuple(nodes),
            active=self._version_record(active, row.name, row.active_version_id) if active is not None else None,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @staticmethod
    def _member_names(s: Session, lineage_ids: Sequence[int]) -> dict[int, list[str]]:
        """The names of each lineage's nodes, sorted as Python sorts them (not by the database's
        collation): one query, no node read whole."""
        out: dict[int, list[str]] = {i: [] for i in lineage_ids}
        q = (
            select(lineage_nodes.c.lineage_id, NodeRow.name)
            .join(NodeRow, NodeRow.id == lineage_nodes.c.node_id)
            .where(lineage_nodes.c.lineage_id.in_(lineage_ids))
        )
        for lineage_id, name in s.execute(q):
            out[lineage_id].append(name)
        return {i: sorted(names) for i, names in out.items()}

    def _version_row(self, s: Session, lin: LineageRow, number: int) -> VersionRow:
        row = s.scalar(select(VersionRow).where(VersionRow.lineage_id == lin.id, VersionRow.number == number))
        if row is None:
            raise NotFoundError(f"lineage {lin.name} has no version {number}", hint=f"`certfleet history {lin.name}`")
        return row

    @staticmethod
    def _next_number(s: Session, lineage_id: int) -> int:
        top = s.scalar(select(func.max(VersionRow.number)).where(VersionRow.lineage_id == lineage_id))
        return (top or 0) + 1
