"""The agent's pure decisions: who to peer with, what to announce, what peers may send us."""

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from bgpnet.config import AgentConfig, build
from bgpnet.datastore.base import Object
from bgpnet.errors import ConfigError
from bgpnet.filters import check_import
from bgpnet.peering import all_peers, desired_neighbors, import_rules, node_record, read_passwords

A = IPv4Address


def cfg(**extra) -> AgentConfig:
    data = {"node": {"name": "n2", "address": "10.0.0.12/24", "asn": 64512, "router_id": "10.0.0.12",
                     "labels": {"rack": "r1"}},
            "pod_cidrs": ["10.244.2.0/24"]}
    data.update(extra)
    return build(AgentConfig, data)


def node(name, address, asn=64512, router_id=None, **spec):
    return Object("Node", name, {"address": address, "asn": asn, "router_id": router_id or address.split("/")[0],
                                 **spec})


NODES = [node("n1", "10.0.0.11/24"), node("n2", "10.0.0.12/24"), node("n3", "10.0.0.13/24"),
         node("other-as", "10.0.0.20/24", asn=65001), node("broken", "not-an-address")]


def test_mesh_peers_every_other_node_of_the_same_as():
    ns = desired_neighbors(cfg(), NODES)
    assert [n.address for n in ns] == [A("10.0.0.11"), A("10.0.0.13")]
    assert all(n.peer_asn == 64512 and n.local_asn == 64512 for n in ns)
    assert all(n.local_address == A("10.0.0.12") for n in ns)


def test_lower_router_id_connects_higher_waits():
    by_addr = {n.address: n for n in desired_neighbors(cfg(), NODES)}
    assert by_addr[A("10.0.0.11")].passive  # we (…12) are higher than …11: we wait
    assert not by_addr[A("10.0.0.13")].passive  # we are lower than …13: we connect


def test_mesh_off_keeps_only_explicit_peers():
    c = cfg(bgp={"node_to_node_mesh": False}, peers=[{"address": "10.0.0.1", "asn": 65000, "name": "tor"}])
    ns = desired_neighbors(c, NODES)
    assert [(n.address, n.peer_asn, n.name) for n in ns] == [(A("10.0.0.1"), 65000, "tor")]


def test_peer_scoping_by_node_and_labels():
    c = cfg(peers=[{"address": "10.0.0.1", "asn": 65000, "node_selector": {"rack": "r1"}},
                   {"address": "10.0.1.1", "asn": 65001, "node_selector": {"rack": "r2"}},
                   {"address": "10.0.0.2", "asn": 65000, "node": "n2"},
                   {"address": "10.0.0.3", "asn": 65000, "node": "n9"}])
    assert {p.address for p in all_peers(c)} == {A("10.0.0.1"), A("10.0.0.2")}


def test_datastore_peers_added_invalid_ones_skipped(caplog):
    c = cfg(peers=[{"address": "10.0.0.1", "asn": 65000}])
    objs = [Object("BGPPeer", "rr1", {"address": "10.0.0.5", "asn": 64512}),
            Object("BGPPeer", "dup", {"address": "10.0.0.1", "asn": 1}),
            Object("BGPPeer", "bad", {"address": "10.0.0.6", "asn": "x"})]
    peers = all_peers(c, objs)
    assert [(str(p.address), p.asn, p.name) for p in peers] == [("10.0.0.1", 65000, ""), ("10.0.0.5", 64512, "rr1")]
    assert "BGPPeer bad: asn" in caplog.text


def test_password_file_read_and_missing(tmp_path):
    pw = tmp_path / "tor.md5"
    pw.write_text("s3cret\n")
    c = cfg(peers=[{"address": "10.0.0.1", "asn": 65000, "password_file": str(pw)}])
    assert read_passwords(c) == {A("10.0.0.1"): "s3cret"}
    n = desired_neighbors(c, [], read_passwords(c))[0]
    assert n.md5_password == "s3cret"
    c = cfg(peers=[{"address": "10.0.0.1", "asn": 65000, "password_file": str(tmp_path / "nope")}])
    with pytest.raises(ConfigError, match=r"peers\[0\].password_file"):
        read_passwords(c)


def test_node_record_and_import_rules_from_datastore():
    c = cfg()
    rec = node_record(c)
    assert rec["address"] == "10.0.0.12/24" and rec["pod_cidrs"] == ["10.244.2.0/24"]
    nodes = [node("n1", "10.0.0.11/24", pod_cidrs=["10.244.1.0/24"]), node("n3", "10.0.0.13/24", pod_cidr="10.244.3.0/24")]
    pools = [Object("IPPool", "p", {"cidr": "10.96.0.0/16"}), Object("IPPool", "off", {"cidr": "10.97.0.0/16", "disabled": True})]
    blocks = [Object("IPAMBlock", "b", {"cidr": "10.96.1.0/26"})]
    rules = import_rules(c, [IPv4Network("10.244.2.0/24")], nodes, pools, blocks)
    assert check_import(IPv4Network("10.244.1.0/24"), rules) is None
    assert check_import(IPv4Network("10.244.3.0/24"), rules) is None
    assert check_import(IPv4Network("10.96.1.0/26"), rules) is None
    assert check_import(IPv4Network("10.97.1.0/26"), rules) is not None  # disabled pool
    assert check_import(IPv4Network("10.244.2.0/24"), rules) is not None  # our own


def test_node_address_is_never_a_peer():
    c = cfg(peers=[{"address": "10.0.0.12", "asn": 65000}])
    assert desired_neighbors(c, []) == []
    assert c.node.address == IPv4Interface("10.0.0.12/24")


def test_cluster_bgp_configuration_overrides_file_defaults(caplog):
    from bgpnet.peering import effective_config

    c = cfg(bgp={"hold_time": 30})
    eff = effective_config(c, Object("BGPConfiguration", "default",
                                     {"node_to_node_mesh": False, "import_allow": ["192.168.0.0/16"], "asn": 1}))
    assert eff.bgp.node_to_node_mesh is False and eff.bgp.hold_time == 30
    assert [str(n) for n in eff.bgp.import_allow] == ["192.168.0.0/16"]
    assert eff.node.asn == 64512  # per-node settings are not the cluster's to change
    bad = effective_config(c, Object("BGPConfiguration", "default", {"hold_time": 1}))
    assert bad is c and "BGPConfiguration default: spec.hold_time" in caplog.text
    assert effective_config(c, None) is c


def test_node_record_carries_the_pod_mtu_when_known():
    assert "pod_mtu" not in node_record(cfg())
    assert node_record(cfg(), 1450)["pod_mtu"] == 1450
