"""VXLAN CrossSubnet on this kernel: pods on two subnets joined by a router that has no route to the pod pool."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Network

import pytest

from bgpnet.ipip.nat import NatDriver, plan_nat
from bgpnet.ipip.tunnel import TunnelDriver, TunnelPlan
from tests.kernel.topology import (
    POOL,
    PORT,
    PROBE,
    add_counters,
    build,
    configure,
    counters,
    probe,
    probe_until_ok,
)

BIG = 256 * 1024  # far larger than the tunnel MTU (1450): many segments, all through the tunnel


@pytest.fixture
def topo(netns_factory):
    t = build(netns_factory)
    yield t
    t.close()


def test_vxlan_cross_subnet_pods_reach_each_other_encapsulated(topo):
    n1, n2, n3 = (topo.nodes[n] for n in ("n1", "n2", "n3"))
    add_counters(
        topo.router,
        "FORWARD",
        {
            "vxlan": ["-p", "udp", "--dport", "4789"],
            "bare_src": ["-s", str(POOL)],
            "bare_dst": ["-d", str(POOL)],
        },
    )
    add_counters(n2.ns, "INPUT", {"vxlan_in": ["-p", "udp", "--dport", "4789"]})
    add_counters(n2.ns, "FORWARD", {"native_in": ["-i", "eth0", "-s", str(n1.pod_ip), "-d", str(n2.pod_ip)]})

    # before: the router cannot carry pod traffic
    assert not probe(n1.pod, str(n3.pod_ip), timeout=2)["ok"]
    topo.router.run("iptables", "-Z", "FORWARD")

    summaries = configure(topo, "vxlan")
    assert "vxlan.bgpnet: created" in summaries["n1"][0]
    assert "10.0.2.10" in n1.ns.run("bridge", "fdb", "show", "dev", "vxlan.bgpnet")
    assert "10.244.3.0/26 via 10.244.3.0 dev vxlan.bgpnet" in n1.ns.run("ip", "route", "show", "proto", "201")
    assert "10.244.2.0/26 via 10.0.1.11 dev eth0" in n1.ns.run("ip", "route", "show", "proto", "201")

    # cross-subnet, both ways, real TCP, with a payload far beyond the tunnel MTU
    for src, dst in ((n1, n3), (n3, n1)):
        r = probe_until_ok(src.pod, str(dst.pod_ip))
        assert r["peer"] == str(src.pod_ip), r  # no NAT between pods
        big = probe(src.pod, str(dst.pod_ip), size=BIG)
        assert big["ok"] and big["bytes"] == BIG, big
    c = counters(topo.router, "FORWARD")
    assert c["vxlan"] > 4 * BIG, c  # both payloads, both ways, crossed the router as UDP 4789
    assert c["bare_src"] == 0 and c["bare_dst"] == 0, c  # no pod address ever crossed the router bare

    # same subnet: native, not encapsulated
    for src, dst in ((n1, n2), (n2, n1)):
        assert probe_until_ok(src.pod, str(dst.pod_ip))["ok"]
    c2 = counters(n2.ns, "INPUT") | counters(n2.ns, "FORWARD")
    assert c2["native_in"] > 0 and c2["vxlan_in"] == 0, c2

    # idempotent: a second run changes nothing
    again = configure(topo, "vxlan")
    assert again["n1"][0] == "tunnels: 0 changes" and "0 added, 0 replaced, 0 removed" in again["n1"][1]

    # switching the pool off VXLAN at run time leaves no device behind
    TunnelDriver(n1.ns.name).apply(TunnelPlan())
    assert "vxlan.bgpnet" not in n1.ns.run("ip", "link", "show")


def test_nat_outgoing_masquerades_pod_traffic_leaving_the_pools(topo):
    """The router has no route back to the pods: only NAT on the node lets a pod reach it."""
    n1 = topo.nodes["n1"]

    server = topo.router.popen([sys.executable, PROBE, "serve", str(PORT)], stdout=subprocess.PIPE, text=True)
    topo.servers.append(server)
    assert server.stdout.readline().strip() == "listening"
    assert not probe(n1.pod, "10.0.2.1", timeout=2)["ok"]

    nat = NatDriver(n1.ns.name)
    nat.apply(plan_nat([(POOL, True), (IPv4Network("10.245.0.0/16"), False)]))
    nat.apply(plan_nat([(POOL, True), (IPv4Network("10.245.0.0/16"), False)]))  # idempotent: one jump only
    saved = n1.ns.run("iptables-save", "-t", "nat")
    assert saved.count("-j BGPNET-NAT-OUTGOING") == 1, saved
    r = probe_until_ok(n1.pod, "10.0.2.1")
    assert r["peer"] == "10.0.1.10", r  # masqueraded to the node's address

    nat.apply(plan_nat([(POOL, False)]))
    assert "BGPNET-NAT-OUTGOING" not in n1.ns.run("iptables-save", "-t", "nat")
    assert "bgpnet-nat-pools" not in n1.ns.run("ipset", "list", "-n")
