"""``certfleet check`` as a user runs it: the report, --json, --fail-on, --file, --nodes and exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from certfleet.fleet.model import NodeSpec, TargetSpec
from support.tls import Faults, Nginx, faults, free_port, nginx, roots, run_nginx

pytestmark = pytest.mark.peer
__all__ = ["faults", "nginx", "roots"]


def _check(cli: Any, roots: Path, *args: str | Path) -> Any:
    return cli("check", "--trust-only", roots, "--name", "www.example.test", *args)


def test_good_endpoint_exits_0(cli: Any, nginx: Nginx, roots: Path) -> None:
    result = _check(cli, roots, nginx.target("good"))
    assert result.code == 0, result.out + result.err
    assert nginx.target("good") in result.out
    assert "1 endpoint in" in result.out
    assert "1 ok" in result.out


@pytest.mark.parametrize(
    ("site", "code"),
    [("incomplete", "incomplete-chain"), ("wrong-order", "wrong-order"), ("expired", "expired"),
     ("wrong-name", "name-mismatch"), ("sha1", "weak-signature"), ("self-signed", "self-signed")],
)  # fmt: skip
def test_failing_endpoint_exits_1_and_says_why(cli: Any, nginx: Nginx, roots: Path, site: str, code: str) -> None:
    result = _check(cli, roots, nginx.target(site))
    assert result.code == 1
    assert code in result.out
    assert "FAIL" in result.out
    assert "hint:" in result.out


def test_json_is_a_list_of_endpoints(cli: Any, nginx: Nginx, roots: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    result = _check(cli, roots, "--json", nginx.target("good"), nginx.target("incomplete"), closed)
    assert result.code == 1
    data = result.json()
    assert [d["target"] for d in data] == [nginx.target("good"), nginx.target("incomplete"), closed]
    good, incomplete, down = data
    assert good["ok"] is True
    assert good["problems"] == []
    assert good["tls_version"] == "TLSv1.3"
    assert good["days_left"] in (88, 89)
    assert [c["subject"] for c in good["chain"]] == [
        "CN=www.example.test",
        "CN=Faults Issuing Intermediate,O=certfleet tests",
        "CN=Faults Upper Intermediate,O=certfleet tests",
    ]
    assert [p["code"] for p in incomplete["problems"]] == ["incomplete-chain"]
    assert down["ok"] is False
    assert down["chain"] == []
    assert down["days_left"] is None
    assert [p["code"] for p in down["problems"]] == ["unreachable"]


@pytest.mark.parametrize(("fail_on", "exit_code"), [(None, 0), ("error", 0), ("warning", 1), ("WARNING", 1)])
def test_fail_on(cli: Any, nginx: Nginx, roots: Path, fail_on: str | None, exit_code: int) -> None:
    extra = ["--fail-on", fail_on] if fail_on else []
    result = _check(cli, roots, *extra, nginx.target("root-sent"))
    assert result.code == exit_code, result.out
    assert "root-included" in result.out


def test_file_of_targets(cli: Any, nginx: Nginx, roots: Path, tmp_path: Path) -> None:
    listing = tmp_path / "fleet.txt"
    listing.write_text(
        f"# fleet\n{nginx.target('good')}\n\n{nginx.target('expiring')}   # renew soon\n"
        f"{nginx.target('wrong-name')} other.example.test\n"
    )
    result = cli("check", "--trust-only", roots, "--name", "www.example.test", "--file", listing, "--json")
    assert result.code == 0, result.out
    data = result.json()
    assert [d["name"] for d in data] == ["www.example.test", "www.example.test", "other.example.test"]
    assert [[p["code"] for p in d["problems"]] for d in data] == [[], ["expiring-soon"], []]


def test_stdin_list_in_a_real_process(cli_proc: Any, nginx: Nginx, roots: Path) -> None:
    listing = f"{nginx.target('good')}\n{nginx.target('incomplete')}\n".encode()
    result = cli_proc("check", "--trust-only", roots, "--name", "www.example.test", "-f", "-", input=listing)
    assert result.code == 1, result.err
    assert "incomplete-chain" in result.out
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["check"], "nothing to check"),
        (["check", "bad_host:443"], "underscore"),
        (["check", "host.example:99999"], "port"),
        (["check", "--lineage", "web", "a.example"], "--lineage goes with --nodes"),
        (["check", "--starttls", "pop3", "a.example"], "pop3"),
        (["check", "--fail-on", "info", "a.example"], "info"),
    ],
)
def test_bad_input_exits_2(cli: Any, args: list[str], words: str) -> None:
    result = cli(*args)
    assert result.code == 2
    assert words in result.err
    assert "Traceback" not in result.err


def test_missing_trust_file_exits_2(cli: Any, tmp_path: Path) -> None:
    result = cli("check", "--trust-only", tmp_path / "missing.pem", "a.example")
    assert result.code == 2
    assert "missing.pem" in result.err


def test_nodes_from_the_store(cli: Any, nginx: Nginx, faults: Faults, certfleet_home: Path, tmp_path: Path) -> None:
    from certfleet.store import Store
    from certfleet.trust import TrustStore

    with Store.init(certfleet_home) as store:
        for node, site in (("web1", "good"), ("web2", "incomplete")):
            store.add_node(
                NodeSpec(
                    name=node,
                    names=("www.example.test",),
                    targets=(TargetSpec("pem", str(tmp_path / node)),),
                    probe=nginx.target(site),
                )
            )
        store.add_node(NodeSpec(name="web3", names=("www.example.test",), targets=(TargetSpec("pem", "/x"),)))
        # the store's own roots are trusted when its nodes are checked
        for cert in TrustStore.from_pem(faults.roots_pem).certs:
            store.add_trust_anchor(cert)
    result = cli("check", "--nodes", "--json")
    assert result.code == 1, result.err
    data = result.json()
    assert [(d["node"], d["ok"]) for d in data] == [("web1", True), ("web2", False)]
    assert [p["code"] for p in data[1]["problems"]] == ["incomplete-chain"]
    assert "web3" in result.err  # skipped: no probe endpoint, and said so


def test_a_host_by_name_trusts_the_store_roots_and_the_report_shows_the_chain_and_cipher(
    cli: Any, nginx: Nginx, faults: Faults, certfleet_home: Path
) -> None:
    from certfleet.store import Store
    from certfleet.trust import TrustStore

    before = cli("check", nginx.target("good"), "--name", "www.example.test")
    assert before.code == 1 and "untrusted" in before.out  # no store: Mozilla's roots only
    with Store.init(certfleet_home) as store:
        for cert in TrustStore.from_pem(faults.roots_pem).certs:
            store.add_trust_anchor(cert)
    result = cli("check", nginx.target("good"), "--name", "www.example.test")
    assert result.code == 0, result.out  # the store's roots, as for --nodes
    flat = " ".join(result.out.split())
    assert "chain as sent" in flat
    assert "leaf: www.example.test" in flat and "intermediate: Faults Issuing Intermediate" in flat
    assert "a trusted root (not served)" in flat
    assert "TLSv1.3, cipher TLS_" in flat


def test_nodes_without_a_store_is_an_environment_error(cli: Any, certfleet_home: Path) -> None:
    result = cli("check", "--nodes")
    assert result.code == 3
    assert "certfleet init" in result.err


def test_deadline_in_the_cli(cli: Any, roots: Path) -> None:
    import socket

    with socket.socket() as quiet:
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(16)
        port = quiet.getsockname()[1]
        result = cli("check", "--trust-only", roots, "--json", "--deadline", "0.3", "--timeout", "30",
                     f"127.0.0.1:{port}")  # fmt: skip
    assert result.code == 1
    data = result.json()
    assert [p["code"] for p in data[0]["problems"]] == ["timeout"]
    assert "overall deadline" in data[0]["problems"][0]["message"]


def test_long_runs_list_only_what_needs_a_look(cli: Any, tmp_path: Path) -> None:
    from certfleet.testing import TestCA, make_key
    from support.servers import Site

    root = TestCA.root("Many Root")
    key = make_key()
    sites = [
        Site(f"web{i:02d}", (leaf := root.leaf(f"web{i:02d}.example.test", private_key=key)).fullchain_pem(),
             leaf.key_pem())
        for i in range(55)
    ]  # fmt: skip
    expired = root.leaf("old.example.test", private_key=key, days=1, not_before=root.cert.not_valid_before_utc)
    sites.append(Site("old", expired.fullchain_pem(), expired.key_pem()))
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    with run_nginx(tmp_path / "nginx", sites) as server:
        listing = tmp_path / "fleet.txt"
        listing.write_text("".join(f"{server.target(s.name)} {s.name}.example.test\n" for s in sites))
        short = cli("check", "--trust-only", tmp_path / "root.pem", "-f", listing)
        every = cli("check", "--trust-only", tmp_path / "root.pem", "-f", listing, "--all")
    assert short.code == every.code == 1
    assert "old.example.test" in short.out
    assert "web07.example.test" not in short.out
    assert "55 without problems not listed" in short.out
    assert "web07.example.test" in every.out
    assert "not listed" not in every.out


def test_low_file_limit_lowers_concurrency_instead_of_failing(nginx: Nginx, roots: Path, tmp_path: Path) -> None:
    import json
    import resource
    import subprocess
    import sys

    listing = tmp_path / "many.txt"
    listing.write_text("".join(f"{nginx.target('good')} n{i}.example.test\n" for i in range(150)))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    proc = subprocess.run(
        [sys.executable, "-m", "certfleet", "check", "--trust-only", roots, "-f", listing, "--json",
         "--concurrency", "500"],
        capture_output=True, preexec_fn=low_limit, timeout=120, check=False,
    )  # fmt: skip
    data = json.loads(proc.stdout)
    assert len(data) == 150
    # every handshake happened: only the planted name mismatch, never "too many open files"
    assert {p["code"] for d in data for p in d["problems"]} == {"name-mismatch"}
