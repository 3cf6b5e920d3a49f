"""plan_dataplane: pools decide tunnels, NAT and each route's next hop."""

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from bgpnet.datastore.base import Object
from bgpnet.ipip.dataplane import Pool, plan_changes, plan_dataplane, pools_from_objects
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


# -- plan_changes: the delta for the changed prefixes lands on the full plan's routes

_DSTS = [N(f"10.244.{i}.0/26") for i in range(1, 9)] + [N("10.244.1.0/32"), N("10.64.0.0/24")]
_HOPS = [A("10.0.1.12"), A("10.0.1.13"), A("10.0.2.13"), A("10.0.1.11")]  # .11 is this node
_best_maps = st.dictionaries(st.sampled_from(_DSTS), st.lists(st.sampled_from(_HOPS), min_size=1, max_size=3,
                                                              unique=True), max_size=len(_DSTS))
_pool_sets = st.sampled_from([[], [Pool(N("10.244.0.0/16"), "ipip", "CrossSubnet")],
                              [Pool(N("10.244.0.0/16"), "ipip", "Always"), Pool(N("10.64.0.0/16"))]])


def _paths(hop_map):
    return {dst: tuple(Path(dst, hop, hop) for hop in hops) for dst, hops in hop_map.items()}


@given(_best_maps, _best_maps, _pool_sets, st.sets(st.sampled_from(_DSTS)))
def test_plan_changes_lands_on_the_full_plan(old, new, pools, extra):
    old, new = _paths(old), _paths(new)
    installed = {r.dst: r for r in plan_dataplane(old, OWN, NODE, pools).routes}
    full = plan_dataplane(new, OWN, NODE, pools)
    changed = {dst for dst in set(old) | set(new) if old.get(dst) != new.get(dst)} | extra
    changes = plan_changes(new, changed, installed, OWN, NODE, pools)
    assert (changes.tunnels, changes.nat) == (full.tunnels, full.nat)
    after = dict(installed)
    for dst in changes.removed:
        del after[dst]
    after.update((r.dst, r) for r in changes.routes)
    assert after == {r.dst: r for r in full.routes}
    assert all(installed.get(r.dst) != r for r in changes.routes)  # nothing written that is already there
