"""The autopilot against real peers: Pebble issuing 6-day certificates, BIND for the names, two
real nginx nodes. Each ``renew`` pass issues, imports, deploys to both nodes and proves what they
serve; between passes the clock is moved through certfleet's clock seam (``clock=``) rather than
waited for. The ARI tests put :class:`support.ari_front.AriFront` before Pebble: it stands in for
a newer CA (Debian's Pebble 2.4.0 offers no renewal information)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from certfleet.acme import accounts
from certfleet.acme.ari import cert_id
from certfleet.acme.lookup import DnsSettings
from certfleet.acme.model import RevocationReason, SolverRule
from certfleet.acme.revoke import revoke
from certfleet.autopilot.alerts import Alerts
from certfleet.autopilot.ledger import Ledger
from certfleet.autopilot.renew import Action, RenewReport, RenewSettings, renew
from certfleet.certinfo import fingerprint
from certfleet.fleet.deploy import DeployOptions
from certfleet.fleet.nodes import make_node
from certfleet.renewal import Reason
from certfleet.store import Store
from support import flock_held
from support.ari_front import AriFront
from support.bind import BindServer
from support.console import serve
from support.pebble import GW_IP, MAIN_IP, PebbleServer, WebrootNginx, acme_env, bind, http_port, snakeoil
from support.receivers import WebhookSink
from support.servers import free_port, served_chain

pytestmark = pytest.mark.peer  # Pebble, BIND and nginx

__all__ = ["acme_env", "bind", "http_port"]  # fixtures

LIFETIME = dt.timedelta(days=6)  # a short-lived certificate, as Let's Encrypt's "shortlived" profile
NAMES = {"main": ("acme.test", "www.acme.test"), "gw": ("gw.acme.test", "mbg.acme.test")}


@dataclass
class Clock:
    """certfleet's clock seam: the real time, moved ahead by the test (it keeps running, so a
    certificate Pebble issues a moment later is already valid)."""

    ahead: dt.timedelta = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.ahead

    def jump(self, to: dt.datetime) -> None:
        self.ahead = to - dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory, bind: BindServer, http_port: int) -> Iterator[PebbleServer]:
    """Pebble issuing certificates that live 6 days (its certificateValidityPeriod)."""
    folder = tmp_path_factory.mktemp("pebble")
    with PebbleServer(folder, http_port=http_port, dns=bind.address, validity=int(LIFETIME.total_seconds())) as server:
        yield server


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, http_port: int) -> Iterator[dict[str, WebrootNginx]]:
    """nginx for main (127.0.0.2) and gw (127.0.0.3): a webroot for http-01, and TLS from certfleet's files."""
    base = tmp_path_factory.mktemp("nodes")
    placeholder = snakeoil(base / "snakeoil")
    with ExitStack() as stack:
        out = {}
        for name, ip in (("main", MAIN_IP), ("gw", GW_IP)):
            server = WebrootNginx(
                base / name, webroot=base / name / "www", http_host=ip, http_port=http_port,
                live=base / name / "tls" / "live", placeholder=placeholder,
            )  # fmt: skip
            stack.enter_context(server)
            server.point_at_live()
            out[name] = server
        yield out


@pytest.fixture
def front(tmp_path: Path, pebble: PebbleServer) -> Iterator[AriFront]:
    with AriFront(tmp_path / "front", pebble) as server:
        yield server


def setup_store(
    store: Store,
    pebble: PebbleServer,
    nodes: dict[str, WebrootNginx],
    *,
    front: AriFront | None = None,
    solvers: tuple[SolverRule, ...] = (),
) -> None:
    store.add_trust_anchor(x509.load_pem_x509_certificate(pebble.root_pem()))
    directory, bundle = (front.directory, front.ca_bundle) if front else (pebble.directory, pebble.ca_bundle)
    accounts.add_acme_issuer(store, "pebble", directory, agree_tos=True, ca_bundle=bundle.read_text())
    for name, server in nodes.items():
        node = make_node(
            name, NAMES[name], [f"nginx:{server.workdir / 'tls'}"], test_cmd=server.test_cmd,
            reload_cmd=server.reload_cmd, probe=server.probe, options={"webroot": str(server.webroot)},
        )  # fmt: skip
        store.put_node(node)
    store.put_lineage("web", nodes=list(nodes))
    store.set_policy("web", issuers=["pebble"], solvers=solvers)


def run(store: Store, clock: Clock, **kw: object) -> RenewReport:
    return asyncio.run(renew(store, clock=clock, dns=DnsSettings.from_env(), **kw))  # type: ignore[arg-type]


def strict_handshake(server: WebrootNginx, name: str, root: Path) -> str:
    """The fingerprint a strict client (chain and name checked against Pebble's root) is served."""
    context = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection((server.host, server.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return fingerprint(x509.load_der_x509_certificate(der))


def only(report: RenewReport) -> object:
    (lineage,) = report.lineages
    return lineage


@pytest.mark.usefixtures("acme_env")
def test_renewed_deployed_and_proven_several_times_in_a_row(
    pebble: PebbleServer, nodes: dict[str, WebrootNginx], tmp_path: Path
) -> None:
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    clock = Clock()
    with Store.init() as store:
        setup_store(store, pebble, nodes)
        first = run(store, clock)
        (lineage,) = first.lineages
        assert lineage.action is Action.ISSUED, lineage.to_dict()
        assert lineage.plan.reason is Reason.NO_CERTIFICATE and lineage.deployed is not None
        assert {n.node: n.outcome.value for n in lineage.deployed.report.nodes} == {"main": "ok", "gw": "ok"}

        quiet = run(store, clock)
        (idle,) = quiet.lineages
        active = store.lineage("web").active
        assert active is not None and active.not_after is not None and active.not_before is not None
        # Pebble's certificateValidityPeriod (notAfter is its last second, inclusive)
        assert abs(active.not_after - active.not_before - LIFETIME) <= dt.timedelta(seconds=1)
        assert idle.action is Action.NOTHING and idle.plan.reason is Reason.HALF_LEFT  # under 10 days: half
        assert idle.plan.at is not None and idle.plan.at <= active.not_after - LIFETIME / 2
        assert "half of its 6-day lifetime" in idle.summary

        seen = [active.fingerprint]
        for round_ in range(3):
            active = store.lineage("web").active
            assert active is not None and active.not_after is not None
            clock.jump(active.not_after - LIFETIME * 0.45)  # past the half-way point: due
            report = run(store, clock)
            (renewed,) = report.lineages
            assert renewed.action is Action.ISSUED, renewed.to_dict()
            assert renewed.plan.reason is Reason.HALF_LEFT and renewed.version == active.number + 1
            now_active = store.lineage("web").active
            assert now_active is not None and now_active.fingerprint not in seen
            seen.append(now_active.fingerprint)
            for name, server in nodes.items():  # proven by certfleet, and seen by an independent strict client
                assert strict_handshake(server, NAMES[name][0], root) == now_active.fingerprint, (round_, name)
                assert fingerprint(served_chain(server.probe, NAMES[name][-1])[0]) == now_active.fingerprint
            assert report.ok and not report.alerts
        history = store.deployments("web")
        assert len(history) == 4 and all(d.ok for d in history)
        renew_audit = [e.detail for e in store.audit_log(action="renew")]
        assert [d["action"] for d in renew_audit] == ["issued"] * 4


@pytest.mark.usefixtures("acme_env")
def test_the_cas_renewal_window_early_renewal_and_replaces(
    pebble: PebbleServer, nodes: dict[str, WebrootNginx], front: AriFront
) -> None:
    """ARI through the front, which stands in for a newer CA than Debian's Pebble 2.4.0."""
    clock = Clock()
    front.retry_after = 3600
    with Store.init() as store:
        setup_store(store, pebble, nodes, front=front)
        first = run(store, clock)
        assert only(first).action is Action.ISSUED  # type: ignore[attr-defined]
        assert "replaces" not in front.orders[-1]  # nothing to replace yet
        active = store.lineage("web").active
        assert active is not None and active.leaf is not None
        one = cert_id(active.leaf)

        start = clock() + dt.timedelta(days=1)
        front.windows[one] = (start, start + dt.timedelta(hours=6))
        waiting = only(run(store, clock))
        assert waiting.action is Action.NOTHING and waiting.plan.reason is Reason.ARI_WINDOW  # type: ignore[attr-defined]
        at = waiting.plan.at  # type: ignore[attr-defined]
        assert start <= at <= start + dt.timedelta(hours=6) and "renewal window" in waiting.summary  # type: ignore[attr-defined]
        assert front.asked == [one]
        assert only(run(store, clock)).plan.at == at  # type: ignore[attr-defined]  # the same point every pass
        assert front.asked == [one]  # not asked again before its Retry-After

        clock.jump(at + dt.timedelta(minutes=1))
        renewed = only(run(store, clock))
        assert renewed.action is Action.ISSUED and renewed.plan.reason is Reason.ARI_WINDOW  # type: ignore[attr-defined]
        assert front.orders[-1]["replaces"] == one  # the new order names the certificate it replaces
        assert renewed.issued is not None and renewed.issued.replaced == one  # type: ignore[attr-defined]

        # the CA flags the new certificate (say it must revoke it): its window moves into the past
        active = store.lineage("web").active
        assert active is not None and active.leaf is not None
        two = cert_id(active.leaf)
        later = clock() + dt.timedelta(days=2)
        front.windows[two] = (later, later + dt.timedelta(hours=6))
        assert only(run(store, clock)).action is Action.NOTHING  # type: ignore[attr-defined]
        front.windows[two] = (clock() - dt.timedelta(hours=2), clock() - dt.timedelta(hours=1))
        front.explanation = "https://ca.example/incidents/42"
        assert only(run(store, clock)).action is Action.NOTHING  # type: ignore[attr-defined]  # Retry-After not over
        clock.jump(clock() + dt.timedelta(seconds=3601))
        early = only(run(store, clock))
        assert early.action is Action.ISSUED and early.plan.reason is Reason.ARI_NOW  # type: ignore[attr-defined]
        assert "https://ca.example/incidents/42" in early.plan.detail  # type: ignore[attr-defined]
        assert front.orders[-1]["replaces"] == two
        # asked again only once its Retry-After had passed: after the clock's jump to the window, and
        # for the new certificate at its first pass and an hour later
        assert front.asked == [one, one, two, two]

        # renewed already, by another client of the account: the CA refuses 'replaces', the order goes without
        active = store.lineage("web").active
        assert active is not None and active.leaf is not None
        three = cert_id(active.leaf)
        front.windows[three] = (clock() + dt.timedelta(days=2), clock() + dt.timedelta(days=3))
        front.already_replaced.add(three)
        again = only(run(store, clock, force=True))
        assert again.action is Action.ISSUED and again.issued.replaced is None  # type: ignore[attr-defined]
        assert front.orders[-2].get("replaces") == three and "replaces" not in front.orders[-1]


# -- faults ------------------------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


def dns01(bind: BindServer, tmp_path: Path) -> tuple[SolverRule, ...]:
    """Every name proven by dns-01 through BIND: issuing does not depend on the nodes."""
    return (SolverRule.parse(f"*=dns-01:rfc2136:{bind.credentials(tmp_path / 'tsig.ini')}"),)


def serves(server: WebrootNginx, name: str) -> str:
    return fingerprint(served_chain(server.probe, name)[0])


@pytest.mark.usefixtures("acme_env")
def test_the_ca_down_retries_with_backoff_alerts_once_and_leaves_the_live_version(
    pebble: PebbleServer, nodes: dict[str, WebrootNginx], front: AriFront, webhook: WebhookSink
) -> None:
    clock = Clock()
    front.offer_ari = False  # the CA as Pebble is: the lifetime rule
    with Store.init() as store:
        setup_store(store, pebble, nodes, front=front)
        Alerts(store).add(webhook.url)
        assert only(run(store, clock)).action is Action.ISSUED  # type: ignore[attr-defined]
        live = store.lineage("web").active
        assert live is not None and live.not_after is not None

        front.down()
        clock.jump(live.not_after - LIFETIME * 0.45)
        failed = only(run(store, clock))
        assert failed.action is Action.FAILED and "the CA did not answer" in (failed.error or "")  # type: ignore[attr-defined]
        assert webhook.titles() == ["certfleet: renewal of web failed"]
        assert (
            "the CA did not answer" in webhook.posts[0]["message"]
            and "untouched: version 1" in webhook.posts[0]["message"]
        )

        waiting = only(run(store, clock))  # inside the backoff: no try
        assert waiting.action is Action.WAITING and waiting.plan.backing_off  # type: ignore[attr-defined]
        clock.jump(clock() + dt.timedelta(minutes=6))
        assert only(run(store, clock)).action is Action.FAILED  # type: ignore[attr-defined]  # tried again
        assert Ledger(store).state("web").failures == 2
        clock.jump(clock() + dt.timedelta(minutes=6))
        assert only(run(store, clock)).action is Action.WAITING  # type: ignore[attr-defined]  # now 10 minutes
        assert webhook.titles() == ["certfleet: renewal of web failed"]  # one alert for the one event
        assert store.lineage("web").active == live  # the live version untouched, in the store and on the nodes
        for name, server in nodes.items():
            assert serves(server, NAMES[name][0]) == live.fingerprint

        front.up()  # the CA is back
        clock.jump(clock() + dt.timedelta(minutes=5))
        back = only(run(store, clock))
        assert back.action is Action.ISSUED and back.ok  # type: ignore[attr-defined]
        assert webhook.titles()[1:] == ["certfleet: resolved: renewal of web failed"]
        assert Ledger(store).state("web").failures == 0


@pytest.mark.usefixtures("acme_env")
def test_one_node_down_the_others_deployed_and_an_alert_for_that_node(
    pebble: PebbleServer, nodes: dict[str, WebrootNginx], bind: BindServer, webhook: WebhookSink, tmp_path: Path
) -> None:
    clock = Clock()
    with Store.init() as store:
        setup_store(store, pebble, nodes, solvers=dns01(bind, tmp_path))
        Alerts(store).add(webhook.url)
        assert only(run(store, clock)).action is Action.ISSUED  # type: ignore[attr-defined]
        gw = store.node("gw")
        known_hosts = tmp_path / "known_hosts"
        known_hosts.touch()
        # gw's machine is down: nothing answers where its files go
        options = {"known_hosts": str(known_hosts), "connect_timeout": 3}
        store.put_node(dataclasses.replace(gw, transport=f"ssh://certfleet@127.0.0.1:{free_port()}", options=options))
        before = serves(nodes["gw"], NAMES["gw"][0])

        renewed = only(run(store, clock, force=True))
        assert renewed.action is Action.ISSUED and not renewed.ok  # type: ignore[attr-defined]
        outcomes = {n.node: (n.outcome.value, n.step) for n in renewed.deployed.report.nodes}  # type: ignore[attr-defined]
        assert outcomes["main"] == ("ok", None) and outcomes["gw"][0] == "failed"
        assert renewed.owed == ("gw",)  # type: ignore[attr-defined]
        active = store.lineage("web").active
        assert active is not None and serves(nodes["main"], NAMES["main"][0]) == active.fingerprint
        assert serves(nodes["gw"], NAMES["gw"][0]) == before  # untouched
        titles = webhook.titles()
        assert "certfleet: deploy of web to gw failed" in titles and "certfleet: gw serves an older version" in titles
        assert not any("main" in t for t in titles)

        store.put_node(gw)  # gw is back
        assert only(run(store, clock)).action is Action.WAITING  # type: ignore[attr-defined]  # after a backoff
        clock.jump(clock() + dt.timedelta(minutes=6))
        carried = only(run(store, clock))
        assert carried.action is Action.DEPLOYED and carried.ok  # type: ignore[attr-defined]
        assert [n.node for n in carried.deployed.report.nodes] == ["gw"]  # type: ignore[attr-defined]  # only gw
        assert serves(nodes["gw"], NAMES["gw"][0]) == active.fingerprint
        resolved = [t for t in webhook.titles() if t.startswith("certfleet: resolved:")]
        assert sorted(resolved) == [
            "certfleet: resolved: deploy of web to gw failed",
            "certfleet: resolved: gw serves an older version",
        ]


@pytest.mark.usefixtures("acme_env")
def test_a_probe_that_sees_the_old_certificate_rolls_that_node_back_and_alerts(
    pebble: PebbleServer, nodes: dict[str, WebrootNginx], bind: BindServer, webhook: WebhookSink, tmp_path: Path
) -> None:
    clock = Clock()
    settings = RenewSettings(deploy=DeployOptions(probe_wait=2.0))
    with Store.init() as store:
        setup_store(store, pebble, nodes, solvers=dns01(bind, tmp_path))
        Alerts(store).add(webhook.url)
        assert only(run(store, clock, settings=settings)).action is Action.ISSUED  # type: ignore[attr-defined]
        old = store.lineage("web").active
        assert old is not None
        gw = store.node("gw")
        store.put_node(dataclasses.replace(gw, reload_cmd="true"))  # a reload that reloads nothing

        renewed = only(run(store, clock, settings=settings, force=True))
        node = {n.node: n for n in renewed.deployed.report.nodes}  # type: ignore[attr-defined]
        assert node["main"].outcome.value == "ok"
        assert node["gw"].outcome.value == "rolled-back" and node["gw"].step.value == "probe"
        assert "still serves another certificate" in node["gw"].message
        assert serves(nodes["gw"], NAMES["gw"][0]) == old.fingerprint
        assert "certfleet: deploy of web to gw was rolled back" in webhook.titles()
        assert not any("main" in t for t in webhook.titles())


@pytest.mark.usefixtures("acme_env")
def test_two_renew_processes_at_once_one_runs(
    pebble: PebbleServer, nodes: dict[str, WebrootNginx], bind: BindServer, tmp_path: Path
) -> None:
    with Store.init() as store:
        setup_store(store, pebble, nodes, solvers=dns01(bind, tmp_path))
        main = store.node("main")
        # the first pass holds the lock a while: its config test takes 3 seconds
        store.put_node(dataclasses.replace(main, test_cmd=f"sleep 3 && {main.test_cmd}"))
        lock = store.home / "locks" / "autopilot.lock"
    argv = [sys.executable, "-m", "certfleet", "renew", "--json"]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not flock_held(lock):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.run([*argv[:-1]], capture_output=True, timeout=120, check=False)
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err.decode()
    assert second.returncode == 0
    said = second.stderr.decode().strip()
    assert said == f"another certfleet renew is running (pid {first.pid}): this one stops", said
    assert second.stdout == b""
    report = json.loads(out)
    assert [r["action"] for r in report["lineages"]] == ["issued"]
    with Store.open() as store:
        assert [e.detail["action"] for e in store.audit_log(action="renew")] == ["issued"]
        assert len(store.deployments("web")) == 1


@pytest.mark.usefixtures("acme_env")
def test_serve_runs_the_autopilot_in_its_process(
    pebble: PebbleServer, nodes: dict[str, WebrootNginx], bind: BindServer, tmp_path: Path
) -> None:
    with Store.init() as store:
        setup_store(store, pebble, nodes, solvers=dns01(bind, tmp_path))
        home = store.home
    with serve(home, "--renew-every", "1") as served:
        deadline = time.monotonic() + 90
        while "autopilot: web: issued" not in served.err():
            assert time.monotonic() < deadline and served.proc.poll() is None, served.out() + served.err()
            time.sleep(0.2)
        assert "autopilot: a renewal pass now, then every 1 min" in served.out()
    with Store.open(home) as store:
        active = store.lineage("web").active
        assert active is not None
        (deployment,) = store.deployments("web")
        assert deployment.ok and deployment.actor == "certfleet-autopilot"
        assert Ledger(store).state("web").last_outcome is not None
    for name, server in nodes.items():
        assert serves(server, NAMES[name][0]) == active.fingerprint


@pytest.mark.usefixtures("acme_env")
def test_a_revoked_certificate_is_renewed_at_once_and_a_node_still_serving_it_is_told(
    pebble: PebbleServer, nodes: dict[str, WebrootNginx], bind: BindServer, webhook: WebhookSink, tmp_path: Path
) -> None:
    clock = Clock()
    settings = RenewSettings(deploy=DeployOptions(probe_wait=2.0))
    with Store.init() as store:
        setup_store(store, pebble, nodes, solvers=dns01(bind, tmp_path))
        Alerts(store).add(webhook.url)
        assert only(run(store, clock, settings=settings)).action is Action.ISSUED  # type: ignore[attr-defined]
        revoked = store.lineage("web").active
        assert revoked is not None and revoked.leaf is not None
        revoke(store, "web", RevocationReason.KEY_COMPROMISE)  # at Pebble, and in the store
        assert pebble.cert_status(revoked.leaf.serial_number)["Status"] == "Revoked"
        gw = store.node("gw")
        store.put_node(dataclasses.replace(gw, reload_cmd="true"))  # gw will not take the new one

        renewed = only(run(store, clock, settings=settings))  # the same minute: the plan says at once
        assert renewed.action is Action.ISSUED and renewed.plan.reason is Reason.REVOKED  # type: ignore[attr-defined]
        active = store.lineage("web").active
        assert active is not None and serves(nodes["main"], NAMES["main"][0]) == active.fingerprint
        assert serves(nodes["gw"], NAMES["gw"][0]) == revoked.fingerprint
        titles = webhook.titles()
        assert "certfleet: gw serves a revoked certificate" in titles
        assert "certfleet: deploy of web to gw was rolled back" in titles
        assert not any("serves an older version" in t for t in titles)  # said once, as the revoked one
