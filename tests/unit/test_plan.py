"""plan_routes: own blocks, ECMP, native vs IPIP vs VXLAN next hops, order independence."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgpnet.errors import ValidationError
from bgpnet.ipip.plan import EncapPolicy, Vtep, _policy_lookup, plan_routes, policy_for
from bgpnet.model import NextHop, Path, Route

N = IPv4Network
A = IPv4Address
NODE = IPv4Interface("192.168.1.10/24")
POOL = N("10.244.0.0/16")


def path(prefix: str, nh: str) -> Path:
    return Path(N(prefix), A(nh), A(nh))


def best(*paths: Path) -> dict[IPv4Network, list[Path]]:
    out: dict[IPv4Network, list[Path]] = {}
    for p in paths:
        out.setdefault(p.prefix, []).append(p)
    return out


def test_own_blocks_are_blackholes_and_learned_equal_prefix_is_not_installed():
    own = [N("10.244.1.0/26")]
    routes = plan_routes(best(path("10.244.1.0/26", "192.168.1.11")), own, NODE)
    assert routes == {Route(N("10.244.1.0/26"), kind="blackhole")}


def test_borrowed_address_inside_own_block_is_routed_to_the_peer():
    own = [N("10.244.1.0/26")]
    routes = plan_routes(best(path("10.244.1.7/32", "192.168.1.11")), own, NODE)
    assert routes == {
        Route(N("10.244.1.0/26"), kind="blackhole"),
        Route(N("10.244.1.7/32"), (NextHop(A("192.168.1.11")),)),
    }


def test_path_via_ourselves_is_skipped():
    routes = plan_routes(best(path("10.244.2.0/26", str(NODE.ip))), [], NODE)
    assert routes == set()


def test_ecmp_one_route_with_one_hop_per_path_sorted_and_deduplicated():
    b = best(
        path("10.244.2.0/26", "192.168.1.12"),
        path("10.244.2.0/26", "192.168.1.11"),
        path("10.244.2.0/26", "192.168.1.12"),
    )
    (route,) = plan_routes(b, [], NODE)
    assert route.nexthops == (NextHop(A("192.168.1.11")), NextHop(A("192.168.1.12")))


@pytest.mark.parametrize(
    ("mode", "nh", "expected"),
    [
        ("Never", "10.0.0.5", NextHop(A("10.0.0.5"))),
        ("Always", "192.168.1.11", NextHop(A("192.168.1.11"), "tunl0", True)),
        ("Always", "10.0.0.5", NextHop(A("10.0.0.5"), "tunl0", True)),
        ("CrossSubnet", "192.168.1.11", NextHop(A("192.168.1.11"))),
        ("CrossSubnet", "10.0.0.5", NextHop(A("10.0.0.5"), "tunl0", True)),
    ],
)
def test_ipip_modes(mode, nh, expected):
    policies = [EncapPolicy("ipip", mode, (POOL,))]
    (route,) = plan_routes(best(path("10.244.2.0/26", nh)), [], NODE, policies)
    assert route.nexthops == (expected,)


def test_encapsulation_none_is_native_whatever_the_mode():
    (route,) = plan_routes(best(path("10.244.2.0/26", "10.0.0.5")), [], NODE, [EncapPolicy("none", "Always")])
    assert route.nexthops == (NextHop(A("10.0.0.5")),)


def test_policy_applies_only_to_its_pools():
    policies = [EncapPolicy("ipip", "Always", (POOL,))]
    routes = plan_routes(best(path("172.16.0.0/24", "10.0.0.5")), [], NODE, policies)
    assert routes == {Route(N("172.16.0.0/24"), (NextHop(A("10.0.0.5")),))}


def test_most_specific_pool_wins_and_catch_all_loses():
    catch_all = EncapPolicy("vxlan", "Always")
    wide = EncapPolicy("ipip", "Always", (POOL,))
    narrow = EncapPolicy("none", "Never", (N("10.244.128.0/17"),))
    policies = [catch_all, wide, narrow]
    assert policy_for(N("10.244.200.0/26"), policies) is narrow
    assert policy_for(N("10.244.2.0/26"), policies) is wide
    assert policy_for(N("172.16.0.0/24"), policies) is catch_all


def test_vxlan_routes_via_remote_vtep_address_onlink():
    vteps = {A("10.0.0.5"): Vtep(A("10.0.0.5"), A("10.244.2.0"), "0e:00:0a:00:00:05")}
    policies = [EncapPolicy("vxlan", "CrossSubnet", (POOL,))]
    b = best(path("10.244.2.0/26", "10.0.0.5"), path("10.244.3.0/26", "192.168.1.11"))
    routes = plan_routes(b, [], NODE, policies, vteps=vteps)
    assert routes == {
        Route(N("10.244.2.0/26"), (NextHop(A("10.244.2.0"), "vxlan.bgpnet", True),)),
        Route(N("10.244.3.0/26"), (NextHop(A("192.168.1.11")),)),
    }


def test_vxlan_route_waits_for_unknown_vtep():
    policies = [EncapPolicy("vxlan", "Always")]
    assert plan_routes(best(path("10.244.2.0/26", "10.0.0.5")), [], NODE, policies) == set()


def test_custom_device_names():
    policies = [EncapPolicy("ipip", "Always")]
    (route,) = plan_routes(best(path("10.244.2.0/26", "10.0.0.5")), [], NODE, policies, tunnel_dev="tun9")
    assert route.nexthops == (NextHop(A("10.0.0.5"), "tun9", True),)


def test_bad_policy_names_the_field():
    with pytest.raises(ValidationError, match="encapsulation.*gre"):
        EncapPolicy("gre", "Always")
    with pytest.raises(ValidationError, match="mode.*Sometimes"):
        EncapPolicy("ipip", "Sometimes")


# -- order independence: the plan depends only on the set of inputs, not on their order

prefixes = st.sampled_from([N(f"10.244.{i}.0/26") for i in range(6)] + [N("10.244.1.7/32")])
next_hops = st.sampled_from([A("192.168.1.11"), A("192.168.1.12"), A("10.0.0.5"), A("10.0.1.5"), NODE.ip])
paths = st.lists(st.builds(lambda p, nh: Path(p, nh, nh), prefixes, next_hops), max_size=20)
owns = st.lists(st.sampled_from([N("10.244.1.0/26"), N("10.244.5.0/26")]), max_size=2)
policy_sets = st.lists(
    st.builds(
        EncapPolicy,
        st.sampled_from(["none", "ipip", "vxlan"]),
        st.sampled_from(["Always", "CrossSubnet", "Never"]),
        st.sampled_from([(), (POOL,), (N("10.244.0.0/22"),)]),
    ),
    max_size=2,
)
VTEPS = {
    a: Vtep(a, A(f"10.244.{i}.0"), f"0e:00:00:00:00:0{i}")
    for i, a in enumerate([A("10.0.0.5"), A("10.0.1.5")])
}


@settings(max_examples=200, deadline=None)
@given(paths, owns, policy_sets, st.randoms())
def test_plan_is_independent_of_input_order(ps, own, policies, rnd):
    first = plan_routes(best(*ps), own, NODE, policies, vteps=VTEPS)
    shuffled = list(ps)
    rnd.shuffle(shuffled)
    own2 = list(own)
    rnd.shuffle(own2)
    again = plan_routes(best(*shuffled), own2, NODE, policies, vteps=VTEPS)
    assert again == first
    # invariants: one route per destination, no route via ourselves, our blocks are blackholes
    assert len({r.dst for r in first}) == len(first)
    assert all(nh.gateway != NODE.ip for r in first for nh in r.nexthops)
    assert {r.dst for r in first if r.kind == "blackhole"} == set(own)


pool_nets = st.builds(lambda a, n: IPv4Network((0x0AF40000 + (a << 8), n), strict=False),
                      st.integers(0, 255), st.integers(14, 26))
policies_st = st.lists(st.builds(EncapPolicy, st.sampled_from(["none", "ipip", "vxlan"]),
                                 st.sampled_from(["Always", "CrossSubnet", "Never"]),
                                 st.lists(pool_nets, max_size=2).map(tuple)), max_size=4)


@given(policies_st, st.lists(pool_nets, min_size=1, max_size=8))
def test_policy_lookup_agrees_with_policy_for(policies, destinations):
    """plan_routes looks policies up on integer keys; the result is policy_for's, ties and catch-alls too."""
    lookup = _policy_lookup(policies)
    for dst in destinations:
        assert lookup(dst) is policy_for(dst, policies)
