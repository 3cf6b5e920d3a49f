"""Footprint at N learned routes: resident memory and idle CPU of `bgpnet agent` (with its ExaBGP and API
relay) against BIRD 2 as the node, both holding the same N prefixes from the same BIRD announcer.

Reuses bench_e2e's set-up: both nodes learn and install all N routes, then RSS (VmRSS summed over each
process tree) is read and CPU (utime+stime) is measured over the same idle window, in % of one core.
The agent's window includes its periodic work (datastore poll every second, kernel resync every
`routing.resync_interval`, 30 s by default), so use a window of at least that.
Usage (root): PYTHONPATH=. python -m bench.bench_footprint [--prefixes 10000] [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_e2e import E2ELab
from bench.common import idle_cpu_percent


def process_name(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = b" ".join(argv).decode(errors="replace")
    return "exabgp" if "exabgp" in text else "relay" if "relay" in text else "agent-only"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefixes", type=int, default=10000)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of the idle CPU window")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) after the run")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bgpnet-bench-fp-", dir="/tmp"))
    lab = E2ELab(args.prefixes, work)
    try:
        lab.up()
        rss0 = {who: lab.rss(who) for who in ("ref", "agent")}
        for who in ("ref", "agent"):
            lab.announce(who)
        time.sleep(3)  # let the agent finish logging/status writes after the last apply
        rss = {who: lab.rss(who) for who in ("ref", "agent")}
        parts = {"ref": lambda: lab.pids("ref"), "agent": lambda: lab.pids("agent")}
        for pid in lab.pids("agent"):  # the agent's share apart from its ExaBGP's and the relay's
            parts[process_name(pid)] = lambda pid=pid: [pid]
        cpu = idle_cpu_percent(parts, args.idle)
        rss_after = {who: lab.rss(who) for who in ("ref", "agent")}
        counts = {who: w.count() for who, w in lab.watchers.items()}
    finally:
        lab.down()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    assert counts == {"ref": args.prefixes, "agent": args.prefixes}, counts
    rss = {who: max(rss[who], rss_after[who]) for who in rss}
    print(f"footprint with {args.prefixes} learned routes installed (idle window {args.idle:.0f} s)")
    print(f"  RSS:      BIRD 2 {rss['ref'] / 1024:.1f} MiB (empty {rss0['ref'] / 1024:.1f})   "
          f"agent+ExaBGP+relay {rss['agent'] / 1024:.1f} MiB (empty {rss0['agent'] / 1024:.1f})   "
          f"ratio {rss['agent'] / rss['ref']:.1f}x")
    split = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k not in ("ref", "agent"))
    print(f"  idle CPU: BIRD 2 {cpu['ref']:.2f} %   agent+ExaBGP+relay {cpu['agent']:.2f} % of one core ({split})")
    print(json.dumps({
        "bench": "footprint", "prefixes": args.prefixes, "idle_s": args.idle,
        "rss_kib": rss, "rss_kib_empty": rss0, "rss_ratio": round(rss["agent"] / rss["ref"], 2),
        "idle_cpu_percent": {k: round(v, 3) for k, v in cpu.items()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
