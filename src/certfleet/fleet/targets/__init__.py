"""Deploy targets: how the certificate's files land on a node (pem, nginx, apache, haproxy, pkcs12,
k8s-secret, command), registered in :data:`TARGETS`."""

from certfleet.fleet.targets._base import (
    KEEP_VERSIONS,
    TARGETS,
    StepError,
    Target,
    TargetFile,
    Undo,
    VersionedTarget,
    make_target,
    target_kinds,
)

__all__ = [
    "KEEP_VERSIONS",
    "TARGETS",
    "StepError",
    "Target",
    "TargetFile",
    "Undo",
    "VersionedTarget",
    "make_target",
    "target_kinds",
]
