"""``/metrics`` in Prometheus' text format: the fleet's status (lineages, nodes, their endpoints) and
deployments, in the vocabulary of :mod:`certfleet.metrics`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from certfleet.console.deps import ConsoleDep, checked_csrf, require
from certfleet.console.roles import Role
from certfleet.console.services.audit import Actor
from certfleet.metrics import Snapshot, deployment_count_metrics, status_metrics

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(checked_csrf)])


@router.get("/metrics")
async def metrics(console: ConsoleDep, actor: Annotated[Actor, Depends(require(Role.METRICS))]) -> Response:
    """Every role may read it, and a ``metrics`` token nothing else."""
    report = await console.status.report(scope=actor.lineages)
    by_deployment, by_node = console.fleet.deployment_counts(actor, limit=10_000)
    registry = CollectorRegistry(auto_describe=False)
    autopilot = console.fleet.autopilot_metrics(actor)
    registry.register(
        Snapshot([*status_metrics(report), *deployment_count_metrics(by_deployment, by_node), *autopilot])
    )
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
