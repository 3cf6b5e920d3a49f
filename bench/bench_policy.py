"""Policy benchmark: full sync of 1,000 pods / 200 policies, and change-to-rules-in-place latency.

Each number is printed next to a reference measured in the same run: a raw `iptables-restore
--noflush` (and `ipset restore`) of exactly the text bgpnet wrote. Runs inside a throw-away network
namespace (root). Usage: python -m bench.bench_policy [--runs 5] [--pods 1000] [--policies 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE = "bench-node"


def cluster(n_pods: int, n_policies: int):
    """A cluster shaped like a real one: 50 namespaces, apps with 2-3 tiers, named ports, mixed policies."""
    n_ns = max(1, n_pods // 20)
    namespaces = {f"ns{i}": {"labels": {"team": f"t{i % 7}", "env": ("prod", "dev")[i % 2]}} for i in range(n_ns)}
    pods = {}
    for i in range(n_pods):
        ns = f"ns{i % n_ns}"
        app = f"app{(i // n_ns) % 8}"
        ip = f"10.{40 + i // 60000}.{(i // 250) % 240}.{i % 250 + 1}"
        pods[f"{ns}/pod{i}"] = {
            "node": NODE, "ip": ip, "interface": "cali" + hashlib.sha1(f"{ns}/pod{i}".encode()).hexdigest()[:11],
            "labels": {"app": app, "tier": ("web", "api", "db")[i % 3], "version": f"v{i % 4}"},
            "ports": [{"name": "http", "port": 8080 + i % 3, "protocol": "TCP"},
                      {"name": "metrics", "port": 9100, "protocol": "TCP"},
                      {"name": "dns", "port": 53, "protocol": "UDP"}],
        }
    policies = {}
    for j in range(n_policies):
        ns = f"ns{j % n_ns}"
        name = f"pol{j}"
        kind = j % 8
        app = f"app{j % 8}"
        if kind == 0:
            spec = {"podSelector": {}, "policyTypes": ["Ingress"]}
        elif kind == 1:
            spec = {"podSelector": {"matchLabels": {"app": app}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}], "ports": [{"port": "http"}]}]}
        elif kind == 2:
            spec = {"podSelector": {"matchLabels": {"tier": "db"}}, "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{j % 7}"}},
                           "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In",
                                                                 "values": ["api"]}]}}],
                 "ports": [{"port": 5432}, {"port": 5433, "endPort": 5440}]}]}
        elif kind == 3:
            spec = {"podSelector": {"matchExpressions": [{"key": "version", "operator": "NotIn",
                                                          "values": ["v0"]}]},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.5.0/24"]}},
                                          {"namespaceSelector": {"matchLabels": {"env": "prod"}}}]}]}
        elif kind == 4:
            spec = {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Egress"], "egress": [
                {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "api"}}}],
                 "ports": [{"port": "http"}]},
                {"ports": [{"protocol": "UDP", "port": 53}]}]}
        elif kind == 5:
            spec = {"podSelector": {"matchLabels": {"tier": "web"}}, "ingress": [{}]}
        elif kind == 6:
            spec = {"podSelector": {"matchLabels": {"app": app, "tier": "api"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": app}}}],
                 "ports": [{"port": "metrics"}, {"protocol": "TCP", "port": 8000, "endPort": 8100}]}]}
        else:
            spec = {"podSelector": {"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]},
                    "policyTypes": ["Ingress", "Egress"], "ingress": [
                        {"from": [{"namespaceSelector": {"matchExpressions": [
                            {"key": "team", "operator": "Exists"}]}}]}],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
        policies[f"{ns}/{name}"] = {"metadata": {"name": name, "namespace": ns}, "spec": spec}
    return pods, namespaces, policies


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def _timed(cmd, text):
    t0 = time.perf_counter()
    subprocess.run(cmd, input=text, text=True, check=True, capture_output=True)
    return time.perf_counter() - t0


def _ipset_text(driver, rs, have):
    driver._destroyed = set()
    lines, _ = driver._ipset_script({s.name: s for s in rs.ipsets}, have)
    return "\n".join(lines) + "\n" if lines else ""


def inner(args) -> dict:
    """Runs inside the bench namespace."""
    sys.path.insert(0, str(ROOT))
    from bgpnet.datastore.base import NAMESPACE, NETWORK_POLICY, POD
    from bgpnet.datastore.local import LocalDatastore
    from bgpnet.felix import PolicyAgent
    from bgpnet.felix.iptables import IptablesDriver
    from bgpnet.felix.rules import render

    pods, namespaces, policies = cluster(args.pods, args.policies)
    tmp = tempfile.mkdtemp(prefix="bench-policy-")
    store = LocalDatastore(os.path.join(tmp, "store.db"))
    for kind, objs in ((NAMESPACE, namespaces), (POD, pods), (NETWORK_POLICY, policies)):
        for name, spec in objs.items():
            store.put(kind, name, spec)
    out: dict = {"pods": args.pods, "policies": args.policies}

    t0 = time.perf_counter()
    rs = render(pods, namespaces, policies, NODE)
    out["render_s"] = time.perf_counter() - t0
    out["rules"] = rs.rule_count()
    out["chains"] = len(rs.chains)
    out["ipsets"] = len(rs.ipsets)
    out["ipset_members"] = sum(len(s.members) for s in rs.ipsets)
    assert not rs.errors, rs.errors

    full, ref_ipt, ref_all = [], [], []
    for _ in range(args.runs):
        IptablesDriver().cleanup()
        agent = PolicyAgent(store, NODE)
        t0 = time.perf_counter()
        agent.sync(full=True)
        full.append(time.perf_counter() - t0)
        ipt_text = agent.driver.last_result.iptables_input
        set_text = _ipset_text(IptablesDriver(), agent.ruleset, {})
        IptablesDriver().cleanup()
        # reference: the same text, straight into the kernel
        t_set = _timed(["ipset", "restore"], set_text)
        t_ipt = _timed(["iptables-restore", "--noflush", "--wait"], ipt_text)
        ref_ipt.append(t_ipt)
        ref_all.append(t_set + t_ipt)
    out["full_sync_s"] = _median(full)
    out["ref_iptables_restore_s"] = _median(ref_ipt)
    out["ref_iptables_plus_ipset_s"] = _median(ref_all)
    out["full_ratio_vs_iptables_restore"] = out["full_sync_s"] / out["ref_iptables_restore_s"]
    out["full_ratio_vs_iptables_plus_ipset"] = out["full_sync_s"] / out["ref_iptables_plus_ipset_s"]

    # change latency: write to the datastore, then the agent's sync; the rules are in place when it returns
    IptablesDriver().cleanup()
    agent = PolicyAgent(store, NODE, kernel_refresh_interval=3600)
    agent.sync(full=True)
    rnd = random.Random(3)
    pod_names = sorted(pods)
    changes = {"pod label change": [], "pod added": [], "policy changed": [], "policy added": []}
    refs = {k: [] for k in changes}
    cpu = {k: [] for k in changes}  # our own process's CPU: what the change costs bgpnet, whatever the load
    for i in range(args.changes):
        for what in changes:
            if what == "pod label change":
                name = rnd.choice(pod_names)
                spec = dict(store.get(POD, name).spec)
                spec["labels"] = dict(spec["labels"], tier=("web", "api", "db")[i % 3], canary=str(i))
                write = lambda name=name, spec=spec: store.put(POD, name, spec)  # noqa: E731
            elif what == "pod added":
                k = args.pods + i
                name = f"ns{k % 50}/extra{i}"
                spec = {"node": NODE, "ip": f"10.99.{i // 250}.{i % 250 + 1}", "interface": f"calix{i:06d}",
                        "labels": {"app": "app1", "tier": "api"},
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
                write = lambda name=name, spec=spec: store.put(POD, name, spec)  # noqa: E731
            elif what == "policy changed":
                name = rnd.choice(sorted(policies))
                obj = json.loads(json.dumps(store.get(NETWORK_POLICY, name).spec))
                obj["spec"].setdefault("ingress", []).append({"ports": [{"port": 20000 + i}]})
                obj["spec"].setdefault("policyTypes", ["Ingress"] + (["Egress"] if obj["spec"].get("egress") else []))
                write = lambda name=name, obj=obj: store.put(NETWORK_POLICY, name, obj)  # noqa: E731
            else:
                ns = f"ns{i % 50}"
                name = f"{ns}/new{i}"
                obj = {"metadata": {"name": f"new{i}", "namespace": ns}, "spec": {
                    "podSelector": {"matchLabels": {"app": f"app{i % 8}"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}],
                                 "ports": [{"port": 7000 + i}]}]}}
                write = lambda name=name, obj=obj: store.put(NETWORK_POLICY, name, obj)  # noqa: E731
            t0, c0 = time.perf_counter(), time.process_time()
            write()
            agent.sync()
            changes[what].append(time.perf_counter() - t0)
            cpu[what].append(time.process_time() - c0)
            res = agent.driver.last_result
            # reference: the same delta written raw (re-applied: identical work for the kernel)
            t_ref = _timed(["iptables-restore", "--noflush", "--wait"], res.iptables_input) if res.iptables_input else 0.0
            refs[what].append(t_ref)
    out["change_latency_s"] = {k: _median(v) for k, v in changes.items()}
    out["change_latency_max_s"] = {k: max(v) for k, v in changes.items()}
    out["change_ref_iptables_restore_s"] = {k: _median(v) for k, v in refs.items()}
    out["change_cpu_s"] = {k: _median(v) for k, v in cpu.items()}
    agent.cleanup()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--changes", type=int, default=7)
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--policies", type=int, default=200)
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(args)))
        return 0
    if os.geteuid() != 0:
        print("bench_policy needs root (it runs in a throw-away network namespace)", file=sys.stderr)
        return 2
    load_before = f"{os.getloadavg()[0]:.2f}"
    ns = f"benchpol{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.bench_policy", "--inner",
               "--runs", str(args.runs), "--changes", str(args.changes), "--pods", str(args.pods),
               "--policies", str(args.policies)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        res = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    print(f"load average before the run: {load_before}, after: {os.getloadavg()[0]:.2f} (2 cores; other work "
          "on the machine inflates wall times, the raw references alike)")
    print(f"policy bench: {res['pods']} pods, {res['policies']} policies -> {res['chains']} chains, "
          f"{res['rules']} rules, {res['ipsets']} ipsets ({res['ipset_members']} members); "
          f"render alone {res['render_s'] * 1000:.0f} ms")
    print(f"full sync (median of {args.runs}): bgpnet {res['full_sync_s'] * 1000:.0f} ms | raw iptables-restore "
          f"{res['ref_iptables_restore_s'] * 1000:.0f} ms (+ ipset restore: "
          f"{res['ref_iptables_plus_ipset_s'] * 1000:.0f} ms) | ratio "
          f"{res['full_ratio_vs_iptables_restore']:.2f}x vs iptables-restore, "
          f"{res['full_ratio_vs_iptables_plus_ipset']:.2f}x vs both (target <= 3x)")
    for k, v in res["change_latency_s"].items():
        print(f"change to rules in place, {k:17}: median {v * 1000:6.1f} ms, max "
              f"{res['change_latency_max_s'][k] * 1000:6.1f} ms (bgpnet CPU {res['change_cpu_s'][k] * 1000:4.1f} ms) | "
              f"raw iptables-restore of the same delta "
              f"{res['change_ref_iptables_restore_s'][k] * 1000:5.1f} ms (target < 100 ms)")
    print(json.dumps({"bench": "policy", **res}))  # last line: read by bench.run_all for its table
    return 0


if __name__ == "__main__":
    sys.exit(main())
