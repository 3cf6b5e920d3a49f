"""IPAM: pool validation, block ordinals, and allocation/release/gc against a real local store."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from bgpnet import ipam
from bgpnet.datastore.base import BLOCK_AFFINITY, IPAM_BLOCK, IPAM_HANDLE, NODE, POD
from bgpnet.datastore.local import LocalDatastore
from bgpnet.errors import NotFound, ValidationError
from bgpnet.ipam.block import (
    Block,
    NoAddressAvailable,
    NoPool,
    Pool,
    announced_prefixes,
    parse_selector,
    pod_cidr_block,
    selector_matches,
    unclaimed_blocks,
    validate_pools,
)

N = IPv4Network
A = IPv4Address


# ----------------------------------------------------------------------------------------------- pools

def test_pool_defaults():
    p = Pool.from_spec("default", {"cidr": "10.244.0.0/16"})
    assert (p.block_size, p.encapsulation, p.mode, p.nat_outgoing, p.disabled) == (26, "none", "Never", False, False)
    assert Pool.from_spec("x", {"cidr": "10.0.0.0/16", "encapsulation": "ipip"}).mode == "Always"
    assert next(p.blocks()) == N("10.244.0.0/26")
    assert Pool.from_spec("default", p.to_spec()) == p


@pytest.mark.parametrize("spec, where, words", [
    ({"cidr": "10.244.0.1/16"}, "cidr", "host bits set (did you mean 10.244.0.0/16?)"),
    ({"cidr": "10.244.0.0/33"}, "cidr", "not an IPv4 network"),
    ({"cidr": "banana"}, "cidr", "not an IPv4 network"),
    ({"cidr": "10.0.0.0"}, "cidr", "needs a prefix length"),
    ({}, "cidr", "required field is missing"),
    ({"cidr": "10.0.0.0/24", "block_size": 22}, "block_size", "larger than the pool"),
    ({"cidr": "10.0.0.0/8", "block_size": 16}, "block_size", "out of range"),
    ({"cidr": "10.0.0.0/8", "block_size": "26"}, "block_size", "expected a prefix length"),
    ({"cidr": "10.0.0.0/8", "encapsulation": "gre"}, "encapsulation", "one of none, ipip, vxlan"),
    ({"cidr": "10.0.0.0/8", "mode": "Sometimes"}, "mode", "one of Always, CrossSubnet, Never"),
    ({"cidr": "10.0.0.0/8", "nat_outgoing": "yes"}, "nat_outgoing", "true or false"),
    ({"cidr": "10.0.0.0/8", "node_selector": "rack in (a)"}, "node_selector", "cannot parse selector"),
    ({"cidr": "10.0.0.0/8", "blocksize": 26}, "blocksize", "unknown field"),
])
def test_malformed_pool_is_rejected_naming_the_field(spec, where, words):
    with pytest.raises(ValidationError) as e:
        Pool.from_spec("p", spec)
    assert e.value.where == f"IPPool p.{where}"
    assert words in e.value.message


def test_overlapping_pools_are_rejected():
    a = Pool.from_spec("a", {"cidr": "10.244.0.0/16"})
    with pytest.raises(ValidationError, match=r"10.244.8.0/24 overlaps pool a \(10.244.0.0/16\)"):
        validate_pools(Pool.from_spec("b", {"cidr": "10.244.8.0/24"}), [a])
    with pytest.raises(ValidationError, match="overlaps pool a"):
        validate_pools(Pool.from_spec("b", {"cidr": "10.0.0.0/8"}), [a])
    validate_pools(Pool.from_spec("b", {"cidr": "10.245.0.0/16"}), [a])
    validate_pools(Pool.from_spec("a", {"cidr": "10.244.0.0/15"}), [a])  # replacing itself


def test_selectors():
    assert parse_selector("") == [] and parse_selector("all()") == []
    assert parse_selector("rack=a, zone != b,gpu,!spot") == [
        ("eq", "rack", "a"), ("ne", "zone", "b"), ("has", "gpu", None), ("nothas", "spot", None)]
    assert parse_selector("rack == 'a'") == [("eq", "rack", "a")]
    labels = {"rack": "a", "gpu": "1"}
    assert selector_matches("rack=a,gpu,!spot", labels)
    assert not selector_matches("rack=b", labels)
    assert not selector_matches("!gpu", labels)
    assert selector_matches("zone!=b", labels)


# ---------------------------------------------------------------------------------------------- blocks

def test_block_assign_release_and_borrow():
    b = Block(N("10.0.0.0/30"), affinity="n1")
    b, ip0 = b.assign("h0", "n1")
    b, ip1 = b.assign("h1", "n2")  # n2 borrows
    assert (ip0, ip1) == (A("10.0.0.0"), A("10.0.0.1"))
    assert b.borrowed == {1: "n2"} and b.borrowed_ips("n2") == [A("10.0.0.1")]
    b, _ = b.assign("h2", "n1")
    b, _ = b.assign("h3", "n1")
    assert b.is_full()
    with pytest.raises(NoAddressAvailable):
        b.assign("h4", "n1")
    b = b.release(b.ordinals_of("h1"), now=5.0)
    assert b.borrowed == {} and b.free_ordinals() == [1] and b.empty_since is None
    b = b.release([0, 2, 3], now=7.0)
    assert b.is_empty() and b.empty_since == 7.0
    assert Block.from_spec(b.to_spec()) == b


def test_pod_cidr_block_keeps_network_and_broadcast_back():
    b = pod_cidr_block(N("10.1.2.0/24"), "n1")
    assert b.free_ordinals()[0] == 1 and b.free_ordinals()[-1] == 254
    assert len(b.free_ordinals()) == 254


def test_unclaimed_blocks_and_announced_prefixes():
    pool = Pool.from_spec("p", {"cidr": "10.0.0.0/24", "block_size": 26})
    assert list(unclaimed_blocks(pool, [N("10.0.0.0/26"), N("10.0.0.128/26"), N("192.168.0.0/26")])) == [
        N("10.0.0.64/26"), N("10.0.0.192/26")]
    b1 = Block(N("10.0.0.0/26"), affinity="n1")
    b2, _ = Block(N("10.0.0.64/26"), affinity="n2").assign("h", "n1")
    assert announced_prefixes([b1, b2], "n1") == [N("10.0.0.0/26"), N("10.0.0.64/32")]
    assert announced_prefixes([b1, b2], "n2") == [N("10.0.0.64/26")]


# ------------------------------------------------------------------------------------- with a store

@pytest.fixture
def store(tmp_path):
    s = LocalDatastore(tmp_path / "store.db")
    yield s
    s.close()


def alloc(store, node, n, prefix="h", **kw):
    return [ipam.auto_assign(store, node, f"{prefix}{i}", f"default/{prefix}{i}", **kw) for i in range(n)]


def test_node_claims_blocks_as_they_fill(store):
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24", "block_size": 28})
    ips = alloc(store, "n1", 17)
    assert ips[0] == A("10.244.0.0") and ips[16] == A("10.244.0.16")
    assert ipam.node_prefixes(store, "n1") == [N("10.244.0.0/28"), N("10.244.0.16/28")]
    (other,) = alloc(store, "n2", 1, prefix="x")
    assert other == A("10.244.0.32")
    assert ipam.node_prefixes(store, "n2") == [N("10.244.0.32/28")]
    aff = {o.name: o.spec for o in store.list(BLOCK_AFFINITY)}
    assert aff["n1-10.244.0.0-28"] == {"node": "n1", "block": "10.244.0.0/28", "state": "confirmed"}
    assert set(aff) == {"n1-10.244.0.0-28", "n1-10.244.0.16-28", "n2-10.244.0.32-28"}


def test_same_handle_gets_the_same_address(store):
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24"})
    a = ipam.auto_assign(store, "n1", "h", "default/p")
    assert ipam.auto_assign(store, "n1", "h", "default/p") == a
    assert len(store.list(IPAM_HANDLE)) == 1


def test_borrowing_when_pool_is_exhausted_and_strict_affinity(store):
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/29", "block_size": 30})
    alloc(store, "n1", 1, prefix="a")
    alloc(store, "n2", 1, prefix="b")  # both blocks claimed, 3 free addresses left in each
    with pytest.raises(NoAddressAvailable, match="strict affinity"):
        alloc(store, "n3", 1, prefix="c", strict_affinity=True)
    assert store.list(IPAM_HANDLE).__len__() == 2  # the failed attempt left no handle behind
    (ip,) = alloc(store, "n3", 1, prefix="c")
    assert ip == A("10.244.0.1")
    assert ipam.node_prefixes(store, "n3") == [N("10.244.0.1/32")]
    assert ipam.node_prefixes(store, "n1") == [N("10.244.0.0/30")]
    alloc(store, "n3", 5, prefix="d")
    with pytest.raises(NoAddressAvailable, match="no free address for node n3 in pool"):
        alloc(store, "n3", 1, prefix="e")
    ipam.release_handle(store, "c0")
    assert ipam.node_prefixes(store, "n3") == sorted(
        N(f"{ip}/32") for ip in ["10.244.0.2", "10.244.0.3", "10.244.0.5", "10.244.0.6", "10.244.0.7"])


def test_pool_selection_disabled_and_node_selector(store):
    ipam.add_pool(store, "rack-a", {"cidr": "10.1.0.0/24", "node_selector": "rack=a"})
    ipam.add_pool(store, "off", {"cidr": "10.2.0.0/24", "disabled": True})
    store.create(NODE, "n1", {"labels": {"rack": "a"}})
    store.create(NODE, "n2", {"labels": {"rack": "b"}})
    assert ipam.auto_assign(store, "n1", "h1") in N("10.1.0.0/24")
    with pytest.raises(NoPool, match="no enabled IP pool selects node n2"):
        ipam.auto_assign(store, "n2", "h2")


def test_release_is_idempotent_and_gc_honours_grace(store):
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24", "block_size": 28})
    ips = alloc(store, "n1", 2)
    for i, ip in enumerate(ips):
        store.create(POD, f"default/h{i}", {"node": "n1", "ip": str(ip)})
    assert ipam.release_pod(store, "default/h0") == [ips[0]]
    assert ipam.release_pod(store, "default/h0") == []
    assert ipam.release_handle(store, "nope") == []
    ipam.release_handle(store, "h1", now=1000.0)
    blk = Block.from_spec(store.get(IPAM_BLOCK, "10.244.0.0-28").spec)
    assert blk.is_empty() and blk.empty_since == 1000.0
    assert not ipam.gc(store, "n1", grace_seconds=60, now=1030.0).released_blocks
    assert ipam.node_prefixes(store, "n1") == [N("10.244.0.0/28")]
    assert ipam.gc(store, "n1", grace_seconds=60, now=1061.0).released_blocks == ["10.244.0.0-28"]
    assert ipam.node_prefixes(store, "n1") == [] and store.list(BLOCK_AFFINITY) == []


def test_gc_frees_handles_whose_pod_is_gone_and_leaked_addresses(store):
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24", "block_size": 28})
    ips = alloc(store, "n1", 3)
    store.create(POD, "default/h0", {"node": "n1", "ip": str(ips[0])})
    store.create(POD, "default/h1", {"node": "n1", "ip": "10.9.9.9"})  # re-created pod with another address
    store.delete(IPAM_HANDLE, "h2")  # an address whose handle vanished
    young = ipam.gc(store, "n1", grace_seconds=3600)
    assert young.released_handles == [] and young.freed_leaks == ["10.244.0.2"]
    res = ipam.gc(store, "n1", grace_seconds=0)
    assert res.released_handles == ["h1"]
    assert [o.name for o in store.list(IPAM_HANDLE)] == ["h0"]
    assert Block.from_spec(store.get(IPAM_BLOCK, "10.244.0.0-28").spec).allocations == {0: "h0"}


def test_pod_cidr_mode(store):
    store.create(NODE, "n1", {"pod_cidr": "10.50.1.0/24"})
    a = ipam.auto_assign(store, "n1", "h1", mode="pod-cidr")
    b = ipam.auto_assign(store, "n1", "h2", mode="pod-cidr")
    assert (a, b) == (A("10.50.1.1"), A("10.50.1.2"))
    assert ipam.node_prefixes(store, "n1") == [N("10.50.1.0/24")]
    assert ipam.node_prefixes(store, "n1", mode="blocks") == []
    with pytest.raises(NoPool, match="node n2 has no pod_cidr"):
        ipam.auto_assign(store, "n2", "h3", mode="pod-cidr")


def test_pool_delete_refused_while_in_use(store):
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24"})
    alloc(store, "n1", 1)
    with pytest.raises(ValidationError, match="still has 1 allocated address"):
        ipam.delete_pool(store, "default")
    with pytest.raises(ValidationError, match="already exists"):
        ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24"})
    with pytest.raises(ValidationError, match="cannot change cidr"):
        ipam.add_pool(store, "default", {"cidr": "10.244.0.0/23"}, replace=True)
    ipam.release_handle(store, "h0")
    ipam.delete_pool(store, "default")
    assert store.list(IPAM_BLOCK) == []
    with pytest.raises(NotFound):
        ipam.delete_pool(store, "default")


def test_cli_show_and_pool_commands(store, capsys):
    from bgpnet.cli import main

    path = str(store.path)
    assert main(["ipam", "pool", "add", "default", "--store", path, "--cidr", "10.244.0.0/24",
                 "--block-size", "28"]) == 0
    assert main(["ipam", "pool", "add", "b", "--store", path, "--cidr", "10.244.0.128/25"]) == 2
    assert "overlaps pool default" in capsys.readouterr().err
    alloc(store, "n1", 2)
    capsys.readouterr()
    assert main(["ipam", "show", "--store", path]) == 0
    out = capsys.readouterr().out
    assert "10.244.0.0/28" in out and "n1" in out and "2/16" in out
    assert main(["ipam", "release", "--store", path, "--ip", "10.244.0.1"]) == 0
    assert "released 10.244.0.1 (handle h1)" in capsys.readouterr().out
    assert main(["ipam", "pool", "list", "--store", path]) == 0
    assert capsys.readouterr().out.startswith("default 10.244.0.0/24 /28")


def test_node_prefixes_auto_mode_prefers_pools_over_an_unused_pod_cidr(store):
    store.create(NODE, "n1", {"pod_cidr": "10.50.1.0/24"})
    ipam.add_pool(store, "default", {"cidr": "10.244.0.0/24"})
    ipam.auto_assign(store, "n1", "h1")
    assert ipam.node_prefixes(store, "n1") == [N("10.244.0.0/26")]
    assert ipam.node_prefixes(store, "n1", mode="pod-cidr") == [N("10.50.1.0/24")]
    ipam.auto_assign(store, "n1", "h2", mode="pod-cidr")  # once pods use the podCIDR it is announced too
    assert ipam.node_prefixes(store, "n1") == [N("10.50.1.0/24"), N("10.244.0.0/26")]
