"""Peering for fabrics (pure): selector peers and route reflector roles, reflection (RFC 4456),
per-pool export communities, reflection loop checks, and the words status uses for a session that is down."""

from ipaddress import IPv4Address, IPv4Network

import pytest

from bgpnet.config import AgentConfig, build, resolve
from bgpnet.datastore.base import Object
from bgpnet.errors import ConfigError
from bgpnet.filters import ImportRules, select_imports
from bgpnet.model import Path
from bgpnet.peering import (
    all_peers,
    desired_neighbors,
    export_attributes,
    md5_failures,
    node_record,
    reflected_routes,
    session_hint,
)
from bgpnet.speaker.messages import Update, parse_message
from bgpnet.speaker.render import Neighbor, announce_command, render_neighbor

A, N = IPv4Address, IPv4Network
RR_PEER = {"peer_selector": {"route-reflector": "true"}, "name": "rr"}


def cfg(name="n2", address="10.0.0.12/24", labels=None, **extra) -> AgentConfig:
    data = {"node": {"name": name, "address": address, "asn": 64512, "labels": labels or {}}}
    data.update(extra)
    return resolve(build(AgentConfig, data))


def node(name, address, cluster=None, labels=None, asn=64512):
    spec = {"address": address, "asn": asn, "router_id": address.split("/")[0], "labels": labels or {}}
    if cluster:
        spec["route_reflector_cluster_id"] = cluster
    return Object("Node", name, spec)


RR = {"route-reflector": "true"}
NODES = [node("n1", "10.0.0.11/24", cluster="1.1.1.1", labels=RR), node("n2", "10.0.0.12/24"),
         node("n3", "10.0.0.13/24"), node("n4", "10.0.0.14/24", cluster="1.1.1.1", labels=RR)]


def test_client_peers_only_with_the_route_reflectors():
    c = cfg(bgp={"node_to_node_mesh": False}, peers=[RR_PEER])
    sources = {}
    ns = desired_neighbors(c, NODES, peers=all_peers(c), sources=sources)
    assert [(n.address, n.name, n.peer_asn) for n in ns] == [(A("10.0.0.11"), "n1", 64512),
                                                             (A("10.0.0.14"), "n4", 64512)]
    assert not any(n.route_reflector_client for n in ns)
    assert set(sources) == {A("10.0.0.11"), A("10.0.0.14")}


def test_route_reflector_peers_back_with_every_node_and_marks_clients():
    c = cfg("n1", "10.0.0.11/24", labels=RR, bgp={"node_to_node_mesh": False, "route_reflector_cluster_id": "1.1.1.1"},
            peers=[RR_PEER])
    ns = {n.name: n for n in desired_neighbors(c, NODES, peers=all_peers(c))}
    assert set(ns) == {"n2", "n3", "n4"}
    assert ns["n2"].route_reflector_client and ns["n2"].cluster_id == A("1.1.1.1")
    assert not ns["n4"].route_reflector_client  # another route reflector: a non-client
    assert node_record(c)["route_reflector_cluster_id"] == "1.1.1.1"


def test_peer_entry_needs_address_or_selector():
    with pytest.raises(ConfigError, match="either `address` or `peer_selector`"):
        build(AgentConfig, {"node": {"address": "10.0.0.2/24"}, "peers": [{"asn": 1}]})
    with pytest.raises(ConfigError, match="ttl_security and multihop"):
        build(AgentConfig, {"node": {"address": "10.0.0.2/24"},
                            "peers": [{"address": "10.0.0.1", "asn": 1, "multihop": 2, "ttl_security": 1}]})


def test_ttl_security_renders_gtsm():
    n = Neighbor(A("10.0.0.1"), 65000, A("10.0.0.2"), 64512, A("10.0.0.2"), ttl_security=1)
    text = render_neighbor(n)
    assert "outgoing-ttl 255;" in text and "incoming-ttl 255;" in text


def path(prefix, peer, nh=None, **kw):
    return Path(prefix=N(prefix), next_hop=A(nh or peer), peer=A(peer), **kw)


def rr_neighbors():
    mk = lambda a, client, asn=64512: Neighbor(A(a), asn, A("10.0.0.11"), 64512, A("10.0.0.11"),  # noqa: E731
                                               route_reflector_client=client)
    return [mk("10.0.0.12", True), mk("10.0.0.13", True), mk("10.0.0.14", False), mk("10.0.0.1", False, 65000)]


def test_reflection_from_a_client_goes_to_every_other_ibgp_peer():
    best = {N("10.244.2.0/24"): (path("10.244.2.0/24", "10.0.0.12"),)}
    out = reflected_routes(best, rr_neighbors(), A("1.1.1.1"), {A("10.0.0.12"): A("2.2.2.12")})
    assert set(out) == {A("10.0.0.13"), A("10.0.0.14")}  # not back to the sender, never to eBGP
    assert out[A("10.0.0.13")][N("10.244.2.0/24")] == {
        "next_hop": "10.0.0.12", "origin": "igp", "local_pref": 100, "originator_id": "2.2.2.12",
        "cluster_list": ["1.1.1.1"]}


def test_reflection_from_a_non_client_goes_to_clients_only_and_keeps_originator():
    p = path("10.244.4.0/24", "10.0.0.14", originator_id=A("10.0.0.99"), cluster_list=(A("3.3.3.3"),),
             communities=("65000:1",))
    out = reflected_routes({p.prefix: (p,)}, rr_neighbors(), A("1.1.1.1"), {})
    assert set(out) == {A("10.0.0.12"), A("10.0.0.13")}
    attrs = out[A("10.0.0.12")][p.prefix]
    assert attrs["originator_id"] == "10.0.0.99" and attrs["cluster_list"] == ["1.1.1.1", "3.3.3.3"]
    assert attrs["communities"] == ["65000:1"]


def test_no_reflection_of_ebgp_paths_own_prefixes_or_without_cluster_id():
    ebgp = path("10.244.9.0/24", "10.0.0.1", ibgp=False, as_path=(65000,))
    own = path("10.244.1.0/24", "10.0.0.12")
    best = {ebgp.prefix: (ebgp,), own.prefix: (own,)}
    assert reflected_routes(best, rr_neighbors(), A("1.1.1.1"), {}, own=[own.prefix]) == {}
    assert reflected_routes({own.prefix: (own,)}, rr_neighbors(), None, {}) == {}


def test_reflected_announce_command():
    cmd = announce_command(A("10.0.0.13"), N("10.244.2.0/24"), {
        "next_hop": "10.0.0.12", "origin": "igp", "local_pref": 100, "as_path": [65001],
        "originator_id": "10.0.0.12", "cluster_list": ["1.1.1.1", "3.3.3.3"]})
    assert cmd == ("neighbor 10.0.0.13 announce route 10.244.2.0/24 next-hop 10.0.0.12 origin igp as-path "
                   "[ 65001 ] local-preference 100 originator-id 10.0.0.12 cluster-list [ 1.1.1.1 3.3.3.3 ]")


def test_reflection_attributes_parsed_and_loops_rejected():
    line = ('{"type": "update", "neighbor": {"address": {"local": "10.0.0.11", "peer": "10.0.0.250"}, '
            '"asn": {"local": 64512, "peer": 64512}, "message": {"update": {"attribute": {"origin": "igp", '
            '"local-preference": 100, "originator-id": "10.0.0.12", "cluster-list": ["10.0.0.250", "1.1.1.1"]}, '
            '"announce": {"ipv4 unicast": {"10.0.0.12": [{"nlri": "10.244.2.0/24"}]}}}}}}')
    (u,) = parse_message(line)
    assert isinstance(u, Update)
    p = u.announced[0]
    assert p.originator_id == A("10.0.0.12") and p.cluster_list == (A("10.0.0.250"), A("1.1.1.1"))
    rules = ImportRules(blocks=frozenset({N("10.244.2.0/24")}))
    acc, rej, _ = select_imports([p], rules, cluster_id=A("1.1.1.1"))
    assert not acc and "contains our cluster id 1.1.1.1" in rej[p.prefix]
    acc, rej, _ = select_imports([p], rules, router_id=A("10.0.0.12"))
    assert not acc and "originator id 10.0.0.12 is this node" in rej[p.prefix]
    acc, rej, _ = select_imports([p], rules, router_id=A("10.0.0.11"), cluster_id=A("2.2.2.2"))
    assert acc and not rej


def pool(name, cidr, **spec):
    return Object("IPPool", name, {"cidr": cidr, **spec})


def test_export_communities_from_the_most_specific_pool(caplog):
    pools = [pool("all", "10.244.0.0/16", communities=["65000:1"]),
             pool("rack", "10.244.1.0/24", communities=["65000:2"], large_communities=["65000:1:2"]),
             pool("bad", "10.245.0.0/16", communities=["not-a-community"])]
    out = export_attributes([N("10.244.1.0/26"), N("10.244.2.0/26"), N("10.245.0.0/26"), N("10.9.0.0/24")], pools)
    assert out == {N("10.244.1.0/26"): {"communities": ["65000:2"], "large_communities": ["65000:1:2"]},
                   N("10.244.2.0/26"): {"communities": ["65000:1"]}, N("10.245.0.0/26"): {},
                   N("10.9.0.0/24"): {}}
    assert "IPPool bad" in caplog.text


NETSTAT = ("TcpExt: SyncookiesSent TCPMD5NotFound TCPMD5Unexpected TCPMD5Failure\n"
           "TcpExt: 0 2 0 5\nIpExt: InNoRoutes\nIpExt: 0\n")


def test_md5_counters_and_session_hints():
    assert md5_failures(NETSTAT) == 7
    assert session_hint("established", 100, True, True, 30) == ""
    assert session_hint("idle", 5, True, False, 30) == ""  # too early to tell
    text = session_hint("idle", 40, True, False, 30, md5_drops=7)
    assert "TCP MD5 is configured for this peer" in text and "7 segments" in text
    assert "never came up" in session_hint("idle", 40, False, False, 30)
    assert "password we do not" in session_hint("idle", 40, False, False, 30, md5_drops=1)


def test_passive_peer_with_another_source_address_is_refused():
    with pytest.raises(ConfigError, match="ExaBGP listens only there") as e:
        build(AgentConfig, {"node": {"address": "10.0.0.2/24"},
                            "peers": [{"address": "10.0.0.1", "asn": 1, "passive": True, "source_address": "10.9.9.9"}]})
    assert e.value.where == "peers[0].source_address"
    build(AgentConfig, {"node": {"address": "10.0.0.2/24"},
                        "peers": [{"address": "10.0.0.1", "asn": 1, "passive": True, "source_address": "10.0.0.2"}]})


def test_datastore_bgppeer_with_peer_selector_applies_both_ways():
    obj = Object("BGPPeer", "to-reflectors", {"peer_selector": {"route-reflector": "true"},
                                              "node_selector": {"rack": "r1"}})
    client = cfg(labels={"rack": "r1"}, bgp={"node_to_node_mesh": False})
    other_rack = cfg(labels={"rack": "r2"}, bgp={"node_to_node_mesh": False})
    reflector = cfg("n1", "10.0.0.11/24", labels=RR, bgp={"node_to_node_mesh": False,
                                                          "route_reflector_cluster_id": "1.1.1.1"})
    nodes = NODES + [node("n5", "10.0.0.15/24", labels={"rack": "r1"})]
    assert {n.name for n in desired_neighbors(client, nodes, peers=all_peers(client, [obj]))} == {"n1", "n4"}
    assert desired_neighbors(other_rack, nodes, peers=all_peers(other_rack, [obj])) == []
    # the reflector peers back only with the nodes the entry's node_selector picks
    back = desired_neighbors(reflector, nodes, peers=all_peers(reflector, [obj]))
    assert {n.name: n.route_reflector_client for n in back} == {"n5": True}
