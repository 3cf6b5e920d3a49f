"""Cross-subnet test topology shared by the VXLAN integration test and the IPIP VM test.

    subnet A 10.0.1.0/24 (a bridge in the router)      subnet B 10.0.2.0/24
    n1 10.0.1.10  block 10.244.1.0/26  pod 10.244.1.5   n3 10.0.2.10  block 10.244.3.0/26  pod 10.244.3.5
    n2 10.0.1.11  block 10.244.2.0/26  pod 10.244.2.5
The router (10.0.1.1 / 10.0.2.1) forwards between the subnets and has NO route to the pod pool 10.244.0.0/16,
so pods reach across only when encapsulated. Routes come from plan_routes + RouteTable + TunnelDriver, fed
with hand-made paths (no BGP). Pods are wired the way the CNI plugin does it (host /32 route, proxy ARP).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path as FsPath

from bgpnet.ipip.kernel import RouteTable
from bgpnet.ipip.plan import EncapPolicy, plan_routes
from bgpnet.ipip.tunnel import TunnelDriver, plan_tunnels, vteps_from_paths
from bgpnet.lab.netns import Netns, veth, wait_for
from bgpnet.model import Path

POOL = IPv4Network("10.244.0.0/16")
PROBE = str(FsPath(__file__).with_name("probe.py"))
PORT = 7070


@dataclass
class Node:
    name: str
    ns: Netns
    pod: Netns
    address: IPv4Interface
    block: IPv4Network
    pod_ip: IPv4Address
    gateway: str


@dataclass
class Topology:
    router: Netns
    nodes: dict[str, Node]
    servers: list[subprocess.Popen]

    def close(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait(5)


def sysctl(ns: Netns, key: str, value: str) -> None:
    ns.run("sysctl", "-qw", f"{key}={value}")


def build(make: Callable[[str], Netns]) -> Topology:
    router = make("rtr")
    sysctl(router, "net.ipv4.ip_forward", "1")
    router.run("ip", "link", "add", "name", "br-a", "type", "bridge")
    router.run("ip", "link", "set", "br-a", "up")
    router.run("ip", "addr", "add", "10.0.1.1/24", "dev", "br-a")
    specs = [
        ("n1", "10.0.1.10/24", "10.244.1.0/26", "10.0.1.1"),
        ("n2", "10.0.1.11/24", "10.244.2.0/26", "10.0.1.1"),
        ("n3", "10.0.2.10/24", "10.244.3.0/26", "10.0.2.1"),
    ]
    nodes = {}
    for name, addr, block, gw in specs:
        ns, pod = make(name), make(f"{name}pod")
        port = f"r{name}"
        veth(ns, "eth0", router, port)
        if gw == "10.0.1.1":
            router.run("ip", "link", "set", port, "master", "br-a")
        else:
            router.run("ip", "addr", "add", "10.0.2.1/24", "dev", port)
        ns.run("ip", "addr", "add", addr, "dev", "eth0")
        ns.run("ip", "route", "add", "default", "via", gw)
        sysctl(ns, "net.ipv4.ip_forward", "1")
        blk = IPv4Network(block)
        pod_ip = blk.network_address + 5
        veth(ns, "cali1", pod, "eth0")
        pod.run("ip", "addr", "add", f"{pod_ip}/32", "dev", "eth0")
        pod.run("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        pod.run("ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        sysctl(ns, "net.ipv4.conf.cali1.proxy_arp", "1")
        ns.run("ip", "route", "add", f"{pod_ip}/32", "dev", "cali1", "scope", "link")
        nodes[name] = Node(name, ns, pod, IPv4Interface(addr), blk, pod_ip, gw)
    topo = Topology(router, nodes, [])
    for node in nodes.values():
        p = node.pod.popen([sys.executable, PROBE, "serve", str(PORT)], stdout=subprocess.PIPE, text=True)
        topo.servers.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "listening"
    return topo


def configure(topo: Topology, encapsulation: str, mode: str = "CrossSubnet") -> dict[str, list[str]]:
    """Plan and apply tunnels + routes on every node from hand-made paths; returns each node's apply summaries."""
    policies = [EncapPolicy(encapsulation, mode, (POOL,))]
    out = {}
    for node in topo.nodes.values():
        best = {
            other.block: [Path(other.block, other.address.ip, other.address.ip)]
            for other in topo.nodes.values()
            if other is not node
        }
        vteps = vteps_from_paths(best, node.address.ip)
        tunnels = plan_tunnels(policies, node.address.ip, [node.block], 1500, vteps)
        t = TunnelDriver(node.ns.name).apply(tunnels)
        routes = plan_routes(best, [node.block], node.address, policies, vteps=vteps)
        with RouteTable(netns=node.ns.name) as rt:
            r = rt.apply(routes)
        assert r.ok, r.summary()
        out[node.name] = [t.summary(), r.summary()]
    return out


def probe(src: Netns, dst: str, size: int = 1000, timeout: float = 10) -> dict:
    out = src.run(
        sys.executable, PROBE, "connect", dst, str(PORT), str(size), str(timeout), timeout=timeout + 20
    )
    return json.loads(out)


def probe_until_ok(src: Netns, dst: str, size: int = 1000, timeout: float = 20) -> dict:
    """The first packets may wait for ARP/neighbour resolution; poll instead of sleeping."""
    return wait_for(lambda: (r := probe(src, dst, size, 5)) and r["ok"] and r, timeout, what=f"TCP {dst}")


def add_counters(ns: Netns, chain: str, rules: dict[str, list[str]]) -> None:
    """Accounting-only rules (no target) named by a comment; read back with `counters`."""
    for name, match in rules.items():
        ns.run("iptables", "-A", chain, *match, "-m", "comment", "--comment", name)


def counters(ns: Netns, chain: str) -> dict[str, int]:
    """Bytes per named rule (bytes, not packets: GRO/GSO merge segments into fewer, larger packets)."""
    out = {}
    for line in ns.run("iptables", "-L", chain, "-v", "-x", "-n").splitlines()[2:]:
        fields = line.split()
        if "/*" in fields:
            name = fields[fields.index("/*") + 1]
            out[name] = int(fields[1])
    return out
