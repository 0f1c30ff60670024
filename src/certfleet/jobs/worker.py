"""A worker: takes the jobs of its zone from the store and runs them, under a lease.

One loop (:meth:`Worker.run`): claim up to ``batch`` jobs of the zone (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL), run them, claim again; with nothing to take, wait ``poll`` seconds (or,
``once``, end). A deploy job is one node of a recorded deployment; the jobs taken together are
grouped by deployment and each group goes through the deploy engine at once
(:func:`certfleet.fleet.deploy.deploy`, ``concurrency`` nodes in parallel).

While they run, a heartbeat pushes their leases on every ``heartbeat`` seconds. A job whose lease
was lost (its token changed: another worker took it over after the lease ran out) stops the
group: each node finishes or undoes the step it is in, and nothing of the lost job is written
(the store refuses a write with an old token). Around each node's deploy the worker holds the
node's lock (:class:`certfleet.store.NodeLocks`, a PostgreSQL advisory lock the server drops with
a dead worker's connection): no node is ever deployed by two workers at once, even when a
stalled worker's lease ran out. A node whose lock is held elsewhere goes back to the queue, put off for a lease.

Each node's result and the end of its job are one transaction (``Store.finish_nodes``: the results
of the nodes that ended while the last write ran go together, each job fenced by its own token): a worker
killed at any point leaves the node either recorded and done, or queued/running with the
deployment's ``interrupted`` placeholder, which the next worker takes after the lease and deploys
again; the engine finishes a half-done node (``certfleet.fleet.deploy``: deploying again is safe).

Stopping (``stop`` set: SIGTERM, Ctrl-C) lets each node finish or undo its step; the jobs of nodes
stopped before their end go back to the queue untouched, and the worker ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from certfleet.clock import utc_now
from certfleet.errors import CertfleetError, StoreError
from certfleet.fleet.deploy import DeployOptions, NodeOutcome, Prober, ProgressEvent, deploy
from certfleet.fleet.model import NodeSpec, Outcome
from certfleet.fleet.rollout import node_result, settled_nodes
from certfleet.store import DEPLOY, Lease, NodeResult, Store

__all__ = ["JobEvent", "Worker", "WorkerOptions", "worker_name"]

log = logging.getLogger("certfleet.worker")

KEEP_ENDED = dt.timedelta(days=1)  # how long ended probe and check jobs are kept
PRUNE_EVERY = 3600.0  # seconds between prunes of them


def worker_name(zone: str | None) -> str:
    """How a worker names itself in the leases it holds: ``host/pid[/zone]``."""
    return f"{socket.gethostname()}/{os.getpid()}" + (f"/{zone}" if zone else "")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    zone: str | None = None  # the zone whose jobs it takes; None: the jobs of nodes in no zone
    lease: float = 30.0  # seconds a job stays this worker's without a heartbeat
    heartbeat: float | None = None  # seconds between heartbeats (default: a quarter of the lease)
    poll: float = 1.0  # seconds between looks at an empty queue
    batch: int = 8  # jobs taken at once
    once: bool = False  # end when the queue has nothing for this worker
    deployment: int | None = None  # only the jobs of this deployment
    kinds: frozenset[str] = frozenset()  # only jobs of these kinds (empty: of every kind)
    job: int | None = None  # only this job
    deploy: DeployOptions = field(default_factory=DeployOptions)
    # seconds between rounds of probe jobs for the zone's nodes, recorded for `status` (None: none)
    probe_every: float | None = None

    def __post_init__(self) -> None:
        if self.lease <= 0 or self.poll <= 0 or self.batch < 1:
            raise ValueError("lease and poll must be positive, batch at least 1")
        if self.probe_every is not None and self.probe_every <= 0:
            raise ValueError("probe_every must be positive")

    @property
    def beat(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.lease / 4


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What a worker did: ``taken`` a job, ``recorded`` a node's result (or a job's), ``released``
    a job it stopped or could not lock, ``lost`` a lease, ``failed`` a job it could not run,
    ``waiting`` for a store it cannot write to (job 0); ``probed`` a node (a probe job: its
    outcome is what the node served) and ``probe-failed`` (a probe job that could not probe or
    record, or a round of probes that could not be queued: job 0)."""

    event: str
    job: int
    kind: str
    node: str | None
    deployment: int | None
    worker: str
    outcome: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "job": self.job,
            "kind": self.kind,
            "node": self.node,
            "deployment": self.deployment,
            "worker": self.worker,
            "outcome": self.outcome,
            "detail": self.detail,
        }


class Worker:
    """Runs the jobs of one zone until stopped (or, ``once``, until none is left for it)."""

    def __init__(
        self,
        store: Store,
        options: WorkerOptions,
        *,
        log: Callable[[JobEvent], None] | None = None,
        prober: Prober | None = None,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.options = options
        self.name = name or worker_name(options.zone)
        self.prober = prober
        self._log = log
        self.handled = 0
        # one writer thread: results go to the store in the order nodes end, off the event loop
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="certfleet-jobs")
        # results waiting for the writer (not empty: a write of them is waiting in its queue)
        self._results: list[tuple[Lease, NodeResult, asyncio.Future[bool]]] = []
        self._mutex = threading.Lock()
        # steps begun, by deployment and node, not yet written (not empty: a write is waiting)
        self._steps: dict[int, dict[str, tuple[list[str], bool]]] = {}
        self._prune_at = 0.0  # when the ended probe and check jobs are pruned next (monotonic)
        self._inflight: set[int] = set()  # the jobs held now, each a slot of the batch
        self._freed = asyncio.Event()  # set when a slot was freed

    def _emit(self, event: str, held: Lease, *, outcome: str | None = None, detail: str = "") -> None:
        if self._log is not None:
            job = held.job
            self._log(JobEvent(event, job.id, job.kind, job.node, job.deployment, self.name, outcome, detail))

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Take and run jobs; the number of jobs that ended (recorded or failed) here.

        Up to ``batch`` jobs are held at a time. The jobs of one claim run together (those of a
        deployment through the deploy engine at once); as nodes end and a quarter of the slots
        are free, more are claimed and start beside those still running, so one slow node does
        not hold up the next batch."""
        stop = stop or asyncio.Event()
        opts = self.options
        next_probe = time.monotonic()
        refill = max(1, opts.batch // 4)
        tasks: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()  # of this event loop
        try:
            while not stop.is_set():
                for task in [t for t in tasks if t.done()]:
                    tasks.discard(task)
                    task.result()  # a surprise in a group is this worker's too
                if opts.probe_every is not None and time.monotonic() >= next_probe:
                    await self._probe_round()
                    next_probe = time.monotonic() + opts.probe_every
                free = opts.batch - len(self._inflight)
                taken: list[Lease] = []
                if free >= (refill if tasks else 1):
                    try:
                        taken = await asyncio.to_thread(
                            self.store.claim_jobs,
                            self.name,
                            zone=opts.zone,
                            lease=opts.lease,
                            limit=free,
                            deployment=opts.deployment,
                            kinds=opts.kinds,
                            job=opts.job,
                        )
                    except StoreError as exc:
                        if opts.once:
                            raise
                        # busy past its timeout, or away past the reconnect window: a daemon waits
                        if self._log is not None:
                            self._log(JobEvent("waiting", 0, "-", None, None, self.name, detail=str(exc)))
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), max(opts.poll, 5.0))
                        continue
                if taken:
                    for held in taken:
                        self._inflight.add(held.job.id)
                        self._emit("taken", held, detail=f"attempt {held.job.attempts}")
                    tasks.update(self._start(taken, stop))
                    continue
                if not tasks:
                    if opts.once:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), opts.poll)
                    continue
                # jobs running: wait for slots to free (or a group to end, or stop), at most a poll
                self._freed.clear()
                waits = [asyncio.ensure_future(self._freed.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait([*waits, *tasks], timeout=opts.poll, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
            if tasks:  # stopped: each node finishes or undoes its step, its job goes back
                await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._writer.shutdown(wait=True)
        return self.handled

    def _start(self, taken: list[Lease], stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """The jobs of one claim as tasks: those of other kinds side by side, each deployment's
        nodes through the deploy engine together."""
        groups: dict[int | None, list[Lease]] = {}
        for held in taken:
            if held.job.kind == DEPLOY:
                groups.setdefault(held.job.deployment, []).append(held)
        others = [held for held in taken if held.job.kind != DEPLOY]
        runs = [self._run_group(group, stop) for group in groups.values()]
        if others:
            runs.insert(0, self._run_others(others, stop))
        return [asyncio.create_task(self._holding(run, taken)) for run in runs]

    async def _holding(self, run: Any, taken: list[Lease]) -> None:
        """``run``, then the slots of its jobs are free (those not freed as their node ended)."""
        try:
            await run
        finally:
            self._free(*(held.job.id for held in taken))

    def _free(self, *jobs: int) -> None:
        """These jobs no longer hold a slot of the batch."""
        for job in jobs:
            self._inflight.discard(job)
        self._freed.set()

    async def _probe_round(self) -> None:
        """Queue a ``probe`` job for each node of this worker's zone not probed in the last
        ``probe_every`` seconds (less a tenth: the time a round takes), unique (the zone's other
        workers queue the same jobs, not more); this worker and the others take them as any job.
        At most once an hour, forget the probe and check jobs that ended over a day ago."""
        from certfleet.jobs.endpoint_jobs import CHECK
        from certfleet.jobs.probes import PROBE, queue_probes

        every = (self.options.probe_every or 0) * 0.9
        try:
            await asyncio.to_thread(queue_probes, self.store, self.options.zone, every=every)
            if time.monotonic() >= self._prune_at:
                self._prune_at = time.monotonic() + PRUNE_EVERY
                before = utc_now() - KEEP_ENDED
                await asyncio.to_thread(self.store.prune_jobs, {PROBE, CHECK}, before=before)
        except CertfleetError as exc:
            if self._log is not None:
                self._log(JobEvent("probe-failed", 0, "probe", None, None, self.name, detail=str(exc)))

    # -- one deployment's jobs ------------------------------------------------------------------

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def _finish(self, held: Lease, result: NodeResult) -> bool:
        """Write a job's result (:meth:`Store.finish_nodes`): True when it was written. The results
        that end while a write runs go together in the next one, one transaction for them all."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        with self._mutex:
            waiting = bool(self._results)  # that write takes this result too
            self._results.append((held, result, done))
        if not waiting:
            await self._write(self._write_results)
        return await done

    def _write_results(self) -> None:
        """In the writer thread: every result waiting, in one transaction. When it fails, each is
        tried alone, so one result the store refuses does not hold up the others."""
        with self._mutex:
            batch, self._results = self._results, []
        if not batch:
            return
        try:
            written = self.store.finish_nodes([(held, result) for held, result, _ in batch])
        except CertfleetError as exc:
            if len(batch) == 1:
                _settle(batch[0][2], exc)
                return
            for held, result, done in batch:
                try:
                    _settle(done, held.job.id in self.store.finish_nodes([(held, result)]))
                except CertfleetError as one:
                    _settle(done, one)
            return
        except BaseException as exc:  # each waiting node says it (the job is taken again after its lease)
            for *_, done in batch:
                _settle(done, exc)
            return
        for held, _, done in batch:
            _settle(done, held.job.id in written)

    async def _fail(self, held: Lease, message: str, outcome: Outcome = Outcome.FAILED) -> None:
        now = utc_now()
        result = NodeResult(node=held.job.node or "", outcome=outcome, started_at=now, finished_at=now, output=message)
        try:
            if await self._finish(held, result):
                self.handled += 1
                self._emit("failed", held, outcome=outcome.value, detail=message)
        finally:
            self._free(held.job.id)

    # -- jobs of the other kinds ----------------------------------------------------------------

    async def _run_others(self, leases: list[Lease], stop: asyncio.Event) -> None:
        """Run jobs of the other kinds (:mod:`certfleet.jobs.runner`) side by side, their leases
        kept by heartbeats; each ends with its result, fenced by its token."""
        from certfleet.jobs.runner import JobContext, run_handler

        ctx = JobContext(self.store, self.name, self.options.zone, self.options.deploy, stop)
        ended: set[int] = set()

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.options.beat)
                active = [le for le in leases if le.job.id not in ended]
                with contextlib.suppress(CertfleetError):  # the store is away: fencing keeps writes safe
                    await asyncio.to_thread(self.store.heartbeat, active, lease=self.options.lease)

        async def one(held: Lease) -> None:
            try:
                await ended_one(held)
            finally:
                self._free(held.job.id)

        async def ended_one(held: Lease) -> None:
            done = await run_handler(ctx, held.job)
            ended.add(held.job.id)
            try:
                written = await self._write(
                    functools.partial(self.store.finish_job, held, ok=done.ok, result=done.result)
                )
            except CertfleetError as exc:
                self._emit("lost", held, detail=f"its result could not be written: {exc}")
                return
            if not written:
                self._emit("lost", held, detail="another worker holds the job now")
                return
            self.handled += 1
            if held.job.kind == "probe":  # the node's probe, made and recorded, or not made
                if done.ok:
                    self._emit("probed", held, outcome=str(done.result.get("outcome", "ok")), detail=done.detail)
                else:
                    self._emit("probe-failed", held, outcome="failed", detail=done.detail)
                return
            self._emit("recorded" if done.ok else "failed", held, outcome="ok" if done.ok else "failed",
                       detail=done.detail)  # fmt: skip

        task = asyncio.create_task(beat())
        try:
            await asyncio.gather(*(one(held) for held in leases))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run_group(self, leases: list[Lease], stop: asyncio.Event) -> None:
        first = leases[0].job
        unknown = [le for le in leases if le.job.node is None]
        for held in unknown:
            await self._fail(held, "a deploy job that names no node cannot be run")
        leases = [le for le in leases if le not in unknown]
        if not leases:
            return
        version = int(first.payload.get("version", 0))
        try:
            material = await asyncio.to_thread(self.store.material, first.lineage, version)
            if all("settled" in le.job.payload for le in leases):  # said when it was queued
                settled = {str(le.job.node) for le in leases if le.job.payload["settled"]}
            else:
                settled = await asyncio.to_thread(settled_nodes, self.store, first.lineage, version)
        except CertfleetError as exc:
            for held in leases:
                await self._fail(held, f"version {version} of {first.lineage} cannot be deployed: {exc}")
            return
        specs: dict[str, NodeSpec] = {}
        mine: dict[str, Lease] = {}
        try:  # the batch's nodes in one read
            known = await asyncio.to_thread(self.store.node_specs, [str(le.job.node) for le in leases])
        except CertfleetError as exc:
            for held in leases:
                await self._fail(held, f"node {held.job.node} cannot be deployed: {exc}")
            return
        locks = self.store.node_locks()
        try:
            try:  # the batch's nodes' locks in one statement
                got_locks = await asyncio.to_thread(
                    locks.acquire_many, [n for n in (str(le.job.node) for le in leases) if n in known]
                )
            except CertfleetError as exc:
                for held in leases:
                    await self._fail(held, f"node {held.job.node} cannot be deployed: {exc}")
                return
            for held in leases:
                node = str(held.job.node)
                if node not in known or node not in got_locks:
                    await self._fail(held, f"node {node[:80]!r} cannot be deployed: there is no node of that name")
                    continue
                spec, got = known[node], got_locks[node]
                if not got:
                    # another worker deploys it now (its lease ran out while it worked): not twice
                    await self._write(functools.partial(self.store.release_job, held, delay=self.options.lease))
                    self._emit("released", held, detail="the node is being deployed by another worker")
                    self._free(held.job.id)
                    continue
                specs[node], mine[node] = spec, held
            if mine:
                await self._deploy(material, [specs[n] for n in mine], mine, settled, stop)
        finally:
            await asyncio.to_thread(locks.close)

    async def _deploy(
        self,
        material: Any,
        nodes: Sequence[NodeSpec],
        mine: dict[str, Lease],
        settled: set[str],
        stop: asyncio.Event,
    ) -> None:
        halt = asyncio.Event()  # the outer stop, or a lease lost
        lost: set[int] = set()
        pending: list[asyncio.Future[Any]] = []
        ended: set[str] = set()

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.options.beat)
                active = [le for n, le in mine.items() if n not in ended]
                try:
                    held = await asyncio.to_thread(self.store.heartbeat, active, lease=self.options.lease)
                except CertfleetError:
                    continue  # the store is away: the lease runs on; the fencing keeps writes safe
                gone = [le for le in active if le.job.id not in held and le.job.node not in ended]
                for le in gone:
                    if le.job.id not in lost:
                        lost.add(le.job.id)
                        self._emit("lost", le, detail="its lease ran out and another worker took it")
                if gone:
                    halt.set()

        async def relay() -> None:
            await stop.wait()
            halt.set()

        steps: dict[str, list[str]] = {}

        def on_progress(event: ProgressEvent) -> None:
            if event.step is not None:
                steps.setdefault(event.node, []).append(event.step.value)
                pending.append(asyncio.ensure_future(self._progress(mine[event.node], steps[event.node])))
            elif event.outcome is not None:
                ended.add(event.node)
                self._free(mine[event.node].job.id)
                pending.append(asyncio.ensure_future(self._node_done(mine[event.node], event.outcome, halt, steps)))

        tasks = [asyncio.create_task(beat()), asyncio.create_task(relay())]
        try:
            await deploy(
                material,
                nodes,
                options=self.options.deploy,
                progress=on_progress,
                prober=self.prober,
                stop=halt,
                settled=settled,
            )
        finally:
            for failed in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(failed, BaseException) and not isinstance(failed, asyncio.CancelledError):
                    # the job stays open and is taken again after its lease: said, never silent
                    log.error("a node's result could not be recorded: %s", failed)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _progress(self, held: Lease, steps: Sequence[str], *, done: bool = False) -> None:
        """The steps a node began, in the store for every console to follow (best effort: the
        node's result, written with its job, is what counts)."""
        deployment = held.job.deployment
        if deployment is None or held.job.node is None:
            return
        node = held.job.node
        with self._mutex:  # the steps begun while a write runs go together in the next one
            waiting = bool(self._steps)
            nodes = self._steps.setdefault(deployment, {})
            nodes[node] = (list(steps), done or nodes.get(node, ((), False))[1])
        if not waiting:
            await self._write(self._write_progress)

    def _write_progress(self) -> None:
        with self._mutex:
            pending, self._steps = self._steps, {}
        for deployment, nodes in pending.items():
            done = {n for n, (_, ended) in nodes.items() if ended}
            with contextlib.suppress(CertfleetError):
                self.store.record_progress(deployment, {n: s for n, (s, _) in nodes.items()}, done=done)

    async def _node_done(
        self, held: Lease, outcome: NodeOutcome, halt: asyncio.Event, steps: dict[str, list[str]] | None = None
    ) -> None:
        if halt.is_set() and outcome.outcome in (Outcome.SKIPPED, Outcome.ROLLED_BACK):
            # stopped before its end: the job goes back, to be done again by whoever takes it
            if await self._write(self.store.release_job, held):
                self._emit("released", held, outcome=outcome.outcome.value, detail="stopped")
            return
        try:
            recorded = await self._finish(held, node_result(outcome))
        except CertfleetError as exc:
            # the lease runs out and another worker does the node again: nothing is lost
            self._emit("lost", held, detail=f"its result could not be written: {exc}")
            return
        if recorded:
            self.handled += 1
            await self._progress(held, (steps or {}).get(outcome.node, []), done=True)
            self._emit("recorded", held, outcome=outcome.outcome.value, detail=outcome.message)
        else:
            self._emit("lost", held, outcome=outcome.outcome.value, detail="another worker holds the job now")


def _settle(done: asyncio.Future[bool], value: bool | BaseException) -> None:
    """From the writer thread: ``done`` gets its value (or exception) in its event loop."""

    def settle() -> None:
        if done.done():
            return
        if isinstance(value, BaseException):
            done.set_exception(value)
        else:
            done.set_result(value)

    done.get_loop().call_soon_threadsafe(settle)
