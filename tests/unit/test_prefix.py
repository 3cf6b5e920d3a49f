"""Prefix, the fast IPv4Network of BGP tables, and Path with shared attributes: same values as the slow way."""

from __future__ import annotations

import pickle
from ipaddress import IPv4Address, IPv4Network
from itertools import islice

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgpnet.model import Path, PathAttributes, Prefix, covers, prefix_key, supernet_key

networks = st.builds(lambda a, n: IPv4Network((a, n), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32))


@given(networks)
def test_prefix_is_the_same_value_as_ipv4network(net):
    for p in (Prefix.parse(str(net)), Prefix.from_int(int(net.network_address), net.prefixlen), Prefix(str(net))):
        assert p == net and net == p and hash(p) == hash(net)
        assert {net: 1}[p] == 1 and {p: 1}[net] == 1
        assert str(p) == str(net) and p.prefixlen == net.prefixlen
        same = ("network_address", "netmask", "_prefixlen")
        assert {k: getattr(p, k) for k in same} == {k: getattr(net, k) for k in same}
        assert list(islice(p.hosts(), 3)) == list(islice(net.hosts(), 3))
        assert pickle.loads(pickle.dumps(p)) == p and prefix_key(p) == prefix_key(net)


@pytest.mark.parametrize("text", ["10.0.0.1/24", "10.1/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0", "x/8",
                                  " 10.0.0.0/8", "10.0.0.0/8 ", "10.0.0.0/+8", "10.0.0.0/\u0663", "256.0.0.0/8",
                                  "10.0.0.0/008"])
def test_parse_refuses_what_is_not_a_plain_prefix(text):
    with pytest.raises(ValueError):
        Prefix.parse(text)


@pytest.mark.parametrize(("address", "length"), [(-1, 8), (2**32, 8), (0, 33), (0, -1), (1, 31)])
def test_from_int_refuses_what_is_not_a_prefix(address, length):
    with pytest.raises(ValueError):
        Prefix.from_int(address, length)


@given(networks, networks)
def test_covers_is_subnet_of(a, b):
    assert covers(prefix_key(a), prefix_key(b)) == b.subnet_of(a)
    if b.prefixlen >= a.prefixlen:
        assert supernet_key(prefix_key(b), a.prefixlen) == prefix_key(b.supernet(new_prefix=a.prefixlen))


def test_paths_share_attributes_and_read_through():
    attrs = PathAttributes(IPv4Address("10.0.0.2"), IPv4Address("10.0.0.2"), 65002, (65002,), med=5)
    a = Path.of(Prefix.parse("10.1.0.0/26"), attrs)
    b = Path(IPv4Network("10.1.0.0/26"), IPv4Address("10.0.0.2"), IPv4Address("10.0.0.2"), 65002, (65002,), med=5)
    assert a == b and hash(a) == hash(b) and a.med == 5 and a.next_hop == IPv4Address("10.0.0.2")
    assert Path.of(a.prefix, PathAttributes(a.next_hop, a.peer, med=6)) != a
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a.med = 1
