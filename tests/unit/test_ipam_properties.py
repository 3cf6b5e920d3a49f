"""Hypothesis: no address is handed out twice under any interleaving of claims, assigns, releases and gc.

An in-memory store runs a whole other IPAM operation between any read and the next write of the
operation under way (chosen by hypothesis), which is what a concurrent agent or CNI call can do; the
compare-and-swap writes must turn each such race into a retry.
"""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgpnet import ipam
from bgpnet.datastore.base import BLOCK_AFFINITY, IPAM_BLOCK, IPAM_HANDLE, Datastore, Object
from bgpnet.errors import AlreadyExists, BgpnetError, Conflict, NotFound
from bgpnet.ipam.block import Block

NODES = ("n1", "n2", "n3")


@pytest.fixture(autouse=True, scope="module")
def no_retry_pauses():
    """Single-threaded: a pause before a CAS retry changes nothing but the run time."""
    old, ipam.store.RETRY_JITTER = ipam.store.RETRY_JITTER, 0
    yield
    ipam.store.RETRY_JITTER = old


class MemoryStore(Datastore):
    """The Datastore contract in a dict; `before_write` runs before every write (not nested)."""

    def __init__(self):
        self.objs: dict[tuple[str, str], Object] = {}
        self.rev = itertools.count(1)
        self.before_write = None
        self._in_hook = False

    def _hook(self):
        if self.before_write and not self._in_hook:
            self._in_hook = True
            try:
                self.before_write()
            finally:
                self._in_hook = False

    def get(self, kind, name):
        return self.objs.get((kind, name))

    def list(self, kind):
        return sorted((o for (k, _), o in self.objs.items() if k == kind), key=lambda o: o.name)

    def create(self, kind, name, spec):
        self._hook()
        if (kind, name) in self.objs:
            raise AlreadyExists(f"{kind} {name}")
        obj = self.objs[(kind, name)] = Object(kind, name, _copy(spec), str(next(self.rev)))
        return obj

    def update(self, obj, spec):
        self._hook()
        cur = self.objs.get((obj.kind, obj.name))
        if cur is None:
            raise NotFound(f"{obj.kind} {obj.name}")
        if cur.revision != obj.revision:
            raise Conflict(f"{obj.kind} {obj.name}")
        new = self.objs[(obj.kind, obj.name)] = Object(obj.kind, obj.name, _copy(spec), str(next(self.rev)))
        return new

    def delete(self, kind, name, revision=None):
        self._hook()
        cur = self.objs.get((kind, name))
        if cur is None:
            raise NotFound(f"{kind} {name}")
        if revision is not None and cur.revision != revision:
            raise Conflict(f"{kind} {name}")
        del self.objs[(kind, name)]

    def revision(self, kinds=None):
        return str(next(self.rev))


def _copy(spec):
    import json

    return json.loads(json.dumps(spec))


# One operation: (verb, node, number). Numbers pick a handle among those handed out so far.
op = st.tuples(st.sampled_from(["assign", "assign", "assign-strict", "release", "release-pod", "release-ip", "gc"]),
               st.sampled_from(NODES), st.integers(0, 50))


class World:
    def __init__(self, store: MemoryStore):
        self.store = store
        self.now = 0.0
        self.serial = itertools.count()
        self.issued: dict[str, IPv4Address] = {}  # live handle -> address the caller was given

    def apply(self, verb, node, n):
        s = self.store
        live = sorted(self.issued)
        try:
            if verb.startswith("assign"):
                h = f"h{next(self.serial)}"
                ip = ipam.auto_assign(s, node, h, f"ns/{h}", strict_affinity=verb == "assign-strict", now=self.now)
                assert ip not in self.issued.values(), f"{ip} handed out twice"
                self.issued[h] = ip
            elif verb == "gc":
                # handles of live pods are never collected here (their pods exist: see pod_exists)
                ipam.gc(s, node, grace_seconds=3, now=self.now)
            elif live:
                h = live[n % len(live)]
                # The caller gives the address up when it asks for release. Its pod is gone from then on,
                # so an interleaved gc may free the address first: then this release finds nothing to do.
                ip = self.issued.pop(h)
                if verb == "release":
                    assert ipam.release_handle(s, h, now=self.now) in ([ip], [])
                elif verb == "release-pod":
                    assert ipam.release_pod(s, f"ns/{h}", now=self.now) in ([ip], [])
                else:
                    assert ipam.release_ip(s, ip, now=self.now) in (h, None)
        except BgpnetError as e:  # a full pool is a fine answer; anything else is not
            assert verb.startswith("assign") and isinstance(e, ipam.NoAddressAvailable), e


def check_invariants(world: World):
    s = world.store
    blocks = [Block.from_spec(o.spec) for o in s.list(IPAM_BLOCK)]
    for a, b in itertools.combinations(blocks, 2):
        assert not a.cidr.overlaps(b.cidr)
    held = {}
    for b in blocks:
        for o, h in b.allocations.items():
            assert h not in held, f"handle {h} holds two addresses"
            held[h] = b.ip(o)
    assert held == world.issued
    handles = {o.name: o.spec for o in s.list(IPAM_HANDLE)}
    assert {h: IPv4Address(spec["ip"]) for h, spec in handles.items()} == world.issued
    affinities = {(o.spec["node"], o.spec["block"]) for o in s.list(BLOCK_AFFINITY)}
    assert affinities == {(b.affinity, str(b.cidr)) for b in blocks}
    for b in blocks:  # a node announces its blocks; borrowed addresses only as /32s by the borrower
        assert b.affinity and set(b.borrowed) <= set(b.allocations)
        assert all(n != b.affinity for n in b.borrowed.values())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=40), data=st.data())
def test_no_address_twice_under_any_interleaving(ops, data):
    store = MemoryStore()
    ipam.add_pool(store, "p", {"cidr": "10.0.0.0/28", "block_size": 30})  # 4 blocks of 4: claims, borrowing, exhaustion
    world = World(store)

    from bgpnet.datastore.base import POD

    def interfere():
        if data.draw(st.booleans(), label="interleave here"):
            world.apply(*data.draw(op, label="interleaved op"))
            sync_pods()

    def sync_pods():  # every live handle's pod exists, as the CNI would have written it
        for h, ip in world.issued.items():
            store.objs[(POD, f"ns/{h}")] = Object(POD, f"ns/{h}", {"ip": str(ip)}, "0")
        for (k, name) in [key for key in store.objs if key[0] == POD]:
            if name[3:] not in world.issued:
                del store.objs[(k, name)]

    store.before_write = interfere
    for verb, node, n in ops:
        world.now += 1
        world.apply(verb, node, n)
        sync_pods()
        check_invariants(world)
