"""What every transport promises, checked on the local node and through a real sshd."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from certfleet.errors import EnvError
from certfleet.fleet.transports import Transport, open_transport
from support.servers import SshServer, sshd

__all__ = ["sshd"]  # the fixture, imported for its registration


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.peer)])
async def tx(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Transport]:
    if request.param == "local":
        transport = open_transport("local")
    else:
        server: SshServer = request.getfixturevalue("sshd")
        transport = open_transport(server.url, server.options)
    async with transport:
        yield transport


async def test_write_file_sets_the_mode_from_birth(tx: Transport, tmp_path: Path) -> None:
    await tx.write_file(str(tmp_path / "key.pem"), b"secret", mode=0o600)
    await tx.write_file(str(tmp_path / "cert.pem"), b"public", mode=0o644)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "cert.pem").stat().st_mode) == 0o644
    assert await tx.read_file(str(tmp_path / "key.pem")) == b"secret"


@pytest.mark.parametrize("existing", ["file", "symlink"])
async def test_write_file_never_writes_through_what_is_there(tx: Transport, tmp_path: Path, existing: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    path = tmp_path / "cert.pem"
    if existing == "file":
        path.write_bytes(b"old")
    else:
        path.symlink_to(victim)
    with pytest.raises(EnvError):
        await tx.write_file(str(path), b"new", mode=0o644)
    assert victim.read_bytes() == b"untouched"


async def test_read_missing_and_bounded(tx: Transport, tmp_path: Path) -> None:
    assert await tx.read_file(str(tmp_path / "missing")) is None
    (tmp_path / "big").write_bytes(b"x" * 2000)
    with pytest.raises(Exception, match="larger than"):
        await tx.read_file(str(tmp_path / "big"), limit=1000)


async def test_folders_symlinks_and_atomic_rename(tx: Transport, tmp_path: Path) -> None:
    await tx.mkdir(str(tmp_path / "a" / "b" / "c"), parents=True)
    await tx.mkdir(str(tmp_path / "a" / "b" / "c"), parents=True)  # exists: fine
    await tx.mkdir(str(tmp_path / "v1"))
    await tx.mkdir(str(tmp_path / "v2"))
    await tx.symlink("v1", str(tmp_path / "live"))
    assert await tx.readlink(str(tmp_path / "live")) == "v1"
    await tx.symlink("v2", str(tmp_path / ".live-new"))
    await tx.rename(str(tmp_path / ".live-new"), str(tmp_path / "live"))
    assert (tmp_path / "live").readlink() == Path("v2")
    assert sorted(await tx.listdir(str(tmp_path))) == ["a", "live", "v1", "v2"]
    assert await tx.readlink(str(tmp_path / "v1")) is None  # a folder, not a symlink
    assert await tx.readlink(str(tmp_path / "missing")) is None
    assert await tx.listdir(str(tmp_path / "missing")) == []


async def test_mtime_touch_and_remove(tx: Transport, tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "f").write_bytes(b"x")
    os.utime(folder, (1_000_000, 1_000_000))
    assert await tx.mtime(str(folder)) == 1_000_000
    await tx.touch(str(folder))
    assert (await tx.mtime(str(folder)) or 0) > 1_000_000
    (tmp_path / "link").symlink_to(folder)
    await tx.remove(str(tmp_path / "link"))
    await tx.remove(str(tmp_path / "link"))  # missing: fine
    assert folder.exists()
    await tx.remove_tree(str(folder))
    await tx.remove_tree(str(folder))
    assert not folder.exists()
    assert await tx.mtime(str(folder)) is None


async def test_run_reports_status_output_and_env(tx: Transport) -> None:
    ok = await tx.run('echo "out $CERTFLEET_X"; echo err >&2', timeout=30, env={"CERTFLEET_X": "it's here"})
    assert ok.ok
    assert ok.exit_status == 0
    assert "out it's here" in ok.output
    assert "err" in ok.output
    bad = await tx.run("echo broken; exit 3", timeout=30)
    assert not bad.ok
    assert bad.exit_status == 3
    assert "broken" in bad.output
    assert "status 3" in bad.describe()


async def test_run_ends_a_command_that_outlasts_its_timeout(tx: Transport) -> None:
    result = await tx.run("echo started; sleep 60", timeout=1)
    assert result.timed_out
    assert not result.ok
    assert "timed out" in result.describe()


async def test_run_keeps_only_the_end_of_a_long_output(tx: Transport) -> None:
    result = await tx.run("head -c 300000 /dev/zero | tr '\\0' a; echo THE-END", timeout=60)
    assert result.ok
    assert result.output.rstrip().endswith("THE-END")
    assert len(result.output) <= 16 * 1024


async def test_home_and_root(tx: Transport) -> None:
    # the sshd of the tests logs in as the user running them, on this machine; over SSH the home
    # is the account's (passwd), locally it is $HOME, which containers sometimes set elsewhere
    assert await tx.is_root() == (os.geteuid() == 0)
    expected = str(Path.home()) if tx.scheme == "local" else pwd.getpwuid(os.getuid()).pw_dir
    assert await tx.home() == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give files away (CI runs the tests as root)")
async def test_chown_gives_files_away(tx: Transport, tmp_path: Path) -> None:
    path = tmp_path / "owned"
    path.write_bytes(b"x")
    await tx.chown([str(path)], owner="nobody", group="nogroup")
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
