"""`make demo`: bring up containerlab/mesh3 as namespaces, wait for BGP to converge, and say what happened.

Converged means: every FRR router has all its BGP sessions Established (`vtysh show bgp summary json`),
every bgpnet node reports all its sessions established (its status.json) and has a route with protocol
201 for each other node's pod CIDR (a route alone is not enough: it may come through the router).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from ipaddress import IPv4Network
from pathlib import Path

from bgpnet.config import load_config
from bgpnet.errors import BgpnetError
from bgpnet.lab import routers
from bgpnet.lab.probe import tcp_probe
from bgpnet.lab.procs import tail
from bgpnet.lab.runner import Lab, lab_root

log = logging.getLogger(__name__)

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "containerlab" / "mesh3.clab.yml"
PROBE_PORT = 8080


# ------------------------------------------------------------------------------------------ pure logic


def frr_session_gaps(router: str, summary: dict) -> list[str]:
    """What keeps an FRR router from being converged, from `show bgp summary json`."""
    peers = summary.get("ipv4Unicast", {}).get("peers", {})
    if not peers:
        return [f"{router} (FRR) has no BGP neighbors configured"]
    return [f"{router} (FRR): session with {addr} (AS {p.get('remoteAs')}) is {p.get('state')}"
            for addr, p in peers.items() if p.get("state") != "Established"]


def agent_session_gaps(node: str, status: dict | None) -> list[str]:
    """What keeps a bgpnet node from being converged, from its agent's status.json (None: not written yet)."""
    if status is None:
        return [f"{node}: the agent has not written status.json yet"]
    return [f"{node}: {p.get('type', '').upper() or 'BGP'} session with {p.get('address')} ({p.get('name')}) is "
            f"{p.get('state')}" + (f" ({p['last_error']})" if p.get("last_error") else "")
            for p in status.get("peers", []) if str(p.get("state", "")).lower() != "established"]


def route_gaps(node: str, routes: list[str], expected: dict[str, list[IPv4Network]]) -> list[str]:
    """Which of the other nodes' pod CIDRs `node` has no proto-201 route for (`routes`: `ip route` lines)."""
    have = {line.split()[0] for line in routes if line and not line.startswith(("blackhole", "unreachable"))}
    return [f"{node}: no route (proto 201) to {cidr} of {other}"
            for other, cidrs in expected.items() if other != node
            for cidr in cidrs if str(cidr) not in have]


def describe_route(line: str, owner_of_nexthop: dict[str, str], owner_of_cidr: dict[str, str]) -> str:
    """`10.244.2.0/24 via 10.0.0.12 dev eth1 proto 201` -> words naming the nodes involved."""
    words = line.split()
    dst = words[0]
    if dst in ("blackhole", "unreachable"):
        return f"{words[1]} is its own block: blackhole (so no packet for an unused pod address leaves the node)"
    via = words[words.index("via") + 1] if "via" in words else ""
    dev = words[words.index("dev") + 1] if "dev" in words else ""
    who = owner_of_cidr.get(dst, "?")
    hop = f"via {via} ({owner_of_nexthop.get(via, 'not a lab node')})" if via else "directly"
    return f"{dst} ({who}'s pods) {hop}" + (f" out of {dev}" if dev else "")


# ------------------------------------------------------------------------------------------ the demo


class Demo:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.frr = [n for n, node in lab.nodes.items() if node.role == "frr"]
        self.agents = [n for n, node in lab.nodes.items() if node.role == "bgpnet"]
        self.configs = {n: load_config(lab.node(n).config) for n in self.agents}
        self.pod_cidrs = {n: list(cfg.pod_cidrs) for n, cfg in self.configs.items()}
        self.address_of = {n: str(cfg.node.address.ip) for n, cfg in self.configs.items()}

    def node_routes(self, name: str) -> list[str]:
        return routers.routes(self.lab.node(name).netns, 201)

    def gaps(self) -> list[str]:
        out = []
        for r in self.frr:
            try:
                out += frr_session_gaps(r, self.lab.frr(r).vtysh_json("show bgp summary json"))
            except (RuntimeError, ValueError) as e:
                out.append(f"{r} (FRR): vtysh failed: {e}")
        for n in self.agents:
            out += agent_session_gaps(n, self.agent_status(n))
            out += route_gaps(n, self.node_routes(n), self.pod_cidrs)
        for name, node in self.lab.nodes.items():
            for proc in node.procs:
                if not proc.alive():
                    out.append(f"{name}: {proc.name} (pid {proc.pid}) is not running; see {proc.log}")
        return out

    def wait(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        gaps = self.gaps()
        last_report = time.monotonic()
        while gaps and time.monotonic() < deadline:
            if time.monotonic() - last_report > 15:
                print(f"  ... still waiting: {len(gaps)} things missing, e.g. {gaps[0]}", flush=True)
                last_report = time.monotonic()
            time.sleep(1)
            gaps = self.gaps()
        return gaps

    def agent_status(self, name: str) -> dict | None:
        try:
            return json.loads((self.lab.node(name).run_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def print_sessions(self) -> None:
        owner = {a: n for n, a in self.address_of.items()}
        print("\nBGP sessions")
        for r in self.frr:
            summary = self.lab.frr(r).vtysh_json("show bgp summary json").get("ipv4Unicast", {})
            print(f"  {r} (FRR, AS {summary.get('as')}) sees {len(summary.get('peers', {}))} sessions:")
            for addr, p in summary.get("peers", {}).items():
                print(f"    with {addr} ({owner.get(addr, '?')}, AS {p.get('remoteAs')}): {p.get('state')} "
                      f"for {p.get('peerUptime')}, {p.get('pfxRcd')} prefixes received from it")
        for n in self.agents:
            st = self.agent_status(n)
            cfg = self.configs[n]
            if st is None:
                print(f"  {n} (bgpnet, AS {cfg.node.asn}): no status.json in {self.lab.node(n).run_dir}")
                continue
            print(f"  {n} (bgpnet, AS {cfg.node.asn}) sees {len(st.get('peers', []))} sessions:")
            for p in st.get("peers", []):
                kind = "iBGP (mesh)" if p.get("type") == "ibgp" else "eBGP"
                print(f"    {kind} with {p['address']} ({p.get('name') or owner.get(p['address'], '?')}, "
                      f"AS {p.get('asn')}): {p.get('state')}, {p.get('prefixes_accepted', '?')} prefixes accepted")

    def print_routes(self) -> None:
        by_hop = {str(peer.address): peer.label for cfg in self.configs.values() for peer in cfg.peers}
        by_hop.update({a: n for n, a in self.address_of.items()})
        by_cidr = {str(c): n for n, cidrs in self.pod_cidrs.items() for c in cidrs}
        print("\nRoutes each node learned and installed (ip route, proto 201)")
        for n in self.agents:
            print(f"  {n} announces {', '.join(map(str, self.pod_cidrs[n]))}; in its kernel:")
            for line in self.node_routes(n):
                print(f"    {describe_route(line, by_hop, by_cidr)}")

    def pod_address(self, node: str) -> str:
        return str(next(self.pod_cidrs[node][0].hosts()))

    def probe(self) -> bool:
        """A TCP connection between stand-in pod addresses (on lo) of each pair of neighbouring nodes."""
        for n in self.agents:  # a later change puts real CNI pods here
            self.lab.exec(n, "ip", "addr", "replace", f"{self.pod_address(n)}/32", "dev", "lo")
        print("\nTCP probes between pod addresses (one address of each pod CIDR is put on the node's lo)")
        all_ok = True
        for i, src in enumerate(self.agents):
            dst = self.agents[(i + 1) % len(self.agents)]
            if dst == src:
                continue
            ok, text = tcp_probe(self.lab.node(dst).netns, self.pod_address(dst), self.lab.node(src).netns,
                                 self.pod_address(src), port=PROBE_PORT)
            all_ok &= ok
            print(f"  {src} {self.pod_address(src)} -> {dst} {self.pod_address(dst)}:{PROBE_PORT}: "
                  f"{'connected; answer: ' if ok else 'FAILED: '}{text}")
        return all_ok

    def print_how_to_inspect(self) -> None:
        name = self.lab.name
        a = self.agents[0] if self.agents else next(iter(self.lab.nodes))
        print("\nHow to look inside (while the lab is up):")
        print(f"  bgpnet lab status {name}")
        if self.frr:
            print(f"  bgpnet lab exec {name} {self.frr[0]} -- vtysh --vty_socket {self.lab.node(self.frr[0]).run_dir}"
                  f" -c 'show bgp summary'")
        print(f"  bgpnet lab exec {name} {a} -- ip route show proto 201")
        print(f"  bgpnet status --run-dir {self.lab.node(a).run_dir}")
        print(f"  logs: {self.lab.dir}/<node>/*.log;  remove the lab: bgpnet lab down {name}  (or make demo-down)")

    def explain_failure(self, gaps: list[str], timeout: float) -> None:
        print(f"\nNOT CONVERGED after {timeout:.0f}s. Missing:", file=sys.stderr)
        for g in gaps:
            print(f"  - {g}", file=sys.stderr)
        bad = {g.split(":")[0].split()[0] for g in gaps}
        for name in sorted(bad & set(self.lab.nodes)):
            for proc in self.lab.node(name).procs:
                text = tail(proc.log, 8)
                if text:
                    print(f"  last lines of {proc.log}:\n    " + text.replace("\n", "\n    "), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bgpnet.lab.demo", description=__doc__.splitlines()[0])
    p.add_argument("--topology", default=str(DEFAULT_TOPOLOGY), help="topology file (default: mesh3)")
    p.add_argument("--name-prefix", default="demo", help="lab name (namespaces are <name>-<node>)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for convergence")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("the demo needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    if (lab_root() / args.name_prefix / "state.json").exists():
        print(f"a lab named {args.name_prefix} is already up: `bgpnet lab down {args.name_prefix}` "
              "(make demo-down) first, or pass --name-prefix", file=sys.stderr)
        return 1
    print(f"Bringing up {args.topology} as lab {args.name_prefix!r}: one network namespace per node ...", flush=True)
    try:
        lab = Lab.up(args.topology, prefix=args.name_prefix)
    except BgpnetError as e:
        print(f"\nthe lab did not come up: {e}", file=sys.stderr)
        return 1
    ok = False
    try:
        for name, node in lab.nodes.items():
            what = {"frr": "FRR (zebra, bgpd)", "bird": "BIRD", "bgpnet": "bgpnet agent",
                    "bridge": "the L2 segment (bridge br0)", "host": "a plain host"}[node.role]
            print(f"  {name:<4} namespace {node.netns.name:<10} runs {what}")
        demo = Demo(lab)
        print(f"Waiting up to {args.timeout:.0f}s for BGP to converge (sessions Established, "
              "each node has a route to every other node's pod CIDR) ...", flush=True)
        started = time.monotonic()
        gaps = demo.wait(args.timeout)
        if gaps:
            demo.explain_failure(gaps, args.timeout)
        else:
            print(f"Converged in {time.monotonic() - started:.1f}s.")
            demo.print_sessions()
            demo.print_routes()
            ok = demo.probe()
        if args.keep:
            demo.print_how_to_inspect()
        elif not ok:
            print("\nTo look inside a failed run, run it again with --keep "
                  "(then `bgpnet lab status/exec`, and `bgpnet lab down` to remove it).")
    finally:
        if args.keep:
            print(f"\nThe lab stays up (--keep). Remove it with: bgpnet lab down {lab.name}")
        else:
            lab.down()
            print(f"\nLab {lab.name} torn down (namespaces deleted, daemons stopped). "
                  "Run with --keep to leave it up.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
