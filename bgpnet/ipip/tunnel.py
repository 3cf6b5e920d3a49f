"""Tunnel devices: plan (pure) which of tunl0 / vxlan.bgpnet the pools need, then apply it idempotently.

As in Calico: tunl0 (the ipip fallback device) gets a /32 from the node's block; the VXLAN device has its own
/32 from the block, a MAC derived from the node address, and a static neighbour + FDB entry per remote node.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from bgpnet.errors import KernelFeatureMissing
from bgpnet.ipip.plan import EncapPolicy, Vtep
from bgpnet.model import Path

log = logging.getLogger(__name__)

TUNNEL_DEV = "tunl0"
VXLAN_DEV = "vxlan.bgpnet"
VXLAN_VNI = 4096
VXLAN_PORT = 4789
IPIP_OVERHEAD = 20
VXLAN_OVERHEAD = 50
NO_IPIP = (
    "this kernel has no IPIP support (CONFIG_NET_IPIP); use encapsulation: vxlan in the IP pools "
    "(or encapsulation: none with mode Never on a flat L2 network)"
)


@dataclass(frozen=True)
class IpipDevice:
    address: IPv4Address
    mtu: int
    name: str = TUNNEL_DEV


@dataclass(frozen=True)
class VxlanDevice:
    local: IPv4Address  # the node's underlay address
    address: IPv4Address
    mac: str
    mtu: int
    peers: frozenset[Vtep] = frozenset()  # remote nodes: one neighbour + one FDB entry each
    name: str = VXLAN_DEV
    vni: int = VXLAN_VNI
    port: int = VXLAN_PORT


@dataclass(frozen=True)
class TunnelPlan:
    """None for a device means: not wanted (tunl0 loses our address, the VXLAN device is deleted)."""

    ipip: IpipDevice | None = None
    vxlan: VxlanDevice | None = None


def vtep_mac(node: IPv4Address) -> str:
    """A locally administered unicast MAC derived from the node address, so peers need not publish it."""
    return "0e:be:" + ":".join(f"{b:02x}" for b in node.packed)


def tunnel_address(blocks: Iterable[IPv4Network]) -> IPv4Address:
    """The node's tunnel device address: the first address of its lowest block (IPAM must not hand it out)."""
    ordered = sorted(blocks)
    if not ordered:
        raise ValueError("a tunnel address needs at least one block")
    return ordered[0].network_address


def vteps_from_paths(
    best: Mapping[IPv4Network, Sequence[Path]], node: IPv4Address
) -> dict[IPv4Address, Vtep]:
    """Remote VTEPs derived from what the peers announce: each next hop's tunnel address is the first address
    of the lowest block (prefix shorter than /32) it announces; its MAC follows from its address. Callers that
    know the nodes' tunnel addresses from the datastore may pass those instead."""
    lowest: dict[IPv4Address, IPv4Network] = {}
    for prefix, paths in best.items():
        if prefix.prefixlen == 32:
            continue  # a borrowed address, not a block
        for p in paths:
            if p.next_hop != node and (p.next_hop not in lowest or prefix < lowest[p.next_hop]):
                lowest[p.next_hop] = prefix
    return {nh: Vtep(nh, block.network_address, vtep_mac(nh)) for nh, block in lowest.items()}


def plan_tunnels(
    policies: Sequence[EncapPolicy],
    node: IPv4Address,
    blocks: Iterable[IPv4Network],
    underlay_mtu: int = 1500,
    vteps: Mapping[IPv4Address, Vtep] | None = None,
    address: IPv4Address | None = None,
) -> TunnelPlan:
    """Which tunnel devices the pools need, with addresses, MTUs and (VXLAN) the remote nodes' entries."""
    blocks = list(blocks)
    used = {p.encapsulation for p in policies if p.encapsulates}
    if not used:
        return TunnelPlan()
    if address is None:
        if not blocks:
            # No block yet: nothing of ours to route, and no address to give the devices.
            return TunnelPlan()
        address = tunnel_address(blocks)
    ipip = IpipDevice(address, underlay_mtu - IPIP_OVERHEAD) if "ipip" in used else None
    vxlan = None
    if "vxlan" in used:
        peers = frozenset(v for v in (vteps or {}).values() if v.node != node)
        vxlan = VxlanDevice(node, address, vtep_mac(node), underlay_mtu - VXLAN_OVERHEAD, peers)
    return TunnelPlan(ipip, vxlan)


# -- the driver


@dataclass
class TunnelResult:
    changes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"tunnels: {len(self.changes)} changes" + (
            f" ({'; '.join(self.changes)})" if self.changes else ""
        )


class TunnelDriver:
    """Applies a TunnelPlan with `ip`/`bridge` in the current namespace (or `netns`, for tests)."""

    def __init__(self, netns: str | None = None):
        self.netns = netns

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = list(cmd) if self.netns is None else ["ip", "netns", "exec", self.netns, *cmd]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def _json(self, *cmd: str) -> list[dict]:
        p = self._run(*cmd, check=False)
        if p.returncode != 0 or not p.stdout.strip():
            return []
        return json.loads(p.stdout)

    def link(self, name: str) -> dict | None:
        found = self._json("ip", "-j", "-d", "link", "show", "dev", name)
        return found[0] if found else None

    def addresses(self, name: str) -> set[str]:
        out = set()
        for link in self._json("ip", "-j", "addr", "show", "dev", name):
            for a in link.get("addr_info", []):
                if a.get("family") == "inet":
                    out.add(f"{a['local']}/{a['prefixlen']}")
        return out

    def has_ipip(self) -> bool:
        """tunl0 exists, or creating an ipip device works (which also loads the module where it is one)."""
        if self.link(TUNNEL_DEV) is not None:
            return True
        probe = "bnipipprobe"
        if self._run("ip", "link", "add", probe, "type", "ipip", check=False).returncode != 0:
            return False
        self._run("ip", "link", "del", probe, check=False)
        return self.link(TUNNEL_DEV) is not None

    def apply(self, plan: TunnelPlan) -> TunnelResult:
        """Make the devices match the plan. Checks kernel features before changing anything."""
        if plan.ipip is not None and not self.has_ipip():
            raise KernelFeatureMissing(NO_IPIP)
        result = TunnelResult()
        self._apply_vxlan(plan.vxlan, result)
        self._apply_ipip(plan.ipip, result)
        if result.changes:
            log.info(result.summary(), extra={"netns": self.netns})
        return result

    def _set_addresses(self, name: str, want: set[str], result: TunnelResult) -> None:
        have = self.addresses(name)
        for a in sorted(have - want):
            self._run("ip", "addr", "del", a, "dev", name)
            result.changes.append(f"{name}: address {a} removed")
        for a in sorted(want - have):
            self._run("ip", "addr", "add", a, "dev", name)
            result.changes.append(f"{name}: address {a} added")

    def _apply_ipip(self, dev: IpipDevice | None, result: TunnelResult) -> None:
        link = self.link(TUNNEL_DEV)
        if dev is None:
            # tunl0 is the module's fallback device and cannot be deleted; taking its address is enough.
            if link is not None:
                self._set_addresses(TUNNEL_DEV, set(), result)
            return
        assert link is not None  # has_ipip() made sure
        if link.get("mtu") != dev.mtu or "UP" not in link.get("flags", []):
            self._run("ip", "link", "set", dev.name, "mtu", str(dev.mtu), "up")
            result.changes.append(f"{dev.name}: mtu {dev.mtu} up")
        self._set_addresses(dev.name, {f"{dev.address}/32"}, result)

    def _apply_vxlan(self, dev: VxlanDevice | None, result: TunnelResult) -> None:
        link = self.link(VXLAN_DEV)
        if dev is None:
            if link is not None:
                self._run("ip", "link", "del", VXLAN_DEV)
                result.changes.append(f"{VXLAN_DEV}: deleted")
            return
        if link is not None and not _vxlan_matches(link, dev):
            self._run("ip", "link", "del", dev.name)
            result.changes.append(f"{dev.name}: deleted (settings changed)")
            link = None
        if link is None:
            self._run(
                "ip", "link", "add", dev.name, "type", "vxlan", "id", str(dev.vni), "local", str(dev.local),
                "dstport", str(dev.port), "nolearning",
            )  # fmt: skip
            result.changes.append(
                f"{dev.name}: created (vni {dev.vni}, dstport {dev.port}, local {dev.local})"
            )
            link = self.link(dev.name) or {}
        if link.get("address") != dev.mac or link.get("mtu") != dev.mtu or "UP" not in link.get("flags", []):
            self._run("ip", "link", "set", dev.name, "address", dev.mac, "mtu", str(dev.mtu), "up")
            result.changes.append(f"{dev.name}: mac {dev.mac} mtu {dev.mtu} up")
        self._set_addresses(dev.name, {f"{dev.address}/32"}, result)
        self._apply_vxlan_peers(dev, result)

    def _apply_vxlan_peers(self, dev: VxlanDevice, result: TunnelResult) -> None:
        want_neigh = {(str(v.tunnel_address), v.mac) for v in dev.peers}
        have_neigh = {
            (n["dst"], n.get("lladdr", ""))
            for n in self._json("ip", "-j", "neigh", "show", "dev", dev.name)
            if "PERMANENT" in n.get("state", [])
        }
        for ip, _mac in sorted(have_neigh - want_neigh):
            self._run("ip", "neigh", "del", ip, "dev", dev.name, check=False)
            result.changes.append(f"{dev.name}: neighbour {ip} removed")
        for ip, mac in sorted(want_neigh - have_neigh):
            self._run("ip", "neigh", "replace", ip, "lladdr", mac, "dev", dev.name, "nud", "permanent")
            result.changes.append(f"{dev.name}: neighbour {ip} {mac}")
        want_fdb = {(v.mac, str(v.node)) for v in dev.peers}
        have_fdb = {
            (f["mac"], f["dst"])
            for f in self._json("bridge", "-j", "fdb", "show", "dev", dev.name)
            if f.get("dst") and f.get("mac") != "00:00:00:00:00:00"
        }
        for mac, dst in sorted(have_fdb - want_fdb):
            self._run("bridge", "fdb", "del", mac, "dev", dev.name, "dst", dst, check=False)
            result.changes.append(f"{dev.name}: fdb {mac} removed")
        for mac, dst in sorted(want_fdb - have_fdb):
            self._run("bridge", "fdb", "replace", mac, "dev", dev.name, "dst", dst, "self", "permanent")
            result.changes.append(f"{dev.name}: fdb {mac} -> {dst}")


def _vxlan_matches(link: dict, dev: VxlanDevice) -> bool:
    info = (link.get("linkinfo") or {}).get("info_data") or {}
    return (
        (link.get("linkinfo") or {}).get("info_kind") == "vxlan"
        and info.get("id") == dev.vni
        and info.get("port") == dev.port
        and info.get("local") == str(dev.local)
    )
