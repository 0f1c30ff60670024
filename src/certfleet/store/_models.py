"""The store's tables as typed SQLAlchemy models.

The console adds its own models on the same :class:`Base` (and its own migration); the schema is
owned by the Alembic migrations under ``migrations/``, never by ``create_all``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from certfleet.fleet.model import Outcome
from certfleet.store._records import DeploymentState, VersionState

__all__ = [
    "AuditRow",
    "Base",
    "DeploymentProgressRow",
    "DeploymentRow",
    "JobRow",
    "LastResultRow",
    "LineageRow",
    "NodeResultRow",
    "NodeRow",
    "SettingRow",
    "TargetRow",
    "TrustAnchorRow",
    "UTCDateTime",
    "VersionRow",
    "lineage_nodes",
]

# stable constraint names, so migrations can refer to them on every backend
_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC")
        value = value.astimezone(dt.UTC)
        # SQLite keeps no zone: store naive UTC there, aware elsewhere
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


def _enum(cls: type[VersionState] | type[Outcome] | type[DeploymentState]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


lineage_nodes = Table(
    "lineage_nodes",
    Base.metadata,
    Column("lineage_id", ForeignKey("lineages.id", ondelete="CASCADE"), primary_key=True),
    Column("node_id", ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
)


class LineageRow(Base):
    __tablename__ = "lineages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_spec: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(String(1024))
    # names the lineage must cover beyond those of its nodes
    names: Mapped[list[Any]] = mapped_column(JSON, default=list)
    active_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("versions.id", ondelete="SET NULL", use_alter=True, name="fk_lineages_active_version_id_versions")
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    versions: Mapped[list[VersionRow]] = relationship(
        back_populates="lineage", foreign_keys="VersionRow.lineage_id", order_by="VersionRow.number"
    )
    active: Mapped[VersionRow | None] = relationship(foreign_keys=[active_version_id], post_update=True)
    nodes: Mapped[list[NodeRow]] = relationship(
        secondary=lineage_nodes, back_populates="lineages", order_by="NodeRow.name"
    )


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("lineage_id", "number", name="uq_versions_lineage_id_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lineage_id: Mapped[int] = mapped_column(ForeignKey("lineages.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[VersionState] = mapped_column(_enum(VersionState))
    key_spec: Mapped[str] = mapped_column(String(16))
    # sha256 of the public key's SubjectPublicKeyInfo: matches certificates without decrypting
    public_key_id: Mapped[str] = mapped_column(String(64), index=True)
    # nonce + AES-GCM ciphertext of the PKCS#8 DER key; never the key in clear
    key_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    names: Mapped[list[Any]] = mapped_column(JSON, default=list)
    csr_pem: Mapped[str | None] = mapped_column(Text)
    leaf_pem: Mapped[str | None] = mapped_column(Text)
    chain_pem: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    not_before: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    not_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    issued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # set when a rollback of the whole lineage moved away from it (migration 0003)
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    lineage: Mapped[LineageRow] = relationship(back_populates="versions", foreign_keys=[lineage_id])

    def __repr__(self) -> str:  # the sealed key stays out of every log and debugger view
        return f"VersionRow(lineage_id={self.lineage_id}, number={self.number}, state={self.state.value})"


class NodeRow(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    names: Mapped[list[Any]] = mapped_column(JSON, default=list)
    transport: Mapped[str] = mapped_column(String(512))
    test_cmd: Mapped[str | None] = mapped_column(Text)
    reload_cmd: Mapped[str | None] = mapped_column(Text)
    probe: Mapped[str | None] = mapped_column(String(300))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # one more at every change of the node or of its lineages: an edit made on an older view is
    # refused (added by migration 0007_access)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # the workers that may take its jobs (`certfleet worker --zone NAME`); None: any zoneless one
    # (added by migration 0008_jobs)
    zone: Mapped[str | None] = mapped_column(String(64))
    # the last probe a worker of its zone made: what it served (a JSON object), when, by whom
    # (added by migration 0010_zones)
    probed: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    probed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    probed_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    targets: Mapped[list[TargetRow]] = relationship(
        back_populates="node", order_by="TargetRow.position", cascade="all, delete-orphan"
    )
    lineages: Mapped[list[LineageRow]] = relationship(
        secondary=lineage_nodes, back_populates="nodes", order_by="LineageRow.name"
    )


class TargetRow(Base):
    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    node: Mapped[NodeRow] = relationship(back_populates="targets")


class TrustAnchorRow(Base):
    __tablename__ = "trust_anchors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(String(1024))
    cert_pem: Mapped[str] = mapped_column(Text)
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class DeploymentRow(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lineage_id: Mapped[int] = mapped_column(ForeignKey("lineages.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # the last change while it runs; the end once finished
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # migration 0003: written as running before any node is touched, finished at the end
    state: Mapped[DeploymentState] = mapped_column(_enum(DeploymentState), server_default="finished")
    rollback: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # the process that runs it: a running deployment whose process is gone was interrupted
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)

    lineage: Mapped[LineageRow] = relationship()
    version: Mapped[VersionRow] = relationship()
    results: Mapped[list[NodeResultRow]] = relationship(
        back_populates="deployment", order_by="NodeResultRow.node_name", cascade="all, delete-orphan"
    )


class NodeResultRow(Base):
    __tablename__ = "deployment_results"
    # one result per node in a deployment (migration 0008_jobs)
    __table_args__ = (
        Index("uq_deployment_results_deployment_id_node_name", "deployment_id", "node_name", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    # by name, not by key: the history outlives a removed node
    node_name: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[Outcome] = mapped_column(_enum(Outcome))
    failed_step: Mapped[str | None] = mapped_column(String(32))
    output: Mapped[str] = mapped_column(Text, default="")
    served_fingerprint: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    deployment: Mapped[DeploymentRow] = relationship(back_populates="results")


class DeploymentProgressRow(Base):
    """How far each node of a running deployment is: the steps it has begun, written as the deploy
    runs (migration 0009_shared_console), so that any process sharing the store can follow it."""

    __tablename__ = "deployment_progress"

    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    node_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # the steps begun, in order, comma-separated (a Step's value each); the last one is under way
    steps: Mapped[str] = mapped_column(String(255), default="")
    # its result is written in deployment_results: the steps are over
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class LastResultRow(Base):
    """Each node's newest result in a deployment of a lineage, one row per (lineage, node), written
    with every node result (``Store._keep_last_results``; migration 0005): what ``status`` shows is
    read in one query, whatever the history's length."""

    __tablename__ = "deployment_last_results"

    lineage_id: Mapped[int] = mapped_column(ForeignKey("lineages.id", ondelete="CASCADE"), primary_key=True)
    node_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("deployment_results.id", ondelete="CASCADE"), index=True)

    result: Mapped[NodeResultRow] = relationship()


class JobRow(Base):
    """A unit of work for a worker (``certfleet.jobs``): today one node of a deployment.

    ``state`` is queued, running, done or failed. A running job is leased: ``lease_owner`` holds
    it until ``lease_until``, which its heartbeats push on; ``lease_token`` changes at every
    claim, and a write that names an older token is refused (fencing). Migration 0008_jobs."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("deployment_id", "node", name="uq_jobs_deployment_id"),
        Index("ix_jobs_state", "state", "zone"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), index=True)
    lineage: Mapped[str] = mapped_column(String(64))
    node: Mapped[str | None] = mapped_column(String(64))
    zone: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SettingRow(Base):
    """Small facts about the store itself (how its keys are sealed), one row each."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
