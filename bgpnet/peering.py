"""What a node peers with, announces and imports, and the words status uses for a session: pure functions
of the config and datastore objects (only `read_passwords` reads files and `own_prefixes` the datastore).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from bgpnet.config import AgentConfig, PeerConfig, build
from bgpnet.datastore.base import Datastore, Object
from bgpnet.errors import ConfigError
from bgpnet.filters import ImportRules, build_rules

log = logging.getLogger(__name__)

# Cluster-wide BGP settings a `BGPConfiguration` named "default" may set over the config file's values
# (like Calico's default BGPConfiguration); the rest of `bgp` is per node or needs a restart.
CLUSTER_BGP_FIELDS = ("node_to_node_mesh", "hold_time", "graceful_restart", "import_allow")


def node_record(cfg: AgentConfig, pod_mtu: int | None = None) -> dict:
    """What this node publishes about itself in the datastore: read by the other nodes for the mesh, and
    by the CNI plugin for the pods' MTU (the tunnel MTU when pools encapsulate)."""
    n = cfg.node
    rec = {"address": str(n.address), "asn": n.asn, "router_id": str(n.router_id), "labels": dict(n.labels),
           "pod_cidrs": [str(c) for c in cfg.pod_cidrs]}
    if pod_mtu:
        rec["pod_mtu"] = pod_mtu
    if cfg.bgp.route_reflector_cluster_id is not None:
        rec["route_reflector_cluster_id"] = str(cfg.bgp.route_reflector_cluster_id)
    return rec


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """What peering needs from another node's datastore record."""

    name: str
    address: IPv4Address
    asn: int
    router_id: IPv4Address
    labels: dict
    cluster_id: IPv4Address | None = None


def node_infos(nodes: Iterable[Object], me: str) -> list[NodeInfo]:
    """Usable records of the other nodes; a broken one is logged and left out."""
    out = []
    for obj in nodes:
        if obj.name == me:
            continue
        try:
            address = IPv4Interface(obj.spec["address"]).ip
            cluster = obj.spec.get("route_reflector_cluster_id")
            out.append(NodeInfo(obj.name, address, int(obj.spec["asn"]),
                                IPv4Address(obj.spec.get("router_id") or address),
                                {str(k): str(v) for k, v in (obj.spec.get("labels") or {}).items()},
                                IPv4Address(cluster) if cluster else None))
        except (KeyError, TypeError, ValueError) as e:
            log.warning("node %s: unusable datastore record, not peering with it: %s", obj.name, e)
    return out


def effective_config(file_cfg: AgentConfig, settings: Object | None) -> AgentConfig:
    """The config file's values with the cluster's `BGPConfiguration` "default" laid over them.

    An invalid object is logged with the field and ignored as a whole: the file's values stay.
    """
    if settings is None:
        return file_cfg
    from bgpnet.config import BgpConfig

    given = {k: v for k, v in settings.spec.items() if k in CLUSTER_BGP_FIELDS}
    try:
        built = build(BgpConfig, given, "spec")
    except ConfigError as e:
        log.error("ignoring BGPConfiguration %s: %s: %s", settings.name, e.where, e.message)
        return file_cfg
    bgp = dataclasses.replace(file_cfg.bgp, **{k: getattr(built, k) for k in given})
    return dataclasses.replace(file_cfg, bgp=bgp)


def all_peers(cfg: AgentConfig, peer_objects: Iterable[Object] = ()) -> list[PeerConfig]:
    """Explicit peers that apply to this node: from the config file, then BGPPeer objects in the datastore.

    A datastore peer with the same address as a config-file peer is ignored (the file wins); an invalid
    one is logged with its name and skipped, the others still apply.
    """
    def wanted(p: PeerConfig) -> bool:
        # a selector peer also applies to the nodes it selects: they peer back (route reflectors)
        return p.applies_to(cfg.node) or p.selects_peer(cfg.node.labels)

    peers = [p for p in cfg.peers if wanted(p)]
    seen = {p.address for p in cfg.peers if p.address is not None}
    for obj in peer_objects:
        try:
            peer = build(PeerConfig, obj.spec)
        except ConfigError as e:
            log.error("ignoring invalid datastore peer: BGPPeer %s: %s: %s", obj.name, e.where, e.message)
            continue
        if peer.address is not None and peer.address in seen:
            continue
        if wanted(peer):
            peers.append(dataclasses.replace(peer, name=peer.name or obj.name))
            if peer.address is not None:
                seen.add(peer.address)
    return peers


def import_rules(cfg: AgentConfig, own: Iterable[IPv4Network], nodes: Iterable[Object],
                 pools: Iterable[Object], blocks: Iterable[Object]) -> ImportRules:
    """What peers may announce to us, from the datastore: pools, blocks, other nodes' pod CIDRs."""
    def nets(values):
        out = []
        for v in values:
            try:
                out.append(IPv4Network(v))
            except (TypeError, ValueError):
                continue
        return out

    pool_nets = nets(o.spec.get("cidr") for o in pools if not o.spec.get("disabled"))
    block_nets = nets(o.spec.get("cidr") for o in blocks)
    for n in nodes:
        block_nets += nets(n.spec.get("pod_cidrs") or [])
        block_nets += nets([n.spec["pod_cidr"]] if n.spec.get("pod_cidr") else [])
    return build_rules(pool_nets, block_nets, own, cfg.bgp.import_allow)


def read_passwords(cfg: AgentConfig, peers: Iterable[PeerConfig] | None = None) -> dict[IPv4Address, str]:
    """TCP MD5 passwords from their files (default: of the config file's peers that apply to this node);
    an unreadable file is a config error naming the peer."""
    out = {}
    if peers is None:
        peers = [p for p in cfg.peers if p.applies_to(cfg.node)]
    for peer in peers:
        if not peer.password_file or peer.address is None:
            continue
        try:
            out[peer.address] = Path(peer.password_file).read_text().strip()
        except OSError as e:
            index = next((i for i, p in enumerate(cfg.peers) if p.address == peer.address), None)
            where = f"peers[{index}].password_file" if index is not None else f"BGPPeer {peer.label} password_file"
            raise ConfigError(f"cannot read password file {peer.password_file}: {e.strerror}",
                              f"{cfg.source}: {where}") from None
    return out


def desired_neighbors(cfg: AgentConfig, nodes: Iterable[Object], passwords: dict | None = None,
                      peers: Iterable[PeerConfig] | None = None,
                      sources: dict[IPv4Address, PeerConfig] | None = None) -> list:
    """BGP neighbours: every other node of the same AS (full mesh, if on), the nodes picked by selector
    peers, then the explicit peers (default: the config file's peers that apply to this node); a later
    source wins for the same address. `sources` (if given) is filled with the peer entry behind each
    neighbour that has one (its import limits apply).

    Between nodes both sides would connect and collide; the node with the lower router id connects and
    the other waits (passive). On a route reflector (bgp.route_reflector_cluster_id), iBGP nodes without
    a cluster id of their own are its clients.
    """
    from bgpnet.speaker.render import Neighbor

    me = cfg.node
    passwords = passwords or {}
    cluster_id = cfg.bgp.route_reflector_cluster_id
    peers = all_peers(cfg) if peers is None else list(peers)
    infos = node_infos(nodes, me.name)
    out: dict[IPv4Address, Neighbor] = {}
    sources = {} if sources is None else sources

    def node_neighbor(info: NodeInfo, asn: int, peer: PeerConfig | None) -> Neighbor:
        client = cluster_id is not None and asn == me.asn and info.cluster_id is None
        hold = cfg.bgp.hold_time if peer is None or peer.hold_time is None else peer.hold_time
        return Neighbor(
            address=info.address, peer_asn=asn, local_address=me.address.ip, local_asn=me.asn,
            router_id=me.router_id, name=info.name, passive=int(me.router_id) > int(info.router_id),
            hold_time=hold, graceful_restart=cfg.bgp.graceful_restart,
            ttl_security=peer.ttl_security if peer else 0, port=peer.port if peer else cfg.bgp.port,
            route_reflector_client=client, cluster_id=cluster_id if client else None)

    if cfg.bgp.node_to_node_mesh:
        for info in infos:
            if info.asn == me.asn and info.address != me.address.ip:
                out[info.address] = node_neighbor(info, info.asn, None)
    for peer in peers:
        if peer.address is not None:
            continue
        for info in infos:
            if info.address == me.address.ip:
                continue
            forward = peer.applies_to(me) and peer.selects_peer(info.labels)
            reverse = peer.selects_peer(me.labels) and peer.selects(info.name, info.labels)
            if forward or reverse:
                out[info.address] = node_neighbor(info, peer.asn or info.asn, peer)
                sources[info.address] = peer
    for peer in peers:
        if peer.address is None or peer.address == me.address.ip:
            continue
        client = cluster_id is not None and peer.route_reflector_client and peer.asn == me.asn
        out[peer.address] = Neighbor(
            address=peer.address, peer_asn=peer.asn, local_address=peer.source_address or me.address.ip,
            local_asn=me.asn, router_id=me.router_id, name=peer.label, passive=peer.passive,
            hold_time=cfg.bgp.hold_time if peer.hold_time is None else peer.hold_time, port=peer.port,
            md5_password=passwords.get(peer.address), multihop=peer.multihop, ttl_security=peer.ttl_security,
            graceful_restart=cfg.bgp.graceful_restart, route_reflector_client=client,
            cluster_id=cluster_id if client else None)
        sources[peer.address] = peer
    for a in set(sources) - set(out):
        del sources[a]
    return [out[a] for a in sorted(out)]


def export_attributes(prefixes: Iterable[IPv4Network], pools: Iterable[Object]) -> dict[IPv4Network, dict]:
    """Attributes of each exported prefix: the communities of the most specific IP pool holding it
    (IPPool spec `communities: ['65000:100']`, `large_communities: ['65000:1:2']`); an IPPool whose
    communities are malformed is logged and exports without them."""
    from bgpnet.speaker.render import check_route_attributes

    pool_attrs: list[tuple[IPv4Network, dict]] = []
    for obj in pools:
        if obj.spec.get("disabled"):
            continue
        try:
            cidr = IPv4Network(obj.spec.get("cidr"))
        except (TypeError, ValueError):
            continue
        attrs = {k: list(obj.spec[k]) if isinstance(obj.spec[k], list) else obj.spec[k]
                 for k in ("communities", "large_communities") if obj.spec.get(k)}
        try:
            check_route_attributes(attrs, f"IPPool {obj.name}")
        except ConfigError as e:
            log.error("%s: %s; its blocks are exported without communities", e.where, e.message)
            attrs = {}
        pool_attrs.append((cidr, attrs))
    out = {}
    for prefix in prefixes:
        inside = [(cidr.prefixlen, attrs) for cidr, attrs in pool_attrs if prefix.subnet_of(cidr)]
        out[prefix] = dict(max(inside, key=lambda t: t[0])[1]) if inside else {}
    return out


def reflected_routes(best: dict, neighbors: Iterable, cluster_id: IPv4Address | None,
                     router_ids: dict[IPv4Address, IPv4Address], own: Iterable[IPv4Network] = ()) -> dict:
    """What a route reflector re-announces to each iBGP neighbour (RFC 4456), from the best paths.

    A path from a client goes to every other iBGP neighbour; one from a non-client iBGP peer goes to the
    clients only; eBGP paths are not passed on (a node is no transit router). Next hop, AS path and the
    other attributes stay as received; ORIGINATOR_ID is the originator's router id (kept if already set)
    and our cluster id is prepended to CLUSTER_LIST. Of an ECMP set the first path is reflected.
    Returns {neighbour address: {prefix: attributes}}.
    """
    if cluster_id is None:
        return {}
    ibgp = [n for n in neighbors if n.ibgp]
    clients = {n.address for n in ibgp if n.route_reflector_client}
    own = set(own)
    out: dict[IPv4Address, dict] = {}
    for prefix, paths in best.items():
        if prefix in own:
            continue
        path = next((p for p in paths if p.ibgp), None)
        if path is None:
            continue
        originator = path.originator_id or router_ids.get(path.peer, path.peer)
        attrs = {"next_hop": str(path.next_hop), "origin": path.origin, "local_pref": path.local_pref,
                 "originator_id": str(originator),
                 "cluster_list": [str(cluster_id)] + [str(c) for c in path.cluster_list]}
        if path.as_path:
            attrs["as_path"] = list(path.as_path)
        if path.med:
            attrs["med"] = path.med
        if path.communities:
            attrs["communities"] = list(path.communities)
        if path.large_communities:
            attrs["large_communities"] = list(path.large_communities)
        from_client = path.peer in clients
        for n in ibgp:
            if n.address == path.peer or router_ids.get(n.address) == originator:
                continue
            if from_client or n.address in clients:
                out.setdefault(n.address, {})[prefix] = attrs
    return out


MD5_COUNTERS = ("TCPMD5Failure", "TCPMD5NotFound", "TCPMD5Unexpected")


def md5_failures(netstat: str) -> int:
    """Segments this network namespace's kernel dropped for a bad/missing/unexpected TCP MD5 signature,
    from /proc/net/netstat text (TcpExt header line followed by its values line)."""
    lines = netstat.splitlines()
    total = 0
    for head, values in zip(lines, lines[1:], strict=False):
        if head.startswith("TcpExt:") and values.startswith("TcpExt:"):
            counters = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            total += sum(int(counters.get(k, 0)) for k in MD5_COUNTERS)
    return total


def session_hint(state: str, down_for: float, md5: bool, ever_up: bool, hold_time: int,
                 md5_drops: int = 0) -> str:
    """Why a session is not up, in words, when BGP itself said nothing (ExaBGP reports no connect errors)."""
    if state == "established" or down_for < max(hold_time, 10):
        return ""
    if md5:
        text = (f"no session for {int(down_for)}s: TCP MD5 is configured for this peer: check that both sides "
                "use the same password")
        if md5_drops:
            text += f" (this node's kernel dropped {md5_drops} segments with a wrong or missing MD5 signature)"
        return text
    if md5_drops:
        return (f"no session for {int(down_for)}s; this node's kernel dropped {md5_drops} segments with an "
                "unexpected TCP MD5 signature: the peer uses a password we do not")
    what = "was up before" if ever_up else "never came up"
    return (f"no session for {int(down_for)}s ({what}): the peer does not answer or refuses the connection; "
            "check its address, AS numbers and that it is configured to peer with this node")


def own_prefixes(cfg: AgentConfig, store: Datastore | None) -> list[IPv4Network]:
    """The prefixes this node announces: its static pod CIDRs plus the IPAM blocks affine to it."""
    prefixes = set(cfg.pod_cidrs)
    if store is not None:
        from bgpnet.ipam import node_prefixes

        prefixes.update(node_prefixes(store, cfg.node.name))
    return sorted(prefixes)
