"""A node's commands and targets, kept narrow: the environment a command gets, what is kept of its
output, and the folders a target may write into."""

from __future__ import annotations

from pathlib import Path

import pytest

from certfleet.errors import InputError
from certfleet.fleet.nodes import check_target_location, make_node
from certfleet.fleet.transports import open_transport
from conftest import PKI


async def test_a_local_command_gets_no_certfleet_setting_or_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTFLEET_PASSPHRASE", "the store's passphrase")
    monkeypatch.setenv("CERTFLEET_HOME", "/somewhere")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a cloud secret")
    async with open_transport("local") as tx:
        result = await tx.run("env", timeout=30, env={"CERTFLEET_DIR": "/given/by/the/target"})
    names = {line.partition("=")[0] for line in result.output.splitlines()}
    assert "CERTFLEET_PASSPHRASE" not in names and "CERTFLEET_HOME" not in names
    assert "AWS_SECRET_ACCESS_KEY" not in names
    assert "CERTFLEET_DIR" in names  # what the caller passes on purpose still arrives
    assert "PATH" in names
    assert "the store's passphrase" not in result.output


async def test_a_command_that_prints_a_key_leaves_only_a_marker(pki: PKI, tmp_path: Path) -> None:
    key = tmp_path / "privkey.pem"
    key.write_bytes(pki.leaf.key_pem())
    async with open_transport("local") as tx:
        result = await tx.run(f"id; cat {key}; exit 1", timeout=30)
    assert result.exit_status == 1
    assert "uid=" in result.output
    assert "PRIVATE KEY" not in result.output
    body = [line for line in pki.leaf.key_pem().decode().splitlines() if not line.startswith("-----")]
    assert not any(line in result.output for line in body)


async def test_a_command_that_prints_forever_is_cut_to_its_end() -> None:
    async with open_transport("local") as tx:
        result = await tx.run("yes certfleet | head -c 1000000; echo the-end", timeout=30)
    assert len(result.output) <= 16 * 1024
    assert result.output.endswith("the-end\n")


SYSTEM = "/ /etc /etc/ //etc /var /tmp /usr /usr/share/nginx /bin /sbin/x /lib64/x /boot/x /dev/shm/x /proc/self"


@pytest.mark.parametrize("path", [*SYSTEM.split(), "/sys/x", "/usr/local/bin", "/home", "/root"])
def test_a_target_never_lands_in_a_system_folder(path: str) -> None:
    with pytest.raises(InputError, match="system folder"):
        check_target_location(path)
    with pytest.raises(InputError, match=r"system folder|root folder"):
        make_node("main", ["www.example.test"], [f"nginx:{path}"])


@pytest.mark.parametrize("path", ["/etc/nginx/certfleet", "/usr/local/nginx/conf", "/srv/tls", "/var/lib/certfleet"])
def test_ordinary_target_folders_are_fine(path: str) -> None:
    assert check_target_location(path, local=False) == path


def test_a_target_never_lands_in_the_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(InputError, match="inside the certfleet store"):
        make_node("main", ["www.example.test"], [f"pem:{home}/tls"], store_home=home)
    # nor through a symlink that leads there
    (tmp_path / "innocent").symlink_to(home)
    with pytest.raises(InputError, match="inside the certfleet store"):
        make_node("main", ["www.example.test"], [f"pem:{tmp_path}/innocent/tls"], store_home=home)
    # a node reached over SSH has its own filesystem: the same path there is not the store
    spec = make_node("gw", ["gw.example.test"], [f"pem:{home}/tls"], transport="ssh://deploy@gw", store_home=home)
    assert spec.targets[0].path == f"{home}/tls"
