"""Config loading: good files load with defaults; every bad file names the file and the field."""

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from bgpnet.cli import main
from bgpnet.config import AgentConfig, describe_fields, load_config
from bgpnet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text, name="node.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_example_config_loads():
    cfg = load_config(ROOT / "conf" / "node.yaml")
    assert cfg.node.name == "node1"
    assert cfg.node.address == IPv4Interface("10.0.0.11/24")
    assert cfg.peers[0].address == IPv4Address("10.0.0.1") and cfg.peers[0].asn == 65000
    assert cfg.pod_cidrs == [IPv4Network("10.244.1.0/24")]
    assert cfg.bgp.graceful_restart == 120
    assert cfg.source.endswith("conf/node.yaml")


def test_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "node: {address: 10.0.0.2/24}\n"))
    assert cfg.node.asn == 64512 and cfg.bgp.node_to_node_mesh and cfg.peers == []
    assert cfg.datastore.type == "local" and cfg.routing.resync_interval == 30.0


@pytest.mark.parametrize("text, where, what", [
    ("node: {address: 10.0.0.2/24}\npeers:\n  - {address: 10.0.0.1}\n", "peers[0].asn", "required"),
    ("node: {address: 10.0.0.2/24}\npeers:\n  - {address: 10.0.0.300, asn: 1}\n", "peers[0].address",
     "not an IPv4 address"),
    ("node: {address: 10.0.0.2/24, asn: 0}\n", "node.asn", "out of range"),
    ("node: {address: 10.0.0.2/24, asn: '64512'}\n", "node.asn", "expected an integer"),
    ("node: {address: 10.0.0.2/24}\nbgp: {hold_tme: 3}\n", "bgp.hold_tme", "did you mean `hold_time`"),
    ("node: {address: 10.0.0.2/24}\nbgp: {hold_time: 2}\n", "bgp.hold_time", "3..65535"),
    ("node: {address: 10.0.0.2/24}\npod_cidrs: [10.244.1.5/24]\n", "pod_cidrs[0]", "host bits set"),
    ("node: {address: 10.0.0.2/24}\npod_cidrs: [10.244.0.0/16, 10.244.1.0/24]\n", "pod_cidrs[1]", "overlaps"),
    ("node: {address: 10.0.0.2/24}\npeers:\n  - {address: 10.0.0.1, asn: 1}\n  - {address: 10.0.0.1, asn: 2}\n",
     "peers[1].address", "listed twice"),
    ("node: {name: n1}\n", "node", "give `address`"),
    ("node: {address: 10.0.0.2/24}\ndatastore: {type: etcd}\n", "datastore.type", "`local` or `kubernetes`"),
    ("node: {address: 10.0.0.2/24}\nrouting: {resync_interval: 0}\n", "routing.resync_interval", "> 0"),
    ("node: {address: 10.0.0.2/24}\npeers: {address: 10.0.0.1}\n", "peers", "expected a list"),
    ("- just\n- a list\n", "top level", "expected a mapping"),
    ("node: {address: [\n", "node.yaml:", "not valid YAML"),
])
def test_bad_files_name_file_and_field(tmp_path, text, where, what):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg
    assert where in msg
    assert what in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_every_field_is_documented():
    for name, _default, text in describe_fields(AgentConfig):
        assert text, f"config field {name} has no doc"


def test_config_check_cli(tmp_path, capsys):
    good = write(tmp_path, "node: {name: n1, address: 10.0.0.2/24}\n", "good.yaml")
    bad = write(tmp_path, "node: {address: 10.0.0.2/24}\nbgp: {port: 0}\n", "bad.yaml")
    assert main(["config", "check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: bgp.port: port 0 is out of range" in err


def test_pools_validated_with_ipam_rules(tmp_path):
    good = write(tmp_path, "node: {address: 10.0.0.2/24}\npools:\n  - {name: default, cidr: 10.244.0.0/16, "
                           "encapsulation: vxlan, mode: CrossSubnet, nat_outgoing: true}\n")
    cfg = load_config(good)
    assert cfg.pools[0].spec()["mode"] == "CrossSubnet" and cfg.pools[0].block_size == 26
    bad = write(tmp_path, "node: {address: 10.0.0.2/24}\npools:\n  - {name: p, cidr: 10.244.0.0/16, "
                          "encapsulation: gre}\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml: pools\[0\].encapsulation: encapsulation must be one of"):
        load_config(bad)
