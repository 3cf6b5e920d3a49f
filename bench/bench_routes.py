"""Route install/withdraw speed: RouteTable.apply against `ip -batch -` (the reference), side by side.

Each run uses a fresh namespace with a veth on 192.168.1.0/24; N /26 routes via 192.168.1.11 with our
protocol. Runs alternate between the two writers; medians and the ratio (ours / ip) are printed, plus one
JSON line. Usage (root): PYTHONPATH=. python bench/bench_routes.py [--routes 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Network

from bgpnet import RTPROT_BGPNET
from bgpnet.ipip.kernel import RouteTable
from bgpnet.lab.netns import Netns, unique_prefix
from bgpnet.model import NextHop, Route

GATEWAY = "192.168.1.11"


def prefixes(n: int) -> list[IPv4Network]:
    base = int(IPv4Address("10.0.0.0"))
    return [IPv4Network((base + i * 64, 26)) for i in range(n)]


def fresh_netns(prefix: str, i: int) -> Netns:
    ns = Netns.create(f"{prefix}-{i}")
    ns.run("ip", "link", "add", "name", "eth1", "type", "veth", "peer", "name", "eth1p")
    ns.run("ip", "link", "set", "eth1", "up")
    ns.run("ip", "link", "set", "eth1p", "up")
    ns.run("ip", "addr", "add", "192.168.1.10/24", "dev", "eth1")
    return ns


def ip_batch(ns: Netns, lines: str) -> float:
    t = time.perf_counter()
    subprocess.run(ns.argv("ip", "-batch", "-"), input=lines, text=True, check=True)
    return time.perf_counter() - t


def count_ours(ns: Netns) -> int:
    return len(ns.run("ip", "route", "show", "proto", str(RTPROT_BGPNET)).splitlines())


def run_ip(ns: Netns, nets: list[IPv4Network]) -> tuple[float, float]:
    add = "".join(f"route replace {n} via {GATEWAY} proto {RTPROT_BGPNET}\n" for n in nets)
    delete = "".join(f"route del {n} proto {RTPROT_BGPNET}\n" for n in nets)
    t_add = ip_batch(ns, add)
    assert count_ours(ns) == len(nets)
    t_del = ip_batch(ns, delete)
    assert count_ours(ns) == 0
    return t_add, t_del


def run_ours(ns: Netns, routes: set[Route]) -> tuple[float, float]:
    with RouteTable(netns=ns.name) as rt:
        t = time.perf_counter()
        res = rt.apply(routes)
        t_add = time.perf_counter() - t
        assert res.ok and res.added == len(routes), res.summary()
        assert count_ours(ns) == len(routes)
        t = time.perf_counter()
        res = rt.apply(set())
        t_del = time.perf_counter() - t
        assert res.ok and res.removed == len(routes), res.summary()
        assert count_ours(ns) == 0
    return t_add, t_del


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    nets = prefixes(args.routes)
    routes = {Route(n, (NextHop(IPv4Address(GATEWAY)),)) for n in nets}
    prefix = unique_prefix("bnbench")
    times: dict[str, list[float]] = {"ip_add": [], "ip_del": [], "ours_add": [], "ours_del": []}
    i = 0
    try:
        for _ in range(args.runs):
            for who in ("ip", "ours"):
                ns = fresh_netns(prefix, i)
                i += 1
                try:
                    add, delete = run_ip(ns, nets) if who == "ip" else run_ours(ns, routes)
                finally:
                    ns.delete()
                times[f"{who}_add"].append(add)
                times[f"{who}_del"].append(delete)
    finally:
        for j in range(i):
            Netns(f"{prefix}-{j}").delete()
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio_add = med["ours_add"] / med["ip_add"]
    ratio_del = med["ours_del"] / med["ip_del"]
    print(f"{args.routes} routes, {args.runs} runs each (medians)")
    print(
        f"  install:  ip -batch {med['ip_add']:.3f} s   RouteTable.apply {med['ours_add']:.3f} s   ratio {ratio_add:.2f}x"
    )
    print(
        f"  withdraw: ip -batch {med['ip_del']:.3f} s   RouteTable.apply {med['ours_del']:.3f} s   ratio {ratio_del:.2f}x"
    )
    print(
        json.dumps(
            {
                "bench": "routes",
                "routes": args.routes,
                "runs": args.runs,
                "median_s": {k: round(v, 4) for k, v in med.items()},
                "ratio_install": round(ratio_add, 3),
                "ratio_withdraw": round(ratio_del, 3),
                "target_ratio": 2.0,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
