"""The kernel route table driver: read our routes (by route protocol), diff against the desired set, apply.

Only routes carrying our protocol number are ever replaced or deleted; a destination already held by
another protocol's route is reported as a failure, not overwritten.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from bgpnet import RTPROT_BGPNET
from bgpnet.ipip.netlink import RTNH_F_ONLINK, BulkWriter, dump_routes, enable_strict_dumps, open_socket
from bgpnet.ipip.plan import hop_sort_key
from bgpnet.model import NextHop, Route

log = logging.getLogger(__name__)

RTN_NAMES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}
RTN_TYPES = {v: k for k, v in RTN_NAMES.items()}


def canonical(route: Route, table: int | None = None) -> Route:
    """The same route with next hops in a fixed order (the kernel and the planner may order ECMP hops
    differently) and, if given, the table."""
    table = route.table if table is None else table
    if route.table == table and len(route.nexthops) < 2:
        return route  # the common case, kept cheap for tables of 10k+ routes
    hops = tuple(sorted(set(route.nexthops), key=hop_sort_key))
    return dataclasses.replace(route, nexthops=hops, table=table)


@dataclass
class ApplyResult:
    added: int = 0  # new destinations
    replaced: int = 0  # destinations whose route changed
    removed: int = 0
    unchanged: int = 0
    errors: list[tuple[Route, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        s = (
            f"routes: {self.added} added, {self.replaced} replaced, {self.removed} removed, "
            f"{self.unchanged} unchanged, {self.failed} failed"
        )
        if self.errors:
            route, err = self.errors[0]
            s += f" (first: {route.describe()}: {err})"
        return s


class Change(NamedTuple):  # a tuple: a burst makes thousands
    op: str  # "replace" | "add" (create only) | "delete"
    route: Route


class RouteTable:
    """Our routes in one kernel routing table, in the current network namespace (or `netns`, for tests).

    Reads are raw netlink dumps; `bulk_threshold` or more changes go out as hand-packed netlink batches,
    fewer one by one through pyroute2.
    """

    def __init__(
        self,
        netns: str | None = None,
        protocol: int = RTPROT_BGPNET,
        table: int = 254,
        bulk_threshold: int = 64,
    ):
        self.netns = netns
        self.protocol = protocol
        self.table = table
        self.bulk_threshold = bulk_threshold
        self._ipr: IPRoute | None = None
        self._sock: socket.socket | None = None
        self._strict = False
        self._bulk: BulkWriter | None = None

    # -- plumbing
    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute(netns=self.netns) if self.netns else IPRoute()
        return self._ipr

    @property
    def sock(self) -> socket.socket:
        if self._sock is None:
            self._sock = open_socket(self.netns)
            self._strict = enable_strict_dumps(self._sock)
        return self._sock

    @property
    def bulk(self) -> BulkWriter:
        if self._bulk is None:
            self._bulk = BulkWriter(self.sock)
        return self._bulk

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._bulk = None

    def __enter__(self) -> RouteTable:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _links(self) -> dict[int, str]:
        return {link["index"]: link.get_attr("IFLA_IFNAME") for link in self.ipr.get_links()}

    # -- reading
    def _dump(self) -> tuple[dict[IPv4Network, Route], set[IPv4Network]]:
        """(our routes by destination, destinations held by other protocols' metric-0 routes) in our table."""
        ours: dict[IPv4Network, Route] = {}
        foreign: set[IPv4Network] = set()
        names: dict[int, str] = {}
        for table, proto, rtype, _flags, dst, dst_len, prio, hops in dump_routes(
            self.sock, self.table if self._strict else None
        ):
            if table != self.table:
                continue
            net = IPv4Network((dst, dst_len))
            if proto != self.protocol:
                if not prio:
                    foreign.add(net)
                continue
            kind = RTN_NAMES.get(rtype, str(rtype))
            if kind != "unicast":
                ours[net] = Route(net, kind=kind, table=self.table)
                continue
            if not names and any(f & RTNH_F_ONLINK for _gw, _oif, f in hops):
                names = self._links()
            nhs = [hop_from_kernel(gw, oif, f, names) for gw, oif, f in hops]
            ours[net] = canonical(Route(net, tuple(nhs), table=self.table))
        return ours, foreign

    def read(self) -> set[Route]:
        """Our routes (those with our protocol) in our table."""
        return set(self._dump()[0].values())

    # -- writing
    def apply(self, desired: Iterable[Route]) -> ApplyResult:
        """Make our routes equal `desired`: replace new/changed ones, delete ours that are not wanted.

        Per-route errors are collected in the result; the other routes are still applied. Two desired
        routes for one destination are a caller bug: ValueError, before anything is written.
        """
        want: dict[IPv4Network, Route] = {}
        for r in desired:
            r = canonical(r, self.table)
            prev = want.setdefault(r.dst, r)
            if prev is not r and prev != r:
                raise ValueError(
                    f"two desired routes for {r.dst}: {want[r.dst].describe()!r} and {r.describe()!r}"
                )
        have, foreign = self._dump()
        result = ApplyResult()
        changes: list[Change] = []
        for dst, route in want.items():
            old = have.get(dst)
            if old == route:
                result.unchanged += 1
                continue
            if old is None and dst in foreign:
                result.errors.append(
                    (route, "destination is held by a route of another protocol; left alone")
                )
                continue
            changes.append(Change("replace", route))
        for dst, route in have.items():
            if dst not in want:
                changes.append(Change("delete", route))
        failed = self._write(changes)
        for i, change in enumerate(changes):
            err = failed.get(i)
            if err is not None:
                result.errors.append((change.route, err))
            elif change.op == "delete":
                result.removed += 1
            elif change.route.dst in have:
                result.replaced += 1
            else:
                result.added += 1
        level = logging.WARNING if result.errors else logging.INFO
        if changes or result.errors:
            log.log(level, result.summary(), extra={"table": self.table, "netns": self.netns})
        return result

    def apply_changes(self, routes: Iterable[Route], removed: Iterable[IPv4Network],
                      ours: Container[IPv4Network]) -> ApplyResult:
        """Write only these changes, without reading the table (between full `apply` calls, e.g. for a
        burst of BGP updates): `routes` whose destination is in `ours` (ours as of the last write) are
        replaced, the others created exclusively, so the kernel refuses rather than overwrite another
        protocol's route; `removed` destinations lose our route (already gone counts as done)."""
        changes = [Change("replace" if r.dst in ours else "add", canonical(r, self.table)) for r in routes]
        changes += [Change("delete", Route(dst, kind="blackhole", table=self.table)) for dst in removed]
        failed = self._write(changes)
        result = ApplyResult()
        for i, change in enumerate(changes):
            err = failed.get(i) if failed else None
            if change.op == "delete":
                if err is None or "errno 3," in err or "(errno 3)" in err:  # ESRCH: someone removed it
                    result.removed += 1
                else:
                    result.errors.append((change.route, err))
            elif err is not None:
                if change.op == "add" and ("errno 17," in err or "(errno 17)" in err):
                    err = "destination is held by a route of another protocol; left alone"
                result.errors.append((change.route, err))
            elif change.op == "replace":
                result.replaced += 1
            else:
                result.added += 1
        if changes:
            level = logging.WARNING if result.errors else logging.INFO
            log.log(level, result.summary(), extra={"table": self.table, "netns": self.netns})
        return result

    def _write(self, changes: list[Change]) -> dict[int, str]:
        """Apply changes: many at once through hand-packed netlink batches, a few one by one with pyroute2.
        Returns the error text by index of each failed change."""
        if len(changes) >= self.bulk_threshold:
            return self._write_bulk(changes)
        return self._write_each(changes)

    def _write_bulk(self, changes: list[Change]) -> dict[int, str]:
        index: dict[str, int] = {}
        return self.bulk.write(
            [(c.op, c.route) for c in changes],
            self.protocol,
            self.table,
            lambda dev: self.ifindex(dev, index),
        )

    def _write_each(self, changes: list[Change]) -> dict[int, str]:
        errors: dict[int, str] = {}
        index: dict[str, int] = {}
        for i, change in enumerate(changes):
            try:
                if change.op == "delete":
                    self.ipr.route("del", **self._delete_spec(change.route))
                elif change.op == "add":
                    self.ipr.route("add", **self._replace_spec(change.route, index))
                else:
                    self.ipr.route("replace", **self._replace_spec(change.route, index))
            except NetlinkError as e:
                errors[i] = f"{e.args[1] if len(e.args) > 1 else e} (errno {e.code})"
            except LookupError as e:
                errors[i] = str(e.args[0])
        return errors

    def gateway_towards(self, address: IPv4Address) -> IPv4Address | None:
        """The gateway of the kernel's route to `address` (`ip route get`); None if it is directly reachable
        or not reachable at all."""
        try:
            msgs = self.ipr.route("get", dst=str(address))
        except NetlinkError:
            return None
        for msg in msgs:
            gw = msg.get_attr("RTA_GATEWAY")
            if gw:
                return IPv4Address(gw)
        return None

    def ifindex(self, dev: str, cache: dict[str, int]) -> int:
        if dev not in cache:
            found = self.ipr.link_lookup(ifname=dev)
            if not found:
                raise LookupError(f"device {dev} not found")
            cache[dev] = found[0]
        return cache[dev]

    def _delete_spec(self, route: Route) -> dict:
        # Protocol in the request makes the kernel match only our route for this destination.
        return {"dst": str(route.dst), "table": self.table, "proto": self.protocol, "family": socket.AF_INET}

    def _replace_spec(self, route: Route, index: dict[str, int]) -> dict:
        spec = {
            "dst": str(route.dst),
            "table": self.table,
            "proto": self.protocol,
            "family": socket.AF_INET,
            "type": RTN_TYPES[route.kind],
        }
        if route.kind != "unicast":
            return spec
        if not route.nexthops:
            raise LookupError("unicast route without next hops")
        hops = []
        for nh in route.nexthops:
            hop: dict = {"gateway": str(nh.gateway)}
            if nh.dev:
                hop["oif"] = self.ifindex(nh.dev, index)
            if nh.onlink:
                hop["flags"] = RTNH_F_ONLINK
            hops.append(hop)
        if len(hops) == 1:
            spec.update(hops[0])
        else:
            spec["multipath"] = hops
        return spec


def hop_from_kernel(gateway: int | None, oif: int | None, flags: int, names: dict[int, str]) -> NextHop:
    """A kernel next hop as the planner writes it: the device only for onlink hops (we never name a device
    otherwise; for plain gateways the kernel picks one, and reporting it would make every route differ)."""
    onlink = bool(flags & RTNH_F_ONLINK)
    dev = names.get(oif, str(oif)) if (onlink and oif) else None
    return NextHop(gateway=IPv4Address(gateway) if gateway is not None else None, dev=dev, onlink=onlink)
