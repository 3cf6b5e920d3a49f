"""Typed agent config: load a YAML file, validate every field, and name file + field in every error.

Each section is a dataclass. A field's `metadata["doc"]` is its one-line description (with units);
`load_config` checks types, rejects unknown keys, then runs each section's `validate()` for
cross-field rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import types
import typing
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import yaml

from bgpnet.errors import ConfigError


def doc(text: str, default=dataclasses.MISSING, default_factory=dataclasses.MISSING):
    """A dataclass field with a one-line description."""
    kw = {"metadata": {"doc": text}}
    if default is not dataclasses.MISSING:
        kw["default"] = default
    if default_factory is not dataclasses.MISSING:
        kw["default_factory"] = default_factory
    return field(**kw)


@dataclass(frozen=True)
class NodeConfig:
    name: str = doc("node name, unique in the cluster (default: $NODE_NAME, else the host name)", "")
    address: IPv4Interface | None = doc(
        "BGP address with prefix length, e.g. 10.0.0.1/24; the prefix defines the node's own L2 subnet", None
    )
    interface: str = doc("interface to take the BGP address from when `address` is not given", "")
    asn: int = doc("the node's AS number", 64512)
    router_id: IPv4Address | None = doc("BGP router id (default: the BGP address)", None)
    labels: dict[str, str] = doc("node labels, used by peer node selectors", default_factory=dict)

    def validate(self, where: str) -> None:
        if self.address is None and not self.interface:
            raise ConfigError("give `address` (e.g. 10.0.0.1/24) or `interface` to detect it from", where)
        if not 1 <= self.asn <= 4294967295:
            raise ConfigError(f"asn {self.asn} is out of range 1..4294967295", f"{where}.asn")


@dataclass(frozen=True)
class PeerConfig:
    address: IPv4Address | None = doc("the peer's address (or give `peer_selector`)", None)
    asn: int = doc("the peer's AS number (with `peer_selector`: default the selected nodes' own)", 0)
    name: str = doc("a name for logs and status (default: the address)", "")
    peer_selector: dict[str, str] = doc(
        "instead of an address: peer with every other node carrying all these labels (e.g. route "
        "reflectors: {route-reflector: 'true'}); those nodes peer back with the nodes `node_selector` picks",
        default_factory=dict)
    passive: bool = doc("wait for the peer to connect instead of connecting", False)
    hold_time: int | None = doc("hold time in seconds for this peer (default: bgp.hold_time); keepalives "
                                "go every third of it (ExaBGP's fixed ratio)", None)
    port: int = doc("the peer's TCP port", 179)
    password_file: str = doc("file holding the TCP MD5 password (never logged)", "")
    multihop: int = doc("eBGP multihop TTL; 0 means directly connected", 0)
    ttl_security: int = doc("GTSM (RFC 5082): the peer is at most this many hops away; we send with TTL "
                            "255 and drop packets with a TTL below 256 - hops; 0 disables", 0)
    route_reflector_client: bool = doc("when this node is a route reflector: the peer is one of its "
                                       "clients (nodes found by selector are classified automatically)", False)
    source_address: IPv4Address | None = doc("local address for the session (default: the node's)", None)
    node: str = doc("only the node of this name peers with it (default: every node)", "")
    node_selector: dict[str, str] = doc("only nodes carrying all these labels peer with it, e.g. {rack: r1}",
                                        default_factory=dict)
    max_prefixes: int = doc("most prefixes accepted from this peer; 0 means no limit", 0)
    max_prefixes_action: str = doc("over the limit: `reject` further prefixes, or `teardown` the session",
                                   "reject")
    max_prefixes_restart: int = doc("after a max-prefixes teardown, seconds the session stays down before it "
                                    "may come back", 60)
    accept_default: bool = doc("accept a default route (0.0.0.0/0) from this peer", False)

    def validate(self, where: str) -> None:
        if (self.address is None) == (not self.peer_selector):
            raise ConfigError("give either `address` or `peer_selector` (not both)", f"{where}.address")
        if self.address is not None and not self.asn:
            raise ConfigError("required field is missing", f"{where}.asn")
        if self.ttl_security and self.multihop:
            raise ConfigError("ttl_security and multihop exclude each other (GTSM fixes the outgoing TTL "
                              "at 255)", f"{where}.ttl_security")
        if not 0 <= self.ttl_security <= 254:
            raise ConfigError("ttl_security must be 0..254 hops", f"{where}.ttl_security")
        if self.peer_selector and (self.password_file or self.source_address):
            raise ConfigError("a `peer_selector` peer takes no password_file or source_address (give "
                              "those per address)", f"{where}.peer_selector")
        if self.max_prefixes < 0:
            raise ConfigError("max_prefixes must be >= 0", f"{where}.max_prefixes")
        if self.max_prefixes_action not in ("reject", "teardown"):
            raise ConfigError(f"max_prefixes_action must be `reject` or `teardown`, not {self.max_prefixes_action!r}",
                              f"{where}.max_prefixes_action")
        if self.max_prefixes_restart < 1:
            raise ConfigError("max_prefixes_restart must be >= 1 second", f"{where}.max_prefixes_restart")
        if self.multihop < 0 or self.multihop > 255:
            raise ConfigError("multihop must be 0..255", f"{where}.multihop")
        if self.asn and not 1 <= self.asn <= 4294967295:
            raise ConfigError(f"asn {self.asn} is out of range 1..4294967295", f"{where}.asn")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 1..65535", f"{where}.port")
        if self.hold_time is not None and self.hold_time != 0 and not 3 <= self.hold_time <= 65535:
            raise ConfigError("hold_time must be 0 or 3..65535 seconds", f"{where}.hold_time")

    @property
    def label(self) -> str:
        return self.name or str(self.address)

    def applies_to(self, node: NodeConfig) -> bool:
        """Whether `node` peers with this peer (node name and label selector scoping)."""
        return self.selects(node.name, node.labels)

    def selects(self, name: str, labels: dict[str, str]) -> bool:
        """Whether the node `name` with `labels` is in this peer's node scope (`node`, `node_selector`)."""
        if self.node and self.node != name:
            return False
        return all(labels.get(k) == v for k, v in self.node_selector.items())

    def selects_peer(self, labels: dict[str, str]) -> bool:
        """Whether a node with `labels` is one this (selector) peer entry points at."""
        return bool(self.peer_selector) and all(labels.get(k) == v for k, v in self.peer_selector.items())


@dataclass(frozen=True)
class BgpConfig:
    node_to_node_mesh: bool = doc("peer with every other node of the same AS found in the datastore", True)
    hold_time: int = doc("BGP hold time in seconds (keepalive is a third of it)", 90)
    graceful_restart: int = doc("graceful-restart time in seconds announced to peers; 0 disables", 120)
    port: int = doc("TCP port the speaker listens on", 179)
    import_allow: list[IPv4Network] = doc("prefixes accepted from peers besides pool blocks (and their "
                                          "more-specifics)", default_factory=list)
    route_reflector_cluster_id: IPv4Address | None = doc(
        "make this node a route reflector with this cluster id: paths from its clients (nodes without a "
        "cluster id, and peers marked route_reflector_client) are reflected to its other iBGP peers", None)

    def validate(self, where: str) -> None:
        if self.hold_time != 0 and not 3 <= self.hold_time <= 65535:
            raise ConfigError("hold_time must be 0 or 3..65535 seconds", f"{where}.hold_time")
        if not 0 <= self.graceful_restart <= 4095:
            raise ConfigError("graceful_restart must be 0..4095 seconds", f"{where}.graceful_restart")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range 1..65535", f"{where}.port")


@dataclass(frozen=True)
class RoutingConfig:
    resync_interval: float = doc("seconds between full reads of the kernel to repair drift", 30.0)
    eor_timeout: float = doc("seconds to wait for end-of-RIB from peers before the first route write", 10.0)

    def validate(self, where: str) -> None:
        if self.resync_interval <= 0:
            raise ConfigError("resync_interval must be > 0 seconds", f"{where}.resync_interval")
        if self.eor_timeout < 0:
            raise ConfigError("eor_timeout must be >= 0 seconds", f"{where}.eor_timeout")


@dataclass(frozen=True)
class PoolConfig:
    name: str = doc("pool name")
    cidr: IPv4Network = doc("the pool's addresses, e.g. 10.244.0.0/16")
    block_size: int = doc("prefix length of the blocks nodes claim", 26)
    encapsulation: str = doc("`none`, `ipip` or `vxlan` for traffic to this pool across L3 boundaries", "none")
    mode: str = doc("`Always`, `CrossSubnet` or `Never` (default: Never without encapsulation, else Always)", "")
    nat_outgoing: bool = doc("masquerade pod traffic from this pool to destinations outside every pool", False)
    node_selector: str = doc("nodes that take blocks from this pool, e.g. `rack=r1` (default: all)", "")

    def spec(self) -> dict:
        out = {"cidr": str(self.cidr), "block_size": self.block_size, "encapsulation": self.encapsulation,
               "nat_outgoing": self.nat_outgoing, "node_selector": self.node_selector}
        if self.mode:
            out["mode"] = self.mode
        return out

    def validate(self, where: str) -> None:
        from bgpnet.ipam.block import Pool

        try:
            Pool.from_spec(self.name, self.spec())
        except ConfigError as e:  # ValidationError is a ConfigError; re-anchor it on this file's field
            raise ConfigError(e.message, f"{where}.{e.where.rsplit('.', 1)[-1]}") from None


@dataclass(frozen=True)
class IpamConfig:
    gc_interval: float = doc("seconds between IPAM garbage collection passes on this node; 0 disables", 60.0)
    release_grace: float = doc("seconds a block stays empty (and a handle without its pod) before it is freed",
                               300.0)

    def validate(self, where: str) -> None:
        if self.gc_interval < 0 or self.release_grace < 0:
            raise ConfigError("gc_interval and release_grace must be >= 0 seconds", where)


@dataclass(frozen=True)
class DatastoreConfig:
    type: str = doc("`local` (a SQLite file) or `kubernetes`", "local")
    path: str = doc("the local store's SQLite file", "/var/lib/bgpnet/store.db")

    def validate(self, where: str) -> None:
        if self.type not in ("local", "kubernetes"):
            raise ConfigError(f"type must be `local` or `kubernetes`, not {self.type!r}", f"{where}.type")


@dataclass(frozen=True)
class HttpConfig:
    listen: str = doc("host:port for /healthz and /metrics (Prometheus); empty disables", "127.0.0.1:9645")

    def validate(self, where: str) -> None:
        if not self.listen:
            return
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"listen must be host:port, not {self.listen!r}", f"{where}.listen")

    def address(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host, int(port)


@dataclass(frozen=True)
class AgentConfig:
    node: NodeConfig = doc("this node", default_factory=NodeConfig)
    bgp: BgpConfig = doc("global BGP settings", default_factory=BgpConfig)
    peers: list[PeerConfig] = doc("explicit BGP peers (routers, route reflectors)", default_factory=list)
    pod_cidrs: list[IPv4Network] = doc("the node's pod CIDRs to announce (static; IPAM adds its blocks)",
                                       default_factory=list)
    routing: RoutingConfig = doc("kernel route programming", default_factory=RoutingConfig)
    ipam: IpamConfig = doc("pod address management on this node", default_factory=IpamConfig)
    pools: list[PoolConfig] = doc("IP pools created in the datastore at start if absent (an existing pool "
                                  "of the same name is left as it is)", default_factory=list)
    datastore: DatastoreConfig = doc("where cluster state lives", default_factory=DatastoreConfig)
    http: HttpConfig = doc("health and metrics endpoint", default_factory=HttpConfig)
    run_dir: str = doc("directory for the speaker's socket, generated config and pid files", "/run/bgpnet")
    source: str = doc("the file this config was read from (set by the loader)", "")

    def validate(self, where: str) -> None:
        seen: dict[IPv4Address, int] = {}
        for i, peer in enumerate(self.peers):
            if peer.address is None:
                continue
            if peer.address in seen:
                raise ConfigError(f"peer {peer.address} is listed twice (also at peers[{seen[peer.address]}])",
                                  f"{where}peers[{i}].address")
            seen[peer.address] = i
            if peer.passive and peer.source_address is not None and (
                    self.node.address is None or peer.source_address != self.node.address.ip):
                raise ConfigError("a passive peer must connect to the node's own address (ExaBGP listens only "
                                  "there): drop `source_address` or `passive`", f"{where}peers[{i}].source_address")
        for i, net in enumerate(self.pod_cidrs):
            for j in range(i):
                if net.overlaps(self.pod_cidrs[j]):
                    raise ConfigError(f"{net} overlaps pod_cidrs[{j}] {self.pod_cidrs[j]}", f"{where}pod_cidrs[{i}]")


# ---------------------------------------------------------------------------------------------- loader

_SCALARS = {
    IPv4Address: "an IPv4 address",
    IPv4Network: "an IPv4 network (e.g. 10.244.0.0/16)",
    IPv4Interface: "an IPv4 address with prefix length (e.g. 10.0.0.1/24)",
}


def _convert(tp, value, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {type(value).__name__}", where)
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {type(value).__name__}", where)
        _, vt = typing.get_args(tp)
        return {str(k): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp in _SCALARS:
        if not isinstance(value, str):
            raise ConfigError(f"expected {_SCALARS[tp]}, got {value!r}", where)
        try:
            return tp(value) if tp is not IPv4Network else IPv4Network(value, strict=True)
        except ValueError as e:
            raise ConfigError(f"{value!r} is not {_SCALARS[tp]}: {e}", where) from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", where)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", where)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}", where)
        return float(value)
    if tp is str:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ConfigError(f"expected a string, got {value!r}", where)
        return str(value)
    raise TypeError(f"config type {tp} not handled")  # a bug in bgpnet, not in the file


def build(cls, data, where: str = ""):
    """Build dataclass `cls` from a mapping, checking every field; `where` prefixes error locations."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", where or "top level")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ConfigError(f"unknown field `{key}`{hint}", f"{prefix}{key}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError("required field is missing", f"{prefix}{name}")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(where if cls is not AgentConfig else prefix)
    return obj


def detect_address(interface: str) -> IPv4Interface:
    """The first IPv4 address (with prefix length) on `interface`."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=interface)
        if not idx:
            raise ConfigError(f"interface {interface!r} does not exist", "node.interface")
        for msg in ipr.get_addr(index=idx[0], family=socket.AF_INET):
            return IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
    raise ConfigError(f"interface {interface!r} has no IPv4 address", "node.interface")


def resolve(cfg: AgentConfig) -> AgentConfig:
    """Fill in what is detected at run time: node name, BGP address, router id."""
    node = cfg.node
    name = node.name or os.environ.get("NODE_NAME") or socket.gethostname()
    address = node.address or detect_address(node.interface)
    router_id = node.router_id or address.ip
    node = dataclasses.replace(node, name=name, address=address, router_id=router_id)
    return dataclasses.replace(cfg, node=node)


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a config file; raise ConfigError naming `path` and the field on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config: {e.strerror}", str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', e)}", loc) from None
    try:
        cfg = build(AgentConfig, data)
    except ConfigError as e:
        raise ConfigError(e.message, f"{path}: {e.where}" if e.where else str(path)) from None
    return dataclasses.replace(cfg, source=str(path))


def describe_fields(cls=AgentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(field path, default, doc) for every field: used to document the config file format."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out.extend(describe_fields(tp, f"{name}."))
            continue
        default = "" if f.default is dataclasses.MISSING else repr(f.default)
        out.append((name, default, f.metadata.get("doc", "")))
    return out
