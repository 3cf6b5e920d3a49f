"""Convergence of a lab of N bgpnet nodes (one AS, full iBGP mesh found in a shared datastore, one L2
segment): time from starting an agent to its pod CIDR installed on every other node, and from its
graceful stop (SIGTERM) to that route's removal everywhere; plus the idle CPU of the converged nodes.

The first start is a node never seen before (the others learn it from the datastore and reload their
ExaBGP); later starts are restarts of a node the others already peer with. Kernel routes are watched
with rtnetlink notifications. No reference speaker runs here (BIRD's own timers differ); see
bench_footprint for BIRD side by side.
Usage (root): PYTHONPATH=. python -m bench.bench_convergence [--nodes 10] [--runs 3] [--idle 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

from bench.common import (
    Cleanup,
    RouteWatcher,
    agent_established,
    idle_cpu_percent,
    median,
    process_tree,
    rss_kib,
    wait,
    write_agent_config,
)
from bgpnet.lab.netns import unique_prefix, veth
from bgpnet.lab.routers import start_agent

PODS = IPv4Network("10.244.0.0/16")
AS = 64512


def pod_cidr(i: int) -> str:
    return f"10.244.{i}.0/24"


class MeshLab:
    """A bridge namespace and N node namespaces on 10.0.0.0/24; agents started and stopped on demand."""

    def __init__(self, nodes: int, workdir: Path):
        self.n = nodes
        self.dir = workdir
        self.c = Cleanup()
        self.agents: dict[int, object] = {}
        self.watchers: dict[int, RouteWatcher] = {}

    def up(self) -> MeshLab:
        p = unique_prefix("bnc")
        sw = self.c.ns(f"{p}-sw")
        sw.run("ip", "link", "add", "br0", "type", "bridge")
        sw.run("ip", "link", "set", "br0", "up")
        self.ns = {}
        for i in range(1, self.n + 1):
            ns = self.c.ns(f"{p}-n{i}")
            veth(ns, "eth1", sw, f"p{i}")
            sw.run("ip", "link", "set", f"p{i}", "master", "br0")
            ns.run("ip", "addr", "add", f"10.0.0.{10 + i}/24", "dev", "eth1")
            self.ns[i] = ns
            run_dir = self.dir / f"n{i}"
            run_dir.mkdir()
            write_agent_config(self.dir / f"n{i}.yaml", name=f"n{i}", address=f"10.0.0.{10 + i}/24", asn=AS,
                               peers=[], pod_cidrs=[pod_cidr(i)], store=self.dir / "store.db", run_dir=run_dir,
                               mesh=True, eor_timeout=5, hold_time=30)
            self.watchers[i] = RouteWatcher(ns.name, PODS)
        return self

    def start(self, i: int) -> None:
        self.agents[i] = start_agent(self.ns[i], self.dir / f"n{i}.yaml", self.dir / f"n{i}")

    def others(self, i: int) -> list[int]:
        return [j for j in range(1, self.n + 1) if j != i and j in self.agents]

    def pids(self) -> list[int]:
        return [p for h in self.agents.values() for p in process_tree(h.pids[0])]

    def down(self) -> None:
        for i in list(self.agents):
            self.agents.pop(i).stop()
        for w in self.watchers.values():
            w.close()
        self.c.close()


def time_join(lab: MeshLab, i: int, timeout: float = 120) -> float:
    """Start node i; seconds until every other running node has all running nodes' pod CIDRs (i's too)."""
    others = lab.others(i)
    for j in others:
        lab.watchers[j].mark()
    t0 = time.monotonic()
    lab.start(i)
    done = [lab.watchers[j].wait_count(len(others) + 1, timeout) for j in others]
    return max(done) - t0


def time_leave(lab: MeshLab, i: int, timeout: float = 120) -> float:
    others = lab.others(i)
    for j in others:
        lab.watchers[j].mark()
    t0 = time.monotonic()
    os.kill(lab.agents[i].pids[0], signal.SIGTERM)
    done = [lab.watchers[j].wait_count(len(others), timeout) for j in others]
    elapsed = max(done) - t0
    handle = lab.agents.pop(i)
    wait(lambda: not handle.alive(), 30, f"agent n{i} to exit")
    handle.stop()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3, help="stop/start cycles (each on a different node)")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds over which idle CPU is measured")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) after the run")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bgpnet-bench-conv-", dir="/tmp"))
    lab = MeshLab(args.nodes, work)
    n = args.nodes
    res: dict = {"join_new": None, "join_restart": [], "leave": []}
    try:
        lab.up()
        for i in range(1, n):
            lab.start(i)
        for i in range(1, n):
            lab.watchers[i].wait_count(n - 1, 180)
        for i in range(1, n):
            wait(lambda i=i: agent_established(lab.dir / f"n{i}", n - 2), 120, f"n{i}'s sessions")
        res["join_new"] = time_join(lab, n)
        for i in range(1, n + 1):
            wait(lambda i=i: agent_established(lab.dir / f"n{i}", n - 1), 120, f"n{i}'s sessions")
        time.sleep(2)
        idle = idle_cpu_percent({"all": lab.pids}, args.idle)["all"]
        rss = rss_kib(lab.pids())
        for r in range(args.runs):
            node = n - 1 - (r % (n - 1))
            res["leave"].append(time_leave(lab, node))
            time.sleep(1)
            res["join_restart"].append(time_join(lab, node))
            wait(lambda node=node: agent_established(lab.dir / f"n{node}", n - 1), 120, f"n{node}'s sessions")
            time.sleep(1)
    finally:
        lab.down()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    join_r, leave = median(res["join_restart"]), median(res["leave"])
    print(f"{n}-node iBGP full mesh of bgpnet agents ({args.runs} stop/start cycles; medians)")
    print(f"  new node started -> its pod CIDR on all {n - 1} others:   {res['join_new']:.2f} s")
    print(f"  agent restarted -> its pod CIDR on all others:           {join_r:.2f} s")
    print(f"  agent SIGTERM -> its pod CIDR removed on all others:     {leave:.2f} s")
    print(f"  idle CPU per node (agent+ExaBGP+relay, {args.idle:.0f} s): {idle / n:.2f} % of one core; "
          f"RSS per node {rss / n / 1024:.1f} MiB")
    print(json.dumps({
        "bench": "convergence", "nodes": n, "runs": args.runs,
        "join_new_s": round(res["join_new"], 3), "join_restart_median_s": round(join_r, 3),
        "leave_median_s": round(leave, 3),
        "all_s": {k: [round(x, 3) for x in v] for k, v in res.items() if isinstance(v, list)},
        "idle_cpu_percent_per_node": round(idle / n, 3), "rss_kib_per_node": rss // n,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
