"""Reachability matrix for NetworkPolicy in real namespaces: pods x/y/z × a/b/c, TCP and UDP 80/81.

One node namespace (the PolicyAgent runs inside it, real iptables-nft and ipset) routes for nine pod
namespaces wired by veth pairs. Every case probes all 81 pod pairs on 4 ports with real connections,
compares with the expectation written in the test, and checks that `explain` agrees with what the
kernel did on every single probe.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import yaml

from bgpnet.datastore.base import NETWORK_POLICY, POD
from bgpnet.datastore.local import LocalDatastore
from bgpnet.felix.objects import apply_objects, parse_manifests
from bgpnet.felix.rules import Cluster, explain_cluster
from bgpnet.lab.netns import Netns, kill_pid, unique_prefix, veth

ROOT = Path(__file__).resolve().parents[2]
NODE = "node1"
NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
PORTS = ((80, "tcp"), (81, "tcp"), (80, "udp"), (81, "udp"))
P = namedtuple("P", "ns name")
ALL = [P(ns, p) for ns in NAMESPACES for p in PODS]


def ip_of(pod: P) -> str:
    return f"10.77.0.{(NAMESPACES.index(pod.ns) + 1) * 10 + PODS.index(pod.name) + 1}"


def http_port(pod: P) -> int:
    # The container port named "http" is 80 on a and b but 81 on c: named ports resolve per pod.
    return 81 if pod.name == "c" else 80


SERVER = r"""
import socket, threading
def serve(c):
    with c:
        c.settimeout(120)
        try:
            while True:
                d = c.recv(1024)
                if not d:
                    return
                c.sendall(d)
        except OSError:
            return
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        d, a = s.recvfrom(1024); s.sendto(d, a)
for port in (80, 81):
    threading.Thread(target=tcp, args=(port,), daemon=True).start()
    threading.Thread(target=udp, args=(port,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

PROBER = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
TIMEOUT = 1.5
held = {}
def probe(ip, port, proto):
    try:
        if proto == "tcp":
            with socket.create_connection((ip, port), timeout=TIMEOUT) as s:
                s.settimeout(TIMEOUT); s.sendall(b"ping"); return s.recv(16) == b"ping"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(TIMEOUT); s.connect((ip, port)); s.send(b"ping"); return s.recv(16) == b"ping"
    except OSError:
        return False
def echo(name):
    try:
        s = held[name]; s.sendall(b"again"); return s.recv(16) == b"again"
    except (OSError, KeyError):
        return False
pool = ThreadPoolExecutor(48)
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if "probe" in req:
        out = list(pool.map(lambda t: probe(*t), req["probe"]))
    elif "open" in req:
        name, ip, port = req["open"]
        try:
            s = socket.create_connection((ip, port), timeout=TIMEOUT); s.settimeout(TIMEOUT); held[name] = s
            out = echo(name)
        except OSError:
            out = False
    else:
        out = echo(req["echo"])
    print(json.dumps(out), flush=True)
"""

AGENT = r"""
import json, logging, sys
from bgpnet.datastore.local import LocalDatastore
from bgpnet.felix import PolicyAgent
logging.basicConfig(level=logging.ERROR)
agent = PolicyAgent(LocalDatastore(sys.argv[1]), sys.argv[2], kernel_refresh_interval=3600)
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    try:
        if cmd == "cleanup":
            out = {"summary": agent.cleanup(), "errors": []}
        else:
            out = {"summary": agent.sync(full=(cmd == "full")), "errors": list(agent.ruleset.errors)}
    except Exception as e:
        out = {"exception": repr(e)}
    print(json.dumps(out), flush=True)
"""


class LineProc:
    """A helper process we talk to one JSON line at a time."""

    def __init__(self, ns: Netns, argv: list[str], env: dict | None = None):
        self.proc = ns.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.read(timeout=30)

    def read(self, timeout: float = 30):
        if not self.sel.select(timeout):
            raise TimeoutError(f"no answer from {self.proc.args}")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.proc.args} exited with {self.proc.wait()}")
        return json.loads(line) if line.strip() != "ready" else "ready"

    def call(self, req, timeout: float = 60):
        self.proc.stdin.write((req if isinstance(req, str) else json.dumps(req)) + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def stop(self):
        kill_pid(self.proc.pid, timeout=2)


class Env:
    def __init__(self, tmp: Path):
        self.prefix = unique_prefix("fx")
        self.made: list[Netns] = []
        self.procs: list[subprocess.Popen] = []
        self.db = tmp / "store.db"
        self.store = LocalDatastore(self.db)
        self.node = self.netns("node")
        self.node.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.pod_ns: dict[P, Netns] = {}
        self.probers: dict[P, LineProc] = {}
        for ns in NAMESPACES:
            self.apply({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "labels": {"ns": ns}}})
        for pod in ALL:
            self.add_pod(pod)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.agent = LineProc(self.node, [sys.executable, "-c", AGENT, str(self.db), NODE], env=env)

    def netns(self, suffix: str) -> Netns:
        ns = Netns.create(f"{self.prefix}-{suffix}")
        self.made.append(ns)
        return ns

    def wire(self, suffix: str, iface: str, ip: str) -> Netns:
        ns = self.netns(suffix)
        veth(self.node, iface, ns, "eth0")
        # Calico-style: the pod's gateway is a link-local address the host side answers for.
        self.node.run("ip", "addr", "add", "169.254.1.1/32", "dev", iface)
        self.node.run("ip", "route", "add", f"{ip}/32", "dev", iface)
        ns.run("ip", "addr", "add", f"{ip}/32", "dev", "eth0")
        ns.run("ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        ns.run("ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        return ns

    def add_pod(self, pod: P) -> None:
        ns = self.wire(f"{pod.ns}{pod.name}", f"cali{pod.ns}{pod.name}", ip_of(pod))
        self.pod_ns[pod] = ns
        server = ns.popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        self.procs.append(server)
        assert server.stdout.readline().strip() == "ready"
        self.probers[pod] = LineProc(ns, [sys.executable, "-c", PROBER])
        labels = {"pod": pod.name} | ({"canary": "true"} if pod.name == "c" else {})
        ports = [{"name": f"serve-{p}-{proto}", "port": p, "protocol": proto.upper()} for p, proto in PORTS]
        ports.append({"name": "http", "port": http_port(pod), "protocol": "TCP"})
        self.store.put(POD, f"{pod.ns}/{pod.name}", {
            "node": NODE, "ip": ip_of(pod), "labels": labels, "ports": ports,
            "interface": f"cali{pod.ns}{pod.name}", "netns": ns.name})

    def apply(self, *docs) -> None:
        apply_objects(self.store, parse_manifests(yaml.safe_dump_all(docs), "test"))

    def set_policies(self, *docs) -> dict:
        for o in self.store.list(NETWORK_POLICY):
            self.store.delete(NETWORK_POLICY, o.name)
        if docs:
            self.apply(*docs)
        return self.sync()

    def sync(self, cmd: str = "sync") -> dict:
        out = self.agent.call(cmd)
        assert "exception" not in out, out
        return out

    def probe_all(self, cells) -> dict:
        by_src: dict[P, list] = {}
        for src, dst, port, proto in cells:
            by_src.setdefault(src, []).append((dst, port, proto))
        results = {}
        for src, items in by_src.items():  # all sources at once; each prober runs its probes in parallel
            self.probers[src].proc.stdin.write(json.dumps({"probe": [[ip_of(d), p, pr] for d, p, pr in items]}) + "\n")
            self.probers[src].proc.stdin.flush()
        for src, items in by_src.items():
            for (dst, port, proto), ok in zip(items, self.probers[src].read(60), strict=True):
                results[(src, dst, port, proto)] = ok
        return results

    def close(self) -> None:
        for lp in [*self.probers.values(), getattr(self, "agent", None)]:
            if lp is not None:
                lp.stop()
        for p in self.procs:
            kill_pid(p.pid, timeout=2)
        for ns in reversed(self.made):
            ns.delete()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces)")
    e = Env(tmp_path_factory.mktemp("felix"))
    try:
        yield e
        e.sync("cleanup")
    finally:
        e.close()


def _fmt(cells, expected, observed) -> str:
    lines = []
    for port, proto in PORTS:
        lines.append(f"{port}/{proto} (rows: from, cols: to; . allowed, X denied, ! unexpected)")
        lines.append("      " + " ".join(f"{d.ns}/{d.name}" for d in ALL))
        for s in ALL:
            row = []
            for d in ALL:
                k = (s, d, port, proto)
                if k not in observed:
                    row.append("  - ")
                    continue
                mark = "." if observed[k] else "X"
                row.append(f"  {mark}{'!' if observed[k] != expected[k] else ' '}")
            lines.append(f"  {s.ns}/{s.name} " + " ".join(row))
    return "\n".join(lines)


def check(env: Env, expect, note: str = "", explain: bool = True) -> None:
    cells = [(s, d, port, proto) for s in ALL for d in ALL for port, proto in PORTS]
    expected = {c: (c[0] == c[1]) or bool(expect(*c)) for c in cells}  # a pod reaches itself over lo
    observed = env.probe_all(cells)
    wrong = [c for c in cells if observed[c] != expected[c]]
    if wrong:  # one re-probe of the cells that disagree, as the upstream e2e suite does
        observed.update(env.probe_all(wrong))
        wrong = [c for c in cells if observed[c] != expected[c]]
    assert not wrong, f"{note}: {len(wrong)} probes differ from the expectation\n{_fmt(cells, expected, observed)}"
    if not explain:
        return
    # explain walks the same rendered chains: it must agree with the kernel on every probe
    cluster = Cluster(env.store.list(POD), env.store.list("Namespace"), env.store.list(NETWORK_POLICY))
    cache: dict = {}
    disagree = []
    for c in cells:
        s, d, port, proto = c
        if s == d:
            continue
        ex = explain_cluster(cluster, f"{s.ns}/{s.name}", f"{d.ns}/{d.name}", port, proto, rulesets=cache)
        if ex.allowed != observed[c]:
            disagree.append(str(ex))
    assert not disagree, f"{note}: explain disagrees with the kernel:\n" + "\n".join(disagree[:5])


def np(ns: str, name: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def sel(**labels) -> dict:
    return {"matchLabels": labels}


# ---------------------------------------------------------------------------------------------- cases

def test_no_policy_everything_open(env):
    env.set_policies()
    check(env, lambda s, d, port, proto: True, "no policies")


def test_default_deny_then_allow_all_union(env):
    env.set_policies(np("x", "deny-all", {"podSelector": {}}))
    check(env, lambda s, d, port, proto: d.ns != "x", "default deny ingress in x")
    env.set_policies(np("x", "deny-all", {"podSelector": {}}),
                     np("x", "allow-all", {"podSelector": {}, "ingress": [{}]}))
    check(env, lambda s, d, port, proto: True, "deny-all + allow-all (empty rule) in x")


def test_pod_selector_match_expressions(env):
    env.set_policies(
        np("x", "a-from-canary", {"podSelector": sel(pod="a"), "ingress": [
            {"from": [{"podSelector": {"matchExpressions": [{"key": "canary", "operator": "Exists"}]}}]}]}),
        np("x", "b-from-plain", {"podSelector": sel(pod="b"), "ingress": [
            {"from": [{"podSelector": {"matchExpressions": [
                {"key": "pod", "operator": "NotIn", "values": ["b"]},
                {"key": "canary", "operator": "DoesNotExist"}]}}]}]}))

    def expect(s, d, port, proto):
        if (d.ns, d.name) == ("x", "a"):
            return (s.ns, s.name) == ("x", "c")
        if (d.ns, d.name) == ("x", "b"):
            return (s.ns, s.name) == ("x", "a")
        return True
    check(env, expect, "Exists / NotIn / DoesNotExist pod selectors")


def test_namespace_selector_and_versus_or(env):
    env.set_policies(
        np("x", "a-and", {"podSelector": sel(pod="a"), "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y"]}]},
             "podSelector": sel(pod="c")}]}]}),
        np("x", "b-or", {"podSelector": sel(pod="b"), "ingress": [{"from": [
            {"namespaceSelector": sel(ns="y")}, {"podSelector": sel(pod="c")}]}]}),
        np("x", "c-notin", {"podSelector": sel(pod="c"), "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["y"]}]}},
            {"namespaceSelector": sel(**{"kubernetes.io/metadata.name": "y"}), "podSelector": sel(pod="a")}]}]}))

    def expect(s, d, port, proto):
        if d == P("x", "a"):
            return s == P("y", "c")
        if d == P("x", "b"):
            return s.ns == "y" or s == P("x", "c")
        if d == P("x", "c"):
            return s.ns != "y" or s == P("y", "a")
        return True
    check(env, expect, "namespaceSelector AND podSelector vs separate peers")


def test_ports_protocols_and_end_port(env):
    env.set_policies(
        np("x", "a-tcp80", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 80}]}]}),
        np("x", "b-udp-range", {"podSelector": sel(pod="b"), "ingress": [
            {"ports": [{"protocol": "UDP", "port": 80, "endPort": 81}]}]}),
        np("x", "c-udp-any-sctp80", {"podSelector": sel(pod="c"), "ingress": [
            {"ports": [{"protocol": "UDP"}, {"protocol": "SCTP", "port": 80}]}]}))

    def expect(s, d, port, proto):
        if d == P("x", "a"):
            return (port, proto) == (80, "tcp")
        if d in (P("x", "b"), P("x", "c")):
            return proto == "udp"
        return True
    check(env, expect, "port numbers, protocols, endPort")


def test_named_ports_resolved_per_destination_pod(env):
    env.set_policies(
        np("x", "http-only", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
        np("y", "udp81-by-name", {"podSelector": {}, "ingress": [
            {"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}),
        np("z", "a-egress-http", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": sel(ns="x")}], "ports": [{"port": "http"}]}]}))

    def expect(s, d, port, proto):
        if s == P("z", "a") and not (d.ns == "x" and proto == "tcp" and port == http_port(d)):
            return False
        if d.ns == "x":
            return proto == "tcp" and port == http_port(d)
        if d.ns == "y":
            return (port, proto) == (81, "udp")
        return True
    check(env, expect, "named ports (ingress and egress)")


def test_egress_policy_types_and_replies(env):
    env.set_policies(
        # explicit Egress only, no rules: x/a sends nothing, but replies to others' connections flow
        np("x", "a-no-egress", {"podSelector": sel(pod="a"), "policyTypes": ["Egress"]}),
        # explicit both types with only ingress rules: egress default deny, ingress open
        np("y", "a-both", {"podSelector": sel(pod="a"), "policyTypes": ["Ingress", "Egress"], "ingress": [{}]}),
        # inferred Ingress+Egress from the egress section: no ingress at all, egress to y/b tcp/81 only
        np("z", "a-inferred", {"podSelector": sel(pod="a"), "egress": [
            {"to": [{"namespaceSelector": sel(ns="y"), "podSelector": sel(pod="b")}],
             "ports": [{"protocol": "TCP", "port": 81}]}]}))

    def expect(s, d, port, proto):
        if s in (P("x", "a"), P("y", "a")):
            return False
        if s == P("z", "a"):
            return d == P("y", "b") and (port, proto) == (81, "tcp")
        return d != P("z", "a")
    check(env, expect, "egress, explicit and inferred policyTypes")


def test_ip_block_with_except(env):
    env.set_policies(
        np("x", "a-from-block", {"podSelector": sel(pod="a"), "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.77.0.0/16", "except": ["10.77.0.22/31"]}}]}]}),
        np("x", "b-to-block", {"podSelector": sel(pod="b"), "policyTypes": ["Egress"], "egress": [{"to": [
            {"ipBlock": {"cidr": "10.77.0.16/28", "except": ["10.77.0.20/30"]}}]}]}))

    def expect(s, d, port, proto):
        if s == P("x", "b"):  # .16-.31 minus .20-.23: only z/a (.31)
            return d == P("z", "a") and d != P("x", "a")
        if d == P("x", "a"):  # y/b (.22) and y/c (.23) are excepted
            return s not in (P("y", "b"), P("y", "c"))
        return True
    check(env, expect, "ipBlock with except, ingress and egress")


def test_several_policies_on_one_pod_union(env):
    env.set_policies(
        np("x", "from-y", {"podSelector": sel(pod="a"), "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}]}]}),
        np("x", "from-za", {"podSelector": sel(pod="a"), "ingress": [
            {"from": [{"namespaceSelector": sel(ns="z"), "podSelector": sel(pod="a")}]}]}),
        np("x", "tcp81", {"podSelector": sel(pod="a"), "ingress": [{"ports": [{"port": 81}]}]}))

    def expect(s, d, port, proto):
        if d == P("x", "a"):
            return s.ns == "y" or s == P("z", "a") or (port, proto) == (81, "tcp")
        return True
    check(env, expect, "union of three policies on x/a")


def test_update_and_delete_while_traffic_flows(env):
    env.set_policies()
    y_a = env.probers[P("y", "a")]
    assert y_a.call({"open": ["flow", ip_of(P("x", "a")), 80]}) is True
    env.set_policies(np("x", "deny-all", {"podSelector": {}}))
    assert y_a.call({"echo": "flow"}) is True, "an established connection must keep flowing after deny"
    check(env, lambda s, d, port, proto: d.ns != "x", "deny-all added while a connection is open")
    env.set_policies(np("x", "deny-all", {"podSelector": {}}),
                     np("x", "allow-y", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}]}]}))
    check(env, lambda s, d, port, proto: d.ns != "x" or s.ns == "y", "allow-y added")
    assert y_a.call({"echo": "flow"}) is True
    env.set_policies(np("x", "allow-y", {"podSelector": {}, "ingress": [
        {"from": [{"namespaceSelector": sel(ns="y")}]}]}))  # deny-all deleted, allow-y still isolates x
    check(env, lambda s, d, port, proto: d.ns != "x" or s.ns == "y", "deny-all deleted")
    env.set_policies()
    check(env, lambda s, d, port, proto: True, "all policies deleted")
    assert y_a.call({"echo": "flow"}) is True


def test_malformed_policy_skipped_others_enforced(env):
    env.set_policies(np("x", "deny-all", {"podSelector": {}}))
    # bypasses `bgpnet apply` validation, as a bad object from another writer would
    env.store.put(NETWORK_POLICY, "y/broken", {"metadata": {"name": "broken", "namespace": "y"}, "spec": {
        "podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 10}]}]}})
    out = env.sync()
    assert any("y/broken" in e and "endPort" in e for e in out["errors"]), out
    check(env, lambda s, d, port, proto: d.ns != "x", "malformed y/broken skipped, x/deny-all enforced")


def _node_iptables(env: Env, *args: str) -> str:
    return env.node.run("iptables", *args)


def _show(env: Env) -> str:
    return subprocess.run(
        env.node.argv(sys.executable, "-m", "bgpnet", "policy", "show", NODE, "--store", str(env.db)),
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60).stdout


def test_drift_is_repaired_and_foreign_rules_untouched(env):
    env.set_policies(np("x", "from-y", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}]}]}))
    wanted = lambda s, d, port, proto: d.ns != "x" or s.ns == "y"  # noqa: E731
    check(env, wanted, "before drift")
    # Another program puts a rule and a chain of its own at the top of FORWARD (our hook drops to
    # position 2), flushes one of our chains and empties one of our ipsets.
    _node_iptables(env, "-N", "OTHER-CHAIN")
    _node_iptables(env, "-A", "OTHER-CHAIN", "-s", "192.0.2.1", "-j", "RETURN")
    _node_iptables(env, "-I", "FORWARD", "1", "-s", "192.0.2.2", "-j", "OTHER-CHAIN")
    _node_iptables(env, "-F", "BGPNET-TW-calixa")
    [y_set] = [line.split()[1] for line in env.node.run("ipset", "save").splitlines()
               if line.startswith("create BGPNET-S-")]
    env.node.run("ipset", "flush", y_set)
    shown = _show(env)
    assert "BGPNET-TW-calixa [drifted]" in shown and "BGPNET-TW-calixb [in sync]" in shown, shown
    # explain describes the wanted state, which the kernel no longer holds here
    check(env, lambda s, d, port, proto: d == P("x", "a") or d.ns != "x", "drifted", explain=False)
    out = env.sync()  # a change-triggered sync trusts its cache: it does not see the drift
    assert "kernel re-read" not in out["summary"]
    out = env.sync("full")  # the resync timer's sync re-reads the kernel and repairs
    summary = out["summary"]
    assert "kernel re-read" in summary and "chains 1 written" in summary and "hooks 1" in summary, summary
    assert "ipsets 1 written" in summary, summary
    check(env, wanted, "after repair")
    fwd = _node_iptables(env, "-S", "FORWARD").splitlines()
    assert fwd[1].endswith("-j BGPNET-FORWARD") and "OTHER-CHAIN" in fwd[2], fwd
    assert sum("BGPNET-FORWARD" in r for r in fwd) == 1
    assert "192.0.2.1" in _node_iptables(env, "-S", "OTHER-CHAIN")
    assert "BGPNET-TW-calixa [in sync]" in _show(env)
    # our hook deleted outright: nothing is enforced until the next resync puts it back
    _node_iptables(env, "-D", "FORWARD", "1")
    check(env, lambda s, d, port, proto: True, "hook deleted", explain=False)
    out = env.sync("full")
    assert "chains 0 written" in out["summary"] and "hooks 1" in out["summary"], out
    check(env, wanted, "after the second repair")
    out = env.sync("full")
    assert "chains 0 written" in out["summary"] and "hooks 0" in out["summary"], out
    _node_iptables(env, "-D", "FORWARD", "-s", "192.0.2.2", "-j", "OTHER-CHAIN")
    _node_iptables(env, "-F", "OTHER-CHAIN")
    _node_iptables(env, "-X", "OTHER-CHAIN")


def test_unknown_pod_interface_fails_closed(env):
    env.set_policies()
    ns = env.wire("rogue", "calirogue", "10.77.0.99")
    prober = LineProc(ns, [sys.executable, "-c", PROBER])
    try:
        targets = [[ip_of(d), 80, "tcp"] for d in ALL] + [[ip_of(d), 80, "udp"] for d in ALL]
        assert prober.call({"probe": targets}) == [False] * len(targets), "traffic from an unknown pod interface"
        # spoofing a known pod's address on an unknown interface does not help either
        env.store.put(POD, "w/rogue", {"node": NODE, "ip": "10.77.0.98", "labels": {}, "ports": [],
                                       "interface": "calirogue"})
        env.sync()
        assert prober.call({"probe": targets}) == [False] * len(targets), "source address is not the pod's"
        env.store.put(POD, "w/rogue", {"node": NODE, "ip": "10.77.0.99", "labels": {}, "ports": [],
                                       "interface": "calirogue"})
        env.sync()
        assert prober.call({"probe": targets}) == [True] * len(targets), "after the pod is known"
    finally:
        prober.stop()
        if env.store.get(POD, "w/rogue"):
            env.store.delete(POD, "w/rogue")
        env.sync()
