"""Prometheus metrics: one vocabulary for ``certfleet watch`` and the console's ``/metrics``.

The same fact has the same name wherever it is exported. Metrics are built at scrape time from the
latest results, so an endpoint that leaves the list, or a problem that is fixed, disappears at once
instead of lingering as a stale series. Names follow Prometheus conventions: base units (seconds),
``_timestamp_seconds`` for points in time, ``_total`` for counters, ``_info`` for labels carried by
a constant 1. docs/metrics.md lists them all.

What an endpoint serves, as a strict client judges it (``watch``, and the console for each node's
probe endpoint), labels ``target``, ``name``, ``node``:

    certfleet_endpoint_probe_success                  1 when the TLS handshake completed
    certfleet_endpoint_chain_valid                    1 when a strict client accepts the chain
    certfleet_endpoint_cert_expiry_timestamp_seconds  the leaf's notAfter, Unix time
    certfleet_endpoint_cert_expiry_seconds            seconds the leaf had left when checked
    certfleet_endpoint_problems{...,code}             problems found, by code
    certfleet_endpoint_probe_duration_seconds         connection to chain in hand
    certfleet_endpoint_tls_info{...,tls_version,cipher}  1

Rounds of ``watch``:

    certfleet_check_duration_seconds                  the last round, all endpoints
    certfleet_check_last_run_timestamp_seconds        when the last round was judged
    certfleet_check_endpoints{state}                  endpoints ok / warning / failing
    certfleet_check_runs_total                        rounds completed

The fleet's status (the console, from :func:`certfleet.fleet.status.status`):

    certfleet_lineage_cert_expiry_seconds{lineage}    seconds until the active certificate expires
    certfleet_lineage_chain_valid{lineage}            1 when a strict client accepts the active chain
    certfleet_node_ok{lineage,node}                   1 when the node is ok as `certfleet status` says
    certfleet_node_serves_active{lineage,node}        1 when the node serves the active version
    certfleet_node_probe_success{lineage,node}        1 when a strict client accepts what the node serves
    certfleet_node_cert_expiry_seconds{lineage,node}  seconds until what the node serves expires
    certfleet_deployments_total{outcome}              deployments, ok or failed
    certfleet_deployment_node_results_total{outcome}  per-node results of deployments

The autopilot (the console, and ``certfleet renew --metrics-file``), from each lineage's renewal
state as the last pass left it:

    certfleet_lineage_next_renewal_timestamp_seconds{lineage,reason}  when the next renewal is planned
    certfleet_lineage_last_renewal_timestamp_seconds{lineage}         when a pass last acted for it
    certfleet_lineage_last_renewal_success{lineage}                   1 when that went well, 0 when it failed
    certfleet_lineage_last_renewal_info{lineage,outcome}              1, with the outcome as a label
    certfleet_lineage_renewal_failures{lineage}                       failed passes in a row
    certfleet_alerts_sent_total{event,kind}                           alerts delivered (alert, repeat, resolved)
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from certfleet.errors import EnvError, InputError

if TYPE_CHECKING:
    from certfleet.autopilot.ledger import RenewalState
    from certfleet.check import CheckReport, EndpointReport
    from certfleet.fleet.status import StatusReport
    from certfleet.store import DeploymentRecord

__all__ = [
    "CheckMetrics",
    "MetricsServer",
    "Snapshot",
    "autopilot_metrics",
    "deployment_count_metrics",
    "deployment_metrics",
    "endpoint_metrics",
    "parse_listen",
    "status_metrics",
]

NAMESPACE = "certfleet"
_ENDPOINT_LABELS = ("target", "name", "node")
_NODE_LABELS = ("lineage", "node")


def _labels(endpoint: EndpointReport) -> list[str]:
    return [str(endpoint.target), endpoint.name, endpoint.target.label or ""]


def endpoint_metrics(
    checked: Iterable[tuple[EndpointReport, dt.datetime]], *, namespace: str = NAMESPACE
) -> list[Metric]:
    """The ``endpoint_*`` families for endpoint reports, each with the time it was checked."""
    ns = namespace
    success = GaugeMetricFamily(
        f"{ns}_endpoint_probe_success",
        "1 when the TLS handshake with the endpoint completed.",
        labels=_ENDPOINT_LABELS,
    )
    valid = GaugeMetricFamily(
        f"{ns}_endpoint_chain_valid",
        "1 when a strict client (no intermediate fetching) accepts the chain served for the name.",
        labels=_ENDPOINT_LABELS,
    )
    expiry = GaugeMetricFamily(
        f"{ns}_endpoint_cert_expiry_timestamp_seconds",
        "When the served leaf certificate expires (notAfter), as Unix time.",
        labels=_ENDPOINT_LABELS,
    )
    left = GaugeMetricFamily(
        f"{ns}_endpoint_cert_expiry_seconds",
        "Seconds the served leaf certificate had left when it was checked (negative once expired).",
        labels=_ENDPOINT_LABELS,
    )
    problems = GaugeMetricFamily(
        f"{ns}_endpoint_problems",
        "Problems found at the endpoint, by problem code.",
        labels=(*_ENDPOINT_LABELS, "code"),
    )
    duration = GaugeMetricFamily(
        f"{ns}_endpoint_probe_duration_seconds",
        "Time from connecting to having the certificate chain.",
        labels=_ENDPOINT_LABELS,
    )
    tls = GaugeMetricFamily(
        f"{ns}_endpoint_tls_info",
        "The TLS version and cipher the endpoint negotiated.",
        labels=(*_ENDPOINT_LABELS, "tls_version", "cipher"),
    )
    for endpoint, at in checked:
        labels = _labels(endpoint)
        success.add_metric(labels, 1.0 if endpoint.probe.ok else 0.0)
        valid.add_metric(labels, 1.0 if endpoint.verified else 0.0)
        duration.add_metric(labels, endpoint.probe.elapsed)
        if endpoint.chain:
            not_after = endpoint.chain[0].not_after.timestamp()
            expiry.add_metric(labels, not_after)
            left.add_metric(labels, not_after - at.timestamp())
        if endpoint.probe.tls_version:
            tls.add_metric([*labels, endpoint.probe.tls_version, endpoint.probe.cipher or ""], 1.0)
        for code, count in sorted(Counter(p.code.value for p in endpoint.problems).items()):
            problems.add_metric([*labels, code], float(count))
    return [success, valid, expiry, left, problems, duration, tls]


def status_metrics(report: StatusReport, *, namespace: str = NAMESPACE, endpoints: bool = True) -> list[Metric]:
    """The ``lineage_*`` and ``node_*`` families of a fleet status, and with ``endpoints`` the
    ``endpoint_*`` families of its nodes' probe endpoints (one series per node, whatever its lineages)."""
    from certfleet.fleet.status import Serving

    ns = namespace
    at = report.checked_at.timestamp()
    lineage_expiry = GaugeMetricFamily(
        f"{ns}_lineage_cert_expiry_seconds",
        "Seconds until the active certificate of the lineage expires (negative once expired).",
        labels=["lineage"],
    )
    lineage_valid = GaugeMetricFamily(
        f"{ns}_lineage_chain_valid",
        "1 when the active version's chain is what a strict client accepts.",
        labels=["lineage"],
    )
    node_ok = GaugeMetricFamily(
        f"{ns}_node_ok",
        "1 when the node is ok as `certfleet status` says: it serves the active version and a strict client "
        "accepts it.",
        labels=_NODE_LABELS,
    )
    node_active = GaugeMetricFamily(
        f"{ns}_node_serves_active",
        "1 when the node serves the active version of its lineage.",
        labels=_NODE_LABELS,
    )
    node_probe = GaugeMetricFamily(
        f"{ns}_node_probe_success",
        "1 when the last probe of the node completed a handshake and a strict client accepts its chain.",
        labels=_NODE_LABELS,
    )
    node_expiry = GaugeMetricFamily(
        f"{ns}_node_cert_expiry_seconds",
        "Seconds until the certificate the node serves now expires.",
        labels=_NODE_LABELS,
    )
    checked: dict[str, tuple[EndpointReport, dt.datetime]] = {}
    for lineage in report.lineages:
        active, chain = lineage.active, lineage.chain
        if active is not None and active.not_after is not None and chain is not None:
            lineage_expiry.add_metric([lineage.name], active.not_after.timestamp() - at)
            lineage_valid.add_metric([lineage.name], 1.0 if chain.valid else 0.0)
        for node in lineage.nodes:
            if node.report is None or node.serving is Serving.NOT_PROBED:
                continue
            labels = [lineage.name, node.node]
            node_ok.add_metric(labels, 1.0 if node.ok else 0.0)
            node_active.add_metric(labels, 1.0 if node.serving is Serving.ACTIVE else 0.0)
            node_probe.add_metric(labels, 1.0 if node.report.ok else 0.0)
            served = node.served
            if served is not None:
                node_expiry.add_metric(labels, served.not_after.timestamp() - at)
            checked.setdefault(node.node, (node.report, node.checked_at or report.checked_at))
    families: list[Metric] = [lineage_expiry, lineage_valid, node_ok, node_active, node_probe, node_expiry]
    return families + (endpoint_metrics(checked.values(), namespace=namespace) if endpoints else [])


def deployment_metrics(deployments: Iterable[DeploymentRecord], *, namespace: str = NAMESPACE) -> list[Metric]:
    """Deployments by outcome, and every node's result in them by outcome."""
    records = list(deployments)
    by_deployment = Counter("ok" if d.ok else "failed" for d in records)
    by_node = Counter(r.outcome.value for d in records for r in d.results)
    return deployment_count_metrics(by_deployment, by_node, namespace=namespace)


def deployment_count_metrics(
    by_deployment: Mapping[str, int], by_node: Mapping[str, int], *, namespace: str = NAMESPACE
) -> list[Metric]:
    """:func:`deployment_metrics` from the counts the store makes (``Store.deployment_counts``):
    deployments by ``ok``/``failed``, node results by outcome."""
    from certfleet.fleet.model import Outcome

    whole = CounterMetricFamily(
        f"{namespace}_deployments",
        "Deployments by outcome: ok when every node took the version, failed otherwise.",
        labels=["outcome"],
    )
    per_node = CounterMetricFamily(
        f"{namespace}_deployment_node_results",
        "Per-node deployment results by outcome (" + ", ".join(Outcome) + ").",
        labels=["outcome"],
    )
    for outcome in ("ok", "failed"):
        whole.add_metric([outcome], float(by_deployment.get(outcome, 0)))
    for result in Outcome:
        per_node.add_metric([result.value], float(by_node.get(result.value, 0)))
    return [whole, per_node]


def autopilot_metrics(
    states: Iterable[RenewalState], sent: Mapping[tuple[str, str], int], *, namespace: str = NAMESPACE
) -> list[Metric]:
    """Each lineage's next renewal and last renewal outcome, and the alerts sent by event and kind
    (``sent``: (event, kind) -> count, as :meth:`certfleet.autopilot.alerts.Alerts.sent_counts`)."""
    ns = namespace
    next_at = GaugeMetricFamily(
        f"{ns}_lineage_next_renewal_timestamp_seconds",
        "When the lineage's next renewal is planned (or its next try after a failure), as Unix time; "
        "reason: ari-window, third-left, half-left, manual-reminder...",
        labels=["lineage", "reason"],
    )
    last_at = GaugeMetricFamily(
        f"{ns}_lineage_last_renewal_timestamp_seconds",
        "When the autopilot last acted for the lineage (issued, deployed, requested, or failed), as Unix time.",
        labels=["lineage"],
    )
    last_ok = GaugeMetricFamily(
        f"{ns}_lineage_last_renewal_success",
        "1 when the autopilot's last action for the lineage went well, 0 when it failed or left nodes behind.",
        labels=["lineage"],
    )
    last_info = GaugeMetricFamily(
        f"{ns}_lineage_last_renewal_info",
        "The outcome of the autopilot's last action for the lineage, as a label: "
        "renewed, deployed, partial, failed, requested.",
        labels=["lineage", "outcome"],
    )
    failures = GaugeMetricFamily(
        f"{ns}_lineage_renewal_failures", "Failed autopilot passes in a row for the lineage.", labels=["lineage"]
    )
    alerts = CounterMetricFamily(
        f"{ns}_alerts_sent",
        "Alerts delivered to at least one destination, by event and kind (alert, repeat, resolved, test).",
        labels=["event", "kind"],
    )
    for state in states:
        name = state.lineage
        if state.next_renewal_at is not None:
            next_at.add_metric([name, state.next_reason or ""], state.next_renewal_at.timestamp())
        failures.add_metric([name], float(state.failures))
        if state.last_attempt_at is not None and state.last_outcome is not None:
            last_at.add_metric([name], state.last_attempt_at.timestamp())
            last_ok.add_metric([name], 1.0 if state.last_outcome.ok else 0.0)
            last_info.add_metric([name, state.last_outcome.value], 1.0)
    for (event, kind), count in sorted(sent.items()):
        alerts.add_metric([event, kind], float(count))
    return [next_at, last_at, last_ok, last_info, failures, alerts]


class Snapshot(Collector):
    """Families computed before a scrape (``collect`` must do no I/O), for a registry of one scrape."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class CheckMetrics(Collector):
    """A Prometheus collector over the latest check report (and, when ``watch`` watches the store's
    nodes, the fleet's status built from it); register it once, update it each round."""

    def __init__(self, registry: CollectorRegistry | None = None, *, namespace: str = NAMESPACE) -> None:
        self._ns = namespace
        self._lock = threading.Lock()
        self._report: CheckReport | None = None
        self._status: StatusReport | None = None
        self._runs = 0
        if registry is not None:
            registry.register(self)

    def update(self, report: CheckReport, status: StatusReport | None = None) -> None:
        with self._lock:
            self._report, self._status = report, status
            self._runs += 1

    def describe(self) -> list[Metric]:
        return list(self._families(None, 0))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            report, status, runs = self._report, self._status, self._runs
        yield from self._families(report, runs)
        if status is not None:  # its nodes' endpoints are among the report's
            yield from status_metrics(status, namespace=self._ns, endpoints=False)

    @property
    def has_report(self) -> bool:
        with self._lock:
            return self._report is not None

    def _families(self, report: CheckReport | None, runs: int) -> Iterator[Metric]:
        ns = self._ns
        round_time = GaugeMetricFamily(f"{ns}_check_duration_seconds", "How long the last round of checks took.")
        last_run = GaugeMetricFamily(
            f"{ns}_check_last_run_timestamp_seconds", "When the last round of checks judged the certificates."
        )
        states = GaugeMetricFamily(
            f"{ns}_check_endpoints", "Endpoints in the last round: ok, warning or failing.", labels=("state",)
        )
        rounds = CounterMetricFamily(f"{ns}_check_runs", "Rounds of checks completed.")
        checked = [(e, report.checked_at) for e in report.endpoints] if report is not None else []
        families = endpoint_metrics(checked, namespace=ns)
        if report is not None:
            round_time.add_metric([], report.elapsed)
            last_run.add_metric([], report.checked_at.timestamp())
            for state, count in report.counts().items():
                states.add_metric([state], float(count))
        rounds.add_metric([], float(runs))
        yield from (*families, round_time, last_run, states, rounds)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to listen on; port 0 lets the system choose."""
    raw = text.strip()
    if raw.startswith("["):
        host, bracket, rest = raw[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        ok = bool(bracket and rest.startswith(":"))
    else:
        host, colon, port_text = raw.rpartition(":")
        ok = bool(colon) and ":" not in host
    if not ok or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise InputError(
            f"{raw[:80]!r} is not an address to listen on",
            hint="write host:port, e.g. 127.0.0.1:9109 or [::1]:9109",
        )
    return host, int(port_text)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scraper that hangs never keeps the process alive


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape on stderr helps nobody


class MetricsServer:
    """``registry`` served over HTTP at ``/metrics`` from a daemon thread.

    ``served_report`` is set once a response holding a check report has been sent in full (what
    ``watch --once`` waits for before it exits).
    """

    def __init__(self, listen: str, registry: CollectorRegistry, metrics: CheckMetrics | None = None) -> None:
        host, port = parse_listen(listen)
        app = make_wsgi_app(registry)
        self.served_report = threading.Event()

        def serve(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            had_report = metrics is not None and metrics.has_report
            body: list[bytes] = app(environ, start_response)
            return _Closing(body, self.served_report.set if had_report else None)

        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            server_class = type("_FamilyServer", (_Server,), {"address_family": family})
            self._server: WSGIServer = make_server(
                host, port, serve, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise EnvError(
                f"cannot listen on {listen}: {exc.strerror or exc}",
                hint="choose another address or port with --listen, or stop what is using this one",
            ) from exc
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="certfleet-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _Closing:
    """A WSGI body that says when the server has written all of it (WSGI calls ``close()`` then)."""

    def __init__(self, body: list[bytes], done: Callable[[], None] | None) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        if self._done is not None:
            self._done()
