"""The local transport: commands that start daemons or outlive their timeout, and the registry."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from certfleet.errors import EnvError, InputError
from certfleet.fleet.transports import open_transport, scheme_of
from certfleet.fleet.transports.local import LocalTransport
from support.deploy import small_disk

__all__ = ["small_disk"]


async def test_a_command_that_leaves_a_daemon_behind_returns_at_once(tmp_path: Path) -> None:
    # a reload that starts a daemon keeps our stdout open; the deploy must not wait for it
    pidfile = tmp_path / "daemon.pid"
    async with open_transport("local") as tx:
        result = await tx.run(f"sleep 120 & echo $! > {pidfile}; echo reloaded", timeout=60)
    try:
        assert result.ok
        assert not result.timed_out
        assert "reloaded" in result.output
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


async def test_a_timeout_ends_the_whole_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    async with open_transport("local") as tx:
        result = await tx.run(f"sleep 120 & echo $! > {pidfile}; wait", timeout=1)
    assert result.timed_out
    child = Path(f"/proc/{pidfile.read_text().strip()}/stat")
    # killed with its process group: gone, or a zombie waiting to be reaped
    for _ in range(100):
        if not child.exists() or child.read_text().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the command's child survived its timeout")


async def test_a_command_that_cannot_start_is_a_result_not_an_exception() -> None:
    async with open_transport("local") as tx:
        result = await tx.run("/nonexistent/reload-me", timeout=30)
    assert not result.ok
    assert result.exit_status == 127


@pytest.mark.parametrize(
    ("url", "scheme"), [("local", "local"), ("local://", "local"), ("ssh://a@b:2", "ssh"), ("SSH://a@b", "ssh")]
)
def test_schemes(url: str, scheme: str) -> None:
    assert scheme_of(url) == scheme


def test_the_registry_gives_the_local_transport() -> None:
    assert isinstance(open_transport("local"), LocalTransport)


@pytest.mark.parametrize("url", ["ftp://host", "rsync", ""])
def test_unknown_transports_are_refused(url: str) -> None:
    with pytest.raises(InputError, match="unknown transport"):
        open_transport(url)


async def test_a_full_disk_is_named_as_such(small_disk: Path) -> None:
    (small_disk / "filler").write_bytes(b"\0" * (8 * 1024 * 1024 // 2))
    with pytest.raises(EnvError) as info:
        async with open_transport("local") as tx:
            await tx.write_file(str(small_disk / "big"), b"x" * (4 * 1024 * 1024), mode=0o644)
    assert "No space left on device" in info.value.message
    assert "the disk is full (ENOSPC)" in (info.value.hint or "")
