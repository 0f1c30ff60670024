"""Deployments whose last store write failed: kept in a file, recorded by the next command.

A deploy records itself in the store before it touches a node and node by node as it goes; its
final write can still fail (the disk holding the store is full, the database server is gone)
while the nodes already run the new version. The deploy then writes every node's result to a
recovery file, and the next command that opens the store records it and removes the file.

The file goes to ``<home>/recovery/`` or, when that cannot be written (the same full disk), to
``$XDG_STATE_HOME/certfleet/recovery/`` (``~/.local/state/...``). Both folders are private
(0700), each file 0600; a file that is not this user's, or not private, is never read, since
its content becomes history.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certfleet.errors import InputError
from certfleet.fleet.model import Outcome
from certfleet.redact import MAX_TEXT, clean
from certfleet.store import DeploymentState, NodeResult, Store

__all__ = ["Recovered", "record_recovered", "recovery_folders", "write_recovery"]

FOLDER = "recovery"
_KIND = "certfleet-deployment-recovery"
MAX_FILE = 8 * 1024 * 1024


def recovery_folders(home: Path) -> list[Path]:
    """Where recovery files go, in the order tried: beside the store, then the user's state folder."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return [home / FOLDER, base / "certfleet" / FOLDER]


@dataclass(frozen=True, slots=True)
class Recovered:
    """A deployment recorded from a recovery file."""

    deployment: int
    lineage: str
    path: Path


def write_recovery(
    store: Store,
    *,
    deployment: int,
    lineage: str,
    version: int,
    state: DeploymentState,
    results: Sequence[NodeResult],
    finished_at: dt.datetime,
) -> Path | None:
    """Keep what the store could not take; the file written, or None when no folder took it."""
    payload = {
        "kind": _KIND,
        "home": str(store.home.resolve()),
        "deployment": deployment,
        "lineage": lineage,
        "version": version,
        "state": state.value,
        "finished_at": finished_at.isoformat(),
        # a command's output enters a record here first: never a key it printed, even in the file
        "results": [{**r.to_dict(), "output": clean(r.output, MAX_TEXT)} for r in results],
    }
    data = json.dumps(payload, indent=1).encode()
    name = f"deployment-{deployment}-{os.getpid()}.json"
    for folder in recovery_folders(store.home):
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = folder / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                (folder / name).unlink()  # half written: the next folder gets the whole file
            continue
        return path
    return None


def _private(path: Path) -> bool:
    try:
        st = path.lstat()
        folder = path.parent.lstat()
    except OSError:
        return False
    mine = st.st_uid == os.getuid() and folder.st_uid == os.getuid()
    return mine and stat.S_ISREG(st.st_mode) and not (st.st_mode | folder.st_mode) & 0o077


def _result(item: dict[str, Any]) -> NodeResult:
    return NodeResult(
        node=str(item["node"]),
        outcome=Outcome(item["outcome"]),
        started_at=dt.datetime.fromisoformat(item["started_at"]),
        finished_at=dt.datetime.fromisoformat(item["finished_at"]),
        failed_step=item.get("failed_step"),
        output=clean(str(item.get("output") or ""), MAX_TEXT),
        served_fingerprint=item.get("served_fingerprint"),
    )


def record_recovered(store: Store) -> list[Recovered]:
    """Record every recovery file of this store, removing each once it is in the store. A file
    the store still cannot take stays for the next command; one that is not a recovery file of
    this store is left alone."""
    done: list[Recovered] = []
    home = str(store.home.resolve())
    for folder in recovery_folders(store.home):
        try:
            paths = sorted(folder.glob("deployment-*.json"))
        except OSError:
            continue
        for path in paths:
            if not _private(path) or path.stat().st_size > MAX_FILE:
                continue
            try:
                payload = json.loads(path.read_bytes())
                if payload.get("kind") != _KIND or payload.get("home") != home:
                    continue
                results = [_result(r) for r in payload["results"]]
                deployment = int(payload["deployment"])
                state = DeploymentState(payload["state"])
                finished_at = dt.datetime.fromisoformat(payload["finished_at"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            try:
                store.finish_deployment(deployment, results, state=state, finished_at=finished_at)
            except InputError:  # not a deployment of this store (any more)
                continue
            path.unlink()
            done.append(Recovered(deployment, str(payload.get("lineage", "")), path))
    return done
