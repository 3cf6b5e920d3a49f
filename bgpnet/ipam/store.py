"""IPAM on a datastore: every change is a plain get/create/update(CAS)/delete, retried on conflict.

Order of writes keeps a crash harmless: the handle is created before its address is taken in a block
(so a block allocation without a handle is a leak gc may free), and a release frees the block's
ordinals before the handle goes. A block is claimed by creating its object: only one node can win.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

from bgpnet.datastore.base import (
    BLOCK_AFFINITY,
    IP_POOL,
    IPAM_BLOCK,
    IPAM_HANDLE,
    NODE,
    POD,
    Datastore,
    Object,
)
from bgpnet.errors import AlreadyExists, Conflict, NotFound, ValidationError
from bgpnet.ipam.block import (
    KIND_POD_CIDR,
    KIND_POOL,
    Block,
    NoAddressAvailable,
    NoPool,
    Pool,
    announced_prefixes,
    block_name,
    pod_cidr_block,
    pools_for_node,
    unclaimed_blocks,
    validate_pools,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
MODE_BLOCKS = "blocks"
MODE_POD_CIDR = "pod-cidr"
MODES = (MODE_BLOCKS, MODE_POD_CIDR)
# Kinds whose changes can change what a node announces: the agent watches `store.revision(IPAM_KINDS)`.
IPAM_KINDS = (IP_POOL, IPAM_BLOCK, NODE)
# Upper bound of the random pause before retrying a lost compare-and-swap, in seconds (spreads out racers).
RETRY_JITTER = 0.02


def cas_retry(fn: Callable[[], T], attempts: int = 200) -> T:
    """Run a read-modify-write `fn` until its compare-and-swap wins; `fn` must re-read on every call."""
    for attempt in Retrying(retry=retry_if_exception_type(Conflict), stop=stop_after_attempt(attempts),
                            wait=wait_random(0, RETRY_JITTER), reraise=True):
        with attempt:
            return fn()
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------- pools

def load_pools(store: Datastore) -> list[Pool]:
    pools = []
    for obj in store.list(IP_POOL):
        try:
            pools.append(Pool.from_spec(obj.name, obj.spec))
        except ValidationError as e:
            log.warning("ignoring invalid pool: %s", e)
    return pools


def add_pool(store: Datastore, name: str, spec: dict[str, Any], replace: bool = False) -> Pool:
    """Validate `spec` (fields, then overlap with every other pool) and write it; nothing changes on error."""
    pool = Pool.from_spec(name, spec)
    existing = load_pools(store)
    validate_pools(pool, existing)
    cur = store.get(IP_POOL, name)
    if cur is not None and not replace:
        raise ValidationError(f"pool {name} already exists ({cur.spec.get('cidr')})", f"IPPool {name}")
    if cur is not None:
        old = Pool.from_spec(name, cur.spec)
        if old.cidr != pool.cidr or old.block_size != pool.block_size:
            if any(b.pool == name for b in _blocks(store)):
                raise ValidationError("cannot change cidr or block_size of a pool with claimed blocks; "
                                      "add a new pool and disable this one", f"IPPool {name}")
        store.update(cur, pool.to_spec())
    else:
        store.create(IP_POOL, name, pool.to_spec())
    log.info("pool %s %s written", name, pool.cidr)
    return pool


def delete_pool(store: Datastore, name: str) -> None:
    """Delete a pool and its empty blocks; refuse while any of its addresses are allocated."""
    if store.get(IP_POOL, name) is None:
        raise NotFound(f"pool {name} does not exist")
    blocks = [(o, b) for o, b in _block_objects(store) if b.pool == name]
    used = [b for _, b in blocks if b.allocations]
    if used:
        n = sum(len(b.allocations) for b in used)
        raise ValidationError(f"pool {name} still has {n} allocated address(es) in {len(used)} block(s); "
                              "disable it and release them first", f"IPPool {name}")
    for obj, b in blocks:
        _delete_block(store, obj, b)
    store.delete(IP_POOL, name)


# --------------------------------------------------------------------------------------------- reads

def _block_objects(store: Datastore) -> list[tuple[Object, Block]]:
    return [(o, Block.from_spec(o.spec)) for o in store.list(IPAM_BLOCK)]


def _blocks(store: Datastore) -> list[Block]:
    return [b for _, b in _block_objects(store)]


def node_labels(store: Datastore, node: str) -> dict[str, str]:
    obj = store.get(NODE, node)
    return dict((obj.spec.get("labels") or {}) if obj else {})


def node_pod_cidr(store: Datastore, node: str) -> IPv4Network | None:
    obj = store.get(NODE, node)
    if obj is None:
        return None
    raw = obj.spec.get("pod_cidr") or obj.spec.get("podCIDR")
    if not raw:
        return None
    try:
        return IPv4Network(raw)
    except ValueError:
        log.warning("node %s has an invalid pod_cidr %r", node, raw)
        return None


def node_prefixes(store: Datastore, node_name: str, mode: str | None = None) -> list[IPv4Network]:
    """What `node_name` announces: its affine blocks plus borrowed /32s; in pod-cidr mode its podCIDR.

    With `mode=None` both are considered: the podCIDR counts when the node has one and either a
    pod-cidr block exists for it or no enabled pool selects the node.
    """
    blocks = _blocks(store)
    out = set()
    if mode in (None, MODE_BLOCKS):
        out.update(announced_prefixes((b for b in blocks if b.kind == KIND_POOL), node_name))
    if mode in (None, MODE_POD_CIDR):
        cidr = node_pod_cidr(store, node_name)
        if cidr is not None:
            in_use = any(b.kind == KIND_POD_CIDR and b.affinity == node_name for b in blocks)
            if mode == MODE_POD_CIDR or in_use or not pools_for_node(load_pools(store),
                                                                      node_labels(store, node_name)):
                out.add(cidr)
    return sorted(out)


# ------------------------------------------------------------------------------------------ assigning

def _try_assign(store: Datastore, name: str, handle: str, node: str, now: float) -> IPv4Address | None:
    """Take one address in block `name` for `handle`; None if the block is full or gone."""

    def attempt() -> IPv4Address | None:
        obj = store.get(IPAM_BLOCK, name)
        if obj is None:
            return None
        blk = Block.from_spec(obj.spec)
        if blk.is_full():
            return None
        blk, ip = blk.assign(handle, node, now)
        try:
            store.update(obj, blk.to_spec())
        except NotFound:
            return None
        return ip

    return cas_retry(attempt)


def _claim_block(store: Datastore, node: str, pools: list[Pool], now: float) -> str | None:
    """Claim the first unclaimed block of the first pool that has one; None if all pools are claimed.

    A pending BlockAffinity is written first so a claim interrupted by a crash is visible; the block
    object's create is the atomic step: AlreadyExists means another node won that block.
    """
    for _ in range(100):
        claimed = [b.cidr for b in _blocks(store)]
        cidr = pool = None
        for p in pools:
            cidr = next(unclaimed_blocks(p, claimed), None)
            if cidr is not None:
                pool = p
                break
        if cidr is None:
            return None
        name = block_name(cidr)
        aff = f"{node}-{name}"
        pending = store.put(BLOCK_AFFINITY, aff, {"node": node, "block": str(cidr), "state": "pending"})
        blk = Block(cidr, affinity=node, pool=pool.name, empty_since=now)
        try:
            store.create(IPAM_BLOCK, name, blk.to_spec())
        except AlreadyExists:
            won = store.get(IPAM_BLOCK, name)
            if won is not None and won.spec.get("affinity") == node:
                return name  # another process of this node claimed it: use it, keep its affinity
            _delete_quietly(store, BLOCK_AFFINITY, aff, pending.revision)
            continue
        store.put(BLOCK_AFFINITY, aff, {"node": node, "block": str(cidr), "state": "confirmed"})
        log.info("node %s claimed block %s from pool %s", node, cidr, pool.name)
        return name
    raise Conflict(f"node {node}: could not claim a block after 100 attempts")


def _assign_blocks(store: Datastore, node: str, handle: str, strict_affinity: bool,
                   pool_names: Iterable[str], now: float) -> tuple[IPv4Address, str]:
    pools = pools_for_node(load_pools(store), node_labels(store, node), pool_names)
    if not pools:
        raise NoPool(f"no enabled IP pool selects node {node}" +
                     (f" among {', '.join(pool_names)}" if pool_names else "") + " (see `bgpnet ipam pool list`)")
    nets = [p.cidr for p in pools]

    def in_pools(b: Block) -> bool:
        return b.kind == KIND_POOL and any(b.cidr.subnet_of(n) for n in nets)

    for b in sorted((b for b in _blocks(store) if b.affinity == node and in_pools(b)), key=lambda b: b.cidr):
        if not b.is_full() and (ip := _try_assign(store, b.name, handle, node, now)):
            return ip, b.name
    # Our blocks are full: claim new ones until one keeps a free address for us (another process of this
    # node may fill a fresh block before we get to it).
    while (name := _claim_block(store, node, pools, now)) is not None:
        if ip := _try_assign(store, name, handle, node, now):
            return ip, name
    if not strict_affinity:
        for b in sorted((b for b in _blocks(store) if in_pools(b) and b.affinity != node), key=lambda b: b.cidr):
            if not b.is_full() and (ip := _try_assign(store, b.name, handle, node, now)):
                log.info("node %s borrowed %s from block %s (affine to %s)", node, ip, b.cidr, b.affinity)
                return ip, b.name
    raise NoAddressAvailable(
        f"no free address for node {node} in pool(s) {', '.join(p.name + ' ' + str(p.cidr) for p in pools)}"
        + (" (strict affinity: only the node's own blocks may be used)" if strict_affinity else ""))


def _assign_pod_cidr(store: Datastore, node: str, handle: str, now: float) -> tuple[IPv4Address, str]:
    cidr = node_pod_cidr(store, node)
    if cidr is None:
        raise NoPool(f"node {node} has no pod_cidr in the datastore (pod-cidr mode needs Kubernetes to allocate it)")
    name = block_name(cidr)
    if store.get(IPAM_BLOCK, name) is None:
        try:
            store.create(IPAM_BLOCK, name, pod_cidr_block(cidr, node).to_spec())
        except AlreadyExists:
            pass
    obj = store.get(IPAM_BLOCK, name)
    if obj is not None and obj.spec.get("affinity") != node:
        raise ValidationError(f"pod_cidr {cidr} of node {node} is already a block of node {obj.spec.get('affinity')}",
                              f"Node {node}.pod_cidr")
    ip = _try_assign(store, name, handle, node, now)
    if ip is None:
        raise NoAddressAvailable(f"no free address in pod_cidr {cidr} of node {node}")
    return ip, name


def auto_assign(store: Datastore, node: str, handle: str, pod: str | None = None, *, mode: str = MODE_BLOCKS,
                strict_affinity: bool = False, pool_names: Iterable[str] = (),
                attrs: dict[str, Any] | None = None, now: float | None = None) -> IPv4Address:
    """One address for `handle` on `node`. Idempotent: a handle that already holds an address gets it back."""
    if mode not in MODES:
        raise ValidationError(f"mode must be one of {', '.join(MODES)}, not {mode!r}", "ipam.mode")
    now = time.time() if now is None else now
    pool_names = list(pool_names)
    spec = {"node": node, "pod": pod, "ip": None, "block": None, "created": now, **(attrs or {})}
    cur = store.get(IPAM_HANDLE, handle)
    if cur is not None and cur.spec.get("ip"):
        return IPv4Address(cur.spec["ip"])
    if cur is None:
        try:
            store.create(IPAM_HANDLE, handle, spec)
        except AlreadyExists:
            return auto_assign(store, node, handle, pod, mode=mode, strict_affinity=strict_affinity,
                               pool_names=pool_names, attrs=attrs, now=now)
    try:
        if mode == MODE_POD_CIDR:
            ip, name = _assign_pod_cidr(store, node, handle, now)
        else:
            ip, name = _assign_blocks(store, node, handle, strict_affinity, pool_names, now)
    except BaseException:
        _delete_quietly(store, IPAM_HANDLE, handle)
        raise
    done = {**spec, "ip": str(ip), "block": name}
    store.put(IPAM_HANDLE, handle, done)
    log.info("assigned %s to %s (pod %s) on node %s", ip, handle, pod, node)
    return ip


# ------------------------------------------------------------------------------------------ releasing

def _delete_quietly(store: Datastore, kind: str, name: str, revision: str | None = None) -> bool:
    """Delete if present (and, given a revision, unchanged since read); False otherwise."""
    try:
        store.delete(kind, name, revision)
        return True
    except (NotFound, Conflict):
        return False


def _free_in_block(store: Datastore, name: str, pred: Callable[[int, str], bool], now: float) -> list[IPv4Address]:
    """Free the block's ordinals for which pred(ordinal, handle) holds; returns the freed addresses."""

    def attempt() -> list[IPv4Address]:
        obj = store.get(IPAM_BLOCK, name)
        if obj is None:
            return []
        blk = Block.from_spec(obj.spec)
        ords = [o for o, h in blk.allocations.items() if pred(o, h)]
        if not ords:
            return []
        try:
            store.update(obj, blk.release(ords, now).to_spec())
        except NotFound:
            return []
        return [blk.ip(o) for o in sorted(ords)]

    return cas_retry(attempt)


def release_handle(store: Datastore, handle: str, now: float | None = None) -> list[IPv4Address]:
    """Free every address held by `handle` and delete it. Releasing an unknown handle is a no-op."""
    now = time.time() if now is None else now
    cur = store.get(IPAM_HANDLE, handle)
    if cur is None:
        return []
    freed: list[IPv4Address] = []
    # Every block, not only the one the handle records: an assignment interrupted before the handle
    # recorded its block, or two racing ADDs for one container, may have left the handle elsewhere too.
    names = [b.name for b in _blocks(store) if handle in b.allocations.values()]
    for name in names:
        freed += _free_in_block(store, name, lambda o, h: h == handle, now)
    _delete_quietly(store, IPAM_HANDLE, handle)
    log.info("released %s (%s)", handle, ", ".join(map(str, freed)) or "no address")
    return freed


def release_pod(store: Datastore, pod: str, now: float | None = None) -> list[IPv4Address]:
    """Release every handle tied to pod "namespace/name"; idempotent."""
    freed: list[IPv4Address] = []
    for h in store.list(IPAM_HANDLE):
        if h.spec.get("pod") == pod:
            freed += release_handle(store, h.name, now)
    return freed


def release_ip(store: Datastore, ip: IPv4Address, now: float | None = None) -> str | None:
    """Release one address (admin use); returns the handle that held it, None if it was free."""
    now = time.time() if now is None else now
    blk = next((b for b in _blocks(store) if ip in b.cidr), None)
    if blk is None:
        return None
    target = blk.ordinal(ip)
    handle = blk.allocations.get(target)
    if handle is None:
        return None
    cur = store.get(IPAM_HANDLE, handle)
    if cur is not None and cur.spec.get("ip") == str(ip):
        release_handle(store, handle, now)
    else:
        _free_in_block(store, blk.name, lambda o, h: o == target, now)
    return handle


def _delete_block(store: Datastore, obj: Object, blk: Block) -> bool:
    """Delete an empty block (CAS on its revision: an allocation racing with us wins) and its affinity.

    The affinity is read first and deleted only at that revision: a node that re-claims the block in
    between rewrites it, and its fresh affinity must survive.
    """
    aff = store.get(BLOCK_AFFINITY, f"{blk.affinity}-{obj.name}") if blk.affinity else None
    try:
        store.delete(IPAM_BLOCK, obj.name, obj.revision)
    except (Conflict, NotFound):
        return False
    if aff is not None:
        _delete_quietly(store, BLOCK_AFFINITY, aff.name, aff.revision)
    log.info("released empty block %s of node %s", blk.cidr, blk.affinity)
    return True


@dataclass
class GcResult:
    released_blocks: list[str] = field(default_factory=list)
    released_handles: list[str] = field(default_factory=list)
    freed_leaks: list[str] = field(default_factory=list)  # block allocations without a handle
    marked_empty: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.released_blocks or self.released_handles or self.freed_leaks)


def gc(store: Datastore, node_name: str, grace_seconds: float, now: float | None = None) -> GcResult:
    """One pass for `node_name`: free handles whose pod is gone (or was replaced), addresses without a
    handle, then release the node's blocks that stayed empty for `grace_seconds`.

    Handles younger than the grace period are left alone: a CNI ADD writes the Pod record last.
    """
    now = time.time() if now is None else now
    res = GcResult()
    pods = {o.name: o.spec for o in store.list(POD)}
    handles = {h.name: h.spec for h in store.list(IPAM_HANDLE)}
    for name, spec in handles.items():
        if spec.get("node") != node_name or now - float(spec.get("created") or 0) < grace_seconds:
            continue
        pod = spec.get("pod")
        pod_spec = pods.get(pod) if pod else None
        gone = (not spec.get("ip")) or (pod and pod_spec is None) or \
            (pod_spec is not None and pod_spec.get("ip") and pod_spec.get("ip") != spec.get("ip"))
        if gone:
            release_handle(store, name, now)
            res.released_handles.append(name)
    handles = {h.name for h in store.list(IPAM_HANDLE)}
    for obj, blk in _block_objects(store):
        if blk.affinity != node_name:
            continue
        if any(h not in handles for h in blk.allocations.values()):
            # Re-check each handle after the block is read: handles are created before their address is
            # taken, so one missing now is a leak; the list above may predate an assignment under way.
            freed = _free_in_block(store, obj.name, lambda o, h: store.get(IPAM_HANDLE, h) is None, now)
            res.freed_leaks += [str(ip) for ip in freed]
    for obj, blk in _block_objects(store):
        if blk.affinity != node_name or not blk.is_empty():
            continue
        if blk.empty_since is None:
            try:
                store.update(obj, {**obj.spec, "empty_since": now})
                res.marked_empty.append(obj.name)
            except (Conflict, NotFound):
                pass
            if grace_seconds > 0:
                continue
        elif now - blk.empty_since < grace_seconds:
            continue
        cur = store.get(IPAM_BLOCK, obj.name)
        if cur is not None and not Block.from_spec(cur.spec).allocations and _delete_block(store, cur, blk):
            res.released_blocks.append(obj.name)
    if res:
        log.info("gc node %s: released blocks %s, handles %s, leaked addresses %s", node_name,
                 res.released_blocks, res.released_handles, res.freed_leaks)
    return res


# -------------------------------------------------------------------------------------------- reports

@dataclass(frozen=True)
class BlockUsage:
    cidr: IPv4Network
    pool: str
    kind: str
    node: str | None
    used: int
    size: int
    borrowed: dict[str, int]


def usage(store: Datastore) -> tuple[list[Pool], list[BlockUsage]]:
    out = []
    for b in sorted(_blocks(store), key=lambda b: b.cidr):
        borrowed: dict[str, int] = {}
        for n in b.borrowed.values():
            borrowed[n] = borrowed.get(n, 0) + 1
        out.append(BlockUsage(b.cidr, b.pool, b.kind, b.affinity, len(b.allocations),
                              b.size - len(b.reserved), borrowed))
    return sorted(load_pools(store), key=lambda p: p.name), out
