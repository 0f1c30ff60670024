"""Targets: the files each kind writes, versioned folders, the atomic switch, and their options."""

from __future__ import annotations

import base64
import grp
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfleet import testing
from certfleet.certinfo import fingerprint
from certfleet.errors import InputError
from certfleet.fleet.model import Material, TargetSpec
from certfleet.fleet.targets import StepError, Target, make_target, target_kinds
from certfleet.fleet.transports import Transport, open_transport
from certfleet.keys import key_matches
from conftest import PKI


def material(leaf: testing.TestLeaf) -> Material:
    return Material(leaf.key, leaf.cert, tuple(leaf.chain), fingerprint(leaf.cert))


@pytest.fixture(scope="module")
def pairs(pki: PKI) -> list[Material]:
    """Three versions of one lineage: three keys, three leaves, one chain."""
    return [material(pki.inter.leaf("www.example.test", "example.test")) for _ in range(4)]


async def install(target: Target, tx: Transport, m: Material) -> str:
    version = target.version_name(m)
    await target.upload(tx, version, target.render(m))
    await target.switch(tx, version)
    return version


def certs_in(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data) if b"CERTIFICATE" in data else []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


LAYOUTS = {
    "nginx": {"fullchain.pem", "privkey.pem"},
    "apache": {"cert.pem", "chain.pem", "privkey.pem"},
    "haproxy": {"combined.pem"},
    "pem": {"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"},
}


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
async def test_layout_targets_write_a_matching_pair(kind: str, tmp_path: Path, pairs: list[Material]) -> None:
    m = pairs[0]
    target = make_target(TargetSpec(kind, str(tmp_path / "web")))
    async with open_transport("local") as tx:
        version = await install(target, tx, m)
        assert await target.live_version(tx) == version
    live = tmp_path / "web" / "live"
    assert live.is_symlink()
    assert live.readlink() == Path("versions") / version  # relative: survives a bind mount
    assert {p.name for p in live.iterdir()} == LAYOUTS[kind]
    found_certs: list[x509.Certificate] = []
    found_key = None
    for path in live.iterdir():
        data = path.read_bytes()
        holds_key = b"PRIVATE KEY" in data
        assert mode(path) == (0o600 if holds_key else 0o644), path.name
        found_certs.extend(certs_in(data))
        if holds_key:
            found_key = serialization.load_pem_private_key(data, password=None)
    assert found_key is not None
    assert key_matches(found_key, m.leaf)
    assert m.leaf in found_certs
    assert set(m.chain) <= set(found_certs)
    if kind in ("nginx", "pem"):
        assert certs_in((live / "fullchain.pem").read_bytes()) == [m.leaf, *m.chain]
    if kind == "haproxy":
        assert certs_in((live / "combined.pem").read_bytes()) == [m.leaf, *m.chain]


async def test_version_names_are_stable_and_follow_what_shapes_the_files(tmp_path: Path, pairs: list[Material]) -> None:
    nginx = make_target(TargetSpec("nginx", str(tmp_path)))
    name = nginx.version_name(pairs[0])
    assert name == make_target(TargetSpec("nginx", "/elsewhere")).version_name(pairs[0])
    assert name.startswith(fingerprint(pairs[0].leaf)[:16])
    assert nginx.version_name(pairs[1]) != name
    no_chain = Material(pairs[0].key, pairs[0].leaf, (), pairs[0].version_id)
    assert nginx.version_name(no_chain) != name
    assert make_target(TargetSpec("apache", str(tmp_path))).version_name(pairs[0]) != name
    renamed = make_target(TargetSpec("pem", str(tmp_path), {"key": "server.key"}))
    assert renamed.version_name(pairs[0]) != make_target(TargetSpec("pem", str(tmp_path))).version_name(pairs[0])
    a = make_target(TargetSpec("pkcs12", str(tmp_path), {"password": "one"}))
    b = make_target(TargetSpec("pkcs12", str(tmp_path), {"password": "two"}))
    assert a.version_name(pairs[0]) == b.version_name(pairs[0])  # a secret never shapes a name


async def test_upload_is_idempotent_and_cleans_what_a_killed_run_left(tmp_path: Path, pairs: list[Material]) -> None:
    target = make_target(TargetSpec("nginx", str(tmp_path / "web")))
    async with open_transport("local") as tx:
        version = await install(target, tx, pairs[0])
        key = tmp_path / "web" / "versions" / version / "privkey.pem"
        inode = key.stat().st_ino
        # what SIGKILL leaves: a half-written staging folder and a symlink never renamed
        half = tmp_path / "web" / "versions" / f".tmp-{version}-dead"
        half.mkdir()
        (half / "fullchain.pem").write_bytes(b"half")
        (tmp_path / "web" / ".live-dead").symlink_to("versions/nothing")
        await target.upload(tx, version, target.render(pairs[0]))
    assert key.stat().st_ino == inode  # the complete folder was kept as it was
    assert not half.exists()
    assert not (tmp_path / "web" / ".live-dead").is_symlink()


async def test_switch_back_restores_what_was_live(tmp_path: Path, pairs: list[Material]) -> None:
    target = make_target(TargetSpec("nginx", str(tmp_path / "web")))
    live = tmp_path / "web" / "live"
    async with open_transport("local") as tx:
        first = target.version_name(pairs[0])
        await target.upload(tx, first, target.render(pairs[0]))
        undo_first = await target.switch(tx, first)
        second = target.version_name(pairs[1])
        await target.upload(tx, second, target.render(pairs[1]))
        undo_second = await target.switch(tx, second)
        assert await target.live_version(tx) == second
        await target.switch_back(tx, undo_second)
        assert await target.live_version(tx) == first
        await target.switch_back(tx, undo_first)  # before the first deploy there was nothing
        assert not live.is_symlink()
        assert await target.live_version(tx) is None


@pytest.mark.parametrize("damage", ["remove", "change", "list"])
async def test_a_damaged_version_folder_is_built_again(tmp_path: Path, pairs: list[Material], damage: str) -> None:
    target = make_target(TargetSpec("pem", str(tmp_path / "web")))
    folder = tmp_path / "web" / "versions"
    async with open_transport("local") as tx:
        name = await install(target, tx, pairs[0])
        files = target.render(pairs[0])
        assert await target.check(tx, name, files) is None
        listing = (folder / f".{name}.sha256").read_text()
        assert "  privkey.pem\n" in listing  # sha256sum -c reads it
        if damage == "remove":  # what an interrupted cleanup leaves
            (folder / name / "privkey.pem").unlink()
            said = "privkey.pem is missing"
        elif damage == "change":
            (folder / name / "chain.pem").write_bytes(b"edited by hand\n")
            said = "chain.pem was changed"
        else:  # a folder from before the lists, or one whose list is lost
            (folder / f".{name}.sha256").unlink()
            said = "has no list of its files"
        problem = await target.check(tx, name, files)
        assert problem is not None and said in problem
        await target.upload(tx, name, files)  # built again, in place: live points at a whole folder
        assert await target.check(tx, name, files) is None
        assert await target.live_version(tx) == name
    checked = subprocess.run(
        ["sha256sum", "-c", f"../.{name}.sha256"], cwd=folder / name, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, f".{name}.sha256"])


async def test_prune_keeps_the_live_version_and_the_newest_others(tmp_path: Path, pairs: list[Material]) -> None:
    target = make_target(TargetSpec("haproxy", str(tmp_path / "lb")))
    versions = tmp_path / "lb" / "versions"
    async with open_transport("local") as tx:
        names = [await install(target, tx, m) for m in pairs]
        # the live one (the last installed) made the oldest: it is kept all the same
        for when, name in enumerate([names[3], names[0], names[1], names[2]]):
            os.utime(versions / name, (1_000_000 + when, 1_000_000 + when))
        await target.prune(tx, keep=3)
        assert await target.live_version(tx) == names[3]
    kept = sorted([names[3], names[2], names[1]])
    assert sorted(p.name for p in versions.iterdir() if p.is_dir()) == kept
    assert sorted(p.name for p in versions.iterdir() if not p.is_dir()) == sorted(f".{n}.sha256" for n in kept)


async def test_a_live_folder_that_is_not_a_symlink_is_never_replaced(tmp_path: Path, pairs: list[Material]) -> None:
    (tmp_path / "web" / "live").mkdir(parents=True)
    (tmp_path / "web" / "live" / "fullchain.pem").write_bytes(b"hand-made")
    target = make_target(TargetSpec("nginx", str(tmp_path / "web")))
    async with open_transport("local") as tx:
        version = target.version_name(pairs[0])
        await target.upload(tx, version, target.render(pairs[0]))
        with pytest.raises(InputError, match="not a symlink"):
            await target.switch(tx, version)
    assert (tmp_path / "web" / "live" / "fullchain.pem").read_bytes() == b"hand-made"


async def test_pem_file_names_are_options(tmp_path: Path, pairs: list[Material]) -> None:
    spec = TargetSpec("pem", str(tmp_path / "pem"), {"cert": "server.crt", "key": "server.key"})
    async with open_transport("local") as tx:
        await install(make_target(spec), tx, pairs[0])
    names = {p.name for p in (tmp_path / "pem" / "live").iterdir()}
    assert names == {"server.crt", "server.key", "chain.pem", "fullchain.pem"}
    assert mode(tmp_path / "pem" / "live" / "server.key") == 0o600


@pytest.mark.parametrize("legacy", [False, True])
async def test_pkcs12_opens_in_openssl_with_the_password_from_the_environment(
    tmp_path: Path, pairs: list[Material], legacy: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_PFX_PASSWORD", "s3cret pfx")
    spec = TargetSpec("pkcs12", str(tmp_path / "pfx"), {"password_env": "WEB_PFX_PASSWORD", "legacy": legacy})
    async with open_transport("local") as tx:
        await install(make_target(spec), tx, pairs[0])
    pfx = tmp_path / "pfx" / "live" / "certificate.pfx"
    assert mode(pfx) == 0o600
    info = subprocess.run(
        ["openssl", "pkcs12", "-in", str(pfx), "-passin", "env:WEB_PFX_PASSWORD", "-info", "-nodes"],
        capture_output=True,
        check=True,
        env={**os.environ, "WEB_PFX_PASSWORD": "s3cret pfx"},
    )
    text = info.stdout.decode() + info.stderr.decode()
    assert ("3-KeyTripleDES" in text) == legacy
    assert ("AES-256-CBC" in text) != legacy
    assert certs_in(info.stdout)[0] == pairs[0].leaf
    key = serialization.load_pem_private_key(info.stdout[info.stdout.index(b"-----BEGIN PRIVATE KEY") :], password=None)
    assert key_matches(key, pairs[0].leaf)


async def test_pkcs12_without_its_password_variable_fails_to_render(
    tmp_path: Path, pairs: list[Material], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)
    target = make_target(TargetSpec("pkcs12", str(tmp_path), {"password_env": "NO_SUCH_PASSWORD"}))
    with pytest.raises(InputError, match="NO_SUCH_PASSWORD is not set"):
        target.render(pairs[0])


def _yaml_value(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith(f"{key}:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise AssertionError(f"{key} not in the Secret")


async def test_k8s_secret_holds_the_chain_and_key_and_switches_back(tmp_path: Path, pairs: list[Material]) -> None:
    path = tmp_path / "k8s" / "web-tls.yaml"
    target = make_target(TargetSpec("k8s-secret", str(path), {"namespace": "edge"}))
    async with open_transport("local") as tx:
        first = await install(target, tx, pairs[0])
        assert await target.live_version(tx) == first
        before = path.read_bytes()
        second = target.version_name(pairs[1])
        await target.upload(tx, second, target.render(pairs[1]))
        undo = await target.switch(tx, second)
        assert await target.live_version(tx) == second
        assert "_FileUndo(" in repr(undo)
        assert "PRIVATE" not in repr(undo) and "tls.key" not in repr(undo)
        text = path.read_text()
        await target.switch_back(tx, undo)
        assert path.read_bytes() == before
    assert mode(path) == 0o600
    assert _yaml_value(text, "type") == "kubernetes.io/tls"
    assert _yaml_value(text, "name") == "web-tls"
    assert _yaml_value(text, "namespace") == "edge"
    assert certs_in(base64.b64decode(_yaml_value(text, "tls.crt"))) == [pairs[1].leaf, *pairs[1].chain]
    key = serialization.load_pem_private_key(base64.b64decode(_yaml_value(text, "tls.key")), password=None)
    assert key_matches(key, pairs[1].leaf)
    assert [p.name for p in path.parent.iterdir()] == ["web-tls.yaml"]  # nothing staged left behind


async def test_command_target_hands_the_files_to_the_command(tmp_path: Path, pairs: list[Material]) -> None:
    log = tmp_path / "installed.log"
    command = f'cat "$CERTFLEET_CERT" >> {log}; echo "$CERTFLEET_VERSION $CERTFLEET_KEY" >> {log}'
    target = make_target(TargetSpec("command", command, {"dir": str(tmp_path / "cmd")}))
    async with open_transport("local") as tx:
        version = await install(target, tx, pairs[0])
    text = log.read_text()
    assert pairs[0].leaf == x509.load_pem_x509_certificate(text.encode())
    assert f"{version} {tmp_path}/cmd/live/privkey.pem" in text
    assert mode(tmp_path / "cmd" / "live" / "privkey.pem") == 0o600


async def test_a_failing_command_switches_back_and_reinstalls_the_previous_files(
    tmp_path: Path, pairs: list[Material]
) -> None:
    log = tmp_path / "installed.log"
    options = {"dir": str(tmp_path / "cmd")}
    first = make_target(TargetSpec("command", "true", options)).version_name(pairs[0])
    # the appliance refuses every version but the first
    command = f'echo "$CERTFLEET_VERSION" >> {log}; [ "$CERTFLEET_VERSION" = {first} ] || {{ echo refused; exit 4; }}'
    target = make_target(TargetSpec("command", command, options))
    async with open_transport("local") as tx:
        assert await install(target, tx, pairs[0]) == first
        with pytest.raises(StepError, match="status 4") as info:
            await install(target, tx, pairs[1])
        assert await target.live_version(tx) == first
    assert "refused" in info.value.output
    runs = log.read_text().split()
    assert runs[0] == runs[2] != runs[1]  # first, second (refused), first again


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give files away (CI runs the tests as root)")
async def test_owner_group_and_key_mode(tmp_path: Path, pairs: list[Material]) -> None:
    spec = TargetSpec("nginx", str(tmp_path / "web"), {"owner": "nobody", "group": "nogroup", "key_mode": "0640"})
    async with open_transport("local") as tx:
        await install(make_target(spec), tx, pairs[0])
    key = (tmp_path / "web" / "live" / "privkey.pem").stat()
    assert (key.st_uid, key.st_gid) == (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    assert stat.S_IMODE(key.st_mode) == 0o640


@pytest.mark.parametrize(
    ("kind", "path", "options", "message"),
    [
        ("nginx", "relative/path", {}, "must be absolute"),
        ("nginx", "/etc/../root", {}, "'..'"),
        ("nginx", "/", {}, "root folder"),
        ("nginx", "/etc/x\nnewline", {}, "control characters"),
        ("nginx", "/srv/web", {"colour": "blue"}, "unknown option"),
        ("nginx", "/srv/web", {"key_mode": "0644"}, "key_mode"),
        ("nginx", "/srv/web", {"owner": "root;rm"}, "not a user or group"),
        ("pem", "/srv/web", {"key": "../key.pem"}, "plain file name"),
        ("pem", "/srv/web", {"key": "cert.pem"}, "same name"),
        ("pkcs12", "/srv/web", {}, "needs a password"),
        ("pkcs12", "/srv/web", {"password": "x", "legacy": "maybe"}, "true or false"),
        ("k8s-secret", "/srv/Bad_Name.yaml", {"name": "Bad_Name"}, "Secret name"),
        ("k8s-secret", "/srv/web.yaml", {"namespace": "-x"}, "namespace"),
        ("command", "  ", {}, "needs a command"),
        ("command", "true", {"timeout": 0}, "seconds"),
        ("iis", "/srv/web", {}, "unknown target kind"),
    ],
)
def test_bad_target_specs_are_refused(kind: str, path: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_target(TargetSpec(kind, path, options))


def test_every_registered_kind_is_a_target() -> None:
    for kind in target_kinds():
        path = "true" if kind == "command" else "/srv/x.yaml"
        options = {"password": "x"} if kind == "pkcs12" else {}
        assert make_target(TargetSpec(kind, path, options)).kind == kind


async def test_command_target_keeps_its_files_under_the_home_folder_by_default(
    tmp_path: Path, pairs: list[Material], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    target = make_target(TargetSpec("command", 'test -s "$CERTFLEET_FULLCHAIN"'))
    async with open_transport("local") as tx:
        await install(target, tx, pairs[0])
    (folder,) = (tmp_path / "home" / ".local" / "state" / "certfleet").iterdir()
    assert folder.name.startswith("command-")
    assert (folder / "live" / "fullchain.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
