"""`bgpnet lab pod add/del/list`: lab pods are network namespaces wired by the real CNI plugin.

`pod add` creates the pod's namespace (`<lab>-pod-<namespace>-<name>`) and runs `bgpnet-cni ADD`
inside the node's namespace exactly as kubelet would: CNI_* environment with
CNI_ARGS=K8S_POD_NAMESPACE=..;K8S_POD_NAME=.., and the network config on stdin. Labels and ports travel
in the config's `args.bgpnet` ({"labels": {..}, "ports": [{name, port, protocol}]}), the CNI
convention for plugin-specific arguments; the plugin writes them into the Pod record. Node namespaces
and the shared store file come from the running lab (bgpnet.lab.runner), or `<lab>-<node>` and --store.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from bgpnet.errors import BgpnetError, ConfigError

log = logging.getLogger(__name__)

NETWORK_NAME = "bgpnet"


# --------------------------------------------------------------------------------------- the lab's layout

def open_lab(lab: str):
    """The running lab's record (bgpnet.lab.runner), or None when no such lab is up."""
    from bgpnet.lab.runner import Lab, LabError

    try:
        return Lab.open(lab)
    except LabError:
        return None


def node_netns(lab: str, node: str, running=None) -> str:
    """The node's namespace as the lab recorded it, else `<lab>-<node>`."""
    if running is not None and node in running.nodes:
        return running.nodes[node].netns.name
    return f"{lab}-{node}"


def store_path(lab: str, given: str | None, running=None) -> str:
    """--store if given, else the datastore file the lab's bgpnet agents share (from a node's config)."""
    if given:
        return given
    if running is not None:
        from bgpnet.config import load_config

        for node in running.nodes.values():
            if node.role == "bgpnet" and node.config:
                ds = load_config(node.config).datastore
                if ds.type == "local":
                    return ds.path
    from bgpnet.lab.runner import lab_root

    return str(lab_root() / lab / "store.db")


def pod_netns(lab: str, pod: str) -> str:
    ns, name = pod.split("/", 1)
    return f"{lab}-pod-{ns}-{name}"


# --------------------------------------------------------------------------------------------- parsing

def parse_pod_name(text: str) -> str:
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise ConfigError(f"{text!r} is not NAMESPACE/NAME", "pod")
    return text


def parse_labels(text: str) -> dict[str, str]:
    """`app=web,tier=front` -> {"app": "web", "tier": "front"}."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise ConfigError(f"label {part!r} is not key=value", "--labels")
        out[k.strip()] = v.strip()
    return out


def parse_ports(text: str) -> list[dict]:
    """`http=80/TCP,dns=53/UDP,metrics=9090` -> [{name, port, protocol}] (protocol defaults to TCP)."""
    out = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, rest = part.partition("=")
        if not sep or not name:
            raise ConfigError(f"port {part!r} is not name=PORT[/PROTOCOL]", "--ports")
        port, _, proto = rest.partition("/")
        proto = (proto or "TCP").upper()
        if proto not in ("TCP", "UDP", "SCTP"):
            raise ConfigError(f"port {part!r}: protocol must be TCP, UDP or SCTP", "--ports")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"port {part!r}: {port!r} is not a port number 1..65535", "--ports")
        out.append({"name": name, "port": int(port), "protocol": proto})
    return out


def network_config(store: str, node: str, labels: dict | None = None, ports: list | None = None,
                   mode: str = "blocks") -> dict:
    conf = {"cniVersion": "1.0.0", "name": NETWORK_NAME, "type": "bgpnet-cni",
            "ipam": {"type": "bgpnet", "datastore": {"type": "local", "path": store}, "node": node, "mode": mode}}
    if labels or ports:
        conf["args"] = {"bgpnet": {"labels": labels or {}, "ports": ports or []}}
    return conf


# ------------------------------------------------------------------------------------------ invocation

def plugin_argv() -> list[str]:
    exe = Path(sys.executable).parent / "bgpnet-cni"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("bgpnet-cni")
    return [found] if found else [sys.executable, "-m", "bgpnet.cni.plugin"]


def run_cni(node_ns: str, command: str, container_id: str, netns_path: str, conf: dict, pod: str) -> dict | None:
    ns, name = pod.split("/", 1)
    env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns_path,
           "CNI_IFNAME": "eth0", "CNI_PATH": str(Path(plugin_argv()[0]).parent),
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"}
    p = subprocess.run(["ip", "netns", "exec", node_ns, *plugin_argv()], input=json.dumps(conf), env=env,
                       capture_output=True, text=True, timeout=120)
    out = p.stdout.strip()
    try:
        res = json.loads(out) if out else None
    except json.JSONDecodeError:
        res = None
    if p.returncode != 0:
        msg = res.get("msg") if isinstance(res, dict) else (p.stderr.strip() or out)
        code = res.get("code") if isinstance(res, dict) else "?"
        raise BgpnetError(f"CNI {command} for {pod} on {node_ns} failed (code {code}): {msg}")
    return res


def add_pod(lab: str, node: str, pod: str, labels: dict | None = None, ports: list | None = None,
            store: str | None = None) -> dict:
    """Create the pod's namespace and wire it through the CNI plugin; returns the pod's record."""
    from bgpnet.datastore.base import POD
    from bgpnet.datastore.local import LocalDatastore
    from bgpnet.lab.netns import Netns

    running = open_lab(lab)
    path = store_path(lab, store, running)
    node_ns = node_netns(lab, node, running)
    if not Netns(node_ns).exists():
        raise BgpnetError(f"node {node} of lab {lab} has no namespace {node_ns} (is the lab up?)")
    ds = LocalDatastore(path)
    if ds.get(POD, pod) is not None:
        raise BgpnetError(f"pod {pod} already exists (on {ds.get(POD, pod).spec.get('node')})")
    name = pod_netns(lab, pod)
    if Netns(name).exists():
        raise BgpnetError(f"namespace {name} already exists: `bgpnet lab pod del {lab} {pod}` first")
    ns = Netns.create(name)
    container_id = hashlib.sha1(f"{lab}/{pod}/{uuid.uuid4()}".encode()).hexdigest()[:32]
    try:
        run_cni(node_ns, "ADD", container_id, f"/run/netns/{name}", network_config(path, node, labels, ports), pod)
    except BaseException:
        ns.delete()
        raise
    rec = ds.get(POD, pod).spec
    log.info("pod %s on %s: %s", pod, node, rec.get("ip"))
    return rec


def del_pod(lab: str, pod: str, store: str | None = None) -> bool:
    """DEL through the plugin, then remove the namespace; False if there was no such pod."""
    from bgpnet.datastore.base import POD
    from bgpnet.datastore.local import LocalDatastore
    from bgpnet.lab.netns import Netns

    running = open_lab(lab)
    path = store_path(lab, store, running)
    rec = LocalDatastore(path).get(POD, pod)
    ns = Netns(pod_netns(lab, pod))
    if rec is None and not ns.exists():
        return False
    if rec is not None:
        node = rec.spec.get("node", "")
        run_cni(node_netns(lab, node, running), "DEL", rec.spec.get("container_id", ""), f"/run/netns/{ns.name}",
                network_config(path, node), pod)
    ns.delete()
    return True


def list_pods(lab: str, store: str | None = None) -> list[dict]:
    from bgpnet.datastore.base import POD
    from bgpnet.datastore.local import LocalDatastore

    path = store_path(lab, store, open_lab(lab))
    if not Path(path).exists():
        return []
    out = []
    for obj in LocalDatastore(path).list(POD):
        ns, name = obj.name.split("/", 1)
        if obj.spec.get("netns") != pod_netns(lab, obj.name):
            continue  # a pod of another lab sharing the store
        out.append({"namespace": ns, "name": name, "labels": obj.spec.get("labels") or {},
                    "node": obj.spec.get("node"), "ip": obj.spec.get("ip"), "netns": obj.spec.get("netns"),
                    "ports": obj.spec.get("ports") or []})
    return out


# ------------------------------------------------------------------------------------------------- CLI

def register_pod_commands(lab_subparsers) -> None:
    """Add `pod add/del/list` under `bgpnet lab`."""
    p = lab_subparsers.add_parser("pod", help="pods (namespaces wired by bgpnet-cni) on lab nodes")
    sub = p.add_subparsers(dest="pod_command", metavar="ACTION", required=True)

    def store_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--store", help="the lab's store file (default: from the lab state)")

    a = sub.add_parser("add", help="create a pod on a node through the CNI plugin")
    a.add_argument("lab")
    a.add_argument("node")
    a.add_argument("pod", metavar="NAMESPACE/NAME")
    a.add_argument("--labels", default="", help="k=v,k2=v2")
    a.add_argument("--ports", default="", help="name=80/TCP,dns=53/UDP")
    store_arg(a)
    a.set_defaults(func=cmd_add)
    d = sub.add_parser("del", help="delete a pod (CNI DEL, then its namespace)")
    d.add_argument("lab")
    d.add_argument("pod", metavar="NAMESPACE/NAME")
    store_arg(d)
    d.set_defaults(func=cmd_del)
    ls = sub.add_parser("list", help="list the lab's pods")
    ls.add_argument("lab")
    ls.add_argument("--json", action="store_true", help="namespace, name, labels, node, ip, netns per pod")
    store_arg(ls)
    ls.set_defaults(func=cmd_list)


def cmd_add(args) -> int:
    pod = parse_pod_name(args.pod)
    rec = add_pod(args.lab, args.node, pod, parse_labels(args.labels), parse_ports(args.ports), args.store)
    print(f"pod {pod} on {args.node}: {rec.get('ip')} (netns {rec.get('netns')})")
    return 0


def cmd_del(args) -> int:
    pod = parse_pod_name(args.pod)
    print(f"pod {pod} deleted" if del_pod(args.lab, pod, args.store) else f"no pod {pod} in lab {args.lab}")
    return 0


def cmd_list(args) -> int:
    pods = list_pods(args.lab, args.store)
    if args.json:
        print(json.dumps(pods, indent=2))
        return 0
    print(f"{'NAMESPACE/NAME':<32} {'NODE':<12} {'IP':<16} {'NETNS':<36} LABELS")
    for p in pods:
        labels = ",".join(f"{k}={v}" for k, v in sorted(p["labels"].items())) or "-"
        print(f"{p['namespace'] + '/' + p['name']:<32} {p['node'] or '-':<12} {p['ip'] or '-':<16} "
              f"{p['netns']:<36} {labels}")
    return 0
