"""The az2 lab (containerlab/az2.clab.yml) as a scenario: two zones joined by a router without pod routes,
real agents in an iBGP mesh across it, pods wired by the CNI plugin.

Shared by tests/integration/test_az_vxlan.py (VXLAN, this kernel; `check` asserts) and the kernel tier
(IPIP inside the VM: `python tests/kernel/az_scenario.py` records checks in $BGPNET_SCRATCH/az_result.json).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

from bgpnet import ipam
from bgpnet.datastore.base import IP_POOL
from bgpnet.datastore.local import LocalDatastore
from bgpnet.lab import pods
from bgpnet.lab.netns import Netns, unique_prefix, wait_for
from bgpnet.lab.routers import routes
from bgpnet.lab.runner import Lab
from tests.kernel.topology import PORT, PROBE, add_counters, counters, probe, probe_until_ok

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "containerlab" / "az2.clab.yml"
POOL = IPv4Network("10.248.0.0/16")
NODES = ("a1", "a2", "b1")
ADDRESS = {"a1": "10.0.1.11", "a2": "10.0.1.12", "b1": "10.0.2.11"}
ROUTER_OF = {"a1": "10.0.1.1", "a2": "10.0.1.1", "b1": "10.0.2.1"}
BIG = 256 * 1024  # far beyond the tunnel MTU: many full-size segments through the tunnel

Check = Callable[[str, bool, object], None]


def topology_for(encapsulation: str, workdir: Path) -> Path:
    """az2 as shipped (vxlan), or a copy in `workdir` whose pool uses another encapsulation."""
    if encapsulation == "vxlan":
        return TOPOLOGY
    dest = workdir / "az2-topology"
    shutil.copytree(TOPOLOGY.parent / "az2", dest / "az2")
    shutil.copy(TOPOLOGY, dest / TOPOLOGY.name)
    for conf in (dest / "az2").glob("*.yaml"):
        text = conf.read_text()
        conf.write_text(re.sub(r"encapsulation: vxlan\b", f"encapsulation: {encapsulation}", text))
    return dest / TOPOLOGY.name


class Az:
    """A running az2 lab with one pod per node, each pod serving the echo probe."""

    def __init__(self, encapsulation: str, workdir: Path, check: Check, timeout: float = 90):
        self.encap = encapsulation
        self.dev = "tunl0" if encapsulation == "ipip" else "vxlan.bgpnet"
        self.workdir = workdir
        self.check = check
        self.timeout = timeout  # for anything the agents must do (convergence, a pool change)
        self.name = unique_prefix("az")
        self.lab: Lab | None = None
        self.pod_ip: dict[str, str] = {}
        self.pod_ns: dict[str, Netns] = {}
        self.servers: list[subprocess.Popen] = []
        self.sessions: dict[tuple[str, str], subprocess.Popen] = {}
        self.timings: dict[str, float] = {}
        self.started = time.monotonic()

    def note(self, step: str) -> None:
        """Record when a step finished (seconds since the start) and say so: the VM's console shows progress."""
        self.timings[step] = time.monotonic() - self.started
        print(f"az: {step} after {self.timings[step]:.1f}s", flush=True)

    # -- setup and teardown ----------------------------------------------------------------------

    def up(self) -> None:
        self.started = time.monotonic()
        self.lab = Lab.up(topology_for(self.encap, self.workdir), prefix=self.name)
        self.note("lab_up")
        self.store_path = pods.store_path(self.name, None, self.lab)
        self.store = LocalDatastore(self.store_path)
        self.router = self.lab.node("rtr").netns
        # the tunnel address each agent reserves in IPAM gives every node its block before any pod exists
        wait_for(self.converged, self.timeout, interval=1, what="every node to install the other nodes' blocks")
        self.note("converged")
        for node in NODES:
            pod = f"default/web-{node}"
            self.pod_ip[node] = pods.add_pod(self.name, node, pod, store=self.store_path)["ip"]
            self.pod_ns[node] = Netns(pods.pod_netns(self.name, pod))
            p = self.pod_ns[node].popen([sys.executable, PROBE, "serve", str(PORT)], stdout=subprocess.PIPE,
                                        text=True)
            self.servers.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "listening"
        self.note("pods")

    def down(self) -> None:
        for p in [*self.sessions.values(), *self.servers]:
            p.kill()
            p.wait(10)
        for node in self.pod_ip:
            try:
                pods.del_pod(self.name, f"default/web-{node}", store=self.store_path)
            except Exception:  # noqa: BLE001 - best effort; the namespace goes below anyway
                Netns(pods.pod_netns(self.name, f"default/web-{node}")).delete()
        if self.lab is not None:
            self.lab.down()

    # -- reading the nodes -----------------------------------------------------------------------

    def block(self, node: str) -> IPv4Network:
        (blk,) = ipam.node_prefixes(self.store, node)
        return blk

    def routes(self, node: str) -> dict[str, str]:
        """bgpnet's routes in the node: destination -> the rest of the `ip route` line."""
        return {line.split()[0] if not line.startswith("blackhole") else line.split()[1]: line
                for line in routes(self.lab.node(node).netns)}

    def route_to(self, node: str, other: str) -> str:
        return self.routes(node).get(str(self.block(other)), "")

    def converged(self) -> bool:
        blocks = {n: ipam.node_prefixes(self.store, n) for n in NODES}
        if not all(len(b) == 1 for b in blocks.values()):
            return False
        return all(str(blocks[o][0]) in self.routes(n) for n in NODES for o in NODES if o != n)

    def link(self, node: str, dev: str) -> str:
        return self.lab.exec(node, "ip", "-d", "addr", "show", "dev", dev, check=False)

    def agent_errors(self, node: str) -> list:
        try:
            return json.loads((self.lab.node(node).run_dir / "status.json").read_text()).get("errors", [])
        except (OSError, ValueError) as e:
            return [str(e)]

    # -- traffic ----------------------------------------------------------------------------------

    def probe(self, src: str, dst: str, size: int = 1000, timeout: float = 10) -> dict:
        return probe(self.pod_ns[src], self.pod_ip[dst], size, timeout)

    def probe_until_ok(self, src: str, dst: str, timeout: float | None = None) -> dict:
        return probe_until_ok(self.pod_ns[src], self.pod_ip[dst], timeout=timeout or self.timeout)

    def open_session(self, src: str, dst: str) -> dict:
        p = self.pod_ns[src].popen([sys.executable, PROBE, "session", self.pod_ip[dst], str(PORT), "10"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.sessions[(src, dst)] = p
        return json.loads(p.stdout.readline())

    def session_echo(self, src: str, dst: str, size: int) -> dict:
        p = self.sessions[(src, dst)]
        p.stdin.write(f"{size}\n")
        p.stdin.flush()
        line = p.stdout.readline()
        return json.loads(line) if line else {"ok": False, "error": "session process ended"}

    # -- the steps --------------------------------------------------------------------------------

    def router_counters(self) -> None:
        add_counters(self.router, "FORWARD", {
            "vxlan": ["-p", "udp", "--dport", "4789"], "ipip": ["-p", "4"],
            "bare_src": ["-s", str(POOL)], "bare_dst": ["-d", str(POOL)]})
        # arriving at all (a packet the router cannot route never reaches FORWARD)
        self.router.run("iptables", "-t", "mangle", "-A", "PREROUTING", "-d", str(POOL), "-m", "comment",
                        "--comment", "bare_in")
        # on a2, in mangle PREROUTING: before felix's filter chains, which accept pod traffic first
        a2 = self.lab.node("a2").netns
        for name, match in (("ipip_in", ["-p", "4"]), ("vxlan_in", ["-p", "udp", "--dport", "4789"]),
                            ("native_in", ["-s", self.pod_ip["a1"], "-d", self.pod_ip["a2"]])):
            a2.run("iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "eth1", *match, "-m", "comment",
                   "--comment", name)

    def zero(self) -> None:
        self.router.run("iptables", "-Z")
        self.router.run("iptables", "-t", "mangle", "-Z")
        self.lab.exec("a2", "iptables", "-t", "mangle", "-Z")

    def encapsulated(self) -> None:
        """Routes, reachability both ways, what crosses the router, same-zone native, a big payload."""
        check, dev = self.check, self.dev
        same, cross = self.route_to("a1", "a2"), self.route_to("a1", "b1")
        check("a1_to_a2_block_native", f"via {ADDRESS['a2']} dev eth1" in same and "onlink" not in same
              and "tunl0" not in same and "vxlan" not in same, self.routes("a1"))
        gw = ADDRESS["b1"] if self.encap == "ipip" else str(self.block("b1").network_address)
        check("a1_to_b1_block_encapsulated", f"via {gw} dev {dev}" in cross and "onlink" in cross,
              self.routes("a1"))
        back = self.route_to("b1", "a1")
        check("b1_to_a1_block_encapsulated", f"dev {dev}" in back and "onlink" in back, self.routes("b1"))
        link = self.link("a1", dev)
        mtu = 1480 if self.encap == "ipip" else 1450
        check("tunnel_device_mtu_and_address", f"mtu {mtu}" in link and "UP" in link
              and re.search(r"inet 10\.248\.\d+\.\d+/32", link) is not None, link)

        self.zero()
        for src, dst in (("a1", "b1"), ("b1", "a1"), ("a2", "b1"), ("b1", "a2")):
            try:
                r = self.probe_until_ok(src, dst)
            except TimeoutError as e:
                r = {"ok": False, "error": str(e)}
            check(f"cross_zone_{src}_to_{dst}", r["ok"] and r.get("peer") == self.pod_ip[src], r)
        for src, dst in (("a1", "b1"), ("b1", "a1")):
            big = self.probe(src, dst, size=BIG, timeout=60)
            check(f"big_payload_{src}_to_{dst}", big["ok"] and big.get("bytes") == BIG, big)
        c = counters(self.router, "FORWARD")
        proto, other = ("ipip", "vxlan") if self.encap == "ipip" else ("vxlan", "ipip")
        check(f"router_sees_{proto}", c[proto] > 4 * BIG and c[other] == 0, c)
        check("router_sees_no_bare_pod_addresses", c["bare_src"] == 0 and c["bare_dst"] == 0
              and counters_mangle(self.router)["bare_in"] == 0, c)

        self.zero()
        for src, dst in (("a1", "a2"), ("a2", "a1")):
            try:
                r = self.probe_until_ok(src, dst)
            except TimeoutError as e:
                r = {"ok": False, "error": str(e)}
            check(f"same_zone_{src}_to_{dst}", r["ok"] and r.get("peer") == self.pod_ip[src], r)
        a2 = counters_mangle(self.lab.node("a2").netns)
        check("same_zone_native", a2["native_in"] > 0 and a2["ipip_in"] == 0 and a2["vxlan_in"] == 0, a2)
        r = counters(self.router, "FORWARD")
        check("same_zone_never_crosses_router", r["vxlan"] == 0 and r["ipip"] == 0 and r["bare_dst"] == 0, r)

    def set_mode(self, mode: str) -> None:
        obj = self.store.get(IP_POOL, "pods")
        self.store.update(obj, {**obj.spec, "mode": mode})

    def switch_to_never_and_back(self) -> None:
        """Mode Never at run time: no tunnel leftovers, native routes (cross-zone via the router, which drops
        pod traffic); back to CrossSubnet: encapsulated again and traffic flows."""
        check, dev = self.check, self.dev

        def leftovers(n: str) -> list[str]:
            """Tunnel state the node still has: routes via the device, the VXLAN device, a tunl0 address."""
            out = [line for line in self.routes(n).values() if dev in line]
            if self.encap == "vxlan" and dev in self.lab.exec(n, "ip", "link", "show"):
                out.append(f"{dev} exists")
            if self.encap == "ipip" and "inet " in self.link(n, dev):
                out.append(f"{dev} has an address")
            return out

        def native_everywhere():
            return not any(leftovers(n) for n in NODES) \
                and f"via {ROUTER_OF['a1']} dev eth1" in self.route_to("a1", "b1") \
                and f"via {ROUTER_OF['b1']} dev eth1" in self.route_to("b1", "a1")

        t = time.monotonic()
        self.set_mode("Never")
        try:
            wait_for(native_everywhere, self.timeout, what="native routes and no tunnel state on every node")
            self.timings["switch_never_took"] = time.monotonic() - t
            ok = True
        except TimeoutError:
            ok = False
        check("never_native_no_leftovers", ok, [{n: self.routes(n) for n in NODES}, {n: leftovers(n) for n in NODES}])
        check("never_same_zone_route", f"via {ADDRESS['a2']} dev eth1" in self.route_to("a1", "a2"),
              self.routes("a1"))
        check("never_no_agent_errors", all(not self.agent_errors(n) for n in NODES),
              {n: self.agent_errors(n) for n in NODES})
        self.zero()
        r = self.probe("a1", "b1", timeout=3)
        m = counters_mangle(self.router)
        f = counters(self.router, "FORWARD")
        check("never_cross_zone_dropped_by_router", not r["ok"] and m["bare_in"] > 0 and f["bare_dst"] == 0,
              [r, m, f])
        r = self.probe_until_ok("a1", "a2")
        check("never_same_zone_flows", r["ok"], r)

        t = time.monotonic()
        self.set_mode("CrossSubnet")
        try:
            wait_for(lambda: f"dev {dev}" in self.route_to("a1", "b1") and f"dev {dev}" in self.route_to("b1", "a1"),
                     self.timeout, what="encapsulated cross-zone routes again")
            self.timings["switch_back_took"] = time.monotonic() - t
            ok = True
        except TimeoutError:
            ok = False
        check("back_to_cross_subnet_routes", ok, {n: self.routes(n) for n in NODES})
        self.zero()
        for src, dst in (("a1", "b1"), ("b1", "a1")):
            r = self.probe_until_ok(src, dst)
            check(f"back_cross_zone_{src}_to_{dst}", r["ok"] and r.get("peer") == self.pod_ip[src], r)
        c = counters(self.router, "FORWARD")
        check("back_router_sees_encapsulated_only", c["vxlan" if self.encap == "vxlan" else "ipip"] > 0
              and c["bare_dst"] == 0 and c["bare_src"] == 0, c)

    def fail_static(self) -> None:
        """Stop every agent's control plane at once (SIGUSR2: exit without withdrawing, as in a crash or an
        upgrade; SIGTERM would withdraw, and a peer still running could rightly remove a route first):
        established connections and new ones keep flowing on the kernel state they left."""
        check = self.check
        pairs = (("a1", "b1"), ("b1", "a2"), ("a1", "a2"))
        for src, dst in pairs:
            r = self.open_session(src, dst)
            check(f"session_open_{src}_to_{dst}", r["ok"], r)
        before = {n: self.routes(n) for n in NODES}
        procs = [p for n in NODES for p in self.lab.node(n).procs]
        for p in procs:
            os.kill(p.pid, signal.SIGUSR2)
        t = time.monotonic()
        try:
            wait_for(lambda: not any(p.alive() for p in procs), self.timeout, what="every agent to exit")
            stopped = True
        except TimeoutError:
            stopped = False
        self.timings["agents_stop_took"] = time.monotonic() - t
        check("every_agent_stopped", stopped, [(p.name, p.pid, p.alive()) for p in procs])
        for p in procs:
            p.stop()  # reaps; SIGKILL if one hung
        after = {n: self.routes(n) for n in NODES}
        check("routes_kept_after_stop", before == after, [before, after])
        for src, dst in pairs:
            r = self.session_echo(src, dst, BIG if src[0] != dst[0] else 1000)
            check(f"established_{src}_to_{dst}_after_stop", r["ok"], r)
        for src, dst in (("a1", "b1"), ("b1", "a1"), ("a2", "a1"), ("b1", "a2")):
            r = self.probe(src, dst, timeout=10)
            check(f"new_{src}_to_{dst}_after_stop", r["ok"] and r.get("peer") == self.pod_ip[src], r)
        big = self.probe("b1", "a1", size=BIG, timeout=60)
        check("big_payload_after_stop", big["ok"] and big.get("bytes") == BIG, big)


def counters_mangle(ns: Netns) -> dict[str, int]:
    out = {}
    for line in ns.run("iptables", "-t", "mangle", "-L", "PREROUTING", "-v", "-x", "-n").splitlines()[2:]:
        fields = line.split()
        if "/*" in fields:
            out[fields[fields.index("/*") + 1]] = int(fields[1])
    return out


def run(az: Az, mode_switch: bool) -> None:
    az.up()
    az.router_counters()
    az.encapsulated()
    az.note("encapsulated_checked")
    if mode_switch:
        az.switch_to_never_and_back()
        az.note("mode_switch_checked")
    az.fail_static()
    az.note("fail_static_checked")


# ------------------------------------------------------------------------------- inside the VM

def main() -> int:
    """IPIP in the VM. The lab (run dirs, sockets, the shared SQLite store) lives on the guest's /run tmpfs:
    SQLite on the --rwdir share fails with "disk I/O error" (no POSIX locks over 9p). Results, timings and
    the agents' logs go to $BGPNET_SCRATCH, which the host reads."""
    scratch = Path(os.environ.get("BGPNET_SCRATCH", "/tmp"))
    os.environ["BGPNET_LAB_DIR"] = os.environ.get("BGPNET_AZ_LAB_DIR", "/run/bgpnet-lab-az")
    checks: dict[str, list] = {}

    def check(name: str, ok: bool, detail: object = "") -> None:
        checks[name] = [bool(ok), str(detail)[:2000]]
        print(f"{'PASS' if ok else 'FAIL'} {name}: {str(detail)[:300]}", flush=True)

    subprocess.run(["modprobe", "ipip"], check=False)
    az = Az("ipip", scratch, check, timeout=float(os.environ.get("BGPNET_AZ_TIMEOUT", "300")))
    t = time.monotonic()
    try:
        run(az, mode_switch=False)
    except Exception:  # noqa: BLE001 - reported as a failed check, with the traceback
        check("az_scenario_completed", False, traceback.format_exc())
    else:
        check("az_scenario_completed", True)
    finally:
        az.timings["scenario"] = time.monotonic() - t
        try:
            if az.lab is not None:  # keep the agents' logs for the host to read
                for n in NODES:
                    for f in az.lab.node(n).run_dir.glob("*.log"):
                        shutil.copy(f, scratch / f"{n}-{f.name}")
            az.down()
        except Exception:  # noqa: BLE001
            check("az_teardown", False, traceback.format_exc())
    checks["_timings"] = [True, json.dumps({k: round(v, 1) for k, v in az.timings.items()})]
    print("timings", checks["_timings"][1], flush=True)
    (scratch / "az_result.json").write_text(json.dumps(checks, indent=1))
    return 0 if all(ok for ok, _ in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
