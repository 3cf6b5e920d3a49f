"""The demo's convergence checks and route wording (pure parts of bgpnet.lab.demo)."""

from __future__ import annotations

from ipaddress import IPv4Network

from bgpnet.lab.demo import agent_session_gaps, describe_route, frr_session_gaps, route_gaps

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
    hops, cidrs = {"10.0.0.12": "n2", "10.0.0.1": "tor"}, {"10.244.2.0/24": "n2", "10.244.1.0/24": "n1"}
    assert describe_route("10.244.2.0/24 via 10.0.0.12 dev eth1", hops, cidrs) == \
        "10.244.2.0/24 (n2's pods) via 10.0.0.12 (n2) out of eth1"
    assert describe_route("blackhole 10.244.1.0/24", hops, cidrs).startswith("10.244.1.0/24 is its own block")
