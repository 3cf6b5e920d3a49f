"""Run every bench/bench_*.py (one process each, one after the other) and print one results table.

Each benchmark prints its own report and, last, one JSON line; the table is built from those lines
(a benchmark without one gets a row pointing at its report). Root is needed (network namespaces).
Usage: PYTHONPATH=. python -m bench.run_all [--only e2e,routes] [--smoke]   (`make bench`)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Tiny sizes that check a benchmark works end to end (tests/integration/test_bench_smoke.py uses these).
SMOKE_ARGS = {
    "routes": ["--routes", "200", "--runs", "1"],
    "e2e": ["--prefixes", "200", "--runs", "1", "--settle", "0.3"],
    "footprint": ["--prefixes", "200", "--idle", "2"],
    "convergence": ["--nodes", "3", "--runs", "1", "--idle", "2"],
    "policy": ["--runs", "1", "--changes", "1", "--pods", "20", "--policies", "5"],
}
ORDER = ["routes", "e2e", "footprint", "convergence", "policy"]


def benchmarks() -> list[str]:
    names = [p.stem.removeprefix("bench_") for p in (ROOT / "bench").glob("bench_*.py")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def run(name: str, args: list[str], timeout: float = 3600) -> tuple[int, str, dict | None, float]:
    """Run one benchmark module; (exit status, its stdout+stderr, its last JSON line or None, seconds)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-m", f"bench.bench_{name}", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    result = None
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            break
    return p.returncode, p.stdout + p.stderr, result, time.monotonic() - t


def _s(v: float | None) -> str:
    return "-" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s")


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def rows(name: str, r: dict | None) -> list[tuple[str, str, str, str, str]]:
    """(what, reference, bgpnet, ratio, target) rows for one benchmark's JSON result."""
    if r is None:
        return [(f"{name}: see its report above", "", "", "", "")]
    if name == "routes":
        m, n = r["median_s"], r["routes"]
        return [(f"kernel write, {n} routes: install", f"ip -batch {_s(m['ip_add'])}",
                 f"RouteTable.apply {_s(m['ours_add'])}", _x(r["ratio_install"]), "<= 2x"),
                (f"kernel write, {n} routes: delete", f"ip -batch {_s(m['ip_del'])}",
                 f"RouteTable.apply {_s(m['ours_del'])}", _x(r["ratio_withdraw"]), "<= 2x")]
    if name == "e2e":
        m, n = r["median_s"], r["prefixes"]
        return [(f"end to end, {n} prefixes from BIRD: announce -> installed", f"BIRD 2 {_s(m['ref_add'])}",
                 f"agent {_s(m['agent_add'])}", _x(r["ratio_install"]), "<= 2x"),
                (f"end to end, {n} prefixes: withdraw -> removed", f"BIRD 2 {_s(m['ref_del'])}",
                 f"agent {_s(m['agent_del'])}", _x(r["ratio_withdraw"]), "<= 2x")]
    if name == "footprint":
        rss, cpu, n = r["rss_kib"], r["idle_cpu_percent"], r["prefixes"]
        return [(f"RSS at {n} routes (agent+ExaBGP+relay)", f"BIRD 2 {rss['ref'] / 1024:.1f} MiB",
                 f"{rss['agent'] / 1024:.1f} MiB", _x(r["rss_ratio"]), ""),
                (f"idle CPU at {n} routes, {r['idle_s']:.0f} s window", f"BIRD 2 {cpu['ref']:.2f} %",
                 f"{cpu['agent']:.2f} %", "", "")]
    if name == "convergence":
        n = r["nodes"]
        return [(f"{n}-node mesh: new node start -> its route on all others", "", _s(r["join_new_s"]), "", ""),
                (f"{n}-node mesh: agent restart -> its route on all others", "", _s(r["join_restart_median_s"]),
                 "", ""),
                (f"{n}-node mesh: SIGTERM -> its route removed everywhere", "", _s(r["leave_median_s"]), "", ""),
                (f"{n}-node mesh: idle CPU per node", "", f"{r['idle_cpu_percent_per_node']:.2f} %", "", "")]
    if name == "policy" and "full_sync_s" in r:
        slowest = max(r["change_latency_s"], key=r["change_latency_s"].get)
        return [(f"policy full sync ({r['pods']} pods, {r['policies']} policies)",
                 f"iptables-restore {_s(r['ref_iptables_restore_s'])}",
                 f"bgpnet {_s(r['full_sync_s'])}", _x(r.get("full_ratio_vs_iptables_restore")), "<= 3x"),
                (f"policy change -> rules in place (slowest kind: {slowest})",
                 f"iptables-restore of the delta {_s(r['change_ref_iptables_restore_s'][slowest])}",
                 f"bgpnet {_s(r['change_latency_s'][slowest])}", "", "< 100 ms")]
    ratios = {k: v for k, v in r.items() if "ratio" in k and isinstance(v, int | float)}
    return [(f"{name}: {k}", "", "", _x(v), "") for k, v in ratios.items()] or [(f"{name}: see report", "", "", "", "")]


def table(results: dict[str, dict | None]) -> str:
    head = ("what", "reference", "bgpnet", "ratio", "target")
    body = [row for name, r in results.items() for row in rows(name, r)]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]
    fmt = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    lines = [fmt.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [fmt.format(*row) for row in body])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all found)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmarks run, measures nothing")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmarks need root (network namespaces)", file=sys.stderr)
        return 2
    names = [n for n in benchmarks() if not args.only or n in args.only.split(",")]
    results: dict[str, dict | None] = {}
    failed = []
    load = os.getloadavg()[0]
    for name in names:
        print(f"=== bench_{name} ({' '.join(SMOKE_ARGS.get(name, [])) if args.smoke else 'defaults'})", flush=True)
        code, out, result, secs = run(name, SMOKE_ARGS.get(name, []) if args.smoke else [])
        print(out.rstrip(), flush=True)
        print(f"--- bench_{name}: exit {code} after {secs:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
        results[name] = result
    print()
    print(f"2-core VM; load average before {load:.2f}, after {os.getloadavg()[0]:.2f}; medians of alternating runs")
    print(table(results))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
