"""Runs INSIDE the VM (tests/kernel/test_ipip.py boots it): IPIP CrossSubnet across a router with no pod
routes, then a run-time switch to VXLAN. Writes {check: [ok, detail]} to $BGPNET_SCRATCH/result.json."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import traceback

from bgpnet.ipip.tunnel import TunnelDriver
from bgpnet.lab.netns import Netns, unique_prefix
from tests.kernel.topology import POOL, add_counters, build, configure, counters, probe, probe_until_ok

BIG = 256 * 1024
checks: dict[str, list] = {}


def check(name: str, ok: bool, detail: object = "") -> None:
    checks[name] = [bool(ok), str(detail)[:2000]]
    print(f"{'PASS' if ok else 'FAIL'} {name}: {str(detail)[:300]}", flush=True)


def configure_in_child(topo, encapsulation: str) -> int:
    """Install tunnels and routes from a process that then exits: forwarding must not depend on us."""
    proc = multiprocessing.get_context("fork").Process(target=configure, args=(topo, encapsulation))
    proc.start()
    proc.join(120)
    return proc.exitcode


def scenario(topo) -> None:
    n1, n2, n3 = (topo.nodes[n] for n in ("n1", "n2", "n3"))
    add_counters(
        topo.router,
        "FORWARD",
        {"ipip": ["-p", "4"], "vxlan": ["-p", "udp", "--dport", "4789"], "bare_src": ["-s", str(POOL)],
         "bare_dst": ["-d", str(POOL)]},
    )  # fmt: skip
    add_counters(n2.ns, "INPUT", {"ipip_in": ["-p", "4"]})
    add_counters(n2.ns, "FORWARD", {"native_in": ["-i", "eth0", "-s", str(n1.pod_ip), "-d", str(n2.pod_ip)]})

    check("has_tunl0", TunnelDriver(n1.ns.name).has_ipip(), n1.ns.run("ip", "-d", "link", "show", "tunl0"))
    r = probe(n1.pod, str(n3.pod_ip), timeout=2)
    check("no_path_before_routes", not r["ok"], r)
    topo.router.run("iptables", "-Z", "FORWARD")

    code = configure_in_child(topo, "ipip")
    check("configured_by_exited_process", code == 0, f"exit code {code}")
    routes = n1.ns.run("ip", "route", "show", "proto", "201")
    check(
        "ipip_route_onlink", "10.244.3.0/26 via 10.0.2.10 dev tunl0" in routes and "onlink" in routes, routes
    )
    check("native_route_same_subnet", "10.244.2.0/26 via 10.0.1.11 dev eth0" in routes, routes)
    check("blackhole_own_block", "blackhole 10.244.1.0/26" in routes, routes)
    tunl = n1.ns.run("ip", "addr", "show", "tunl0")
    check(
        "tunl0_address_and_mtu", "inet 10.244.1.0/32" in tunl and "mtu 1480" in tunl and ",UP" in tunl, tunl
    )

    for src, dst in ((n1, n3), (n3, n1)):
        r = probe_until_ok(src.pod, str(dst.pod_ip))
        check(f"cross_subnet_{src.name}_to_{dst.name}", r["ok"] and r["peer"] == str(src.pod_ip), r)
        big = probe(src.pod, str(dst.pod_ip), size=BIG)
        check(f"big_payload_{src.name}_to_{dst.name}", big["ok"] and big["bytes"] == BIG, big)
    c = counters(topo.router, "FORWARD")
    check("router_sees_ip_proto_4", c["ipip"] > 4 * BIG and c["vxlan"] == 0, c)
    check("router_sees_no_bare_pod_addresses", c["bare_src"] == 0 and c["bare_dst"] == 0, c)

    for src, dst in ((n1, n2), (n2, n1)):
        r = probe_until_ok(src.pod, str(dst.pod_ip))
        check(f"same_subnet_{src.name}_to_{dst.name}", r["ok"], r)
    c2 = counters(n2.ns, "INPUT") | counters(n2.ns, "FORWARD")
    check("same_subnet_native", c2["native_in"] > 0 and c2["ipip_in"] == 0, c2)

    # switch the pool to VXLAN at run time: no IPIP leftovers, traffic still flows (now as UDP 4789)
    topo.router.run("iptables", "-Z", "FORWARD")
    code = configure_in_child(topo, "vxlan")
    routes = n1.ns.run("ip", "route", "show", "proto", "201")
    tunl = n1.ns.run("ip", "addr", "show", "tunl0")
    check(
        "switch_to_vxlan_no_leftovers",
        code == 0 and "tunl0" not in routes and "inet " not in tunl and "dev vxlan.bgpnet" in routes,
        routes + tunl,
    )
    r = probe_until_ok(n1.pod, str(n3.pod_ip))
    c = counters(topo.router, "FORWARD")
    check("after_switch_vxlan_crosses", r["ok"] and c["vxlan"] > 0 and c["ipip"] == 0, [r, c])


def main() -> int:
    scratch = os.environ.get("BGPNET_SCRATCH", "/tmp")
    subprocess.run(["modprobe", "ipip"], check=False)
    prefix = unique_prefix("vm")
    made: list[Netns] = []

    def make(suffix: str) -> Netns:
        ns = Netns.create(f"{prefix}-{suffix}")
        made.append(ns)
        return ns

    topo = None
    try:
        topo = build(make)
        scenario(topo)
    except Exception:  # noqa: BLE001 - reported as a failed check, with the traceback
        check("scenario_completed", False, traceback.format_exc())
    else:
        check("scenario_completed", True)
    finally:
        if topo is not None:
            topo.close()
        for ns in reversed(made):
            ns.delete()
    with open(os.path.join(scratch, "result.json"), "w") as f:
        json.dump(checks, f, indent=1)
    return 0 if all(ok for ok, _ in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
