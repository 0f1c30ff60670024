"""The SSH transport against a real sshd: host keys checked, key or agent login, clear refusals."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from certfleet.errors import InputError, NetworkError
from certfleet.fleet.transports import open_transport
from certfleet.fleet.transports.ssh import parse_ssh_url
from support.servers import SshServer, empty_home, free_port, sshd

pytestmark = pytest.mark.peer  # every test here starts a real server

__all__ = ["empty_home", "sshd"]


async def test_a_known_host_with_a_key_file_connects(sshd: SshServer, empty_home: Path) -> None:
    async with open_transport(sshd.url, sshd.options) as tx:
        result = await tx.run("echo connected", timeout=30)
    assert result.ok
    assert "connected" in result.output


def _fingerprint(public_key_file: Path) -> str:
    """SHA256:... as OpenSSH's own ssh-keygen prints it."""
    listed = subprocess.run(["ssh-keygen", "-lf", str(public_key_file)], capture_output=True, text=True, check=True)
    return listed.stdout.split()[1]


async def test_a_changed_host_key_is_named_as_changed_with_both_fingerprints(
    sshd: SshServer, empty_home: Path
) -> None:
    # known_hosts holds another key for this very host:port: what an interception looks like
    options = {**sshd.options, "known_hosts": str(sshd.unknown_hosts)}
    with pytest.raises(NetworkError) as info:
        async with open_transport(sshd.url, options):
            pass
    message, hint = info.value.message, info.value.hint or ""
    assert f"the host key of 127.0.0.1:{sshd.port} has CHANGED" in message
    assert "intercepting" in message
    recorded = _fingerprint(sshd.workdir / "other_host_key.pub")
    offered = _fingerprint(sshd.host_key.with_suffix(".pub"))
    assert f"recorded {recorded}, offered {offered}" in message
    assert "out of band" in hint and "do not add the offered key" in hint
    assert ">>" not in hint and "ssh-keyscan" not in hint


async def test_a_host_missing_from_known_hosts_shows_the_offered_fingerprint(
    sshd: SshServer, empty_home: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "known_hosts"
    elsewhere.write_text(sshd.unknown_hosts.read_text().replace(f"[127.0.0.1]:{sshd.port}", "[192.0.2.1]:22"))
    with pytest.raises(NetworkError, match="is not in") as info:
        async with open_transport(sshd.url, {**sshd.options, "known_hosts": str(elsewhere)}):
            pass
    assert f"it offers {_fingerprint(sshd.host_key.with_suffix('.pub'))}" in info.value.message
    assert "CHANGED" not in info.value.message


async def test_without_known_hosts_every_host_is_refused(sshd: SshServer, empty_home: Path) -> None:
    # no known_hosts option and no ~/.ssh/known_hosts: nothing is trusted, nothing is learned
    options = {"identity": sshd.options["identity"]}
    with pytest.raises(NetworkError, match=r"not in ~/\.ssh/known_hosts"):
        async with open_transport(sshd.url, options):
            pass
    assert not (empty_home / ".ssh" / "known_hosts").exists()


async def test_the_default_known_hosts_file_is_used(sshd: SshServer, empty_home: Path) -> None:
    (empty_home / ".ssh").mkdir()
    (empty_home / ".ssh" / "known_hosts").write_text(sshd.known_hosts.read_text())
    async with open_transport(sshd.url, {"identity": sshd.options["identity"]}) as tx:
        assert (await tx.run("true", timeout=30)).ok


async def test_a_key_the_server_does_not_accept_is_refused(sshd: SshServer, empty_home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    options = {**sshd.options, "identity": str(other)}
    with pytest.raises(NetworkError, match="refused"):
        async with open_transport(sshd.url, options):
            pass


async def test_the_ssh_agent_logs_in_without_a_key_file(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        subprocess.run(["sh", "-c", f"for i in $(seq 100); do [ -S {sock} ] && exit 0; sleep 0.05; done"], check=True)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(sshd.user_key)], check=True, env=env, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        async with open_transport(sshd.url, {"known_hosts": str(sshd.known_hosts)}) as tx:
            assert (await tx.run("true", timeout=30)).ok
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


async def test_a_closed_port_is_a_network_error(sshd: SshServer, empty_home: Path) -> None:
    url = f"ssh://{sshd.user}@127.0.0.1:{free_port()}"
    with pytest.raises(NetworkError, match="cannot connect") as info:
        async with open_transport(url, sshd.options):
            pass
    assert info.value.exit_code == 3


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ssh://deploy@gw.example.test", ("deploy", "gw.example.test", 22)),
        ("ssh://deploy@gw.example.test:2222", ("deploy", "gw.example.test", 2222)),
        ("ssh://root@[::1]:2200", ("root", "::1", 2200)),
        ("ssh://root@192.0.2.7/", ("root", "192.0.2.7", 22)),
    ],
)
def test_ssh_urls(url: str, expected: tuple[str, str, int]) -> None:
    assert parse_ssh_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["ssh://", "ssh://user:secret@host", "ssh://host:99999", "ssh://host/some/path", "sftp://host", "ssh://host?x=1"],
)
def test_bad_ssh_urls_are_refused(url: str) -> None:
    with pytest.raises(InputError):
        parse_ssh_url(url)


@pytest.mark.parametrize(
    "options",
    [{"password": "x"}, {"connect_timeout": -1}, {"connect_timeout": "soon"}, {"identity": "/nonexistent/key"}],
)
def test_bad_ssh_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InputError):
        open_transport("ssh://root@127.0.0.1:22", options)
