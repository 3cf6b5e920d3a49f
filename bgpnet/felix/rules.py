"""The pure policy renderer: (pods, namespaces, policies, node) -> iptables chains and ipsets as data.

`explain` answers "may A reach B on port P" by walking the very chains `render` produces (with the
ipsets' members), so what it says is what the kernel does.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgpnet.cni.plugin import HOST_IF_PREFIX as POD_INTERFACE_PREFIX
from bgpnet.errors import BgpnetError, ValidationError
from bgpnet.felix.policy import (
    EGRESS,
    INGRESS,
    CachedHash,
    Labels,
    Peer,
    Pod,
    Policy,
    PortMatch,
    Selector,
    parse_namespace_labels,
    parse_pod,
    parse_policy,
)

log = logging.getLogger(__name__)

# Host-side pod interfaces start with POD_INTERFACE_PREFIX (imported from the CNI plugin, which names
# them prefix + a hash of the container id). Traffic from an interface with this prefix that no local
# Pod object claims is dropped.

# Every chain and ipset we own starts with this; the driver never touches anything else.
PREFIX = "BGPNET-"
HASH_COMMENT = "bgpnet:"
# A policy chain sets this mark bit when one of its rules allows the packet; the pod chain returns on it.
ACCEPT_MARK = 0x20000

FORWARD_CHAIN = PREFIX + "FORWARD"
INPUT_CHAIN = PREFIX + "INPUT"
FROM_POD_CHAIN = PREFIX + "FROM-POD"       # dispatch on the incoming pod interface (egress policy)
TO_POD_CHAIN = PREFIX + "TO-POD"           # dispatch on the outgoing pod interface (ingress policy)
POD_TO_HOST_CHAIN = PREFIX + "POD-TO-HOST"

SET_TYPES = {"S": "hash:ip", "N": "hash:net", "P": "hash:ip,port"}
POD_KIND, NAMESPACE_KIND, POLICY_KIND = "Pod", "Namespace", "NetworkPolicy"
# Above this many local pods, dispatch goes through one sub-chain per first interface-name character
# after the prefix (CNI names are hashes, so ~1/16 each): a pod change rewrites a small chain.
DISPATCH_SPLIT = 64
UPLINK = "<uplink>"  # explain's stand-in for a node's non-pod interface


# ---------------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Match(CachedHash):
    in_iface: str = ""        # "bn+" matches the prefix, like iptables
    out_iface: str = ""
    src: str = ""             # CIDR
    protocol: str = ""        # tcp / udp / sctp
    dports: tuple[tuple[int, int], ...] = ()
    src_set: str = ""         # hash:ip / hash:net set matched on the source address
    dst_set: str = ""
    dst_port_set: str = ""    # hash:ip,port set matched on (destination address, protocol:port)
    ctstate: tuple[str, ...] = ()
    mark: int = 0             # packet has these mark bits set

    def args(self) -> list[str]:
        a: list[str] = []
        if self.in_iface:
            a += ["-i", self.in_iface]
        if self.out_iface:
            a += ["-o", self.out_iface]
        if self.src:
            a += ["-s", self.src]
        if self.protocol:
            a += ["-p", self.protocol]
        if self.dports:
            spec = [f"{lo}" if lo == hi else f"{lo}:{hi}" for lo, hi in self.dports]
            a += ["--dport", spec[0]] if len(spec) == 1 else ["-m", "multiport", "--dports", ",".join(spec)]
        if self.src_set:
            a += ["-m", "set", "--match-set", self.src_set, "src"]
        if self.dst_set:
            a += ["-m", "set", "--match-set", self.dst_set, "dst"]
        if self.dst_port_set:
            a += ["-m", "set", "--match-set", self.dst_port_set, "dst,dst"]
        if self.ctstate:
            a += ["-m", "conntrack", "--ctstate", ",".join(self.ctstate)]
        if self.mark:
            a += ["-m", "mark", "--mark", f"{self.mark:#x}/{self.mark:#x}"]
        return a


@dataclass(frozen=True)
class Rule(CachedHash):
    match: Match
    action: str               # ACCEPT DROP REJECT RETURN JUMP GOTO MARK
    target: str = ""          # chain (JUMP/GOTO), reject-with (REJECT), "set"/"clear" (MARK)
    comment: str = ""

    def action_args(self) -> list[str]:
        if self.action == "JUMP":
            return ["-j", self.target]
        if self.action == "GOTO":
            return ["-g", self.target]
        if self.action == "REJECT":
            return ["-j", "REJECT", "--reject-with", self.target]
        if self.action == "MARK":
            value = ACCEPT_MARK if self.target == "set" else 0
            return ["-j", "MARK", "--set-xmark", f"{value:#x}/{ACCEPT_MARK:#x}"]
        return ["-j", self.action]

    @functools.cached_property
    def _parts(self) -> tuple[str, str]:
        # (matches, comment + action): built once per rule, shared by hashing and by every write
        match = " ".join(self.match.args())
        tail = ""
        if self.comment:
            tail = '-m comment --comment "' + self.comment.replace('"', "'")[:250] + '" '
        return match, tail + " ".join(self.action_args())

    @property
    def text(self) -> str:
        return " ".join(p for p in self._parts if p)

    def render(self, chain: str, rule_hash: str, verb: str = "-A") -> str:
        """One iptables-restore line, carrying our hash comment (and the human one)."""
        match, tail = self._parts
        head = f"{verb} {chain} {match} " if match else f"{verb} {chain} "
        return f'{head}-m comment --comment "{HASH_COMMENT}{rule_hash}" {tail}'


def _rule_hashes(chain: str, rules: Iterable[Rule]) -> tuple[str, ...]:
    # Each hash covers the previous hash and the rule, so equal hash lists mean equal chains
    # (Calico's scheme): the driver compares hashes only, never iptables' own spelling. The chain
    # name stays out so that the many pod chains with the same rules share one computation.
    del chain
    out, prev = [], ""
    for r in rules:
        digest = hashlib.sha256(f"{prev}\0{r.text}".encode()).digest()
        prev = base64.urlsafe_b64encode(digest).decode()[:16]
        out.append(prev)
    return tuple(out)


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...] = ()
    hashes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        if len(self.hashes) != len(self.rules):
            object.__setattr__(self, "hashes", _rule_hashes(self.name, self.rules))

    def lines(self) -> list[str]:
        return [r.render(self.name, h) for r, h in zip(self.rules, self.hashes, strict=True)]


@dataclass(frozen=True)
class Hook:
    """Our one jump rule at the top of a built-in chain (FORWARD, INPUT)."""

    chain: str
    rule: Rule

    @property
    def hash(self) -> str:
        return _rule_hashes(self.chain, [self.rule])[0]

    def line(self, verb: str = "-A") -> str:
        return self.rule.render(self.chain, self.hash, verb)


@dataclass(frozen=True)
class IPSet:
    name: str
    type: str                    # hash:ip, hash:net, hash:ip,port
    members: frozenset[str]      # as `ipset save` spells them ("10.0.0.0/8 nomatch" for except)
    description: str = field(default="", compare=False)


@dataclass(frozen=True)
class Endpoint:
    """A local pod as the renderer saw it: where its chains are and which policies select it."""

    pod: str
    interface: str
    ip: str | None
    ingress_chain: str
    egress_chain: str
    ingress_policies: tuple[str, ...]
    egress_policies: tuple[str, ...]


@dataclass(frozen=True)
class Ruleset:
    chains: tuple[Chain, ...]
    ipsets: tuple[IPSet, ...]
    hooks: tuple[Hook, ...]
    endpoints: tuple[Endpoint, ...] = ()
    errors: tuple[str, ...] = ()          # malformed objects that were skipped

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)

    def ipset(self, name: str) -> IPSet | None:
        return next((s for s in self.ipsets if s.name == name), None)

    def rule_count(self) -> int:
        return sum(len(c.rules) for c in self.chains) + len(self.hooks)


# ---------------------------------------------------------------------------------------------- cluster model

def _items(objs: Any) -> list[tuple[str, dict, str]]:
    """Accept {name: spec} or datastore Objects; (name, spec, revision or "")."""
    if objs is None:
        return []
    if isinstance(objs, Mapping):
        return [(n, spec, "") for n, spec in sorted(objs.items())]
    return sorted(((o.name, o.spec, getattr(o, "revision", "")) for o in objs), key=lambda t: t[0])


class RenderCache:
    """What one render can hand the next: parsed objects (by revision), selector results, chains.

    The renderer still recomputes the whole desired state on every call; the cache only makes the
    unchanged parts cheap. Entries not used by the latest render are dropped.
    """

    def __init__(self):
        self.parsed: dict[tuple, Any] = {}
        self.match: dict[Selector, dict[str, bool]] = {}
        self.chains: dict[tuple, Any] = {}
        self._parsed_next: dict[tuple, Any] = {}
        self._chains_next: dict[tuple, Any] = {}

    def parse(self, kind: str, name: str, revision: str, spec: dict, fn):
        if not revision:
            return fn()
        key = (kind, name, revision)
        try:
            value = self.parsed[key]
        except KeyError:
            try:
                value = fn()
            except ValidationError as e:
                value = e
        self._parsed_next[key] = value
        if isinstance(value, ValidationError):
            raise value
        return value

    def chain(self, key: tuple, fn):
        value = self._chains_next.get(key)
        if value is None:
            value = self.chains.get(key)
            if value is None:
                value = fn()
            self._chains_next[key] = value
        return value

    def finish(self) -> None:
        self.parsed, self._parsed_next = self._parsed_next, {}
        self.chains, self._chains_next = self._chains_next, {}
        if len(self.match) > 20_000:
            self.match.clear()


class Cluster:
    """Parsed, validated inputs with the lookups the renderer needs (selector results memoized)."""

    def __init__(self, pods: Any, namespaces: Any, policies: Any, cache: RenderCache | None = None):
        self.cache = cache or RenderCache()
        parse = self.cache.parse
        self.errors: list[str] = []
        self.namespaces: dict[str, dict[str, str]] = {}
        for name, spec, rev in _items(namespaces):
            try:
                self.namespaces[name] = parse(NAMESPACE_KIND, name, rev, spec,
                                              lambda n=name, sp=spec: parse_namespace_labels(n, sp))
            except ValidationError as e:
                self.errors.append(f"Namespace {name} skipped: {e}")
                self.namespaces[name] = parse_namespace_labels(name, {})
        self.pods: list[Pod] = []
        for name, spec, rev in _items(pods):
            try:
                self.pods.append(parse(POD_KIND, name, rev, spec, lambda n=name, sp=spec: parse_pod(n, sp)))
            except ValidationError as e:
                self.errors.append(f"{e} (pod skipped)")
        self.by_key = {p.key: p for p in self.pods}
        self.pods_by_ns: dict[str, list[Pod]] = defaultdict(list)
        for p in self.pods:
            self.pods_by_ns[p.namespace].append(p)
            if p.namespace not in self.namespaces:
                self.namespaces[p.namespace] = parse_namespace_labels(p.namespace, {})
        self.ns_label_keys = {ns: Labels(sorted(labels.items())) for ns, labels in self.namespaces.items()}
        self.policies: list[Policy] = []
        for name, spec, rev in _items(policies):
            try:
                pol = parse(POLICY_KIND, name, rev, spec,
                            lambda n=name, sp=spec: parse_policy(sp, f"NetworkPolicy {n}"))
            except ValidationError as e:
                self.errors.append(f"{e} (policy skipped; the others still apply)")
                continue
            if pol.key != name:
                self.errors.append(f"NetworkPolicy {name}: metadata says {pol.key} (policy skipped)")
                continue
            self.policies.append(pol)
        self._memo = self.cache.match

    def _memo_of(self, sel: Selector) -> dict[str, bool]:
        memo = self._memo.get(sel)
        if memo is None:
            memo = self._memo[sel] = {}
        return memo

    def _matches(self, sel: Selector, labels: Labels) -> bool:
        memo = self._memo_of(sel)
        r = memo.get(labels.text)
        if r is None:
            r = memo[labels.text] = sel.matches(dict(labels))
        return r

    def _filter(self, sel: Selector, pods) -> list[Pod]:
        memo = self._memo_of(sel)
        out = []
        for p in pods:
            r = memo.get(p.labels.text)
            if r is None:
                r = memo[p.labels.text] = sel.matches(dict(p.labels))
            if r:
                out.append(p)
        return out

    def selected(self, pol: Policy) -> list[Pod]:
        return self._filter(pol.pod_selector, self.pods_by_ns.get(pol.namespace, ()))

    def peer_pods(self, peer: Peer) -> list[Pod]:
        if peer.is_ip_block:
            return [p for p in self.pods if p.ip and ip_in_block(p.ip, peer)]
        if peer.namespace_selector is None:
            namespaces = [peer.namespace]
        else:
            namespaces = [ns for ns, labels in sorted(self.ns_label_keys.items())
                          if self._matches(peer.namespace_selector, labels)]
        out: list[Pod] = []
        for ns in namespaces:
            pods = self.pods_by_ns.get(ns, ())
            out += pods if peer.pod_selector is None else self._filter(peer.pod_selector, pods)
        return out


def ip_in_block(ip: str, peer: Peer) -> bool:
    addr = ipaddress.ip_address(ip)
    net = ipaddress.ip_network(peer.cidr)
    if addr.version != net.version or addr not in net:
        return False
    return not any(addr in ipaddress.ip_network(e) for e in peer.excepts)


# ---------------------------------------------------------------------------------------------- render

def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pod_chain_names(iface: str) -> tuple[str, str]:
    """(ingress chain, egress chain) of the pod behind host interface `iface`."""
    return f"{PREFIX}TW-{iface}", f"{PREFIX}FW-{iface}"


@functools.lru_cache(maxsize=65536)
def policy_chain_name(policy_key: str, direction: str) -> str:
    return f"{PREFIX}P{'I' if direction == INGRESS else 'O'}-{_short_hash(policy_key)}"


class _Renderer:
    def __init__(self, cluster: Cluster, node: str, interface_prefix: str, deny: str):
        if deny not in ("reject", "drop"):
            raise ValueError(f"deny must be reject or drop, not {deny!r}")
        self.c = cluster
        self.cache = cluster.cache
        self.node = node
        self.prefix = interface_prefix
        self.deny = deny
        # set name -> (kind, spec, description); members are computed once per render in _sets()
        self.set_specs: dict[str, tuple[str, tuple, str]] = {}
        self.errors = list(cluster.errors)

    # -- ipsets: rules name a set by what it selects; its members come from the current pods
    def _want_set(self, kind: str, spec: tuple, description: str) -> str:
        name = f"{PREFIX}{kind}-{_short_hash(repr(spec))}"
        self.set_specs.setdefault(name, (kind, spec, description))
        return name

    def peer_set(self, peer: Peer) -> str:
        if peer.is_ip_block:
            return self._want_set("N", ("N", peer.cidr, tuple(sorted(peer.excepts))), str(peer))
        return self._want_set("S", ("S", peer), str(peer))

    def _members(self, kind: str, spec: tuple) -> frozenset[str]:
        if kind == "N":
            _, cidr, excepts = spec
            out = {_net_member(net) for net in _split_zero(cidr)}
            out.update(f"{_net_member(e)} nomatch" for e in excepts)
            return frozenset(out)
        if kind == "S":
            return frozenset(p.ip for p in self.c.peer_pods(spec[1]) if p.ip)
        _, dest, protocol, port_name = spec
        if dest[0] == "selected":
            pods = self.c._filter(dest[2], self.c.pods_by_ns.get(dest[1], ()))
        elif dest[0] == "all":
            pods = self.c.pods
        else:
            pods = self.c.peer_pods(dest[1])
        proto = protocol.lower()
        out = set()
        for p in pods:
            number = p.named_port(port_name, protocol)
            if p.ip and number is not None:
                out.add(f"{p.ip},{proto}:{number}")
        return frozenset(out)

    def _sets(self) -> tuple[IPSet, ...]:
        return tuple(IPSet(name, SET_TYPES[kind], self._members(kind, spec), desc)
                     for name, (kind, spec, desc) in sorted(self.set_specs.items()))

    # -- policy chains (memoized on the parsed policy: same policy, same chain and set names)
    def policy_chain(self, pol: Policy, direction: str) -> Chain:
        def build():
            before = set(self.set_specs)
            chain = self._policy_chain(pol, direction)
            return chain, {n: self.set_specs[n] for n in self.set_specs if n not in before} | {
                n: self.set_specs[n] for n in self._used_sets(chain)}
        chain, sets = self.cache.chain(("policy", pol, direction), build)
        for name, spec in sets.items():
            self.set_specs.setdefault(name, spec)
        return chain

    @staticmethod
    def _used_sets(chain: Chain) -> set[str]:
        return {n for r in chain.rules for n in (r.match.src_set, r.match.dst_set, r.match.dst_port_set) if n}

    def _policy_chain(self, pol: Policy, direction: str) -> Chain:
        name = policy_chain_name(pol.key, direction)
        rules: list[Rule] = []
        set_field = "src_set" if direction == INGRESS else "dst_set"
        for i, prule in enumerate(pol.rules(direction)):
            label = f"{pol.key} {direction.lower()} rule {i}"
            peers: list[Peer | None] = list(prule.peers) if prule.peers else [None]
            for peer in peers:
                if peer is not None and peer.is_ip_block and ipaddress.ip_network(peer.cidr).version != 4:
                    continue  # IPv6 blocks never match this IPv4 datapath
                peer_desc = "any peer" if peer is None else str(peer)
                peer_match = {} if peer is None else {set_field: self.peer_set(peer)}
                for port_match, port_desc in self._port_matches(pol, direction, prule.ports, peer):
                    m = dict(peer_match)
                    if "dst_port_set" in port_match and direction == EGRESS:
                        m.pop("dst_set", None)  # the named-port set already holds only the peer's pods
                    m.update(port_match)
                    rules.append(Rule(Match(**m), "MARK", "set", f"{label}: {peer_desc}, {port_desc}"))
        return Chain(name, tuple(rules))

    def _port_matches(self, pol: Policy, direction: str, ports: tuple[PortMatch, ...], peer: Peer | None):
        if not ports:
            return [({}, "any port")]
        out = []
        by_proto: dict[str, list[PortMatch]] = defaultdict(list)
        for pm in ports:
            by_proto[pm.protocol].append(pm)
        for proto in sorted(by_proto):
            pms = by_proto[proto]
            if any(pm.port is None for pm in pms):
                out.append(({"protocol": proto.lower()}, f"all/{proto}"))
                continue
            ranges = sorted({(pm.port, pm.end_port or pm.port) for pm in pms if isinstance(pm.port, int)})
            for chunk in _multiport_chunks(ranges):
                desc = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in chunk) + f"/{proto}"
                out.append(({"protocol": proto.lower(), "dports": tuple(chunk)}, desc))
            for pm in pms:
                if not isinstance(pm.port, str):
                    continue
                # A named port means "the port of that name on the destination pod": a set of
                # (pod address, port) for every pod that can be the destination here.
                if direction == INGRESS:
                    dest, what = ("selected", pol.namespace, pol.pod_selector), f"pods selected by {pol.key}"
                elif peer is None:
                    dest, what = ("all",), "all pods"
                else:
                    dest, what = ("peer", peer), str(peer)
                s = self._want_set("P", ("P", dest, pm.protocol, pm.port), f"{what}, port {pm.port}/{pm.protocol}")
                out.append(({"protocol": proto.lower(), "dst_port_set": s}, f"port {pm.port}/{proto}"))
        return out

    # -- per-pod chains
    def deny_rules(self, text: str) -> list[Rule]:
        if self.deny == "drop":
            return [Rule(Match(), "DROP", comment=text)]
        # REJECT makes a denied connection fail at once instead of after the client's timeout.
        return [Rule(Match(protocol="tcp"), "REJECT", "tcp-reset", text),
                Rule(Match(), "REJECT", "icmp-port-unreachable", text)]

    def pod_chain(self, name: str, pod: Pod, direction: str, pols: list[Policy]) -> Chain:
        keys = tuple(p.key for p in pols)

        def build():
            rules, hashes = self.cache.chain(("pod-rules", direction, keys, self.deny),
                                             lambda: self._pod_rules(direction, keys))
            return Chain(name, rules, hashes)
        return self.cache.chain(("pod-chain", name, direction, keys, self.deny), build)

    def _pod_rules(self, direction: str, pols: tuple[str, ...]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
        # No pod name in these rules: every pod selected by the same policies shares them.
        d = direction.lower()
        if not pols:
            rules = (Rule(Match(), "RETURN", comment=f"no {d} policy selects this pod"),)
        else:
            out = [Rule(Match(), "MARK", "clear")]
            for key in pols:
                out.append(Rule(Match(), "JUMP", policy_chain_name(key, direction), f"policy {key}"))
                out.append(Rule(Match(mark=ACCEPT_MARK), "RETURN", comment=f"{d} allowed by {key}"))
            out += self.deny_rules(f"{d} denied: no rule of {', '.join(pols)} allows it")
            rules = tuple(out)
        return rules, _rule_hashes("", rules)

    def _dispatch_rules(self, p: Pod) -> tuple[Rule, Rule, Rule]:
        def build():
            tw, fw = pod_chain_names(p.interface)
            src = f"{p.ip}/32" if p.ip else ""
            return (Rule(Match(in_iface=p.interface, src=src), "GOTO", fw, p.key),
                    Rule(Match(out_iface=p.interface), "GOTO", tw, p.key),
                    Rule(Match(in_iface=p.interface, src=src), "RETURN", comment=p.key))
        return self.cache.chain(("dispatch", p.key, p.interface, p.ip), build)

    def _chain(self, name: str, rules: tuple[Rule, ...]) -> Chain:
        hashes = self.cache.chain(("hashes", name, rules), lambda: _rule_hashes(name, rules))
        return Chain(name, rules, hashes)

    def _dispatch_chain(self, name: str, pods: list[Pod], which: int, final: Rule) -> Chain:
        ident = tuple((p.key, p.interface, p.ip) for p in pods)  # strings hash fast (cached by Python)
        return self.cache.chain(("dispatch-chain", name, which, final, ident), lambda: Chain(
            name, tuple(self._dispatch_rules(p)[which] for p in pods) + (final,)))

    def dispatch(self, chains: dict[str, Chain], name: str, local: list[Pod], which: int, final: Rule,
                 iface_field: str) -> None:
        """Dispatch chain `name` (and its sub-chains when there are many pods) into `chains`."""
        if len(local) <= DISPATCH_SPLIT:
            chains[name] = self._dispatch_chain(name, local, which, final)
            return
        groups: dict[str, list[Pod]] = defaultdict(list)
        for p in local:
            groups[p.interface[len(self.prefix)]].append(p)
        root = []
        for ch in sorted(groups):
            sub = f"{name}-{ch}"
            chains[sub] = self._dispatch_chain(sub, groups[ch], which, final)
            root.append(Rule(Match(**{iface_field: f"{self.prefix}{ch}+"}), "GOTO", sub))
        chains[name] = self._chain(name, tuple(root) + (final,))

    def render(self) -> Ruleset:
        local: list[Pod] = []
        seen_ifaces: dict[str, str] = {}
        for p in self.c.pods:
            if p.node != self.node or not p.interface:
                continue
            if not p.interface.startswith(self.prefix) or len(p.interface) == len(self.prefix):
                self.errors.append(f"Pod {p.key}: interface {p.interface} does not start with the pod "
                                   f"interface prefix {self.prefix!r} (pod not programmed; its traffic is "
                                   "not policed)")
                continue
            if p.interface in seen_ifaces:
                self.errors.append(f"Pod {p.key}: interface {p.interface} already belongs to pod "
                                   f"{seen_ifaces[p.interface]} (pod skipped)")
                continue
            seen_ifaces[p.interface] = p.key
            local.append(p)
        local.sort(key=lambda p: p.interface)

        selecting: dict[str, dict[str, list[Policy]]] = {INGRESS: defaultdict(list), EGRESS: defaultdict(list)}
        local_keys = {p.key for p in local}
        for pol in self.c.policies:
            sel = [p for p in self.c.selected(pol) if p.key in local_keys]
            for direction in pol.types:
                for p in sel:
                    selecting[direction][p.key].append(pol)

        chains: dict[str, Chain] = {}
        endpoints = []
        for p in local:
            tw, fw = pod_chain_names(p.interface)
            ing, egr = selecting[INGRESS].get(p.key, []), selecting[EGRESS].get(p.key, [])
            chains[tw] = self.pod_chain(tw, p, INGRESS, ing)
            chains[fw] = self.pod_chain(fw, p, EGRESS, egr)
            for direction, pols in ((INGRESS, ing), (EGRESS, egr)):
                for pol in pols:
                    cname = policy_chain_name(pol.key, direction)
                    if cname not in chains:
                        chains[cname] = self.policy_chain(pol, direction)
            endpoints.append(Endpoint(p.key, p.interface, p.ip, tw, fw, tuple(x.key for x in ing),
                                      tuple(x.key for x in egr)))

        pfx = self.prefix + "+"
        fail = "unknown pod interface or source address: fail closed"
        self.dispatch(chains, FROM_POD_CHAIN, local, 0, Rule(Match(), "DROP", comment=fail), "in_iface")
        self.dispatch(chains, TO_POD_CHAIN, local, 1,
                      Rule(Match(), "DROP", comment="unknown pod interface: fail closed"), "out_iface")
        self.dispatch(chains, POD_TO_HOST_CHAIN, local, 2, Rule(Match(), "DROP", comment=fail), "in_iface")
        est = ("RELATED", "ESTABLISHED")
        chains[FORWARD_CHAIN] = Chain(FORWARD_CHAIN, (
            Rule(Match(in_iface=pfx, ctstate=est), "ACCEPT", comment="replies and established flows"),
            Rule(Match(out_iface=pfx, ctstate=est), "ACCEPT", comment="replies and established flows"),
            Rule(Match(in_iface=pfx, ctstate=("INVALID",)), "DROP"),
            Rule(Match(out_iface=pfx, ctstate=("INVALID",)), "DROP"),
            Rule(Match(in_iface=pfx), "JUMP", FROM_POD_CHAIN, "egress policy of the sending pod"),
            Rule(Match(out_iface=pfx), "JUMP", TO_POD_CHAIN, "ingress policy of the receiving pod"),
            Rule(Match(in_iface=pfx), "ACCEPT", comment="policy allowed"),
            Rule(Match(out_iface=pfx), "ACCEPT", comment="policy allowed"),
        ))
        # Traffic between a pod and its own node is always allowed (Kubernetes semantics), but only
        # from interfaces and addresses we know.
        chains[INPUT_CHAIN] = Chain(INPUT_CHAIN, (Rule(Match(in_iface=pfx), "JUMP", POD_TO_HOST_CHAIN),))
        hooks = (Hook("FORWARD", Rule(Match(), "JUMP", FORWARD_CHAIN, "bgpnet policy")),
                 Hook("INPUT", Rule(Match(), "JUMP", INPUT_CHAIN, "bgpnet policy")))
        sets = self._sets()
        self.cache.finish()
        return Ruleset(tuple(chains[k] for k in sorted(chains)), sets, hooks, tuple(endpoints), tuple(self.errors))


def _net_member(cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _split_zero(cidr: str) -> list[str]:
    # hash:net cannot hold a /0; two /1s cover the same addresses.
    net = ipaddress.ip_network(cidr)
    return [str(n) for n in net.subnets()] if net.prefixlen == 0 else [cidr]


def _multiport_chunks(ranges: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    # multiport takes up to 15 ports, a range counting as two.
    chunks: list[list[tuple[int, int]]] = [[]]
    used = 0
    for lo, hi in ranges:
        cost = 1 if lo == hi else 2
        if used + cost > 15:
            chunks.append([])
            used = 0
        chunks[-1].append((lo, hi))
        used += cost
    return [c for c in chunks if c]


def render_cluster(cluster: Cluster, node: str, *, interface_prefix: str = POD_INTERFACE_PREFIX,
                   deny: str = "reject") -> Ruleset:
    return _Renderer(cluster, node, interface_prefix, deny).render()


def render(pods: Any, namespaces: Any, policies: Any, node: str, *,
           interface_prefix: str = POD_INTERFACE_PREFIX, deny: str = "reject") -> Ruleset:
    """The chains, ipsets and hooks that enforce `policies` for the pods of `node`.

    Inputs are {name: spec} mappings (or datastore Objects) as stored: pods "ns/name" -> {node, ip,
    labels, ports, interface}, namespaces "name" -> {labels}, policies "ns/name" -> {metadata, spec}.
    Malformed objects are skipped and listed in `Ruleset.errors`; the rest is rendered.
    """
    return render_cluster(Cluster(pods, namespaces, policies), node, interface_prefix=interface_prefix,
                          deny=deny)


# ---------------------------------------------------------------------------------------------- simulate

@dataclass
class Packet:
    in_iface: str
    out_iface: str
    src: str
    dst: str
    protocol: str       # tcp / udp / sctp
    dport: int
    ctstate: str = "NEW"
    mark: int = 0


def _iface_match(pattern: str, iface: str) -> bool:
    if pattern.endswith("+"):
        return iface.startswith(pattern[:-1])
    return iface == pattern


def set_contains(s: IPSet, ip: str, protocol: str = "", port: int = 0) -> bool:
    if s.type == "hash:ip":
        return ip in s.members
    if s.type == "hash:ip,port":
        return f"{ip},{protocol}:{port}" in s.members
    addr = ipaddress.ip_address(ip)
    best = None  # the most specific entry decides, as in the kernel's hash:net
    for m in s.members:
        net_s, _, flag = m.partition(" ")
        net = ipaddress.ip_network(net_s)
        if addr in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, flag != "nomatch")
    return bool(best and best[1])


def _rule_matches(m: Match, pkt: Packet, sets: Mapping[str, IPSet]) -> bool:
    if m.in_iface and not _iface_match(m.in_iface, pkt.in_iface):
        return False
    if m.out_iface and not _iface_match(m.out_iface, pkt.out_iface):
        return False
    if m.src and ipaddress.ip_address(pkt.src) not in ipaddress.ip_network(m.src):
        return False
    if m.protocol and m.protocol != pkt.protocol:
        return False
    if m.dports and not any(lo <= pkt.dport <= hi for lo, hi in m.dports):
        return False
    if m.src_set and not set_contains(sets[m.src_set], pkt.src):
        return False
    if m.dst_set and not set_contains(sets[m.dst_set], pkt.dst):
        return False
    if m.dst_port_set and not set_contains(sets[m.dst_port_set], pkt.dst, pkt.protocol, pkt.dport):
        return False
    if m.ctstate and pkt.ctstate not in m.ctstate:
        return False
    if m.mark and (pkt.mark & m.mark) != m.mark:
        return False
    return True


def simulate(ruleset: Ruleset, chain: str, pkt: Packet) -> tuple[str, list[tuple[str, Rule]]]:
    """Walk `pkt` through our chains from `chain` like the kernel does.

    Returns (verdict, fired rules): verdict is ACCEPT, DROP, REJECT, or CONTINUE (fell back to the
    built-in chain, i.e. bgpnet passed the packet on).
    """
    chains = {c.name: c for c in ruleset.chains}
    sets = {s.name: s for s in ruleset.ipsets}
    fired: list[tuple[str, Rule]] = []
    stack = [[chain, 0]]
    for _ in range(100000):
        if not stack:
            return "CONTINUE", fired
        frame = stack[-1]
        rules = chains[frame[0]].rules
        if frame[1] >= len(rules):
            stack.pop()
            continue
        rule = rules[frame[1]]
        frame[1] += 1
        if not _rule_matches(rule.match, pkt, sets):
            continue
        fired.append((frame[0], rule))
        if rule.action == "MARK":
            pkt.mark = (pkt.mark | ACCEPT_MARK) if rule.target == "set" else (pkt.mark & ~ACCEPT_MARK)
        elif rule.action == "JUMP":
            stack.append([rule.target, 0])
        elif rule.action == "GOTO":
            stack[-1] = [rule.target, 0]
        elif rule.action == "RETURN":
            stack.pop()
        else:
            return rule.action, fired
    raise RuntimeError("rule loop")  # pragma: no cover - our chains have no cycles


# ---------------------------------------------------------------------------------------------- explain

class ExplainError(BgpnetError):
    exit_status = 2


@dataclass(frozen=True)
class Explanation:
    allowed: bool
    src: str
    dst: str
    port: int
    protocol: str
    steps: tuple[str, ...]

    def __str__(self) -> str:
        head = (f"{self.src} -> {self.dst} port {self.port}/{self.protocol}: "
                f"{'ALLOWED' if self.allowed else 'DENIED'}")
        return "\n".join([head] + [f"  {s}" for s in self.steps])


def _decisions(fired: list[tuple[str, Rule]]) -> list[tuple[str, bool, str]]:
    """(direction, allowed, reason) for each pod chain the packet went through."""
    out = []
    last_allow = ""
    for chain, rule in fired:
        direction = "egress" if chain.startswith(PREFIX + "FW-") else \
            "ingress" if chain.startswith(PREFIX + "TW-") else ""
        if rule.action == "MARK" and rule.target == "set":
            last_allow = rule.comment
        elif direction and rule.action == "RETURN":
            if rule.match.mark:
                out.append((direction, True, f"allowed by {last_allow}"))
            else:
                out.append((direction, True, f"open: {rule.comment}"))
        elif direction and rule.action in ("REJECT", "DROP"):
            out.append((direction, False, rule.comment))
        elif rule.action == "DROP":
            out.append(("dispatch", False, rule.comment))
    return out


def explain_cluster(cluster: Cluster, src: str, dst: str, port: int | str, protocol: str = "TCP", *,
                    interface_prefix: str = POD_INTERFACE_PREFIX, deny: str = "reject",
                    rulesets: dict[str, Ruleset] | None = None) -> Explanation:
    """`explain` on a parsed Cluster; pass a dict as `rulesets` to reuse renders across calls."""
    protocol = protocol.upper()
    if protocol not in ("TCP", "UDP", "SCTP"):
        raise ExplainError(f"protocol must be TCP, UDP or SCTP, not {protocol!r}")
    pods = {}
    for which, key in (("--from", src), ("--to", dst)):
        pod = cluster.by_key.get(key)
        if pod is None:
            raise ExplainError(f"{which}: no pod {key!r} in the datastore (use NAMESPACE/POD)")
        if not pod.ip:
            raise ExplainError(f"{which}: pod {key} has no IP address yet")
        pods[which] = pod
    a, b = pods["--from"], pods["--to"]
    steps = []
    if isinstance(port, str) and not port.isdigit():
        number = b.named_port(port, protocol)
        if number is None:
            raise ExplainError(f"--port: pod {b.key} has no {protocol} container port named {port!r}")
        steps.append(f"port {port}/{protocol} is {number} on {b.key}")
        port = number
    port = int(port)
    proto = protocol.lower()
    for e in cluster.errors:
        steps.append(f"note: {e}")

    allowed = True
    hops = []
    if a.node and a.interface:
        out = b.interface if (b.node == a.node and b.interface) else UPLINK
        hops.append((a.node, a.interface, out))
    if b.node and b.interface and not (a.node == b.node and a.interface):
        hops.append((b.node, UPLINK, b.interface))
    for node, in_if, out_if in hops:
        rulesets = {} if rulesets is None else rulesets
        if node not in rulesets:
            rulesets[node] = render_cluster(cluster, node, interface_prefix=interface_prefix, deny=deny)
        rs = rulesets[node]
        verdict, fired = simulate(rs, FORWARD_CHAIN, Packet(in_if, out_if, a.ip, b.ip, proto, port))
        for direction, _ok, reason in _decisions(fired):
            who = a.key if direction == "egress" else b.key
            steps.append(f"{direction} {'from' if direction == 'egress' else 'to'} {who} (node {node}): "
                         f"{reason}" if direction != "dispatch" else f"node {node}: {reason}")
        if verdict in ("DROP", "REJECT"):
            allowed = False
            break
    if not hops:
        steps.append("neither pod is on a node with a pod interface: nothing polices this traffic")
    return Explanation(allowed, a.key, b.key, port, protocol, tuple(steps))


def explain(pods: Any, namespaces: Any, policies: Any, src: str, dst: str, port: int | str,
            protocol: str = "TCP", **kw) -> Explanation:
    """Would a new connection from pod `src` to pod `dst` on `port` be allowed, and which rule decides."""
    return explain_cluster(Cluster(pods, namespaces, policies), src, dst, port, protocol, **kw)
