"""Endpoint checks as jobs (kind ``check``): ``certfleet check HOST:PORT --zone dmz`` asks a
worker of the zone to probe an endpoint that only the zone reaches. The job carries the endpoint
(host, port, the name sent as SNI and expected, how it reaches TLS) and the probe's timeout; its
handler probes it from the worker and answers with what it served (:func:`probe_payload`, the
chain as DER). The process that asked judges it (its trust store, its time), as it judges a probe
of its own (:func:`certfleet.check.judge`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from certfleet.endpoint import Endpoint, parse_endpoint
from certfleet.errors import CertfleetError, InputError
from certfleet.jobs.context import JobContext, JobDone
from certfleet.jobs.probes import probe_payload, probe_summary
from certfleet.probe import StartTLS, format_target, probe
from certfleet.store import JobRecord

__all__ = ["CHECK", "MAX_TIMEOUT", "MIN_TIMEOUT", "check_handler", "endpoint_of", "endpoint_payload"]

CHECK = "check"  # the kind of job
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 600.0  # seconds for the probe, as `certfleet check --timeout` allows
MAX_RESULT_BYTES = 64 * 1024  # the most of a job's result the store keeps (Store.finish_job)


def endpoint_payload(endpoint: Endpoint, *, timeout: float) -> dict[str, Any]:
    """What a ``check`` job is asked: the endpoint and the probe's timeout."""
    return {
        "host": endpoint.host,
        "port": endpoint.port,
        "name": endpoint.name,
        "starttls": endpoint.starttls.value if endpoint.starttls is not None else None,
        "timeout": timeout,
    }


def endpoint_of(payload: Mapping[str, Any]) -> tuple[Endpoint, float]:
    """The endpoint and timeout of a ``check`` job, validated as ``certfleet check`` validates what
    it is given (the store is shared: a job is read as input). :class:`InputError` when not."""
    host, port, name, mode, timeout = (payload.get(k) for k in ("host", "port", "name", "starttls", "timeout"))
    if not isinstance(host, str) or not host:
        raise InputError("a check job names no host")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise InputError("a check job's port is not a number from 1 to 65535")
    if name is not None and not isinstance(name, str):
        raise InputError("a check job's name is not text")
    try:
        starttls = StartTLS(mode) if mode is not None else None
    except ValueError:
        raise InputError(f"a check job's starttls {str(mode)[:20]!r} is not one certfleet knows") from None
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
        raise InputError(f"a check job's timeout is not from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g} seconds")
    if len(host) > 300:  # parse_endpoint bounds it too; never echo a long one back
        raise InputError("a check job's host is too long")
    try:
        endpoint = parse_endpoint(format_target(host, port), name=name, starttls=starttls)
    except CertfleetError as exc:
        raise InputError(f"a check job's endpoint: {exc.message}") from exc
    return endpoint, float(timeout)


async def check_handler(ctx: JobContext, job: JobRecord) -> JobDone:
    """A ``check`` job: probe the endpoint from this worker; the result is what it served
    (:func:`probe_payload`). Done when the probe was made, whatever the endpoint served."""
    endpoint, timeout = endpoint_of(job.payload)
    served = await probe(
        endpoint.host, endpoint.port, server_name=endpoint.server_name, timeout=timeout, starttls=endpoint.starttls
    )
    result = probe_payload(served)
    if len(json.dumps(result)) > MAX_RESULT_BYTES:
        raise InputError(
            f"{served.target} sent a chain of {len(served.chain_der)} certificates, larger than a job's result "
            f"may be ({MAX_RESULT_BYTES // 1024} KiB)"
        )
    problem = probe_summary(served)["problem"]
    return JobDone(True, result, f"{served.target}: {problem}" if problem else served.target)
