"""A node's zone in the fleet file: applied, shown in the dry run's diff, written by
``export-fleet`` and read back to the same; a file that does not name a node's zone keeps it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs_fleet import ok

from certfleet.errors import InputError
from certfleet.fleet import fleetfile
from certfleet.store import Store


def _file(root: Path, gw_zone: str | None) -> str:
    zone = f'zone = "{gw_zone}"\n' if gw_zone is not None else ""
    return (
        'version = 1\n\n[lineages.web]\nnodes = ["gw", "lan"]\n\n'
        f'[nodes.gw]\nnames = ["www.example.test"]\n{zone}\n'
        f'[[nodes.gw.targets]]\nkind = "pem"\npath = "{root / "gw"}"\n\n'
        f'[nodes.lan]\nnames = ["www.example.test"]\n\n'
        f'[[nodes.lan.targets]]\nkind = "pem"\npath = "{root / "lan"}"\n'
    )


def test_zones_go_through_the_fleet_file_and_back(cli: Any, certfleet_home: Path, tmp_path: Path) -> None:
    ok(cli("init"))
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(_file(tmp_path, "dmz"))

    planned = ok(cli("apply", fleet, "--dry-run", "--json")).json()
    assert {"field": "zone", "from": None, "to": "dmz"} in planned["changes"]["node gw"]
    assert all(c["field"] != "zone" for c in planned["changes"]["node lan"])  # a node of no zone shows none
    with Store.open() as store:
        assert store.node_zones() == {}  # a dry run changes nothing

    ok(cli("apply", fleet))
    with Store.open() as store:
        assert store.node_zones() == {"gw": "dmz", "lan": None}

    exported = ok(cli("export-fleet")).out
    assert 'zone = "dmz"' in exported and exported.count("zone =") == 1
    back = fleetfile.loads(exported)
    assert dict(back.zones) == {"gw": "dmz"}  # lan names none: applied, it keeps its own (none)
    (tmp_path / "exported.toml").write_text(exported)
    assert "nothing to change" in ok(cli("apply", tmp_path / "exported.toml", "--dry-run")).out

    # a zone changed: only the zone moves, shown as a diff first
    fleet.write_text(_file(tmp_path, "lan-edge"))
    shown = ok(cli("apply", fleet, "--dry-run")).out
    assert "zone: dmz -> lan-edge" in shown, shown
    ok(cli("apply", fleet))
    # a file that leaves the zone out keeps it; an empty zone takes the node out of its zone
    fleet.write_text(_file(tmp_path, None))
    assert "nothing to change" in ok(cli("apply", fleet, "--dry-run")).out
    fleet.write_text(_file(tmp_path, ""))
    assert "zone: lan-edge -> (none)" in ok(cli("apply", fleet, "--dry-run")).out
    ok(cli("apply", fleet))
    with Store.open() as store:
        assert store.node_zones() == {"gw": None, "lan": None}
    assert "zone =" not in ok(cli("export-fleet")).out


def test_a_zone_that_is_not_a_name_is_refused_before_anything_is_applied(tmp_path: Path) -> None:
    try:
        fleetfile.loads(_file(tmp_path, "no such/zone"))
    except InputError as exc:
        assert "nodes.gw" in str(exc) and "zone" in str(exc), str(exc)
    else:
        raise AssertionError("a bad zone was read")
