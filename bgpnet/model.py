"""Shared value types: paths learned over BGP and the routes planned for the kernel."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network


@dataclass(frozen=True, order=True)
class Path:
    """One BGP path for a prefix, as received from one peer."""

    prefix: IPv4Network
    next_hop: IPv4Address
    peer: IPv4Address
    peer_asn: int = 0
    as_path: tuple[int, ...] = ()
    local_pref: int = 100
    med: int = 0
    origin: str = "igp"  # igp < egp < incomplete
    communities: tuple[str, ...] = field(default=(), compare=False)
    large_communities: tuple[str, ...] = field(default=(), compare=False)
    ibgp: bool = True  # learned over iBGP (same AS) rather than eBGP
    # route reflection (RFC 4456): the router that first put the path into the AS, and the clusters it
    # was reflected through (nearest first)
    originator_id: IPv4Address | None = field(default=None, compare=False)
    cluster_list: tuple[IPv4Address, ...] = field(default=(), compare=False)


@dataclass(frozen=True, order=True)
class NextHop:
    gateway: IPv4Address | None = None
    dev: str | None = None
    onlink: bool = False


@dataclass(frozen=True, order=True)
class Route:
    """A kernel route that bgpnet wants; `kind` is "unicast" or "blackhole"."""

    dst: IPv4Network
    nexthops: tuple[NextHop, ...] = ()
    kind: str = "unicast"
    table: int = 254  # main

    def describe(self) -> str:
        if self.kind == "blackhole":
            return f"blackhole {self.dst}"
        hops = []
        for nh in self.nexthops:
            s = f"via {nh.gateway}" if nh.gateway else ""
            if nh.dev:
                s += f" dev {nh.dev}"
            if nh.onlink:
                s += " onlink"
            hops.append(s.strip())
        return f"{self.dst} " + " | ".join(hops)
