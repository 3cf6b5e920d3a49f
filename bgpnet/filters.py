"""Import policy for learned prefixes: untrusted peers stay untrusted.

A prefix is accepted only if it is a known pod prefix (an IPAM block, a node's pod CIDR, a /32 borrowed
from a pool) or inside the configured allow-list; never a default route unless asked; never our own
prefixes or more-specifics of someone else's block. Pure functions: the agent feeds them datastore state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Network

from bgpnet.model import covers, prefix_key, supernet_key


@dataclass(frozen=True)
class ImportRules:
    pools: tuple[IPv4Network, ...] = ()  # IP pools: their blocks and borrowed /32s are welcome
    blocks: frozenset[IPv4Network] = frozenset()  # every known block / node pod CIDR, exact match
    own: tuple[IPv4Network, ...] = ()  # this node's own prefixes: never learned from anyone
    allow: tuple[IPv4Network, ...] = ()  # extra prefixes (and their more-specifics) accepted as they are
    accept_default: bool = False

    # The same as prefix keys, for integer containment tests: check_import runs once per learned prefix.
    @cached_property
    def _keys(self):
        block_keys = {prefix_key(b): b for b in self.blocks}
        return ([(prefix_key(n), n) for n in self.own], [prefix_key(n) for n in self.allow],
                [prefix_key(n) for n in self.pools], block_keys, sorted({k[1] for k in block_keys}))


def check_import(prefix: IPv4Network, rules: ImportRules) -> str | None:
    """None if `prefix` may be installed, else the reason it is rejected (for logs and counters)."""
    key = prefix_key(prefix)
    if key == (0, 0):
        return None if rules.accept_default else "default route not accepted (accept_default is off)"
    own, allow, pools, blocks, block_lengths = rules._keys
    for own_key, own_net in own:
        if key == own_key:
            return f"{prefix} is this node's own prefix"
        if key[1] < 32 and covers(own_key, key):
            return f"{prefix} is a more-specific of this node's prefix {own_net}"
    if any(covers(k, key) for k in allow):
        return None
    if key in blocks:
        return None
    covering = [blocks[s] for s in (supernet_key(key, n) for n in block_lengths if n < key[1]) if s in blocks]
    if key[1] == 32 and any(covers(p, key) for p in pools):
        return None  # an address borrowed from another node's block (non-strict affinity)
    if covering:
        return f"{prefix} is a more-specific of block {covering[0]}"
    if any(covers(p, key) for p in pools):
        return f"{prefix} is inside a pool but is not a known block"
    return f"{prefix} is outside every IP pool and the allow-list"


def build_rules(pools: Iterable[IPv4Network], blocks: Iterable[IPv4Network], own: Iterable[IPv4Network],
                allow: Iterable[IPv4Network] = (), accept_default: bool = False) -> ImportRules:
    return ImportRules(tuple(sorted(set(pools))), frozenset(blocks), tuple(sorted(set(own))),
                       tuple(sorted(set(allow))), accept_default)


def reflection_loop(path, router_id=None, cluster_id=None) -> str | None:
    """RFC 4456 loop checks: a path that names us as its originator, or lists our cluster, came back."""
    if router_id is not None and path.originator_id == router_id:
        return f"originator id {router_id} is this node (a reflected copy of our own path)"
    if cluster_id is not None and cluster_id in path.cluster_list:
        return f"cluster list {' '.join(map(str, path.cluster_list))} contains our cluster id {cluster_id} (loop)"
    return None


def _loop(attributes, local_asn: int, router_id, cluster_id) -> str | None:
    if local_asn and local_asn in attributes.as_path:
        return f"AS path {' '.join(map(str, attributes.as_path))} contains our AS {local_asn} (loop)"
    return reflection_loop(attributes, router_id, cluster_id)


def select_imports(paths: Iterable, rules: ImportRules, max_prefixes: int = 0, local_asn: int = 0,
                   router_id=None, cluster_id=None):
    """Split one peer's received paths (in arrival order) into accepted paths and rejected reasons.

    A path whose AS path already holds `local_asn` went round a loop (e.g. our own mesh's block
    reflected back by a router) and is rejected, as is one whose originator id is our `router_id` or
    whose cluster list holds our `cluster_id`. With a `max_prefixes` limit, the first paths to
    arrive are kept and the rest rejected.
    Returns (accepted: dict prefix -> Path, rejected: dict prefix -> reason, over_limit: bool).
    """
    accepted, rejected, over = {}, {}, False
    loops: dict[int, str | None] = {}  # by attributes, shared by the paths of one UPDATE
    for path in paths:
        reason = check_import(path.prefix, rules)
        if reason is None:
            attributes = path.attributes
            key = id(attributes)
            if key not in loops:
                loops[key] = _loop(attributes, local_asn, router_id, cluster_id)
            reason = loops[key]
        if reason is None and max_prefixes and len(accepted) >= max_prefixes:
            reason, over = f"max-prefixes limit {max_prefixes} reached", True
        if reason is None:
            accepted[path.prefix] = path
        else:
            rejected[path.prefix] = reason
    return accepted, rejected, over
