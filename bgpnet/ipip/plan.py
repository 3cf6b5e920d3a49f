"""Route planning (pure): best BGP paths + own blocks + encapsulation policy -> the kernel routes we want.

Native next hops on the node's subnet, IPIP (`via NH dev tunl0 onlink`) or VXLAN (`via VTEP dev vxlan.bgpnet
onlink`) across L3 boundaries, as Calico does; a blackhole covers each of our own blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from bgpnet.errors import ValidationError
from bgpnet.model import NextHop, Path, Route, covers, prefix_key

log = logging.getLogger(__name__)

ENCAPSULATIONS = ("none", "ipip", "vxlan")
MODES = ("Always", "CrossSubnet", "Never")


@dataclass(frozen=True)
class EncapPolicy:
    """How to reach destinations inside `pools` (empty = every destination); usually one per IP pool."""

    encapsulation: str = "none"  # none | ipip | vxlan
    mode: str = "Never"  # Always | CrossSubnet | Never
    pools: tuple[IPv4Network, ...] = ()

    def __post_init__(self) -> None:
        if self.encapsulation not in ENCAPSULATIONS:
            raise ValidationError(
                f"unknown encapsulation {self.encapsulation!r} (expected one of {', '.join(ENCAPSULATIONS)})",
                "encapsulation",
            )
        if self.mode not in MODES:
            raise ValidationError(f"unknown mode {self.mode!r} (expected one of {', '.join(MODES)})", "mode")

    def applies_to(self, dst: IPv4Network) -> int:
        """-1 if not; otherwise the prefix length of the matching pool (0 for a catch-all policy)."""
        if not self.pools:
            return 0
        best = -1
        for pool in self.pools:
            if dst.subnet_of(pool):
                best = max(best, pool.prefixlen)
        return best

    @property
    def encapsulates(self) -> bool:
        return self.encapsulation != "none" and self.mode != "Never"


@dataclass(frozen=True, order=True)
class Vtep:
    """A remote node's VXLAN endpoint: its underlay address (the BGP next hop), its vxlan device address
    (taken from its block, as Calico does) and the device's MAC."""

    node: IPv4Address
    tunnel_address: IPv4Address
    mac: str


NATIVE = EncapPolicy()


def policy_for(dst: IPv4Network, policies: Sequence[EncapPolicy]) -> EncapPolicy:
    """The policy whose pool most specifically covers `dst`; a catch-all policy loses to any pool match;
    ties go to the earlier policy. No match: native routing."""
    chosen, chosen_len = NATIVE, -1
    for p in policies:
        n = p.applies_to(dst)
        if n > chosen_len:
            chosen, chosen_len = p, n
    return chosen


def hop_sort_key(nh: NextHop) -> tuple:
    return (int(nh.gateway) if nh.gateway else -1, nh.dev or "", nh.onlink)


def next_hop_for(
    gateway: IPv4Address,
    policy: EncapPolicy,
    node_address: IPv4Interface,
    tunnel_dev: str,
    vxlan_dev: str,
    vteps: Mapping[IPv4Address, Vtep],
) -> NextHop | None:
    """The kernel next hop to reach a peer node at `gateway`; None if it cannot be reached yet (no VTEP)."""
    same_subnet = gateway in node_address.network
    if not policy.encapsulates or (policy.mode == "CrossSubnet" and same_subnet):
        return NextHop(gateway=gateway)
    if policy.encapsulation == "ipip":
        return NextHop(gateway=gateway, dev=tunnel_dev, onlink=True)
    vtep = vteps.get(gateway)
    if vtep is None:
        # Calico waits for the remote VTEP too: a route without its neighbour entry would blackhole.
        return None
    return NextHop(gateway=vtep.tunnel_address, dev=vxlan_dev, onlink=True)


class RoutePlanner:
    """The kernel route of one prefix at a time, as `plan_routes` plans them all: the agent plans just the
    prefixes a burst of updates changed. Next hops are worked out once per (gateway, policy)."""

    def __init__(
        self,
        own: Iterable[IPv4Network],
        node_address: IPv4Interface,
        policies: Sequence[EncapPolicy] = (),
        tunnel_dev: str = "tunl0",
        vxlan_dev: str = "vxlan.bgpnet",
        vteps: Mapping[IPv4Address, Vtep] | None = None,
    ):
        self.own = set(own)
        self._node_address, self._node_ip = node_address, node_address.ip
        self._tunnel_dev, self._vxlan_dev, self._vteps = tunnel_dev, vxlan_dev, vteps or {}
        self._policy_of = _policy_lookup(policies)
        self._hops: dict[tuple[IPv4Address, EncapPolicy], NextHop | None] = {}
        # per (path attributes, policy), by identity: the paths of one UPDATE share their attributes
        self._single: dict[tuple[int, int], tuple[NextHop, ...]] = {}

    def _hop(self, gateway: IPv4Address, policy: EncapPolicy) -> NextHop | None:
        key = (gateway, policy)
        if key not in self._hops:
            if gateway == self._node_ip:
                self._hops[key] = None
            else:
                self._hops[key] = next_hop_for(gateway, policy, self._node_address, self._tunnel_dev,
                                               self._vxlan_dev, self._vteps)
                if self._hops[key] is None:
                    log.info("no VTEP known for next hop %s yet; its routes wait", gateway)
        return self._hops[key]

    def route(self, dst: IPv4Network, paths: Sequence[Path]) -> Route | None:
        """The route for `dst` over its best `paths`; None for one of our own blocks (its blackhole is
        planned apart) and when no path has a usable next hop."""
        if dst in self.own:
            return None
        policy = self._policy_of(dst)
        if len(paths) == 1:
            attributes = paths[0].attributes
            key = (id(attributes), id(policy))
            nexthops = self._single.get(key)
            if nexthops is None:
                nh = self._hop(attributes.next_hop, policy)
                nexthops = self._single[key] = (nh,) if nh is not None else ()
        else:
            found = {self._hop(path.next_hop, policy) for path in paths} - {None}
            nexthops = tuple(sorted(found, key=hop_sort_key))
        return Route(dst, nexthops) if nexthops else None


def plan_routes(
    best: Mapping[IPv4Network, Sequence[Path]],
    own: Iterable[IPv4Network],
    node_address: IPv4Interface,
    policies: Sequence[EncapPolicy] = (),
    tunnel_dev: str = "tunl0",
    vxlan_dev: str = "vxlan.bgpnet",
    vteps: Mapping[IPv4Address, Vtep] | None = None,
) -> set[Route]:
    """Kernel routes for our own blocks (blackholes) and the best paths (ECMP: one next hop per path).

    A learned prefix equal to one of our blocks is never installed (our blackhole covers it); one strictly
    inside our block (an address borrowed by another node, announced as a /32) is, since more specific wins.
    Paths whose next hop is this node are skipped: a route via ourselves would loop.
    """
    planner = RoutePlanner(own, node_address, policies, tunnel_dev, vxlan_dev, vteps)
    routes: set[Route] = {Route(dst, kind="blackhole") for dst in planner.own}
    for dst, paths in best.items():
        route = planner.route(dst, paths)
        if route is not None:
            routes.add(route)
    return routes


def _policy_lookup(policies: Sequence[EncapPolicy]) -> Callable[[IPv4Network], EncapPolicy]:
    """policy_for(dst, policies) as integer tests on pool keys (it runs once per learned prefix)."""
    if not policies:
        return lambda dst: NATIVE
    # pool keys, longest first; a catch-all policy is the pool 0.0.0.0/0; the earlier policy wins a tie
    by_pool: dict[tuple[int, int], EncapPolicy] = {}
    for p in policies:
        for pool in p.pools or (IPv4Network("0.0.0.0/0"),):
            by_pool.setdefault(prefix_key(pool), p)
    ordered = sorted(by_pool.items(), key=lambda kv: -kv[0][1])

    def lookup(dst: IPv4Network) -> EncapPolicy:
        key = prefix_key(dst)
        for pool_key, policy in ordered:
            if covers(pool_key, key):
                return policy
        return NATIVE
    return lookup


def resolve_gateways(
    routes: Iterable[Route], lookup: Callable[[IPv4Address], IPv4Address | None]
) -> list[Route]:
    """Native next hops that are not on a connected subnet, resolved to the hop the kernel uses to reach
    them, as BIRD's `gateway recursive` does for iBGP: the kernel refuses `via G` for a G behind a router.

    `lookup(G)` is the immediate gateway towards G, or None when G is directly reachable (or unreachable:
    the route is then kept as planned and its write fails with the kernel's error). Onlink hops (tunnels)
    are never resolved; hops that resolve to the same gateway merge."""
    cache: dict[IPv4Address, IPv4Address | None] = {}
    resolved: dict[int, tuple[NextHop, ...] | None] = {}  # by identity: routes share next-hop tuples

    def resolve(hops: tuple[NextHop, ...]) -> tuple[NextHop, ...] | None:
        """The resolved next hops, or None when they stay as they are."""
        if all(nh.onlink or nh.gateway is None for nh in hops):
            return None
        out: list[NextHop] = []
        changed = False
        for nh in hops:
            if not nh.onlink and nh.gateway is not None:
                if nh.gateway not in cache:
                    cache[nh.gateway] = lookup(nh.gateway)
                via = cache[nh.gateway]
                if via is not None and via != nh.gateway:
                    nh, changed = NextHop(gateway=via, dev=nh.dev), True
            if nh not in out:
                out.append(nh)
        # the common case (every next hop on a connected subnet) keeps the planned route as it is
        return tuple(sorted(out, key=hop_sort_key)) if changed else None

    routes_out = []
    for route in routes:
        if route.kind == "unicast":
            key = id(route.nexthops)
            if key not in resolved:
                resolved[key] = resolve(route.nexthops)
            hops = resolved[key]
            if hops is not None:
                route = Route(route.dst, hops, route.kind, route.table)
        routes_out.append(route)
    return routes_out
