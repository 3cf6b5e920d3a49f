"""Pure IPAM core: pools (validation, node selectors), blocks (ordinal allocation), and block choice.

Nothing here touches the datastore; `store.py` turns these values into compare-and-swap writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from bgpnet.errors import BgpnetError, ValidationError

ENCAPSULATIONS = ("none", "ipip", "vxlan")
MODES = ("Always", "CrossSubnet", "Never")
DEFAULT_BLOCK_SIZE = 26
# A block smaller than /32 is meaningless; larger than /20 would make every claim a huge chunk of the pool.
MIN_BLOCK_PREFIX, MAX_BLOCK_PREFIX = 20, 32

# Block kinds: "pool" blocks are claimed from an IPPool; a "pod-cidr" block wraps the node's spec.podCIDR.
KIND_POOL = "pool"
KIND_POD_CIDR = "pod-cidr"


class NoAddressAvailable(BgpnetError):
    """Every pool usable by the node is full (or, with strict affinity, every block the node may claim)."""

    exit_status = 4


class NoPool(BgpnetError):
    """No enabled pool selects the node (or the node has no podCIDR in pod-cidr mode)."""

    exit_status = 4


# ------------------------------------------------------------------------------------------ selectors

_TERM = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|!=|=)\s*'?([A-Za-z0-9_./-]*)'?)?\s*$")


def parse_selector(text: str, where: str = "node_selector") -> list[tuple[str, str, str | None]]:
    """Parse `k=v,k2!=v2,k3,!k4` (or `all()` / empty) into (op, key, value) terms; ops: eq ne has nothas."""
    text = (text or "").strip()
    if text in ("", "all()"):
        return []
    terms = []
    for part in (p for p in re.split(r",|&&", text)):
        m = _TERM.match(part)
        if not m or (m.group(1) and m.group(3)):
            raise ValidationError(
                f"cannot parse selector term {part.strip()!r}: use key=value, key!=value, key or !key "
                "joined by commas (or all())", where)
        neg, key, op, value = m.groups()
        if op is None:
            terms.append(("nothas" if neg else "has", key, None))
        else:
            terms.append(("ne" if op == "!=" else "eq", key, value))
    return terms


def selector_matches(text: str, labels: Mapping[str, str]) -> bool:
    for op, key, value in parse_selector(text):
        if op == "has" and key not in labels:
            return False
        if op == "nothas" and key in labels:
            return False
        if op == "eq" and labels.get(key) != value:
            return False
        if op == "ne" and labels.get(key) == value:
            return False
    return True


# ---------------------------------------------------------------------------------------------- pools

@dataclass(frozen=True)
class Pool:
    name: str
    cidr: IPv4Network
    block_size: int = DEFAULT_BLOCK_SIZE
    encapsulation: str = "none"
    mode: str = "Never"
    nat_outgoing: bool = False
    node_selector: str = ""
    disabled: bool = False

    def to_spec(self) -> dict[str, Any]:
        return {"cidr": str(self.cidr), "block_size": self.block_size, "encapsulation": self.encapsulation,
                "mode": self.mode, "nat_outgoing": self.nat_outgoing, "node_selector": self.node_selector,
                "disabled": self.disabled}

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any]) -> Pool:
        """Build and check one pool (not against others: see `validate_pools`)."""
        where = f"IPPool {name}"
        if not isinstance(spec, Mapping):
            raise ValidationError(f"spec must be a mapping, got {type(spec).__name__}", where)
        known = {"cidr", "block_size", "encapsulation", "mode", "nat_outgoing", "node_selector", "disabled"}
        for key in spec:
            if key not in known:
                raise ValidationError(f"unknown field `{key}` (known: {', '.join(sorted(known))})", f"{where}.{key}")
        if not name or "/" in name:
            raise ValidationError(f"pool name {name!r} must be non-empty and contain no '/'", where)
        if "cidr" not in spec:
            raise ValidationError("required field is missing", f"{where}.cidr")
        raw = spec["cidr"]
        try:
            cidr = IPv4Network(str(raw), strict=True)
        except ValueError as e:
            try:
                fixed = IPv4Network(str(raw), strict=False)
            except ValueError:
                raise ValidationError(f"{raw!r} is not an IPv4 network: {e}", f"{where}.cidr") from None
            raise ValidationError(f"{raw!r} has host bits set (did you mean {fixed}?)", f"{where}.cidr") from None
        if "/" not in str(raw):
            raise ValidationError(f"{raw!r} needs a prefix length, e.g. {raw}/16", f"{where}.cidr")
        block_size = spec.get("block_size", DEFAULT_BLOCK_SIZE)
        if isinstance(block_size, bool) or not isinstance(block_size, int):
            raise ValidationError(f"expected a prefix length (integer), got {block_size!r}", f"{where}.block_size")
        if not MIN_BLOCK_PREFIX <= block_size <= MAX_BLOCK_PREFIX:
            raise ValidationError(f"block_size /{block_size} is out of range /{MIN_BLOCK_PREFIX}../{MAX_BLOCK_PREFIX}",
                                  f"{where}.block_size")
        if block_size < cidr.prefixlen:
            raise ValidationError(f"block_size /{block_size} is larger than the pool {cidr}", f"{where}.block_size")
        enc = spec.get("encapsulation", "none")
        if enc not in ENCAPSULATIONS:
            raise ValidationError(f"encapsulation must be one of {', '.join(ENCAPSULATIONS)}, not {enc!r}",
                                  f"{where}.encapsulation")
        mode = spec.get("mode", "Never" if enc == "none" else "Always")
        if mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}, not {mode!r}", f"{where}.mode")
        for flag in ("nat_outgoing", "disabled"):
            if not isinstance(spec.get(flag, False), bool):
                raise ValidationError(f"expected true or false, got {spec[flag]!r}", f"{where}.{flag}")
        selector = spec.get("node_selector", "") or ""
        if not isinstance(selector, str):
            raise ValidationError(f"expected a selector string, got {selector!r}", f"{where}.node_selector")
        parse_selector(selector, f"{where}.node_selector")
        return cls(name, cidr, block_size, enc, mode, bool(spec.get("nat_outgoing", False)), selector,
                   bool(spec.get("disabled", False)))

    def blocks(self) -> Iterator[IPv4Network]:
        return self.cidr.subnets(new_prefix=self.block_size)

    def selects(self, labels: Mapping[str, str]) -> bool:
        return not self.disabled and selector_matches(self.node_selector, labels)


def validate_pools(new: Pool, existing: Iterable[Pool]) -> None:
    """Reject `new` if it overlaps another pool (a pool being replaced under the same name is skipped)."""
    for other in existing:
        if other.name != new.name and other.cidr.overlaps(new.cidr):
            raise ValidationError(f"{new.cidr} overlaps pool {other.name} ({other.cidr})", f"IPPool {new.name}.cidr")


# --------------------------------------------------------------------------------------------- blocks

def block_name(cidr: IPv4Network) -> str:
    """Datastore name of a block: "10.244.0.64/26" -> "10.244.0.64-26"."""
    return str(cidr).replace("/", "-")


@dataclass(frozen=True)
class Block:
    """A block's state: ordinal -> handle, which ordinals a node other than the affine one borrowed."""

    cidr: IPv4Network
    affinity: str | None = None
    allocations: Mapping[int, str] = field(default_factory=dict)
    borrowed: Mapping[int, str] = field(default_factory=dict)  # ordinal -> borrowing node
    reserved: frozenset[int] = frozenset()
    pool: str = ""
    kind: str = KIND_POOL
    empty_since: float | None = None  # when the last address was released (for the release grace period)

    @property
    def name(self) -> str:
        return block_name(self.cidr)

    @property
    def size(self) -> int:
        return self.cidr.num_addresses

    def ip(self, ordinal: int) -> IPv4Address:
        return self.cidr.network_address + ordinal

    def ordinal(self, ip: IPv4Address) -> int:
        if ip not in self.cidr:
            raise ValueError(f"{ip} is not in block {self.cidr}")
        return int(ip) - int(self.cidr.network_address)

    def free_ordinals(self) -> list[int]:
        return [o for o in range(self.size) if o not in self.allocations and o not in self.reserved]

    def is_empty(self) -> bool:
        return not self.allocations

    def is_full(self) -> bool:
        return not self.free_ordinals()

    def assign(self, handle: str, node: str, now: float | None = None) -> tuple[Block, IPv4Address]:
        """Take the lowest free address for `handle`; a node other than the affine one borrows it."""
        free = self.free_ordinals()
        if not free:
            raise NoAddressAvailable(f"block {self.cidr} is full")
        o = free[0]
        borrowed = dict(self.borrowed)
        if node != self.affinity:
            borrowed[o] = node
        blk = replace(self, allocations={**self.allocations, o: handle}, borrowed=borrowed, empty_since=None)
        return blk, self.ip(o)

    def release(self, ordinals: Iterable[int], now: float) -> Block:
        ordinals = set(ordinals)
        allocations = {o: h for o, h in self.allocations.items() if o not in ordinals}
        borrowed = {o: n for o, n in self.borrowed.items() if o not in ordinals}
        empty_since = self.empty_since
        if not allocations and self.allocations:
            empty_since = now
        return replace(self, allocations=allocations, borrowed=borrowed, empty_since=empty_since)

    def ordinals_of(self, handle: str) -> list[int]:
        return sorted(o for o, h in self.allocations.items() if h == handle)

    def borrowed_ips(self, node: str) -> list[IPv4Address]:
        return [self.ip(o) for o, n in sorted(self.borrowed.items()) if n == node]

    def to_spec(self) -> dict[str, Any]:
        return {
            "cidr": str(self.cidr),
            "affinity": self.affinity,
            "allocations": {str(o): h for o, h in sorted(self.allocations.items())},
            "borrowed": {str(o): n for o, n in sorted(self.borrowed.items())},
            "reserved": sorted(self.reserved),
            "pool": self.pool,
            "kind": self.kind,
            "empty_since": self.empty_since,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Block:
        return cls(
            cidr=IPv4Network(spec["cidr"]),
            affinity=spec.get("affinity"),
            allocations={int(o): h for o, h in (spec.get("allocations") or {}).items()},
            borrowed={int(o): n for o, n in (spec.get("borrowed") or {}).items()},
            reserved=frozenset(int(o) for o in spec.get("reserved") or ()),
            pool=spec.get("pool", ""),
            kind=spec.get("kind", KIND_POOL),
            empty_since=spec.get("empty_since"),
        )


def pod_cidr_block(cidr: IPv4Network, node: str) -> Block:
    """The node's podCIDR as one block; network and broadcast addresses are kept back as host-local does."""
    reserved = frozenset({0, cidr.num_addresses - 1}) if cidr.prefixlen <= 30 else frozenset()
    return Block(cidr, affinity=node, reserved=reserved, kind=KIND_POD_CIDR)


def unclaimed_blocks(pool: Pool, claimed: Iterable[IPv4Network]) -> Iterator[IPv4Network]:
    """The pool's blocks that no block object covers yet, in address order."""
    taken = {c for c in claimed if c.subnet_of(pool.cidr)}
    return (c for c in pool.blocks() if c not in taken)


def pools_for_node(pools: Iterable[Pool], labels: Mapping[str, str], names: Iterable[str] = ()) -> list[Pool]:
    """Enabled pools whose selector matches the node, optionally limited to `names`, in name order."""
    wanted = set(names)
    return sorted((p for p in pools if p.selects(labels) and (not wanted or p.name in wanted)),
                  key=lambda p: p.name)


def announced_prefixes(blocks: Iterable[Block], node: str) -> list[IPv4Network]:
    """What the node announces: its affine blocks (aggregates) plus /32s it borrowed from other blocks."""
    out: set[IPv4Network] = set()
    for b in blocks:
        if b.affinity == node:
            out.add(b.cidr)
        else:
            out.update(IPv4Network(f"{ip}/32") for ip in b.borrowed_ips(node))
    return sorted(out)
