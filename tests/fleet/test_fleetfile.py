"""The fleet file: apply, export, and a round trip that changes nothing."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfleet.errors import FormatError, InputError, LimitError
from certfleet.fleet import fleetfile
from certfleet.fleet.fleetfile import Fleet, LineageSpec
from certfleet.fleet.model import NodeSpec, TargetSpec
from certfleet.store import Store

# written exactly as export-fleet writes it, so the round trip can be compared as text
CANONICAL = """\
# certfleet fleet file: `certfleet apply` reads it, `certfleet export-fleet` writes it

version = 1

[lineages.mail]
key = "ec:p384"
names = ["mx.example.test"]
nodes = []

[lineages.web]
key = "rsa:2048"
subject = "C=CA,O=Example \\"Quoted\\" Corp,CN=mc.example.test"
nodes = ["gw1", "main"]

[nodes."dmz.gw2"]
names = ["gw2.example.test"]
transport = "ssh://deploy@[::1]:2222"
probe = "[::1]:8443"

[[nodes."dmz.gw2".targets]]
kind = "command"
path = "/usr/local/bin/install-cert --service \\"ucs\\""
options = { timeout = 30.5, dir = "/var/lib/certs" }

[nodes.gw1]
names = ["gw.example.test", "turn.example.test", "xn--bcher-kva.example.test"]
transport = "ssh://deploy@gw.example.test:2222"
test = "haproxy -c -f /etc/haproxy/haproxy.cfg"
reload = "systemctl reload haproxy"
probe = "gw.example.test:443"
options = { known_hosts = "/etc/ssh/ssh_known_hosts", connect_timeout = 10, agent = true }

[[nodes.gw1.targets]]
kind = "haproxy"
path = "/etc/haproxy/tls"

[[nodes.gw1.targets]]
kind = "pkcs12"
path = "/srv/pfx"
options = { legacy = true, password_env = "PFX_PASSWORD" }

[nodes.main]
names = ["mc.example.test", "example.test"]
test = "nginx -t"
reload = "nginx -s reload"
probe = "127.0.0.1:443"

[[nodes.main.targets]]
kind = "nginx"
path = "/etc/nginx/tls/web"
"""


@pytest.fixture
def store(certfleet_home: Path) -> Iterator[Store]:
    s = Store.init()
    yield s
    s.close()


def test_round_trip_changes_nothing(store: Store) -> None:
    fleet = fleetfile.loads(CANONICAL)
    first = fleetfile.apply(store, fleet)
    assert first.created == (
        "node dmz.gw2",
        "node gw1",
        "node main",
        "lineage mail",
        "lineage web",
    )
    assert first.changed
    exported = fleetfile.dumps(fleetfile.export_fleet(store))
    assert exported == CANONICAL
    audit_before = len(store.audit_log(limit=1000))
    again = fleetfile.apply(store, fleetfile.loads(exported))
    assert not again.changed
    assert again.unchanged == first.created
    assert len(store.audit_log(limit=1000)) == audit_before  # not even an audit entry
    assert fleetfile.dumps(fleetfile.export_fleet(store)) == CANONICAL


def test_apply_updates_exactly_what_the_file_says(store: Store) -> None:
    fleetfile.apply(store, fleetfile.loads(CANONICAL))
    changed = CANONICAL.replace('nodes = ["gw1", "main"]', 'nodes = ["main"]').replace(
        'names = ["mc.example.test", "example.test"]', 'names = ["MC.example.test", "www.example.test"]'
    )
    result = fleetfile.apply(store, fleetfile.loads(changed))
    assert result.updated == ("node main", "lineage web")
    assert store.node("main").names == ("mc.example.test", "www.example.test")
    assert store.lineage("web").nodes == ("main",)
    assert store.node("gw1").targets[1] == TargetSpec(
        "pkcs12", "/srv/pfx", {"legacy": True, "password_env": "PFX_PASSWORD"}
    )
    # a lineage whose fields are left out keeps them; present and empty clears them
    assert fleetfile.apply(store, fleetfile.loads("[lineages.web]\n")).unchanged == ("lineage web",)
    result = fleetfile.apply(store, fleetfile.loads('[lineages.web]\nkey = ""\nsubject = ""\nnodes = []\n'))
    assert result.updated == ("lineage web",)
    web = store.lineage("web")
    assert (web.key_spec, web.subject, web.names, web.nodes) == ("rsa:2048", None, (), ())
    assert [n.name for n in store.nodes()] == ["dmz.gw2", "gw1", "main"]  # nodes not named stay


OLDER = """\
version = 1

[lineages.web]
key = "rsa:2048"
nodes = ["gw1", "main"]

[nodes.main]
names = ["mc.example.test", "example.test"]
probe = "127.0.0.1:443"
"""


def test_an_older_file_clears_nothing_it_does_not_mention(store: Store) -> None:
    fleetfile.apply(store, fleetfile.loads(CANONICAL))
    before = store.lineage("web")
    audit_before = len(store.audit_log(limit=1000))
    result = fleetfile.apply(store, fleetfile.loads(OLDER))  # written before subjects, tests and targets
    assert not result.changed, result.changes
    assert store.lineage("web") == before
    assert store.lineage("web").subject == 'C=CA,O=Example "Quoted" Corp,CN=mc.example.test'
    main = store.node("main")
    assert (main.test_cmd, main.reload_cmd) == ("nginx -t", "nginx -s reload")
    assert main.targets == (TargetSpec("nginx", "/etc/nginx/tls/web"),)
    assert len(store.audit_log(limit=1000)) == audit_before


def test_apply_shows_each_change_and_a_dry_run_makes_none(store: Store) -> None:
    fleetfile.apply(store, fleetfile.loads(CANONICAL))
    edited = OLDER.replace('probe = "127.0.0.1:443"', 'probe = "127.0.0.1:8443"\ntest = ""') + (
        '\n[lineages.web2]\nsubject = "O=Example,CN=mc.example.test"\nnodes = ["main"]\n'
    )
    planned = fleetfile.apply(store, fleetfile.loads(edited), dry_run=True)
    assert (planned.dry_run, planned.created, planned.updated) == (True, ("lineage web2",), ("node main",))
    assert [(c.field, c.before, c.after) for c in planned.changes["node main"]] == [
        ("test", "nginx -t", None),
        ("probe", "127.0.0.1:443", "127.0.0.1:8443"),
    ]
    web2 = {c.field: (c.before, c.after) for c in planned.changes["lineage web2"]}
    assert web2["subject"] == (None, "O=Example,CN=mc.example.test") and web2["key"] == (None, "rsa:2048")
    assert planned.to_dict()["changes"]["node main"][0] == {"field": "test", "from": "nginx -t", "to": None}
    assert store.node("main").probe == "127.0.0.1:443" and [r.name for r in store.lineages()] == ["mail", "web"]

    done = fleetfile.apply(store, fleetfile.loads(edited))
    assert not done.dry_run and done.changes == planned.changes
    assert (store.node("main").probe, store.node("main").test_cmd) == ("127.0.0.1:8443", None)
    assert store.lineage("web2").subject == "O=Example,CN=mc.example.test"


def test_a_new_node_needs_its_names_and_targets(store: Store) -> None:
    with pytest.raises(InputError, match=r"nodes\.gw9: a new node needs targets"):
        fleetfile.apply(store, fleetfile.loads('[nodes.gw9]\nnames = ["gw9.example.test"]\n'))
    assert store.nodes() == []


def test_targets_may_be_written_short(store: Store) -> None:
    fleet = fleetfile.loads('[nodes.a]\nnames = ["a.example.test"]\ntargets = ["nginx:/etc/nginx/tls", "pem:/srv/a"]\n')
    assert fleet.nodes[0].targets == (TargetSpec("nginx", "/etc/nginx/tls"), TargetSpec("pem", "/srv/a"))


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("this is = not toml =", FormatError, "not valid TOML"),
        ("version = 2\n", FormatError, "fleet file version 2"),
        ("nodez = 1\n", FormatError, "unknown key\\(s\\) nodez"),
        ('[nodes.a]\nnames = ["a.example.test"]\ntarget = ["pem:/x"]\n', FormatError, "unknown key\\(s\\) target"),
        ('[nodes.a]\nnames = "a.example.test"\ntargets = ["pem:/x"]\n', FormatError, "names must be a list"),
        ('[nodes.a]\nnames = ["a.example.test"]\ntargets = [{kind = "pem"}]\n', FormatError, "a kind and a path"),
        ('[nodes.a]\nnames = ["a.example.test"]\ntargets = ["iis:/x"]\n', InputError, "unknown target kind"),
        ('[nodes.a]\nnames = ["a b"]\ntargets = ["pem:/x"]\n', InputError, "not a valid name"),
        ('[nodes."a/b"]\nnames = ["a.example.test"]\ntargets = ["pem:/x"]\n', InputError, "node name"),
        ('[lineages.web]\nkey = "dsa"\n', InputError, "not a key type"),
        ('[lineages.web]\nsubject = "Q=1"\n', InputError, "not one of C="),
        ("[lineages.web]\nnodes = [1]\n", FormatError, "nodes must be a list of strings"),
        ("nodes = []\n", FormatError, "must be a table"),
        ("x" * (fleetfile.MAX_FLEET_BYTES + 1), LimitError, "larger than"),
    ],
)
def test_bad_fleet_files(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        fleetfile.loads(text)


def test_errors_say_where(store: Store) -> None:
    with pytest.raises(InputError) as err:
        fleetfile.loads('[nodes.gw1]\nnames = ["gw.example.test"]\ntargets = ["nginx:relative"]\n')
    assert err.value.message.startswith("nodes.gw1: target path 'relative' is not absolute")


def test_unknown_member_changes_nothing(store: Store) -> None:
    text = CANONICAL.replace('nodes = ["gw1", "main"]', 'nodes = ["gw1", "main", "gw9"]')
    with pytest.raises(InputError, match="lineage web names unknown node\\(s\\): gw9"):
        fleetfile.apply(store, fleetfile.loads(text))
    assert store.nodes() == [] and store.lineages() == []


@pytest.mark.parametrize(
    "value",
    [
        'quote " and backslash \\ and tab \t',
        "line\nbreak and carriage\rreturn",
        "control \x01\x1f\x7f chars",
        "unicode: Zürich, 東京, emoji 🔐",
        "",
        "'single' and '''triple'''",
    ],
)
def test_emitter_writes_any_string_back(value: str) -> None:
    node = NodeSpec(
        name="n.1",
        names=("a.example.test",),
        targets=(TargetSpec("command", "/bin/true", {"arg": value, "nested": {"k-ey": [value, 1, False]}}),),
        options={"weird key": value, "n": -3, "f": 1e-05},
    )
    fleet = Fleet(nodes=(node,), lineages=(LineageSpec("web", subject=None, nodes=("n.1",)),))
    data = tomllib.loads(fleetfile.dumps(fleet))
    [target] = data["nodes"]["n.1"]["targets"]
    assert target["options"] == {"arg": value, "nested": {"k-ey": [value, 1, False]}}
    assert data["nodes"]["n.1"]["options"] == {"weird key": value, "n": -3, "f": 1e-05}
    assert data["lineages"]["web"]["nodes"] == ["n.1"]
