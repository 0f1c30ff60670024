"""The deploy engine keeps its word: a rollback puts back exactly what the node had, a damaged
version folder is built again, a node without a probe is unchanged when its files match, and a
stop request undoes the step each node is in. Local targets and the prober seam: no server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet.certinfo import fingerprint
from certfleet.fleet.deploy import DeployOptions, Outcome, Prober, ProgressEvent, Step, deploy
from certfleet.fleet.model import Material, NodeSpec, TargetSpec
from certfleet.fleet.targets import make_target
from certfleet.probe import ProbeResult
from conftest import PKI
from support.deploy import NAMES, material

OPTIONS = DeployOptions(probe_wait=1.0, probe_confirm=1)


@pytest.fixture(scope="module")
def three(pki: PKI) -> tuple[Material, Material, Material]:
    return material(pki.inter.leaf(*NAMES)), material(pki.inter.leaf(*NAMES)), material(pki.inter.leaf(*NAMES))


def serving(m: Material) -> Prober:
    """A prober that sees ``m`` served, whatever was deployed."""
    ders = tuple(c.public_bytes(serialization.Encoding.DER) for c in (m.leaf, *m.chain))

    async def prober(host: str, port: int, *, server_name: str | None, timeout: float) -> ProbeResult:
        chain = tuple(x509.load_der_x509_certificate(d) for d in ders)
        return ProbeResult(f"{host}:{port}", host, port, server_name, True, chain, chain_der=ders)

    return prober


def node(folder: Path, **fields: object) -> NodeSpec:
    return NodeSpec("web", NAMES, (TargetSpec("pem", str(folder)),), **fields)  # type: ignore[arg-type]


def live_leaf(folder: Path) -> str:
    return fingerprint(x509.load_pem_x509_certificate((folder / "live" / "cert.pem").read_bytes()))


async def test_a_failed_probe_puts_back_exactly_what_was_live(
    tmp_path: Path, three: tuple[Material, Material, Material]
) -> None:
    v1, v2, v3 = three
    folder = tmp_path / "web"
    for m in (v1, v3, v2):  # v3 was live more recently than v1: rolling "back to the newest other" is wrong
        assert (await deploy(m, [node(folder)])).ok
    # the server is pointed elsewhere: it keeps serving v1 whatever the files say
    probed = node(folder, reload_cmd="true", probe="127.0.0.1:9")
    (again,) = (await deploy(v2, [probed], options=OPTIONS, prober=serving(v1))).nodes
    assert (again.outcome, again.step) == (Outcome.FAILED, Step.PROBE)
    assert "left as they were" in again.message
    assert live_leaf(folder) == fingerprint(v2.leaf)  # what it had before this deploy, not v1 nor v3
    assert again.live == (make_target(probed.targets[0]).version_name(v2),)

    (forward,) = (await deploy(v3, [probed], options=OPTIONS, prober=serving(v1))).nodes
    assert (forward.outcome, forward.step) == (Outcome.ROLLED_BACK, Step.PROBE)
    v2_folder = make_target(probed.targets[0]).version_name(v2)
    assert f"switched back to what it had before (pem:{folder}: live -> versions/{v2_folder})" in forward.message
    assert forward.served == fingerprint(v1.leaf)  # what the node serves now, named in the report
    assert forward.live == (v2_folder,)
    assert live_leaf(folder) == fingerprint(v2.leaf)


async def test_a_damaged_version_folder_is_built_again_and_converges(
    tmp_path: Path, three: tuple[Material, Material, Material]
) -> None:
    v1, _, _ = three
    folder = tmp_path / "web"
    plain = node(folder)
    assert (await deploy(v1, [plain])).ok
    (folder / "live" / "privkey.pem").unlink()  # an interrupted cleanup
    (result,) = (await deploy(v1, [plain])).nodes
    assert result.outcome is Outcome.OK, result
    assert "privkey.pem is missing; building it again" in result.output
    assert (folder / "live" / "privkey.pem").is_file()
    (settled,) = (await deploy(v1, [plain])).nodes
    assert settled.outcome is Outcome.UNCHANGED


async def test_a_node_without_a_probe_is_unchanged_once_settled(
    tmp_path: Path, three: tuple[Material, Material, Material]
) -> None:
    v1, _, _ = three
    folder = tmp_path / "web"
    marks = tmp_path / "reloads"
    plain = node(folder, reload_cmd=f"echo reload >> {marks}")
    assert (await deploy(v1, [plain])).ok
    (again,) = (await deploy(v1, [plain])).nodes
    assert again.outcome is Outcome.UNCHANGED
    assert "no probe" in again.message
    assert marks.read_text().count("reload") == 1  # no second test and reload
    # a node the history does not know as settled on this version (an interrupted deploy) is finished
    (finished,) = (await deploy(v1, [plain], settled=())).nodes
    assert finished.outcome is Outcome.OK
    assert marks.read_text().count("reload") == 2


def stop_at(step: Step, stop: asyncio.Event) -> Callable[[ProgressEvent], None]:
    def progress(event: ProgressEvent) -> None:
        if event.step is step:
            stop.set()

    return progress


async def test_a_stop_during_a_step_undoes_it(tmp_path: Path, three: tuple[Material, Material, Material]) -> None:
    v1, v2, _ = three
    folder = tmp_path / "web"
    assert (await deploy(v1, [node(folder)])).ok
    stop = asyncio.Event()
    slow = node(folder, test_cmd="sleep 0.3", reload_cmd="true")
    report = await deploy(v2, [slow], stop=stop, progress=stop_at(Step.TEST, stop))
    (result,) = report.nodes
    assert report.stopped and not report.ok
    assert (result.outcome, result.step) == (Outcome.ROLLED_BACK, Step.RELOAD)  # the test ran to its end
    assert "the deploy was stopped at reload; switched back" in result.message
    assert live_leaf(folder) == fingerprint(v1.leaf)


async def test_a_stop_before_a_node_changes_anything_leaves_it(
    tmp_path: Path, three: tuple[Material, Material, Material]
) -> None:
    v1, v2, _ = three
    nodes = [NodeSpec(f"n{i}", NAMES, (TargetSpec("pem", str(tmp_path / f"n{i}")),)) for i in range(3)]
    assert (await deploy(v1, nodes)).ok
    stop = asyncio.Event()
    report = await deploy(
        v2, nodes, stop=stop, progress=stop_at(Step.UPLOAD, stop), options=DeployOptions(concurrency=1)
    )
    outcomes = [(n.outcome, n.step) for n in report.nodes]
    assert outcomes[0] == (Outcome.SKIPPED, Step.SWITCH)  # uploaded, not switched: nothing to undo
    assert outcomes[1:] == [(Outcome.SKIPPED, Step.CONNECT)] * 2  # never started
    assert all(live_leaf(tmp_path / f"n{i}") == fingerprint(v1.leaf) for i in range(3))
