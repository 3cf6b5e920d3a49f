"""`make demo`: bring up containerlab/mesh3 as namespaces, wait for BGP to converge, then put real pods on
the nodes, show their blocks announced over BGP, TCP between them, and a NetworkPolicy allowing and denying.

Converged means: every FRR router has all its BGP sessions Established (`vtysh show bgp summary json`),
every bgpnet node reports all its sessions established (its status.json) and has a route with protocol
201 for each other node's pod CIDR (a route alone is not enough: it may come through the router).
Each later step checks what it shows (the router's BGP table, kernel routes, real TCP connections, the
`policy explain` verdict) and stops the demo with a clear message when something is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from bgpnet.config import load_config
from bgpnet.errors import BgpnetError
from bgpnet.lab import routers
from bgpnet.lab.netns import Netns, kill_pid
from bgpnet.lab.probe import tcp_probe
from bgpnet.lab.procs import tail
from bgpnet.lab.runner import Lab, lab_root

log = logging.getLogger(__name__)

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[2] / "containerlab" / "mesh3.clab.yml"
POLICY_FILE = DEFAULT_TOPOLOGY.parent / "mesh3" / "policy-demo.yaml"
PROBE_PORT = 8080
POOL_NAME = "default"
POOL = IPv4Network("10.248.0.0/16")  # clear of mesh3's static pod CIDRs 10.244.1-3.0/24
BLOCK_SIZE = 26
WEB_PORT = 80
STEP_TIMEOUT = 30.0  # seconds for routes to follow a new block, or iptables to follow a policy


class StepFailed(Exception):
    """A demo step did not show what it should; `problems` says what is missing."""

    def __init__(self, step: str, problems: list[str], nodes: tuple[str, ...] = ()):
        super().__init__(step)
        self.step, self.problems, self.nodes = step, problems, nodes


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


def describe_route(line: str, owner_of_nexthop: dict[str, str]) -> str:
    """`10.244.2.0/24 via 10.0.0.12 dev eth1 proto 201` -> `10.244.2.0/24 via n2` (short, names the node)."""
    words = line.split()
    if words[0] in ("blackhole", "unreachable"):
        return f"{words[1]} {words[0]} (its own)"
    if "via" not in words:
        return f"{words[0]} directly" + (f" on {words[words.index('dev') + 1]}" if "dev" in words else "")
    via = words[words.index("via") + 1]
    return f"{words[0]} via {owner_of_nexthop.get(via, via)}"


def describe_sessions(speaker: str, sessions: list[tuple[str, str, str, object]]) -> str:
    """One line for a speaker: (peer, kind, state, prefixes received) per session, grouped by state."""
    by_state: dict[str, list[str]] = {}
    for peer, kind, state, prefixes in sessions:
        by_state.setdefault(state, []).append(f"{peer} ({kind + ', ' if kind else ''}{prefixes} in)")
    return f"{speaker}: " + "; ".join(f"{state} with {', '.join(peers)}" for state, peers in by_state.items())


@dataclass(frozen=True)
class DemoPod:
    key: str                       # "namespace/name"
    node: str
    labels: dict = field(default_factory=dict)
    ports: list = field(default_factory=list)

    @property
    def app(self) -> str:
        return self.labels.get("app", "")


def place_pods(agents: list[str], namespace: str = "demo") -> list[DemoPod]:
    """web, client and other, each on its own node while there are nodes enough (web serves on WEB_PORT)."""
    if not agents:
        raise ValueError("no bgpnet nodes to put pods on")
    http = [{"name": "http", "port": WEB_PORT, "protocol": "TCP"}]
    return [DemoPod(f"{namespace}/{app}", agents[i % len(agents)], {"app": app}, http)
            for i, app in enumerate(("web", "client", "other"))]


def shared_store(stores: dict[str, tuple[str, str]]) -> tuple[str | None, str]:
    """node -> (datastore type, path): the one local store all nodes share, else (None, why not)."""
    if not stores:
        return None, "the topology has no bgpnet nodes"
    not_local = sorted(n for n, (kind, _) in stores.items() if kind != "local")
    if not_local:
        return None, f"{', '.join(not_local)} use a non-local datastore; the pod steps need one shared local store"
    paths = {path for _, path in stores.values()}
    if len(paths) != 1:
        return None, ("the bgpnet nodes do not share one datastore ("
                      + ", ".join(f"{n}: {p}" for n, (_, p) in sorted(stores.items())) + ")")
    return paths.pop(), ""


def pool_routes(table: dict, pool: IPv4Network) -> dict[IPv4Network, set[str]]:
    """From FRR's `show bgp ipv4 unicast json`: prefixes inside `pool` -> their next hops."""
    out: dict[IPv4Network, set[str]] = {}
    for prefix, paths in table.get("routes", {}).items():
        net = IPv4Network(prefix)
        if net.subnet_of(pool):
            out[net] = {h["ip"] for p in paths for h in p.get("nexthops", []) if h.get("ip")}
    return out


def kernel_pool_routes(lines: list[str], pool: IPv4Network) -> set[IPv4Network]:
    """Unicast routes (`ip route` lines) to prefixes inside `pool`; a node's own blackholes do not count."""
    out = set()
    for line in lines:
        first = line.split()[0] if line.split() else ""
        if first[:1].isdigit() and IPv4Network(first).subnet_of(pool):
            out.add(IPv4Network(first))
    return out


def block_gaps(router: str, blocks: dict[str, list[IPv4Network]], learned: dict[IPv4Network, set[str]],
               address_of: dict[str, str]) -> list[str]:
    """How the router's view of the pool differs from `blocks` (node -> its blocks): each block learned
    from its own node only, and nothing else from the pool."""
    owner = {b: n for n, bs in blocks.items() for b in bs}
    out = []
    for b, n in sorted(owner.items()):
        hops = learned.get(b)
        if hops is None:
            out.append(f"{router} has not learned {b} (block of {n})")
        elif hops != {address_of[n]}:
            out.append(f"{router} learned {b} (block of {n}) from {', '.join(sorted(hops))}, "
                       f"not only from {n} ({address_of[n]})")
    out += [f"{router} learned {b} from {', '.join(sorted(hops))}, but no node holds that block"
            for b, hops in sorted(learned.items()) if b not in owner]
    return out


def probe_line(src: DemoPod, dst: DemoPod, ip: str, port: int, connected: bool, text: str,
               again: bool = False) -> str:
    """One line per probe: who to whom, the verdict, and what the server answered (or the error)."""
    verdict = ("allowed" + (" again" if again else "")) if connected else "denied"
    detail = text.splitlines()[-1] if text else ""
    if not connected and "cannot connect" in detail:
        detail = detail.split(": ", 1)[-1].split("] ", 1)[-1]  # the error's words, not our preamble or errno
    return f"{src.key} ({src.node}) -> {dst.key} ({dst.node}) {ip}:{port}: {verdict}" + (f" ({detail})" if detail else "")


# ------------------------------------------------------------------------------------------ the demo

SERVER = r"""
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(16)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    with c:
        c.settimeout(5)
        try:
            c.recv(200)
            c.sendall(f"answer from {name} to {peer[0]}\n".encode())
        except OSError:
            pass
"""


class Demo:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.frr = [n for n, node in lab.nodes.items() if node.role == "frr"]
        self.agents = [n for n, node in lab.nodes.items() if node.role == "bgpnet"]
        self.configs = {n: load_config(lab.node(n).config) for n in self.agents}
        self.pod_cidrs = {n: list(cfg.pod_cidrs) for n, cfg in self.configs.items()}
        self.address_of = {n: str(cfg.node.address.ip) for n, cfg in self.configs.items()}
        self.pods: list[DemoPod] = []
        self.ip_of: dict[str, str] = {}
        self.netns_of: dict[str, str] = {}
        self.servers: list[subprocess.Popen] = []
        self.store_path: str | None = None

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
        print("\nBGP sessions (prefixes received on each)")
        for r in self.frr:
            summary = self.lab.frr(r).vtysh_json("show bgp summary json").get("ipv4Unicast", {})
            print("  " + describe_sessions(f"{r} (FRR, AS {summary.get('as')})", [
                (owner.get(a, a), "", p.get("state"), p.get("pfxRcd")) for a, p in summary.get("peers", {}).items()]))
        for n in self.agents:
            st = self.agent_status(n)
            cfg = self.configs[n]
            if st is None:
                print(f"  {n} (bgpnet, AS {cfg.node.asn}): no status.json in {self.lab.node(n).run_dir}")
                continue
            print("  " + describe_sessions(f"{n} (bgpnet, AS {cfg.node.asn})", [
                (p.get("name") or owner.get(p["address"], p["address"]),
                 "iBGP" if p.get("type") == "ibgp" else "eBGP", p.get("state"), p.get("prefixes_accepted", "?"))
                for p in st.get("peers", [])]))

    def print_routes(self) -> None:
        by_hop = {str(peer.address): peer.label for cfg in self.configs.values() for peer in cfg.peers}
        by_hop.update({a: n for n, a in self.address_of.items()})
        static = {str(c) for cidrs in self.pod_cidrs.values() for c in cidrs}
        print("\nRoutes to the static pod CIDRs of the nodes' configs (ip route proto 201 in each node)")
        for n in self.agents:
            lines = [describe_route(line, by_hop) for line in self.node_routes(n)
                     if (line.split()[1] if line.startswith(("blackhole", "unreachable")) else line.split()[0])
                     in static]
            print(f"  {n}: " + ", ".join(lines))

    def pod_address(self, node: str) -> str:
        return str(next(self.pod_cidrs[node][0].hosts()))

    def probe(self) -> bool:
        """A TCP connection between stand-in pod addresses (on lo) of neighbouring nodes' static pod CIDRs.

        A cheap check for topologies without IPAM pools (the lab tests use it); the demo probes real pods.
        """
        for n in self.agents:
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

    # ---------------------------------------------------------------------------- step 1: pool and pods

    def shared_store(self) -> str:
        stores = {n: (cfg.datastore.type, str(cfg.datastore.path)) for n, cfg in self.configs.items()}
        path, why = shared_store(stores)
        if path is None:
            raise StepFailed("pods need the nodes' shared datastore", [why])
        from bgpnet.lab import pods

        return pods.store_path(self.lab.name, None, self.lab)

    def add_pods(self) -> None:
        from bgpnet import ipam
        from bgpnet.datastore.local import LocalDatastore
        from bgpnet.lab import pods

        step = "Step 1 (pool and pods)"
        self.store_path = self.shared_store()
        store = LocalDatastore(self.store_path)
        print(f"\n{step}: an IP pool in the nodes' shared datastore, and pods wired by the CNI plugin")
        try:
            pool = ipam.add_pool(store, POOL_NAME, {"cidr": str(POOL), "block_size": BLOCK_SIZE})
        except BgpnetError as e:
            raise StepFailed(step, [f"cannot add pool {POOL_NAME} {POOL}: {e}"]) from e
        print(f"  pool {pool.name}: {pool.cidr}, handed to nodes in /{pool.block_size} blocks "
              f"(store {self.store_path})")
        for pod in place_pods(self.agents):
            try:
                rec = pods.add_pod(self.lab.name, pod.node, pod.key, labels=pod.labels, ports=pod.ports,
                                   store=self.store_path)
            except BgpnetError as e:
                raise StepFailed(step, [f"bgpnet-cni ADD for {pod.key} on {pod.node} failed: {e}"],
                                 (pod.node,)) from e
            self.pods.append(pod)
            if not rec.get("ip"):
                raise StepFailed(step, [f"pod {pod.key} on {pod.node} got no IP address: {rec}"], (pod.node,))
            self.ip_of[pod.key] = str(rec["ip"]).split("/")[0]
            self.netns_of[pod.key] = rec.get("netns") or pods.pod_netns(self.lab.name, pod.key)
            labels = ",".join(f"{k}={v}" for k, v in pod.labels.items())
            print(f"  pod {pod.key:<12} on {pod.node}: {self.ip_of[pod.key]:<15} ({labels}; netns {self.netns_of[pod.key]})")

    def node_blocks(self) -> dict[str, list[IPv4Network]]:
        from bgpnet import ipam
        from bgpnet.datastore.local import LocalDatastore

        store = LocalDatastore(self.store_path)
        return {n: [p for p in ipam.node_prefixes(store, n) if p.subnet_of(POOL)] for n in self.agents}

    def block_route_gaps(self, blocks: dict[str, list[IPv4Network]]) -> list[str]:
        out = []
        for r in self.frr:
            table = self.lab.frr(r).vtysh_json("show bgp ipv4 unicast json")
            out += block_gaps(r, blocks, pool_routes(table, POOL), self.address_of)
        for n in self.agents:
            have = kernel_pool_routes(self.node_routes(n), POOL)
            out += [f"{n}: no route to {b} (block of {m})" for m, bs in blocks.items() if m != n
                    for b in bs if b not in have]
        return out

    def show_blocks(self) -> None:
        step = "Step 1 (blocks over BGP)"
        blocks = self.node_blocks()
        empty = [n for n in {p.node for p in self.pods} if not blocks.get(n)]
        if empty:
            raise StepFailed(step, [f"{n} has a pod but holds no block of pool {POOL_NAME}" for n in empty],
                             tuple(empty))
        deadline = time.monotonic() + STEP_TIMEOUT
        gaps = self.block_route_gaps(blocks)
        while gaps and time.monotonic() < deadline:
            time.sleep(0.5)
            blocks = self.node_blocks()
            gaps = self.block_route_gaps(blocks)
        if gaps:
            raise StepFailed(step, gaps, tuple(n for n in self.agents if any(n in g for g in gaps)))
        for n in self.agents:
            others = [m for m in self.agents if m != n]
            print(f"  {n} announces block {', '.join(map(str, blocks[n])) or '(none)'}; "
                  f"{', '.join(others)} installed a route to it via {self.address_of[n]}")
        for r in self.frr:
            learned = pool_routes(self.lab.frr(r).vtysh_json("show bgp ipv4 unicast json"), POOL)
            owner = {a: n for n, a in self.address_of.items()}
            print(f"  {r} (FRR) learned exactly these {len(learned)} blocks of {POOL}: " + ", ".join(
                f"{b} from {', '.join(owner.get(h, h) for h in sorted(hops))}" for b, hops in sorted(learned.items())))

    # ---------------------------------------------------------------------------- probes

    def start_servers(self) -> None:
        from bgpnet.lab.routers import package_root

        for pod in self.pods:
            srv = Netns(self.netns_of[pod.key]).popen(
                [sys.executable, "-c", SERVER, pod.key, str(WEB_PORT)], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": package_root()})
            self.servers.append(srv)
            first = srv.stdout.readline().strip()
            if first != "listening":
                raise StepFailed("Step 2 (TCP servers)", [f"the TCP server in {pod.key} did not start: "
                                                         f"{first} {srv.stdout.read().strip()}"])

    def stop_servers(self) -> None:
        for srv in self.servers:
            kill_pid(srv.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                srv.wait(timeout=2)
            srv.stdout.close()
        self.servers = []

    def pod(self, app: str) -> DemoPod:
        return next(p for p in self.pods if p.app == app)

    def connect(self, src: DemoPod, dst: DemoPod, timeout: float = 3.0) -> tuple[bool, str]:
        """A real TCP connection from `src`'s namespace (bound to its IP) to `dst`'s server."""
        from bgpnet.lab.routers import package_root

        argv = Netns(self.netns_of[src.key]).argv(
            sys.executable, "-m", "bgpnet.lab.probe", "connect", self.ip_of[dst.key], str(WEB_PORT),
            "--source", self.ip_of[src.key], "--timeout", str(timeout))
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 20,
                           env={**os.environ, "PYTHONPATH": package_root()})
        return p.returncode == 0, (p.stdout or p.stderr).strip()

    def expect(self, step: str, src: DemoPod, dst: DemoPod, allowed: bool, again: bool = False,
               timeout: float | None = None, hint: str = "") -> None:
        """Probe until the connection is `allowed` (or refused), print the line; fail the step at `timeout`."""
        timeout = STEP_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        ok, text = self.connect(src, dst)
        while ok != allowed and time.monotonic() < deadline:
            time.sleep(0.5)
            ok, text = self.connect(src, dst)
        line = probe_line(src, dst, self.ip_of[dst.key], WEB_PORT, ok, text, again)
        if ok != allowed:
            raise StepFailed(step, [f"expected {'allowed' if allowed else 'denied'} within {timeout:.0f}s, "
                                    f"but got: {line}"] + ([hint] if hint else []),
                             () if hint else (src.node, dst.node))
        print(f"  {line}")

    def probe_pods(self) -> None:
        step = "Step 2 (TCP between pods)"
        print(f"\n{step}: a TCP server on port {WEB_PORT} in each pod; real connections pod to pod, node to node")
        self.start_servers()
        ring = [self.pod("client"), self.pod("web"), self.pod("other")]
        for i, src in enumerate(ring):
            self.expect(step, src, ring[(i + 1) % len(ring)], allowed=True)

    # ---------------------------------------------------------------------------- step 3: NetworkPolicy

    def lab_objects(self, delete: bool) -> list[str]:
        from bgpnet.felix.objects import lab_apply

        try:
            return lab_apply(self.store_path, POLICY_FILE, delete=delete)
        except BgpnetError as e:
            raise StepFailed("Step 3 (NetworkPolicy)", [f"cannot {'delete' if delete else 'apply'} "
                                                        f"{POLICY_FILE}: {e}"]) from e

    def explain(self, src: DemoPod, dst: DemoPod) -> tuple[list[str], str]:
        """`bgpnet policy explain` for the pair, run through the CLI: (the command, its output)."""
        from bgpnet.cli import main as cli_main

        argv = ["policy", "explain", "--from", src.key, "--to", dst.key, "--port", str(WEB_PORT),
                "--store", self.store_path]
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            rc = cli_main(argv)
        if rc != 0:
            raise StepFailed("Step 3 (policy explain)", [f"bgpnet {' '.join(argv)} exited {rc}: {buf.getvalue()}"])
        return argv, buf.getvalue().rstrip()

    def policy(self) -> None:
        step = "Step 3 (NetworkPolicy)"
        web, client, other = self.pod("web"), self.pod("client"), self.pod("other")
        root = DEFAULT_TOPOLOGY.parents[1]
        rel = POLICY_FILE.relative_to(root) if POLICY_FILE.is_relative_to(root) else POLICY_FILE
        print(f"\n{step}: only app=client may reach app=web on TCP {WEB_PORT} ({rel})")
        for line in self.lab_objects(delete=False):
            print(f"  bgpnet lab apply {self.lab.name} -f {rel}: {line}")
        # the refused connection shows the nodes' iptables follow the policy; then the allowed one must hold
        hint = self.policy_hint(web.node)
        self.expect(step, other, web, allowed=False, hint=hint)
        self.expect(step, client, web, allowed=True, timeout=0, hint=hint)
        argv, text = self.explain(other, web)
        if "DENIED" not in text.splitlines()[0]:
            raise StepFailed("Step 3 (policy explain)", [f"explain disagrees with the kernel (which refused "
                                                        f"{other.key} -> {web.key}):\n{text}"])
        print(f"  bgpnet {' '.join(argv)}:")
        for line in text.splitlines():
            print(f"    {line}")

        step = "Step 4 (policy deleted)"
        print(f"\n{step}: without the policy every pod may reach app=web again")
        for line in self.lab_objects(delete=True):
            print(f"  bgpnet lab delete {self.lab.name} -f {rel}: {line}")
        self.expect(step, other, web, allowed=True, again=True, hint=self.policy_hint(web.node))

    def policy_hint(self, node: str) -> str:
        from bgpnet.lab.routers import package_root

        return (f"{node}'s chains against what the datastore wants: PYTHONPATH={package_root()} bgpnet lab exec "
                f"{self.lab.name} {node} -- {sys.executable} -m bgpnet policy show {node} --store "
                f"{self.store_path}  (run with --keep; the agent logs policy applies in {self.lab.dir}/{node}/)")

    def remove_pods(self) -> None:
        from bgpnet.lab import pods

        self.stop_servers()
        for pod in reversed(self.pods):
            try:
                pods.del_pod(self.lab.name, pod.key, store=self.store_path)
            except Exception as e:  # noqa: BLE001 - best effort; the namespace goes regardless
                log.warning("CNI DEL for %s failed: %s", pod.key, e)
                Netns(self.netns_of.get(pod.key) or pods.pod_netns(self.lab.name, pod.key)).delete()
        self.pods = []

    # ---------------------------------------------------------------------------- words

    def print_how_to_inspect(self) -> None:
        name = self.lab.name
        a = self.agents[0] if self.agents else next(iter(self.lab.nodes))
        print("\nHow to look inside (while the lab is up):")
        print(f"  bgpnet lab status {name};  bgpnet lab pod list {name}")
        if self.frr:
            print(f"  bgpnet lab exec {name} {self.frr[0]} -- vtysh --vty_socket {self.lab.node(self.frr[0]).run_dir}"
                  f" -c 'show bgp ipv4 unicast'")
        print(f"  bgpnet lab exec {name} {a} -- ip route show proto 201")
        print(f"  bgpnet status --run-dir {self.lab.node(a).run_dir}")
        if self.pods and self.store_path:
            web, other = self.pod("web"), self.pod("other")
            print(f"  bgpnet lab apply {name} -f {POLICY_FILE}  (then: bgpnet policy explain --from {other.key} "
                  f"--to {web.key} --port {WEB_PORT} --store {self.store_path})")
            from bgpnet.lab.routers import package_root

            print(f"  PYTHONPATH={package_root()} ip netns exec {self.netns_of[other.key]} {sys.executable} "
                  f"-m bgpnet.lab.probe connect {self.ip_of[web.key]} {WEB_PORT}   (each pod serves TCP {WEB_PORT})")
        print(f"  logs: {self.lab.dir}/<node>/*.log;  remove the lab and its pods: bgpnet lab down {name}"
              "  (or make demo-down)")

    def explain_failure(self, gaps: list[str], timeout: float) -> None:
        print(f"\nNOT CONVERGED after {timeout:.0f}s. Missing:", file=sys.stderr)
        for g in gaps:
            print(f"  - {g}", file=sys.stderr)
        self.print_logs({g.split(":")[0].split()[0] for g in gaps})

    def explain_step_failure(self, e: StepFailed) -> None:
        print(f"\nDEMO FAILED at {e.step}. What is missing:", file=sys.stderr)
        for p in e.problems:
            print("  - " + p.replace("\n", "\n    "), file=sys.stderr)
        self.print_logs(set(e.nodes))

    def print_logs(self, names: set[str]) -> None:
        for name in sorted(names & set(self.lab.nodes)):
            for proc in self.lab.node(name).procs:
                text = tail(proc.log, 8)
                if text:
                    print(f"  last lines of {proc.log}:\n    " + text.replace("\n", "\n    "), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bgpnet.lab.demo", description=__doc__.splitlines()[0])
    p.add_argument("--topology", default=str(DEFAULT_TOPOLOGY), help="topology file (default: mesh3)")
    p.add_argument("--name", "--name-prefix", dest="name", default="demo",
                   help="lab name (namespaces are <name>-<node>, pods <name>-pod-<namespace>-<pod>)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for convergence")
    p.add_argument("--keep", action="store_true", help="leave the lab and its pods up afterwards")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("the demo needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    if (lab_root() / args.name / "state.json").exists():
        print(f"a lab named {args.name} is already up: `bgpnet lab down {args.name}` "
              "(make demo-down) first, or pass --name", file=sys.stderr)
        return 1
    started = time.monotonic()
    print(f"Bringing up {args.topology} as lab {args.name!r}: one network namespace per node ...", flush=True)
    try:
        lab = Lab.up(args.topology, prefix=args.name)
    except BgpnetError as e:
        print(f"\nthe lab did not come up: {e}", file=sys.stderr)
        return 1
    ok = False
    demo = None
    try:
        for name, node in lab.nodes.items():
            what = {"frr": "FRR (zebra, bgpd)", "bird": "BIRD", "bgpnet": "bgpnet agent",
                    "bridge": "the L2 segment (bridge br0)", "host": "a plain host"}[node.role]
            print(f"  {name:<4} namespace {node.netns.name:<10} runs {what}")
        demo = Demo(lab)
        print(f"Waiting up to {args.timeout:.0f}s for BGP to converge (sessions Established, "
              "each node has a route to every other node's static pod CIDR) ...", flush=True)
        t0 = time.monotonic()
        gaps = demo.wait(args.timeout)
        if gaps:
            demo.explain_failure(gaps, args.timeout)
        else:
            print(f"Converged in {time.monotonic() - t0:.1f}s.")
            demo.print_sessions()
            demo.print_routes()
            try:
                demo.add_pods()
                demo.show_blocks()
                demo.probe_pods()
                demo.policy()
                ok = True
                print(f"\nAll steps passed in {time.monotonic() - started:.0f}s.")
            except StepFailed as e:
                demo.explain_step_failure(e)
        if args.keep:
            demo.print_how_to_inspect()
        elif not ok:
            print("\nTo look inside a failed run, run it again with --keep "
                  "(then `bgpnet lab status/exec`, and `bgpnet lab down` to remove it).")
    finally:
        if args.keep:
            print(f"\nThe lab stays up (--keep). Remove it with: bgpnet lab down {lab.name}")
        else:
            if demo is not None:
                demo.remove_pods()
            lab.down()
            print(f"\nLab {lab.name} torn down (pods, namespaces and daemons gone). "
                  "Run with --keep to leave it up.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
