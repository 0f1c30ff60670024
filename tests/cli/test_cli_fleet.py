"""The fleet commands as a user runs them: init, node, apply/export-fleet, request, import, status,
history, export, trust; exit codes and messages included."""

from __future__ import annotations

import io
import random
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs12

from certfleet import testing


@pytest.fixture(scope="module")
def ca() -> testing.TestCA:
    root = testing.TestCA.root("cli fleet root")
    return root.intermediate("cli fleet inter 1", path_length=1).intermediate("cli fleet inter 2")


def _ca_zip(ca: testing.TestCA, leaf: x509.Certificate, path: Path) -> Path:
    """What a CA sends: the server certificate, the intermediates in any order, the root."""
    members = [(f"intermediate{i}.crt", c) for i, c in enumerate(ca.chain)]
    random.Random(1).shuffle(members)
    members += [("server.crt", leaf), ("root.crt", ca.root_cert)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, cert in members:
            z.writestr(name, testing.pem(cert))
    path.write_bytes(buf.getvalue())
    return path


def _two_nodes(cli: Any, tmp_path: Path) -> None:
    assert cli("init").code == 0
    main = cli(
        "node", "add", "main", "--name", "mc.example.test", "--name", "example.test",
        "--target", f"nginx:{tmp_path}/main", "--test", "nginx -t", "--reload", "nginx -s reload",
        "--lineage", "web",
    )  # fmt: skip
    assert main.code == 0, main.err
    gw = cli(
        "node", "add", "gw1", "--name", "gw.example.test", "--name", "turn.example.test",
        "--name", "meet.example.test", "--target", f"haproxy:{tmp_path}/gw",
        "--transport", "ssh://deploy@127.0.0.1:2222", "--probe", "127.0.0.1:8443", "--lineage", "web",
    )  # fmt: skip
    assert gw.code == 0, gw.err


def _sign(ca: testing.TestCA, csr_file: Path) -> x509.Certificate:
    return ca.sign_csr(x509.load_pem_x509_csr(csr_file.read_bytes()))


def test_init_twice(cli: Any, certfleet_home: Path) -> None:
    first = cli("init")
    assert first.code == 0
    assert first.out.startswith(f"created the store in {certfleet_home}")
    second = cli("init", "--json")
    assert second.code == 0
    assert second.json() == {"home": str(certfleet_home), "created": False, "keys": "keyfile"}


def test_missing_store(cli_proc: Any, tmp_path: Path) -> None:
    result = cli_proc("node", "list", env={"CERTFLEET_HOME": str(tmp_path / "none")})
    assert result.code == 3
    assert f"no certfleet store in {tmp_path / 'none'}" in result.err
    assert "run `certfleet init`" in result.err


def test_the_manual_ca_flow(cli: Any, certfleet_home: Path, tmp_path: Path, ca: testing.TestCA) -> None:
    _two_nodes(cli, tmp_path)
    csr_file = tmp_path / "web.csr"
    req = cli("request", "web", "--node", "main", "--node", "gw1", "--subject", "C=CA,O=Example", "--out", csr_file)
    assert req.code == 0, req.err
    assert "5 of the CA's limit of 15" in req.out
    assert f"wrote {csr_file}" in req.out
    csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert csr.subject.rfc4514_string() == "CN=mc.example.test,O=Example,C=CA"

    package = _ca_zip(ca, _sign(ca, csr_file), tmp_path / "ca.zip")
    untrusted = cli("import", "web", package, "--no-fetch")
    assert untrusted.code == 1
    assert "untrusted" in untrusted.out and "refused: nothing was stored" in untrusted.out
    root = tmp_path / "root.pem"
    root.write_bytes(testing.pem(ca.root_cert))
    assert cli("trust", "add", root).code == 0

    imported = cli("import", "web", package, "--no-fetch", "--json")
    assert imported.code == 0, imported.out
    data = imported.json()
    assert data["accepted"] and data["version"] == 1
    assert [c["sha256"] for c in data["chain"]["chain"][1:]] == [c.fingerprint(hashes.SHA256()).hex() for c in ca.chain]
    assert {c["node"]: c["complete"] for c in data["coverage"]} == {"main": True, "gw1": True}

    status = cli("status", "--no-probe", "--json")
    assert status.code == 0, status.out
    [web] = status.json()["lineages"]
    assert web["active"]["version"] == 1
    assert web["active"]["days_left"] == 89
    assert [n["node"] for n in web["nodes"]] == ["gw1", "main"]
    human = cli("status", "--no-probe")
    assert "web  version 1" in human.out and "not-probed" in human.out

    hist = cli("history", "web", "--json")
    assert [v["state"] for v in hist.json()["versions"]] == ["issued"]
    assert "v1" in cli("history", "web").out

    pfx = tmp_path / "web.pfx"
    exported = cli("export", "web", "--format", "pkcs12", "--out", pfx, "--password", "carry me")
    assert exported.code == 0, exported.err
    certs = subprocess.run(
        ["openssl", "pkcs12", "-in", str(pfx), "-nokeys", "-passin", "pass:carry me"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    leaf = x509.load_pem_x509_certificates(certs)
    assert data["chain"]["leaf"]["sha256"] in {c.fingerprint(hashes.SHA256()).hex() for c in leaf}
    refused = cli("export", "web", "--format", "nginx", "--out", tmp_path / "nginx")
    assert refused.code == 2
    assert "refusing to write the private key unencrypted" in refused.err

    # renewal by the same steps: request again, sign, import; version 2 becomes active
    assert cli("request", "web", "--out", csr_file).code == 0
    renewed = cli("import", "web", _ca_zip(ca, _sign(ca, csr_file), tmp_path / "ca2.zip"), "--no-fetch", "--json")
    assert renewed.code == 0 and renewed.json()["version"] == 2
    assert cli("status", "--no-probe", "--json").json()["lineages"][0]["active"]["version"] == 2


def test_versions_move_only_when_asked(cli: Any, certfleet_home: Path, tmp_path: Path, ca: testing.TestCA) -> None:
    assert cli("init").code == 0
    root = tmp_path / "root.pem"
    root.write_bytes(testing.pem(ca.root_cert))
    assert cli("trust", "add", root).code == 0
    assert cli("node", "add", "main", "--name", "mc.example.test", "--target", "nginx:/srv/a", "-l", "web").code == 0
    packages = []
    for number, days in ((1, 179), (2, 19)):
        csr_file = tmp_path / f"v{number}.csr"
        assert cli("request", "web", "--out", csr_file).code == 0
        leaf = ca.sign_csr(x509.load_pem_x509_csr(csr_file.read_bytes()), days=days)
        packages.append(_ca_zip(ca, leaf, tmp_path / f"v{number}.zip"))
    assert cli("import", "web", packages[0], "--no-fetch").code == 0

    # a renewal that expires in 19 days over one with 179 left: refused, both dates shown
    sooner = cli("import", "web", packages[1], "--no-fetch")
    assert sooner.code == 1, sooner.out
    flat = " ".join(sooner.out.split())
    assert "compared with the active version 1:" in flat and "sooner" in flat
    assert "[downgrade]" in flat and "--force" in flat
    assert "refused: nothing was stored for web" in flat
    forced = cli("import", "web", packages[1], "--no-fetch", "--force", "--json").json()
    assert (forced["accepted"], forced["version"], forced["active"], forced["forced"]) == (True, 2, 2, True)

    # the first package again: it says so and changes nothing
    again = cli("import", "web", packages[0], "--no-fetch")
    assert again.code == 0, again.out
    flat = " ".join(again.out.split())
    assert "already imported as version 1 of web: nothing changed, the active version stays 2" in flat
    assert "--activate" in flat
    assert cli("history", "web", "--json").json()["active"] == 2
    on_purpose = cli("import", "web", packages[0], "--no-fetch", "--activate", "--json").json()
    assert (on_purpose["activated"], on_purpose["active"]) == (True, 1)


def test_names_and_request_agree_and_the_common_name_counts(cli: Any, certfleet_home: Path, tmp_path: Path) -> None:
    assert cli("init").code == 0
    names = ["a.example.test", "b.example.test", "c.example.test"]
    flags = [a for n in names for a in ("--name", n)]
    assert cli("node", "add", "main", *flags, "--target", "nginx:/srv/a", "-l", "web").code == 0
    planned = cli("names", *names, "--json").json()["plan"]
    requested = cli("request", "web", "--out", tmp_path / "web.csr", "--json").json()["plan"]
    assert planned["entries"] == requested["entries"] == names  # no wildcard unless asked, in both
    wild = cli("names", *names, "--wildcards", "--json").json()["plan"]
    wild_request = cli("request", "web", "--wildcards", "--out", tmp_path / "wild.csr", "--json").json()["plan"]
    assert wild["entries"] == wild_request["entries"] == ["*.example.test"]

    with_cn = cli("request", "web", "--subject", "CN=zzz.example.test", "--out", tmp_path / "cn.csr")
    assert with_cn.code == 0, with_cn.err
    assert "4 of the CA's limit of 15" in with_cn.out  # the CN is one of the CSR's names
    csr = x509.load_pem_x509_csr((tmp_path / "cn.csr").read_bytes())
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(san.get_values_for_type(x509.DNSName)) == 4
    over = cli("request", "web", "--subject", "CN=zzz.example.test", "--limit", "3", "--out", tmp_path / "x.csr")
    assert over.code == 2 and "4 names are over the CA's limit of 3" in over.err
    assert "rsa:4096" in " ".join(cli("request", "--help").out.split())


def _requested(cli: Any, tmp_path: Path, ca: testing.TestCA) -> tuple[Path, Path]:
    """A store trusting ``ca``, node main in lineage web, and web's CSR: the root's file and the CSR's."""
    assert cli("init").code == 0
    root = tmp_path / "root.pem"
    root.write_bytes(testing.pem(ca.root_cert))
    assert cli("trust", "add", root).code == 0
    assert cli("node", "add", "main", "--name", "mc.example.test", "--target", "nginx:/srv/a", "-l", "web").code == 0
    csr_file = tmp_path / "web.csr"
    assert cli("request", "web", "--out", csr_file).code == 0
    return root, csr_file


def test_import_refusals(cli: Any, certfleet_home: Path, tmp_path: Path, ca: testing.TestCA) -> None:
    _, csr_file = _requested(cli, tmp_path, ca)
    late = cli("node", "add", "gw1", "--name", "gw.example.test", "--name", "turn.example.test",
               "--target", "nginx:/srv/b", "--lineage", "web")  # fmt: skip
    assert late.code == 0
    missing = cli("import", "web", _ca_zip(ca, _sign(ca, csr_file), tmp_path / "ca.zip"), "--no-fetch")
    assert missing.code == 1
    flat = " ".join(missing.out.split())  # the terminal may wrap long lines
    assert "names missing for node gw1: gw.example.test, turn.example.test" in flat
    assert "gw1: missing gw.example.test is not covered" in flat

    stranger = ca.leaf("mc.example.test")
    other = cli("import", "web", _ca_zip(ca, stranger.cert, tmp_path / "other.zip"), "--no-fetch")
    assert other.code == 2
    assert "the certificate was issued for another key: it matches no pending request of lineage web" in other.err
    assert cli("history", "web", "--json").json()["versions"][0]["state"] == "pending"


def _files(path: Path) -> dict[str, tuple[int, bytes]]:
    """A written file, or each file of a written folder, by name: its mode and its content."""
    found = sorted(path.iterdir()) if path.is_dir() else [path]
    return {f.name if path.is_dir() else "": (stat.S_IMODE(f.stat().st_mode), f.read_bytes()) for f in found}


def test_convert_and_export_write_the_same_files(
    cli: Any, certfleet_home: Path, tmp_path: Path, ca: testing.TestCA
) -> None:
    root, csr_file = _requested(cli, tmp_path, ca)
    assert cli("import", "web", _ca_zip(ca, _sign(ca, csr_file), tmp_path / "ca.zip"), "--no-fetch").code == 0
    # the key and chain out of the store, for convert to read
    assert cli("export", "web", "--format", "pem", "--out", tmp_path / "in", "--no-key-password").code == 0
    inputs = [tmp_path / "in" / "fullchain.pem", tmp_path / "in" / "privkey.pem"]
    (tmp_path / "export").mkdir()
    (tmp_path / "convert").mkdir()

    for fmt in ("pem", "der", "pkcs7", "pkcs12", "apache", "nginx", "haproxy"):
        exported, converted = tmp_path / "export" / fmt, tmp_path / "convert" / fmt
        export_args: list[Any] = ["--no-key-password"]
        convert_args: list[Any] = []
        if fmt == "pkcs12":
            export_args = ["--password", "carry me"]
            convert_args = ["--out-password", "carry me", "--friendly-name", "web"]
        elif fmt in ("der", "pkcs7"):
            export_args = []
        done = cli("export", "web", "--format", fmt, "--out", exported, *export_args)
        assert done.code == 0, done.err
        made = cli(
            "convert", *inputs, "--to", fmt, "--out", converted, "--trust-only", root, "--no-fetch", *convert_args
        )
        assert made.code == 0, made.err
        one, other = _files(exported), _files(converted)
        assert one.keys() == other.keys(), fmt
        # a folder, or one file ("" below), and each with the same mode: 0700 folders, 0600 keys
        assert stat.S_IMODE(exported.stat().st_mode) == stat.S_IMODE(converted.stat().st_mode)
        if fmt == "pkcs12":  # salted and encrypted: the same content, not the same bytes
            a, b = (pkcs12.load_pkcs12(f[""][1], b"carry me") for f in (one, other))
            assert a.cert is not None and b.cert is not None and a.key is not None and b.key is not None
            assert (a.cert.certificate, a.cert.friendly_name) == (b.cert.certificate, b.cert.friendly_name)
            assert [c.certificate for c in a.additional_certs] == [c.certificate for c in b.additional_certs]
            assert a.key.public_key() == b.key.public_key()
            assert one[""][0] == other[""][0] == 0o600
        else:
            assert one == other, fmt


def test_nodes_and_fleet_file(cli: Any, certfleet_home: Path, tmp_path: Path) -> None:
    _two_nodes(cli, tmp_path)
    listed = cli("node", "list", "--json").json()["nodes"]
    assert [(n["name"], n["lineages"]) for n in listed] == [("gw1", ["web"]), ("main", ["web"])]
    shown = cli("node", "show", "gw1", "--json").json()
    assert shown["transport"] == "ssh://deploy@127.0.0.1:2222"
    assert shown["probe"] == "127.0.0.1:8443"
    assert "gw.example.test" in cli("node", "show", "gw1").out
    taken = cli("node", "add", "gw1", "--name", "x.example.test", "--target", "pem:/srv/x")
    assert taken.code == 2 and "node gw1 exists" in taken.err
    bad = cli("node", "add", "gw2", "--name", "x.example.test", "--target", "iis:/srv/x")
    assert bad.code == 2 and "unknown target kind" in bad.err

    fleet_file = tmp_path / "fleet.toml"
    assert cli("export-fleet", "--out", fleet_file).code == 0
    text = fleet_file.read_text()
    assert cli("export-fleet").out == text
    applied = cli("apply", fleet_file, "--json")
    assert applied.code == 0
    assert applied.json()["changed"] is False
    assert cli("apply", fleet_file).out.strip().endswith("nothing changed")

    assert cli("node", "remove", "gw1").code == 0
    planned = cli("apply", fleet_file, "--dry-run")
    flat = " ".join(planned.out.split())
    assert "would create node gw1" in flat and "names: (none) -> [\"gw.example.test\"" in flat
    assert 'would update lineage web nodes: ["main"] -> ["gw1", "main"]' in flat
    assert flat.endswith("dry run: nothing was changed")
    assert [n["name"] for n in cli("node", "list", "--json").json()["nodes"]] == ["main"]
    assert "lineage web" in cli("apply", fleet_file).out  # gw1 back, and back in web
    assert cli("export-fleet").out == text
    broken = tmp_path / "broken.toml"
    broken.write_text("[nodes.x]\nnames = 3\n")
    result = cli("apply", broken)
    assert result.code == 2
    assert f"{broken}: nodes.x: names must be a list of strings" in result.err


def test_node_add_joins_a_lineage_through_the_library(cli: Any, certfleet_home: Path) -> None:
    assert cli("init").code == 0
    bad = cli("node", "add", "main", "--name", "mc.example.test", "--target", "pem:/srv/main", "--lineage", "a b")
    assert bad.code == 2 and "lineage name" in bad.err
    assert cli("node", "list", "--json").json() == {"nodes": []}  # a bad --lineage adds no node
    added = cli("node", "add", "main", "--name", "mc.example.test", "--target", "pem:/srv/main", "-l", "web", "--json")
    assert added.code == 0, added.err
    assert added.json()["lineages"] == ["web"]
    actions = [e["action"] for e in _audit(certfleet_home)]
    assert actions[-3:] == ["node.add", "lineage.create", "lineage.attach"]


def _audit(home: Path) -> list[dict[str, Any]]:
    from certfleet.store import Store

    with Store.open(home) as store:
        return [e.to_dict() for e in reversed(store.audit_log())]


def test_trust_commands(cli: Any, certfleet_home: Path, tmp_path: Path, ca: testing.TestCA) -> None:
    assert cli("init").code == 0
    root = tmp_path / "root.pem"
    root.write_bytes(testing.pem(ca.root_cert))
    fp = ca.root_cert.fingerprint(hashes.SHA256()).hex()
    added = cli("trust", "add", root, "--json").json()["anchors"]
    assert [(a["fingerprint"], a["added"]) for a in added] == [(fp, True)]
    assert cli("trust", "add", root, "--json").json()["anchors"][0]["added"] is False
    assert [a["fingerprint"] for a in cli("trust", "list", "--json").json()["anchors"]] == [fp]
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(testing.pem(ca.leaf("x.example.test").cert))
    refused = cli("trust", "add", leaf)
    assert refused.code == 2 and "not a CA certificate" in refused.err
    assert cli("trust", "remove", fp[:12]).code == 0
    assert cli("trust", "list", "--json").json()["anchors"] == []
    assert cli("trust", "remove", fp[:12]).code == 2


# holds the write lock of the store the way any other certfleet writing would
HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_busy_store_exits_3(cli_proc: Any, certfleet_home: Path) -> None:
    assert cli_proc("init").code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(certfleet_home / "certfleet.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = cli_proc(
            "node", "add", "main", "--name", "mc.example.test", "--target", "pem:/srv/main",
            env={"CERTFLEET_BUSY_TIMEOUT": "1"},
        )  # fmt: skip
        assert busy.code == 3
        assert "store is busy: another certfleet is writing; try again" in busy.err
        assert "Traceback" not in busy.err
        assert cli_proc("node", "list", "--json").json() == {"nodes": []}  # reading still works
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
    done = cli_proc("node", "add", "main", "--name", "mc.example.test", "--target", "pem:/srv/main")
    assert done.code == 0, done.err


def test_audit_shows_the_trail(cli: Any, certfleet_home: Path, tmp_path: Path, ca: testing.TestCA) -> None:
    assert cli("init").code == 0
    root = tmp_path / "root.pem"
    root.write_bytes(testing.pem(ca.root_cert))
    assert cli("trust", "add", root).code == 0
    assert cli("node", "add", "main", "--name", "mc.example.test", "--target", "nginx:/srv/a", "-l", "web").code == 0
    newest = cli("audit", "--json", "--limit", "2").json()["entries"]
    assert [e["action"] for e in newest] == ["lineage.attach", "lineage.create"]
    assert newest[0]["detail"] == {"lineage": "web", "node": "main"}
    trusted = cli("audit", "--action", "trust.add", "--json").json()["entries"]
    assert len(trusted) == 1 and trusted[0]["detail"]["fingerprint"] == ca.root_cert.fingerprint(hashes.SHA256()).hex()
    human = cli("audit")
    assert human.code == 0
    lines = human.out.splitlines()
    assert "lineage.attach" in lines[0] and "lineage=web  node=main" in lines[0]
    assert "init" in lines[-1]
    assert "no audit entries for rollback" in cli("audit", "--action", "rollback").out


def test_serve_on_a_busy_port_fails_in_one_line_before_any_url(cli: Any, certfleet_home: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port))
    assert result.code == 3
    assert result.out == ""  # no URL printed that would not answer
    assert result.err.splitlines()[0] == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "Traceback" not in result.err and "Errno" not in result.err
    assert not certfleet_home.exists()  # refused before anything was made
