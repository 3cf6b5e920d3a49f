"""Bring a containerlab topology up as network namespaces on this machine, and take it down again.

Each node becomes a namespace `<lab>-<node>`; each link a veth pair named as its endpoints say. A
`kind: bridge` node becomes a namespace holding a Linux bridge `br0` to which its link ends attach.
Real containerlab instead expects a bridge of that name to exist in the host's root namespace; a
namespace keeps the lab's L2 segment off the host, so labs never touch the root namespace's links.

There are no containers, so there is no mount namespace either: a node's `binds` become a map from
container path to host path, kept in the lab state. Daemons are given host paths (FRR's
/etc/frr/frr.conf, BIRD's /etc/bird/bird.conf); a bgpnet node's /etc/bgpnet/config.yaml is copied to
its run directory with every string value that is a bound container path (or lies under one, e.g.
/var/lib/bgpnet/store.db under a bind of /var/lib/bgpnet) replaced by the host path. `exec` commands
run after all links are up and before the node's daemons start, so addresses exist when they bind.

State (namespaces, PIDs with start times, run dirs, binds) is written to
/run/bgpnet-lab/<lab>/state.json after every step, so `down` works on a half-up lab too.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bgpnet.config import load_config
from bgpnet.errors import BgpnetError, ConfigError
from bgpnet.lab import routers
from bgpnet.lab.netns import Netns, list_netns, sh, veth
from bgpnet.lab.procs import Proc, tail
from bgpnet.lab.routers import LabError
from bgpnet.lab.topology import (
    BRIDGE_DEVICE,
    NAME_RE,
    Node,
    Topology,
    host_path,
    load_topology,
    resolve_bind_host,
    rewrite_bound_paths,
)

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/run/bgpnet-lab"
# Where each image expects its config inside the container.
FRR_CONF = "/etc/frr/frr.conf"
BIRD_CONFS = ("/etc/bird/bird.conf", "/etc/bird.conf")
BGPNET_CONF = "/etc/bgpnet/config.yaml"
AGENT_SETTLE = 1.5  # seconds an agent gets to fail on its config before `up` calls it running


def lab_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("BGPNET_LAB_DIR") or DEFAULT_ROOT)


@dataclass
class LabNode:
    """One node as running: its namespace, run directory, binds (container path -> host path), daemons."""

    name: str
    kind: str
    role: str
    image: str
    netns: Netns
    run_dir: Path
    binds: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    config: str = ""  # the file the node's daemon reads (host path; a rewritten copy for bgpnet)

    def host_path(self, container_path: str) -> str:
        mapped = host_path(container_path, self.binds)
        if mapped is None:
            raise LabError(f"node {self.name}: {container_path} is not bound (binds: {sorted(self.binds) or 'none'})")
        return mapped

    def alive(self) -> dict[str, bool]:
        return {f"{p.name}[{p.pid}]": p.alive() for p in self.procs}

    def to_json(self) -> dict:
        return {"kind": self.kind, "role": self.role, "image": self.image, "netns": self.netns.name,
                "run_dir": str(self.run_dir), "binds": self.binds, "env": self.env, "labels": self.labels,
                "config": self.config, "processes": [p.to_json() for p in self.procs]}

    @classmethod
    def from_json(cls, name: str, d: dict) -> LabNode:
        return cls(name=name, kind=d["kind"], role=d["role"], image=d.get("image", ""), netns=Netns(d["netns"]),
                   run_dir=Path(d["run_dir"]), binds=d.get("binds", {}), env=d.get("env", {}),
                   labels=d.get("labels", {}), config=d.get("config", ""),
                   procs=[Proc.from_json(p) for p in d.get("processes", [])])


class Lab:
    """A lab as recorded in its state file. `Lab.up(...)` starts one; `Lab.open(name)` finds a running one."""

    def __init__(self, name: str, lab_dir: Path, topology: str, nodes: dict[str, LabNode],
                 namespaces: list[str], status: str = "starting"):
        self.name = name
        self.dir = lab_dir
        self.topology = topology
        self.nodes = nodes
        self.namespaces = namespaces
        self.status = status
        self._handles: list = []  # router handles started by this process (to reap their children)

    # ------------------------------------------------------------------ state

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    def to_json(self) -> dict:
        return {"name": self.name, "topology": self.topology, "status": self.status, "dir": str(self.dir),
                "namespaces": self.namespaces, "nodes": {n: node.to_json() for n, node in self.nodes.items()}}

    def save(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f, indent=2)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.state_path)

    @classmethod
    def open(cls, name: str, root: str | Path | None = None) -> Lab:
        lab_dir = lab_root(root) / name
        try:
            d = json.loads((lab_dir / "state.json").read_text())
        except FileNotFoundError:
            raise LabError(f"no lab named {name!r} (no {lab_dir / 'state.json'}); `bgpnet lab list` shows "
                           "the labs that are up") from None
        except (OSError, ValueError) as e:
            raise LabError(f"cannot read {lab_dir / 'state.json'}: {e}") from None
        nodes = {n: LabNode.from_json(n, nd) for n, nd in d.get("nodes", {}).items()}
        return cls(d["name"], lab_dir, d.get("topology", ""), nodes, d.get("namespaces", []), d.get("status", ""))

    @classmethod
    def list(cls, root: str | Path | None = None) -> list[Lab]:
        base = lab_root(root)
        if not base.is_dir():
            return []
        out = []
        for d in sorted(base.iterdir()):
            if (d / "state.json").exists():
                try:
                    out.append(cls.open(d.name, root))
                except LabError as e:
                    log.warning("%s", e)
        return out

    # ------------------------------------------------------------------ up

    @classmethod
    def up(cls, topology_path: str | Path, prefix: str | None = None, root: str | Path | None = None,
           keep_on_failure: bool = False) -> Lab:
        """Bring the topology up; on any failure take down what came up (unless keep_on_failure) and raise."""
        topo = load_topology(topology_path)
        for w in topo.warnings:
            log.warning("%s: %s", topology_path, w)
        name = prefix or topo.name
        if not NAME_RE.match(name):
            raise ConfigError(f"lab name {name!r} must be letters, digits, `_`, `.` or `-`", "--name-prefix")
        lab_dir = lab_root(root) / name
        if (lab_dir / "state.json").exists():
            raise LabError(f"lab {name!r} is already up (state in {lab_dir}); run `bgpnet lab down {name}` first")
        lab = cls(name, lab_dir, str(Path(topology_path).absolute()), {}, [])
        plans = lab._plan(topo)  # checks every input before anything is created
        lab.dir.mkdir(parents=True, exist_ok=True)
        lab.dir.chmod(0o755)  # FRR (user frr) must reach its node directory
        try:
            lab._build(topo, plans)
        except BaseException as e:
            if keep_on_failure:
                lab.status = "failed"
                lab.save()
                raise LabError(f"lab {name} failed to come up: {e}\n(left as it is; remove it with "
                               f"`bgpnet lab down {name}`)") from e
            log.warning("lab %s failed to come up, taking it down: %s", name, str(e).splitlines()[0] if str(e) else type(e).__name__)
            lab.down()
            if isinstance(e, BgpnetError):
                raise LabError(f"lab {name} failed to come up (rolled back): {e}") from e
            raise
        return lab

    def _plan(self, topo: Topology) -> dict[str, dict]:
        """Per node: namespace, run dir, resolved binds and the daemon's config; errors before any change."""
        taken = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        plans: dict[str, dict] = {}
        for node in topo.nodes.values():
            where = f"{topo.path}: topology.nodes.{node.name}"
            ns_name = f"{self.name}-{node.name}"
            if ns_name in taken:
                raise LabError(f"namespace {ns_name} already exists; is another lab named {self.name} up?")
            run_dir = self.dir / node.name
            binds: dict[str, str] = {}
            for i, bind in enumerate(node.binds):
                host = resolve_bind_host(bind, str(self.dir), str(run_dir))
                inside_lab = host == str(self.dir) or host.startswith(str(self.dir) + "/")
                if not inside_lab and not os.path.exists(host):
                    raise ConfigError(f"host path {host} does not exist", f"{where}.binds[{i}]")
                binds[bind.container] = host
            plan = {"node": node, "netns": ns_name, "run_dir": run_dir, "binds": binds, "conf_text": None}
            plans[node.name] = plan
            if node.role == "frr":
                plan["conf_text"] = self._read_bound(node, binds, (FRR_CONF,), where)
            elif node.role == "bird":
                plan["conf_text"] = self._read_bound(node, binds, BIRD_CONFS, where)
            elif node.role == "bgpnet":
                text = self._read_bound(node, binds, (BGPNET_CONF,), where)
                try:
                    data = yaml.safe_load(text)
                except yaml.YAMLError as e:
                    raise ConfigError(f"not valid YAML: {e}", host_path(BGPNET_CONF, binds) or "") from None
                plan["conf_text"] = yaml.safe_dump(rewrite_bound_paths(data, binds), sort_keys=False)
        return plans

    @staticmethod
    def _read_bound(node: Node, binds: dict[str, str], container_paths: tuple[str, ...], where: str) -> str:
        for container in container_paths:
            host = host_path(container, binds)
            if host and os.path.isfile(host):
                return Path(host).read_text()
        want = " or ".join(container_paths)
        raise ConfigError(f"image {node.image!r} runs {node.role}, which needs a bind for {want} "
                          f"(e.g. `binds: [\"{node.name}.conf:{container_paths[0]}\"]`)", f"{where}.binds")

    def _build(self, topo: Topology, plans: dict[str, dict]) -> None:
        for node in topo.nodes.values():
            p = plans[node.name]
            p["run_dir"].mkdir(parents=True, exist_ok=True)
            for host in p["binds"].values():
                if host.startswith(str(self.dir) + "/") and not os.path.exists(host):
                    os.makedirs(host, exist_ok=True)  # like docker: a missing bind source becomes a directory
            self.namespaces.append(p["netns"])
            self.save()  # record the namespace before creating it: down must find it whatever happens next
            Netns.create(p["netns"])
            self.nodes[node.name] = LabNode(name=node.name, kind=node.kind, role=node.role, image=node.image,
                                            netns=Netns(p["netns"]), run_dir=p["run_dir"], binds=p["binds"],
                                            env=dict(node.env), labels=dict(node.labels))
            if node.kind == "bridge":
                ns = self.nodes[node.name].netns
                ns.run("ip", "link", "add", BRIDGE_DEVICE, "type", "bridge")
                ns.run("ip", "link", "set", BRIDGE_DEVICE, "up")
            self.save()
        for link in topo.links:
            a, b = self.nodes[link.a.node], self.nodes[link.b.node]
            veth(a.netns, link.a.interface, b.netns, link.b.interface)
            for end, ep in ((a, link.a), (b, link.b)):
                if end.kind == "bridge":
                    end.netns.run("ip", "link", "set", ep.interface, "master", BRIDGE_DEVICE)
        for node in topo.nodes.values():
            for i, cmd in enumerate(node.exec):
                self._exec_step(node, i, cmd)
        agents = False
        for node in topo.nodes.values():
            p, lab_node = plans[node.name], self.nodes[node.name]
            if node.role in ("frr", "bird", "bgpnet"):
                self._start(lab_node, p["conf_text"])
                agents |= node.role == "bgpnet"
                self.save()
        if agents:  # an agent with a bad config exits within a second or so: catch it here, not later
            deadline = time.monotonic() + AGENT_SETTLE
            while time.monotonic() < deadline and all(all(n.alive().values()) for n in self.nodes.values()):
                time.sleep(0.1)
        for lab_node in self.nodes.values():
            for proc in lab_node.procs:
                if not proc.alive():
                    raise LabError(f"node {lab_node.name}: {proc.name} (pid {proc.pid}) exited; last lines of "
                                   f"{proc.log}:\n{tail(proc.log)}")
        self.status = "up"
        self.save()
        log.info("lab %s up: %d nodes, %d links", self.name, len(self.nodes), len(topo.links))

    def _exec_step(self, node: Node, i: int, cmd: str) -> None:
        ns = self.nodes[node.name].netns
        try:
            argv = shlex.split(cmd)
        except ValueError as e:
            raise LabError(f"node {node.name}: exec[{i}] {cmd!r}: {e}") from None
        p = subprocess.run(ns.argv(*argv), capture_output=True, text=True, timeout=60,
                           env={**os.environ, **node.env})
        if p.returncode != 0:
            raise LabError(f"node {node.name}: exec[{i}] `{cmd}` failed (exit {p.returncode}): "
                           f"{(p.stderr or p.stdout).strip()}")

    def _start(self, node: LabNode, conf_text: str) -> None:
        if node.role == "frr":
            handle = routers.start_frr(node.netns, conf_text, node.run_dir, env=node.env)
            node.config = str(node.run_dir / "frr.conf")
        elif node.role == "bird":
            handle = routers.start_bird(node.netns, conf_text, node.run_dir, env=node.env)
            node.config = str(node.run_dir / "bird.conf")
        else:
            config = node.run_dir / "config.yaml"
            config.write_text(f"# {node.host_path(BGPNET_CONF)} with bound container paths mapped to host "
                              f"paths by `bgpnet lab`\n{conf_text}")
            node.config = str(config)
            try:
                load_config(config)
            except ConfigError as e:
                raise LabError(f"node {node.name}: {e}") from None
            handle = routers.start_agent(node.netns, config, node.run_dir, env=node.env)
        self._handles.append(handle)
        node.procs.extend(handle.procs)

    # ------------------------------------------------------------------ use

    def node(self, name: str) -> LabNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise LabError(f"lab {self.name} has no node {name!r} (nodes: {', '.join(self.nodes)})") from None

    def exec(self, node: str, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        """Run a command in the node's namespace (with its env); return stdout, raise on failure if check."""
        n = self.node(node)
        p = subprocess.run(n.netns.argv(*cmd), capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **n.env})
        if check and p.returncode != 0:
            raise LabError(f"{node}: {' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
        return p.stdout

    def frr(self, node: str) -> routers.FrrHandle:
        """A handle on a running FRR node (vtysh); works from any process."""
        n = self.node(node)
        if n.role != "frr":
            raise LabError(f"node {node} runs {n.role}, not FRR")
        return routers.FrrHandle(ns=n.netns, run_dir=n.run_dir, procs=list(n.procs))

    def bird(self, node: str) -> routers.BirdHandle:
        n = self.node(node)
        if n.role != "bird":
            raise LabError(f"node {node} runs {n.role}, not BIRD")
        return routers.BirdHandle(ns=n.netns, run_dir=n.run_dir, procs=list(n.procs))

    def status_data(self) -> dict:
        """Nodes, namespaces, processes alive and, for FRR/BIRD nodes, their BGP sessions."""
        out = {"name": self.name, "topology": self.topology, "status": self.status, "nodes": {}}
        for name, n in self.nodes.items():
            d = {"role": n.role, "image": n.image, "netns": n.netns.name, "netns_exists": n.netns.exists(),
                 "run_dir": str(n.run_dir), "processes": [{"name": p.name, "pid": p.pid, "alive": p.alive(),
                                                            "log": p.log} for p in n.procs]}
            running = d["netns_exists"] and n.procs and all(p.alive() for p in n.procs)
            try:
                if n.role == "frr" and running:
                    summary = self.frr(name).vtysh_json("show bgp summary json")
                    peers = summary.get("ipv4Unicast", {}).get("peers", {})
                    d["bgp"] = {addr: {"remote_as": p.get("remoteAs"), "state": p.get("state"),
                                       "prefixes_received": p.get("pfxRcd"), "up": p.get("peerUptime")}
                                for addr, p in peers.items()}
                elif n.role == "bird" and running:
                    d["bgp"] = {k: v for k, v in self.bird(name).protocols().items() if v["proto"] == "BGP"}
                elif n.role == "bgpnet" and d["netns_exists"]:
                    d["routes_proto_201"] = routers.routes(n.netns, 201)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                d["error"] = str(e)
            out["nodes"][name] = d
        return out

    # ------------------------------------------------------------------ down

    def down(self) -> None:
        """Stop every recorded daemon by PID, delete every namespace, remove the run dir and state."""
        for node in reversed(list(self.nodes.values())):
            for proc in reversed(node.procs):
                proc.stop()
        for handle in self._handles:  # reap children started by this process
            routers._stop_all([], handle._popens)
        # Pods (`bgpnet lab pod add`, named <lab>-pod-...) are not in the state file but belong to the lab;
        # deleting them first also ends what runs inside (e.g. the demo's TCP servers).
        for ns_name in list_netns():
            if ns_name.startswith(f"{self.name}-pod-"):
                Netns(ns_name).delete()
        for ns_name in reversed(self.namespaces):
            Netns(ns_name).delete()  # also kills what the daemons left behind (an agent's exabgp)
        left = [n for n in self.namespaces if Netns(n).exists()]
        if left:
            raise LabError(f"namespaces still present after delete: {', '.join(left)} (state kept in {self.dir})")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.status = "down"
        log.info("lab %s down", self.name)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.down()


def netns_of_lab(name: str) -> list[str]:
    """Namespaces named `<name>-*` (for checking that a lab left nothing behind)."""
    out = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{name}-")]
