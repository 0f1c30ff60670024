"""``/metrics`` in Prometheus' text format: the fleet's status (lineages, nodes, their endpoints) and
deployments, in the vocabulary of :mod:`certfleet.metrics`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from certfleet.console.app import authenticate, console_of
from certfleet.metrics import Snapshot, deployment_metrics, status_metrics

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(authenticate)])


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    console = console_of(request)
    report = await console.status()
    deployments = await asyncio.to_thread(console.store.deployments, None, limit=10_000)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot([*status_metrics(report), *deployment_metrics(deployments)]))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
