"""``/metrics`` in Prometheus' text format: expiry per lineage and per node, probes, deployments."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from certfleet.console.app import authenticate, console_of
from certfleet.console.service import LineageView, Serving
from certfleet.fleet.model import Outcome
from certfleet.store import DeploymentRecord

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(authenticate)])


class _Snapshot(Collector):
    """The values of one scrape, computed beforehand (collect() must not do I/O)."""

    def __init__(self, views: list[LineageView], deployments: list[DeploymentRecord], now_ts: float) -> None:
        self.views = views
        self.deployments = deployments
        self.now_ts = now_ts

    def collect(self) -> Iterator[Metric]:
        lineage_expiry = GaugeMetricFamily(
            "certfleet_lineage_cert_expiry_seconds",
            "Seconds until the active certificate of the lineage expires (negative once expired).",
            labels=["lineage"],
        )
        lineage_valid = GaugeMetricFamily(
            "certfleet_lineage_chain_valid",
            "1 when the active version's chain is what a strict client accepts.",
            labels=["lineage"],
        )
        node_expiry = GaugeMetricFamily(
            "certfleet_node_cert_expiry_seconds",
            "Seconds until the certificate the node serves now expires.",
            labels=["lineage", "node"],
        )
        node_probe = GaugeMetricFamily(
            "certfleet_node_probe_success",
            "1 when the last probe of the node completed a handshake and its chain verified.",
            labels=["lineage", "node"],
        )
        node_active = GaugeMetricFamily(
            "certfleet_node_serves_active",
            "1 when the node serves the active version of its lineage.",
            labels=["lineage", "node"],
        )
        for view in self.views:
            active = view.record.active
            if active is not None and active.not_after is not None:
                lineage_expiry.add_metric([view.name], active.not_after.timestamp() - self.now_ts)
                lineage_valid.add_metric([view.name], 1.0 if view.chain_valid else 0.0)
            for node in view.nodes:
                if node.serving is Serving.NOT_PROBED:
                    continue
                labels = [view.name, node.node.name]
                if node.served is not None:
                    node_expiry.add_metric(labels, node.served.not_after.timestamp() - self.now_ts)
                node_probe.add_metric(labels, 1.0 if node.report is not None and node.report.ok else 0.0)
                node_active.add_metric(labels, 1.0 if node.serving is Serving.ACTIVE else 0.0)
        deployments = CounterMetricFamily(
            "certfleet_deployments",
            "Deployments by outcome: ok when every node took the version, failed otherwise.",
            labels=["outcome"],
        )
        node_results = CounterMetricFamily(
            "certfleet_deployment_node_results",
            "Per-node deployment results by outcome (" + ", ".join(Outcome) + ").",
            labels=["outcome"],
        )
        by_deployment = Counter("ok" if d.ok else "failed" for d in self.deployments)
        by_node = Counter(r.outcome.value for d in self.deployments for r in d.results)
        for outcome in ("ok", "failed"):
            deployments.add_metric([outcome], float(by_deployment.get(outcome, 0)))
        for outcome in Outcome:
            node_results.add_metric([outcome.value], float(by_node.get(outcome.value, 0)))
        yield from (lineage_expiry, lineage_valid, node_expiry, node_probe, node_active, deployments, node_results)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    console = console_of(request)
    views = await console.dashboard()
    deployments = await asyncio.to_thread(console.store.deployments, None, limit=10_000)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(views, deployments, console.now().timestamp()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
