"""Shared value types: paths learned over BGP and the routes planned for the kernel."""

from __future__ import annotations

import socket
from dataclasses import dataclass, fields
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network
from operator import attrgetter

_NETMASKS = tuple((0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF for n in range(33))
_NETMASK_ADDRESSES = tuple(IPv4Address(m) for m in _NETMASKS)
_LENGTHS = {str(n): n for n in range(33)}


def prefix_key(net: IPv4Network) -> tuple[int, int]:
    """(network address as an int, prefix length): cheap containment tests (see `covers`)."""
    key = getattr(net, "_key", None)
    return key if key is not None else (int(net.network_address), net.prefixlen)


def covers(outer: tuple[int, int], inner: tuple[int, int]) -> bool:
    """Whether prefix `inner` lies within prefix `outer` (equal counts), both as `prefix_key`s."""
    return inner[1] >= outer[1] and inner[0] & _NETMASKS[outer[1]] == outer[0]


def supernet_key(key: tuple[int, int], length: int) -> tuple[int, int]:
    """The `prefix_key` of the prefix of `length` (<= the key's own length) that holds `key`."""
    return key[0] & _NETMASKS[length], length


class Prefix(IPv4Network):
    """An IPv4Network that is quick to make from BGP input and quick to hash. A BGP table holds 10k+
    prefixes and every stage keys dicts by prefix; `IPv4Network` recomputes its hash each time and takes
    ~3 us to parse a string. Equal to, and hashing like, the `IPv4Network` of the same value, so the two
    mix freely as dict keys."""

    def __init__(self, address, strict: bool = True):
        super().__init__(address, strict)
        d = self.__dict__
        d["_key"] = key = (int(self.network_address), self._prefixlen)
        d["_hash"] = hash(key[0] ^ _NETMASKS[key[1]])

    @classmethod
    def parse(cls, text: str) -> Prefix:
        """Strict "a.b.c.d/len" (what BGP speakers print); ValueError for anything else."""
        addr, _, length = text.partition("/")
        try:
            n = _LENGTHS[length]  # "0".."32" only: no sign, spaces, leading zeros or other digits
            address = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
        except (KeyError, OSError):
            raise ValueError(f"{text!r} is not an IPv4 prefix a.b.c.d/len") from None
        return cls.from_int(address, n)

    @classmethod
    def from_int(cls, address: int, length: int) -> Prefix:
        if not 0 <= length <= 32:
            raise ValueError(f"prefix length {length} is not 0-32")
        if not 0 <= address <= 0xFFFFFFFF:
            raise ValueError(f"address {address} is not a 32-bit number")
        if address & ~_NETMASKS[length] & 0xFFFFFFFF:
            raise ValueError(f"{IPv4Address(address)}/{length} has host bits set")
        if length >= 31:
            return cls((address, length))  # IPv4Network gives these a hosts() of their own
        # What IPv4Network.__init__ sets, without its string handling and checks (done above): a third of
        # the time. tests/unit/test_prefix.py holds this to IPv4Network's own result.
        self = object.__new__(cls)
        d = self.__dict__
        d["netmask"] = _NETMASK_ADDRESSES[length]
        d["_prefixlen"] = length
        d["_key"] = (address, length)
        d["_hash"] = hash(address ^ _NETMASKS[length])
        return self

    @cached_property
    def network_address(self) -> IPv4Address:
        """Made on first use (IPv4Network makes it up front): BGP tables seldom need it."""
        return IPv4Address(self._key[0])

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        if type(other) is Prefix:
            return self._key == other._key
        return super().__eq__(other)

    def __reduce__(self):
        return Prefix, (str(self),)


@dataclass(frozen=True)
class PathAttributes:
    """What one UPDATE says about every prefix in it: shared by all their paths, as BGP sends them (one
    set of attributes, many prefixes), so the work per prefix stays small."""

    next_hop: IPv4Address
    peer: IPv4Address
    peer_asn: int = 0
    as_path: tuple[int, ...] = ()
    local_pref: int = 100
    med: int = 0
    origin: str = "igp"  # igp < egp < incomplete
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    ibgp: bool = True  # learned over iBGP (same AS) rather than eBGP
    # route reflection (RFC 4456): the router that first put the path into the AS, and the clusters it
    # was reflected through (nearest first)
    originator_id: IPv4Address | None = None
    cluster_list: tuple[IPv4Address, ...] = ()


_ATTRIBUTE_NAMES = tuple(f.name for f in fields(PathAttributes))


class Path:
    """One BGP path for a prefix, as received from one peer: the prefix and its attributes.

    `Path(prefix, next_hop=..., peer=..., med=...)` makes the attributes too; `Path.of(prefix, attributes)`
    shares them (a decoded UPDATE does that for all its prefixes). Attributes read through: `path.next_hop`.
    Immutable; equal when prefix and attributes are."""

    __slots__ = ("prefix", "attributes")

    def __init__(self, prefix: IPv4Network, *attributes, **by_name):
        """`attributes` / `by_name`: PathAttributes' fields in order (next_hop, peer, ...) / by name."""
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "attributes", PathAttributes(*attributes, **by_name))

    @classmethod
    def of(cls, prefix: IPv4Network, attributes: PathAttributes) -> Path:
        path = object.__new__(cls)
        object.__setattr__(path, "prefix", prefix)
        object.__setattr__(path, "attributes", attributes)
        return path

    def __setattr__(self, name, value):
        raise AttributeError(f"Path is immutable (cannot set {name})")

    def __eq__(self, other) -> bool:
        if type(other) is not Path:
            return NotImplemented
        return self.prefix == other.prefix and (self.attributes is other.attributes
                                                or self.attributes == other.attributes)

    def __hash__(self) -> int:
        return hash((self.prefix, self.attributes))

    def __repr__(self) -> str:
        attrs = ", ".join(f"{n}={getattr(self.attributes, n)!r}" for n in _ATTRIBUTE_NAMES)
        return f"Path(prefix={self.prefix!r}, {attrs})"

    def __reduce__(self):
        return Path.of, (self.prefix, self.attributes)


for _name in _ATTRIBUTE_NAMES:
    setattr(Path, _name, property(attrgetter(f"attributes.{_name}"), doc=f"the path's {_name}"))
del _name


@dataclass(frozen=True, order=True)
class NextHop:
    gateway: IPv4Address | None = None
    dev: str | None = None
    onlink: bool = False

    def __hash__(self) -> int:
        # cached: thousands of routes share a few next hops, and IPv4Address hashes through hex()
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.gateway, self.dev, self.onlink))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}  # str hashes differ per process


@dataclass(frozen=True, order=True)
class Route:
    """A kernel route that bgpnet wants; `kind` is "unicast" or "blackhole"."""

    dst: IPv4Network
    nexthops: tuple[NextHop, ...] = ()
    kind: str = "unicast"
    table: int = 254  # main

    def describe(self) -> str:
        if self.kind == "blackhole":
            return f"blackhole {self.dst}"
        hops = []
        for nh in self.nexthops:
            s = f"via {nh.gateway}" if nh.gateway else ""
            if nh.dev:
                s += f" dev {nh.dev}"
            if nh.onlink:
                s += " onlink"
            hops.append(s.strip())
        return f"{self.dst} " + " | ".join(hops)
