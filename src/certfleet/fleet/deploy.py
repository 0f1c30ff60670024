"""Deploy one key and chain to many nodes, atomically per node, and prove what each one serves.

Per node, in order (each is a :class:`Step`)::

    render → connect → upload → switch → test → reload → probe
                                   └──── any failure: switch back, reload, report ────┘

* **render** the files of every target (nothing leaves this process yet);
* **upload** them into a new version folder on the node, complete or absent;
* **switch** each target atomically (``live`` renamed over);
* **test** the node's configuration (``nginx -t``). It runs after the switch on purpose: servers
  read certificate files only when they start or reload, so the switch is invisible to them
  until the reload, and the test is the one chance to see the new files refused before any
  server loads them. On a first deploy it also finds the files it names;
* **reload** the server;
* **probe** its endpoint until it serves the deployed leaf and chain (a reload finishes after
  the reload command returns), for up to ``probe_wait`` seconds.

A failure after the switch points every target switched back at exactly what it had before this
deploy (whatever version that was, or nothing on a first deploy), reloads again if a reload had
run, and reports the failed step with its output and what the node serves afterwards: outcome
``rolled-back``. A failure before it leaves the node untouched: ``failed``. A target that
already pointed at this version is not switched, so nothing of it is undone. Nodes run in
parallel (at most ``concurrency``), each with its own connection; one node's failure never
touches another.

Deploying again is safe and finishes an interrupted deploy: a node whose targets already point
at this version, whose files still match their list, and which serves it is only verified
(``unchanged``; without a probe endpoint, matching files are enough once the caller says the
node was settled on this version before); one whose targets point at it but which does not serve
it yet (killed before the reload) is tested, reloaded and probed; a damaged version folder is
built again; half-written temporary folders are removed by the next upload.

Stopping (``stop`` set: Ctrl-C, SIGTERM) lets each node finish the step it is in, then undoes
what that node changed (``rolled-back``) or, when it changed nothing yet, leaves it (``skipped``);
nodes not started yet are ``skipped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from certfleet.certinfo import fingerprint
from certfleet.clock import Clock, utc_now
from certfleet.endpoint import Endpoint
from certfleet.errors import CertfleetError, InputError
from certfleet.fleet.model import Material, NodeSpec, Outcome
from certfleet.fleet.proof import Prober, Proof, default_prober
from certfleet.fleet.targets import KEEP_VERSIONS, StepError, Target, TargetFile, Undo, make_target
from certfleet.fleet.transports import CommandResult, Transport, open_transport
from certfleet.redact import redact

__all__ = [
    "DeployOptions",
    "DeployReport",
    "NodeOutcome",
    "Outcome",
    "Prober",
    "ProgressEvent",
    "Step",
    "deploy",
]

MAX_REPORT_OUTPUT = 16 * 1024
# seconds a node that already has this version live may take to show it (then it is deployed again)
_VERIFY_WAIT = 1.0

T = TypeVar("T")


class Step(StrEnum):
    """The steps of a node's deploy, in the order they run (``verify`` replaces them all when the
    node already serves the version; ``rollback`` is switching back after a failure)."""

    RENDER = "render"
    CONNECT = "connect"
    VERIFY = "verify"
    UPLOAD = "upload"
    SWITCH = "switch"
    TEST = "test"
    RELOAD = "reload"
    PROBE = "probe"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """What happened on one node."""

    node: str
    outcome: Outcome
    step: Step | None = None  # the step that failed
    message: str = ""  # one line for a person
    output: str = ""  # what the node said: a command's output, what the probe saw
    served: str | None = None  # fingerprint of the leaf the node serves at the end, when probed
    duration: float = 0.0  # seconds
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    # what each target has live at the end (a version name, or None: nothing), when it is known
    live: tuple[str | None, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "outcome": self.outcome.value,
            "step": self.step.value if self.step else None,
            "message": self.message,
            "output": self.output,
            "served": self.served,
            "duration": round(self.duration, 3),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "live": list(self.live) if self.live is not None else None,
        }


@dataclass(frozen=True, slots=True)
class DeployReport:
    """One version deployed to a set of nodes: an outcome per node, in the order given."""

    fingerprint: str  # the deployed leaf
    version_id: str
    nodes: tuple[NodeOutcome, ...]
    started_at: dt.datetime
    finished_at: dt.datetime
    dry_run: bool = False
    stopped: bool = False  # stopped before the end (Ctrl-C, SIGTERM): some nodes skipped or undone

    @property
    def ok(self) -> bool:
        return not self.stopped and all(n.ok for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "version_id": self.version_id,
            "dry_run": self.dry_run,
            "stopped": self.stopped,
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "nodes": [n.to_dict() for n in self.nodes],
        }


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A node starts ``step``, or (``step`` None) has finished with ``outcome``."""

    node: str
    step: Step | None
    outcome: NodeOutcome | None = None


@dataclass(frozen=True, slots=True)
class DeployOptions:
    concurrency: int = 8  # nodes at once
    command_timeout: float = 120.0  # each test and reload command
    step_timeout: float = 300.0  # each file step (upload, switch) on a slow link
    probe_wait: float = 15.0  # how long a reloaded node may take to serve the new chain
    probe_timeout: float = 5.0  # one TLS handshake
    probe_confirm: int = 3  # matching handshakes in a row that prove a node serves the version
    keep: int = KEEP_VERSIONS  # version folders kept per target for rollback
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.keep < 2 or self.probe_confirm < 1:
            raise ValueError("concurrency and probe_confirm must be at least 1, keep at least 2")
        if min(self.command_timeout, self.step_timeout, self.probe_timeout) <= 0 or self.probe_wait < 0:
            raise ValueError("timeouts must be positive")


def _tail(text: str) -> str:
    return text if len(text) <= MAX_REPORT_OUTPUT else "..." + text[-MAX_REPORT_OUTPUT:]


class _Failed(Exception):
    """A step failed: ``step``, a one-line message and the node's output."""

    def __init__(self, step: Step, message: str, output: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.output = output


class _Stopped(_Failed):
    """The deploy was asked to stop before ``step``."""

    def __init__(self, step: Step) -> None:
        super().__init__(step, f"the deploy was stopped at {step.value}")


# the steps a stop request ends a node's deploy before (render, connect and verify change nothing)
_STOPPABLE = frozenset({Step.CONNECT, Step.UPLOAD, Step.SWITCH, Step.TEST, Step.RELOAD, Step.PROBE})


class _NodeDeploy:
    """One node's deploy: everything that must not leak into another node's."""

    def __init__(
        self,
        node: NodeSpec,
        material: Material,
        options: DeployOptions,
        progress: Callable[[ProgressEvent], None] | None,
        prober: Prober,
        *,
        clock: Clock,
        stop: asyncio.Event | None = None,
        settled: bool = True,
    ) -> None:
        self.node = node
        self.material = material
        self.options = options
        self.progress = progress
        self.clock = clock
        self.stop = stop
        self.settled = settled  # the node finished this version before: matching files need no reload
        self.step = Step.RENDER
        self.switched: list[tuple[Target, Undo]] = []
        self.reloaded = False
        self.notes: list[str] = []
        self.proof = Proof(
            prober,
            material,
            timeout=options.probe_timeout,
            confirm=options.probe_confirm,
            stopping=lambda: self.stopping,
            notes=self.notes,
        )
        self.live: list[str | None] | None = None  # each target's live version, as it is now
        self.targets: list[Target] = []

    @property
    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _enter(self, step: Step) -> None:
        if step in _STOPPABLE and self.stopping:
            raise _Stopped(step)
        self.step = step
        if self.progress is not None:
            self.progress(ProgressEvent(self.node.name, step))

    async def run(self) -> NodeOutcome:
        started, ticks = self.clock(), time.monotonic()
        try:
            outcome = await self._run()
        except _Stopped as exc:
            outcome = NodeOutcome(self.node.name, Outcome.SKIPPED, exc.step, f"{exc.message}: the node was not touched")
        except _Failed as exc:
            outcome = NodeOutcome(self.node.name, Outcome.FAILED, exc.step, exc.message, _tail(exc.output))
        except Exception as exc:  # a surprise on one node is that node's failure, never the batch's
            message = f"unexpected error during {self.step.value}: {type(exc).__name__}: {exc}"
            outcome = NodeOutcome(self.node.name, Outcome.FAILED, self.step, message)
        # whatever a step said (a command's output, an error's text) is shown and stored: never a key
        outcome = dataclasses.replace(
            outcome,
            message=redact(outcome.message),
            output=redact(outcome.output),
            duration=time.monotonic() - ticks,
            started_at=started,
            finished_at=self.clock(),
            live=tuple(self.live) if self.live is not None else None,
        )
        if self.progress is not None:
            self.progress(ProgressEvent(self.node.name, None, outcome))
        return outcome

    async def _guard(self, step: Step, work: Awaitable[T], timeout: float) -> T:
        """Run one step's work; any error becomes a :class:`_Failed` naming the step."""
        try:
            async with asyncio.timeout(timeout):
                return await work
        except StepError as exc:
            raise _Failed(step, str(exc), exc.output) from exc
        except CertfleetError as exc:
            raise _Failed(step, str(exc) + (f" ({exc.hint})" if exc.hint else "")) from exc
        except TimeoutError as exc:
            raise _Failed(step, f"{step.value} took longer than {timeout:g} s") from exc
        except Exception as exc:  # one node's surprise must not stop the others
            raise _Failed(step, f"{type(exc).__name__}: {exc}") from exc

    def _render(self) -> list[tuple[Target, str, tuple[TargetFile, ...]]]:
        if not self.node.targets:
            raise InputError(f"node {self.node.name} has no target", hint="add one with --target KIND:PATH")
        out = []
        for spec in self.node.targets:
            target = make_target(spec)
            out.append((target, target.version_name(self.material), target.render(self.material)))
        return out

    async def _run(self) -> NodeOutcome:
        self._enter(Step.RENDER)
        rendered = await self._guard(Step.RENDER, asyncio.to_thread(self._render), self.options.step_timeout)
        self.targets = [t for t, _, _ in rendered]
        try:
            endpoint = self.node.endpoint()
        except InputError as exc:
            raise _Failed(Step.RENDER, str(exc)) from exc
        self._enter(Step.CONNECT)
        try:
            tx = open_transport(self.node.transport, self.node.options)
        except CertfleetError as exc:
            raise _Failed(Step.CONNECT, str(exc) + (f" ({exc.hint})" if exc.hint else "")) from exc
        await self._guard(Step.CONNECT, tx.connect(), self.options.step_timeout)
        try:
            return await self._on_node(tx, rendered, endpoint)
        finally:
            await tx.close()

    async def _on_node(
        self,
        tx: Transport,
        rendered: list[tuple[Target, str, tuple[TargetFile, ...]]],
        endpoint: Endpoint | None,
    ) -> NodeOutcome:
        name = self.node.name
        live = [await self._guard(Step.CONNECT, t.live_version(tx), self.options.step_timeout) for t, _, _ in rendered]
        self.live = list(live)
        damaged: set[int] = set()
        for i, ((target, version, files), now) in enumerate(zip(rendered, live, strict=True)):
            if now == version:
                wrong = await self._guard(Step.CONNECT, target.check(tx, version, files), self.options.step_timeout)
                if wrong is not None:
                    damaged.add(i)
                    self.notes.append(f"{target.label}: {wrong}; building it again")
        current = all(now == version for now, (_, version, _) in zip(live, rendered, strict=True)) and not damaged
        if current and endpoint is not None:
            self._enter(Step.VERIFY)
            served = await self.proof.serves(endpoint, wait=_VERIFY_WAIT, patient=False)
            if served.matches:
                return NodeOutcome(
                    name, Outcome.UNCHANGED, None, "already serves this version", served=served.fingerprint
                )
            self.notes.append(f"this version is in place but not served yet ({served.detail}); finishing the deploy")
        elif current and self.settled:
            return NodeOutcome(name, Outcome.UNCHANGED, None, "its live files already are this version (no probe)")
        if self.options.dry_run:
            plan = [
                f"{t.label}: {now or 'nothing'} -> {version}" + (" (built again)" if i in damaged else "")
                for i, ((t, version, _), now) in enumerate(zip(rendered, live, strict=True))
                if now != version or i in damaged
            ]
            message = "would deploy: " + "; ".join(plan) if plan else "would test, reload and probe"
            return NodeOutcome(name, Outcome.PLANNED, None, message, "\n".join(self.notes))
        try:
            return await self._deploy(tx, rendered, live, damaged, endpoint)
        except _Failed as failure:
            return await self._roll_back(tx, failure, endpoint)

    async def _deploy(
        self,
        tx: Transport,
        rendered: list[tuple[Target, str, tuple[TargetFile, ...]]],
        live: list[str | None],
        damaged: set[int],
        endpoint: Endpoint | None,
    ) -> NodeOutcome:
        opts = self.options
        changing = [i for i, ((_, version, _), now) in enumerate(zip(rendered, live, strict=True)) if now != version]
        changing += sorted(damaged)
        self._enter(Step.UPLOAD)
        for i in changing:
            target, version, files = rendered[i]
            await self._guard(Step.UPLOAD, target.upload(tx, version, files), opts.step_timeout)
        self._enter(Step.SWITCH)
        for i in changing:
            # a target already on this version is not switched: there is nothing of it to undo
            target, version, _ = rendered[i]
            undo = await self._guard(Step.SWITCH, target.switch(tx, version), opts.step_timeout)
            self.switched.append((target, undo))
            if self.live is not None:
                self.live[i] = version
        if self.node.test_cmd:
            self._enter(Step.TEST)
            await self._command(Step.TEST, tx, self.node.test_cmd, "the configuration test failed")
        if self.node.reload_cmd:
            self._enter(Step.RELOAD)
            self.reloaded = True
            await self._command(Step.RELOAD, tx, self.node.reload_cmd, "the reload failed")
        served_fp = None
        if endpoint is not None:
            self._enter(Step.PROBE)
            served = await self.proof.serves(endpoint, wait=opts.probe_wait)
            if not served.matches:
                raise _Stopped(Step.PROBE) if self.stopping else _Failed(Step.PROBE, served.detail)
            served_fp = served.fingerprint
        for target, _, _ in rendered:
            try:
                await asyncio.wait_for(target.prune(tx, opts.keep), opts.step_timeout)
            except (CertfleetError, TimeoutError) as exc:  # old folders left behind harm nobody
                self.notes.append(f"{target.label}: old versions not removed: {exc}")
        message = "deployed and served" if served_fp else "deployed (no probe endpoint to prove it)"
        return NodeOutcome(self.node.name, Outcome.OK, None, message, "\n".join(self.notes), served=served_fp)

    async def _command(self, step: Step, tx: Transport, command: str, what: str) -> CommandResult:
        limit = self.options.command_timeout
        # the transport itself ends the command at `limit`; the margin only catches a stuck link
        result = await self._guard(step, tx.run(command, timeout=limit), limit + 30)
        if not result.ok:
            raise _Failed(step, f"{what}: {result.describe()}", result.output)
        return result

    async def _roll_back(self, tx: Transport, failure: _Failed, endpoint: Endpoint | None) -> NodeOutcome:
        name = self.node.name
        output = [failure.output] if failure.output else []
        if not self.switched:
            if isinstance(failure, _Stopped) and not self.reloaded:
                return NodeOutcome(name, Outcome.SKIPPED, failure.step, f"{failure.message}: the node is as it was")
            message = failure.message
            if self.reloaded or failure.step in (Step.TEST, Step.PROBE):
                message += "; its live files were this version already and are left as they were"
            return NodeOutcome(name, Outcome.FAILED, failure.step, message, _tail("\n".join(output)))
        self._enter(Step.ROLLBACK)
        problems = []
        for target, undo in reversed(self.switched):
            try:
                await asyncio.wait_for(target.switch_back(tx, undo), self.options.step_timeout)
            except Exception as exc:
                problems.append(f"{target.label}: cannot switch back: {exc}")
        # what each target has live now, read back rather than assumed
        with contextlib.suppress(Exception):
            self.live = [await asyncio.wait_for(t.live_version(tx), self.options.step_timeout) for t in self.targets]
        if self.reloaded and self.node.reload_cmd:
            result = await tx.run(self.node.reload_cmd, timeout=self.options.command_timeout)
            if not result.ok:
                output.append(f"reload after switching back: {result.describe()}\n{result.output}")
                # the same failing command as the step that failed: the server still runs the
                # configuration it had; after any other step it may run the new files
                if failure.step is not Step.RELOAD:
                    problems.append("the server could not be reloaded with the version before")
        served_fp = None
        if endpoint is not None:
            wait = self.options.probe_wait if self.reloaded else 0.0
            served_fp = await self.proof.after_rollback(endpoint, wait=wait)
        if problems:
            output.extend(problems)
            message = f"{failure.message}; switching back failed"
            return NodeOutcome(name, Outcome.FAILED, failure.step, message, _tail("\n".join(output)), served_fp)
        before = ", ".join(f"{t.label}: {u.describe()}" for t, u in self.switched)
        message = f"{failure.message}; switched back to what it had before ({before})"
        if endpoint is not None:
            message += f"; it serves {served_fp[:16]}" if served_fp else "; the probe gets no certificate now"
        return NodeOutcome(name, Outcome.ROLLED_BACK, failure.step, message, _tail("\n".join(output)), served_fp)

async def deploy(
    material: Material,
    nodes: Sequence[NodeSpec],
    *,
    options: DeployOptions | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    prober: Prober | None = None,
    clock: Clock = utc_now,
    stop: asyncio.Event | None = None,
    settled: Collection[str] | None = None,
) -> DeployReport:
    """Deploy ``material`` to every node in parallel; never raises for a failing node.

    ``progress`` is called as each node enters a step and when it finishes. ``prober`` replaces
    :func:`certfleet.probe.probe` (the same signature). ``clock`` dates the report and each
    node's outcome (durations are measured on the monotonic clock). Setting ``stop`` ends the
    deploy early: each node finishes or undoes its step. ``settled``: the nodes known to have
    finished this version before (from the history); a node without a probe endpoint whose live
    files match is ``unchanged`` only if it is one of them (None: every such node is).
    """
    opts = options or DeployOptions()
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError("node names must be unique")
    started = clock()
    limit = asyncio.Semaphore(opts.concurrency)

    async def one(node: NodeSpec) -> NodeOutcome:
        async with limit:
            return await _NodeDeploy(
                node,
                material,
                opts,
                progress,
                prober or default_prober,
                clock=clock,
                stop=stop,
                settled=settled is None or node.name in settled,
            ).run()

    outcomes = await asyncio.gather(*(one(n) for n in nodes))
    return DeployReport(
        fingerprint=fingerprint(material.leaf),
        version_id=material.version_id,
        nodes=tuple(outcomes),
        started_at=started,
        finished_at=clock(),
        dry_run=opts.dry_run,
        stopped=stop is not None and stop.is_set(),
    )
