"""Containerlab topology files (`*.clab.yml`) parsed into dataclasses; pure, errors name file + field.

Only what a namespace lab can honour is read: kinds `linux` and `bridge`, `image`, `binds`, `exec`,
`env`, `labels` (from `topology.defaults`, `topology.kinds.<kind>` and the node, in that order), and
veth `links`. Fields that only make sense for containers (ports, mgmt addresses ...) are accepted and
reported in `Topology.warnings`; anything else is an error.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bgpnet.errors import ConfigError

KINDS = ("linux", "bridge")
# Containerlab's magic bind prefixes: the lab directory and the node's own directory.
CLAB_DIR = "__clabDir__"
CLAB_NODE_DIR = "__clabNodeDir__"
BRIDGE_DEVICE = "br0"  # the Linux bridge inside a `kind: bridge` node's namespace

NODE_FIELDS = ("kind", "image", "binds", "exec", "env", "labels")
# Container-only settings: accepted (so real containerlab files load) but without effect here.
IGNORED_NODE_FIELDS = frozenset({
    "mgmt-ipv4", "mgmt-ipv6", "mgmt_ipv4", "mgmt_ipv6", "ports", "cmd", "entrypoint", "user", "group",
    "network-mode", "startup-config", "startup-delay", "enforce-startup-config", "suppress-startup-config",
    "type", "license", "publish", "sysctls", "memory", "cpus", "cpu-set", "healthcheck", "restart-policy",
    "runtime", "certificate", "dns", "extras", "wait-for", "stages", "aliases", "auto-remove", "cap-add",
    "devices", "shm-size", "image-pull-policy", "env-files", "config", "components",
})
TOP_FIELDS = ("name", "topology", "prefix", "mgmt")
TOPOLOGY_FIELDS = ("defaults", "kinds", "nodes", "links")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@dataclass(frozen=True)
class Bind:
    """`host:container[:mode]`; `host` is absolute, or starts with __clabDir__/__clabNodeDir__."""

    host: str
    container: str
    mode: str = "rw"


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    image: str = ""
    binds: tuple[Bind, ...] = ()
    exec: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def role(self) -> str:
        """What runs in the node, decided by its image: bgpnet, frr, bird, bridge, or host (nothing)."""
        if self.kind == "bridge":
            return "bridge"
        image = self.image.lower()
        for role in ("bgpnet", "frr", "bird"):
            if role in image:
                return role
        return "host"


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.interface}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Topology:
    name: str
    path: str
    nodes: dict[str, Node]
    links: tuple[Link, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))


# ---------------------------------------------------------------------------------------------- parser


def load_topology(path: str | Path) -> Topology:
    """Read and parse a topology file; ConfigError names the file and the field on any problem."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read topology: {e.strerror}", path) from None
    return parse_topology(text, path)


def parse_topology(text: str, path: str) -> Topology:
    """Parse topology YAML `text`; `path` is used for errors and to resolve relative bind paths."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', e)}", loc) from None
    return _Parser(path).topology(data)


class _Parser:
    def __init__(self, path: str):
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.warnings: list[str] = []

    def error(self, message: str, where: str) -> ConfigError:
        return ConfigError(message, f"{self.path}: {where}")

    def mapping(self, value, where: str, allowed: tuple[str, ...] | None = None,
                ignored: frozenset[str] = frozenset()) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(f"expected a mapping, got {type(value).__name__}", where)
        if allowed is not None:
            for key in value:
                if key in allowed:
                    continue
                if key in ignored:
                    self.warnings.append(f"{where}.{key}: ignored (no containers in a namespace lab)")
                    continue
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                raise self.error(f"unknown field `{key}`{hint}", f"{where}.{key}" if where else str(key))
        return value

    def name(self, value, where: str, what: str) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise self.error(f"{what} {value!r} must be letters, digits, `_`, `.` or `-`", where)
        return value

    def topology(self, data) -> Topology:
        top = self.mapping(data, "", TOP_FIELDS)
        if not top:
            raise self.error("the file is empty; expected `name:` and `topology:`", "top level")
        if "name" not in top:
            raise self.error("required field is missing", "name")
        name = self.name(top["name"], "name", "lab name")
        for key in ("prefix", "mgmt"):
            if key in top:
                self.warnings.append(f"{key}: ignored (namespaces are named <lab>-<node>; no management network)")
        topo = self.mapping(top.get("topology"), "topology", TOPOLOGY_FIELDS)
        defaults = self.settings(topo.get("defaults"), "topology.defaults")
        kinds_raw = self.mapping(topo.get("kinds"), "topology.kinds")
        kinds = {}
        for kind, settings in kinds_raw.items():
            if kind not in KINDS:
                raise self.error(f"kind `{kind}` is not supported here (supported: {', '.join(KINDS)})",
                                 f"topology.kinds.{kind}")
            kinds[kind] = self.settings(settings, f"topology.kinds.{kind}")
        nodes_raw = self.mapping(topo.get("nodes"), "topology.nodes")
        if not nodes_raw:
            raise self.error("a lab needs at least one node", "topology.nodes")
        nodes = {}
        for node_name, settings in nodes_raw.items():
            where = f"topology.nodes.{node_name}"
            self.name(node_name, where, "node name")
            nodes[node_name] = self.node(node_name, settings, defaults, kinds, where)
        links = self.links(topo.get("links"), nodes)
        return Topology(name=name, path=self.path, nodes=nodes, links=links, warnings=tuple(self.warnings))

    def settings(self, value, where: str) -> dict:
        """One layer of node settings (defaults, a kind, or a node), type-checked."""
        raw = self.mapping(value, where, NODE_FIELDS, IGNORED_NODE_FIELDS)
        out: dict = {}
        if "kind" in raw:
            if raw["kind"] not in KINDS:
                raise self.error(f"kind {raw['kind']!r} is not supported here (supported: {', '.join(KINDS)})",
                                 f"{where}.kind")
            out["kind"] = raw["kind"]
        if "image" in raw:
            if not isinstance(raw["image"], str):
                raise self.error(f"expected an image name, got {raw['image']!r}", f"{where}.image")
            out["image"] = raw["image"]
        if "binds" in raw:
            out["binds"] = self.binds(raw["binds"], f"{where}.binds")
        if "exec" in raw:
            out["exec"] = tuple(self.strings(raw["exec"], f"{where}.exec"))
        for key in ("env", "labels"):
            if key in raw:
                m = self.mapping(raw[key], f"{where}.{key}")
                for k, v in m.items():
                    if isinstance(v, dict | list) or v is None:
                        raise self.error(f"expected a string value, got {v!r}", f"{where}.{key}.{k}")
                out[key] = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in m.items()}
        return out

    def strings(self, value, where: str) -> list[str]:
        if not isinstance(value, list):
            raise self.error(f"expected a list, got {type(value).__name__}", where)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"expected a non-empty string, got {item!r}", f"{where}[{i}]")
        return value

    def binds(self, value, where: str) -> tuple[Bind, ...]:
        out = []
        for i, item in enumerate(self.strings(value, where)):
            parts = item.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise self.error(f"{item!r} is not `host_path:container_path[:ro|rw]`", f"{where}[{i}]")
            host, container = parts[0], parts[1]
            mode = parts[2] if len(parts) == 3 else "rw"
            if mode not in ("ro", "rw"):
                raise self.error(f"mode {mode!r} must be `ro` or `rw`", f"{where}[{i}]")
            if not container.startswith("/"):
                raise self.error(f"container path {container!r} must be absolute", f"{where}[{i}]")
            if not host.startswith((CLAB_DIR, CLAB_NODE_DIR)):
                host = os.path.expanduser(host)
                host = posixpath.normpath(host if os.path.isabs(host) else os.path.join(self.base, host))
            out.append(Bind(host=host, container=posixpath.normpath(container), mode=mode))
        return tuple(out)

    def node(self, name: str, value, defaults: dict, kinds: dict, where: str) -> Node:
        own = self.settings(value, where)
        kind = own.get("kind") or defaults.get("kind")
        if not kind:
            raise self.error("required field is missing (or set it in topology.defaults)", f"{where}.kind")
        layers = [defaults, kinds.get(kind, {}), own]
        if kind == "bridge":
            if any(k in layer for layer in layers[1:] for k in ("binds", "exec")):
                raise self.error("a bridge node takes no binds or exec (it is only an L2 segment)", where)
            layers[0] = {k: v for k, v in defaults.items() if k not in ("binds", "exec")}
        merged: dict = {"binds": {}, "env": {}, "labels": {}, "exec": (), "image": ""}
        for layer in layers:
            for bind in layer.get("binds", ()):  # a later layer's bind replaces one at the same container path
                merged["binds"][bind.container] = bind
            merged["env"].update(layer.get("env", {}))
            merged["labels"].update(layer.get("labels", {}))
            if "exec" in layer:
                merged["exec"] = layer["exec"]
            if "image" in layer:
                merged["image"] = layer["image"]
        return Node(name=name, kind=kind, image=merged["image"], binds=tuple(merged["binds"].values()),
                    exec=tuple(merged["exec"]), env=merged["env"], labels=merged["labels"])

    def endpoint(self, value, where: str, nodes: dict[str, Node]) -> Endpoint:
        if isinstance(value, dict):
            m = self.mapping(value, where, ("node", "interface", "mac"))
            node, ifname = m.get("node"), m.get("interface")
            if not isinstance(node, str) or not isinstance(ifname, str):
                raise self.error("expected `node:` and `interface:`", where)
        elif isinstance(value, str) and value.count(":") == 1:
            node, ifname = value.split(":")
        else:
            raise self.error(f"{value!r} is not `node:interface`", where)
        if node not in nodes:
            close = difflib.get_close_matches(node, list(nodes), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(f'node "{node}" is not defined{hint}', where)
        if not IFNAME_RE.match(ifname) or ifname == "lo":
            raise self.error(f"interface name {ifname!r} must be 1-15 letters, digits, `_`, `.` or `-`, not lo",
                             where)
        if nodes[node].kind == "bridge" and ifname == BRIDGE_DEVICE:
            raise self.error(f"{BRIDGE_DEVICE!r} is the bridge device itself; name the port otherwise", where)
        return Endpoint(node, ifname)

    def links(self, value, nodes: dict[str, Node]) -> tuple[Link, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(f"expected a list, got {type(value).__name__}", "topology.links")
        out: list[Link] = []
        used: dict[Endpoint, str] = {}
        for i, item in enumerate(value):
            where = f"topology.links[{i}]"
            link = self.mapping(item, where, ("endpoints", "type", "mtu", "vars", "labels"))
            if link.get("type", "veth") != "veth":
                raise self.error(f"link type {link['type']!r} is not supported here (only veth)", f"{where}.type")
            eps = link.get("endpoints")
            if not isinstance(eps, list) or len(eps) != 2:
                raise self.error("expected exactly two endpoints", f"{where}.endpoints")
            a = self.endpoint(eps[0], f"{where}.endpoints[0]", nodes)
            b = self.endpoint(eps[1], f"{where}.endpoints[1]", nodes)
            for j, ep in enumerate((a, b)):
                if ep in used:
                    raise self.error(f"{ep} is already used by {used[ep]}", f"{where}.endpoints[{j}]")
                used[ep] = where
            if a.node == b.node and nodes[a.node].kind == "bridge":
                raise self.error("a link cannot join a bridge to itself", f"{where}.endpoints")
            out.append(Link(a, b))
        return tuple(out)


# ---------------------------------------------------------------------------------------------- paths


def resolve_bind_host(bind: Bind, lab_dir: str, node_dir: str) -> str:
    """The host path of a bind, with containerlab's __clabDir__/__clabNodeDir__ mapped to lab dirs."""
    for magic, real in ((CLAB_NODE_DIR, node_dir), (CLAB_DIR, lab_dir)):
        if bind.host == magic or bind.host.startswith(magic + "/"):
            return posixpath.normpath(real + bind.host[len(magic):])
    return bind.host


def host_path(container_path: str, binds: dict[str, str]) -> str | None:
    """Map a container path to a host path through the node's binds (longest bound prefix wins)."""
    path = posixpath.normpath(container_path)
    for container in sorted(binds, key=len, reverse=True):
        if path == container:
            return binds[container]
        if path.startswith(container.rstrip("/") + "/"):
            return binds[container] + path[len(container.rstrip("/")):]
    return None


def rewrite_bound_paths(value, binds: dict[str, str]):
    """Copy of a parsed YAML value where every string that is a bound container path (or lies under
    one) is replaced by its host path; other strings are left alone."""
    if isinstance(value, dict):
        return {k: rewrite_bound_paths(v, binds) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_bound_paths(v, binds) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        mapped = host_path(value, binds)
        return mapped if mapped is not None else value
    return value
