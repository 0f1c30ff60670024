"""A deployment's progress in the store: each node's steps as they begin, its result once done, read
by any process sharing the store while the deploy runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.errors import NotFoundError
from certfleet.fleet.model import NodeSpec, Outcome, TargetSpec
from certfleet.fleet.rollout import prepare_deploy
from certfleet.store import DeploymentState, NodeResult, Store
from conftest import PKI
from support.postgres import Backend, backend, pg_url, postgres

__all__ = ["backend", "pg_url", "postgres"]

UTC = dt.UTC


@pytest.fixture
def store(backend: Backend, pki: PKI) -> Iterator[Store]:
    s = Store.init()
    s.add_trust_anchor(pki.root.cert)
    yield s
    s.close()


def _node(tmp_path: Path, name: str, *, test_cmd: str | None = None) -> NodeSpec:
    return NodeSpec(name, ("www.example.test",), (TargetSpec("pem", str(tmp_path / name)),), test_cmd=test_cmd)


def test_steps_are_kept_per_node_and_results_shown_only_once_done(store: Store, tmp_path: Path, pki: PKI) -> None:
    for name in ("a", "b"):
        store.add_node(_node(tmp_path, name), lineage="web")
    version = store.issue("web", pki.leaf.cert, pki.leaf.chain, key=pki.leaf.key)
    t0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    deployment = store.start_deployment("web", version.number, ["a", "b"], started_at=t0)

    fresh = store.deployment_progress(deployment)
    assert fresh.running and [(n.node, n.steps, n.done) for n in fresh.nodes] == [("a", (), False), ("b", (), False)]

    store.record_progress(deployment, {"a": ["render"], "b": ["render"]})
    store.record_progress(deployment, {"a": ["render", "connect", "upload"]})  # written over, not added
    store.record_node(deployment, NodeResult("b", Outcome.FAILED, t0, t0, failed_step="render", output="no\ndisk"))
    middle = store.deployment_progress(deployment)
    a, b = middle.nodes
    assert (a.steps, a.current, a.result) == (("render", "connect", "upload"), "upload", None)
    assert (b.steps, b.done) == (("render",), False)  # its result is written, but not said to be final yet
    store.record_progress(deployment, {"b": ["render"]}, done={"b"})
    b = store.deployment_progress(deployment).nodes[1]
    assert b.done and b.result is not None and b.result.outcome is Outcome.FAILED and b.current is None
    assert b.to_dict()["outcome"] == {
        "outcome": "failed",
        "step": "render",
        "message": "no",
        "output": "disk",
        "served": None,
        "started_at": t0.isoformat(),
        "finished_at": t0.isoformat(),
    }

    store.finish_deployment(deployment, [NodeResult("a", Outcome.OK, t0, t0), NodeResult("b", Outcome.FAILED, t0, t0)])
    over = store.deployment_progress(deployment)
    assert not over.running and over.deployment.state is DeploymentState.FINISHED and not over.ok
    assert [n.done for n in over.nodes] == [True, True]  # once over, every result is final
    assert over.nodes[0].steps == ("render", "connect", "upload")

    with pytest.raises(NotFoundError, match=f"no deployment {deployment + 1}"):
        store.deployment_progress(deployment + 1)


def test_a_running_deploy_is_followed_through_the_store_as_it_runs(store: Store, tmp_path: Path, pki: PKI) -> None:
    release = tmp_path / "release"
    waiting = f"while [ ! -e {release} ]; do sleep 0.05; done"
    store.add_node(_node(tmp_path, "fast"), lineage="web")
    store.add_node(_node(tmp_path, "slow", test_cmd=waiting), lineage="web")
    store.issue("web", pki.leaf.cert, pki.leaf.chain, key=pki.leaf.key)
    rollout = prepare_deploy(store, "web")
    done: list[object] = []
    runner = threading.Thread(target=lambda: done.append(asyncio.run(rollout.run())))
    runner.start()
    try:
        # another connection to the store, as another process would have
        with Store.open(store.home) as watcher:
            deadline = time.monotonic() + 60
            while True:
                found = watcher.deployments("web")
                if found:
                    progress = watcher.deployment_progress(found[0].id)
                    fast, slow = progress.nodes
                    if fast.done and slow.current == "test":
                        break
                assert time.monotonic() < deadline, "the deploy's progress never reached the store"
                time.sleep(0.05)
            assert progress.running and not slow.done
            assert slow.steps[0] == "render" and slow.steps[-1] == "test"
            assert fast.result is not None and fast.result.outcome is Outcome.OK
            release.touch()
            runner.join(60)
            assert done, "the deploy did not end"
            over = watcher.deployment_progress(progress.deployment.id)
    finally:
        release.touch()
        runner.join(60)
    assert over.ok and not over.running
    assert [(n.node, n.result.outcome if n.result else None) for n in over.nodes] == [
        ("fast", Outcome.OK),
        ("slow", Outcome.OK),
    ]
    assert "test" in over.nodes[1].steps and "test" not in over.nodes[0].steps
