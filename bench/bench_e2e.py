"""End to end: a BIRD 2 router announces N prefixes to a node; time until all are in the node's kernel
table, then withdraws them; BIRD 2 as the node (the reference) against `bgpnet agent`, side by side.

One announcer namespace (BIRD 2, AS 65000) holds N static /26s in each of two tables, each exported over
eBGP to one node: `ref` runs BIRD 2 (kernel protocol, same import filter), `agent` runs `bgpnet agent`
(ExaBGP). Sessions stay established; a run enables the node's static protocol on the announcer
(`birdc enable`) and times from that command until the node's kernel holds all N routes (rtnetlink
notifications, no polling), then disables it and times until none is left. Runs alternate between the
two nodes; medians and the ratio (agent / BIRD) are printed, plus one JSON line.
Usage (root): PYTHONPATH=. python -m bench.bench_e2e [--prefixes 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
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
    cpu_seconds,
    median,
    process_tree,
    rss_kib,
    test_prefixes,
    wait,
    write_agent_config,
)
from bgpnet.lab.netns import unique_prefix, veth
from bgpnet.lab.routers import start_agent, start_bird

RANGE = IPv4Network("10.64.0.0/10")  # the test prefixes; also the agent's bgp.import_allow
ANNOUNCER_AS, NODE_AS = 65000, 64512
# node -> (announcer address, node address, announcer table/static/bgp protocol suffix)
LINKS = {"ref": ("192.168.50.1", "192.168.50.2"), "agent": ("192.168.51.1", "192.168.51.2"),
         "other": ("192.168.52.1", "192.168.52.2")}  # "other": a second bgpnet tree (--compare)


def announcer_conf(nets: list[IPv4Network], nodes=("ref", "agent")) -> str:
    routes = "".join(f"  route {n} blackhole;\n" for n in nets)
    out = ["router id 192.168.50.1;", "protocol device {}"]
    for who in nodes:
        local, peer = LINKS[who]
        out += [
            f"ipv4 table t_{who};",
            f"protocol static s_{who} {{\n  ipv4 {{ table t_{who}; }};\n  disabled;\n{routes}}}",
            f"protocol bgp to_{who} {{\n  local {local} as {ANNOUNCER_AS};\n  neighbor {peer} as {NODE_AS};\n"
            f"  passive on;\n  ipv4 {{ table t_{who}; import none; export all; }};\n}}",
        ]
    return "\n".join(out) + "\n"


def ref_node_conf() -> str:
    local, peer = LINKS["ref"][1], LINKS["ref"][0]
    return f"""router id {local};
protocol device {{}}
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
protocol bgp up {{
  local {local} as {NODE_AS};
  neighbor {peer} as {ANNOUNCER_AS};
  ipv4 {{ import where net ~ [ {RANGE}+ ]; export none; }};
}}
"""


class E2ELab:
    """Announcer + BIRD node + agent node, sessions established, nothing announced yet."""

    def __init__(self, prefixes: int, workdir: Path, compare: str | None = None):
        self.compare = compare  # another checkout's root: its `bgpnet agent` runs as node "other"
        self.nodes = ("ref", "agent", "other") if compare else ("ref", "agent")
        self.agents: dict = {}
        self.nets = test_prefixes(prefixes)
        assert all(n.subnet_of(RANGE) for n in self.nets), "too many prefixes for the test range"
        self.dir = workdir
        self.c = Cleanup()
        self.watchers: dict[str, RouteWatcher] = {}

    def up(self) -> E2ELab:
        p = unique_prefix("bne")
        c = self.c
        ann = c.ns(f"{p}-ann")
        self.ns = {"ann": ann}
        for i, who in enumerate(self.nodes, start=1):
            node = self.ns[who] = c.ns(f"{p}-{who}")
            veth(ann, f"eth{i}", node, "eth1")
            ann.run("ip", "addr", "add", f"{LINKS[who][0]}/24", "dev", f"eth{i}")
            node.run("ip", "addr", "add", f"{LINKS[who][1]}/24", "dev", "eth1")
        self.announcer = c.keep(start_bird(ann, announcer_conf(self.nets, self.nodes), self.dir / "ann"))
        self.ref = c.keep(start_bird(self.ns["ref"], ref_node_conf(), self.dir / "ref"))
        for who in self.nodes[1:]:
            run_dir = self.dir / who
            run_dir.mkdir()
            conf = write_agent_config(
                self.dir / f"{who}.yaml", name=who, address=f"{LINKS[who][1]}/24", asn=NODE_AS,
                peers=[{"address": LINKS[who][0], "asn": ANNOUNCER_AS, "name": "announcer"}],
                pod_cidrs=["10.244.2.0/24"], store=self.dir / f"{who}.db", run_dir=run_dir,
                import_allow=[str(RANGE)])
            env = {"PYTHONPATH": self.compare} if who == "other" else None
            self.agents[who] = c.keep(start_agent(self.ns[who], conf, run_dir, env=env))
        self.agent = self.agents["agent"]
        self.agent_dir = self.dir / "agent"
        wait(lambda: "Established" in self.announcer.protocols().get("to_ref", {}).get("info", ""), 60,
             "the reference BIRD node's session")
        for who in self.nodes[1:]:
            wait(lambda who=who: agent_established(self.dir / who), 60, f"{who}'s session and first sync")
        for who in self.nodes:
            self.watchers[who] = RouteWatcher(self.ns[who].name, RANGE)
        return self

    def birdc(self, cmd: str) -> None:
        subprocess.run(["birdc", "-s", str(self.announcer.socket), *cmd.split()], check=True,
                       capture_output=True)

    def _trigger(self, who: str, cmd: str, target: int, timeout: float) -> float:
        w = self.watchers[who]
        pids = self.pids(who)
        cpu0 = cpu_seconds(pids)
        w.mark()
        t0 = time.monotonic()
        self.birdc(f"{cmd} s_{who}")
        elapsed = w.wait_count(target, timeout) - t0
        self.last_cpu = cpu_seconds(pids) - cpu0  # up to now: includes a little work after the last route
        return elapsed

    def announce(self, who: str, timeout: float = 120) -> float:
        """Seconds from `birdc enable` on the announcer to all routes in the node's kernel table."""
        return self._trigger(who, "enable", len(self.nets), timeout)

    def withdraw(self, who: str, timeout: float = 120) -> float:
        return self._trigger(who, "disable", 0, timeout)

    def pids(self, who: str) -> list[int]:
        return list(self.ref.pids) if who == "ref" else process_tree(self.agents[who].pids[0])

    def rss(self, who: str) -> int:
        return rss_kib(self.pids(who))

    def down(self) -> None:
        for w in self.watchers.values():
            w.close()
        self.c.close()


def settle(lab: E2ELab, seconds: float) -> None:
    """Let both nodes go quiet before the next trigger (the agent logs, writes status, resyncs)."""
    time.sleep(seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefixes", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--settle", type=float, default=1.5, help="seconds of quiet between triggers")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) after the run")
    ap.add_argument("--compare", metavar="ROOT", help="also run the bgpnet agent of another checkout (its "
                    "root directory, e.g. an exported older commit), alternating with the others: an A/B")
    args = ap.parse_args(argv)
    nodes = ("ref", "agent", "other") if args.compare else ("ref", "agent")
    times: dict[str, list[float]] = {f"{who}_{op}": [] for who in nodes for op in ("add", "del")}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    rss: dict[str, int] = {}
    work = Path(tempfile.mkdtemp(prefix="bgpnet-bench-e2e-", dir="/tmp"))
    lab = E2ELab(args.prefixes, work, args.compare)
    try:
        lab.up()
        for r in range(args.runs):
            order = nodes if r % 2 == 0 else nodes[::-1]
            for who in order:
                settle(lab, args.settle)
                times[f"{who}_add"].append(lab.announce(who))
                cpu[f"{who}_add"].append(lab.last_cpu)
                rss[who] = max(rss.get(who, 0), lab.rss(who))
                settle(lab, args.settle)
                times[f"{who}_del"].append(lab.withdraw(who))
                cpu[f"{who}_del"].append(lab.last_cpu)
        overruns = {who: w.overruns for who, w in lab.watchers.items()}
    finally:
        lab.down()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    med = {k: median(v) for k, v in times.items()}
    ratio_add = med["agent_add"] / med["ref_add"]
    ratio_del = med["agent_del"] / med["ref_del"]
    print(f"{args.prefixes} prefixes from a BIRD 2 router, {args.runs} runs each (medians)")
    print(f"  announce -> installed:  BIRD 2 {med['ref_add']:.3f} s   bgpnet agent {med['agent_add']:.3f} s   "
          f"ratio {ratio_add:.2f}x (target <= 2x)")
    print(f"  withdraw -> removed:    BIRD 2 {med['ref_del']:.3f} s   bgpnet agent {med['agent_del']:.3f} s   "
          f"ratio {ratio_del:.2f}x (target <= 2x)")
    mcpu = {k: median(v) for k, v in cpu.items()}
    print(f"  CPU seconds used (announce/withdraw): BIRD 2 {mcpu['ref_add']:.2f}/{mcpu['ref_del']:.2f}   "
          f"agent+ExaBGP+relay {mcpu['agent_add']:.2f}/{mcpu['agent_del']:.2f}")
    print(f"  RSS at {args.prefixes} routes: BIRD 2 {rss['ref'] / 1024:.1f} MiB   "
          f"agent+ExaBGP+relay {rss['agent'] / 1024:.1f} MiB")
    if args.compare:
        print(f"  --compare {args.compare}: announce {med['other_add']:.3f} s, withdraw {med['other_del']:.3f} s, "
              f"CPU {mcpu['other_add']:.2f}/{mcpu['other_del']:.2f} s, RSS {rss['other'] / 1024:.1f} MiB")
    if any(overruns.values()):
        print(f"  note: route watcher lost notifications and re-dumped: {overruns}")
    print(json.dumps({
        "bench": "e2e", "prefixes": args.prefixes, "runs": args.runs,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "ratio_install": round(ratio_add, 3), "ratio_withdraw": round(ratio_del, 3), "target_ratio": 2.0,
        "rss_kib": rss, "cpu_s": {k: round(v, 3) for k, v in mcpu.items()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
