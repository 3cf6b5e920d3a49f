"""The node's forwarding state as one plan: tunnel devices, outgoing NAT and routes, from the pools.

`plan_dataplane` is pure; `Dataplane.apply` writes it in a fixed order (tunnels, NAT, routes), so a
route via tunl0 or vxlan.bgpnet is only written once its device exists.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from bgpnet.errors import KernelFeatureMissing
from bgpnet.ipip.nat import NatDriver, NatPlan, plan_nat
from bgpnet.ipip.plan import ENCAPSULATIONS, MODES, EncapPolicy, RoutePlanner, plan_routes, resolve_gateways
from bgpnet.ipip.tunnel import NO_IPIP, TunnelDriver, TunnelPlan, plan_tunnels, vteps_from_paths
from bgpnet.model import Path, Route

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pool:
    """What the dataplane needs of an IP pool."""

    cidr: IPv4Network
    encapsulation: str = "none"
    mode: str = "Never"
    nat_outgoing: bool = False


def pools_from_objects(objects: Iterable) -> list[Pool]:
    """IPPool datastore objects -> pools; an invalid one is logged with its name and left out."""
    out = []
    for obj in objects:
        spec = obj.spec
        try:
            pool = Pool(IPv4Network(spec["cidr"]), spec.get("encapsulation", "none") or "none",
                        spec.get("mode", "Never") or "Never", bool(spec.get("nat_outgoing", False)))
        except (KeyError, TypeError, ValueError) as e:
            log.error("IPPool %s: unusable for routing: %s", obj.name, e)
            continue
        if pool.encapsulation not in ENCAPSULATIONS or pool.mode not in MODES:
            log.error("IPPool %s: encapsulation %r / mode %r not understood; routed natively", obj.name,
                      pool.encapsulation, pool.mode)
            pool = Pool(pool.cidr, nat_outgoing=pool.nat_outgoing)
        out.append(pool)
    return sorted(out, key=lambda p: p.cidr)


@dataclass(frozen=True)
class DataplanePlan:
    routes: frozenset[Route]
    tunnels: TunnelPlan
    nat: NatPlan


def plan_dataplane(best: Mapping[IPv4Network, Sequence[Path]], own: Iterable[IPv4Network],
                   node_address: IPv4Interface, pools: Sequence[Pool], underlay_mtu: int = 1500,
                   tunnel_address: IPv4Address | None = None) -> DataplanePlan:
    """`tunnel_address`: the tunnel devices' address, reserved in IPAM (default: first address of the
    lowest own prefix, fine for static pod CIDRs that IPAM does not hand out)."""
    own = list(own)
    policies, vteps, tunnels, nat = _encapsulation(lambda: best, own, node_address, pools, underlay_mtu,
                                                   tunnel_address)
    routes = plan_routes(best, own, node_address, policies, vteps=vteps)
    return DataplanePlan(frozenset(routes), tunnels, nat)


def _encapsulation(paths: Callable[[], Mapping[IPv4Network, Sequence[Path]]], own: list[IPv4Network],
                   node_address: IPv4Interface, pools: Sequence[Pool], underlay_mtu: int,
                   tunnel_address: IPv4Address | None):
    """(policies, VTEPs, tunnel plan, NAT plan) for `pools`; `paths()`, the best paths the VTEPs come
    from, is only asked for when a pool uses VXLAN."""
    policies = [EncapPolicy(p.encapsulation, p.mode, (p.cidr,)) for p in pools]
    vteps = vteps_from_paths(paths(), node_address.ip) if any(p.encapsulation == "vxlan" for p in policies) else {}
    tunnels = plan_tunnels(policies, node_address.ip, own, underlay_mtu, vteps, address=tunnel_address)
    nat = plan_nat((p.cidr, p.nat_outgoing) for p in pools)
    return policies, vteps, tunnels, nat


@dataclass(frozen=True)
class DataplaneChanges:
    """What a full plan would change for some prefixes: their routes to write, the destinations whose route
    goes, and the tunnels and NAT their paths need (a delta apply is only right while those stay as
    applied)."""

    tunnels: TunnelPlan
    nat: NatPlan
    routes: list[Route]
    removed: list[IPv4Network]


def plan_changes(best: Mapping[IPv4Network, Sequence[Path]], changed: Iterable[IPv4Network],
                 installed: Mapping[IPv4Network, Route], own: Iterable[IPv4Network],
                 node_address: IPv4Interface, pools: Sequence[Pool], underlay_mtu: int = 1500,
                 tunnel_address: IPv4Address | None = None) -> DataplaneChanges:
    """`plan_dataplane` for just the `changed` prefixes of `best` (all the best paths), against the routes
    `installed` by destination: one pass over the changed prefixes, for a burst of BGP updates."""
    own, changed = list(own), list(changed)
    policies, vteps, tunnels, nat = _encapsulation(lambda: {dst: best[dst] for dst in changed if dst in best},
                                                   own, node_address, pools, underlay_mtu, tunnel_address)
    planner = RoutePlanner(own, node_address, policies, vteps=vteps)
    routes, removed = [], []
    for dst in changed:
        paths = best.get(dst)
        route = planner.route(dst, paths) if paths else None
        old = installed.get(dst)
        if route is None:
            if old is not None and dst not in planner.own:
                removed.append(dst)
        elif old != route:
            routes.append(route)
    return DataplaneChanges(tunnels, nat, routes, removed)


def underlay_mtu(node_address: IPv4Interface, default: int = 1500) -> int:
    """MTU of the interface that carries the node's BGP address."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET):
            if msg.get_attr("IFA_ADDRESS") == str(node_address.ip):
                links = ipr.get_links(msg["index"])
                if links:
                    return int(links[0].get_attr("IFLA_MTU"))
    return default


class Dataplane:
    """Applies a DataplanePlan with one driver per kernel resource."""

    def __init__(self, route_table, tunnels: TunnelDriver | None = None, nat: NatDriver | None = None):
        self.route_table = route_table
        self.tunnels = tunnels or TunnelDriver()
        self.nat = nat or NatDriver()
        self._tunnels_applied: TunnelPlan | None = None
        self._nat_applied: NatPlan | None = None

    def check(self, plan: DataplanePlan) -> None:
        """Raise KernelFeatureMissing before anything is written if the plan needs what the kernel lacks."""
        if plan.tunnels.ipip is not None and not self.tunnels.has_ipip():
            raise KernelFeatureMissing(NO_IPIP)

    def check_pools(self, pools: Iterable[Pool]) -> None:
        """Like `check`, from the pools alone: lets the agent stop before it reserves a tunnel address."""
        if any(p.encapsulation == "ipip" and p.mode != "Never" for p in pools) and not self.tunnels.has_ipip():
            raise KernelFeatureMissing(NO_IPIP)

    def apply(self, plan: DataplanePlan, full: bool = False):
        """Tunnels, then NAT, then routes; returns the routes' ApplyResult. `full` re-checks devices too.

        Native next hops not on a connected subnet are written via the kernel's gateway towards them."""
        self.check(plan)
        if full or plan.tunnels != self._tunnels_applied:
            result = self.tunnels.apply(plan.tunnels)
            if result.changes:
                log.info("%s", result.summary())
            self._tunnels_applied = plan.tunnels
        if full or plan.nat != self._nat_applied:
            self.nat.apply(plan.nat)
            self._nat_applied = plan.nat
        return self.route_table.apply(self._resolved(plan.routes))

    def _resolved(self, routes: Iterable[Route]) -> list[Route]:
        """A native route to a node behind a router (mode Never across subnets) goes via that router."""
        lookup = getattr(self.route_table, "gateway_towards", None)
        return resolve_gateways(routes, lookup) if lookup is not None else list(routes)

    def apply_route_changes(self, changes: DataplaneChanges, installed: Container[IPv4Network]):
        """Write only the changes' routes and removals (see RouteTable.apply_changes). None, writing
        nothing, when their tunnels or NAT differ from what was applied (e.g. a new VXLAN neighbour among
        the changed paths): those need the full apply."""
        if changes.tunnels != self._tunnels_applied or changes.nat != self._nat_applied:
            return None
        return self.route_table.apply_changes(self._resolved(changes.routes), changes.removed, installed)
