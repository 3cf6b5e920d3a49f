"""The demo's pure parts: convergence checks, wording, pod placement, and checks of the pool's blocks."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from bgpnet.lab.demo import (
    DemoPod,
    agent_session_gaps,
    block_gaps,
    describe_route,
    describe_sessions,
    frr_session_gaps,
    kernel_pool_routes,
    place_pods,
    pool_routes,
    probe_line,
    route_gaps,
    shared_store,
)

PODS = {"n1": [IPv4Network("10.244.1.0/24")], "n2": [IPv4Network("10.244.2.0/24")],
        "n3": [IPv4Network("10.244.3.0/24")]}


def test_frr_gaps_name_each_session_not_established():
    summary = {"ipv4Unicast": {"peers": {
        "10.0.0.11": {"remoteAs": 64512, "state": "Established"},
        "10.0.0.12": {"remoteAs": 64512, "state": "Active"},
    }}}
    assert frr_session_gaps("tor", summary) == ["tor (FRR): session with 10.0.0.12 (AS 64512) is Active"]
    assert frr_session_gaps("tor", {}) == ["tor (FRR) has no BGP neighbors configured"]


def test_agent_gaps_from_status():
    status = {"peers": [
        {"address": "10.0.0.1", "name": "tor", "type": "ebgp", "state": "established", "last_error": ""},
        {"address": "10.0.0.13", "name": "n3", "type": "ibgp", "state": "idle", "last_error": "collision"},
    ]}
    assert agent_session_gaps("n1", status) == ["n1: IBGP session with 10.0.0.13 (n3) is idle (collision)"]
    assert agent_session_gaps("n1", None) == ["n1: the agent has not written status.json yet"]


def test_route_gaps_ignore_own_blackhole_and_name_the_missing_block():
    routes = ["blackhole 10.244.1.0/24", "10.244.2.0/24 via 10.0.0.12 dev eth1"]
    assert route_gaps("n1", routes, PODS) == ["n1: no route (proto 201) to 10.244.3.0/24 of n3"]
    assert route_gaps("n1", routes + ["10.244.3.0/24 via 10.0.0.13 dev eth1"], PODS) == []
    # a blackhole for another node's block does not count as reaching it
    assert route_gaps("n2", ["blackhole 10.244.1.0/24", "10.244.3.0/24 via 10.0.0.13 dev eth1"], PODS) == [
        "n2: no route (proto 201) to 10.244.1.0/24 of n1"]


def test_describe_route_names_the_nodes():
    hops = {"10.0.0.12": "n2", "10.0.0.1": "tor"}
    assert describe_route("10.244.2.0/24 via 10.0.0.12 dev eth1 proto 201", hops) == "10.244.2.0/24 via n2"
    assert describe_route("10.9.0.0/24 via 10.0.0.99 dev eth1", hops) == "10.9.0.0/24 via 10.0.0.99"
    assert describe_route("blackhole 10.244.1.0/24 proto 201", hops) == "10.244.1.0/24 blackhole (its own)"
    assert describe_route("10.1.0.0/24 dev eth1 proto 201", hops) == "10.1.0.0/24 directly on eth1"


def test_describe_sessions_groups_peers_by_state():
    line = describe_sessions("n1 (bgpnet, AS 64512)", [("tor", "eBGP", "established", 0),
                                                         ("n2", "iBGP", "established", 1),
                                                         ("n3", "iBGP", "connect", 0)])
    assert line == ("n1 (bgpnet, AS 64512): established with tor (eBGP, 0 in), n2 (iBGP, 1 in); "
                    "connect with n3 (iBGP, 0 in)")
    assert describe_sessions("tor", [("n1", "", "Established", 2)]) == "tor: Established with n1 (2 in)"


def test_place_pods_one_per_node_then_wrap():
    pods = place_pods(["n1", "n2", "n3"])
    assert [(p.key, p.node, p.labels) for p in pods] == [
        ("demo/web", "n1", {"app": "web"}), ("demo/client", "n2", {"app": "client"}),
        ("demo/other", "n3", {"app": "other"})]
    assert pods[0].ports == [{"name": "http", "port": 80, "protocol": "TCP"}] and pods[1].app == "client"
    assert [p.node for p in place_pods(["a", "b"])] == ["a", "b", "a"]
    with pytest.raises(ValueError, match="no bgpnet nodes"):
        place_pods([])


def test_shared_store_needs_one_local_file():
    same = {"n1": ("local", "/s.db"), "n2": ("local", "/s.db")}
    assert shared_store(same) == ("/s.db", "")
    path, why = shared_store({"n1": ("local", "/a.db"), "n2": ("local", "/b.db")})
    assert path is None and why == "the bgpnet nodes do not share one datastore (n1: /a.db, n2: /b.db)"
    path, why = shared_store({"n1": ("kubernetes", ""), "n2": ("local", "/s.db")})
    assert path is None and why.startswith("n1 use a non-local datastore")
    assert shared_store({}) == (None, "the topology has no bgpnet nodes")


POOL = IPv4Network("10.248.0.0/16")
# FRR 8.4 `show bgp ipv4 unicast json` of a mesh3 demo run, trimmed to the fields read
FRR_TABLE = {"routerId": "10.0.0.1", "routes": {
    "10.244.1.0/24": [{"valid": True, "nexthops": [{"ip": "10.0.0.11", "afi": "ipv4", "used": True}]}],
    "10.248.0.0/26": [{"valid": True, "nexthops": [{"ip": "10.0.0.11", "afi": "ipv4", "used": True}]}],
    "10.248.0.64/26": [{"valid": True, "nexthops": [{"ip": "10.0.0.12", "afi": "ipv4", "used": True}]}],
    "10.248.0.128/26": [{"valid": True, "nexthops": [{"ip": "10.0.0.13", "afi": "ipv4", "used": True}]}],
}}
ADDR = {"n1": "10.0.0.11", "n2": "10.0.0.12", "n3": "10.0.0.13"}
BLOCKS = {"n1": [IPv4Network("10.248.0.0/26")], "n2": [IPv4Network("10.248.0.64/26")],
          "n3": [IPv4Network("10.248.0.128/26")]}


def test_pool_routes_keep_only_the_pool():
    assert pool_routes(FRR_TABLE, POOL) == {IPv4Network("10.248.0.0/26"): {"10.0.0.11"},
                                            IPv4Network("10.248.0.64/26"): {"10.0.0.12"},
                                            IPv4Network("10.248.0.128/26"): {"10.0.0.13"}}
    assert pool_routes({}, POOL) == {}


def test_block_gaps_exactly_the_blocks_each_from_its_node():
    learned = pool_routes(FRR_TABLE, POOL)
    assert block_gaps("tor", BLOCKS, learned, ADDR) == []
    missing = {k: v for k, v in learned.items() if k != IPv4Network("10.248.0.64/26")}
    assert block_gaps("tor", BLOCKS, missing, ADDR) == ["tor has not learned 10.248.0.64/26 (block of n2)"]
    wrong = {**learned, IPv4Network("10.248.0.0/26"): {"10.0.0.11", "10.0.0.13"}}
    assert block_gaps("tor", BLOCKS, wrong, ADDR) == [
        "tor learned 10.248.0.0/26 (block of n1) from 10.0.0.11, 10.0.0.13, not only from n1 (10.0.0.11)"]
    # a block nobody holds any more (released, but still announced) is a gap too
    extra = {**learned, IPv4Network("10.248.1.0/26"): {"10.0.0.12"}}
    assert block_gaps("tor", BLOCKS, extra, ADDR) == [
        "tor learned 10.248.1.0/26 from 10.0.0.12, but no node holds that block"]


def test_kernel_pool_routes_skip_blackholes_and_other_prefixes():
    lines = ["blackhole 10.248.0.0/26 proto 201", "10.248.0.64/26 via 10.0.0.12 dev eth1 proto 201",
             "10.244.2.0/24 via 10.0.0.12 dev eth1 proto 201", ""]
    assert kernel_pool_routes(lines, POOL) == {IPv4Network("10.248.0.64/26")}


def test_probe_line_says_allowed_or_denied_with_the_answer_or_error():
    web, other = DemoPod("demo/web", "n1"), DemoPod("demo/other", "n3")
    assert probe_line(other, web, "10.248.0.0", 80, True, "answer from demo/web to 10.248.0.128") == (
        "demo/other (n3) -> demo/web (n1) 10.248.0.0:80: allowed (answer from demo/web to 10.248.0.128)")
    err = "cannot connect from 10.248.0.128 to 10.248.0.0:80: [Errno 111] Connection refused"
    assert probe_line(other, web, "10.248.0.0", 80, False, err) == (
        "demo/other (n3) -> demo/web (n1) 10.248.0.0:80: denied (Connection refused)")
    assert probe_line(other, web, "10.248.0.0", 80, True, "", again=True).endswith(":80: allowed again")
