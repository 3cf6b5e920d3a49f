"""plan_dataplane: pools decide tunnels, NAT and each route's next hop."""

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from bgpnet.datastore.base import Object
from bgpnet.ipip.dataplane import Pool, plan_dataplane, pools_from_objects
from bgpnet.model import NextHop, Path, Route

N, A = IPv4Network, IPv4Address
NODE = IPv4Interface("10.0.1.11/24")
OWN = [N("10.244.1.0/26")]


def best(*items):
    return {N(p): (Path(N(p), A(nh), A(nh)),) for p, nh in items}


BEST = best(("10.244.2.0/26", "10.0.1.12"), ("10.244.3.0/26", "10.0.2.13"))


def test_no_pools_everything_native_no_devices_no_nat():
    plan = plan_dataplane(BEST, OWN, NODE, [])
    assert Route(N("10.244.1.0/26"), kind="blackhole") in plan.routes
    assert Route(N("10.244.3.0/26"), (NextHop(A("10.0.2.13")),)) in plan.routes
    assert plan.tunnels.ipip is None and plan.tunnels.vxlan is None and not plan.nat.enabled


def test_ipip_cross_subnet_only_for_the_other_subnet():
    plan = plan_dataplane(BEST, OWN, NODE, [Pool(N("10.244.0.0/16"), "ipip", "CrossSubnet", nat_outgoing=True)],
                          underlay_mtu=1500)
    assert Route(N("10.244.2.0/26"), (NextHop(A("10.0.1.12")),)) in plan.routes
    assert Route(N("10.244.3.0/26"), (NextHop(A("10.0.2.13"), "tunl0", True),)) in plan.routes
    assert plan.tunnels.ipip.mtu == 1480 and plan.tunnels.ipip.address == A("10.244.1.0")
    assert plan.nat.enabled and N("10.244.0.0/16") in plan.nat.nat_pools


def test_vxlan_always_uses_remote_vteps():
    plan = plan_dataplane(BEST, OWN, NODE, [Pool(N("10.244.0.0/16"), "vxlan", "Always")], underlay_mtu=9000)
    assert plan.tunnels.vxlan.mtu == 8950
    assert {v.node for v in plan.tunnels.vxlan.peers} == {A("10.0.1.12"), A("10.0.2.13")}
    hops = {r.dst: r.nexthops for r in plan.routes if r.kind == "unicast"}
    assert hops[N("10.244.3.0/26")] == (NextHop(A("10.244.3.0"), "vxlan.bgpnet", True),)


def test_pools_from_objects_skips_broken_and_natives_unknown_modes(caplog):
    pools = pools_from_objects([Object("IPPool", "a", {"cidr": "10.244.0.0/16", "encapsulation": "ipip",
                                                       "mode": "Always"}),
                                Object("IPPool", "b", {"cidr": "nonsense"}),
                                Object("IPPool", "c", {"cidr": "10.96.0.0/16", "encapsulation": "gre"})])
    assert pools == [Pool(N("10.96.0.0/16")), Pool(N("10.244.0.0/16"), "ipip", "Always")]
    assert "IPPool b" in caplog.text and "IPPool c" in caplog.text


def test_resolve_gateways_sends_native_routes_behind_a_router_via_the_router():
    from bgpnet.ipip.plan import resolve_gateways

    router = {A("10.0.2.13"): A("10.0.1.1"), A("10.0.2.14"): A("10.0.1.1")}
    asked = []

    def lookup(gw):
        asked.append(gw)
        return router.get(gw)

    plan = plan_dataplane(BEST, OWN, NODE, [Pool(N("10.244.0.0/16"), "vxlan", "Never")])
    ecmp = Route(N("10.244.9.0/26"), (NextHop(A("10.0.2.13")), NextHop(A("10.0.2.14"))))
    onlink = Route(N("10.244.8.0/26"), (NextHop(A("10.0.2.13"), "tunl0", True),))
    got = resolve_gateways(set(plan.routes) | {ecmp, onlink}, lookup)
    assert Route(N("10.244.3.0/26"), (NextHop(A("10.0.1.1")),)) in got  # behind the router
    assert Route(N("10.244.2.0/26"), (NextHop(A("10.0.1.12")),)) in got  # same subnet: unchanged
    assert Route(N("10.244.9.0/26"), (NextHop(A("10.0.1.1")),)) in got  # two hops, one router: merged
    assert onlink in got and Route(N("10.244.1.0/26"), kind="blackhole") in got  # never resolved
    assert len(got) == 5 and sorted(asked) == [A("10.0.1.12"), A("10.0.2.13"), A("10.0.2.14")]  # once each
