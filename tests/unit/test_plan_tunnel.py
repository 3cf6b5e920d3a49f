"""Tunnel device planning and outgoing-NAT rendering (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from bgpnet.ipip.nat import CHAIN, SET_ALL, SET_NAT, plan_nat, render_ipsets, render_rules
from bgpnet.ipip.plan import EncapPolicy, Vtep
from bgpnet.ipip.tunnel import (
    IpipDevice,
    TunnelPlan,
    VxlanDevice,
    plan_tunnels,
    tunnel_address,
    vtep_mac,
    vteps_from_paths,
)
from bgpnet.model import Path

N = IPv4Network
A = IPv4Address
NODE = A("10.0.1.10")
POOL = N("10.244.0.0/16")


def test_no_encapsulation_no_devices():
    assert plan_tunnels([], NODE, [N("10.244.1.0/26")]) == TunnelPlan()
    assert plan_tunnels([EncapPolicy("ipip", "Never", (POOL,))], NODE, [N("10.244.1.0/26")]) == TunnelPlan()


def test_ipip_device_gets_first_address_of_lowest_block_and_mtu_minus_20():
    plan = plan_tunnels(
        [EncapPolicy("ipip", "CrossSubnet", (POOL,))], NODE, [N("10.244.9.0/26"), N("10.244.1.0/26")], 9000
    )
    assert plan == TunnelPlan(ipip=IpipDevice(A("10.244.1.0"), 8980))


def test_vxlan_device_with_peers_mtu_minus_50_and_derived_mac():
    peers = {
        A("10.0.2.10"): Vtep(A("10.0.2.10"), A("10.244.3.0"), vtep_mac(A("10.0.2.10"))),
        NODE: Vtep(NODE, A("10.244.1.0"), vtep_mac(NODE)),  # ourselves: never a peer
    }
    plan = plan_tunnels([EncapPolicy("vxlan", "Always")], NODE, [N("10.244.1.0/26")], 1500, peers)
    assert plan.ipip is None
    assert plan.vxlan == VxlanDevice(
        local=NODE,
        address=A("10.244.1.0"),
        mac="0e:be:0a:00:01:0a",
        mtu=1450,
        peers=frozenset({peers[A("10.0.2.10")]}),
    )
    assert (plan.vxlan.vni, plan.vxlan.port, plan.vxlan.name) == (4096, 4789, "vxlan.bgpnet")


def test_both_encapsulations_in_different_pools():
    policies = [
        EncapPolicy("ipip", "Always", (N("10.244.0.0/17"),)),
        EncapPolicy("vxlan", "Always", (N("10.244.128.0/17"),)),
    ]
    plan = plan_tunnels(policies, NODE, [N("10.244.1.0/26")])
    assert plan.ipip is not None and plan.vxlan is not None


def test_no_block_yet_means_no_devices():
    assert plan_tunnels([EncapPolicy("vxlan", "Always")], NODE, []) == TunnelPlan()


def test_explicit_tunnel_address_wins():
    plan = plan_tunnels([EncapPolicy("ipip", "Always")], NODE, [N("10.244.1.0/26")], address=A("10.244.1.63"))
    assert plan.ipip.address == A("10.244.1.63")


def test_vteps_from_paths_uses_lowest_block_per_next_hop_and_ignores_borrowed_32s():
    def p(prefix, nh):
        return Path(N(prefix), A(nh), A(nh))

    best = {
        N("10.244.7.0/26"): [p("10.244.7.0/26", "10.0.2.10")],
        N("10.244.3.0/26"): [p("10.244.3.0/26", "10.0.2.10")],
        N("10.244.0.9/32"): [p("10.244.0.9/32", "10.0.2.10")],
        N("10.244.4.0/26"): [p("10.244.4.0/26", "10.0.2.11"), p("10.244.4.0/26", str(NODE))],
    }
    vteps = vteps_from_paths(best, NODE)
    assert vteps == {
        A("10.0.2.10"): Vtep(A("10.0.2.10"), A("10.244.3.0"), "0e:be:0a:00:02:0a"),
        A("10.0.2.11"): Vtep(A("10.0.2.11"), A("10.244.4.0"), "0e:be:0a:00:02:0b"),
    }
    assert tunnel_address([N("10.244.7.0/26"), N("10.244.3.0/26")]) == A("10.244.3.0")


def test_nat_rules_and_sets():
    plan = plan_nat([(POOL, True), (N("10.245.0.0/16"), False)])
    rules = render_rules(plan, jump_present=False)
    assert rules.splitlines() == [
        "*nat",
        f":{CHAIN} - [0:0]",
        f"-A {CHAIN} -m set --match-set {SET_NAT} src -m set ! --match-set {SET_ALL} dst -j MASQUERADE",
        f'-I POSTROUTING 1 -m comment --comment "bgpnet:nat-outgoing" -j {CHAIN}',
        "COMMIT",
    ]
    assert "POSTROUTING" not in render_rules(plan, jump_present=True)
    sets = render_ipsets(plan).splitlines()
    assert f"add {SET_NAT}-tmp 10.244.0.0/16" in sets
    assert f"add {SET_NAT}-tmp 10.245.0.0/16" not in sets
    assert f"add {SET_ALL}-tmp 10.245.0.0/16" in sets and f"add {SET_ALL}-tmp 10.244.0.0/16" in sets
    assert sets.index(f"swap {SET_NAT} {SET_NAT}-tmp") > sets.index(f"add {SET_NAT}-tmp 10.244.0.0/16")


def test_nat_disabled_when_no_pool_asks():
    plan = plan_nat([(POOL, False)])
    assert not plan.enabled
    assert "MASQUERADE" not in render_rules(plan, jump_present=False)
