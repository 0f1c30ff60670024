"""The certfleet store: lineages, versions, nodes, trust anchors, deployments and the audit trail.

SQLite (or PostgreSQL) through SQLAlchemy, schema by Alembic migrations shipped in
``migrations/``, private keys sealed with AES-GCM. Everything handed out is a frozen value.
"""

from certfleet.store._base import DEFAULT_KEY_SPEC, check_name, public_key_id
from certfleet.store._copy import CopyResult, copy_store
from certfleet.store._engine import BUSY_ENV, HOME_ENV, URL_ENV, default_home
from certfleet.store._jobs import DEPLOY, JobRecord, JobState, Lease, ZoneJobs
from certfleet.store._locks import LOCK_FOLDER, AdvisoryLock, DeployLock, FileDeployLock, Flock
from certfleet.store._models import Base
from certfleet.store._node_locks import NodeLocks
from certfleet.store._progress import DeploymentProgress, NodeProgress
from certfleet.store._records import (
    AuditAction,
    AuditEntry,
    DeploymentRecord,
    DeploymentState,
    LineageRecord,
    NodeResult,
    TrustAnchor,
    VersionRecord,
    VersionState,
)
from certfleet.store._store import Store
from certfleet.store._vault import KEY_FILE, PASSPHRASE_ENV
from certfleet.store._zones import RecordedProbe, check_zone

__all__ = [
    "BUSY_ENV",
    "DEFAULT_KEY_SPEC",
    "DEPLOY",
    "HOME_ENV",
    "KEY_FILE",
    "LOCK_FOLDER",
    "PASSPHRASE_ENV",
    "URL_ENV",
    "AdvisoryLock",
    "AuditAction",
    "AuditEntry",
    "Base",
    "CopyResult",
    "DeployLock",
    "DeploymentProgress",
    "DeploymentRecord",
    "DeploymentState",
    "FileDeployLock",
    "Flock",
    "JobRecord",
    "JobState",
    "Lease",
    "LineageRecord",
    "NodeLocks",
    "NodeProgress",
    "NodeResult",
    "RecordedProbe",
    "Store",
    "TrustAnchor",
    "VersionRecord",
    "VersionState",
    "ZoneJobs",
    "check_name",
    "check_zone",
    "copy_store",
    "default_home",
    "public_key_id",
]
