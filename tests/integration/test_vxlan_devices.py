"""Tunnel driver on this kernel: VXLAN device life cycle, and a clear error (changing nothing) without ipip."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bgpnet.errors import KernelFeatureMissing
from bgpnet.ipip.plan import Vtep
from bgpnet.ipip.tunnel import IpipDevice, TunnelDriver, TunnelPlan, VxlanDevice, vtep_mac

A = IPv4Address


def vtep(node: str, tunnel: str) -> Vtep:
    return Vtep(A(node), A(tunnel), vtep_mac(A(node)))


@pytest.fixture
def ns(netns_factory):
    n = netns_factory("tun")
    n.run("ip", "link", "add", "name", "eth0", "type", "veth", "peer", "name", "eth0p")
    n.run("ip", "addr", "add", "10.0.1.10/24", "dev", "eth0")
    n.run("ip", "link", "set", "eth0", "up")
    return n


def test_kernel_without_ipip_raises_before_changing_anything(ns):
    driver = TunnelDriver(ns.name)
    if driver.has_ipip():
        pytest.skip("this kernel has ipip (the VM tier covers it)")
    links_before = ns.run("ip", "-o", "link", "show")
    plan = TunnelPlan(
        ipip=IpipDevice(A("10.244.1.0"), 1480),
        vxlan=VxlanDevice(A("10.0.1.10"), A("10.244.1.0"), vtep_mac(A("10.0.1.10")), 1450),
    )
    with pytest.raises(
        KernelFeatureMissing, match=r"no IPIP support \(CONFIG_NET_IPIP\); use encapsulation: vxlan"
    ):
        driver.apply(plan)
    assert ns.run("ip", "-o", "link", "show") == links_before  # no vxlan device, no probe device left


def test_vxlan_device_peers_follow_the_plan_and_the_device_goes_with_the_last_pool(ns):
    driver = TunnelDriver(ns.name)
    a, b = vtep("10.0.2.10", "10.244.3.0"), vtep("10.0.2.11", "10.244.4.0")
    dev = VxlanDevice(A("10.0.1.10"), A("10.244.1.0"), vtep_mac(A("10.0.1.10")), 1450, frozenset({a, b}))
    driver.apply(TunnelPlan(vxlan=dev))
    link = driver.link("vxlan.bgpnet")
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["local"], info["learning"]) == (4096, 4789, "10.0.1.10", False)
    assert link["mtu"] == 1450 and link["address"] == "0e:be:0a:00:01:0a" and "UP" in link["flags"]
    assert driver.addresses("vxlan.bgpnet") == {"10.244.1.0/32"}
    neigh = ns.run("ip", "neigh", "show", "dev", "vxlan.bgpnet")
    assert "10.244.3.0 lladdr 0e:be:0a:00:02:0a PERMANENT" in neigh and "10.244.4.0" in neigh
    fdb = ns.run("bridge", "fdb", "show", "dev", "vxlan.bgpnet")
    assert "0e:be:0a:00:02:0a dst 10.0.2.10" in fdb and "0e:be:0a:00:02:0b dst 10.0.2.11" in fdb

    assert driver.apply(TunnelPlan(vxlan=dev)).changes == []  # idempotent

    # a peer leaves: its neighbour and FDB entries go, the other's stay
    res = driver.apply(
        TunnelPlan(vxlan=VxlanDevice(dev.local, dev.address, dev.mac, dev.mtu, frozenset({a})))
    )
    assert len(res.changes) == 2, res.changes
    assert "10.244.4.0" not in ns.run("ip", "neigh", "show", "dev", "vxlan.bgpnet")
    assert "10.0.2.11" not in ns.run("bridge", "fdb", "show", "dev", "vxlan.bgpnet")
    assert "10.0.2.10" in ns.run("bridge", "fdb", "show", "dev", "vxlan.bgpnet")

    # the node address changes: the device is recreated with the new local address
    ns.run("ip", "addr", "add", "10.0.1.20/24", "dev", "eth0")
    moved = VxlanDevice(A("10.0.1.20"), dev.address, vtep_mac(A("10.0.1.20")), dev.mtu, frozenset({a}))
    res = driver.apply(TunnelPlan(vxlan=moved))
    assert any("settings changed" in c for c in res.changes), res.changes
    assert driver.link("vxlan.bgpnet")["linkinfo"]["info_data"]["local"] == "10.0.1.20"

    # no pool uses VXLAN any more: the device goes
    driver.apply(TunnelPlan())
    assert driver.link("vxlan.bgpnet") is None
